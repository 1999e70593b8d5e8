"""Beam search over a decoder cache, for every family: the algorithm of ``transformers``'
``generate(num_beams=...)`` (its ``GenerationMixin._beam_search``; fairseq and OpenNMT search the same way).

``num_beams`` live beams search; at each step the ``max(2, 1 + n_stop_ids) * num_beams`` best
continuations of all live beams, by summed log-probability, are candidates. A candidate that ends
(at a stop id, or at ``max_new_tokens``) and ranks among the first ``num_beams`` of them leaves the
beam for a pool of ``num_beams`` finished hypotheses, each scored by

    sum_t log p(y_t | y_<t) / length ** length_penalty

(``length`` counts the new tokens, the stop token included; for an encoder-decoder model the
decoder's start token is not counted); the pool keeps the ``num_beams`` best. A ``length_penalty``
above 0 favours longer hypotheses, below 0 shorter ones; 0 compares summed log-probabilities. The best
``num_beams`` candidates that do not end are the next live beams (there are always that many:
each live beam ends in at most ``n_stop_ids`` of the candidates). The search stops at
``max_new_tokens`` or earlier, as ``early_stopping`` says:

- ``True``: as soon as the pool holds ``num_beams`` hypotheses;
- ``False`` (the default, as in ``transformers``): once the pool is full and the best live beam,
  scored at its current length, cannot beat the pool's worst (a heuristic: with
  ``length_penalty > 0`` a longer continuation could still score better; with
  ``length_penalty <= 0`` it is exact, as below);
- ``"never"``: once the pool is full and the best live beam, scored as if it reached
  ``max_new_tokens`` with no further cost (with ``length_penalty > 0``; at its current length
  otherwise), cannot beat the pool's worst: the canonical search, which stops only when nothing can
  improve. The bound holds for every sign of ``length_penalty``: a summed log-probability only falls
  as a beam grows, and with ``length_penalty <= 0`` dividing it by ``length ** length_penalty`` (a
  factor that does not shrink with length) does not raise it, so no continuation scores above the
  beam at its current length.

With a ``repetition_penalty`` the log-probabilities of the tokens a beam already holds are penalised
(:func:`eqxllm.generation.penalty.penalize`) before they are summed, as ``transformers`` runs its
logits processors on the log-softmax, with each beam's own tokens (its ``input_ids``): for a
decoder-only model the prompt and the beam's new tokens; for an encoder-decoder the decoder's start
token and the new tokens. Each live beam carries the set of tokens it holds, which follows its parent
when the beams are reordered. A penalised log-probability is still <= 0, so the bounds above hold.

The result is the pool, best first.

:func:`beam_search_cached` is the search itself, for one sequence, over any step function
``step(token [1], cache) -> (logits [1, vocab], cache)`` and its one-sequence cache: a model's
``decode`` (:func:`beam_search` builds the cache from a prompt, for decoder-only and
encoder-decoder models), a T5-VAE's decoder over a latent (:func:`eqxllm.vae.beam_search_from_latent`),
or a step that fuses two models' scores. The live beams share one cache of ``num_beams`` rows,
reordered after every step, so a step costs one ``num_beams``-row decoder call whatever the length so
far; the search is a ``jax.lax.while_loop`` that ends when it stops (under ``jax.vmap``, when every
sequence's search has stopped).
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PyTree

from eqxllm.errors import InputError
from eqxllm.generation.penalty import check_repetition_penalty, penalize, see, seen_prompt
from eqxllm.generation.prefill import cache_dtype, check_prefill_chunk, fill_cache
from eqxllm.generation.prompts import (
    FloatOption,
    IntOption,
    Prompt,
    StopIds,
    as_scalar,
    check_context,
    check_generates,
    check_ids,
    check_stop_ids,
    config_stop_ids,
    left_pad,
    token_ids,
)

Step = Callable[[Int[Array, " one"], PyTree], tuple[Float[Array, "one vocab"], PyTree]]
EarlyStopping = bool | str  # True, False or "never" (check_beam_options says so, in a clear error)
STOPPING = (False, True, "never")  # early_stopping's values; the search also takes the index of one, traced
Beams = (  # the best sequence, or every beam (``return_all``); with its scores (``return_scores``)
    Int[Array, "*batch new"]
    | Int[Array, "*batch beams new"]
    | tuple[Int[Array, "*batch new"], Float[Array, "*batch"]]
    | tuple[Int[Array, "*batch beams new"], Float[Array, "*batch beams"]]
)


class _Search(eqx.Module):
    """The state of one sequence's search after ``t`` steps."""

    t: Int[Array, ""]
    live: Int[Array, "beams steps"]  # the live beams' tokens (the first stop id after step t)
    live_total: Float[Array, " beams"]  # their summed log-probabilities, best first; -inf: no beam
    last: Int[Array, " beams"]  # each live beam's last token, the next step's input
    caches: PyTree  # the live beams' caches, one row each
    seen: Bool[Array, "beams vocab"] | None  # the tokens each live beam holds (with a repetition penalty)
    pool: Int[Array, "beams steps"]  # the finished hypotheses, padded with the first stop id
    pool_score: Float[Array, " beams"]  # their normalised scores, best first; -inf: an empty slot
    stopped: Bool[Array, ""]


def beam_search_cached(
    step: Step,
    cache: PyTree,
    first_token: Int[Array, ""] | int,
    *,
    num_beams: int,
    steps: int,
    stop_ids: Sequence[int],
    length_penalty: float | Float[Array, ""] = 1.0,
    early_stopping: EarlyStopping | Int[Array, ""] = False,
    repetition_penalty: float | Float[Array, ""] | None = None,
    seen: Bool[Array, " vocab"] | None = None,
) -> tuple[Int[Array, "beams steps"], Float[Array, " beams"]]:
    """The ``num_beams`` finished hypotheses of one sequence's search (module docstring), best first,
    and their normalised scores: ``steps`` new tokens each (after its stop token, ``stop_ids[0]``).
    ``cache`` is the one-sequence cache that ``step`` reads and ``first_token`` the first input (a
    decoder's start token, or a prompt's last token after a prefill). A slot that no hypothesis
    filled (only where the vocabulary is too small to give ``num_beams`` of them) scores ``-inf``. Traceable: call
    it under jit; ``length_penalty`` may be traced, and so may ``early_stopping`` as its index in
    :data:`STOPPING`.

    With a ``repetition_penalty`` (``None``: off; it may be traced) ``seen`` says which tokens the text
    holds before the search (a decoder-only model's prompt; nothing more for an encoder-decoder);
    ``first_token`` is added to it, and each beam adds its own tokens."""
    width, alpha = num_beams, length_penalty
    if repetition_penalty is not None and seen is None:
        raise InputError(
            "beam_search_cached: a repetition_penalty needs `seen`, the [vocab] mask of tokens the text holds"
        )
    mode = early_stopping if isinstance(early_stopping, jax.Array) else STOPPING.index(early_stopping)
    when_full = jnp.asarray(mode) == STOPPING.index(True)  # stop once the pool is full
    optimistic = (jnp.asarray(mode) == STOPPING.index("never")) & (alpha > 0)  # a live beam may reach `steps`
    stops = jnp.asarray(stop_ids, jnp.int32)
    pad = stops[0]
    keep = max(2, 1 + len(stop_ids)) * width  # candidates per step, so that `width` of them go on

    def body(s: _Search) -> _Search:
        logits, caches = jax.vmap(step)(s.last[:, None], s.caches)
        logp = jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1)  # [width, vocab]
        if s.seen is not None:  # transformers' processors act on the log-softmax, which is not renormalised
            logp = penalize(logp, s.seen, jnp.asarray(repetition_penalty, jnp.float32))
        vocab = logp.shape[-1]
        total, flat = jax.lax.top_k((s.live_total[:, None] + logp).reshape(-1), min(keep, width * vocab))
        parent, token = flat // vocab, flat % vocab
        cands = s.live[parent].at[:, s.t].set(token)
        ends = jnp.any(token[:, None] == stops[None, :], axis=-1) | (s.t == steps - 1)
        # the best candidates that go on are the next live beams
        going = jnp.where(ends, -jnp.inf, total)
        live_total, pick = jax.lax.top_k(going, width)
        caches = jax.tree.map(lambda x: x[parent[pick]], caches)
        seen = None if s.seen is None else see(s.seen[parent[pick]], token[pick])  # each beam's follows its parent
        # those that end among the first `width` candidates join the pool, which keeps the best `width`
        joins = ends & (jnp.arange(total.shape[0]) < width) & (total > -jnp.inf)
        score = jnp.where(joins, total / (s.t + 1).astype(jnp.float32) ** alpha, -jnp.inf)
        pool_score, best = jax.lax.top_k(jnp.concatenate([s.pool_score, score]), width)
        pool = jnp.concatenate([s.pool, cands])[best]
        # when to stop (transformers' `_check_early_stop_heuristic` and `_beam_search_has_unfinished_sequences`)
        full = jnp.all(pool_score > -jnp.inf)
        reach = jnp.where(optimistic, steps, s.t + 1).astype(jnp.float32)
        hopeless = live_total[0] / reach**alpha <= pool_score[-1]
        stopped = full & (hopeless | when_full)
        return _Search(s.t + 1, cands[pick], live_total, token[pick], caches, seen, pool, pool_score, stopped)

    # only beam 0 is live at first, so that the beams do not start as copies of one another
    live_total = jnp.where(jnp.arange(width) == 0, 0.0, -jnp.inf)
    empty = jnp.full((width, steps), pad, jnp.int32)
    start = _Search(
        t=jnp.asarray(0, jnp.int32),
        live=empty,
        live_total=live_total,
        last=jnp.full((width,), first_token, jnp.int32),
        caches=jax.tree.map(lambda x: jnp.broadcast_to(x, (width, *x.shape)), cache),
        seen=None if seen is None else jnp.broadcast_to(seen.at[first_token].set(True), (width, *seen.shape)),
        pool=empty,
        pool_score=jnp.full((width,), -jnp.inf),
        stopped=jnp.asarray(False),
    )
    end = jax.lax.while_loop(lambda s: (s.t < steps) & ~s.stopped, body, start)
    return end.pool, end.pool_score


def stopping_mode(early_stopping: EarlyStopping) -> Int[Array, ""]:
    """``early_stopping`` as its index in :data:`STOPPING`, an array: the search takes it traced, so
    another value does not compile again."""
    return jnp.asarray(STOPPING.index(early_stopping), jnp.int32)


def check_beam_options(num_beams: int, length_penalty: float, steps: int, early_stopping: Any = False) -> None:
    """Raise :class:`InputError` for ``num_beams < 1``, a ``length_penalty`` that is not a finite
    number, ``steps < 1`` or an ``early_stopping`` other than ``True``, ``False`` or ``"never"``."""
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise InputError(f"num_beams must be an integer >= 1, got {num_beams!r}")
    finite = isinstance(length_penalty, int | float | np.number) and math.isfinite(length_penalty)
    if isinstance(length_penalty, bool) or not finite:
        raise InputError(
            f"length_penalty must be a finite number (above 0 favours longer texts, below 0 shorter), got {length_penalty!r}"
        )
    if steps < 1:
        raise InputError(f"max_new_tokens must be >= 1, got {steps}")
    if not (isinstance(early_stopping, bool) or early_stopping == "never"):
        raise InputError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")


def prompt_cache(
    model: Any,
    prompt: Int[Array, " seq"],
    steps: int,
    prefill_chunk: int | None = None,
    mask: Bool[Array, " seq"] | None = None,
) -> tuple[PyTree, Int[Array, ""] | int]:
    """The one-sequence cache a search of ``steps`` new tokens starts from, and its first input: for
    an encoder-decoder the decoder cache over the encoded prompt and the decoder's start token; for a
    decoder-only model the cache filled with the prompt but its last token (``prefill_chunk`` tokens
    at a time, :func:`eqxllm.generation.prefill.fill_cache`), and that last token. ``mask`` marks the
    real tokens of a left-padded prompt (``None``: all are real)."""
    cfg = model.config
    if cfg.is_encoder_decoder:
        mask = jnp.ones(prompt.shape, bool) if mask is None else mask
        cache = model.init_decoder_cache(model.encode(prompt, mask=mask), mask, steps, cache_dtype(model))
        return cache, cfg.decoder_start_token_id
    cache = model.init_cache(prompt.shape[0] - 1 + steps, cache_dtype(model))
    if prompt.shape[0] > 1:  # the last token is real: padding is on the left

        def fill(ids, cache, real):  # only the cache: the search starts at the last token
            return (), model.decode(ids, cache, mask=real)[1]

        _, cache = fill_cache(fill, prompt[:-1], cache, None if mask is None else mask[:-1], prefill_chunk)
    return cache, prompt[-1]


@eqx.filter_jit
def _search_prompts(
    model,
    ids,
    mask,
    num_beams: int,
    steps: int,
    stop_ids: tuple[int, ...],
    alpha,
    mode,
    penalty,
    prefill_chunk: int | None,
):  # alpha, mode (early_stopping's index in STOPPING) and penalty (or None) are arrays: new values do not
    # compile again; mask is None when no prompt is padded
    cfg = model.config

    def one(prompt, real):
        cache, first = prompt_cache(model, prompt, steps, prefill_chunk, real)
        # what the repetition penalty sees first, as transformers' input_ids: a decoder-only model's prompt
        # (its real tokens); an encoder-decoder's start token, which the search adds
        real = jnp.ones(prompt.shape, bool) if real is None else real
        seen = (
            jnp.zeros((cfg.vocab_size,), bool)
            if cfg.is_encoder_decoder
            else seen_prompt(prompt[None], real[None], cfg.vocab_size)[0]
        )
        return beam_search_cached(
            lambda t, c: model.decode(t, c), cache, first, num_beams=num_beams, steps=steps, stop_ids=stop_ids,
            length_penalty=alpha, early_stopping=mode, repetition_penalty=penalty,
            seen=None if penalty is None else seen,
        )  # fmt: skip

    return jax.vmap(one)(ids, mask)


def beam_search(
    model: Any,
    prompt: Prompt,
    *,
    max_new_tokens: IntOption,
    num_beams: IntOption = 4,
    length_penalty: FloatOption = 1.0,
    early_stopping: EarlyStopping = False,
    repetition_penalty: FloatOption = 1.0,
    eos_token_id: StopIds | None = None,
    return_scores: bool = False,
    return_all: bool = False,
    prefill_chunk: int | None = None,
) -> Beams:
    """The best continuation of ``prompt`` (``[seq]``, ``[batch, seq]``, or a list of prompts of
    different lengths, left-padded as :func:`eqxllm.generate` pads them, the padding unseen: each
    prompt's search is that of the prompt alone) found by a beam search of ``num_beams`` beams, the
    search of    ``transformers``' ``generate(num_beams=..., length_penalty=..., early_stopping=...,
    repetition_penalty=...)`` (module docstring), as the new token ids: up to and including a stop token (``eos_token_id``, default
    the config's; unlike :func:`eqxllm.generate`, ``()`` is refused: a search needs a stop id), or
    ``max_new_tokens`` of them, then the first stop id as padding. For an encoder-decoder model the
    prompt is the encoder input. With ``return_scores`` also the normalised score
    (``transformers``' ``sequences_scores``); with ``return_all`` the ``num_beams`` finished
    hypotheses, best first (``[*batch, num_beams, new]``). ``num_beams=1`` is greedy decoding (but
    with ``early_stopping="never"`` and ``length_penalty > 0``, which may search on past a stop).
    ``repetition_penalty`` (``1.0``: off; a finite number > 0) penalises each beam's log-probabilities
    of the tokens it holds (the prompt's too for a decoder-only model), and the scores are sums of the
    penalised ones, as ``transformers``' ``sequences_scores``. (So one beam with a penalty is not
    greedy decoding with it, which penalises the logits: ``transformers`` differs the same way.)
    ``prefill_chunk`` fills a decoder-only model's cache with the prompt this many tokens at a time, as
    :func:`eqxllm.generate`'s does (``None``: all at once; an encoder reads its prompt whole): the same
    beams, with the attention and activations of one chunk live at a time."""
    check_generates(model)
    cfg = model.config
    ids, mask, single = left_pad(prompt)
    steps: int = as_scalar(max_new_tokens, "max_new_tokens")
    beams: int = as_scalar(num_beams, "num_beams")
    alpha: float = as_scalar(length_penalty, "length_penalty")
    check_beam_options(beams, alpha, steps, early_stopping)
    penalty = check_repetition_penalty(repetition_penalty)
    chunk = check_prefill_chunk(prefill_chunk)
    chunk = None if cfg.is_encoder_decoder else chunk  # an encoder reads its prompt whole
    check_context(ids.shape[1], steps, cfg.max_positions, encoder_decoder=cfg.is_encoder_decoder)
    check_ids(ids, mask, cfg.vocab_size)
    if eos_token_id is None:  # ids outside the vocabulary dropped with a warning, as generate drops them
        stops = config_stop_ids(cfg, stacklevel=3)
    else:
        stops = token_ids(eos_token_id, "eos_token_id")
        check_stop_ids(stops, cfg.vocab_size)
    if not stops:  # finished beams are padded with the first stop id, so "never stop" has no beam search
        config_ids = config_stop_ids(cfg, stacklevel=3, warn=False)
        if eos_token_id is None:
            why = "the model's config has none" + (" in the vocabulary" if cfg.eos_token_id is not None else "")
        else:
            why = f"eos_token_id={eos_token_id!r} gives none"
        default = f" (or None for the config's {list(config_ids)})" if eos_token_id is not None and config_ids else ""
        raise InputError(
            f"beam search needs a stop token, which also pads finished beams: {why}; pass eos_token_id=ID{default}"
        )
    tokens, scores = _search_prompts(
        model, jnp.asarray(ids), None if mask.all() else jnp.asarray(mask), beams, steps,
        stops, jnp.asarray(alpha, jnp.float32), stopping_mode(early_stopping),
        None if penalty is None else jnp.asarray(penalty, jnp.float32), chunk,
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
