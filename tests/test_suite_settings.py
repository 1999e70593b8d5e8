"""The settings ``tests/conftest.py`` gives every test process are in force (see docs/installation.md)."""

import eqxllm.train.loop as loop


def test_train_leaves_malloc_as_it_is_in_test_processes():
    assert loop.keep_freed_host_memory() is False
