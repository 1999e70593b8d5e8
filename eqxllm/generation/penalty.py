"""The repetition penalty (Keskar et al., 2019, "CTRL: A Conditional Transformer Language Model for
Controllable Generation", section 4.1): the logits of tokens already seen are pushed down.

As ``transformers``' ``RepetitionPenaltyLogitsProcessor``: a seen token's logit is divided by the
penalty where it is positive (or 0) and multiplied by it where negative, so a penalty above 1 makes
repeats less likely and one below 1 more likely; each token is penalised once however often it was
seen. It is applied to the model's logits (in float32) before the temperature and every filter, in
greedy decoding as in sampling.

Which tokens count as seen, as ``transformers``' ``generate`` passes them (its ``input_ids``): for a
decoder-only model the prompt's real tokens and every token generated; for an encoder-decoder the
decoder's tokens only, from its ``decoder_start_token_id`` on (the encoder input is not penalised).
Left padding is not seen: ``transformers`` (since v5) skips a prompt's leading padding too
(``prompt_ignore_length`` from the attention mask). The record is a ``[batch, vocab]`` mask carried
through the decoding loop, so the shapes stay fixed.
"""

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from eqxllm.errors import InputError
from eqxllm.generation.prompts import FloatOption, as_scalar


def penalize(
    logits: Float[Array, "*batch vocab"], seen: Bool[Array, "*batch vocab"], penalty: Float[Array, ""]
) -> Float[Array, "*batch vocab"]:
    """``logits`` (in float32) with those of ``seen`` tokens divided by ``penalty`` when positive or 0,
    multiplied by it when negative."""
    logits = logits.astype(jnp.float32)
    return jnp.where(seen, jnp.where(logits < 0, logits * penalty, logits / penalty), logits)


def seen_prompt(
    ids: Int[Array, "batch seq"], mask: Bool[Array, "batch seq"], vocab_size: int
) -> Bool[Array, "batch vocab"]:
    """Which ids each (left-padded) prompt holds among its real tokens (``mask``): padding is not seen."""
    # padding goes to the slot past the vocabulary, which the scatter drops
    return jax.vmap(lambda i, m: jnp.zeros((vocab_size,), bool).at[jnp.where(m, i, vocab_size)].set(True, mode="drop"))(
        ids, mask
    )


def see(seen: Bool[Array, "batch vocab"], tokens: Int[Array, " batch"]) -> Bool[Array, "batch vocab"]:
    """``seen`` with each sequence's new token added."""
    return seen.at[jnp.arange(seen.shape[0]), tokens].set(True)


def check_repetition_penalty(penalty: FloatOption) -> float | None:
    """The penalty as a float, or ``None`` when it is 1 (off); :class:`InputError` unless it is a
    finite number > 0."""
    penalty = as_scalar(penalty, "repetition_penalty")
    if isinstance(penalty, bool) or not isinstance(penalty, int | float) or not math.isfinite(penalty) or penalty <= 0:
        raise InputError(
            f"repetition_penalty must be a finite number > 0 (1.0 is no penalty, above 1 makes repeats less "
            f"likely, below 1 more likely), got {penalty!r}"
        )
    return None if penalty == 1 else float(penalty)
