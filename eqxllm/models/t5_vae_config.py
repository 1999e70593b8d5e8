"""The T5-VAE's config: a nested :class:`T5Config` plus the latent bottleneck and its regulariser.

Fields follow Fraser Greenlee's Transformer-VAE (2021, "Making a Transformer-VAE with JAX",
github.com/Fraser-Greenlee/transformer-vae): ``n_latent_tokens`` tokens of ``latent_size`` dims, an MMD
regulariser whose weight warms up along ``sigmoid(reg_k * step - reg_b)``. eqxllm adds the pooling
choice, a Gaussian-posterior KL regulariser for comparison, and a linear (un-squashed) latent option.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from eqxllm.errors import ConfigError
from eqxllm.models._checks import check_choice, check_nonnegative, check_positive, check_probability
from eqxllm.models.t5_config import T5Config

POOLINGS = ("first", "mean", "attention")
REGULARISERS = ("mmd", "kl")
LATENT_ACTIVATIONS = ("tanh", "none")
# fields of older configs, experiments measured in docs/t5_vae.md and since removed: read and dropped
# at the value the code now behaves as
RETIRED_FIELDS = {"splice_junction": "shared", "word_deletion": 0.0, "code_dropout": 0.0}


def without_retired(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` without the :data:`RETIRED_FIELDS` that hold their retired value (a config written
    before they were removed); any other value stays, and the config rejects it as unknown."""
    return {k: v for k, v in raw.items() if k not in RETIRED_FIELDS or RETIRED_FIELDS[k] != v}


@dataclass(frozen=True, kw_only=True)
class T5VAEConfig:
    """A T5 autoencoder whose encoder output is squeezed into ``n_latent_tokens x latent_size``.

    - ``pooling``: how encoder states ``[seq, embed]`` become ``n_latent_tokens`` states: ``"first"``
      keeps the first positions (the author's code), ``"mean"`` averages the real tokens into one
      (his write-up; needs ``n_latent_tokens == 1``), ``"attention"`` lets learned queries attend to
      the encoder states.
    - ``latent_activation``: ``"tanh"`` (the author's; bounds each latent in ``(-1, 1)``) or
      ``"none"`` (linear, so that the latents can match the standard normal prior the regulariser
      compares them with).
    - ``regulariser``: ``"mmd"`` (MMD between the batch's latent tokens and normal samples) or ``"kl"``
      (a diagonal Gaussian posterior, reparameterised, with its KL to N(0, I)).
    - The regulariser's weight at step ``s`` is ``reg_weight * sigmoid(reg_k * s - reg_b)``.
    - ``mmd_scale``: the kernel is ``exp(-mean_d (x_d - y_d)^2 / mmd_scale)``; ``None`` means
      ``latent_size``, the author's (and InfoVAE's) choice.
    - ``latent_noise``: standard deviation of Gaussian noise added to the latent while training
      (MMD only), which teaches the decoder to read the neighbourhood of each code, not just the code.
    - ``word_dropout``: while training, each decoder input token (not the start token) is replaced by
      the pad token with this probability (Bowman et al., 2016), so that the decoder must lean on
      the latent rather than on the previous tokens alone.
    - ``bow_weight``: the weight of a bag-of-words loss (Zhao et al., 2017, "Learning Discourse-level
      Diversity for Neural Dialog Models using Conditional Variational Autoencoders"): a linear head
      predicts every word of the sentence from the whole code at once, without their order, so that
      the code must carry the sentence's content from the first steps. ``0`` means no head.
    - ``splice_weight``: the weight of the interpolation loss (:mod:`eqxllm.train.tasks.splices`): the code
      part-way between the two sentences of a pair of the batch (rows ``2k`` and ``2k + 1``) is
      trained to write a *splice* of them, the first one's words up to a token they share and the
      second one's from there, so that the points between two codes decode to text made of both
      sentences rather than to a slot-by-slot mix. ``0`` means no interpolation loss; above it, the
      batch must be even.
    - ``max_length``: the longest token sequence (with its end token) the model encodes or writes;
      it is the model's ``max_positions``.
    """

    t5: T5Config = field(default_factory=T5Config.tiny)
    n_latent_tokens: int = 6
    latent_size: int = 32
    pooling: str = "first"
    latent_activation: str = "tanh"
    regulariser: str = "mmd"
    reg_weight: float = 1.0
    reg_k: float = 0.0025
    reg_b: float = 6.25
    mmd_scale: float | None = None
    latent_noise: float = 0.0
    word_dropout: float = 0.0
    bow_weight: float = 0.0
    splice_weight: float = 0.0
    max_length: int = 32

    model_type = "t5_vae"
    is_encoder_decoder = True

    def __post_init__(self):
        if isinstance(self.t5, dict):  # read back from JSON (a run_config.json): the nested config too
            object.__setattr__(self, "t5", T5Config(**self.t5))
        check_positive(self, ("n_latent_tokens", "latent_size", "max_length"), ("mmd_scale",))
        check_nonnegative(self, ("reg_weight", "latent_noise", "bow_weight", "splice_weight"))
        check_probability(self, ("word_dropout",))
        check_choice(self, "pooling", POOLINGS)
        check_choice(self, "regulariser", REGULARISERS)
        check_choice(self, "latent_activation", LATENT_ACTIVATIONS)
        if self.pooling == "first" and self.n_latent_tokens > self.max_length:
            raise ConfigError(
                f"pooling='first' keeps the first n_latent_tokens={self.n_latent_tokens} positions, more than "
                f"max_length={self.max_length}"
            )
        if self.pooling == "mean" and self.n_latent_tokens != 1:
            raise ConfigError(
                f"pooling='mean' averages the sentence into one latent token; got n_latent_tokens="
                f"{self.n_latent_tokens} (use 'first' or 'attention' for several)"
            )

    # the T5's vocabulary and special ids, read by the trainer, the sampler and the CLI -----------
    @property
    def vocab_size(self) -> int:
        return self.t5.vocab_size

    @property
    def d_model(self) -> int:
        return self.t5.d_model

    @property
    def decoder_start_token_id(self) -> int:
        return self.t5.decoder_start_token_id

    @property
    def eos_token_id(self) -> int:
        return self.t5.eos_token_id

    @property
    def pad_token_id(self) -> int:
        return self.t5.pad_token_id

    @property
    def max_positions(self) -> int:
        return self.max_length

    @property
    def kernel_scale(self) -> float:
        return float(self.latent_size if self.mmd_scale is None else self.mmd_scale)

    def replace(self, **changes) -> "T5VAEConfig":
        return dataclasses.replace(self, **changes)

    def with_vocabulary(self, vocab_size: int, *, pad: int, eos: int, start: int) -> "T5VAEConfig":
        """The same model over another tokenizer's vocabulary and special ids."""
        t5 = self.t5.replace(vocab_size=vocab_size, pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=start)
        return self.replace(t5=t5)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "T5VAEConfig":
        """From ``dataclasses.asdict`` output (e.g. a run's ``run_config.json``): the nested T5 too."""
        raw = without_retired(raw)
        raw.pop("model_type", None)
        t5 = raw.pop("t5", {})
        return cls(t5=t5 if isinstance(t5, T5Config) else T5Config(**t5), **raw)

    # presets -------------------------------------------------------------------------------------
    @classmethod
    def tiny(cls, **changes) -> "T5VAEConfig":
        """A two-layer, width-64 T5 with 4 latent tokens of 8: for tests."""
        t5 = T5Config.tiny().replace(dropout_rate=0.0)
        return cls(t5=t5, **{"n_latent_tokens": 4, "latent_size": 8, "max_length": 16, **changes})

    @classmethod
    def tinystories(cls) -> "T5VAEConfig":
        """The model of the ``t5-vae-tinystories`` training preset (vocabulary set by the tokenizer).

        Its T5 has sinusoidal positions, not relative buckets: trained from scratch, T5's relative-only
        positions make copying, which an autoencoder must learn first, very slow (docs/t5_vae.md).
        16 latent tokens of 32 hold the sentences of up to 23 tokens (docs/t5_vae.md, "Making it work").
        The interpolation loss (``splice_weight=1``) makes the points between two codes decode to text."""
        t5 = T5Config(
            vocab_size=4096, d_model=128, d_kv=32, d_ff=512, num_layers=2, num_heads=4, dropout_rate=0.0,
            feed_forward_proj="gated-gelu", tie_word_embeddings=False, positions="sinusoidal",
        )  # fmt: skip
        return cls(
            t5=t5, n_latent_tokens=16, latent_size=32, latent_activation="none", reg_weight=10.0, reg_k=0.006,
            reg_b=3.0, mmd_scale=1.0, latent_noise=1.0, word_dropout=0.15, splice_weight=1.0, max_length=24,
        )  # fmt: skip


T5VAE_PRESETS = {
    "t5-vae-tiny": T5VAEConfig.tiny,
    "t5-vae-tinystories": T5VAEConfig.tinystories,
}
