"""Scoring text with a decoder-only language model: how likely the model finds each of a list of texts.

``text_log_likelihoods(lm, tokenizer, texts)`` returns, per text, the mean log-probability of its
tokens, each given the ones before it and a start token (the model's ``bos_token_id``: GPT-2's
``<|endoftext|>``, Gemma's ``<bos>``), so the first token is scored too:

    score(text) = 1/n sum_{t=1..n} log p(x_t | bos, x_1 .. x_{t-1})

A per-token mean does not favour short texts the way a sum does; it is the score used to rank
candidate sentences by fluency. Rows are right-padded to a
multiple of 16 tokens and scored in fixed-size batches, so a long list compiles a few programs, not
one per length; causal attention keeps padding out of every scored position.
"""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from eqxllm.errors import InputError
from eqxllm.nn.cross_entropy import target_log_probs

_BUCKET = 16


@eqx.filter_jit
def _row_sums(lm, ids: Int[Array, "batch seq"], lengths: Int[Array, " batch"]) -> Float[Array, " batch"]:
    """Sum over positions ``1 .. lengths-1`` of ``log p(ids[t] | ids[<t])``, per row."""
    picked = target_log_probs(jax.vmap(lm)(ids)[:, :-1], ids[:, 1:])  # [batch, seq-1]
    scored = jnp.arange(1, ids.shape[1])[None, :] < lengths[:, None]
    return jnp.sum(jnp.where(scored, picked, 0.0), axis=-1)


def text_log_likelihoods(lm, tokenizer, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
    """The mean log-probability per token of each of ``texts`` under the decoder-only ``lm`` (GPT-2,
    Gemma), as float32 ``[len(texts)]``; ``tokenizer`` is the model's own (a ``tokenizers.Tokenizer``).
    Raises :class:`InputError` for a ``batch_size`` that is not an integer >= 1, an encoder-decoder
    model, an empty text, one that does not fit the model's context with its start token, or a token
    id (or start token) outside the vocabulary."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    cfg = lm.config
    if cfg.is_encoder_decoder:
        raise InputError(f"scoring text needs a decoder-only language model, got {type(lm).__name__}")
    start = getattr(cfg, "bos_token_id", None)
    if start is None:
        raise InputError(f"{type(lm).__name__}'s config has no bos_token_id to start a text with")
    if not 0 <= start < cfg.vocab_size:
        raise InputError(f"the config's bos_token_id {start} is outside the vocabulary [0, {cfg.vocab_size})")
    rows = []
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        if not ids:
            raise InputError(f"cannot score an empty text: {text!r}")
        if cfg.max_positions is not None and len(ids) + 1 > cfg.max_positions:
            raise InputError(
                f"the text {text[:60]!r} is {len(ids)} tokens; with its start token it must fit the "
                f"model's {cfg.max_positions} positions"
            )
        if max(ids) >= cfg.vocab_size:
            raise InputError(
                f"the tokenizer gives token id {max(ids)} for {text[:60]!r}, outside the model's vocabulary "
                f"[0, {cfg.vocab_size}): pass the model's own tokenizer"
            )
        rows.append([start, *ids])
    out = np.zeros((len(rows),), np.float32)
    for lo in range(0, len(rows), batch_size):
        chunk = rows[lo : lo + batch_size]
        width = -(-max(map(len, chunk)) // _BUCKET) * _BUCKET
        if cfg.max_positions is not None:
            width = min(width, cfg.max_positions)
        ids = np.full((batch_size, width), start, np.int32)
        lengths = np.ones((batch_size,), np.int32)
        for i, row in enumerate(chunk):
            ids[i, : len(row)], lengths[i] = row, len(row)
        sums = np.asarray(_row_sums(lm, jnp.asarray(ids), jnp.asarray(lengths)))[: len(chunk)]
        out[lo : lo + len(chunk)] = sums / (lengths[: len(chunk)] - 1)
    return out
