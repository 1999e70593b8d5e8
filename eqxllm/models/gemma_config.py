"""Gemma hyperparameters for the three text generations, and named presets.

Field names follow Hugging Face's ``GemmaConfig`` / ``Gemma2Config`` / ``Gemma3TextConfig`` (their
activation field is ``hidden_act`` in Gemma 1 and ``hidden_activation`` later; eqxllm keeps one
field, ``hidden_activation``). ``generation`` (1, 2, 3) picks the block layout; the other fields
say what each generation adds (soft-caps, sliding windows, a second rotary base).
"""

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from eqxllm.errors import ConfigError
from eqxllm.models._checks import FULL, SLIDING, check_attention, check_choice, check_layer_types, check_positive
from eqxllm.models.decoder_spec import DecoderSpec
from eqxllm.nn.activations import ACTIVATIONS
from eqxllm.nn.attention_kernel import AttentionImpl
from eqxllm.nn.positions import Rope, RopeScaling
from eqxllm.nn.stack import REMAT_POLICIES

MODEL_TYPES = {1: "gemma", 2: "gemma2", 3: "gemma3_text"}


def default_layer_types(generation: int, num_layers: int, sliding_window_pattern: int = 6) -> tuple[str, ...]:
    """Hugging Face's defaults: Gemma 1 is all global; Gemma 2 alternates local, global, ...; Gemma 3
    has ``pattern - 1`` local layers before each global one (``pattern`` was ``sliding_window_pattern``)."""
    if generation == 1:
        return (FULL,) * num_layers
    pattern = 2 if generation == 2 else sliding_window_pattern
    return tuple(SLIDING if (i + 1) % pattern else FULL for i in range(num_layers))


@dataclass(frozen=True, kw_only=True)
class GemmaConfig:
    """Gemma 1, 2 or 3 (text) hyperparameters, named as in Hugging Face (plus eqxllm's own options).

    ``query_pre_attn_scalar=None`` scales attention by ``head_dim**-0.5`` (Gemma 1's rule).
    ``layer_types=None`` takes the generation's default pattern: Gemma 2 alternates local and global
    layers; Gemma 3 makes every ``sliding_window_pattern``-th layer global (transformers' older
    ``Gemma3TextConfig`` field; 6 on the Hub), so a change of depth keeps the pattern.
    ``rope_scaling`` is the factor of linear position interpolation (Hugging Face's
    ``{"rope_type": "linear", "factor": f}``), applied to every layer in Gemma 1/2 and to global layers
    only in Gemma 3. ``rope_local_base_freq`` is Gemma 3's rotary base for sliding layers (``None``:
    10 000).
    """

    generation: Literal[1, 2, 3] = 1
    vocab_size: int = 256000
    hidden_size: int = 3072
    intermediate_size: int = 24576
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 16
    head_dim: int = 256
    hidden_activation: str = "gelu_pytorch_tanh"
    max_position_embeddings: int = 8192
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_local_base_freq: float | None = None
    rope_scaling: float | None = None
    attention_bias: bool = False
    query_pre_attn_scalar: float | None = None
    attn_logit_softcapping: float | None = None
    final_logit_softcapping: float | None = None
    sliding_window: int | None = None
    layer_types: tuple[str, ...] | list[str] | None = None  # stored as a tuple
    sliding_window_pattern: int = 6  # Gemma 3's default layer_types: one global layer in this many
    tie_word_embeddings: bool = True
    initializer_range: float = 0.02
    bos_token_id: int | None = 2
    eos_token_id: int | Sequence[int] | None = 1  # a sequence is stored as a tuple
    pad_token_id: int | None = 0
    # eqxllm options (no Hugging Face counterpart)
    attention_impl: AttentionImpl = "xla"
    remat: Literal["none", "dots", "full"] = "none"

    def __post_init__(self):
        # lists (from JSON) become tuples: the config is a static, hashed part of the model
        if self.layer_types is None:
            layer_types = default_layer_types(self.generation, self.num_hidden_layers, self.sliding_window_pattern)
            object.__setattr__(self, "layer_types", layer_types)
        else:
            object.__setattr__(self, "layer_types", tuple(self.layer_types))
        if self.eos_token_id is not None and not isinstance(self.eos_token_id, int):
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
        self._validate()

    def _validate(self) -> None:
        if self.generation not in MODEL_TYPES:
            raise ConfigError(f"GemmaConfig.generation must be 1, 2 or 3, got {self.generation!r}")
        check_positive(
            self,
            ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "head_dim", "max_position_embeddings", "sliding_window_pattern"),
            ("rms_norm_eps", "rope_theta", "rope_local_base_freq", "rope_scaling", "query_pre_attn_scalar",
             "attn_logit_softcapping", "final_logit_softcapping", "sliding_window"),
        )  # fmt: skip
        check_attention(self, self.num_attention_heads, self.num_key_value_heads, self.head_dim)
        check_choice(self, "hidden_activation", ACTIVATIONS)
        check_choice(self, "remat", REMAT_POLICIES)
        self._validate_layers()
        self._validate_generation()

    def _validate_layers(self) -> None:
        assert self.layer_types is not None
        check_layer_types(self, tuple(self.layer_types), self.num_hidden_layers, self.sliding_window)

    def _validate_generation(self) -> None:
        if self.generation == 1:
            gemma2_only = ("query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping")
            set_fields = [n for n in gemma2_only if getattr(self, n) is not None]
            if set_fields or SLIDING in self.layer_types:  # type: ignore[operator]
                raise ConfigError(
                    f"Gemma 1 (generation=1) has no {set_fields or ['sliding_attention layers']}; "
                    "use generation=2 or 3 for them"
                )
        if self.generation != 3 and self.rope_local_base_freq is not None:
            raise ConfigError("GemmaConfig.rope_local_base_freq is a Gemma 3 field; set generation=3 or leave it None")
        if self.generation == 3 and self.attn_logit_softcapping is not None:
            # transformers' Gemma3Attention never passes the cap to its attention kernel
            raise ConfigError(
                "Gemma 3 does not soft-cap attention logits (transformers ignores attn_logit_softcapping "
                f"for gemma3_text); got attn_logit_softcapping={self.attn_logit_softcapping}"
            )

    # derived values ------------------------------------------------------------------------------
    @property
    def model_type(self) -> str:
        return MODEL_TYPES[self.generation]

    is_encoder_decoder = False

    @property
    def max_positions(self) -> int:
        """The longest sequence (prompt + generated tokens) the shared sampler and trainer allow."""
        return self.max_position_embeddings

    @property
    def attention_scale(self) -> float:
        """Gemma 1: ``head_dim**-0.5``; Gemma 2/3: ``query_pre_attn_scalar**-0.5``."""
        scalar = self.head_dim if self.query_pre_attn_scalar is None else self.query_pre_attn_scalar
        return 1.0 / math.sqrt(scalar)

    @property
    def local_rope_theta(self) -> float:
        """The rotary base of sliding layers: Gemma 3's local base, else the global one."""
        if self.generation == 3:
            return 10000.0 if self.rope_local_base_freq is None else self.rope_local_base_freq
        return self.rope_theta

    @property
    def sliding_flags(self) -> tuple[bool, ...]:
        return tuple(t == SLIDING for t in self.layer_types)  # type: ignore[union-attr]

    @property
    def decoder(self) -> DecoderSpec:
        """The shared decoder's switches: ``1 + w`` norms, a scaled embedding, GeGLU, a tied head;
        Gemma 2/3 add sandwich norms, soft-caps and sliding layers, Gemma 3 q/k norms and a local base."""
        scaling = None if self.rope_scaling is None else RopeScaling(rope_type="linear", factor=self.rope_scaling)
        return DecoderSpec(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_layers=self.num_hidden_layers, num_heads=self.num_attention_heads,
            num_kv_heads=self.num_key_value_heads, head_dim=self.head_dim, activation=self.hidden_activation,
            norm_eps=self.rms_norm_eps, max_position_embeddings=self.max_position_embeddings,
            rope=Rope(self.rope_theta, scaling),
            local_rope=Rope(self.local_rope_theta) if self.generation == 3 else None,
            unit_offset_norms=True, embed_scale=True, sandwich_norms=self.generation >= 2,
            qk_norm=self.generation == 3, qkv_bias=self.attention_bias, o_bias=self.attention_bias,
            attention_scale=self.attention_scale, attn_softcap=self.attn_logit_softcapping,
            final_softcap=self.final_logit_softcapping, sliding_flags=self.sliding_flags,
            sliding_window=self.sliding_window, tie_word_embeddings=self.tie_word_embeddings,
            initializer_range=self.initializer_range, attention_impl=self.attention_impl, remat=self.remat,
        )  # fmt: skip

    def replace(self, **changes) -> "GemmaConfig":
        derive_from = {"num_hidden_layers", "generation", "sliding_window_pattern"}
        if derive_from & changes.keys() and "layer_types" not in changes:
            changes["layer_types"] = None  # recompute the default pattern for the new depth, generation or pattern
        return dataclasses.replace(self, **changes)

    # presets: sizes from the config.json files of google/gemma-2b, gemma-7b, gemma-2-2b, gemma-2-9b,
    # gemma-3-1b-pt and the text_config of gemma-3-4b-pt on the Hugging Face Hub -------------------
    @classmethod
    def gemma_2b(cls) -> "GemmaConfig":
        return cls(
            hidden_size=2048, intermediate_size=16384, num_hidden_layers=18, num_attention_heads=8,
            num_key_value_heads=1,
        )  # fmt: skip

    @classmethod
    def gemma_7b(cls) -> "GemmaConfig":
        return cls()

    @classmethod
    def gemma2_2b(cls) -> "GemmaConfig":
        return cls(
            generation=2, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
            num_attention_heads=8, num_key_value_heads=4, query_pre_attn_scalar=256.0,
            attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=4096,
        )  # fmt: skip

    @classmethod
    def gemma2_9b(cls) -> "GemmaConfig":
        return cls(
            generation=2, hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
            num_attention_heads=16, num_key_value_heads=8, query_pre_attn_scalar=256.0,
            attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=4096,
        )  # fmt: skip

    @classmethod
    def gemma3_1b(cls) -> "GemmaConfig":
        return cls(
            generation=3, vocab_size=262144, hidden_size=1152, intermediate_size=6912, num_hidden_layers=26,
            num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=32768,
            rope_theta=1_000_000.0, rope_local_base_freq=10_000.0, query_pre_attn_scalar=256.0,
            sliding_window=512, eos_token_id=(1, 106),
        )  # fmt: skip

    @classmethod
    def gemma3_4b(cls) -> "GemmaConfig":
        return cls(
            generation=3, vocab_size=262208, hidden_size=2560, intermediate_size=10240, num_hidden_layers=34,
            num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=131072,
            rope_theta=1_000_000.0, rope_local_base_freq=10_000.0, rope_scaling=8.0,
            query_pre_attn_scalar=256.0, sliding_window=1024, eos_token_id=(1, 106),
        )  # fmt: skip

    @classmethod
    def tiny(cls, generation: Literal[1, 2, 3] = 1) -> "GemmaConfig":
        """Width 64, head_dim 16, MQA in Gemma 1, GQA later, windows of 8 tokens: for tests and CPU runs."""
        common: dict[str, Any] = dict(
            vocab_size=512, hidden_size=64, intermediate_size=128, head_dim=16, num_attention_heads=4,
            max_position_embeddings=128,
        )  # fmt: skip
        if generation == 1:
            return cls(generation=1, num_hidden_layers=2, num_key_value_heads=1, **common)
        if generation == 2:
            return cls(
                generation=2, num_hidden_layers=4, num_key_value_heads=2, query_pre_attn_scalar=16.0,
                attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=8, **common,
            )  # fmt: skip
        return cls(
            generation=3, num_hidden_layers=4, num_key_value_heads=2, query_pre_attn_scalar=16.0,
            rope_theta=1_000_000.0, rope_local_base_freq=10_000.0, sliding_window=8,
            sliding_window_pattern=2, **common,
        )  # fmt: skip


GEMMA_PRESETS = {
    "gemma-2b": GemmaConfig.gemma_2b,
    "gemma-7b": GemmaConfig.gemma_7b,
    "gemma-2-2b": GemmaConfig.gemma2_2b,
    "gemma-2-9b": GemmaConfig.gemma2_9b,
    "gemma-3-1b": GemmaConfig.gemma3_1b,
    "gemma-3-4b": GemmaConfig.gemma3_4b,
    "gemma-tiny": lambda: GemmaConfig.tiny(1),
    "gemma2-tiny": lambda: GemmaConfig.tiny(2),
    "gemma3-tiny": lambda: GemmaConfig.tiny(3),
}
