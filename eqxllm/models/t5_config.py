"""T5 (v1.0, v1.1, Flan) and the original Transformer: one encoder-decoder config, and named presets.

Field names follow Hugging Face's ``T5Config``. Five eqxllm switches turn the same code into the
Transformer of Vaswani et al. (2017): ``positions`` (T5's learned relative buckets or the paper's
sinusoids), ``norm`` (T5's pre-norm RMSNorm or the paper's post-norm LayerNorm), ``scale_attention``
(the paper's ``1/sqrt(d_k)``; T5 folds it into the query init), ``scale_embeddings`` (the paper's
``sqrt(d_model)`` on input embeddings) and ``share_embeddings`` (one table for encoder and decoder
inputs), plus ``ffn_bias`` (the paper's ``b_1``, ``b_2``).
"""

import dataclasses
from dataclasses import dataclass
from typing import Literal

from eqxllm.errors import ConfigError
from eqxllm.models._checks import check_attention_impl, check_choice, check_positive, check_probability
from eqxllm.nn.activations import ACTIVATIONS
from eqxllm.nn.attention_kernel import AttentionImpl
from eqxllm.nn.stack import REMAT_POLICIES


@dataclass(frozen=True, kw_only=True)
class T5Config:
    """Encoder-decoder hyperparameters, named as in Hugging Face's ``T5Config`` (plus eqxllm's switches).

    ``feed_forward_proj`` is ``"relu"`` (T5 v1.0), ``"gated-gelu"`` (v1.1, Flan: GeGLU with the tanh
    GELU, as transformers maps it), ``"gated-silu"``, ``"gelu"`` (exact erf GELU), or any
    ``[gated-]<activation>``. ``tie_word_embeddings`` makes the output head the (decoder) input
    embedding; ``scale_decoder_outputs`` (default: the same as ``tie_word_embeddings``, T5 v1.0's rule)
    multiplies the decoder output by ``d_model**-0.5`` before the head (stored as ``None`` when it
    equals ``tie_word_embeddings``, so that it then follows that flag). ``num_decoder_layers=None``
    means as many as the encoder. Relative positions impose no length limit, and sinusoids none
    either, so :attr:`max_positions` is ``None``; quality degrades beyond the lengths trained on.
    """

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_decoder_layers: int | None = None
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    initializer_factor: float = 1.0
    feed_forward_proj: str = "relu"
    tie_word_embeddings: bool = True
    scale_decoder_outputs: bool | None = None
    decoder_start_token_id: int = 0
    eos_token_id: int = 1
    pad_token_id: int = 0
    # eqxllm switches (the original Transformer); the defaults are T5's
    # plain str rather than Literal so that a bad value is a ConfigError under runtime type checking too
    positions: str = "relative"  # "relative" (T5) | "sinusoidal" (Vaswani et al.)
    norm: str = "rms_pre"  # "rms_pre" (T5) | "layer_post" (Vaswani et al.)
    scale_attention: bool = False
    scale_embeddings: bool = False
    share_embeddings: bool = True
    ffn_bias: bool = False
    attention_impl: AttentionImpl = "xla"
    remat: Literal["none", "dots", "full"] = "none"

    model_type = "t5"
    is_encoder_decoder = True

    def __post_init__(self):
        if self.scale_decoder_outputs == self.tie_word_embeddings:
            # one canonical form, so that configs read back from config.json compare equal
            object.__setattr__(self, "scale_decoder_outputs", None)
        check_positive(
            self,
            ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads"),
            ("layer_norm_epsilon",),
            optional=("num_decoder_layers",),  # None: as many as the encoder
        )
        self._check_relative()
        parts = self.feed_forward_proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated") or self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"feed_forward_proj={self.feed_forward_proj!r} is not '<activation>' or 'gated-<activation>' with "
                f"an activation among {sorted(ACTIVATIONS)} (e.g. 'relu', 'gated-gelu', 'gated-silu')"
            )
        check_probability(self, ("dropout_rate",))
        check_choice(self, "positions", ("relative", "sinusoidal"))
        check_choice(self, "norm", ("rms_pre", "layer_post"))
        if self.positions == "sinusoidal" and self.d_model % 2:
            raise ConfigError(f"sinusoidal positions need an even d_model, got {self.d_model}")
        check_choice(self, "remat", REMAT_POLICIES)
        check_attention_impl(self)
        for name in ("decoder_start_token_id", "eos_token_id", "pad_token_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ConfigError(f"T5Config.{name}={getattr(self, name)} is outside [0, vocab_size={self.vocab_size})")

    def _check_relative(self):
        # the bucketing divides by log(max_distance / max_exact), where max_exact is num_buckets // 2 in
        # the causal decoder: the log range must be positive or the buckets are NaN-derived garbage
        n, d = self.relative_attention_num_buckets, self.relative_attention_max_distance
        if self.positions == "relative" and (n < 4 or d <= n // 2):
            raise ConfigError(
                f"relative_attention_num_buckets={n} and relative_attention_max_distance={d} are out of range: "
                f"need num_buckets >= 4 and max_distance > num_buckets // 2 = {n // 2} (T5 uses 32 and 128)"
            )

    # derived ------------------------------------------------------------------------------------
    @property
    def decoder_layers(self) -> int:
        return self.num_layers if self.num_decoder_layers is None else self.num_decoder_layers

    @property
    def gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self) -> str:
        act = self.feed_forward_proj.split("-")[-1]
        # transformers maps "gated-gelu" to the tanh GELU ("gelu_new") for backwards compatibility
        return "gelu_new" if self.feed_forward_proj == "gated-gelu" else act

    @property
    def scales_decoder_outputs(self) -> bool:
        return self.tie_word_embeddings if self.scale_decoder_outputs is None else self.scale_decoder_outputs

    @property
    def max_positions(self) -> None:
        """No hard limit: relative buckets saturate at ``relative_attention_max_distance``, sinusoids extend."""
        return None

    @property
    def hf_expressible(self) -> bool:
        """Whether transformers' ``T5ForConditionalGeneration`` can hold this model (model_type ``"t5"``)."""
        return (self.positions, self.norm) == ("relative", "rms_pre") and not (
            self.scale_attention or self.scale_embeddings or self.ffn_bias or not self.share_embeddings
        )

    def replace(self, **changes) -> "T5Config":
        return dataclasses.replace(self, **changes)

    # presets (the Hub's google-t5/* and google/* configs) -----------------------------------------
    @classmethod
    def t5_small(cls) -> "T5Config":
        return cls()

    @classmethod
    def t5_base(cls) -> "T5Config":
        return cls(d_model=768, d_ff=3072, num_layers=12, num_heads=12)

    @classmethod
    def t5_large(cls) -> "T5Config":
        return cls(d_model=1024, d_ff=4096, num_layers=24, num_heads=16)

    @classmethod
    def t5_v1_1_small(cls) -> "T5Config":
        return cls(d_ff=1024, num_layers=8, num_heads=6, feed_forward_proj="gated-gelu", tie_word_embeddings=False)

    @classmethod
    def t5_v1_1_base(cls) -> "T5Config":
        return cls(
            d_model=768, d_ff=2048, num_layers=12, num_heads=12, feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,
        )  # fmt: skip

    @classmethod
    def tiny(cls, *, v1_1: bool = False) -> "T5Config":
        """Two layers, width 64: for tests and quick CPU experiments (v1.0 style, or v1.1 with ``v1_1``)."""
        cfg = cls(vocab_size=512, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)
        return cfg.replace(feed_forward_proj="gated-gelu", tie_word_embeddings=False) if v1_1 else cfg

    @classmethod
    def transformer_base(cls) -> "T5Config":
        """Vaswani et al. (2017), base model: N=6, d_model=512, h=8, d_ff=2048, a shared 37k BPE vocabulary."""
        return cls(
            vocab_size=37000, positions="sinusoidal", norm="layer_post", scale_attention=True,
            scale_embeddings=True, scale_decoder_outputs=False, ffn_bias=True,
        )  # fmt: skip

    @classmethod
    def transformer_tiny(cls) -> "T5Config":
        return cls.transformer_base().replace(vocab_size=512, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)


T5_PRESETS = {
    "t5-small": T5Config.t5_small,
    "t5-base": T5Config.t5_base,
    "t5-large": T5Config.t5_large,
    "t5-v1_1-small": T5Config.t5_v1_1_small,
    "t5-v1_1-base": T5Config.t5_v1_1_base,
    # Flan-T5 has the v1.1 architecture (Chung et al., 2022); only the weights differ
    "flan-t5-small": T5Config.t5_v1_1_small,
    "flan-t5-base": T5Config.t5_v1_1_base,
    "t5-tiny": T5Config.tiny,
    "t5-v1_1-tiny": lambda: T5Config.tiny(v1_1=True),
    "transformer-base": T5Config.transformer_base,
    "transformer-tiny": T5Config.transformer_tiny,
}
