"""Fixtures shared across the test folders."""

import jax
import pytest


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
