"""Beam search over a decoder cache, for every family.

Greedy decoding commits to the likeliest token at each step; beam search keeps the ``num_beams``
best partial sequences instead and returns the best finished one, scored by

    sum_t log p(y_t | y_<t) / length ** length_penalty

with ``length`` counting the new tokens, the stop token included. Every beam is ranked by that
normalised score while searching, so a finished sequence competes with the unfinished ones on
equal terms; a finished beam is carried unchanged (pad tokens after it) until the last step. This is
not ``transformers``' ``num_beams`` once a beam can finish early: there, finished hypotheses leave
the beam and ``num_beams`` live ones keep searching, so the two can return different sequences (with
``length_penalty=0``, or no early stop, they agree).

:func:`beam_search_cached` is the search itself, for one sequence, over any step function
``step(token [1], cache) -> (logits [1, vocab], cache)`` and its one-sequence cache: a model's
``decode`` (:func:`beam_search` builds the cache from a prompt, for decoder-only and
encoder-decoder models), a T5-VAE's decoder over a latent (:func:`eqxllm.vae.beam_search_from_latent`),
or a step that fuses two models' scores. The beams share one cache of ``num_beams`` rows, reordered
after every step, so a step costs one ``num_beams``-row decoder call whatever the length so far.
"""

from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PyTree

from eqxllm.errors import InputError
from eqxllm.generation.prompts import (
    FloatOption,
    IntOption,
    Prompt,
    as_scalar,
    check_context,
    check_generates,
    check_ids,
    check_stop_ids,
    reject_traced,
)

Step = Callable[[Int[Array, " one"], PyTree], tuple[Float[Array, "one vocab"], PyTree]]
Beams = (  # the best sequence, or every beam (``return_all``); with its scores (``return_scores``)
    Int[Array, "*batch new"]
    | Int[Array, "*batch beams new"]
    | tuple[Int[Array, "*batch new"], Float[Array, "*batch"]]
    | tuple[Int[Array, "*batch beams new"], Float[Array, "*batch beams"]]
)


def beam_search_cached(
    step: Step,
    cache: PyTree,
    first_token: Int[Array, ""] | int,
    *,
    num_beams: int,
    steps: int,
    stop_ids: Sequence[int],
    length_penalty: float = 1.0,
) -> tuple[Int[Array, "beams steps"], Float[Array, " beams"]]:
    """The ``num_beams`` final beams of one sequence, best first, and their normalised scores: ``steps``
    new tokens each (after its stop token, ``stop_ids[0]``). ``cache`` is the one-sequence cache that
    ``step`` reads and ``first_token`` the first input (a decoder's start token, or a prompt's last
    token after a prefill). A beam that was never live scores ``-inf``. Traceable: call it under jit."""
    width, alpha = num_beams, length_penalty
    stops = jnp.asarray(stop_ids, jnp.int32)
    pad = stops[0]
    caches = jax.tree.map(lambda x: jnp.broadcast_to(x, (width, *x.shape)), cache)

    def body(state, t):
        out, total, length, done, last, caches = state
        logits, caches = jax.vmap(step)(last[:, None], caches)
        logp = jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1)  # [width, vocab]
        vocab = logp.shape[-1]
        is_pad = jnp.arange(vocab) == pad
        # a finished beam has one continuation, the pad token, at no cost and no extra length
        cand_total = jnp.where(done[:, None], jnp.where(is_pad, total[:, None], -jnp.inf), total[:, None] + logp)
        cand_len = length[:, None] + jnp.where(done[:, None], 0, 1)
        ranked = cand_total / cand_len.astype(jnp.float32) ** alpha
        _, flat = jax.lax.top_k(ranked.reshape(-1), width)
        parent, token = flat // vocab, flat % vocab
        out = out[parent].at[:, t].set(token)
        total, length = cand_total[parent, token], cand_len[parent, token]
        done = done[parent] | jnp.any(token[:, None] == stops[None, :], axis=-1)
        caches = jax.tree.map(lambda x: x[parent], caches)
        return (out, total, length, done, token, caches), None

    # only beam 0 is live at first, so that the beams do not start as copies of one another
    total = jnp.where(jnp.arange(width) == 0, 0.0, -jnp.inf)
    first = jnp.full((width,), first_token, jnp.int32)
    zeros = jnp.zeros((width,), jnp.int32)
    state = (jnp.full((width, steps), pad, jnp.int32), total, zeros, zeros.astype(bool), first, caches)
    (out, total, length, _, _, _), _ = jax.lax.scan(body, state, jnp.arange(steps))
    normalised = total / jnp.maximum(length, 1).astype(jnp.float32) ** alpha
    order = jnp.argsort(-normalised, stable=True)  # best first; ties keep the beam order
    return out[order], normalised[order]


def check_beam_options(num_beams: int, length_penalty: float, steps: int) -> None:
    """Raise :class:`InputError` for ``num_beams < 1``, ``length_penalty < 0`` or ``steps < 1``."""
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise InputError(f"num_beams must be an integer >= 1, got {num_beams!r}")
    if length_penalty < 0:
        raise InputError(f"length_penalty must be >= 0, got {length_penalty}")
    if steps < 1:
        raise InputError(f"max_new_tokens must be >= 1, got {steps}")


@eqx.filter_jit
def _search_prompts(model, ids, num_beams: int, steps: int, stop_ids: tuple[int, ...], alpha: float):
    cfg = model.config

    def one(prompt):
        if cfg.is_encoder_decoder:
            mask = jnp.ones(prompt.shape, bool)
            cache = model.init_decoder_cache(model.encode(prompt, mask=mask), mask, steps, jnp.float32)
            first = cfg.decoder_start_token_id
        else:  # the prompt but its last token fills the cache; the last is the first input of the search
            cache = model.init_cache(prompt.shape[0] - 1 + steps, jnp.float32)
            if prompt.shape[0] > 1:
                _, cache = model.decode(prompt[:-1], cache)
            first = prompt[-1]
        return beam_search_cached(
            lambda t, c: model.decode(t, c), cache, first, num_beams=num_beams, steps=steps, stop_ids=stop_ids,
            length_penalty=alpha,
        )  # fmt: skip

    return jax.vmap(one)(ids)


def beam_search(
    model: Any,
    prompt: Prompt,
    *,
    max_new_tokens: IntOption,
    num_beams: IntOption = 4,
    length_penalty: FloatOption = 1.0,
    eos_token_id: int | Sequence[int] | None = None,
    return_scores: bool = False,
    return_all: bool = False,
) -> Beams:
    """The best continuation of ``prompt`` (``[seq]``, or ``[batch, seq]`` prompts of one length, as an
    array or a list of rows) found
    by a beam search of ``num_beams`` beams (see the module docstring), as the new token ids: up to and
    including a stop token (``eos_token_id``, default the config's; unlike :func:`eqxllm.generate`, ``()``
    is refused: a search needs a stop id), then the first stop id as padding.
    For an encoder-decoder model the prompt is the encoder input. With ``return_scores`` also the
    normalised score; with ``return_all`` every final beam, best first (``[*batch, num_beams, new]``).
    ``num_beams=1`` is greedy decoding."""
    check_generates(model)
    cfg = model.config
    reject_traced(prompt, "the prompt")
    try:
        ids = np.asarray(prompt)
    except ValueError:  # a list of rows of different lengths
        raise InputError(
            "beam search takes prompts of one length ([seq] or [batch, seq]); search prompts of different "
            "lengths one at a time"
        ) from None
    if ids.ndim not in (1, 2) or ids.shape[-1] == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"a beam search prompt is [seq] or [batch, seq] integer ids, got {ids.dtype} {ids.shape}")
    single = ids.ndim == 1
    ids = ids[None] if single else ids
    steps: int = as_scalar(max_new_tokens, "max_new_tokens")
    beams: int = as_scalar(num_beams, "num_beams")
    alpha: float = as_scalar(length_penalty, "length_penalty")
    check_beam_options(beams, alpha, steps)
    check_context(ids.shape[1], steps, cfg.max_positions, encoder_decoder=cfg.is_encoder_decoder)
    check_ids(ids, np.ones(ids.shape, bool), cfg.vocab_size)
    stops = cfg.eos_token_id if eos_token_id is None else eos_token_id
    stops = (stops,) if isinstance(stops, int | np.integer) else tuple(stops or ())
    if not stops:  # finished beams are padded with the first stop id, so "never stop" has no beam search
        why = "the model's config has none" if eos_token_id is None else f"eos_token_id={eos_token_id!r} gives none"
        known = eos_token_id is not None and cfg.eos_token_id is not None
        default = f" (or None for the config's {cfg.eos_token_id})" if known else ""
        raise InputError(
            f"beam search needs a stop token, which also pads finished beams: {why}; pass eos_token_id=ID{default}"
        )
    check_stop_ids(tuple(int(s) for s in stops), cfg.vocab_size)
    tokens, scores = _search_prompts(
        model, jnp.asarray(ids, jnp.int32), beams, steps, tuple(int(s) for s in stops), float(alpha),
    )  # fmt: skip
    return select_beams(tokens, scores, single=single, return_scores=return_scores, return_all=return_all)


def select_beams(
    tokens: Int[Array, "batch beams new"],
    scores: Float[Array, "batch beams"],
    *,
    single: bool,
    return_scores: bool,
    return_all: bool,
) -> Beams:
    """What a beam search returns of its batch of searches: the best beams or all, without the batch
    axis for one input (``single``), with the scores or without."""
    if not return_all:
        tokens, scores = tokens[:, 0], scores[:, 0]
    if single:
        tokens, scores = tokens[0], scores[0]
    return (tokens, scores) if return_scores else tokens
