"""The settings ``tests/conftest.py`` gives every test process are in force (see docs/installation.md)."""

import gc
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from conftest import (
    FAST_COMPILE_FLAGS,
    GC_THRESHOLDS,
    fast_compile_xla_flags,
    known_xla_flags,
    memory_map_count,
    memory_map_limit,
    release_compiled_programs,
    xla_knows,
)

import eqxllm.train.loop as loop


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


@pytest.mark.skipif(memory_map_limit() is None, reason="needs Linux's /proc")
def test_compiled_programs_are_released_near_the_memory_map_limit():
    assert not release_compiled_programs(fraction=1.0)  # far from the limit: nothing is dropped
    programs = [jax.jit(lambda x, i=i: jnp.tanh(x * i).sum()) for i in range(20)]
    for i, f in enumerate(programs):
        f(jnp.ones(i + 1)).block_until_ready()
    held = memory_map_count()
    assert held is not None
    assert release_compiled_programs(fraction=0.0)
    after = memory_map_count()
    assert after is not None and after < held - 20  # XLA:CPU unmapped the programs' code
