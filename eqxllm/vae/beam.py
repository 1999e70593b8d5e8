"""Beam search from a T5-VAE's latent, optionally fused with the decoder's own language model.

Greedy decoding commits to the likeliest token at each step; half-way between two sentences, where
the code is ambiguous, that often writes a crossover of both. Beam search keeps the ``num_beams``
best partial sentences instead and returns the best finished one, scored by

    sum_t [log p(y_t | y_<t, code) + prior_weight * log p(y_t | y_<t)] / length ** length_penalty

where ``p(y_t | y_<t)`` is the decoder reading the null code (a model trained with ``code_dropout``)
and ``length`` counts the tokens with the end token. Every beam is ranked by that normalised score
while searching, so that a finished sentence competes with the unfinished ones on equal terms; a
finished beam is carried unchanged (end tokens after it) until the last step.

Each latent gets its own search (``jax.vmap`` over a batch of latents); its beams share one decoder
cache per code, reordered after every step, so a step costs ``num_beams`` single-token decoder calls
(twice with ``prior_weight``), whatever the length so far.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from eqxllm.errors import InputError
from eqxllm.vae.decoding import check_prior_weight


def _check(model, latents, num_beams: int, prior_weight: float, length_penalty: float) -> None:
    cfg = model.config
    shape = (cfg.n_latent_tokens, cfg.latent_size)
    if latents.ndim != 3 or latents.shape[1:] != shape:
        raise InputError(f"latents must be [batch, {shape[0]}, {shape[1]}], got {latents.shape}")
    if num_beams < 1:
        raise InputError(f"num_beams must be >= 1, got {num_beams}")
    check_prior_weight(cfg, prior_weight)
    if length_penalty < 0:
        raise InputError(f"length_penalty must be >= 0, got {length_penalty}")


def _search(
    model, latent: Float[Array, "latent_tokens latent"], num_beams: int, steps: int, prior_weight: float, alpha: float
) -> tuple[Int[Array, "beams steps"], Float[Array, " beams"]]:
    cfg = model.config
    eos, width = cfg.eos_token_id, num_beams

    def fresh(code):
        one = model.init_decoder_cache(code, None, steps, jnp.float32)
        return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (width, *x.shape)), one)

    caches = (fresh(latent), fresh(jnp.zeros_like(latent)) if prior_weight > 0 else None)

    def scores_of(tokens, caches):
        step = jax.vmap(lambda t, c: model.decode(t[None], c))
        logits, code_cache = step(tokens, caches[0])
        fused = jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1)
        null_cache = None
        if caches[1] is not None:
            prior, null_cache = step(tokens, caches[1])
            fused = fused + prior_weight * jax.nn.log_softmax(prior[:, 0].astype(jnp.float32), axis=-1)
        return fused, (code_cache, null_cache)

    def body(state, t):
        out, total, length, done, last, caches = state
        logp, caches = scores_of(last, caches)  # [width, vocab]
        vocab = logp.shape[-1]
        is_eos = jnp.arange(vocab) == eos
        # a finished beam has one continuation, the end token again, at no cost and no extra length
        cand_total = jnp.where(done[:, None], jnp.where(is_eos, total[:, None], -jnp.inf), total[:, None] + logp)
        cand_len = length[:, None] + jnp.where(done[:, None], 0, 1)
        ranked = cand_total / cand_len.astype(jnp.float32) ** alpha
        _, flat = jax.lax.top_k(ranked.reshape(-1), width)
        parent, token = flat // vocab, flat % vocab
        out = out[parent].at[:, t].set(token)
        total, length = cand_total[parent, token], cand_len[parent, token]
        done = done[parent] | (token == eos)
        caches = jax.tree_util.tree_map(lambda x: x[parent], caches)
        return (out, total, length, done, token, caches), None

    start = jnp.full((width,), cfg.decoder_start_token_id, jnp.int32)
    # only beam 0 is live at first, so that the beams do not start as copies of one another
    total = jnp.where(jnp.arange(width) == 0, 0.0, -jnp.inf)
    state = (
        jnp.full((width, steps), eos, jnp.int32), total, jnp.zeros((width,), jnp.int32),
        jnp.zeros((width,), bool), start, caches,
    )  # fmt: skip
    (out, total, length, _, _, _), _ = jax.lax.scan(body, state, jnp.arange(steps))
    normalised = total / jnp.maximum(length, 1).astype(jnp.float32) ** alpha
    order = jnp.argsort(-normalised, stable=True)  # best first; ties keep the beam order
    return out[order], normalised[order]


@eqx.filter_jit
def _batched(model, latents, num_beams: int, steps: int, prior_weight: float, alpha: float):
    return jax.vmap(lambda z: _search(model, z, num_beams, steps, prior_weight, alpha))(latents)


def beam_search_from_latent(
    model,
    latents: Float[Array, "*batch latent_tokens latent"],
    *,
    num_beams: int = 4,
    prior_weight: float = 0.0,
    length_penalty: float = 1.0,
    max_new_tokens: int | None = None,
    return_scores: bool = False,
    return_all: bool = False,
) -> (
    Int[Array, "*batch new"]
    | Int[Array, "*batch beams new"]
    | tuple[Int[Array, "*batch new"], Float[Array, "*batch"]]
    | tuple[Int[Array, "*batch beams new"], Float[Array, "*batch beams"]]
):
    """The best sentence found for each latent (``[latent_tokens, latent]`` or a batch of them) by a
    beam search of ``num_beams`` beams, as token ids: the sentence, its end token, then end tokens up
    to ``max_new_tokens`` (default: the model's ``max_length``); a sentence that never ends fills the
    row. With ``return_scores`` also its normalised score (see the module docstring). With
    ``return_all`` every final beam, best first: ``[*batch, num_beams, new]`` (and scores ``[*batch,
    num_beams]``); a beam that was never live scores ``-inf``. ``num_beams=1`` with
    ``prior_weight=0`` is greedy decoding."""
    cfg = model.config
    latents = jnp.asarray(latents)
    single = latents.ndim == 2
    batch = latents[None] if single else latents
    _check(model, batch, num_beams, prior_weight, length_penalty)
    steps = max_new_tokens or cfg.max_length
    if steps < 1:
        raise InputError(f"max_new_tokens must be >= 1, got {steps}")
    tokens, scores = _batched(model, batch, num_beams, steps, float(prior_weight), float(length_penalty))
    if not return_all:
        tokens, scores = tokens[:, 0], scores[:, 0]
    if single:
        tokens, scores = tokens[0], scores[0]
    return (tokens, scores) if return_scores else tokens
