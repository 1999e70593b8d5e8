"""Token (or learned position) embeddings, usable as a tied output head."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from eqxllm.nn.linear import project


class Embedding(eqx.Module):
    """A lookup table ``weight[ids]``; ``attend`` computes ``x @ weight^T`` for a tied head (Press & Wolf, 2017)."""

    weight: Float[Array, "vocab embed"]

    def __init__(self, num_embeddings: int, dim: int, *, init_std: float = 0.02, key: PRNGKeyArray):
        self.weight = init_std * jax.random.normal(key, (num_embeddings, dim), jnp.float32)

    def __call__(self, ids: Int[Array, " seq"]) -> Float[Array, "seq embed"]:
        return jnp.take(self.weight, ids, axis=0)

    def attend(self, x: Float[Array, "seq embed"]) -> Float[Array, "seq vocab"]:
        return project(x, self.weight.astype(x.dtype))
