"""Tiny models shared by the generation tests: GPT-2 configs and a fake encoder-decoder."""

from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from eqxllm.models import GPT2, GPT2Config

# Larger-than-usual init so that logits are far from uniform and greedy choices are not near-ties.
TINY = dict(n_layer=2, n_embd=32, n_head=4, vocab_size=211, n_positions=64, initializer_range=0.3)


def tiny_gpt2(seed: int = 0, **overrides) -> GPT2:
    """A random tiny GPT-2 with spread-out logits and randomized norms and biases."""
    return _build(GPT2Config(**{**TINY, **overrides}), jax.random.key(seed))


@eqx.filter_jit  # one compiled program instead of hundreds of eager initializers: much faster to build
def _build(config: GPT2Config, key):
    model_key, key = jax.random.split(key)
    leaves, treedef = jax.tree.flatten(GPT2(config, key=model_key))
    keys = jax.random.split(key, len(leaves))
    leaves = [
        x + 0.3 * jax.random.normal(k, x.shape, x.dtype) if eqx.is_inexact_array(x) and x.ndim <= 2 else x
        for x, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(treedef, leaves)


@dataclass(frozen=True)
class FakeSeq2SeqConfig:
    vocab_size: int = 37
    embed: int = 8
    max_positions: int = 24
    decoder_start_token_id: int = 3
    eos_token_id: int | None = None
    is_encoder_decoder = True
    model_type = "fake-seq2seq"


class FakeSeq2SeqCache(eqx.Module):
    memory: Float[Array, " embed"]
    tokens: Int[Array, " max_len"]
    index: Int[Array, ""]


class FakeSeq2Seq(eqx.Module):
    """An encoder-decoder following eqxllm's protocol, simple enough to recompute by hand.

    Encoder: ``tanh(E[ids])`` (padding zeroed). Decoder: logits of decoder position ``t`` are
    ``(mean of the encoder output over real tokens + mean of D[dec_ids[:t+1]]) @ W``. The cache keeps
    the encoder mean (the "cross-attention" part) and the decoder tokens seen so far, in ``max_len``
    slots: a loop that fed more tokens than it asked room for would overwrite the last slot.
    """

    enc_embed: Float[Array, "vocab embed"]
    dec_embed: Float[Array, "vocab embed"]
    out: Float[Array, "embed vocab"]
    config: FakeSeq2SeqConfig = eqx.field(static=True)

    def __init__(self, config: FakeSeq2SeqConfig, *, key: PRNGKeyArray):
        k1, k2, k3 = jax.random.split(key, 3)
        shape = (config.vocab_size, config.embed)
        self.enc_embed = jax.random.normal(k1, shape)
        self.dec_embed = jax.random.normal(k2, shape)
        self.out = jax.random.normal(k3, shape[::-1]) * 2
        self.config = config

    def encode(
        self, input_ids: Int[Array, " seq"], *, mask: Bool[Array, " seq"] | None = None
    ) -> Float[Array, "seq embed"]:
        mask = jnp.ones(input_ids.shape, bool) if mask is None else mask
        return jnp.tanh(self.enc_embed[input_ids]) * mask[:, None]

    def init_decoder_cache(self, encoder_out, encoder_mask, max_len: int, dtype) -> FakeSeq2SeqCache:
        memory = encoder_out.sum(0) / encoder_mask.sum()
        return FakeSeq2SeqCache(
            memory=memory.astype(dtype), tokens=jnp.zeros((max_len,), jnp.int32), index=jnp.array(0)
        )

    def decode(self, ids: Int[Array, " seq"], cache: FakeSeq2SeqCache, *, mask=None):
        tokens = jax.lax.dynamic_update_slice(cache.tokens, ids, (cache.index,))
        slots = jnp.arange(tokens.shape[0])
        q = cache.index + jnp.arange(ids.shape[0])
        seen = (slots[None, :] <= q[:, None]).astype(jnp.float32)  # [seq, max_len], causal
        mean = (seen @ self.dec_embed[tokens]) / seen.sum(1, keepdims=True)
        logits = (cache.memory[None] + mean) @ self.out
        return logits, FakeSeq2SeqCache(memory=cache.memory, tokens=tokens, index=cache.index + ids.shape[0])
