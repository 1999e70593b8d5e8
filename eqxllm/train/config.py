"""The training run's configuration: one frozen dataclass tree, presets by name, flags for every field.

``eqxllm train --config gpt2-tinystories --train.max-steps 100`` starts from a preset and overrides
fields; ``--config-file run.json`` starts from a JSON file written by an earlier run
(``OUT/run_config.json``). The model's ``vocab_size`` is always taken from the tokenizer.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from eqxllm.checkpoints.registry import family_for_model_type
from eqxllm.errors import ConfigError
from eqxllm.lora.config import LoraConfig
from eqxllm.models.gemma_config import GemmaConfig
from eqxllm.models.gpt2 import GPT2Config
from eqxllm.models.llama_config import LlamaConfig
from eqxllm.models.t5_config import T5Config
from eqxllm.models.t5_vae_config import T5VAEConfig
from eqxllm.train.optim import OptimConfig

# Every family's config; `eqxllm train` exposes the fields of the preset's family as flags.
ModelConfig = GPT2Config | GemmaConfig | LlamaConfig | T5Config | T5VAEConfig


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the text and the tokenizer come from."""

    source: str = "hub"
    """``hub`` (TinyStories on the Hugging Face Hub), a Hub dataset id, a text file or a folder of them."""
    version: Literal["v1", "v2"] = "v1"
    """TinyStories files on the Hub: v1 (TinyStories-train.txt) or v2 (the GPT-4-only TinyStoriesV2 files)."""
    val_fraction: float = 0.01
    """Fraction of stories held out for validation when the source has no validation file."""
    tokenizer: str = "train"
    """``train`` (byte-level BPE trained on the training stories), ``gpt2`` or a directory / Hub id."""
    vocab_size: int = 4096
    """Vocabulary size of a trained tokenizer (ignored for a pretrained one)."""
    cache_dir: str | None = None
    """Token cache directory (default ``~/.cache/eqxllm/tokens``)."""
    loader: Literal["auto", "text", "datasets"] = "auto"
    """``datasets`` reads ``source`` with Hugging Face ``datasets`` (a Hub dataset id, or files); ``text``
    the ``<|endoftext|>``-separated text path; ``auto``: ``datasets`` for .jsonl/.json/.parquet/.csv files
    (or folders of them) and when prompt/completion fields are given, else ``text``."""
    text_field: str = "text"
    """The record field holding the text (``datasets`` sources)."""
    prompt_field: str | None = None
    """With ``completion_field``: train on prompt/completion records, the loss on completion tokens only."""
    completion_field: str | None = None
    streaming: bool = False
    """Read a ``datasets`` source lazily (sets larger than memory); tokenized once into the cache either way."""


@dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """Steps, batches, evaluation, logging and checkpoints."""

    seq_len: int = 256
    batch_size: int = 32
    """Global batch size (sequences per optimizer step, over all devices and micro-batches)."""
    accum_steps: int = 1
    max_steps: int = 2000
    max_minutes: float | None = None
    """Stop (and save) after this much training time even if ``max_steps`` is not reached."""
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    seed: int = 0
    eval_every: int = 100
    eval_batches: int = 16
    """Validation batches per evaluation (0 = the whole validation split)."""
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    export_best: bool = False
    """Export the weights of the evaluation with the lowest ``val_loss`` to ``OUT/model`` (written when
    it happens, so a stopped run has its best model already), instead of the last step's: on a small
    corpus a longer run overfits. The last step's weights stay in ``OUT/checkpoints``."""
    num_samples: int = 2
    sample_tokens: int = 96
    sample_prompt: str = "Once upon a time"


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """A whole training run."""

    model: ModelConfig = field(default_factory=GPT2Config)
    """The model to train; its family decides the checkpoint format (``vocab_size`` comes from the tokenizer)."""
    task: str = "lm"
    """What to learn: ``lm`` (next-token prediction on stories) or another entry of ``eqxllm.train.tasks.TASKS``."""
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    mesh: str = "auto"
    """Device mesh, e.g. ``data=4,fsdp=2,tensor=1``; ``auto`` = data parallel over all devices."""
    out: str = "runs/gpt2-tinystories"
    resume: bool = False
    """Continue from the latest checkpoint in ``out`` (bit-identical to an uninterrupted run)."""
    init_from: str | None = None
    """Start from this checkpoint (a directory or Hub id in Hugging Face layout): its weights, config and
    tokenizer as they are; ``model`` must then be its config (see :mod:`eqxllm.train.init_from`)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """Low-rank adapters (``lora.rank > 0``): train those only, export merged and PEFT."""

    def __post_init__(self):
        t = self.train
        for name in ("seq_len", "batch_size", "accum_steps", "max_steps", "eval_every", "log_every"):
            if getattr(t, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(t, name)}")
        if t.batch_size % t.accum_steps:
            raise ConfigError(f"train.batch_size={t.batch_size} is not divisible by accum_steps={t.accum_steps}")
        if self.model.max_positions is not None and t.seq_len > self.model.max_positions:
            raise ConfigError(f"train.seq_len={t.seq_len} exceeds the model's context {self.model.max_positions}")
        self.resolved_optim()  # the schedule this run will follow must be valid

    def resolved_optim(self) -> OptimConfig:
        """The optimizer config with the schedule's length (``optim.total_steps=None``: ``train.max_steps``)
        and warmup (``None``: ``optim.warmup_fraction`` of it) derived from the run, so that
        ``--train.max-steps N`` alone gives a whole schedule over N steps."""
        return self.optim.resolved(self.train.max_steps)  # OptimConfig checks warmup < total

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def for_run(
        self,
        *,
        data: str | None = None,
        out: str | None = None,
        max_minutes: float | None = None,
        resume: bool | None = None,
    ) -> "TrainConfig":
        """The same config pointed at a data source, run directory and time budget (what the example
        scripts and benchmarks set on a preset); arguments left ``None`` keep their values."""
        cfg = self
        if data is not None:
            cfg = cfg.replace(data=dataclasses.replace(cfg.data, source=data))
        if max_minutes is not None:
            cfg = cfg.replace(train=dataclasses.replace(cfg.train, max_minutes=max_minutes))
        if out is not None:
            cfg = cfg.replace(out=out)
        if resume is not None:
            cfg = cfg.replace(resume=resume)
        return cfg

    def to_json(self) -> str:
        raw = dataclasses.asdict(self)
        raw["model"] = {"model_type": self.model.model_type, **raw["model"]}
        return json.dumps(raw, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        raw = json.loads(text)
        try:
            model = dict(raw["model"])
            model_type = model.pop("model_type", "gpt2")
            model_cls = family_for_model_type(model_type, "the config file").config_cls
            if "model_type" in {f.name for f in dataclasses.fields(model_cls)}:
                model["model_type"] = model_type  # one config class for several model types (LlamaConfig)
            # nested configs (the T5-VAE's T5) rebuild themselves from plain dicts
            from_dict = getattr(model_cls, "from_dict", None)
            return cls(
                model=from_dict(model) if from_dict is not None else model_cls(**model),
                data=DataConfig(**raw["data"]),
                optim=OptimConfig(**raw["optim"]),
                train=LoopConfig(**raw["train"]),
                lora=LoraConfig(**raw.get("lora", {})),
                **{k: v for k, v in raw.items() if k not in ("model", "data", "optim", "train", "lora")},
            )
        except (KeyError, TypeError) as e:
            raise ConfigError(f"not a TrainConfig JSON: {e}") from e


def _schedule(*, warmup_steps: int, steps: int, **hyper) -> OptimConfig:
    # A preset's schedule spans the run (total_steps=None) with its warmup kept as a fraction, so that
    # `--train.max-steps N` rescales both: `warmup_steps` of `steps` at the preset's own length.
    return OptimConfig(total_steps=None, warmup_steps=None, warmup_fraction=warmup_steps / steps, **hyper)


def _gpt2_tinystories() -> TrainConfig:
    # Sized so that ~10 minutes on a 2-core CPU trains it meaningfully (about two passes over the
    # 2 MiB slice): 4 layers of width 256, a 4096-token BPE trained on the stories. The schedule
    # spans 400 steps of 4096 tokens (~1.5 s each here); the 10-minute budget stops it if slower.
    steps = 400
    return TrainConfig(
        model=GPT2Config(
            vocab_size=4096,
            n_positions=128,  # = train.seq_len: the model claims only the context it was trained on
            n_embd=256,
            n_layer=4,
            n_head=4,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=0,
            eos_token_id=0,
        ),
        data=DataConfig(vocab_size=4096),
        optim=_schedule(learning_rate=2e-3, warmup_steps=30, steps=steps, weight_decay=0.1, b2=0.99),
        train=LoopConfig(
            seq_len=128,
            batch_size=32,
            max_steps=steps,
            max_minutes=10.0,
            eval_every=100,
            checkpoint_every=200,
        ),
        out="runs/gpt2-tinystories",
    )


def _gpt2_tinystories_gpu() -> TrainConfig:
    # For one GPU/TPU host or more: GPT-2 small shape, bfloat16 compute, vocabulary padded to 128s.
    steps = 20_000
    return TrainConfig(
        model=GPT2Config(
            n_positions=512,
            pad_vocab_multiple=128,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            attention_impl="jax",
            remat="dots",
        ),
        data=DataConfig(tokenizer="gpt2"),
        optim=_schedule(learning_rate=6e-4, warmup_steps=500, steps=steps),
        train=LoopConfig(
            seq_len=512,
            batch_size=256,
            max_steps=steps,
            compute_dtype="bfloat16",
            eval_every=500,
            checkpoint_every=1000,
        ),
        out="runs/gpt2-tinystories-gpu",
    )


def _gpt2_tinystories_test() -> TrainConfig:
    # Seconds on a CPU: for tests and smoke runs.
    steps = 8
    return TrainConfig(
        model=GPT2Config(
            vocab_size=300,
            n_positions=32,
            n_embd=32,
            n_layer=2,
            n_head=2,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=0,
            eos_token_id=0,
        ),
        data=DataConfig(vocab_size=300),
        optim=_schedule(learning_rate=1e-2, warmup_steps=2, steps=steps),
        train=LoopConfig(
            seq_len=16,
            batch_size=8,
            max_steps=steps,
            eval_every=4,
            eval_batches=2,
            log_every=2,
            checkpoint_every=4,
            num_samples=1,
            sample_tokens=8,
        ),
        out="runs/test",
    )


def _gemma_tinystories() -> TrainConfig:
    # A Gemma 3-style model at TinyStories scale: grouped-query attention (4 query heads sharing 2
    # key/value heads), query/key norms, GeGLU, sliding-window layers (64 tokens) alternating with
    # global ones using different rotary bases. About ten minutes on a 2-core CPU.
    steps = 500
    return TrainConfig(
        model=GemmaConfig(
            generation=3,
            vocab_size=4096,
            hidden_size=256,
            intermediate_size=768,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=64,
            max_position_embeddings=128,  # = train.seq_len: the context it is trained on
            query_pre_attn_scalar=64.0,
            sliding_window=64,
            rope_theta=1_000_000.0,
            rope_local_base_freq=10_000.0,
            layer_types=("sliding_attention", "full_attention", "sliding_attention", "full_attention"),
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
        ),
        data=DataConfig(vocab_size=4096),
        optim=_schedule(learning_rate=2e-3, warmup_steps=30, steps=steps, weight_decay=0.1, b2=0.99),
        train=LoopConfig(
            seq_len=128, batch_size=32, max_steps=steps, max_minutes=10.0, eval_every=100, checkpoint_every=200
        ),
        out="runs/gemma-tinystories",
    )


def _llama_tinystories(moe: bool = False) -> TrainConfig:
    # A Llama 3-style model at TinyStories scale (GQA, SwiGLU, untied head); with moe=True, Mixtral's
    # layout: every MLP a top-2 mixture of 8 narrower experts (about twice the dense model's active
    # MLP width per token). About ten minutes on a 2-core CPU.
    steps = 500
    changes = dict(model_type="mixtral", intermediate_size=384, num_local_experts=8, num_experts_per_tok=2)
    model = LlamaConfig(
        vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=0,
        pad_token_id=0,
    )  # fmt: skip
    return TrainConfig(
        model=model.replace(**changes) if moe else model,
        data=DataConfig(vocab_size=4096),
        optim=OptimConfig(learning_rate=2e-3, warmup_steps=30, total_steps=steps, weight_decay=0.1, b2=0.99),
        train=LoopConfig(
            seq_len=128, batch_size=32, max_steps=steps, max_minutes=10.0, eval_every=100, checkpoint_every=200
        ),
        out="runs/mixtral-tinystories" if moe else "runs/llama-tinystories",
    )


def _t5_tinystories() -> TrainConfig:
    # T5 v1.1 style (gated GELU, untied head, RMSNorm, relative positions) at TinyStories scale:
    # the first half of a story in, its second half out. About ten minutes on a 2-core CPU.
    steps = 400
    return TrainConfig(
        model=T5Config(
            vocab_size=4096,
            d_model=256,
            d_kv=64,
            d_ff=640,
            num_layers=3,
            num_decoder_layers=3,
            num_heads=4,
            feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,
            dropout_rate=0.0,
        ),
        task="seq2seq",
        data=DataConfig(vocab_size=4096),
        optim=_schedule(learning_rate=2e-3, warmup_steps=30, steps=steps, weight_decay=0.1, b2=0.99),
        train=LoopConfig(
            seq_len=96,
            batch_size=32,
            max_steps=steps,
            max_minutes=10.0,
            eval_every=100,
            checkpoint_every=200,
            sample_tokens=64,
        ),
        out="runs/t5-tinystories",
    )


def _t5_vae_tinystories() -> TrainConfig:
    # Autoencode TinyStories sentences of < 24 tokens, with the interpolation loss; about 35 minutes on a
    # 2-core CPU (docs/t5_vae.md).
    steps = 6000
    return TrainConfig(
        model=T5VAEConfig.tinystories(),
        task="vae",
        data=DataConfig(vocab_size=4096, val_fraction=0.02),
        optim=_schedule(learning_rate=3e-3, warmup_steps=50, steps=steps, weight_decay=0.01, b2=0.99),
        train=LoopConfig(
            seq_len=24,
            batch_size=32,
            max_steps=steps,
            max_minutes=45.0,
            eval_every=250,
            eval_batches=8,
            log_every=25,
            checkpoint_every=500,
        ),
        out="runs/t5-vae-tinystories",
    )


def _t5_vae_test() -> TrainConfig:
    # Seconds on a CPU: for tests and smoke runs.
    steps = 8
    return TrainConfig(
        model=T5VAEConfig.tiny(),
        task="vae",
        data=DataConfig(vocab_size=300, val_fraction=0.1),
        optim=_schedule(learning_rate=1e-2, warmup_steps=2, steps=steps),
        train=LoopConfig(
            seq_len=16,
            batch_size=8,
            max_steps=steps,
            eval_every=4,
            eval_batches=2,
            log_every=2,
            checkpoint_every=4,
            num_samples=1,
        ),
        out="runs/t5-vae-test",
    )


TRAIN_PRESETS = {
    "t5-tinystories": _t5_tinystories,
    "gemma-tinystories": _gemma_tinystories,
    "llama-tinystories": _llama_tinystories,
    "mixtral-tinystories": lambda: _llama_tinystories(moe=True),
    "gpt2-tinystories": _gpt2_tinystories,
    "gpt2-tinystories-gpu": _gpt2_tinystories_gpu,
    "gpt2-tinystories-test": _gpt2_tinystories_test,
    "t5-vae-test": _t5_vae_test,
    "t5-vae-tinystories": _t5_vae_tinystories,
}


def train_preset(name: str) -> TrainConfig:
    try:
        return TRAIN_PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown training preset {name!r}; known: {sorted(TRAIN_PRESETS)}") from None


def load_config_file(path: str | Path) -> TrainConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    return TrainConfig.from_json(p.read_text())


def as_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
