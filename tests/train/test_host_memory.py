"""Host memory reuse on the CPU backend: a freed large block comes back without page faults."""

import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt: Linux with glibc only"
)

# Each check runs in a fresh process: the setting lasts as long as the process (the test workers keep
# glibc's defaults, see tests/conftest.py). The script allocates a 256 MiB block with C's malloc (as
# XLA:CPU does with a step's working buffers; NumPy would ask for huge pages), touches it and frees
# it, four times, and prints the minor page faults of the last three rounds.
_SCRIPT = textwrap.dedent(
    """
    import ctypes, resource, sys
    from eqxllm.train import keep_freed_host_memory
    # applies on the CPU backend (these machines), and a second call is a no-op that says so
    applied = keep_freed_host_memory() and keep_freed_host_memory() if sys.argv[1] == "keep" else False
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    faults = []
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(256 * 2**20)
        ctypes.memset(block, 1, 256 * 2**20)
        libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(applied, sum(faults[1:]))
    """
)
_PAGES = 256 * 2**20 // 4096


def _rounds(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


def test_freed_blocks_are_reused_without_faulting_pages_in_again():
    applied, faults = _rounds("keep")
    assert applied and faults < _PAGES // 100  # three rounds reuse the first round's pages


def test_by_default_every_round_faults_its_pages_in():
    # the cost the setting removes: glibc maps a block this large afresh on every allocation
    applied, faults = _rounds("default")
    assert not applied and faults > 2 * _PAGES
