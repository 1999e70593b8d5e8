"""Train a small T5 to continue TinyStories: the first half of a story in, the second half out.

    python examples/train_t5_tinystories.py --data path/to/TinyStories-train.txt   # or --data hub

T5 v1.1 style (gated GELU, relative positions, untied head) at TinyStories scale: the
`t5-tinystories` preset, about ten minutes on a 2-core CPU. The exported model is a Hugging Face
T5 checkpoint: `transformers.T5ForConditionalGeneration.from_pretrained(OUT/model)`. An interrupted
run continues with --resume.
"""

from _common import preset_run, run_parser, run_script, tell_stories

from eqxllm.train.loop import train

FIRST_HALF = "Once upon a time, there was a little dog named Max. Max loved to play with his red ball."


def main() -> None:
    args = run_parser(__doc__, out="runs/t5-tinystories").parse_args()
    model_dir = train(preset_run("t5-tinystories", args))
    tell_stories(model_dir, [FIRST_HALF], max_new_tokens=80, sample=False, joiner=" => ")


if __name__ == "__main__":  # a bad flag, file or network: one line, exit 2 (eqxllm.cli.guarded)
    run_script("train_t5_tinystories.py", main)
