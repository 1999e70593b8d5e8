"""Position information: sinusoidal tables, rotary embeddings (with their context-extension
scalings) and T5 relative-position buckets.

Learned absolute positions (GPT-2's ``wpe``) are a plain :class:`eqxllm.nn.Embedding`.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from eqxllm.errors import ConfigError, InputError

# the rotary scalings implemented; transformers also knows "dynamic" (dynamic NTK, whose frequencies
# depend on the longest position of each call and, in transformers, on the calls before it),
# "longrope" and "proportional"
ROPE_TYPES = ("default", "linear", "llama3", "yarn")
# the fields of RopeScaling each type reads (the others keep their defaults); optional ones may be None
SCALING_FIELDS = {
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
    "yarn": ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "mscale", "mscale_all_dim",
             "attention_factor", "truncate"),
}  # fmt: skip
_NUMBERS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings", "beta_fast",
            "beta_slow")  # fmt: skip
_OPTIONAL_NUMBERS = ("mscale", "mscale_all_dim", "attention_factor")


def sinusoidal_positions(positions: Int[Array, " seq"], dim: int) -> Float[Array, "seq embed"]:
    """Vaswani et al. (2017), section 3.5: ``PE[p, 2i] = sin(p / 10000^(2i/d))``, ``PE[p, 2i+1] = cos(...)``."""
    if dim % 2:
        raise ValueError(f"sinusoidal positions need an even width, got {dim}")
    inv = 1.0 / (10000.0 ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    angles = positions.astype(jnp.float32)[:, None] * inv[None, :]
    # interleave: even columns sin, odd columns cos, as in the paper's equations
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(positions.shape[0], dim)


def check_scaling_numbers(fields: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` naming the first of :class:`RopeScaling`'s numeric fields in ``fields``
    that is not a number (a config.json may spell ``"factor": "8"``); ``mscale``, ``mscale_all_dim`` and
    ``attention_factor`` may also be None, and ``truncate`` must be a boolean."""
    for name in (*_NUMBERS, *_OPTIONAL_NUMBERS):
        value = fields.get(name, 0)
        if value is None and name in _OPTIONAL_NUMBERS:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"rope scaling {name} must be a number, got {value!r} ({type(value).__name__})")
    truncate = fields.get("truncate", True)
    if not isinstance(truncate, bool):
        raise ConfigError(f"rope scaling truncate must be true or false, got {truncate!r} ({type(truncate).__name__})")


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's recommended ``sqrt(1/t) = 0.1 * mscale * ln(factor) + 1`` (Peng et al., 2023; ``t`` the
    softmax temperature), 1 for ``factor <= 1``, as transformers' ``yarn_get_mscale``."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


@dataclass(frozen=True, kw_only=True)
class RopeScaling:
    """How rotary frequencies are stretched for contexts longer than the pre-training one
    (Hugging Face's ``rope_parameters`` / ``rope_scaling``); :data:`SCALING_FIELDS` lists the fields
    each type reads, the others keep their defaults.

    ``"linear"``: position interpolation (Chen et al., 2023), every frequency divided by ``factor``.
    ``"llama3"``: Llama 3.1's frequency-dependent rule: wavelengths shorter than
    ``original_max_position_embeddings / high_freq_factor`` are kept, those longer than
    ``original_max_position_embeddings / low_freq_factor`` divided by ``factor``, and the ones between
    interpolated smoothly (Meta, 2024, "The Llama 3 Herd of Models"; transformers'
    ``_compute_llama3_parameters``).
    ``"yarn"``: YaRN (Peng et al., 2023, "YaRN: Efficient Context Window Extension of Large Language
    Models"): frequencies that turn more than ``beta_fast`` times over ``original_max_position_embeddings``
    are kept, those turning fewer than ``beta_slow`` times divided by ``factor``, a linear ramp over the
    dimensions between (their bounds rounded outwards when ``truncate``); ``cos`` and ``sin`` are
    multiplied by :attr:`attention_scale` (``attention_factor``, else ``yarn_mscale(factor, mscale) /
    yarn_mscale(factor, mscale_all_dim)`` when both are set, else ``yarn_mscale(factor)``), as
    transformers' ``_compute_yarn_parameters``.
    """

    rope_type: str
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int | float = 8192
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool = True

    def __post_init__(self):
        if self.rope_type not in ROPE_TYPES[1:]:
            raise ConfigError(
                f"rope scaling type {self.rope_type!r} is not implemented; known types: {list(ROPE_TYPES)} "
                "('default' means no scaling)"
            )
        check_scaling_numbers(vars(self))
        defaults = RopeScaling.__dataclass_fields__
        for name, field in defaults.items():
            if name not in ("rope_type", *SCALING_FIELDS[self.rope_type]) and getattr(self, name) != field.default:
                raise ConfigError(f"rope scaling {name} is not a field of {self.rope_type} scaling; leave it out")
        if not self.factor > 0:
            raise ConfigError(f"rope scaling factor must be positive, got {self.factor!r}")
        if self.rope_type != "linear" and not self.original_max_position_embeddings > 0:
            raise ConfigError(
                f"rope scaling original_max_position_embeddings must be positive, got "
                f"{self.original_max_position_embeddings!r}"
            )
        if self.rope_type == "llama3" and not 0 < self.low_freq_factor < self.high_freq_factor:
            raise ConfigError(
                "llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor, got "
                f"{self.low_freq_factor} and {self.high_freq_factor}"
            )
        if self.rope_type == "yarn":
            self._check_yarn()

    def _check_yarn(self) -> None:
        if self.factor < 1:  # transformers warns: YaRN stretches the context, a factor below 1 shrinks it
            raise ConfigError(f"yarn rope scaling factor must be >= 1, got {self.factor!r}")
        if not 0 < self.beta_slow <= self.beta_fast:
            raise ConfigError(
                f"yarn rope scaling needs 0 < beta_slow <= beta_fast, got beta_fast={self.beta_fast} and "
                f"beta_slow={self.beta_slow}"
            )
        if self.attention_factor is not None and not self.attention_factor > 0:
            raise ConfigError(f"yarn rope scaling attention_factor must be positive, got {self.attention_factor!r}")

    @property
    def attention_scale(self) -> float:
        """The factor on ``cos`` and ``sin`` (YaRN's ``sqrt(1/t)``); 1 for the other types."""
        if self.rope_type != "yarn":
            return 1.0
        if self.attention_factor is not None:
            return float(self.attention_factor)
        if self.mscale and self.mscale_all_dim:  # transformers tests truthiness: 0 counts as unset
            return yarn_mscale(self.factor, self.mscale) / yarn_mscale(self.factor, self.mscale_all_dim)
        return yarn_mscale(self.factor)

    def scale(self, inv_freq: Float[Array, " half"], base: float | None = None) -> Float[Array, " half"]:
        """The scaled inverse frequencies; ``base`` (the rotary base, a Python number) is needed by yarn."""
        if self.rope_type == "linear":
            return inv_freq / self.factor
        if self.rope_type == "yarn":
            return self._yarn(inv_freq, base)
        old = self.original_max_position_embeddings
        wavelen = 2 * math.pi / inv_freq
        low, high = self.low_freq_factor, self.high_freq_factor
        stretched = jnp.where(wavelen > old / low, inv_freq / self.factor, inv_freq)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * stretched / self.factor + smooth * stretched
        medium = (wavelen >= old / high) & (wavelen <= old / low)
        return jnp.where(medium, smoothed, stretched)

    def _yarn(self, inv_freq: Float[Array, " half"], base: float | None) -> Float[Array, " half"]:
        if not isinstance(base, int | float):
            raise ValueError(f"yarn rope scaling needs the rotary base as a Python number, got {base!r}")
        half = inv_freq.shape[0]
        dim, old = 2 * half, self.original_max_position_embeddings

        def dim_of(rotations: float) -> float:
            # the dimension whose frequency turns `rotations` times over the original context
            return dim * math.log(old / (rotations * 2 * math.pi)) / (2 * math.log(base))

        low, high = dim_of(self.beta_fast), dim_of(self.beta_slow)
        if self.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001  # transformers' guard against a zero-width ramp
        ramp = jnp.clip((jnp.arange(half, dtype=jnp.float32) - low) / (high - low), 0, 1)
        extrapolation = 1 - ramp  # the share of the unscaled frequency, 1 for the fast dimensions
        return (inv_freq / self.factor) * (1 - extrapolation) + inv_freq * extrapolation


@dataclass(frozen=True)
class Rope:
    """A rotary embedding's base and optional scaling: everything a layer's angles depend on."""

    theta: float
    scaling: RopeScaling | None = None

    def angles(
        self, positions: Int[Array, " seq"], head_dim: int
    ) -> tuple[Float[Array, "seq head_dim"], Float[Array, "seq head_dim"]]:
        return rotary_angles(positions, head_dim, base=self.theta, scaling=self.scaling)


def rotary_angles(
    positions: Int[Array, " seq"],
    head_dim: int,
    *,
    base: float | Float[Array, ""] = 10000.0,
    scale: float | Float[Array, ""] = 1.0,
    scaling: RopeScaling | None = None,
) -> tuple[Float[Array, "seq head_dim"], Float[Array, "seq head_dim"]]:
    """``(cos, sin)`` of RoFormer's rotation angles (Su et al., 2021), for the half-rotation layout.

    ``base`` and ``scale`` (linear position interpolation, Chen et al., 2023) may be traced scalars,
    so scanned layers can use different bases (Gemma 3: local 10k, global 1M). ``scaling`` rescales
    the frequencies (:class:`RopeScaling`; yarn needs a Python ``base``) and multiplies ``cos`` and
    ``sin`` by its :attr:`~RopeScaling.attention_scale`. Computed in float32. ``head_dim`` must be even: the
    rotation turns pairs of features.
    """
    if head_dim % 2:
        raise ValueError(f"rotary positions need an even head_dim (they rotate pairs of features), got {head_dim}")
    inv_freq = 1.0 / (base ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    if scaling is not None:
        inv_freq = scaling.scale(inv_freq, base if isinstance(base, int | float) else None)
    freqs = (positions.astype(jnp.float32) / scale)[:, None] * inv_freq[None, :]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    if scaling is None or scaling.attention_scale == 1.0:
        return jnp.cos(emb), jnp.sin(emb)
    return jnp.cos(emb) * scaling.attention_scale, jnp.sin(emb) * scaling.attention_scale


def apply_rotary(
    x: Float[Array, "seq heads head_dim"],
    cos: Float[Array, "seq head_dim"],
    sin: Float[Array, "seq head_dim"],
) -> Float[Array, "seq heads head_dim"]:
    """Rotate pairs ``(x[i], x[i + d/2])`` by the position's angle (the ``rotate_half`` convention of
    GPT-NeoX, Llama and Gemma, not the interleaved pairs of the RoFormer paper).

    :class:`~eqxllm.errors.InputError` unless ``cos`` and ``sin`` hold one row of ``head_dim``
    angles per position of ``x`` (a table made for another ``head_dim`` or length)."""
    seq, _, head_dim = x.shape
    for name, table in (("cos", cos), ("sin", sin)):
        if table.shape != (seq, head_dim):
            raise InputError(
                f"rotary {name} has shape {tuple(table.shape)} but the heads have {seq} positions of head_dim "
                f"{head_dim}; make the table with rotary_angles(positions, {head_dim}) for these positions"
            )
    half = head_dim // 2
    x32 = x.astype(jnp.float32)
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    out = x32 * cos[:, None, :] + rotated * sin[:, None, :]
    return out.astype(x.dtype)


def relative_position_bucket(
    relative_position: Int[Array, "*shape"], *, bidirectional: bool, num_buckets: int, max_distance: int
) -> Int[Array, "*shape"]:
    """T5's bucketing of ``key_pos - query_pos`` (Raffel et al., 2020; Shaw et al., 2018).

    Half the buckets (all of them if not ``bidirectional``, where only the past is seen) cover exact
    small distances, the rest log-spaced distances up to ``max_distance``; beyond it, the last bucket.
    """
    buckets = jnp.zeros_like(relative_position)
    n = num_buckets
    if bidirectional:
        n //= 2
        buckets = buckets + (relative_position > 0).astype(relative_position.dtype) * n
        distance = jnp.abs(relative_position)
    else:
        distance = -jnp.minimum(relative_position, 0)
    max_exact = n // 2
    is_small = distance < max_exact
    # log-spaced buckets; the max(…, 1) only guards log(0) in the branch that `is_small` discards
    log_ratio = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (n - max_exact)).astype(relative_position.dtype)
    large = jnp.minimum(large, n - 1)
    return buckets + jnp.where(is_small, distance, large)


class RelativePositionBias(eqx.Module):
    """T5's learned per-head bias ``b[heads, q, k] = table[bucket(k - q), heads]``, added to attention logits.

    Only the first layer of each T5 stack owns a table; all layers add the same bias.
    """

    weight: Float[Array, "buckets heads"]
    bidirectional: bool = eqx.field(static=True)
    max_distance: int = eqx.field(static=True)

    def __init__(self, num_buckets: int, num_heads: int, *, bidirectional: bool, max_distance: int, key: PRNGKeyArray):
        if num_buckets < 4 or max_distance <= num_buckets // (4 if bidirectional else 2):
            raise ValueError(
                f"relative attention needs num_buckets >= 4 and max_distance > the exact range; got "
                f"num_buckets={num_buckets}, max_distance={max_distance}"
            )
        self.weight = jax.random.normal(key, (num_buckets, num_heads), jnp.float32) * 0.02
        self.bidirectional = bidirectional
        self.max_distance = max_distance

    def __call__(
        self, q_positions: Int[Array, " seq"], k_positions: Int[Array, " kv_seq"]
    ) -> Float[Array, "heads seq kv_seq"]:
        rel = k_positions[None, :] - q_positions[:, None]
        buckets = relative_position_bucket(
            rel, bidirectional=self.bidirectional, num_buckets=self.weight.shape[0], max_distance=self.max_distance
        )
        return jnp.transpose(jnp.take(self.weight, buckets, axis=0), (2, 0, 1))
