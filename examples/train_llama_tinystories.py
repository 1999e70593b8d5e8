"""Train a small Llama (or, with --moe, a Mixtral-style mixture of experts) on TinyStories, then
continue a few prompts with it.

    python examples/train_llama_tinystories.py --data path/to/TinyStories-train.txt   # or --data hub
    python examples/train_llama_tinystories.py --moe --data ...                       # 8 experts, top-2

The `llama-tinystories` / `mixtral-tinystories` presets: grouped-query attention, SwiGLU (or a top-2
mixture of 8 SwiGLU experts, whose load-balancing loss is added to the training loss), about ten
minutes on a 2-core CPU. The exported model is a Hugging Face `llama` (or `mixtral`) checkpoint:
`transformers.AutoModelForCausalLM.from_pretrained(OUT/model)` loads it.
"""

import argparse

import jax

import eqxllm
from eqxllm.data import load_tokenizer
from eqxllm.models.decoder import parameter_count
from eqxllm.train import train_preset
from eqxllm.train.loop import train

PROMPTS = ["Once upon a time", "Tom and Lily went to the park", "The little dog was sad because"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="hub", help="'hub' (default), a text file or a folder of them")
    parser.add_argument("--moe", action="store_true", help="the mixtral-tinystories preset")
    parser.add_argument("--out", default=None, help="run directory (default: the preset's)")
    parser.add_argument("--minutes", type=float, default=10.0, help="training time budget")
    args = parser.parse_args()

    preset = train_preset("mixtral-tinystories" if args.moe else "llama-tinystories")
    cfg = preset.for_run(data=args.data, out=args.out, max_minutes=args.minutes)
    model_dir = train(cfg)

    model = eqxllm.from_pretrained(model_dir)
    print(f"{model.config.model_type}: {parameter_count(type(model), model.config):,} parameters")
    tokenizer = load_tokenizer(model_dir)
    prompts = [tokenizer.encode(p).ids for p in PROMPTS]  # left-padded together by generate
    new = eqxllm.generate(model, prompts, max_new_tokens=80, temperature=0.8, top_k=50, key=jax.random.key(0))
    for prompt, tokens in zip(PROMPTS, new.tolist(), strict=True):
        print(f"\n{prompt}{tokenizer.decode(tokens)}")


if __name__ == "__main__":
    main()
