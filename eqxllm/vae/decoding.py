"""Writing the sentence of a given latent: greedy or sampled with the shared sampler
(:func:`eqxllm.generate`, through :class:`LatentSource`), or by beam search
(:func:`eqxllm.generation.beam_search_cached`)."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from eqxllm.errors import InputError
from eqxllm.generation import beam_search_cached, generate
from eqxllm.generation.beam import Beams, EarlyStopping, check_beam_options, select_beams, stopping_mode


class LatentSource(eqx.Module):
    """A T5-VAE whose "encoder input", one token, is the index of a row of ``latents``, and whose
    ``encode`` returns that row: the sampler's encoder-decoder protocol, started from latents."""

    vae: Any
    latents: Float[Array, "n latent_tokens latent"]

    @property
    def config(self):
        return self.vae.config

    def encode(
        self, index: Int[Array, " one"], *, mask: Bool[Array, " one"] | None = None, key: PRNGKeyArray | None = None
    ) -> Float[Array, "latent_tokens latent"]:
        del mask, key
        return self.latents[index[0]]

    def init_decoder_cache(self, latent, encoder_mask, max_len: int, dtype=jnp.float32):
        return self.vae.init_decoder_cache(latent, encoder_mask, max_len, dtype)

    def decode(self, decoder_ids, cache, *, mask=None):
        return self.vae.decode(decoder_ids, cache, mask=mask)


def _batch_of_latents(model, latents) -> tuple[Float[Array, "batch latent_tokens latent"], bool]:
    """``(latents as a batch, whether one latent was given)``, checked against the model's code shape."""
    cfg = model.config
    latents = jnp.asarray(latents, jnp.float32)
    shape = (cfg.n_latent_tokens, cfg.latent_size)
    if latents.shape[-2:] != shape or latents.ndim not in (2, 3):
        raise InputError(
            f"latents must be [{shape[0]}, {shape[1]}] or [batch, {shape[0]}, {shape[1]}], got {latents.shape}"
        )
    return (latents[None], True) if latents.ndim == 2 else (latents, False)


def generate_from_latent(
    model,
    latents: Float[Array, "*batch latent_tokens latent"],
    *,
    max_new_tokens: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    key: PRNGKeyArray | None = None,
) -> Int[Array, "*batch new"]:
    """Token ids written from ``latents`` (one ``[latent_tokens, latent]`` code or a batch of them),
    greedy without ``key``; ``max_new_tokens`` defaults to the model's ``max_length``. After a
    sequence's end token come end tokens (the sampler's padding)."""
    cfg = model.config
    batch, single = _batch_of_latents(model, latents)
    chunk = cfg.vocab_size  # an index is a token id: it must be inside the vocabulary
    outs = []
    for start in range(0, batch.shape[0], chunk):
        part = batch[start : start + chunk]
        index = jnp.arange(part.shape[0], dtype=jnp.int32)[:, None]
        outs.append(
            generate(
                LatentSource(model, part),
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


@eqx.filter_jit
def _beams(model, latents, num_beams: int, steps: int, alpha: Float[Array, ""], mode: Int[Array, ""]):
    cfg = model.config

    def one(latent):
        cache = model.init_decoder_cache(latent, None, steps, jnp.float32)
        return beam_search_cached(
            lambda t, c: model.decode(t, c), cache, cfg.decoder_start_token_id, num_beams=num_beams, steps=steps,
            stop_ids=(cfg.eos_token_id,), length_penalty=alpha, early_stopping=mode,
        )  # fmt: skip

    return jax.vmap(one)(latents)


def beam_search_from_latent(
    model,
    latents: Float[Array, "*batch latent_tokens latent"],
    *,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    early_stopping: EarlyStopping = False,
    max_new_tokens: int | None = None,
    return_scores: bool = False,
    return_all: bool = False,
) -> Beams:
    """The best sentence found for each latent (``[latent_tokens, latent]`` or a batch of them) by a
    beam search of ``num_beams`` beams (:mod:`eqxllm.generation.beam`: ``transformers``' search, with
    its ``length_penalty`` and ``early_stopping``), as token ids: the sentence, its end token, then end
    tokens up to ``max_new_tokens`` (default: the model's ``max_length``); a sentence that reached
    ``max_new_tokens`` has no end token. With ``return_scores`` also its normalised score; with
    ``return_all`` the ``num_beams`` finished hypotheses, best first (``[*batch, num_beams, new]``).
    ``num_beams=1`` is greedy decoding."""
    batch, single = _batch_of_latents(model, latents)
    steps = max_new_tokens or model.config.max_length
    check_beam_options(num_beams, length_penalty, steps, early_stopping)
    alpha = jnp.asarray(length_penalty, jnp.float32)  # traced, as the mode: new values do not compile again
    tokens, scores = _beams(model, batch, num_beams, steps, alpha, stopping_mode(early_stopping))
    return select_beams(tokens, scores, single=single, return_scores=return_scores, return_all=return_all)


def strip_after_end(tokens: Int[np.ndarray, " new"] | list[int], eos_id: int) -> list[int]:
    """The ids before the first end token."""
    ids = [int(t) for t in np.asarray(tokens).tolist()]
    return ids[: ids.index(eos_id)] if eos_id in ids else ids
