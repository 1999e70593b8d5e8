"""Keeping XLA:CPU from recomputing a vector inside a matrix-vector product.

In a decoding step every projection is a matrix-vector product. XLA:CPU emits it as a loop over the
matrix's rows into which it fuses the ops that make the vector, and then recomputes them for every
row: an MLP's activation (3072 values for GPT-2) 768 times over, or a reshape of the attention
output from ``[heads, 1, 1, head_dim]`` whose index arithmetic turns the vector loads into scalar
ones. Either made the product take 1.4-2x the time of reading its weights. A gather is never fused
into its consumer, so an identity gather makes the vector once, as a plain buffer.
"""

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap
from jaxtyping import Array, Float


@custom_vmap
def identity_gather(x: Array) -> Array:
    """``x`` computed into its own buffer: a gather is never fused into its consumer, nor folded into
    a product's operand order (under a ``vmap`` of more than one: plain ``x``, see below)."""
    ids = jnp.arange(x.size, dtype=jnp.int32)
    return jnp.take(x.reshape(-1), ids, unique_indices=True, indices_are_sorted=True).reshape(x.shape)


@identity_gather.def_vmap
def _batched(axis_size: int, in_batched: list[bool], x: Array) -> tuple[Array, bool]:
    # a batch of one sequence is still one vector per product: gather the whole array at once. A
    # larger batch makes the products matrix-matrix, which XLA:CPU hands to a library kernel
    # without fusing anything, and a batched gather would be slow: the identity itself.
    if axis_size == 1 or not in_batched[0]:
        return identity_gather(x), in_batched[0]
    return x, in_batched[0]


@jax.custom_jvp
def materialize(x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """``x`` unchanged, computed into its own buffer before a matrix-vector product reads it (an
    identity gather; plain ``x`` under a ``vmap`` of more than one, and on backends other than the
    CPU, where other kernels run the products and the effect was not measured). Differentiable as
    the identity."""
    if jax.default_backend() != "cpu":
        return x
    return identity_gather(x)


@materialize.defjvp
def _identity_jvp(primals, tangents):
    return materialize(primals[0]), tangents[0]
