"""The settings ``tests/conftest.py`` gives every test process are in force (see docs/installation.md)."""

import gc
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from conftest import (
    FAST_COMPILE_FLAGS,
    GC_THRESHOLDS,
    fast_compile_xla_flags,
    known_xla_flags,
    memory_map_limit,
    scope_of,
    slow_scopes_first,
    xla_knows,
)

import eqxllm.train.loop as loop

TESTS_DIR = Path(__file__).resolve().parent


def test_the_collector_runs_less_often_and_skips_what_collection_left_alive():
    assert gc.get_threshold() == GC_THRESHOLDS and gc.isenabled()
    assert gc.get_freeze_count() > 100_000  # the modules and collected tests, at least


def test_train_leaves_malloc_as_it_is_in_test_processes():
    assert loop.keep_freed_host_memory() is False


def test_test_processes_compile_with_the_fast_compile_flags():
    flags = os.environ.get("XLA_FLAGS", "").split()
    for name, value in FAST_COMPILE_FLAGS.items():
        present = [f for f in flags if f.split("=", 1)[0] == name]
        # absent only where this jaxlib does not know the flag
        assert present or not xla_knows(f"{name}={value}"), f"{name} is not in XLA_FLAGS: {flags}"
    # added once, after the caller's flags; a flag the caller set keeps the caller's value
    assert fast_compile_xla_flags("--xla_force_host_platform_device_count=8") == (
        "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 "
        "--xla_cpu_use_fusion_emitters=false"
    )
    mine = "--xla_backend_optimization_level=2 --xla_cpu_use_fusion_emitters=false"
    assert fast_compile_xla_flags(mine) == mine
    assert fast_compile_xla_flags(fast_compile_xla_flags("")) == fast_compile_xla_flags("")
    # a flag this jaxlib does not know is left out: XLA would abort every test process on it
    assert fast_compile_xla_flags("", known=lambda f: "emitters" not in f) == "--xla_backend_optimization_level=0"


def test_a_flag_xla_does_not_know_is_found_before_it_can_abort_a_test_process():
    known, unknown = "--xla_backend_optimization_level=0", "--xla_no_such_flag_in_any_jaxlib=1"
    # the probe of both fails, then each flag is probed alone: the known one is kept
    assert known_xla_flags([known, unknown]) == {known}


def test_the_run_shares_one_compilation_cache():
    path = os.environ.get("EQXLLM_TESTS_JAX_CACHE")
    if path is None:
        pytest.skip("the caller set JAX_COMPILATION_CACHE_DIR: the run uses that folder as it is")
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == path and Path(path).is_dir()
    assert jax.config.jax_compilation_cache_dir == path
    # a size limit: JAX then holds a file lock around each read and write of the shared folder
    assert jax.config.jax_compilation_cache_max_size > 0


_RELEASE_CHECK = """
import jax, jax.numpy as jnp, pytest
from conftest import memory_map_count, release_compiled_programs

assert not release_compiled_programs(fraction=1.0)  # far from the limit: nothing is dropped
programs = [jax.jit(lambda x, i=i: jnp.tanh(x * i).sum()) for i in range(20)]
for i, f in enumerate(programs):
    f(jnp.ones(i + 1)).block_until_ready()
held = memory_map_count()
assert release_compiled_programs(fraction=0.0)
after = memory_map_count()
assert after < held - 20, (held, after)  # XLA:CPU unmapped the programs' code
assert float(programs[3](jnp.ones(4))) == pytest.approx(4 * float(jnp.tanh(3.0)))  # compiled again
"""


@pytest.mark.skipif(memory_map_limit() is None, reason="needs Linux's /proc")
def test_compiled_programs_are_released_near_the_memory_map_limit():
    # in a fresh process: in this worker the release would drop every program the earlier tests compiled
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))}
    check = subprocess.run([sys.executable, "-c", _RELEASE_CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-4000:]


class _Item:
    def __init__(self, nodeid: str, slow: bool = False):
        self.nodeid, self.slow = nodeid, slow

    def get_closest_marker(self, name: str):
        return object() if name == "slow" and self.slow else None


def test_units_of_work_holding_a_slow_test_are_handed_out_first():
    items = [
        _Item("a.py::one"),
        _Item("b.py::T::x"),
        _Item("b.py::T::y"),
        _Item("b.py::U::z", slow=True),
        _Item("c.py::p[1]"),
        _Item("c.py::p[2]"),
        _Item("c.py::q", slow=True),
        _Item("d.py::r"),
        _Item("d.py::s"),
        _Item("d.py::t"),
    ]
    order = [item.nodeid for item in slow_scopes_first(items)]
    # slow units first (collection order), then by decreasing test count; a unit's tests stay together
    assert order == [
        "c.py::p[1]", "c.py::p[2]", "c.py::q",
        "b.py::U::z",
        "d.py::r", "d.py::s", "d.py::t",
        "b.py::T::x", "b.py::T::y",
        "a.py::one",
    ]  # fmt: skip
    assert {scope_of(n) for n in order[:4]} == {"c.py", "b.py::U"}


def test_this_run_hands_out_the_slow_units_first(request):
    scopes = list(dict.fromkeys(scope_of(item.nodeid) for item in request.session.items))
    slow = {scope_of(item.nodeid) for item in request.session.items if item.get_closest_marker("slow")}
    if not slow:
        pytest.skip("this run collected no test marked slow")
    assert set(scopes[: len(slow)]) == slow
