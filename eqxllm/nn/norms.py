"""Normalisation layers, computed in float32 whatever the activation dtype."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


class RMSNorm(eqx.Module):
    """Root-mean-square norm (Zhang & Sennrich, 2019): ``x / sqrt(mean(x^2) + eps) * scale``.

    ``scale`` is ``w`` (T5, Llama) or ``1 + w`` with ``w`` initialised to zero (Gemma, ``unit_offset=True``).
    The whole computation runs in float32 and the result is cast back to the input dtype.
    Shapes: ``[*batch, embed] -> [*batch, embed]``.
    """

    weight: Float[Array, " embed"]
    eps: float = eqx.field(static=True)
    unit_offset: bool = eqx.field(static=True)

    def __init__(self, dim: int, *, eps: float = 1e-6, unit_offset: bool = False):
        self.weight = jnp.zeros((dim,), jnp.float32) if unit_offset else jnp.ones((dim,), jnp.float32)
        self.eps = eps
        self.unit_offset = unit_offset

    def __call__(self, x: Float[Array, "*batch embed"]) -> Float[Array, "*batch embed"]:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        w = self.weight.astype(jnp.float32)
        # Gemma stores w and multiplies by (1 + w) so that a zero-initialised weight is the identity.
        scale = 1.0 + w if self.unit_offset else w
        return (normed * scale).astype(x.dtype)


class LayerNorm(eqx.Module):
    """Layer normalisation (Ba et al., 2016) over the last axis, in float32: ``(x - mean) / std * w + b``.

    Equinox's ``eqx.nn.LayerNorm`` also upcasts to float32, but normalises over its whole ``shape``
    and stores its weight in its own dtype; this one takes ``[*batch, embed]``, keeps float32
    parameters whatever the compute dtype, and matches :class:`RMSNorm`'s interface.
    """

    weight: Float[Array, " embed"]
    bias: Float[Array, " embed"] | None
    eps: float = eqx.field(static=True)

    def __init__(self, dim: int, *, eps: float = 1e-5, use_bias: bool = True):
        self.weight = jnp.ones((dim,), jnp.float32)
        self.bias = jnp.zeros((dim,), jnp.float32) if use_bias else None
        self.eps = eps

    def __call__(self, x: Float[Array, "*batch embed"]) -> Float[Array, "*batch embed"]:
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps) * self.weight.astype(jnp.float32)
        if self.bias is not None:
            y = y + self.bias.astype(jnp.float32)
        return y.astype(x.dtype)
