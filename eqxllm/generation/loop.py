"""The decoding loop: a prefill, then single-token steps in a ``lax.while_loop``, over a preallocated cache.

Every family plugs in through the same protocol. Decoder-only models give ``init_cache(max_len,
dtype)`` and ``decode(ids, cache, *, mask=)``: the whole left-padded prompt is run once (the prefill),
then one token per step. Encoder-decoder models also give ``encode(ids, *, mask=)`` and
``init_decoder_cache(encoder_out, encoder_mask, max_len, dtype)``: the encoder runs once, its
cross-attention keys/values are cached, and the decoder starts from ``decoder_start_token_id``.
A cache is any pytree; its 0-d leaves must be counters that every sequence shares (the write
index); the batch axis of every other leaf goes first.

The loop is one compiled program per shape (batch, prompt length, ``max_new_tokens``, ``top_k``):
nothing is traced per token, and it exits as soon as every sequence has stopped. Batches are
``jax.vmap`` over one-sequence models and caches (see :class:`Caches` for where the batch axis goes).
The key of token ``t`` is ``fold_in(key, t)``, so a run is reproducible and does not depend on how
it is cut into chunks (streaming).
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree

from eqxllm.generation.penalty import penalize, see, seen_prompt
from eqxllm.generation.prefill import fill_cache
from eqxllm.generation.sampling import Sampler


def _batch_axis(leaf: Array | jax.ShapeDtypeStruct) -> int | None:
    """Where a one-sequence cache leaf takes the batch axis.

    0-d leaves (the write index) are shared: every sequence of a batch advances in lockstep, and a
    shared index keeps cache writes ``dynamic_update_slice`` instead of scatters. Every other leaf
    takes it first: the models carry their per-layer stacks (``[layers, slots, ...]``) through the
    layer scan and index them by layer, and a vmapped scan keeps a carry's batch axis first, so any
    other place would cost a transpose of the whole cache on the way in and out of every step.
    """
    return None if leaf.ndim == 0 else 0


class Caches(eqx.Module):
    """One cache per sequence of a batch: ``tree`` is the model's cache pytree with a batch axis added
    to each leaf at ``axes`` (a matching pytree of ints, None where the leaf is shared)."""

    tree: PyTree
    axes: PyTree = eqx.field(static=True)

    @classmethod
    def broadcast(cls, one: PyTree, batch: int) -> "Caches":
        """``batch`` copies of the one-sequence cache ``one``."""
        axes = jax.tree.map(_batch_axis, one)

        def add(x, axis):
            if axis is None:
                return x
            return jnp.broadcast_to(jnp.expand_dims(x, axis), (*x.shape[:axis], batch, *x.shape[axis:]))

        return cls(tree=jax.tree.map(add, one, axes), axes=axes)


def _last_logits(model, ids: Int[Array, " seq"], cache: PyTree, mask: Bool[Array, " seq"]):
    """The logits of a prompt's last token (left padding: the last slot is real) and the cache it fills:
    the model's ``decode_last`` where it has one (only that token's logits are made), else ``decode``'s last row."""
    if hasattr(model, "decode_last"):
        return model.decode_last(ids, cache, mask=mask)
    logits, cache = model.decode(ids, cache, mask=mask)
    return logits[-1], cache


class DecodeState(eqx.Module):
    """Everything that changes from one step to the next, for a batch of sequences."""

    cache: Caches
    tokens: Int[Array, " batch"]  # the last chosen token of each sequence: the next decoder input
    finished: Bool[Array, " batch"]  # the sequence has chosen a stop token
    step: Int[Array, ""]  # tokens chosen so far
    end: Int[Array, ""]  # max_new_tokens
    key: PRNGKeyArray | None
    seen: Bool[Array, "batch vocab"] | None = None  # the ids each sequence holds (with a repetition penalty)


class Decoder(eqx.Module):
    """A model with its token choice and stop rule: the static part of a generation run.

    With a ``repetition_penalty`` (``None``: off) the logits of the tokens each sequence holds are
    penalised before the sampler sees them (:mod:`eqxllm.generation.penalty`). With a
    ``prefill_chunk`` a decoder-only model's prompt fills the cache that many tokens at a time (the
    first ``seq % prefill_chunk`` alone, then a scan over whole chunks), so that the prefill's
    attention and activations are those of a chunk, not of the whole prompt."""

    model: Any  # an eqx.Module following the protocol above (checked by use, not by type)
    sampler: Sampler
    stop_ids: Int[Array, " stops"]
    pad_id: Int[Array, ""]
    cache_dtype: Any = eqx.field(static=True)
    repetition_penalty: Float[Array, ""] | None = None
    prefill_chunk: int | None = eqx.field(static=True, default=None)

    def prefill(
        self, ids: Int[Array, "batch seq"], mask: Bool[Array, "batch seq"], max_new_tokens: int
    ) -> tuple[Float[Array, "batch vocab"], Caches]:
        """Logits of the first new token, and caches with room for the ``max_new_tokens - 1`` inputs to come."""
        model, batch = self.model, ids.shape[0]
        if model.config.is_encoder_decoder:
            encoded = jax.vmap(lambda i, m: model.encode(i, mask=m))(ids, mask)
            init = lambda e, m: model.init_decoder_cache(e, m, max_new_tokens, self.cache_dtype)
            axes = jax.tree.map(_batch_axis, jax.eval_shape(init, encoded[0], mask[0]))
            cache = Caches(tree=jax.vmap(init, out_axes=axes)(encoded, mask), axes=axes)
            start = jnp.full((batch,), model.config.decoder_start_token_id, jnp.int32)
            return self.decode(start, cache)
        max_len = ids.shape[1] + max_new_tokens - 1  # the last new token is never fed back
        cache = Caches.broadcast(model.init_cache(max_len, self.cache_dtype), batch)
        decode = jax.vmap(
            lambda i, c, m: _last_logits(model, i, c, m), in_axes=(0, cache.axes, 0), out_axes=(0, cache.axes)
        )
        logits, tree = fill_cache(decode, ids, cache.tree, mask, self.prefill_chunk)
        return logits, Caches(tree=tree, axes=cache.axes)

    def decode(self, tokens: Int[Array, " batch"], cache: Caches) -> tuple[Float[Array, "batch vocab"], Caches]:
        """Feed one token per sequence; the logits of the next."""
        decode = jax.vmap(
            lambda t, c: self.model.decode(t[None], c, mask=None), in_axes=(0, cache.axes), out_axes=(0, cache.axes)
        )
        logits, tree = decode(tokens, cache.tree)
        return logits[:, 0], Caches(tree=tree, axes=cache.axes)

    def choose(
        self,
        logits: Float[Array, "batch vocab"],
        key: PRNGKeyArray | None,
        step: Int[Array, ""],
        seen: Bool[Array, "batch vocab"] | None = None,
    ) -> Int[Array, " batch"]:
        if self.repetition_penalty is not None and seen is not None:
            logits = penalize(logits, seen, self.repetition_penalty)
        if self.sampler.greedy or key is None:
            return jax.vmap(lambda x: self.sampler(x, None))(logits)
        keys = jax.random.split(jax.random.fold_in(key, step), logits.shape[0])
        return jax.vmap(self.sampler)(logits, keys)

    def _record(self, state: DecodeState, tokens: Int[Array, " batch"], cache: Caches):
        """The state after choosing ``tokens``, and what is written out (the pad id once a sequence stopped)."""
        out = jnp.where(state.finished, self.pad_id, tokens)
        finished = state.finished | jnp.any(tokens[:, None] == self.stop_ids[None, :], axis=-1)
        seen = None if state.seen is None else see(state.seen, tokens)
        new = DecodeState(
            cache=cache,
            tokens=tokens,
            finished=finished,
            step=state.step + 1,
            end=state.end,
            key=state.key,
            seen=seen,
        )
        return new, out

    def start(
        self,
        ids: Int[Array, "batch seq"],
        mask: Bool[Array, "batch seq"],
        key: PRNGKeyArray | None,
        max_new_tokens: int,
    ) -> tuple[DecodeState, Int[Array, " batch"]]:
        """Prefill and choose the first new token of every sequence."""
        logits, cache = self.prefill(ids, mask, max_new_tokens)
        batch = ids.shape[0]
        zero = jnp.zeros((), jnp.int32)
        empty = DecodeState(
            cache=cache,
            tokens=jnp.zeros((batch,), jnp.int32),
            finished=jnp.zeros((batch,), bool),
            step=zero,
            end=jnp.asarray(max_new_tokens, jnp.int32),
            key=key,
            seen=None if self.repetition_penalty is None else self.seen_before(ids, mask, logits.shape[-1]),
        )
        return self._record(empty, self.choose(logits, key, zero, empty.seen), cache)

    def seen_before(
        self, ids: Int[Array, "batch seq"], mask: Bool[Array, "batch seq"], vocab_size: int
    ) -> Bool[Array, "batch vocab"]:
        """The tokens the repetition penalty sees before the first new one, as ``transformers``' ``input_ids``:
        a decoder-only model's real prompt tokens; an encoder-decoder's ``decoder_start_token_id`` alone."""
        if self.model.config.is_encoder_decoder:
            start = jnp.full((ids.shape[0], 1), self.model.config.decoder_start_token_id, jnp.int32)
            return seen_prompt(start, jnp.ones(start.shape, bool), vocab_size)
        return seen_prompt(ids, mask, vocab_size)

    def step(self, state: DecodeState) -> tuple[DecodeState, Int[Array, " batch"]]:
        """Feed the last tokens, choose the next ones."""
        logits, cache = self.decode(state.tokens, state.cache)
        return self._record(state, self.choose(logits, state.key, state.step, state.seen), cache)

    def advance(self, state: DecodeState, num_steps: int) -> tuple[DecodeState, Int[Array, "batch {num_steps}"]]:
        """Up to ``num_steps`` more tokens per sequence, fewer when every sequence has stopped or
        ``max_new_tokens`` is reached; the columns not reached hold the pad id."""
        out = jnp.full((state.tokens.shape[0], num_steps), self.pad_id, jnp.int32)
        if num_steps == 0:
            return state, out

        def cond(carry):
            i, s, _ = carry
            return (i < num_steps) & (s.step < s.end) & ~jnp.all(s.finished)

        def body(carry):
            i, s, out = carry
            s, tokens = self.step(s)
            return i + 1, s, jax.lax.dynamic_update_slice(out, tokens[:, None], (0, i))

        _, state, out = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), state, out))
        return state, out


@eqx.filter_jit
def generate_tokens(
    decoder: Decoder,
    ids: Int[Array, "batch seq"],
    mask: Bool[Array, "batch seq"],
    key: PRNGKeyArray | None,
    max_new_tokens: int,
) -> Int[Array, "batch {max_new_tokens}"]:
    """The whole run, prefill and loop, in one compiled program."""
    state, first = decoder.start(ids, mask, key, max_new_tokens)
    _, rest = decoder.advance(state, max_new_tokens - 1)
    return jnp.concatenate([first[:, None], rest], axis=1)


@eqx.filter_jit
def start(
    decoder: Decoder,
    ids: Int[Array, "batch seq"],
    mask: Bool[Array, "batch seq"],
    key: PRNGKeyArray | None,
    max_new_tokens: int,
) -> tuple[DecodeState, Int[Array, " batch"]]:
    """:meth:`Decoder.start`, compiled: the first token of a streamed run."""
    return decoder.start(ids, mask, key, max_new_tokens)


@eqx.filter_jit(donate="all-except-first")
def advance(
    decoder: Decoder, state: DecodeState, num_steps: int
) -> tuple[DecodeState, Int[Array, "batch {num_steps}"]]:
    """:meth:`Decoder.advance`, compiled, the old state's cache donated: the next chunk of a streamed run."""
    return decoder.advance(state, num_steps)
