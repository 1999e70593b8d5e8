"""Fixtures shared across the test folders, and the malloc settings of the test processes."""

import jax
import pytest


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
