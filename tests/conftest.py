"""Fixtures shared across the test folders, and the settings of the test processes: XLA's
fast-compile flags, the malloc defaults, the release of compiled programs near the memory-map
limit, one JAX compilation cache per run, a less eager garbage collector, and the order in which xdist
hands out the work (docs/installation.md, "Running the tests")."""

import gc
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import pytest

_CACHE_ATTR = "_eqxllm_jax_cache_dir"
# with a size limit, JAX holds a file lock around each read and write of the cache, so the workers,
# notebook kernels and subprocesses that share it never read a half-written entry
_CACHE_MAX_BYTES = 8 << 30
# only programs that took this long to compile are written: with a size limit JAX lists the whole
# folder on every write, and the many quick ones (an eager op at one shape) cost more to share than
# to compile again
_CACHE_MIN_COMPILE_S = 0.1
# XLA:CPU compiles the suite's tiny programs faster than it runs them: compilation, not execution, is
# most of a test's time. Without LLVM's optimisations and with the older loop emitters for fusions,
# each program compiles in less than half the time; the arithmetic is the same IEEE float32 (XLA:CPU
# does not use fast-math), only the machine code is slower. A flag the caller set in XLA_FLAGS wins.
FAST_COMPILE_FLAGS = {"--xla_backend_optimization_level": "0", "--xla_cpu_use_fusion_emitters": "false"}


def fast_compile_xla_flags(flags: str, known=lambda flag: True) -> str:
    """``flags`` (an ``XLA_FLAGS`` value) with each of ``FAST_COMPILE_FLAGS`` that it does not set
    and that ``known(flag)`` accepts (XLA aborts a process on a flag its jaxlib does not know)."""
    given = {flag.split("=", 1)[0] for flag in flags.split()}
    extra = [f"{n}={v}" for n, v in FAST_COMPILE_FLAGS.items() if n not in given and known(f"{n}={v}")]
    return " ".join([*flags.split(), *extra])


def xla_knows(flag: str) -> bool:
    """Whether a fresh process starts JAX's CPU backend with ``flag`` in ``XLA_FLAGS`` (a second)."""
    env = {**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"}
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import jax; jax.devices()"], env=env, capture_output=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


def known_xla_flags(flags: list[str]) -> set[str]:
    """The flags of ``flags`` that this jaxlib knows: one probe of them all (a second), and one per
    flag only if that fails."""
    if xla_knows(" ".join(flags)):
        return set(flags)
    return {flag for flag in flags if xla_knows(flag)}


# Python's cyclic garbage collector runs a collection every 700 allocations beyond deallocations, and
# each full collection walks every tracked object: a test process holds about a million (modules,
# collected tests, JAX's traces and caches), and tracing allocates many short-lived objects. Rarer
# young collections, and the objects alive once the tests are collected frozen out of the collector's
# walks (gc.freeze), take most of that time back; the full collections still run, so cyclic garbage
# is still freed.
GC_THRESHOLDS = (20_000, 10, 10)


def pytest_collection_finish(session):
    """In each process that runs tests (every xdist worker, or the only process)."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.collect()
    gc.freeze()


def scope_of(nodeid: str) -> str:
    """The unit of work of ``--dist loadscope`` that holds a test: its class, else its module (as
    xdist's ``LoadScopeScheduling._split_scope``)."""
    return nodeid.rsplit("::", 1)[0]


def slow_scopes_first(items: list) -> list:
    """``items`` by unit of work, those holding a test marked ``slow`` first, then the others by
    decreasing test count (xdist's own ``--loadscope-reorder``); each unit's tests keep their order.

    xdist hands the units out in this order and a worker takes the next one when it is free, so the
    run ends when the last unit handed out ends. By test count alone the units of one long test (a
    notebook, a multi-process run: a minute each) came last, and the run ended with one worker busy
    and the other idle for a minute or more; started first, they overlap with the many short ones."""
    scopes: dict[str, list] = {}
    for item in items:
        scopes.setdefault(scope_of(item.nodeid), []).append(item)
    slow = lambda tests: any(item.get_closest_marker("slow") for item in tests)
    ordered = sorted(scopes.values(), key=lambda tests: (not slow(tests), -len(tests)))
    return [item for tests in ordered for item in tests]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """After pytest's own ordering (by fixtures); ``--no-loadscope-reorder`` in addopts makes xdist keep
    this order."""
    items[:] = slow_scopes_first(items)


def pytest_configure(config):
    """The first process of a run (the xdist controller, or the only process) sets the fast-compile
    XLA flags and makes one JAX persistent compilation cache in a fresh temporary folder, shared by
    every process the run starts (workers, notebook kernels, subprocesses inherit the environment),
    and removes it at the end. A cache folder set by the caller is left alone.

    JAX reads ``XLA_FLAGS`` when it first creates a backend, which nothing has done yet here."""
    if hasattr(config, "workerinput"):
        return
    known = known_xla_flags([f"{name}={value}" for name, value in FAST_COMPILE_FLAGS.items()])
    os.environ["XLA_FLAGS"] = fast_compile_xla_flags(os.environ.get("XLA_FLAGS", ""), known=known.__contains__)
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    path = tempfile.mkdtemp(prefix="eqxllm-tests-jax-cache-")
    setattr(config, _CACHE_ATTR, path)
    settings = {
        "EQXLLM_TESTS_JAX_CACHE": path,  # tells the test processes that the run made the cache
        "JAX_COMPILATION_CACHE_DIR": path,
        "JAX_COMPILATION_CACHE_MAX_SIZE": str(_CACHE_MAX_BYTES),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": str(_CACHE_MIN_COMPILE_S),
    }
    os.environ.update(settings)
    # this process imported JAX before it read the environment (without xdist it runs the tests too)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_compilation_cache_max_size", _CACHE_MAX_BYTES)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", _CACHE_MIN_COMPILE_S)


def pytest_unconfigure(config):
    path = getattr(config, _CACHE_ATTR, None)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def memory_map_count() -> int | None:
    """How many memory maps this process holds (Linux), else None."""
    try:
        with open("/proc/self/maps", "rb") as maps:
            return maps.read().count(b"\n")
    except OSError:
        return None


def memory_map_limit() -> int | None:
    """The kernel's limit on a process's memory maps, ``vm.max_map_count`` (Linux), else None."""
    try:
        return int(Path("/proc/sys/vm/max_map_count").read_text())
    except (OSError, ValueError):
        return None


def release_compiled_programs(fraction: float = 0.5) -> bool:
    """Drop JAX's in-memory caches (``jax.clear_caches()``) when this process holds more than
    ``fraction`` of its allowed memory maps; True if it did.

    XLA:CPU maps the code of every program it compiles into the process (about five maps a
    program), and JAX keeps every compiled program. A test worker compiles thousands, and past
    ``vm.max_map_count`` (65530 by default) LLVM can no longer map new code: the worker dies inside
    XLA ("LLVM compilation error: Cannot allocate memory", then a segfault), or Python cannot start
    a thread. Released programs are compiled again, or read back from the run's cache, when needed.
    """
    count, limit = memory_map_count(), memory_map_limit()
    if count is None or limit is None or count <= fraction * limit:
        return False
    jax.clear_caches()
    return True


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs_near_the_map_limit():
    """After each test module (a module runs whole on one worker, ``--dist loadscope``)."""
    yield
    release_compiled_programs()


@pytest.fixture(autouse=True, scope="session")
def _malloc_left_as_it_is():
    """``train()`` tells glibc to keep freed memory until the process exits
    (``eqxllm.train.host_memory``): right for a training process, but in a test worker it would stay
    in force for every later test, so a test's memory behaviour would depend on what ran before it.
    Here it is a no-op; ``tests/train/test_host_memory.py`` checks the real one in fresh processes,
    and ``tests/train/test_loop.py`` that ``train()`` calls it."""
    import eqxllm.train.loop as loop

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "keep_freed_host_memory", lambda: False)
        yield


@pytest.fixture
def attention_calls(monkeypatch) -> list[dict]:
    """The keyword arguments of every ``jax.nn.dot_product_attention`` call made while the test runs
    (each call still computes), to check which masks reach it."""
    recorded, original = [], jax.nn.dot_product_attention

    def spy(*args, **kwargs):
        recorded.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
    return recorded


@pytest.fixture
def unchecked_annotations():
    """Calls made as a user makes them: the suite's jaxtyping hook would reject a wrong shape or dtype
    at a public signature before the library's own check could name it."""
    import jaxtyping

    before = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", before)
