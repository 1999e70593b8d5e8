"""Choosing the next token from one row of logits: greedy, temperature, top-k, top-p (nucleus).

Processing follows ``transformers``' order: divide by the temperature, keep the ``top_k`` largest
logits (Fan et al., 2018, "Hierarchical Neural Story Generation"), then keep the smallest prefix of
those, by decreasing probability, whose total probability reaches ``top_p`` (Holtzman et al., 2020,
"The Curious Case of Neural Text Degeneration"), and draw from what is left. Everything runs in
float32 whatever the model's dtype.
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

    ``temperature`` and ``top_p`` are arrays, so changing them does not recompile; ``top_k`` (a shape)
    and ``greedy`` are static. Build one with :func:`make_sampler`, which checks the values.
    """

    temperature: Float[Array, ""]
    top_p: Float[Array, ""] | None
    top_k: int | None = eqx.field(static=True)
    greedy: bool = eqx.field(static=True)

    def __call__(self, logits: Float[Array, " vocab"], key: PRNGKeyArray | None) -> Int[Array, ""]:
        logits = logits.astype(jnp.float32)
        if self.greedy:
            return first_argmax(logits)
        if key is None:
            raise ValueError("a sampling Sampler needs a key")
        # the largest logit becomes 0 first, so a tiny temperature sends the others to -inf, never
        # to inf - inf = NaN: the draw tends to the argmax, as the temperature tends to 0
        logits = (logits - jnp.max(logits)) / self.temperature
        if self.top_k is None and self.top_p is None:
            return jax.random.categorical(key, logits).astype(jnp.int32)
        # lax.top_k sorts: with top_k unset this is a full sort, which top-p needs anyway
        k = logits.shape[0] if self.top_k is None else min(self.top_k, logits.shape[0])
        values, indices = jax.lax.top_k(logits, k)
        if self.top_p is not None:
            values = jnp.where(nucleus_mask(values, self.top_p), values, -jnp.inf)
        return indices[jax.random.categorical(key, values)].astype(jnp.int32)


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


def make_sampler(
    *,
    temperature: FloatOption = 1.0,
    top_k: IntOption | None = None,
    top_p: FloatOption | None = None,
    has_key: bool,
    vocab_size: int,
) -> Sampler:
    """Check the sampling options and build the :class:`Sampler`.

    Greedy (argmax) when there is no key, or ``temperature == 0`` (or below float32's smallest normal
    number, about 1.2e-38, its limit). Sampling options without a key, ``temperature < 0``,
    ``top_k < 1`` and ``top_p`` outside ``(0, 1]`` raise :class:`InputError`.
    ``top_k >= vocab_size`` and ``top_p == 1`` keep everything and are dropped.
    """
    temperature, top_k, top_p = (
        as_scalar(v, n) for v, n in ((temperature, "temperature"), (top_k, "top_k"), (top_p, "top_p"))
    )
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not math.isfinite(temperature):
        raise InputError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if temperature < 0:
        raise InputError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise InputError(f"top_k must be an integer >= 1 (or None to keep every token), got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, int | float) or not 0.0 < top_p <= 1.0):
        raise InputError(f"top_p must be in (0, 1] (or None to keep every token), got {top_p!r}")
    sampling_options = {
        name: value
        for name, value, default in (("temperature", temperature, 1.0), ("top_k", top_k, None), ("top_p", top_p, None))
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
    return Sampler(
        temperature=jnp.asarray(1.0 if greedy else temperature, jnp.float32),
        top_p=None if greedy or top_p is None else jnp.asarray(top_p, jnp.float32),
        top_k=None if greedy else top_k,
        greedy=greedy,
    )
