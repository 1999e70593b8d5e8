"""The suite runs with jaxtyping + beartype (``--jaxtyping-packages`` in pyproject): shape and dtype
annotations are enforced, so a call that contradicts them fails at the call, not deep inside."""

import jax
import jax.numpy as jnp
import pytest
from jaxtyping import TypeCheckError

from eqxllm.models.gpt2 import GPT2, GPT2Config
from eqxllm.nn import Attention, dot_product_attention


def test_mismatched_head_dim_is_rejected():
    q = jnp.zeros((5, 4, 8))
    k = jnp.zeros((7, 2, 6))  # head_dim 6 != 8
    v = jnp.zeros((7, 2, 8))
    with pytest.raises(TypeCheckError, match="parameter 'k'"):
        dot_product_attention(q, k, v)


def test_mask_of_the_wrong_shape_is_rejected():
    att = Attention(16, 4, key=jax.random.key(0))
    x = jnp.zeros((5, 16))
    att(x, mask=jnp.ones((5, 5), bool))  # the right shape passes
    with pytest.raises(TypeCheckError, match="parameter 'mask'"):
        att(x, mask=jnp.ones((4, 5), bool))
    with pytest.raises(TypeCheckError, match="parameter 'mask'"):
        att(x, mask=jnp.ones((5, 5), jnp.float32))  # a float mask is not a boolean mask


def test_float_token_ids_are_rejected():
    cfg = GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    model = GPT2(cfg, key=jax.random.key(0))
    assert model(jnp.array([1, 2, 3], jnp.int32)).shape == (3, 32)
    with pytest.raises(TypeCheckError, match="parameter 'input_ids'"):
        model(jnp.array([1.0, 2.0, 3.0]))
