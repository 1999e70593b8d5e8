"""``generate`` (the whole run in one compiled call) and ``stream`` (the same tokens, chunk by chunk)."""

from collections.abc import Iterator, Sequence

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Int, PRNGKeyArray

from eqxllm.errors import InputError
from eqxllm.generation import loop
from eqxllm.generation.penalty import check_repetition_penalty
from eqxllm.generation.prefill import cache_dtype, check_prefill_chunk
from eqxllm.generation.prompts import (
    FloatOption,
    IntOption,
    Prompt,
    StopIds,
    as_scalar,
    check_context,
    check_generates,
    check_ids,
    check_key,
    check_pad_id,
    check_stop_ids,
    config_stop_ids,
    left_pad,
    token_ids,
)
from eqxllm.generation.sampling import make_sampler


def generate(
    model: eqx.Module,
    prompt: Prompt,
    *,
    max_new_tokens: IntOption,
    temperature: FloatOption = 1.0,
    top_k: IntOption | None = None,
    top_p: FloatOption | None = None,
    min_p: FloatOption | None = None,
    repetition_penalty: FloatOption = 1.0,
    key: PRNGKeyArray | None = None,
    eos_token_id: StopIds | None = None,
    stop_token_ids: StopIds = (),
    pad_token_id: IntOption | None = None,
    return_lengths: bool = False,
    prefill_chunk: int | None = None,
) -> Int[Array, "*batch new"] | tuple[Int[Array, "*batch new"], Int[Array, "*batch"]]:
    """Continue ``prompt`` by up to ``max_new_tokens`` tokens; returns only the new tokens.

    Args:
        model: any eqxllm language model (decoder-only or encoder-decoder).
        prompt: token ids: ``[seq]`` (one prompt; the result is ``[new]``), ``[batch, seq]``, or a list of
            1-D arrays / lists of different lengths (left-padded internally; the result is ``[batch, new]``).
            For an encoder-decoder model the prompt is the encoder input.
        max_new_tokens: how many tokens to produce; prompt + new tokens must fit in the context.
        temperature: divides the logits before sampling; ``temperature=0`` is greedy.
        top_k: sample only among the ``top_k`` most likely tokens (applied after the temperature).
        top_p: then only among the smallest set whose probability reaches ``top_p`` (nucleus sampling).
        min_p: then only among the tokens whose probability is at least ``min_p`` times the most likely
            one's (min-p sampling, Nguyen et al., 2024), in ``[0, 1]``.
        repetition_penalty: before all of the above, and in greedy decoding too: the logits of tokens
            already in the sequence (the prompt's and the new ones; an encoder-decoder's decoder tokens)
            are divided by it where positive and multiplied by it where negative (Keskar et al., 2019);
            ``1.0`` is off, above 1 discourages repeats, below 1 (and > 0) encourages them.
        key: the random key; without one decoding is greedy (and sampling options are an error).
            The same key gives the same tokens.
        eos_token_id: stop ids; ``None`` takes the model config's, ``()`` never stops early.
        stop_token_ids: more ids that end a sequence.
        pad_token_id: fills a sequence's slots after its stop token; default: the first EOS id, else 0.
        return_lengths: also return each sequence's length (up to and including its stop token).
        prefill_chunk: fill the cache with the prompt this many tokens at a time (decoder-only models;
            ``None``: all at once). The tokens are the same; the prefill's attention scores and
            activations are those of a chunk, which bounds the memory of a long prompt.

    Raises :class:`InputError` for an empty prompt, a prompt or ``max_new_tokens`` beyond the
    context, ids outside the vocabulary, out-of-range sampling options, and a ``repetition_penalty``
    that is not a finite number > 0.
    """
    new_tokens: int = as_scalar(max_new_tokens, "max_new_tokens")
    options = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    decoder, ids, mask, single = _prepare(
        model, prompt, new_tokens, options, repetition_penalty, key, eos_token_id, stop_token_ids, pad_token_id,
        prefill_chunk,
    )  # fmt: skip
    tokens = loop.generate_tokens(decoder, ids, mask, key, new_tokens)
    lengths = sequence_lengths(tokens, decoder.stop_ids)
    if single:
        tokens, lengths = tokens[0], lengths[0]
    return (tokens, lengths) if return_lengths else tokens


def stream(
    model: eqx.Module,
    prompt: Prompt,
    *,
    max_new_tokens: IntOption,
    chunk_size: int = 16,
    temperature: FloatOption = 1.0,
    top_k: IntOption | None = None,
    top_p: FloatOption | None = None,
    min_p: FloatOption | None = None,
    repetition_penalty: FloatOption = 1.0,
    key: PRNGKeyArray | None = None,
    eos_token_id: StopIds | None = None,
    stop_token_ids: StopIds = (),
    pad_token_id: IntOption | None = None,
    prefill_chunk: int | None = None,
) -> Iterator[Int[Array, "*batch chunk"]]:
    """The tokens of :func:`generate` (the same ones, for the same arguments), yielded as they come:
    first the first token alone (right after the prefill), then chunks of up to ``chunk_size``.

    Each chunk is one compiled call of the same loop, the cache donated from one to the next; the
    iteration ends when every sequence has stopped or ``max_new_tokens`` are out.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InputError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    new_tokens: int = as_scalar(max_new_tokens, "max_new_tokens")
    options = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    decoder, ids, mask, single = _prepare(
        model, prompt, new_tokens, options, repetition_penalty, key, eos_token_id, stop_token_ids, pad_token_id,
        prefill_chunk,
    )  # fmt: skip
    state, first = loop.start(decoder, ids, mask, key, new_tokens)
    yield first[0, None] if single else first[:, None]
    produced = 1
    while produced < new_tokens and not bool(jnp.all(state.finished)):
        state, chunk = loop.advance(decoder, state, chunk_size)
        chunk = chunk[:, : new_tokens - produced]
        produced += chunk.shape[1]
        yield chunk[0] if single else chunk


def sequence_lengths(
    tokens: Int[Array, "*batch new"], stop_ids: Int[Array, " stops"] | Sequence[int]
) -> Int[Array, "*batch"]:
    """How many of ``tokens`` each sequence really produced: up to and including its first stop id,
    or all of them when it never stopped (padding comes only after a stop id)."""
    stop_ids = jnp.asarray(stop_ids, jnp.int32).reshape(-1)
    is_stop = jnp.any(tokens[..., None] == stop_ids, axis=-1)
    new = tokens.shape[-1]
    return jnp.where(jnp.any(is_stop, axis=-1), jnp.argmax(is_stop, axis=-1) + 1, new).astype(jnp.int32)


def _prepare(
    model, prompt, max_new_tokens, options, repetition_penalty, key, eos_token_id, stop_token_ids, pad_token_id,
    prefill_chunk=None,
):  # fmt: skip
    """Check every argument and build the loop's inputs: ``(decoder, ids, mask, single)``; ``options``
    are :func:`make_sampler`'s."""
    check_generates(model)
    check_prefill_chunk(prefill_chunk)
    config = model.config
    # (a traced key is fine: jax.vmap over keys draws several samples)
    stops = token_ids(eos_token_id, "eos_token_id") + token_ids(stop_token_ids, "stop_token_ids")
    check_stop_ids(stops, config.vocab_size)
    if eos_token_id is None:
        stops = config_stop_ids(config, stacklevel=4) + stops
    if pad_token_id is None:
        pad_token_id = stops[0] if stops else 0
    pad_token_id = check_pad_id(pad_token_id)
    check_key(key)
    ids, mask, single = left_pad(prompt, pad_id=0)
    check_context(ids.shape[1], max_new_tokens, config.max_positions, encoder_decoder=config.is_encoder_decoder)
    check_ids(ids, mask, config.vocab_size)
    sampler = make_sampler(**options, has_key=key is not None, vocab_size=config.vocab_size)
    penalty = check_repetition_penalty(repetition_penalty)
    decoder = loop.Decoder(
        model=model,
        sampler=sampler,
        stop_ids=jnp.asarray(stops, jnp.int32).reshape(-1),
        pad_id=jnp.asarray(pad_token_id, jnp.int32),
        cache_dtype=cache_dtype(model),
        repetition_penalty=None if penalty is None else jnp.asarray(penalty, jnp.float32),
        prefill_chunk=None if config.is_encoder_decoder else prefill_chunk,  # the encoder reads the prompt whole
    )
    return decoder, jnp.asarray(ids), jnp.asarray(mask), single
