"""The T5-VAE (Fraser Greenlee, 2021, "Making a Transformer-VAE with JAX"): a T5 autoencoder with a
small latent bottleneck, regularised towards N(0, I) so that one can move between sentences.

How this family differs: it wraps (does not subclass) a :class:`T5`. The encoder's states
``[seq, embed]`` are pooled to ``n_latent_tokens`` states (the first positions, the mean, or learned
queries attending to them), each mapped to a ``latent_size`` code by one shared Linear (then tanh, in
the author's version). The VAE decoder maps every code back to ``d_model`` (Linear, plus a learned
per-slot embedding, then LayerNorm): those ``[latent_tokens, embed]`` states are the memory that the
T5 decoder cross-attends to, with no padding mask. With the KL regulariser a second Linear gives the
log-variance of a diagonal Gaussian posterior and the code is sampled (Kingma & Welling, 2014).

Axes: ``seq`` encoder tokens, ``dec_seq`` decoder tokens, ``latent_tokens`` codes of ``latent`` dims.

Entry points: ``encode`` (ids -> latent, the posterior mean), ``memory`` (latent -> decoder memory),
``decode_full`` (teacher-forced logits from a latent), ``model(input_ids, decoder_input_ids)`` (the
reconstruction), ``autoencode`` (everything the loss needs), and the sampler's protocol:
``init_decoder_cache(latent, _, max_len)`` + ``decode``. Because ``encode`` returns the latent and
``init_decoder_cache`` takes it, ``eqxllm.generate(vae, ids)`` reconstructs sentences unchanged;
:func:`eqxllm.vae.generate_from_latent` decodes given latents through the same sampler.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from eqxllm.errors import ConfigError, InputError
from eqxllm.models.t5 import T5, T5DecoderCache
from eqxllm.models.t5_vae_config import T5VAE_PRESETS, T5VAEConfig
from eqxllm.nn import Attention, LayerNorm, Linear, sinusoidal_positions
from eqxllm.nn.decoding import check_mask, check_tokens

__all__ = ["T5VAE", "T5VAEConfig", "T5VAE_PRESETS", "VAEOutput"]


class VAEOutput(eqx.Module):
    """One sentence through the autoencoder: decoder logits, the code fed to the decoder (sampled or
    noised when training), and the posterior mean (and log-variance with the KL regulariser)."""

    logits: Float[Array, "dec_seq vocab"]
    latent: Float[Array, "latent_tokens latent"]
    mean: Float[Array, "latent_tokens latent"]
    logvar: Float[Array, "latent_tokens latent"] | None


def left_align(ids: Int[Array, " seq"], mask: Bool[Array, " seq"]) -> tuple[Int[Array, " seq"], Bool[Array, " seq"]]:
    """Move the real tokens to the front (stable), so that left-padded input (the sampler's) pools
    exactly like right-padded input: ``first`` pooling keeps the first *real* positions."""
    order = jnp.argsort(~mask, stable=True)
    return ids[order], mask[order]


def as_trained(
    ids: Int[Array, " seq"], mask: Bool[Array, " seq"], pad_id: int, min_len: int
) -> tuple[Int[Array, " _seq"], Bool[Array, " _seq"]]:
    """The encoder input as training builds it (:func:`eqxllm.data.sentences.encode_sentences`): the
    real tokens first, ``pad_id`` at every other position, and at least ``min_len`` positions (masked
    ``pad_id`` appended). ``first`` pooling reads the states of the positions after a short sentence,
    which depend on the ids there: whatever padding a caller used (the sampler's is id 0), and whether
    it padded at all, the latent is the one training computed."""
    ids, mask = left_align(ids, mask)
    ids = jnp.where(mask, ids, pad_id)
    short = max(min_len - ids.shape[0], 0)
    return jnp.pad(ids, (0, short), constant_values=pad_id), jnp.pad(mask, (0, short))


class T5VAE(eqx.Module):
    """A T5 whose encoder output passes through ``n_latent_tokens x latent_size`` codes."""

    t5: T5
    pool_queries: Float[Array, "latent_tokens embed"] | None
    pool_attention: Attention | None
    to_latent: Linear
    to_logvar: Linear | None
    from_latent: Linear
    memory_positions: Float[Array, "latent_tokens embed"]
    memory_norm: LayerNorm
    bow_head: Linear | None
    config: T5VAEConfig = eqx.field(static=True)

    def __init__(self, config: T5VAEConfig, *, key: PRNGKeyArray):
        t5_key, q_key, attn_key, lat_key, var_key, out_key, pos_key, bow_key = jax.random.split(key, 8)
        cfg, d, n = config, config.d_model, config.n_latent_tokens
        self.config = cfg
        self.t5 = T5(cfg.t5, key=t5_key)
        attention = cfg.pooling == "attention"
        self.pool_queries = jax.random.normal(q_key, (n, d), jnp.float32) if attention else None
        self.pool_attention = (
            Attention(d, cfg.t5.num_heads, head_dim=cfg.t5.d_kv, init_std=d**-0.5, key=attn_key) if attention else None
        )
        # std d**-0.5 on unit-RMS encoder states: codes start near the N(0, I) prior's scale
        self.to_latent = Linear(d, cfg.latent_size, use_bias=True, init_std=d**-0.5, key=lat_key)
        self.to_logvar = (
            Linear(d, cfg.latent_size, use_bias=True, init_std=0.01 * d**-0.5, key=var_key)
            if cfg.regulariser == "kl"
            else None
        )
        self.from_latent = Linear(cfg.latent_size, d, use_bias=True, init_std=cfg.latent_size**-0.5, key=out_key)
        # cross-attention is blind to the order of its memory: a learned slot embedding tells codes apart.
        # It starts as the sinusoids of slots 0..n-1 (random for an odd width), which a decoder with
        # sinusoidal positions can match against its own from the first step.
        self.memory_positions = (
            sinusoidal_positions(jnp.arange(n), d) if d % 2 == 0 else jax.random.normal(pos_key, (n, d), jnp.float32)
        )
        self.memory_norm = LayerNorm(d, eps=cfg.t5.layer_norm_epsilon)
        flat = n * cfg.latent_size
        self.bow_head = (
            Linear(flat, cfg.vocab_size, use_bias=True, init_std=flat**-0.5, key=bow_key)
            if cfg.bow_weight > 0
            else None
        )

    @classmethod
    def from_t5(cls, t5: T5, config: T5VAEConfig | None = None, *, key: PRNGKeyArray) -> "T5VAE":
        """A VAE around a (pretrained) ``t5``, with fresh latent parts; ``config.t5`` is replaced by
        ``t5.config``."""
        config = T5VAEConfig(t5=t5.config) if config is None else config.replace(t5=t5.config)
        fresh = cls(config, key=key)
        return eqx.tree_at(lambda m: m.t5, fresh, t5)

    # encoder side --------------------------------------------------------------------------------
    def pool(self, states: Float[Array, "seq embed"], mask: Bool[Array, " seq"]) -> Float[Array, "latent_tokens embed"]:
        """Encoder states (real tokens first) -> one state per latent token."""
        cfg = self.config
        if cfg.pooling == "first":
            if states.shape[0] < cfg.n_latent_tokens:  # encode pads its input that far (as_trained)
                raise InputError(
                    f"pooling='first' reads n_latent_tokens={cfg.n_latent_tokens} encoder states, got "
                    f"{states.shape[0]}; encode the sentence with encode() or posterior(), which pad it"
                )
            return states[: cfg.n_latent_tokens]
        if cfg.pooling == "mean":
            weights = mask.astype(states.dtype)[:, None]
            return (jnp.sum(states * weights, axis=0) / jnp.maximum(jnp.sum(weights), 1.0))[None]
        assert self.pool_queries is not None and self.pool_attention is not None
        queries = self.pool_queries.astype(states.dtype)
        attn_mask = jnp.broadcast_to(mask[None, :], (queries.shape[0], mask.shape[0]))
        return self.pool_attention(queries, mask=attn_mask, context=states)[0]

    def posterior(
        self, input_ids: Int[Array, " seq"], *, mask: Bool[Array, " seq"] | None = None, key: PRNGKeyArray | None = None
    ) -> tuple[Float[Array, "latent_tokens latent"], Float[Array, "latent_tokens latent"] | None]:
        """The code's mean and (KL regulariser only) log-variance. ``mask`` marks real tokens; padding
        may be on either side, and the ids at masked positions do not matter (they are read as the pad
        id, as in training; :func:`as_trained`). ``key`` enables the T5's dropout."""
        cfg = self.config
        input_ids = check_tokens(input_ids, cfg.vocab_size, None, "max_length")
        mask = check_mask(mask, input_ids.shape[0])
        mask = jnp.ones(input_ids.shape, bool) if mask is None else mask
        min_len = cfg.n_latent_tokens if cfg.pooling == "first" else 1
        input_ids, mask = as_trained(input_ids, mask, cfg.pad_token_id, min_len)
        pooled = self.pool(self.t5.encode(input_ids, mask=mask, key=key), mask)
        mean = self.to_latent(pooled)
        if self.config.latent_activation == "tanh":
            mean = jnp.tanh(mean)
        logvar = None if self.to_logvar is None else self.to_logvar(pooled)
        return mean, logvar

    def encode(
        self, input_ids: Int[Array, " seq"], *, mask: Bool[Array, " seq"] | None = None, key: PRNGKeyArray | None = None
    ) -> Float[Array, "latent_tokens latent"]:
        """A sentence's latent: ``[seq]`` ids (with their end token) -> ``[latent_tokens, latent]``, the
        posterior mean (deterministic)."""
        return self.posterior(input_ids, mask=mask, key=key)[0]

    def sample_latent(
        self,
        mean: Float[Array, "latent_tokens latent"],
        logvar: Float[Array, "latent_tokens latent"] | None,
        key: PRNGKeyArray | None,
    ) -> Float[Array, "latent_tokens latent"]:
        """The code the decoder reads while training: ``mean + exp(logvar / 2) * eps`` (KL), or
        ``mean + latent_noise * eps`` (MMD); the mean itself without a key."""
        if key is None:
            return mean
        eps = jax.random.normal(key, mean.shape, mean.dtype)
        if logvar is not None:
            return mean + jnp.exp(0.5 * logvar) * eps
        return mean + self.config.latent_noise * eps if self.config.latent_noise > 0 else mean

    # decoder side --------------------------------------------------------------------------------
    def memory(self, latent: Float[Array, "latent_tokens latent"]) -> Float[Array, "latent_tokens embed"]:
        """The VAE decoder: codes -> the states the T5 decoder cross-attends to."""
        shape = (self.config.n_latent_tokens, self.config.latent_size)
        if latent.shape != shape:
            raise InputError(
                f"a latent of this model is [n_latent_tokens, latent_size] = {list(shape)}, got shape "
                f"{list(latent.shape)}; for a batch, wrap the call in jax.vmap"
            )
        x = self.from_latent(latent) + self.memory_positions.astype(latent.dtype)
        return self.memory_norm(x)

    def decode_full(
        self,
        latent: Float[Array, "latent_tokens latent"],
        decoder_input_ids: Int[Array, " dec_seq"],
        *,
        decoder_mask: Bool[Array, " dec_seq"] | None = None,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "dec_seq vocab"]:
        """Teacher-forced logits of a sentence given its latent (decoder inputs: the targets shifted
        right behind ``decoder_start_token_id``)."""
        return self.t5.decode_full(self.memory(latent), decoder_input_ids, decoder_mask=decoder_mask, key=key)

    def bag_of_words(self, latent: Float[Array, "latent_tokens latent"]) -> Float[Array, " vocab"]:
        """Log-probabilities of each vocabulary word being in the sentence of ``latent``, read from the
        whole code at once (the head of ``bow_weight``)."""
        if self.bow_head is None:
            raise ConfigError("this T5-VAE has no bag-of-words head (bow_weight=0)")
        return jax.nn.log_softmax(self.bow_head(latent.reshape(-1)).astype(jnp.float32))

    def autoencode(
        self,
        input_ids: Int[Array, " seq"],
        decoder_input_ids: Int[Array, " dec_seq"],
        *,
        mask: Bool[Array, " seq"] | None = None,
        decoder_mask: Bool[Array, " dec_seq"] | None = None,
        null_code: Bool[Array, ""] | bool = False,
        key: PRNGKeyArray | None = None,
    ) -> VAEOutput:
        """Encode, sample the code (with ``key``), decode: what the training loss needs. With
        ``null_code`` the decoder reads the null code (zeros) instead."""
        enc_key, sample_key, dec_key = (None,) * 3 if key is None else jax.random.split(key, 3)
        mean, logvar = self.posterior(input_ids, mask=mask, key=enc_key)
        latent = self.sample_latent(mean, logvar, sample_key)
        latent = jnp.where(null_code, jnp.zeros_like(latent), latent)
        logits = self.decode_full(latent, decoder_input_ids, decoder_mask=decoder_mask, key=dec_key)
        return VAEOutput(logits=logits, latent=latent, mean=mean, logvar=logvar)

    def __call__(
        self,
        input_ids: Int[Array, " seq"],
        decoder_input_ids: Int[Array, " dec_seq"],
        *,
        mask: Bool[Array, " seq"] | None = None,
        decoder_mask: Bool[Array, " dec_seq"] | None = None,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "dec_seq vocab"]:
        """Reconstruction logits: encoder ids ``[seq]`` and decoder ids ``[dec_seq]`` -> ``[dec_seq, vocab]``."""
        out = self.autoencode(input_ids, decoder_input_ids, mask=mask, decoder_mask=decoder_mask, key=key)
        return out.logits

    # the sampler's encoder-decoder protocol ------------------------------------------------------
    def init_decoder_cache(
        self,
        latent: Float[Array, "latent_tokens latent"],
        encoder_mask: Bool[Array, " _seq"] | None,
        max_len: int,
        dtype=jnp.float32,
    ) -> T5DecoderCache:
        """A decoder cache over the memory of ``latent`` (what :meth:`encode` returns). ``encoder_mask``
        is accepted for the sampler's protocol and ignored: the memory has no padding."""
        del encoder_mask
        memory = self.memory(latent)
        return self.t5.init_decoder_cache(memory, jnp.ones((memory.shape[0],), bool), max_len, dtype)

    def decode(
        self, decoder_ids: Int[Array, " seq"], cache: T5DecoderCache, *, mask: Bool[Array, " seq"] | None = None
    ) -> tuple[Float[Array, "seq vocab"], T5DecoderCache]:
        """``seq`` new decoder tokens against the cache: their logits and the updated cache."""
        return self.t5.decode(decoder_ids, cache, mask=mask)
