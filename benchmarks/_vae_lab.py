"""Decoding a latent path with a language model as a fluency judge (noisy-channel reranking).

Half-way between two sentences the T5-VAE's decoder is asked about a code it never saw during
training, and the likeliest sentence for that code is sometimes a crossover ("It was like a babyer
that he could bothin?"). The decoder is a poor judge of that: it rates its crossover the likeliest
reading. A separately trained language model is a better one, because it never sees the code.

:func:`rerank_path` decodes every point of the path by beam search, pools the finished, non-empty
beams of all points (and any ``anchors``, such as the path's two input sentences) into one list of
candidates, and gives point ``k`` the candidate ``y`` that maximises

    code(y | z_k) + lm_weight * lm(y)

where ``code(y | z_k)`` is the decoder's mean log-probability per token of ``y`` (its end token
included) given the code ``z_k`` (teacher-forced: the beam search's own score), and ``lm(y)`` the
language model's mean log-probability per token (:func:`eqxllm.generation.score.text_log_likelihoods`,
on its own tokenizer). Sentences are scored whole, so the language model needs neither the VAE's
vocabulary nor its tokenizer; a GPT-2 trained on the same text (``eqxllm train --config
gpt2-tinystories``) will do. This is the sentence-level reranking of noisy-channel decoding (Yee et
al., 2019, "Simple and Effective Noisy Channel Modeling for Neural Machine Translation"), with the
code in the role of the source sentence. ``lm_weight=0`` keeps the decoder's own choice among the
pooled candidates; as it grows, each point takes the most fluent sentence that its code still
supports, which can be a neighbouring point's sentence: the path then stays with one end for longer
instead of passing through a broken one.
"""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from eqxllm.errors import InputError
from eqxllm.generation.score import text_log_likelihoods
from eqxllm.vae.beam import beam_search_from_latent
from eqxllm.vae.decoding import strip_after_end
from eqxllm.vae.losses import shift_right


@eqx.filter_jit
def _code_scores(
    model,
    latents: Float[Array, "points latent_tokens latent"],
    targets: Int[Array, "cands seq"],
    lengths: Int[Array, " cands"],
) -> Float[Array, "points cands"]:
    inputs = shift_right(targets, model.config.decoder_start_token_id)
    scored = jnp.arange(targets.shape[1])[None, :] < lengths[:, None]  # [cands, seq]

    def one(latent, dec_in, target, keep):
        logp = jax.nn.log_softmax(model.decode_full(latent, dec_in).astype(jnp.float32), axis=-1)
        picked = jnp.take_along_axis(logp, target[:, None], axis=-1)[:, 0]
        return jnp.sum(jnp.where(keep, picked, 0.0)) / jnp.sum(keep)

    over_cands = jax.vmap(one, in_axes=(None, 0, 0, 0))
    return jax.vmap(over_cands, in_axes=(0, None, None, None))(latents, inputs, targets, scored)


def code_log_likelihoods(model, latents, candidates: Sequence[Sequence[int]]) -> np.ndarray:
    """``[points, len(candidates)]``: the decoder's mean log-probability per token of each candidate
    (token ids without the end token, which is appended and scored) given each latent of ``latents
    [points, latent_tokens, latent]``. With length penalty 1 this is the beam search's score."""
    cfg = model.config
    width = cfg.max_length
    rows = np.full((len(candidates), width), cfg.eos_token_id, np.int32)
    lengths = np.zeros((len(candidates),), np.int32)
    for i, ids in enumerate(candidates):
        if len(ids) + 1 > width:
            raise InputError(f"candidate {i} is {len(ids)} tokens; with its end token this model reads {width}")
        rows[i, : len(ids)], lengths[i] = ids, len(ids) + 1
    return np.asarray(_code_scores(model, jnp.asarray(latents, jnp.float32), jnp.asarray(rows), jnp.asarray(lengths)))


def rerank_path(
    model,
    tokenizer,
    latents: Float[Array, "points latent_tokens latent"] | np.ndarray,
    lm,
    lm_tokenizer,
    *,
    lm_weight: float = 0.25,
    num_beams: int = 8,
    anchors: Sequence[str] = (),
) -> list[str]:
    """The sentence chosen for each point of the latent path ``latents`` (see the module docstring):
    beams of every point pooled, each point taking ``argmax code(y | z_k) + lm_weight * lm(y)``.
    ``lm`` is a decoder-only model with its tokenizer ``lm_tokenizer``. ``anchors``: sentences that
    join the pool as they are (:func:`eqxllm.vae.text.interpolate_texts` adds the path's two ends, so
    an end that the beams garble can still be written as given)."""
    if lm_weight < 0:
        raise InputError(f"lm_weight must be >= 0, got {lm_weight}")
    latents = jnp.asarray(latents, jnp.float32)
    if latents.ndim != 3 or latents.shape[0] == 0:
        raise InputError(f"latents must be a non-empty path [points, latent_tokens, latent], got {latents.shape}")
    tokens, scores = beam_search_from_latent(model, latents, num_beams=num_beams, return_scores=True, return_all=True)
    eos = model.config.eos_token_id
    pool: dict[tuple[int, ...], str] = {}
    for row, score in zip(np.asarray(tokens).reshape(-1, tokens.shape[-1]), np.asarray(scores).reshape(-1)):
        ids = tuple(strip_after_end(row, eos))
        finished = len(ids) < len(row)  # a beam that never wrote its end token is not a sentence
        if ids and finished and np.isfinite(score) and ids not in pool:
            pool[ids] = tokenizer.decode(list(ids))
    for text in anchors:
        ids = tuple(tokenizer.encode(text, add_special_tokens=False).ids)
        if not ids or len(ids) >= model.config.max_length:
            raise InputError(
                f"the anchor {text[:60]!r} is {len(ids)} tokens; this model writes 1 to {model.config.max_length - 1}"
            )
        pool.setdefault(ids, tokenizer.decode(list(ids)))
    pool = {ids: text for ids, text in pool.items() if text.strip()}
    if not pool:
        raise InputError("no beam of this path decoded to a non-empty sentence")
    cands = list(pool)
    total = code_log_likelihoods(model, latents, cands)
    if lm_weight > 0:
        total = total + lm_weight * text_log_likelihoods(lm, lm_tokenizer, [pool[c] for c in cands])[None, :]
    return [pool[cands[k]] for k in np.argmax(total, axis=1)]
