"""Train a small T5 to continue TinyStories: the first half of a story in, the second half out.

    python examples/train_t5_tinystories.py --data path/to/TinyStories-train.txt   # or --data hub

T5 v1.1 style (gated GELU, relative positions, untied head) at TinyStories scale: the
`t5-tinystories` preset, about ten minutes on a 2-core CPU. The exported model is a Hugging Face
T5 checkpoint: `transformers.T5ForConditionalGeneration.from_pretrained(OUT/model)`.
"""

import argparse

import jax.numpy as jnp

import eqxllm
from eqxllm.data import load_tokenizer
from eqxllm.train import train_preset
from eqxllm.train.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="hub", help="'hub' (default), a text file or a folder of them")
    parser.add_argument("--out", default="runs/t5-tinystories", help="run directory")
    parser.add_argument("--minutes", type=float, default=10.0, help="training time budget")
    args = parser.parse_args()

    cfg = train_preset("t5-tinystories").for_run(data=args.data, out=args.out, max_minutes=args.minutes)
    model_dir = train(cfg)

    model = eqxllm.from_pretrained(model_dir)
    tokenizer = load_tokenizer(model_dir)
    first_half = "Once upon a time, there was a little dog named Max. Max loved to play with his red ball."
    new = eqxllm.generate(model, jnp.asarray(tokenizer.encode(first_half).ids), max_new_tokens=80)
    print(f"\n{first_half} => {tokenizer.decode(new.tolist())}")


if __name__ == "__main__":  # a bad flag, file or network: one line, exit 2 (eqxllm.cli.guarded)
    from eqxllm.cli import guarded

    raise SystemExit(guarded("train_t5_tinystories.py", main))
