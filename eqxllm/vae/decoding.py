"""Writing the sentence of a given latent with the shared sampler (:func:`eqxllm.generate`).

The sampler runs an encoder-decoder as ``encode(ids, mask=) -> init_decoder_cache -> decode``. To
start from latents instead of text, :class:`LatentSource` wraps a T5-VAE and a batch of latents: its
"encoder input" is one token, the row's index, and its ``encode`` returns that row's latent. Every
other step (cache, decoding loop, sampling options, stop tokens) is the sampler's own.

With ``prior_weight`` ``w > 0`` each token is chosen by ``log p(token | prefix, code) + w log p(token |
prefix)``: the decoder's own language model, which it learns from the null code when trained with
``code_dropout``, is added to its reading of the code (shallow fusion, Gulcehre et al., 2015). Where
the code is clear, as at a sentence's own code, the first term decides; where it is ambiguous, as
half-way between two sentences, the language model pulls towards fluent text, at a price in
faithfulness that docs/t5_vae.md measures.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from eqxllm.errors import InputError


class LatentSource(eqx.Module):
    """A T5-VAE whose encoder input ``[index]`` selects one of ``latents`` (for :func:`eqxllm.generate`),
    its next-token scores fused with the null code's language model when ``prior_weight > 0``."""

    vae: Any
    latents: Float[Array, "n latent_tokens latent"]
    prior_weight: float = eqx.field(static=True, default=0.0)

    @property
    def config(self):
        return self.vae.config

    def encode(
        self, index: Int[Array, " one"], *, mask: Bool[Array, " one"] | None = None, key: PRNGKeyArray | None = None
    ) -> Float[Array, "latent_tokens latent"]:
        del mask, key
        return self.latents[index[0]]

    def init_decoder_cache(self, latent, encoder_mask, max_len: int, dtype=jnp.float32):
        cache = self.vae.init_decoder_cache(latent, encoder_mask, max_len, dtype)
        if self.prior_weight == 0:
            return cache
        return cache, self.vae.init_decoder_cache(jnp.zeros_like(latent), encoder_mask, max_len, dtype)

    def decode(self, decoder_ids, cache, *, mask=None):
        if self.prior_weight == 0:
            return self.vae.decode(decoder_ids, cache, mask=mask)
        logits, code_cache = self.vae.decode(decoder_ids, cache[0], mask=mask)
        prior, null_cache = self.vae.decode(decoder_ids, cache[1], mask=mask)
        scores = jax.nn.log_softmax(logits, axis=-1) + self.prior_weight * jax.nn.log_softmax(prior, axis=-1)
        return scores, (code_cache, null_cache)


def check_prior_weight(config, prior_weight: float) -> None:
    """``prior_weight`` must be >= 0, and above 0 only for a model trained with ``code_dropout``."""
    if prior_weight < 0:
        raise InputError(f"prior_weight must be >= 0, got {prior_weight}")
    if prior_weight > 0 and config.code_dropout == 0:
        raise InputError(
            "prior_weight needs a T5-VAE trained with code_dropout > 0: this model never learnt what to write "
            "from the null code, so it has no language model to add"
        )


def generate_from_latent(
    model,
    latents: Float[Array, "*batch latent_tokens latent"],
    *,
    max_new_tokens: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    prior_weight: float = 0.0,
    key: PRNGKeyArray | None = None,
) -> Int[Array, "*batch new"]:
    """Token ids written from ``latents`` (one ``[latent_tokens, latent]`` code or a batch of them),
    greedy without ``key``; ``max_new_tokens`` defaults to the model's ``max_length``. After a
    sequence's end token come end tokens (the sampler's padding). ``prior_weight``: the weight of the
    decoder's language model (the null code's) added to each token's log-probability; it needs a
    model trained with ``code_dropout``."""
    from eqxllm.generation import generate

    cfg = model.config
    latents = jnp.asarray(latents)
    shape = (cfg.n_latent_tokens, cfg.latent_size)
    if latents.shape[-2:] != shape or latents.ndim not in (2, 3):
        raise InputError(
            f"latents must be [{shape[0]}, {shape[1]}] or [batch, {shape[0]}, {shape[1]}], got {latents.shape}"
        )
    check_prior_weight(cfg, prior_weight)
    single = latents.ndim == 2
    batch = latents[None] if single else latents
    n = batch.shape[0]
    chunk = cfg.vocab_size  # an index is a token id: it must be inside the vocabulary
    outs = []
    for start in range(0, n, chunk):
        part = batch[start : start + chunk]
        index = jnp.arange(part.shape[0], dtype=jnp.int32)[:, None]
        outs.append(
            generate(
                LatentSource(model, part, prior_weight),
                index,
                max_new_tokens=max_new_tokens or cfg.max_length,
                key=None if key is None else jax.random.fold_in(key, start),
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                pad_token_id=cfg.eos_token_id,
            )  # fmt: skip
        )
    tokens = jnp.concatenate(outs)
    return tokens[0] if single else tokens


def strip_after_end(tokens: Int[np.ndarray, " new"] | list[int], eos_id: int) -> list[int]:
    """The ids before the first end token."""
    ids = [int(t) for t in np.asarray(tokens).tolist()]
    return ids[: ids.index(eos_id)] if eos_id in ids else ids
