"""Choosing the next token from one row of logits: greedy, temperature, top-k, top-p (nucleus), min-p.

Processing follows ``transformers``' order (``GenerationMixin._get_logits_processor``): divide by the
temperature, keep the ``top_k`` largest logits (Fan et al., 2018, "Hierarchical Neural Story
Generation"), then keep the smallest prefix of those, by decreasing probability, whose total
probability reaches ``top_p`` (Holtzman et al., 2020, "The Curious Case of Neural Text
Degeneration"), then keep those whose probability is at least ``min_p`` times the most likely one's
(Nguyen et al., 2024, "Turning Up the Heat: Min-p Sampling for Creative and Coherent LLM Outputs"),
and draw from what is left. The repetition penalty, which needs the tokens seen so far, comes before
all of these (``eqxllm.generation.penalty``). Everything runs in float32 whatever the model's dtype.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from eqxllm.errors import InputError
from eqxllm.generation.prompts import FloatOption, IntOption, as_scalar


class Sampler(eqx.Module):
    """The token choice for one sequence: ``sampler(logits, key) -> token id``.

    ``temperature``, ``top_p`` and ``min_p`` are arrays, so changing them does not recompile; ``top_k``
    (a shape) and ``greedy`` are static. Build one with :func:`make_sampler`, which checks the values.
    """

    temperature: Float[Array, ""]
    top_p: Float[Array, ""] | None
    top_k: int | None = eqx.field(static=True)
    greedy: bool = eqx.field(static=True)
    min_p: Float[Array, ""] | None = None

    def __call__(self, logits: Float[Array, " vocab"], key: PRNGKeyArray | None) -> Int[Array, ""]:
        logits = logits.astype(jnp.float32)
        if self.greedy:
            return first_argmax(logits)
        if key is None:
            raise ValueError("a sampling Sampler needs a key")
        values, indices = self.candidates(logits)
        if indices is None:
            return jax.random.categorical(key, values).astype(jnp.int32)
        return indices[jax.random.categorical(key, values)].astype(jnp.int32)

    def candidates(
        self, logits: Float[Array, " vocab"]
    ) -> tuple[Float[Array, " vocab"], None] | tuple[Float[Array, " k"], Int[Array, " k"]]:
        """The logits a sample is drawn from, after the temperature, top-k, top-p and min-p, those
        filtered out at ``-inf``: ``(logits, None)`` in vocabulary order when no option needs a sort,
        else the ``k`` largest, sorted, with their token ids."""
        logits = logits.astype(jnp.float32)
        # the largest logit becomes 0 first, so a tiny temperature sends the others to -inf, never
        # to inf - inf = NaN: the draw tends to the argmax, as the temperature tends to 0
        logits = (logits - jnp.max(logits)) / self.temperature
        if self.top_k is None and self.top_p is None:
            if self.min_p is not None:
                logits = jnp.where(min_p_mask(logits, self.min_p), logits, -jnp.inf)
            return logits, None
        # lax.top_k sorts: with top_k unset this is a full sort, which top-p needs anyway
        k = logits.shape[0] if self.top_k is None else min(self.top_k, logits.shape[0])
        values, indices = jax.lax.top_k(logits, k)
        if self.top_p is not None:
            values = jnp.where(nucleus_mask(values, self.top_p), values, -jnp.inf)
        if self.min_p is not None:
            values = jnp.where(min_p_mask(values, self.min_p), values, -jnp.inf)
        return values, indices

    def warped(self, logits: Float[Array, " vocab"]) -> Float[Array, " vocab"]:
        """The logits a sample is drawn from, in vocabulary order (``-inf`` where filtered out): what
        ``transformers``' warpers give, up to a constant per row (see :meth:`candidates`)."""
        if self.greedy:
            raise ValueError("a greedy Sampler does not sample: it has no warped logits")
        values, indices = self.candidates(logits)
        if indices is None:
            return values
        return jnp.full(logits.shape, -jnp.inf, jnp.float32).at[indices].set(values)


def first_argmax(logits: Float[Array, " vocab"]) -> Int[Array, ""]:
    """The first index of the largest logit, as ``jnp.argmax`` (ties go to the lower id).

    Written as a max and a min over the matching indices: two plain reductions, which XLA:CPU
    vectorises, where ``argmax``'s (value, index) reduction runs element by element (the cost on
    GPT-2's vocabulary: docs/benchmarks.md). A row with a NaN gets the NaN's index, as with ``argmax``.
    """
    ids = jnp.arange(logits.shape[0], dtype=jnp.int32)
    top = (logits == jnp.max(logits)) | jnp.isnan(logits)  # with a NaN the max is NaN: only NaNs match
    return jnp.min(jnp.where(top, ids, logits.shape[0] - 1))


def nucleus_mask(sorted_logits: Float[Array, " k"], top_p: Float[Array, ""]) -> Bool[Array, " k"]:
    """For logits sorted in decreasing order: the smallest prefix whose probability reaches ``top_p``.

    Token ``i`` is kept when the probability of the tokens before it is still below ``top_p``, so the
    most likely token is always kept and the prefix stops at the first token that reaches ``top_p``.
    """
    probs = jax.nn.softmax(sorted_logits.astype(jnp.float32))
    before = jnp.cumsum(probs) - probs
    return before < top_p


def min_p_mask(logits: Float[Array, " k"], min_p: Float[Array, ""]) -> Bool[Array, " k"]:
    """The tokens whose probability is at least ``min_p`` times the most likely token's (min-p,
    Nguyen et al., 2024), computed as ``transformers``' ``MinPLogitsWarper`` does (a softmax, then
    ``probs >= min_p * max(probs)``); the most likely token is always kept (its
    ``min_tokens_to_keep=1``), as are all tokens tied with it. Filtered logits (``-inf``) have
    probability 0 and stay out for any ``min_p > 0``."""
    probs = jax.nn.softmax(logits.astype(jnp.float32))
    top = jnp.max(probs)
    return (probs >= min_p * top) | (probs == top)


def make_sampler(
    *,
    temperature: FloatOption = 1.0,
    top_k: IntOption | None = None,
    top_p: FloatOption | None = None,
    min_p: FloatOption | None = None,
    has_key: bool,
    vocab_size: int,
) -> Sampler:
    """Check the sampling options and build the :class:`Sampler`.

    Greedy (argmax) when there is no key, or ``temperature == 0`` (or below float32's smallest normal
    number, about 1.2e-38, its limit). Sampling options without a key, ``temperature < 0``,
    ``top_k < 1``, ``top_p`` outside ``(0, 1]`` and ``min_p`` outside ``[0, 1]`` raise
    :class:`InputError`. ``top_k >= vocab_size``, ``top_p == 1`` and ``min_p == 0`` keep everything
    and are dropped.
    """
    temperature, top_k, top_p, min_p = (
        as_scalar(v, n) for v, n in ((temperature, "temperature"), (top_k, "top_k"), (top_p, "top_p"), (min_p, "min_p"))
    )
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not math.isfinite(temperature):
        raise InputError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if temperature < 0:
        raise InputError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise InputError(f"top_k must be an integer >= 1 (or None to keep every token), got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, int | float) or not 0.0 < top_p <= 1.0):
        raise InputError(f"top_p must be in (0, 1] (or None to keep every token), got {top_p!r}")
    if min_p is not None and (isinstance(min_p, bool) or not isinstance(min_p, int | float) or not 0.0 <= min_p <= 1.0):
        raise InputError(f"min_p must be in [0, 1] (or None to keep every token), got {min_p!r}")
    sampling_options = {
        name: value
        for name, value, default in (
            ("temperature", temperature, 1.0),
            ("top_k", top_k, None),
            ("top_p", top_p, None),
            ("min_p", min_p, None),
        )
        if value != default and not (name == "temperature" and value == 0)
    }
    if not has_key and sampling_options:
        raise InputError(
            f"sampling options {sampling_options} need a random key (key=jax.random.key(seed)); "
            "without one, generation is greedy"
        )
    # below float32's smallest normal number a temperature is subnormal, which XLA flushes to 0 and would
    # divide by: greedy is its limit
    greedy = not has_key or temperature < float(jnp.finfo(jnp.float32).tiny)
    if top_k is not None and top_k >= vocab_size:
        top_k = None
    if top_p is not None and top_p == 1.0:
        top_p = None
    if min_p is not None and min_p == 0.0:
        min_p = None
    return Sampler(
        temperature=jnp.asarray(1.0 if greedy else temperature, jnp.float32),
        top_p=None if greedy or top_p is None else jnp.asarray(top_p, jnp.float32),
        top_k=None if greedy else top_k,
        greedy=greedy,
        min_p=None if greedy or min_p is None else jnp.asarray(min_p, jnp.float32),
    )
