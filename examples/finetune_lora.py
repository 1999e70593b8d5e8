"""Fine-tune a trained checkpoint with LoRA on prompt/completion pairs, and compare the held-out
completion loss before and after.

    python examples/finetune_lora.py --base runs/gpt2-tinystories/model     # the README main job's output
    python examples/finetune_lora.py --base DIR --data stories.txt --steps 300 --rank 8 --targets attn

The pairs are built from TinyStories text: each story's first sentence is the prompt and the rest its
completion, written as JSON Lines to ``OUT/pairs.jsonl``; the loss counts completion tokens only. Any
decoder-only Hugging Face directory (with its tokenizer: GPT-2, Gemma, Llama, Mistral, Qwen, Mixtral)
works as ``--base``; a T5 or T5-VAE is refused. The training run lives in ``OUT/run`` and leaves the merged
model in ``OUT/run/model`` and a PEFT adapter in ``OUT/run/adapter``; the tokenized pairs that measure the
loss before and after are kept in ``OUT/eval``. The same run from the command line:
``eqxllm train --init-from DIR --data OUT/pairs.jsonl --data.prompt-field prompt --data.completion-field
completion --lora.rank 8``.
"""

import argparse
import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path

from _common import run_script

import eqxllm
from eqxllm.cli import OneLineParser
from eqxllm.data.sentences import split_sentences
from eqxllm.data.tinystories import iter_stories
from eqxllm.errors import ConfigError
from eqxllm.lora.config import LoraConfig
from eqxllm.train import train_preset
from eqxllm.train.config import TrainConfig
from eqxllm.train.evaluate import evaluate_tokens
from eqxllm.train.init_from import checkpoint_config
from eqxllm.train.loop import train
from eqxllm.train.prepare import PreparedData, prepare_data
from eqxllm.train.run_dir import check_out_dir

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/tinystories/TinyStories-train-prefix-2MiB.txt"


def write_pairs(stories: Iterable[str], dst: Path, limit: int) -> int:
    """``{"prompt": first sentence, "completion": " " + the rest}`` per story; returns the count."""
    n = 0
    with dst.open("w", encoding="utf-8") as f:
        for story in stories:
            sentences = split_sentences(story)
            if len(sentences) < 2:
                continue
            record = {"prompt": sentences[0], "completion": " " + " ".join(sentences[1:])}
            f.write(json.dumps(record) + "\n")
            n += 1
            if n == limit:
                break
    return n


def completion_loss(model, data: PreparedData, seq_len: int, batch_size: int) -> float:
    """The held-out completion-only loss (every validation window, prompts masked)."""
    res = evaluate_tokens(
        model,
        data.validation,
        num_bytes=data.validation_bytes,
        seq_len=seq_len,
        batch_size=batch_size,
        loss_mask=data.validation_mask,
    )
    return res.loss


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad numbers now, in one line, before any work."""
    for flag, value in [
        ("--stories", args.stories),
        ("--steps", args.steps),
        ("--rank", args.rank),
        ("--batch", args.batch),
    ]:
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if not args.lr > 0 or (args.minutes is not None and not args.minutes > 0):
        raise ConfigError(f"--lr and --minutes must be > 0, got {args.lr} and {args.minutes}")


def base_config(base: str):
    """The model config of ``--base``, which must be a decoder-only model (the loss is next-token)."""
    model_cfg = checkpoint_config(base)
    if model_cfg.is_encoder_decoder:
        raise ConfigError(
            f"--base {base} is a {model_cfg.model_type!r} model; this example fine-tunes decoder-only models "
            "(gpt2, gemma3_text, llama, mistral, qwen2, qwen3, mixtral)"
        )
    return model_cfg


def parse_args() -> argparse.Namespace:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="runs/gpt2-tinystories/model", help="Hugging Face directory or Hub id")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="TinyStories text (<|endoftext|>-separated)")
    p.add_argument("--out", default="runs/finetune-lora")
    p.add_argument("--stories", type=int, default=2000, help="pairs to build")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--targets", default="attn", help="regular expression over module paths")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch", type=int, default=32, help="sequences per step")
    p.add_argument("--minutes", type=float, default=None, help="stop after this long")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in OUT/run")
    args = p.parse_args()
    check_args(args)
    return args


def run_config(args: argparse.Namespace, model_cfg, pairs: Path) -> TrainConfig:
    """The ``gpt2-tinystories`` preset's loop on ``pairs``, from ``--base``, training LoRA adapters,
    in ``OUT/run``."""
    preset = train_preset("gpt2-tinystories")
    data = dataclasses.replace(
        preset.data, source=str(pairs), prompt_field="prompt", completion_field="completion", val_fraction=0.05
    )
    loop = dataclasses.replace(
        preset.train,
        seq_len=min(preset.train.seq_len, model_cfg.max_positions),
        max_steps=args.steps,
        batch_size=args.batch,
        max_minutes=args.minutes,
        eval_every=max(args.steps // 4, 1),
        checkpoint_every=args.steps,
        num_samples=0,
    )
    # the schedule spans the run, its warmup 5% of it (10 steps of the default 200; none for a short run)
    optim = dataclasses.replace(
        preset.optim, learning_rate=args.lr, warmup_steps=None, warmup_fraction=0.05, total_steps=None
    )
    return preset.replace(
        model=model_cfg,
        init_from=args.base,
        lora=LoraConfig(rank=args.rank, alpha=2.0 * args.rank, targets=args.targets),
        data=data,
        train=loop,
        optim=optim,
        out=str(pairs.parent / "run"),
        resume=args.resume,
    )


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    pairs = out / "pairs.jsonl"
    cfg = run_config(args, base_config(args.base), pairs)
    check_out_dir(cfg, Path(cfg.out))  # an old run without --resume: refused before any work
    stories = iter_stories(args.data)  # a missing file is refused now, before OUT is created
    out.mkdir(parents=True, exist_ok=True)
    print(f"{write_pairs(stories, pairs, args.stories)} prompt/completion pairs -> {pairs}")

    # the pairs are tokenized (with the base's tokenizer) into a folder of their own: the run's folder
    # must be empty or a run when train() starts
    held_out = prepare_data(cfg.data, out / "eval", progress=False, init_from=cfg.init_from)
    t = cfg.train
    measure = lambda model: completion_loss(model, held_out, t.seq_len, t.batch_size)  # noqa: E731
    before = measure(eqxllm.from_pretrained(args.base))
    export = train(cfg)
    after = measure(eqxllm.from_pretrained(export))
    print(f"held-out completion loss: before {before:.4f}, after {after:.4f}")
    print(f"merged model: {export}; PEFT adapter: {export.parent / 'adapter'}")


if __name__ == "__main__":  # a bad flag, file or base: one line, exit 2 (eqxllm.cli.guarded)
    run_script("finetune_lora.py", main)
