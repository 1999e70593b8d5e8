"""Train a small GPT-2 on TinyStories, then tell a story with it.

    python examples/train_gpt2_tinystories.py                       # TinyStories from the Hugging Face Hub
    python examples/train_gpt2_tinystories.py --data path/to/TinyStories-train.txt   # a local file (offline)

About ten minutes on a 2-core CPU (the `gpt2-tinystories` preset); the model, its tokenizer, a loss
curve and logs land in --out. The same run from the command line: `eqxllm train --config gpt2-tinystories`.
"""

import argparse

import jax
import jax.numpy as jnp

import eqxllm
from eqxllm.data import load_tokenizer
from eqxllm.train import train_preset
from eqxllm.train.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="hub", help="'hub' (default), a text file or a folder of them")
    parser.add_argument("--out", default="runs/gpt2-tinystories", help="run directory")
    parser.add_argument("--minutes", type=float, default=10.0, help="training time budget")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    args = parser.parse_args()

    cfg = train_preset("gpt2-tinystories").for_run(
        data=args.data, out=args.out, max_minutes=args.minutes, resume=args.resume
    )
    model_dir = train(cfg)

    model = eqxllm.from_pretrained(model_dir)
    tokenizer = load_tokenizer(model_dir)
    prompt = "Once upon a time"
    ids = jnp.asarray(tokenizer.encode(prompt).ids)
    new = eqxllm.generate(model, ids, max_new_tokens=120, temperature=0.8, top_k=50, key=jax.random.key(0))
    print(f"\n{prompt}{tokenizer.decode(new.tolist())}")


if __name__ == "__main__":  # a bad flag, file or network: one line, exit 2 (eqxllm.cli.guarded)
    from eqxllm.cli import guarded

    raise SystemExit(guarded("train_gpt2_tinystories.py", main))
