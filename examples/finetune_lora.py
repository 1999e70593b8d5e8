"""Fine-tune a trained checkpoint with LoRA on prompt/completion pairs, and compare the held-out
completion loss before and after.

    python examples/finetune_lora.py --base runs/gpt2-tinystories/model     # the README main job's output
    python examples/finetune_lora.py --base DIR --data stories.txt --steps 300 --rank 8 --targets attn

The pairs are built from TinyStories text: each story's first sentence is the prompt and the rest its
completion, written as JSON Lines to ``OUT/pairs.jsonl``; the loss counts completion tokens only. Any
Hugging Face directory (with its tokenizer) works as ``--base``. The run leaves the merged model in
``OUT/model`` and a PEFT adapter in ``OUT/adapter``. The same run from the command line:
``eqxllm train --init-from DIR --data OUT/pairs.jsonl --data.prompt-field prompt --data.completion-field
completion --lora.rank 8``.
"""

import argparse
import dataclasses
import json
from pathlib import Path

import eqxllm
from eqxllm.data.sentences import split_sentences
from eqxllm.data.tinystories import iter_stories
from eqxllm.lora.config import LoraConfig
from eqxllm.train import train_preset
from eqxllm.train.evaluate import evaluate_tokens
from eqxllm.train.init_from import checkpoint_config
from eqxllm.train.loop import train
from eqxllm.train.prepare import prepare_data

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/tinystories/TinyStories-train-prefix-2MiB.txt"


def write_pairs(stories_file: Path, dst: Path, limit: int) -> int:
    """``{"prompt": first sentence, "completion": " " + the rest}`` per story; returns the count."""
    n = 0
    with dst.open("w", encoding="utf-8") as f:
        for story in iter_stories(stories_file):
            sentences = split_sentences(story)
            if len(sentences) < 2:
                continue
            record = {"prompt": sentences[0], "completion": " " + " ".join(sentences[1:])}
            f.write(json.dumps(record) + "\n")
            n += 1
            if n == limit:
                break
    return n


def completion_loss(model, cfg) -> float:
    """The held-out completion-only loss (every validation window, prompts masked)."""
    data = prepare_data(cfg.data, Path(cfg.out), progress=False, init_from=cfg.init_from)
    t = cfg.train
    res = evaluate_tokens(
        model,
        data.validation,
        num_bytes=data.validation_bytes,
        seq_len=t.seq_len,
        batch_size=t.batch_size,
        loss_mask=data.validation_mask,
    )
    return res.loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    args = p.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = out / "pairs.jsonl"
    print(f"{write_pairs(Path(args.data), pairs, args.stories)} prompt/completion pairs -> {pairs}")

    preset = train_preset("gpt2-tinystories")
    model_cfg = checkpoint_config(args.base)
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
    optim = dataclasses.replace(preset.optim, learning_rate=args.lr, warmup_steps=10, total_steps=args.steps)
    cfg = preset.replace(
        model=model_cfg,
        init_from=args.base,
        lora=LoraConfig(rank=args.rank, alpha=2.0 * args.rank, targets=args.targets),
        data=data,
        train=loop,
        optim=optim,
        out=str(out / "run"),
    )
    before = completion_loss(eqxllm.from_pretrained(args.base), cfg)
    export = train(cfg)
    after = completion_loss(eqxllm.from_pretrained(export), cfg)
    print(f"held-out completion loss: before {before:.4f}, after {after:.4f}")
    print(f"merged model: {export}; PEFT adapter: {export.parent / 'adapter'}")


if __name__ == "__main__":
    main()
