"""GPT-2 (Radford et al., 2019, "Language Models are Unsupervised Multitask Learners").

How this family differs: learned absolute positions (``wpe``), pre-norm LayerNorm blocks with biases,
a tanh-GELU MLP four times wider than the model, fused ``c_attn`` in Hugging Face checkpoints
(split into q/k/v here), Conv1D weights stored ``[in, out]`` (transposed by the key map), and the
output head tied to the token embedding. Residual projections start with a ``1/sqrt(2 n_layer)``
smaller init. A gated SwiGLU MLP (``mlp="swiglu"``) is offered for community variants; it has no
Hugging Face equivalent.
"""

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import equinox as eqx
import jax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from eqxllm.errors import ConfigError
from eqxllm.models._checks import check_attention_impl, check_choice, check_positive, check_probability
from eqxllm.nn import MLP, Attention, Embedding, KVCache, LayerNorm, Linear, Stack, dropout
from eqxllm.nn.activations import ACTIVATIONS
from eqxllm.nn.attention_kernel import AttentionImpl
from eqxllm.nn.decoding import CacheSlot, CausalLM, Dims, OutputHead, TokenSlots, causal_mask, scan_layers
from eqxllm.nn.masks import Mask
from eqxllm.nn.stack import REMAT_POLICIES


@dataclass(frozen=True, kw_only=True)
class GPT2Config:
    """GPT-2 hyperparameters, named as in Hugging Face's ``GPT2Config`` (plus eqxllm's own options).

    ``reorder_and_upcast_attn`` is kept so that ``config.json`` round-trips; it changes nothing here.
    In `transformers` (eager attention only) it computes ``q k^T`` from float32 copies of ``q`` and
    ``k``, scales it and takes the softmax in float32. eqxllm's attention always does that: the
    products of bfloat16 inputs accumulate in float32 and the scale and softmax run in float32
    (:func:`eqxllm.nn.dot_product_attention`, and ``jax.nn.dot_product_attention`` likewise).
    """

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True
    bos_token_id: int = 50256
    eos_token_id: int = 50256
    reorder_and_upcast_attn: bool = False  # what eqxllm always computes: see above
    # eqxllm options (no Hugging Face counterpart; exported only when they differ from GPT-2's)
    use_bias: bool = True
    mlp: Literal["gelu", "swiglu"] = "gelu"
    pad_vocab_multiple: int = 1
    attention_impl: AttentionImpl = "xla"
    remat: Literal["none", "dots", "full"] = "none"

    model_type = "gpt2"
    is_encoder_decoder = False

    def __post_init__(self):
        check_positive(
            self,
            ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "pad_vocab_multiple"),
            ("layer_norm_epsilon",),
            optional=("n_inner",),  # None: four times n_embd
        )
        if self.n_embd % self.n_head:
            raise ConfigError(f"GPT2Config.n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        check_choice(self, "activation_function", ACTIVATIONS)
        check_choice(self, "mlp", ("gelu", "swiglu"))
        check_choice(self, "remat", REMAT_POLICIES)
        check_attention_impl(self)
        check_probability(self, ("resid_pdrop", "embd_pdrop", "attn_pdrop"))

    @property
    def inner_dim(self) -> int:
        return 4 * self.n_embd if self.n_inner is None else self.n_inner

    @property
    def max_positions(self) -> int:
        """The longest sequence (prompt + generated tokens) the model accepts."""
        return self.n_positions

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_multiple
        return (self.vocab_size + m - 1) // m * m

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def replace(self, **changes) -> "GPT2Config":
        return dataclasses.replace(self, **changes)

    # presets ------------------------------------------------------------------------------------
    @classmethod
    def gpt2_small(cls) -> "GPT2Config":
        return cls()

    @classmethod
    def gpt2_medium(cls) -> "GPT2Config":
        return cls(n_embd=1024, n_layer=24, n_head=16)

    @classmethod
    def gpt2_large(cls) -> "GPT2Config":
        return cls(n_embd=1280, n_layer=36, n_head=20)

    @classmethod
    def gpt2_xl(cls) -> "GPT2Config":
        return cls(n_embd=1600, n_layer=48, n_head=25)

    @classmethod
    def tiny(cls) -> "GPT2Config":
        """Two layers, width 64: for tests and quick CPU experiments."""
        return cls(vocab_size=512, n_positions=128, n_embd=64, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)


GPT2_PRESETS = {
    "gpt2": GPT2Config.gpt2_small,
    "gpt2-medium": GPT2Config.gpt2_medium,
    "gpt2-large": GPT2Config.gpt2_large,
    "gpt2-xl": GPT2Config.gpt2_xl,
    "gpt2-tiny": GPT2Config.tiny,
}


class GPT2Block(eqx.Module):
    """``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    ln_1: LayerNorm
    attn: Attention
    ln_2: LayerNorm
    mlp: MLP
    resid_pdrop: float = eqx.field(static=True)

    def __init__(self, cfg: GPT2Config, *, key: PRNGKeyArray):
        attn_key, mlp_key = jax.random.split(key)
        out_std = cfg.initializer_range / math.sqrt(2 * cfg.n_layer)
        self.ln_1 = LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon, use_bias=cfg.use_bias)
        self.attn = Attention(
            cfg.n_embd,
            cfg.n_head,
            use_bias=cfg.use_bias,
            impl=cfg.attention_impl,
            dropout_rate=cfg.attn_pdrop,
            init_std=cfg.initializer_range,
            out_init_std=out_std,
            key=attn_key,
        )
        self.ln_2 = LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon, use_bias=cfg.use_bias)
        gated = cfg.mlp == "swiglu"
        self.mlp = MLP(
            cfg.n_embd,
            cfg.inner_dim,
            activation="silu" if gated else cfg.activation_function,
            gated=gated,
            use_bias=cfg.use_bias,
            init_std=cfg.initializer_range,
            out_init_std=out_std,
            key=mlp_key,
        )
        self.resid_pdrop = cfg.resid_pdrop

    def __call__(
        self,
        x: Float[Array, "seq embed"],
        *,
        mask: Mask,
        cache: CacheSlot | None = None,
        key: PRNGKeyArray | None = None,
    ) -> tuple[Float[Array, "seq embed"], Any]:
        """The block's output and the cache with this layer's new keys and values written (None without one)."""
        kv, index, layer = (None, None, None) if cache is None else cache
        probs_key, attn_key, mlp_key = (None, None, None) if key is None else jax.random.split(key, 3)
        h, kv = self.attn(self.ln_1(x), mask=mask, cache=kv, cache_index=index, layer=layer, key=probs_key)
        x = x + dropout(h, self.resid_pdrop, attn_key)
        x = x + dropout(self.mlp(self.ln_2(x)), self.resid_pdrop, mlp_key)
        return x, kv


class GPT2(CausalLM):
    """The GPT-2 language model: token ids ``[seq]`` -> next-token logits ``[seq, vocab]``; ``forward``,
    ``decode`` and ``init_cache`` (at most ``n_positions`` slots) come from :class:`CausalLM`."""

    wte: Embedding
    wpe: Embedding
    blocks: Stack[GPT2Block]
    ln_f: LayerNorm
    lm_head: Linear | None
    config: GPT2Config = eqx.field(static=True)

    def __init__(self, config: GPT2Config, *, key: PRNGKeyArray):
        wte_key, wpe_key, blocks_key, head_key = jax.random.split(key, 4)
        self.config = config
        self.wte = Embedding(config.padded_vocab_size, config.n_embd, init_std=config.initializer_range, key=wte_key)
        self.wpe = Embedding(config.n_positions, config.n_embd, init_std=0.01, key=wpe_key)
        self.blocks = Stack(lambda k: GPT2Block(config, key=k), config.n_layer, key=blocks_key, remat=config.remat)
        self.ln_f = LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, use_bias=config.use_bias)
        self.lm_head = (
            None
            if config.tie_word_embeddings
            else Linear(config.n_embd, config.padded_vocab_size, use_bias=False, key=head_key)
        )

    @property
    def dims(self) -> Dims:
        cfg = self.config
        return Dims(cfg.vocab_size, cfg.n_positions, "n_positions", cfg.n_layer, cfg.n_head, cfg.head_dim, True)

    def _features(
        self, input_ids: Int[Array, " seq"], slots: TokenSlots, cache: KVCache | None, key: PRNGKeyArray | None
    ) -> tuple[Float[Array, "seq embed"], KVCache | None, None]:
        """The final-normed hidden states, the updated cache (None without one) and None (GPT-2 has
        no router). Dropout is active only when ``key`` is given."""
        attn_mask = causal_mask(slots)
        x = self._embed(input_ids, slots.positions, key)
        keys = None if key is None else jax.random.split(jax.random.fold_in(key, 1), self.config.n_layer)

        def layer(block, x, layer_key, slot):
            x, kv = block(x, mask=attn_mask, cache=slot, key=layer_key)
            return x, kv, None

        x, cache, _ = scan_layers(self.blocks, layer, x, keys, cache, slots)
        return self.ln_f(x), cache, None

    def _embed(self, input_ids, positions, key):
        x = self.wte(input_ids) + self.wpe(positions).astype(self.wte.weight.dtype)
        return dropout(x, self.config.embd_pdrop, key)

    def output_head(self) -> OutputHead | None:
        if self.lm_head is not None and type(self.lm_head) is not Linear:  # e.g. LoRA adapters on it
            return None
        weight = self.wte.weight if self.lm_head is None else self.lm_head.weight
        return OutputHead(weight[: self.config.vocab_size], None)

    def _head(self, x: Float[Array, "seq embed"]) -> Float[Array, "seq vocab"]:
        logits = self.wte.attend(x) if self.lm_head is None else self.lm_head(x)
        return logits[:, : self.config.vocab_size]
