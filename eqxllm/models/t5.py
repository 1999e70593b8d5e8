"""T5 (Raffel et al., 2020; v1.1 and Flan-T5) and, as a configuration of the same code, the original
Transformer (Vaswani et al., 2017).

How this family differs: an encoder-decoder. T5 has no absolute positions; a learned per-head bias
over log-spaced relative-distance buckets (bidirectional in the encoder, causal in the decoder) is
added to the attention logits, computed once per stack (Hugging Face stores it in block 0 only) and
shared by every layer. Attention logits are not scaled by ``1/sqrt(d_kv)`` (the query init absorbs
it). Pre-norm RMSNorm with weight ``w`` and no bias anywhere; the feed-forward is ReLU (v1.0) or
GeGLU (v1.1, Flan). One embedding table serves encoder and decoder inputs; v1.0 ties it to the
output head and scales the decoder output by ``d_model**-0.5`` first, v1.1 has an untied head and
no scaling. The Transformer switches (``positions="sinusoidal"``, ``norm="layer_post"``,
``scale_attention``, ``scale_embeddings``, ``ffn_bias``, ``share_embeddings``) give the paper's model.

Entry points: ``model(input_ids, decoder_input_ids)`` (teacher forcing), ``encode`` and
``decode_full`` (the two halves, used by the T5-VAE), ``init_decoder_cache`` and ``decode``
(cached decoding, used by the sampler). :class:`~eqxllm.models.T5Encoder` (``t5_encoder.py``) is
the encoder alone, on the same pass (:func:`encoder_states`). Masks mark real tokens; positions count real tokens only,
so left- and right-padded inputs give their real tokens the same outputs (relative positions are
shift-invariant anyway; sinusoids are not).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, Shaped

from eqxllm.errors import InputError
from eqxllm.models.t5_config import T5_PRESETS, T5Config
from eqxllm.nn import MLP, Attention, Embedding, KVCache, LayerNorm, Linear, RMSNorm, Stack
from eqxllm.nn.decoding import (
    CacheSlot,
    Dims,
    begin_pass,
    causal_mask,
    check_mask,
    empty_cache,
    positions_from_mask,
    scan_layers,
)
from eqxllm.nn.dropout import dropout
from eqxllm.nn.masks import Mask, attention_mask
from eqxllm.nn.positions import RelativePositionBias, sinusoidal_positions

__all__ = ["T5", "T5_PRESETS", "T5Config", "T5DecoderCache", "T5Layer", "T5Stack"]

Norm = RMSNorm | LayerNorm


def _split(key: PRNGKeyArray | None, n: int):
    return (None,) * n if key is None else tuple(jax.random.split(key, n))


class T5DecoderCache(eqx.Module):
    """Decoder state for one sequence: the self-attention :class:`KVCache` (``[layers, max_len, heads,
    d_kv]``), every decoder layer's cross-attention keys/values of the encoder output (computed once,
    ``[layers, kv_seq, heads, d_kv]``) and the encoder padding mask."""

    self_kv: KVCache
    cross_k: Float[Array, "layers kv_seq heads head_dim"]
    cross_v: Float[Array, "layers kv_seq heads head_dim"]
    encoder_mask: Bool[Array, " kv_seq"]

    max_len = property(lambda self: self.self_kv.max_len)  # slots for decoder tokens
    index = property(lambda self: self.self_kv.index)  # the next slot to write


class T5Layer(eqx.Module):
    """Self-attention, cross-attention (decoder only), feed-forward; each a residual sub-layer,
    ``x + f(norm(x))`` (T5, pre-norm) or ``norm(x + f(x))`` (Vaswani et al., post-norm)."""

    self_norm: Norm
    self_attn: Attention
    cross_norm: Norm | None
    cross_attn: Attention | None
    ffn_norm: Norm
    ffn: MLP
    post_norm: bool = eqx.field(static=True)
    dropout_rate: float = eqx.field(static=True)

    def __init__(self, cfg: T5Config, *, cross: bool, key: PRNGKeyArray):
        self_key, cross_key, ffn_key = jax.random.split(key, 3)
        f, d = cfg.initializer_factor, cfg.d_model
        norm_cls = RMSNorm if cfg.norm == "rms_pre" else LayerNorm
        make_norm = lambda: norm_cls(d, eps=cfg.layer_norm_epsilon)  # noqa: E731

        def make_attn(k):
            attn = Attention(
                d, cfg.num_heads, head_dim=cfg.d_kv, scale=None if cfg.scale_attention else 1.0,
                impl=cfg.attention_impl, dropout_rate=cfg.dropout_rate, init_std=f * d**-0.5,
                out_init_std=f * (cfg.num_heads * cfg.d_kv) ** -0.5, key=k,
            )  # fmt: skip
            if cfg.scale_attention:
                return attn
            # Mesh TensorFlow's T5 init: the missing 1/sqrt(d_kv) of the logits moves into the query weights
            return eqx.tree_at(lambda a: a.q_proj.weight, attn, attn.q_proj.weight * cfg.d_kv**-0.5)

        self.self_norm = make_norm()
        self.self_attn = make_attn(self_key)
        self.cross_norm = make_norm() if cross else None
        self.cross_attn = make_attn(cross_key) if cross else None
        self.ffn_norm = make_norm()
        self.ffn = MLP(
            d, cfg.d_ff, activation=cfg.activation, gated=cfg.gated, use_bias=cfg.ffn_bias,
            init_std=f * d**-0.5, out_init_std=f * cfg.d_ff**-0.5, dropout_rate=cfg.dropout_rate, key=ffn_key,
        )  # fmt: skip
        self.post_norm = cfg.norm == "layer_post"
        self.dropout_rate = cfg.dropout_rate

    def _in(self, x, norm):
        return x if self.post_norm else norm(x)

    def _out(self, x, h, norm, key):
        x = x + dropout(h, self.dropout_rate, key)
        return norm(x) if self.post_norm else x

    def __call__(
        self,
        x: Float[Array, "seq embed"],
        *,
        mask: Mask,
        bias: Float[Array, "heads seq kv_seq"] | None,
        cross_kv: tuple[Array, Array] | None = None,
        cross_mask: Bool[Array, "seq enc_seq"] | None = None,
        cache: CacheSlot | None = None,
        key: PRNGKeyArray | None = None,
    ) -> tuple[Float[Array, "seq embed"], tuple[Array, Array] | None]:
        """The layer's output and the self-attention cache with this layer's new keys and values
        written (None without one)."""
        kv, index, layer = (None, None, None) if cache is None else cache
        # dropout as in Hugging Face's T5: attention probabilities, the feed-forward's hidden units, and
        # every sub-layer's output before the residual add
        self_key, self_probs, cross_key, cross_probs, ffn_key, ffn_hidden = _split(key, 6)
        h, kv = self.self_attn(
            self._in(x, self.self_norm), mask=mask, bias=bias, cache=kv, cache_index=index, layer=layer, key=self_probs
        )
        x = self._out(x, h, self.self_norm, self_key)
        if self.cross_attn is not None:
            h, _ = self.cross_attn(self._in(x, self.cross_norm), mask=cross_mask, kv=cross_kv, key=cross_probs)
            x = self._out(x, h, self.cross_norm, cross_key)
        x = self._out(x, self.ffn(self._in(x, self.ffn_norm), key=ffn_hidden), self.ffn_norm, ffn_key)
        return x, kv


class T5Stack(eqx.Module):
    """One side of the model: scanned layers, the stack's relative-position bias table (T5) and its
    final norm (pre-norm only; a post-norm stack ends normalised)."""

    layers: Stack[T5Layer]
    relative_bias: RelativePositionBias | None
    final_norm: Norm | None
    dropout_rate: float = eqx.field(static=True)

    def __init__(self, cfg: T5Config, *, decoder: bool, key: PRNGKeyArray):
        layers_key, bias_key = jax.random.split(key)
        n = cfg.decoder_layers if decoder else cfg.num_layers
        self.layers = Stack(lambda k: T5Layer(cfg, cross=decoder, key=k), n, key=layers_key, remat=cfg.remat)
        self.relative_bias = None
        if cfg.positions == "relative":
            rb = RelativePositionBias(
                cfg.relative_attention_num_buckets, cfg.num_heads, bidirectional=not decoder,
                max_distance=cfg.relative_attention_max_distance, key=bias_key,
            )  # fmt: skip
            # transformers' init: std d_model**-0.5 (the layer's default is 0.02)
            self.relative_bias = eqx.tree_at(lambda b: b.weight, rb, rb.weight / 0.02 * cfg.d_model**-0.5)
        self.final_norm = RMSNorm(cfg.d_model, eps=cfg.layer_norm_epsilon) if cfg.norm == "rms_pre" else None
        self.dropout_rate = cfg.dropout_rate

    def bias(self, q_slots: Int[Array, " seq"], k_slots: Int[Array, " kv_seq"]):
        return None if self.relative_bias is None else self.relative_bias(q_slots, k_slots)

    def finish(self, x: Float[Array, "seq embed"], key: PRNGKeyArray | None) -> Float[Array, "seq embed"]:
        return x if self.final_norm is None else dropout(self.final_norm(x), self.dropout_rate, key)


def shared_embedding(cfg: T5Config, *, key: PRNGKeyArray) -> Embedding:
    """The input table ``[vocab, embed]``, drawn as transformers draws T5's (std 1: the input is not
    rescaled); the paper's scaled embeddings start at ``d_model**-0.5``, so that ``sqrt(d_model) * e``
    has unit scale (tensor2tensor)."""
    emb_std = cfg.initializer_factor * (cfg.d_model**-0.5 if cfg.scale_embeddings else 1.0)
    return Embedding(cfg.vocab_size, cfg.d_model, init_std=emb_std, key=key)


def encoder_states(
    cfg: T5Config,
    table: Embedding,
    stack: T5Stack,
    input_ids: Int[Array, " seq"],
    *,
    mask: Bool[Array, " seq"] | None,
    key: PRNGKeyArray | None,
) -> Float[Array, "seq embed"]:
    """The encoder pass: ``input_ids`` embedded by ``table``, through the bidirectional ``stack`` and
    its final norm. Shared by :meth:`T5.encode` and :class:`~eqxllm.models.T5Encoder`."""
    input_ids, slots = begin_pass(_dims(cfg), input_ids, mask, None, None)
    attn_mask = attention_mask(slots.q_slots, slots.kv_valid, causal=False)
    bias = stack.bias(slots.positions, slots.positions)
    emb_key, layers_key, final_key = _split(key, 3)
    x = _embed(cfg, table, input_ids, slots.positions, emb_key)

    def layer(block, x, layer_key, _):
        x, _ = block(x, mask=attn_mask, bias=bias, key=layer_key)
        return x, None, None

    x, _, _ = scan_layers(stack.layers, layer, x, _layer_keys(layers_key, stack), None, slots)
    return stack.finish(x, final_key)


def _dims(cfg: T5Config) -> Dims:
    """The decoder's cache layout; relative positions (and sinusoids) set no length limit."""
    return Dims(cfg.vocab_size, cfg.max_positions, "max_positions", cfg.decoder_layers, cfg.num_heads, cfg.d_kv)


def _layer_keys(key: PRNGKeyArray | None, stack: T5Stack):
    return None if key is None else jax.random.split(key, stack.layers.num_layers)


def _embed(cfg: T5Config, table: Embedding, ids, positions, key) -> Float[Array, "seq embed"]:
    x = table(ids)
    if cfg.scale_embeddings:  # Vaswani et al., section 3.4
        x = x * math.sqrt(cfg.d_model)
    if cfg.positions == "sinusoidal":
        x = x + sinusoidal_positions(positions, cfg.d_model).astype(x.dtype)
    return dropout(x, cfg.dropout_rate, key)


class T5(eqx.Module):
    """An encoder-decoder: encoder ids ``[seq]`` and decoder ids ``[dec_seq]`` -> logits ``[dec_seq, vocab]``."""

    shared: Embedding
    decoder_embed: Embedding | None
    encoder: T5Stack
    decoder: T5Stack
    lm_head: Linear | None
    config: T5Config = eqx.field(static=True)

    def __init__(self, config: T5Config, *, key: PRNGKeyArray):
        emb_key, dec_emb_key, enc_key, dec_key, head_key = jax.random.split(key, 5)
        cfg, f = config, config.initializer_factor
        self.config = cfg
        self.shared = shared_embedding(cfg, key=emb_key)
        self.decoder_embed = None if cfg.share_embeddings else shared_embedding(cfg, key=dec_emb_key)
        self.encoder = T5Stack(cfg, decoder=False, key=enc_key)
        self.decoder = T5Stack(cfg, decoder=True, key=dec_key)
        # an untied head starts at std d_model**-0.5 (transformers uses 1), keeping initial logits O(1)
        self.lm_head = (
            None
            if cfg.tie_word_embeddings
            else Linear(cfg.d_model, cfg.vocab_size, use_bias=False, init_std=f * cfg.d_model**-0.5, key=head_key)
        )

    def __call__(
        self,
        input_ids: Int[Array, " seq"],
        decoder_input_ids: Int[Array, " dec_seq"] | None = None,
        *,
        mask: Bool[Array, " seq"] | None = None,
        decoder_mask: Bool[Array, " dec_seq"] | None = None,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "dec_seq vocab"]:
        """Teacher-forced logits. ``mask``/``decoder_mask`` mark real (non-padding) tokens; decoder
        inputs are the targets shifted right behind ``decoder_start_token_id``. Dropout only with ``key``."""
        if decoder_input_ids is None:
            raise InputError(
                "T5 is an encoder-decoder: pass decoder_input_ids as well as input_ids (the targets shifted "
                f"right, starting with decoder_start_token_id={self.config.decoder_start_token_id}), or call "
                "model.encode(input_ids) for the encoder alone"
            )
        enc_key, dec_key = _split(key, 2)
        encoder_out = self.encode(input_ids, mask=mask, key=enc_key)
        return self.decode_full(
            encoder_out, decoder_input_ids, encoder_mask=mask, decoder_mask=decoder_mask, key=dec_key
        )

    def encode(
        self, input_ids: Int[Array, " seq"], *, mask: Bool[Array, " seq"] | None = None, key: PRNGKeyArray | None = None
    ) -> Float[Array, "seq embed"]:
        """The encoder's output states (after its final norm). Padded positions hold meaningless values."""
        return encoder_states(self.config, self.shared, self.encoder, input_ids, mask=mask, key=key)

    def decode_full(
        self,
        encoder_out: Float[Array, "enc_seq embed"],
        decoder_input_ids: Int[Array, " seq"],
        *,
        encoder_mask: Bool[Array, " enc_seq"] | None = None,
        decoder_mask: Bool[Array, " seq"] | None = None,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "seq vocab"]:
        """Decoder logits for a whole target sequence attending to ``encoder_out`` (no cache)."""
        encoder_mask = self._encoder_mask(encoder_out, encoder_mask)
        logits, _ = self._decoder_forward(decoder_input_ids, encoder_out, encoder_mask, decoder_mask, None, key)
        return logits

    def init_decoder_cache(
        self,
        encoder_out: Float[Array, "enc_seq embed"],
        encoder_mask: Bool[Array, " enc_seq"] | None,
        max_len: int,
        dtype=jnp.float32,
    ) -> T5DecoderCache:
        """An empty decoder cache of ``max_len`` slots (:class:`InputError` for fewer than one), with
        every layer's cross-attention keys and values of ``encoder_out`` precomputed
        (``Attention.project_kv``, stacked over layers)."""
        self_kv = empty_cache(_dims(self.config), max_len, dtype)

        def body(layer, carry, _):
            return carry, layer.cross_attn.project_kv(encoder_out)

        encoder_mask = self._encoder_mask(encoder_out, encoder_mask)
        _, (k, v) = self.decoder.layers(body, None)
        return T5DecoderCache(
            self_kv=self_kv, cross_k=k.astype(dtype), cross_v=v.astype(dtype), encoder_mask=encoder_mask
        )

    def decode(
        self, decoder_ids: Int[Array, " seq"], cache: T5DecoderCache, *, mask: Bool[Array, " seq"] | None = None
    ) -> tuple[Float[Array, "seq vocab"], T5DecoderCache]:
        """Run ``seq`` new decoder tokens against the cache (a prompt, or one step); returns their
        logits and the cache with their keys and values written."""
        cross = (cache.cross_k, cache.cross_v)
        logits, self_kv = self._decoder_forward(decoder_ids, cross, cache.encoder_mask, mask, cache.self_kv, None)
        return logits, eqx.tree_at(lambda c: c.self_kv, cache, self_kv)

    def _decoder_forward(
        self,
        ids: Int[Array, " seq"],
        memory: Float[Array, "enc_seq embed"] | tuple[Array, Array],
        memory_mask: Bool[Array, " enc_seq"],
        mask: Bool[Array, " seq"] | None,
        cache: KVCache | None,
        key: PRNGKeyArray | None,
    ) -> tuple[Float[Array, "seq vocab"], KVCache | None]:
        """The decoder's one pass (:mod:`eqxllm.nn.decoding`): logits and the self-attention cache with
        the new tokens written (None without one). ``memory`` is the encoder output, whose keys and
        values each layer projects inside the scan (the uncached pass, so a remat policy covers them),
        or every layer's precomputed cross keys and values ``[layers, enc_seq, heads, d_kv]``, scanned
        as per-layer inputs (cached decoding)."""
        ids, slots = begin_pass(_dims(self.config), ids, mask, None, cache)
        self_mask = causal_mask(slots)
        cross_mask = jnp.broadcast_to(memory_mask[None, :], (ids.shape[0], memory_mask.shape[0]))
        # the keys' positions, counted over valid slots as the queries' are (unwritten slots are masked)
        bias = self.decoder.bias(slots.positions, positions_from_mask(slots.kv_valid))
        emb_key, layers_key, final_key = _split(key, 3)
        x = _embed(self.config, self._decoder_table, ids, slots.positions, emb_key)
        projected = memory if isinstance(memory, tuple) else None

        def layer(block, x, inputs, slot):
            layer_key, cross = inputs
            cross = block.cross_attn.project_kv(memory) if cross is None else tuple(c.astype(x.dtype) for c in cross)
            x, kv = block(
                x, mask=self_mask, bias=bias, cross_kv=cross, cross_mask=cross_mask, cache=slot, key=layer_key
            )
            return x, kv, None

        xs = (_layer_keys(layers_key, self.decoder), projected)
        x, cache, _ = scan_layers(self.decoder.layers, layer, x, xs, cache, slots)
        return self._logits(self.decoder.finish(x, final_key)), cache

    # helpers ------------------------------------------------------------------------------------
    def _encoder_mask(
        self, encoder_out: Float[Array, "enc_seq embed"], mask: Shaped[Array, "..."] | None
    ) -> Bool[Array, " enc_seq"]:
        """``encoder_mask`` checked against ``encoder_out`` (:func:`check_mask`); all real when None."""
        mask = check_mask(mask, encoder_out.shape[0], "encoder_mask", "encoder_out")
        return jnp.ones((encoder_out.shape[0],), bool) if mask is None else mask

    @property
    def _decoder_table(self) -> Embedding:
        return self.shared if self.decoder_embed is None else self.decoder_embed

    def _logits(self, x: Float[Array, "seq embed"]) -> Float[Array, "seq vocab"]:
        if self.config.scales_decoder_outputs:  # T5 v1.0: rescale before the tied head (Mesh TensorFlow)
            x = x * self.config.d_model**-0.5
        return self._decoder_table.attend(x) if self.lm_head is None else self.lm_head(x)
