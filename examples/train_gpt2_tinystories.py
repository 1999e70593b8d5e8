"""Train a small GPT-2 on TinyStories, then tell a story with it.

    python examples/train_gpt2_tinystories.py                       # TinyStories from the Hugging Face Hub
    python examples/train_gpt2_tinystories.py --data path/to/TinyStories-train.txt   # a local file (offline)

About ten minutes on a 2-core CPU (the `gpt2-tinystories` preset); the model, its tokenizer, a loss
curve and logs land in --out. The same run from the command line: `eqxllm train --config gpt2-tinystories`.
An interrupted run continues with --resume.
"""

from _common import preset_run, run_parser, run_script, tell_stories

from eqxllm.train.loop import train


def main() -> None:
    args = run_parser(__doc__, out="runs/gpt2-tinystories").parse_args()
    model_dir = train(preset_run("gpt2-tinystories", args))
    tell_stories(model_dir, ["Once upon a time"], max_new_tokens=120)


if __name__ == "__main__":  # a bad flag, file or network: one line, exit 2 (eqxllm.cli.guarded)
    run_script("train_gpt2_tinystories.py", main)
