"""Train a small Gemma 3-style model on TinyStories, then tell a story with it.

    python examples/train_gemma_tinystories.py --data path/to/TinyStories-train.txt   # or --data hub

Grouped-query attention, query/key norms, GeGLU and sliding-window layers, all at TinyStories scale
(the `gemma-tinystories` preset, about ten minutes on a 2-core CPU). The exported model is a
Hugging Face `gemma3_text` checkpoint: `transformers.AutoModelForCausalLM.from_pretrained(OUT/model)`.
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
    parser.add_argument("--out", default="runs/gemma-tinystories", help="run directory")
    parser.add_argument("--minutes", type=float, default=10.0, help="training time budget")
    args = parser.parse_args()

    cfg = train_preset("gemma-tinystories").for_run(data=args.data, out=args.out, max_minutes=args.minutes)
    model_dir = train(cfg)

    model = eqxllm.from_pretrained(model_dir)
    tokenizer = load_tokenizer(model_dir)
    prompt = "Once upon a time"
    new = eqxllm.generate(
        model,
        jnp.asarray(tokenizer.encode(prompt).ids),
        max_new_tokens=120,
        temperature=0.8,
        top_k=50,
        key=jax.random.key(0),
    )
    print(f"\n{prompt}{tokenizer.decode(new.tolist())}")


if __name__ == "__main__":  # a bad flag, file or network: one line, exit 2 (eqxllm.cli.guarded)
    from eqxllm.cli import guarded

    raise SystemExit(guarded("train_gemma_tinystories.py", main))
