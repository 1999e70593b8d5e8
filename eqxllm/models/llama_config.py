"""Hyperparameters of the llama-like families (Llama 1/2/3.x, OpenLLaMA, Mistral, Qwen2/2.5, Qwen3,
Mixtral), and named presets.

Field names follow Hugging Face's ``LlamaConfig``, ``MistralConfig``, ``Qwen2Config``,
``Qwen3Config`` and ``MixtralConfig``; ``model_type`` says which of them a config is, and so which
switches of the shared decoder it turns on (see :attr:`LlamaConfig.decoder`).
"""

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from eqxllm.errors import ConfigError
from eqxllm.models._checks import FULL, SLIDING, check_attention, check_choice, check_layer_types, check_positive
from eqxllm.models.decoder_spec import DecoderSpec
from eqxllm.nn.activations import ACTIVATIONS
from eqxllm.nn.attention_kernel import AttentionImpl
from eqxllm.nn.moe import DISPATCHES, Dispatch
from eqxllm.nn.positions import ROPE_TYPES, SCALING_FIELDS, Rope, RopeScaling, check_scaling_numbers
from eqxllm.nn.stack import REMAT_POLICIES

MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "mixtral")
_QWEN = ("qwen2", "qwen3")


def rope_scaling_from(
    value: RopeScaling | Mapping[str, Any] | None, max_position_embeddings: int | None = None
) -> RopeScaling | None:
    """A :class:`RopeScaling` from Hugging Face's dict (``rope_type`` or the older ``type``); ``None``
    and ``rope_type="default"`` mean no scaling. An unknown type raises :class:`ConfigError`; keys the
    type does not read are ignored, as transformers does.

    As transformers' ``standardize_rope_params`` and ``_compute_yarn_parameters``: llama3 and yarn
    without ``original_max_position_embeddings`` take ``max_position_embeddings``; a yarn ``factor`` of
    None is ``max_position_embeddings / original_max_position_embeddings``, and a ``beta_fast`` /
    ``beta_slow`` of None or 0 is the default 32 / 1."""
    if value is None or isinstance(value, RopeScaling):
        return value
    params = dict(value)
    rope_type = params.pop("rope_type", params.pop("type", "default"))
    if rope_type == "default":
        return None
    if rope_type not in ROPE_TYPES:
        raise ConfigError(
            f"rope scaling type {rope_type!r} is not implemented; known types: {list(ROPE_TYPES)}. "
            "Use a checkpoint without it, or remove rope_scaling to run at the pre-training context."
        )
    kept = {k: v for k, v in params.items() if k in SCALING_FIELDS[rope_type]}
    missing = [k for k in ("low_freq_factor", "high_freq_factor") if rope_type == "llama3" and k not in kept]
    if missing:  # transformers refuses such a config too: a default here would be a model it cannot load
        raise ConfigError(f"llama3 rope scaling {dict(value)} lacks {missing}; give both frequency factors")
    if rope_type in ("llama3", "yarn") and max_position_embeddings is not None:
        kept.setdefault("original_max_position_embeddings", max_position_embeddings)
    if rope_type == "yarn":
        for name in ("beta_fast", "beta_slow"):
            if name in kept and kept[name] in (None, 0):  # transformers: `get(name) or default`
                del kept[name]
        original = kept.get("original_max_position_embeddings")
        if kept.get("factor", 0) is None and max_position_embeddings is not None and isinstance(original, int | float):
            kept["factor"] = max_position_embeddings / original
    check_scaling_numbers(kept)
    try:
        return RopeScaling(rope_type=rope_type, **kept)
    except TypeError as e:
        raise ConfigError(f"rope scaling {dict(value)} lacks a field: {e}") from None


def default_layer_types(cfg: "LlamaConfig") -> tuple[str, ...]:
    """Mistral slides on every layer when it has a window; Qwen on layers ``>= max_window_layers``
    when ``use_sliding_window`` (transformers' Qwen2Config/Qwen3Config); the others never."""
    n = cfg.num_hidden_layers
    if cfg.model_type in _QWEN:
        first = n if cfg.max_window_layers is None else cfg.max_window_layers
        slides = cfg.use_sliding_window and cfg.sliding_window is not None
        return tuple(SLIDING if slides and i >= first else FULL for i in range(n))
    return ((SLIDING if cfg.sliding_window is not None else FULL),) * n


@dataclass(frozen=True, kw_only=True)
class LlamaConfig:
    """A llama-like decoder's hyperparameters, named as in Hugging Face (plus eqxllm's own options).

    ``num_key_value_heads=None`` is multi-head attention; ``head_dim=None`` is ``hidden_size //
    num_attention_heads`` (both stay None, so that a preset's ``replace`` re-derives them). ``rope_scaling`` is a :class:`RopeScaling` (or Hugging Face's dict).
    ``sliding_window``: Mistral's window on every layer; in Qwen it only applies with
    ``use_sliding_window``, to layers from ``max_window_layers`` on (``None``: no window).
    ``layer_types=None`` derives each layer's kind from those fields. Qwen2 always has q/k/v biases
    and no output bias; Qwen3 has RMSNorms on queries and keys. ``num_local_experts`` > 0 (Mixtral)
    replaces the MLP by a mixture of that many experts, ``num_experts_per_tok`` of them per token.
    """

    model_type: Literal["llama", "mistral", "qwen2", "qwen3", "mixtral"] = "llama"
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | Mapping[str, Any] | None = None
    attention_bias: bool = False
    mlp_bias: bool = False
    sliding_window: int | None = None
    use_sliding_window: bool = False
    max_window_layers: int | None = None
    layer_types: tuple[str, ...] | list[str] | None = None  # stored as a tuple
    num_local_experts: int = 0
    num_experts_per_tok: int = 2
    router_aux_loss_coef: float = 0.02
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    bos_token_id: int | None = 1
    eos_token_id: int | Sequence[int] | None = 2  # a sequence is stored as a tuple
    pad_token_id: int | None = None
    # eqxllm options (no Hugging Face counterpart)
    attention_impl: AttentionImpl = "xla"
    remat: Literal["none", "dots", "full"] = "none"
    moe_dispatch: Dispatch = "grouped"  # Mixtral's experts: eqxllm.nn.MoE's dispatch

    def __post_init__(self):
        # the config is a static, hashed part of the model: lists and dicts (from JSON) become tuples and records
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        if isinstance(self.rope_scaling, Mapping) and "rope_theta" in self.rope_scaling:
            put("rope_theta", self._theta_inside(self.rope_scaling))
        put("rope_scaling", rope_scaling_from(self.rope_scaling, self.max_position_embeddings))
        if self.eos_token_id is not None and not isinstance(self.eos_token_id, int):
            put("eos_token_id", tuple(self.eos_token_id))
        put("layer_types", default_layer_types(self) if self.layer_types is None else tuple(self.layer_types))
        self._validate()

    def _theta_inside(self, params: Mapping[str, Any]) -> float:
        """The base that a transformers 5 ``rope_parameters`` dict passed as ``rope_scaling`` holds: it
        is the model's ``rope_theta`` (that field left at its default, or equal to it)."""
        inside = params["rope_theta"]
        default = next(f.default for f in dataclasses.fields(self) if f.name == "rope_theta")
        if self.rope_theta not in (default, inside):
            raise ConfigError(
                f"LlamaConfig.rope_scaling holds rope_theta={inside!r} but rope_theta={self.rope_theta!r}; give "
                "the base once"
            )
        return inside

    def _validate(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"LlamaConfig.model_type={self.model_type!r} is unknown; expected one of {MODEL_TYPES}")
        check_positive(
            self,
            ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "head_dim", "max_position_embeddings"),
            ("rms_norm_eps", "rope_theta", "sliding_window"),
            optional=("num_key_value_heads", "head_dim"),  # None: derived from the number of heads
        )  # fmt: skip
        check_attention(self, self.num_attention_heads, self.kv_heads, self.head_size)
        check_choice(self, "hidden_act", ACTIVATIONS)
        check_choice(self, "remat", REMAT_POLICIES)
        check_choice(self, "moe_dispatch", DISPATCHES)
        self._validate_family()
        self._validate_layers()

    def _validate_family(self) -> None:
        kind = self.model_type
        if self.hidden_size % self.num_attention_heads and (self.head_dim is None or kind == "llama"):
            raise ConfigError(  # transformers' LlamaConfig refuses it even with head_dim; the others need head_dim
                f"LlamaConfig.hidden_size={self.hidden_size} is not divisible by num_attention_heads="
                f"{self.num_attention_heads}" + ("" if kind == "llama" else "; give head_dim, the width of one head")
            )
        if kind == "qwen2" and self.attention_bias:
            raise ConfigError("Qwen2 always has q/k/v biases and no output bias; leave attention_bias=False")
        if self.mlp_bias and kind != "llama":
            raise ConfigError(f"mlp_bias is a Llama field; {kind} has no MLP biases")
        if (self.use_sliding_window or self.max_window_layers is not None) and kind not in _QWEN:
            raise ConfigError(f"use_sliding_window/max_window_layers are Qwen fields; {kind} does not have them")
        if kind == "llama" and self.sliding_window is not None:
            raise ConfigError("Llama has no sliding window; use model_type='mistral' for one on every layer")
        if kind == "mixtral":
            if self.num_local_experts < 1 or not 1 <= self.num_experts_per_tok <= self.num_local_experts:
                raise ConfigError(
                    f"Mixtral needs 1 <= num_experts_per_tok <= num_local_experts, got num_experts_per_tok="
                    f"{self.num_experts_per_tok} and num_local_experts={self.num_local_experts}"
                )
        elif self.num_local_experts:
            raise ConfigError(f"num_local_experts is a Mixtral field; {kind} has a dense MLP (set it to 0)")

    def _validate_layers(self) -> None:
        assert self.layer_types is not None
        check_layer_types(self, tuple(self.layer_types), self.num_hidden_layers, self.sliding_window)
        kind = self.model_type
        if kind in _QWEN:  # transformers' Qwen configs drop the window unless use_sliding_window is set
            if SLIDING in self.layer_types and not self.use_sliding_window:
                raise ConfigError(
                    f"LlamaConfig.layer_types has sliding_attention layers but use_sliding_window=False; {kind} "
                    "slides only with use_sliding_window=True (transformers drops its window otherwise)"
                )
        elif tuple(self.layer_types) != default_layer_types(self):
            # config.json has no per-layer kinds for these types: transformers and a reload would not see them
            raise ConfigError(
                f"LlamaConfig.layer_types={list(self.layer_types)} differs from {kind}'s own pattern "
                f"{list(default_layer_types(self))} (every layer slides when sliding_window is set, none "
                "otherwise), which its config.json cannot express; a per-layer mix of windows needs "
                "model_type 'qwen2'/'qwen3' (max_window_layers) or Gemma"
            )

    # derived values ------------------------------------------------------------------------------
    is_encoder_decoder = False

    @property
    def max_positions(self) -> int:
        """The longest sequence (prompt + generated tokens) the shared sampler and trainer allow."""
        return self.max_position_embeddings

    @property
    def kv_heads(self) -> int:
        """``num_key_value_heads``, or ``num_attention_heads`` when it is None (multi-head attention)."""
        return self.num_attention_heads if self.num_key_value_heads is None else self.num_key_value_heads

    @property
    def head_size(self) -> int:
        """``head_dim``, or ``hidden_size // num_attention_heads`` when it is None."""
        return self.hidden_size // self.num_attention_heads if self.head_dim is None else self.head_dim

    @property
    def sliding_flags(self) -> tuple[bool, ...]:
        return tuple(t == SLIDING for t in self.layer_types)  # type: ignore[union-attr]

    @property
    def decoder(self) -> DecoderSpec:
        """The shared decoder's switches: plain RMSNorm (``w``), SwiGLU, no embedding scale; Qwen2's
        q/k/v biases, Qwen3's q/k norms, Mistral's (and Qwen's) sliding layers, Mixtral's experts."""
        scaling = self.rope_scaling
        assert scaling is None or isinstance(scaling, RopeScaling)
        return DecoderSpec(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_layers=self.num_hidden_layers, num_heads=self.num_attention_heads,
            num_kv_heads=self.kv_heads, head_dim=self.head_size, activation=self.hidden_act,
            norm_eps=self.rms_norm_eps, max_position_embeddings=self.max_position_embeddings,
            rope=Rope(self.rope_theta, scaling), qk_norm=self.model_type == "qwen3",
            qkv_bias=self.attention_bias or self.model_type == "qwen2", o_bias=self.attention_bias,
            mlp_bias=self.mlp_bias, sliding_flags=self.sliding_flags, sliding_window=self.sliding_window,
            tie_word_embeddings=self.tie_word_embeddings, num_experts=self.num_local_experts,
            num_experts_per_tok=self.num_experts_per_tok if self.num_local_experts else 0,
            router_aux_loss_coef=self.router_aux_loss_coef if self.num_local_experts else 0.0,
            initializer_range=self.initializer_range, attention_impl=self.attention_impl, remat=self.remat,
            moe_dispatch=self.moe_dispatch,
        )  # fmt: skip

    def replace(self, **changes) -> "LlamaConfig":
        derived = {"num_hidden_layers", "sliding_window", "max_window_layers", "use_sliding_window", "model_type"}
        if derived & changes.keys() and "layer_types" not in changes:
            changes["layer_types"] = None  # recompute each layer's kind for the new depth or window
        return dataclasses.replace(self, **changes)
