"""Train a small Gemma 3-style model on TinyStories, then tell a story with it.

    python examples/train_gemma_tinystories.py --data path/to/TinyStories-train.txt   # or --data hub

Grouped-query attention, query/key norms, GeGLU and sliding-window layers, all at TinyStories scale
(the `gemma-tinystories` preset, about ten minutes on a 2-core CPU). The exported model is a
Hugging Face `gemma3_text` checkpoint: `transformers.AutoModelForCausalLM.from_pretrained(OUT/model)`.
An interrupted run continues with --resume.
"""

from _common import preset_run, run_parser, run_script, tell_stories

from eqxllm.train.loop import train


def main() -> None:
    args = run_parser(__doc__, out="runs/gemma-tinystories").parse_args()
    model_dir = train(preset_run("gemma-tinystories", args))
    tell_stories(model_dir, ["Once upon a time"], max_new_tokens=120)


if __name__ == "__main__":  # a bad flag, file or network: one line, exit 2 (eqxllm.cli.guarded)
    run_script("train_gemma_tinystories.py", main)
