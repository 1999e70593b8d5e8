"""Train a small Llama (or, with --moe, a Mixtral-style mixture of experts) on TinyStories, then
continue a few prompts with it.

    python examples/train_llama_tinystories.py --data path/to/TinyStories-train.txt   # or --data hub
    python examples/train_llama_tinystories.py --moe --data ...                       # 8 experts, top-2

The `llama-tinystories` / `mixtral-tinystories` presets: grouped-query attention, SwiGLU (or a top-2
mixture of 8 SwiGLU experts, whose load-balancing loss is added to the training loss), about ten
minutes on a 2-core CPU. The exported model is a Hugging Face `llama` (or `mixtral`) checkpoint:
`transformers.AutoModelForCausalLM.from_pretrained(OUT/model)` loads it. An interrupted run
continues with --resume.
"""

from _common import preset_run, run_parser, run_script, tell_stories

from eqxllm.models.decoder import parameter_count
from eqxllm.train.loop import train

PROMPTS = ["Once upon a time", "Tom and Lily went to the park", "The little dog was sad because"]


def main() -> None:
    parser = run_parser(__doc__, out=None)
    parser.add_argument("--moe", action="store_true", help="the mixtral-tinystories preset")
    args = parser.parse_args()

    model_dir = train(preset_run("mixtral-tinystories" if args.moe else "llama-tinystories", args))
    model = tell_stories(model_dir, PROMPTS, max_new_tokens=80)
    print(f"\n{model.config.model_type}: {parameter_count(type(model), model.config):,} parameters")


if __name__ == "__main__":  # a bad flag, file or network: one line, exit 2 (eqxllm.cli.guarded)
    run_script("train_llama_tinystories.py", main)
