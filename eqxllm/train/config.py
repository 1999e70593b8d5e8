"""The training run's configuration: one frozen dataclass tree, flags for every field; presets by name
(:mod:`eqxllm.train.presets`).

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
from eqxllm.models._checks import check_nonnegative, check_positive
from eqxllm.models.gemma_config import GemmaConfig
from eqxllm.models.gpt2 import GPT2Config
from eqxllm.models.llama_config import LlamaConfig
from eqxllm.models.t5_config import T5Config
from eqxllm.models.t5_vae_config import T5VAEConfig
from eqxllm.train.json_fields import check_json_fields
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
    """Fraction of stories held out for validation when the source has no validation file (the same ones on
    every run, whatever ``train.seed``)."""
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
    """The batch order and random keys (not the validation hold-out); a ``--resume`` keeps it."""
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
        # named as the flags are (--train.seq-len), not as the class is
        check_positive(
            t,
            ("seq_len", "batch_size", "accum_steps", "max_steps", "eval_every", "log_every", "checkpoint_every")
            + ("keep_checkpoints", "sample_tokens"),
            ("max_minutes",),
            owner="train",
        )
        check_nonnegative(t, ("eval_batches", "num_samples"), owner="train")
        if not 0 <= t.seed < 2**63:  # jax.random.key takes a signed 64-bit seed; the batch order, one >= 0
            raise ConfigError(f"train.seed={t.seed} is out of range; give an integer from 0 to 2**63 - 1")
        if not self.data.source.strip():  # read as a path, it would be the current folder
            raise ConfigError(
                "data.source is empty; give a text file or folder, a .jsonl/.json/.parquet/.csv file, a Hub "
                "dataset id, or 'hub' (TinyStories from the Hub)"
            )
        if self.mesh != "auto":  # a malformed spec is refused before the data is read and tokenized
            from eqxllm.train.sharding import parse_mesh_spec

            parse_mesh_spec(self.mesh)
        if t.num_samples and not t.sample_prompt:
            raise ConfigError("train.sample_prompt is empty; give the text samples start from (or train.num_samples=0)")
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
            sections = {"data": DataConfig, "optim": OptimConfig, "train": LoopConfig, "lora": LoraConfig}
            check_json_fields(cls, raw, "")
            for section, section_cls in sections.items():
                check_json_fields(section_cls, raw.get(section, {}), section)
            return cls(
                model=from_dict(model) if from_dict is not None else model_cls(**model),
                data=DataConfig(**raw["data"]),
                optim=OptimConfig(**raw["optim"]),
                train=LoopConfig(**raw["train"]),
                lora=LoraConfig(**raw.get("lora", {})),
                **{k: v for k, v in raw.items() if k not in ("model", "data", "optim", "train", "lora")},
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"not a TrainConfig JSON: {e}") from e


def load_config_file(path: str | Path) -> TrainConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    return TrainConfig.from_json(p.read_text())


def as_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# the presets build TrainConfigs, so they live in their own module, imported once this one is complete
from eqxllm.train.presets import TRAIN_PRESETS, train_preset  # noqa: E402

__all__ = ["DataConfig", "LoopConfig", "TrainConfig", "TRAIN_PRESETS", "as_dict", "load_config_file", "train_preset"]
