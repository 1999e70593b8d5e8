"""Host memory reuse between training steps on the CPU backend.

XLA:CPU allocates a step's working buffers (activations, their gradients, the stacked residuals of
the layer scan: hundreds of MiB for the TinyStories presets) when the step starts and frees them when
it ends. glibc's ``malloc`` serves blocks that large with fresh ``mmap`` pages and gives them back on
``free``, so every step the kernel maps, zeroes and faults in the whole working set again: system time
that grows with the batch and does no arithmetic. Telling glibc to keep freed memory (no ``mmap`` for
large blocks, no trimming of the heap top) lets the next step reuse the same pages. The cost is that
the process keeps its peak host memory until it exits, as a framework's caching allocator does.
"""

import ctypes
import ctypes.util
import sys

import jax

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# -1: never trim the heap top (mallopt(3)); any positive int would cap it at 2 GiB, less than the
# working set of a larger model
_NEVER = -1

_applied = False


def keep_freed_host_memory() -> bool:
    """Make glibc keep freed memory for reuse when JAX runs on the CPU; returns whether it applies.

    Process-wide and idempotent. It does nothing (and returns ``False``) on another backend, off
    Linux, or with a C library other than glibc. ``eqxllm.train.loop.train`` calls it; a loop of your
    own around ``eqxllm.train.make_train_step`` on the CPU can call it once before the first step.
    """
    global _applied
    if _applied:
        return True
    if sys.platform != "linux" or jax.default_backend() != "cpu":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl has mallopt but ignores these parameters)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _applied = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _NEVER) == 1
    return _applied
