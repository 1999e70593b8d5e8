"""Paths between two latents: linear and spherical (slerp), per latent token or over all tokens at
once, or geodesic through a bank of codes (:mod:`eqxllm.vae.geodesic`).

Slerp (Shoemake, 1985; for generative models White, 2016, "Sampling Generative Networks") follows
the great circle between ``a`` and ``b``: under a N(0, I) prior, points on the straight line between
two typical codes have a smaller norm than any typical code, and slerp avoids that dip. ``per_token``
treats each latent token as its own vector (its own angle); otherwise the ``[latent_tokens, latent]``
code is flattened into one vector.
"""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from eqxllm.errors import InputError
from eqxllm.vae.geodesic import CodeBank, geodesic_path

_PARALLEL = 1e-6  # |cos| above 1 - this (an angle under about 1.4e-3 rad from 0 or pi): slerp is a lerp


def lerp(a: Float[Array, "*dims"], b: Float[Array, "*dims"], t: Float[Array, ""] | float) -> Float[Array, "*dims"]:
    """``(1 - t) a + t b``: exactly ``a`` at ``t = 0`` and exactly ``b`` at ``t = 1``."""
    return (1.0 - t) * a + t * b


def slerp(
    a: Float[Array, "*rows dim"], b: Float[Array, "*rows dim"], t: Float[Array, ""] | float
) -> Float[Array, "*rows dim"]:
    """Spherical interpolation along the last axis, row by row:
    ``sin((1 - t) theta) / sin(theta) a + sin(t theta) / sin(theta) b`` with ``theta`` the angle between
    ``a`` and ``b``. Nearly parallel rows fall back to :func:`lerp`."""
    a32, b32 = a.astype(jnp.float32), b.astype(jnp.float32)
    norms = jnp.linalg.norm(a32, axis=-1, keepdims=True) * jnp.linalg.norm(b32, axis=-1, keepdims=True)
    cos = jnp.clip(jnp.sum(a32 * b32, axis=-1, keepdims=True) / jnp.maximum(norms, 1e-12), -1.0, 1.0)
    parallel = jnp.abs(cos) > 1.0 - _PARALLEL
    # arccos' slope is infinite at +-1: parallel rows take their angle from a stand-in cosine, so that
    # the branch they do not use has a finite gradient (0 * inf would be NaN in the training loss)
    theta = jnp.arccos(jnp.where(parallel, 0.0, cos))
    sin = jnp.sin(theta)
    wa = jnp.where(parallel, 1.0 - t, jnp.sin((1.0 - t) * theta) / sin)
    wb = jnp.where(parallel, t, jnp.sin(t * theta) / sin)
    return (wa * a32 + wb * b32).astype(a.dtype)


def interpolate(
    a: Float[Array, "latent_tokens latent"],
    b: Float[Array, "tokens_b latent_b"],  # checked below, with a message that names both shapes
    t: Float[Array, ""] | float,
    *,
    method: str = "slerp",
    per_token: bool = True,
) -> Float[Array, "latent_tokens latent"]:
    """One point of the path from ``a`` (``t = 0``) to ``b`` (``t = 1``)."""
    if a.shape != b.shape:
        raise InputError(f"cannot interpolate between latents of shapes {a.shape} and {b.shape}")
    if method == "linear":
        return lerp(a, b, t)
    if method != "slerp":
        raise InputError(f"interpolation method must be 'linear' or 'slerp', got {method!r}")
    if per_token:
        return slerp(a, b, t)
    return slerp(a.reshape(1, -1), b.reshape(1, -1), t).reshape(a.shape)


def interpolation_path(
    a: Float[Array, "latent_tokens latent"],
    b: Float[Array, "latent_tokens latent"],
    steps: int,
    *,
    method: str = "slerp",
    per_token: bool = True,
    bank: CodeBank | None = None,
) -> Float[Array, "steps latent_tokens latent"]:
    """``steps`` evenly spaced points from ``a`` to ``b``, both included (exactly): ``"linear"`` or
    ``"slerp"`` (``per_token``), or ``"geodesic"``, the shortest path through the codes of ``bank``,
    whose interior points are bank codes."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise InputError(f"an interpolation path needs steps >= 2 (both ends included), got {steps!r}")
    if method not in ("slerp", "linear", "geodesic"):
        raise InputError(f"interpolation method must be 'slerp', 'linear' or 'geodesic', got {method!r}")
    if method == "geodesic" and bank is None:
        raise InputError("a geodesic path runs through a bank of sentences' codes: pass bank=build_bank(...)")
    if method != "geodesic" and bank is not None:
        raise InputError(f"a bank is for method='geodesic'; a {method!r} path does not use one")
    if bank is not None:
        return jnp.asarray(geodesic_path(bank, np.asarray(a), np.asarray(b), steps)[0])
    # the weights are exactly (1, 0) and (0, 1) at the ends, so the path starts at a and ends at b exactly
    return jnp.stack([interpolate(a, b, i / (steps - 1), method=method, per_token=per_token) for i in range(steps)])
