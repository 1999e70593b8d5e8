"""Train a T5-VAE on TinyStories sentences, then look at its latent space.

    python examples/train_t5_vae_tinystories.py --data ../shared/data/tinystories/TinyStories-train-prefix-2MiB.txt
    python examples/train_t5_vae_tinystories.py --data ... --skip-training     # only the figures, from --out
    python examples/train_t5_vae_tinystories.py --data ... --skip-training --method geodesic --refine-steps 300

Training is the `t5-vae-tinystories` preset (`eqxllm train --config t5-vae-tinystories` does the same);
an interrupted run continues with --resume. Flags are checked before training starts; --paths (against
the held-out sentences) and --method geodesic (against the training sentences) as soon as the run's
data and tokenizer are ready, before the model is built.

Afterwards the script evaluates the held-out sentences (the validation stories' sentences never seen
in training) in batches of 64. They are also written to OUT/heldout.txt, so that `eqxllm eval --model
OUT/model --data OUT/heldout.txt --batch-size 64 --json` gives the same figures (the MMD term compares
the codes of one batch with the prior, so `eqxllm eval`'s default batch of 8 gives another `mmd`).
It draws a PCA projection of their latents coloured by sentence length and by first word
(t5_vae_latents.png, into --figures, default OUT; it needs matplotlib, `pip install 'eqxllm[plot]'`,
and is skipped with that hint without it) and writes interpolations between held-out sentences
(OUT/t5_vae_interpolations.md, a markdown table; --paths 0: none). The training sentences go to
OUT/bank.txt, one per line: with ``--method geodesic`` the paths walk through their codes
(eqxllm.vae.geodesic), as ``eqxllm vae interpolate --method geodesic --bank OUT/bank.txt`` does;
``--refine-steps 300`` refines the codes of each path's two sentences until the decoder writes them
back (eqxllm.vae.refine).
"""

import argparse
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import preset_run, run_parser, run_script

import eqxllm
from eqxllm.checkpoints.atomic import check_destination
from eqxllm.data.sentences import whole_sentence
from eqxllm.errors import CheckpointError, ConfigError, InputError, MissingExtraError, require
from eqxllm.train.loop import train
from eqxllm.train.tasks.vae import VAETask
from eqxllm.vae import evaluate_sentences
from eqxllm.vae.text import build_bank, encode_rows, interpolate_texts

BANK_NEIGHBOURS = 16  # the geodesic bank's k (its graph's neighbours a code): it needs more sentences than that


def pca_figure(latents: np.ndarray, texts: list[str], lengths: np.ndarray, path: Path) -> None:
    """Two panels: the first two principal components of the flattened latents, coloured by length
    in tokens and by first word (the six most common; the rest grey)."""
    matplotlib = require("matplotlib", "plot", "the latent figure")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flat = latents.reshape(len(latents), -1)
    centred = flat - flat.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    explained = s[:2] ** 2 / np.sum(s**2)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    sc = axes[0].scatter(xy[:, 0], xy[:, 1], c=lengths, cmap="viridis", s=8)
    fig.colorbar(sc, ax=axes[0], label="sentence length (tokens)")
    axes[0].set_title("coloured by length")
    first = [t.split()[0].strip('"“,').capitalize() for t in texts]
    top = [w for w, _ in Counter(first).most_common(6)]
    grey = np.array([w not in top for w in first])
    axes[1].scatter(xy[grey, 0], xy[grey, 1], c="lightgrey", s=6, label="other")
    for w in top:
        pick = np.array([f == w for f in first])
        axes[1].scatter(xy[pick, 0], xy[pick, 1], s=8, label=w)
    axes[1].legend(markerscale=2, fontsize=8)
    axes[1].set_title("coloured by first word")
    for ax in axes:
        ax.set_xlabel(f"PC 1 ({explained[0]:.0%} of variance)")
        ax.set_ylabel(f"PC 2 ({explained[1]:.0%})")
    fig.suptitle(f"T5-VAE latents of {len(latents)} held-out TinyStories sentences (PCA)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def interpolation_table(pairs: list[tuple[str, str]], paths: list[list[str]]) -> str:
    """A markdown table: the two held-out sentences, then the sentence written at each point of the path
    (t = 0 and t = 1 are the reconstructions of the inputs)."""
    steps = len(paths[0])
    rows = ["| | " + " | ".join(f"path {i + 1}" for i in range(len(paths))) + " |", "|---" * (len(paths) + 1) + "|"]
    esc = lambda text: text.replace("|", "\\|")  # noqa: E731
    rows.append("| input a | " + " | ".join(f"*{esc(a)}*" for a, _ in pairs) + " |")
    for j in range(steps):
        rows.append(f"| t = {j / (steps - 1):.2f} | " + " | ".join(esc(p[j]) for p in paths) + " |")
    rows.append("| input b | " + " | ".join(f"*{esc(b)}*" for _, b in pairs) + " |")
    return "\n".join(rows) + "\n"


def parse_args() -> argparse.Namespace:
    """The flags, every one checked before any work (a bad value fails now, not after training)."""
    parser = run_parser(__doc__, out="runs/t5-vae-tinystories", minutes=None)
    parser.add_argument("--skip-training", action="store_true", help="use the model already in OUT/model")
    parser.add_argument("--figures", default=None, help="folder for the PNG (default: --out)")
    parser.add_argument("--paths", type=int, default=3, help="interpolations to write (default 3; 0: none)")
    parser.add_argument("--steps", type=int, default=7, help="points per interpolation (default 7)")
    parser.add_argument("--num-beams", type=int, default=4, help="beam search for the paths (default 4; 1: greedy)")
    parser.add_argument(
        "--method", choices=("slerp", "geodesic"), default="slerp",
        help="path shape (default slerp); geodesic: through the codes of the training sentences (OUT/bank.txt)",
    )  # fmt: skip
    parser.add_argument(
        "--refine-steps", type=int, default=0,
        help="refine the codes of each path's two sentences until they are written back (eqxllm.vae.refine)",
    )  # fmt: skip
    args = parser.parse_args()
    for flag, value, least, why in [
        ("--paths", args.paths, 0, ""),
        ("--steps", args.steps, 2, " (a path's two ends)"),
        ("--num-beams", args.num_beams, 1, ""),
        ("--refine-steps", args.refine_steps, 0, ""),
    ]:
        if value < least:
            raise ConfigError(f"{flag} must be >= {least}{why}, got {value}")
    if args.skip_training and args.resume:
        raise ConfigError("--skip-training and --resume contradict each other; pass one of them")
    model_dir = Path(args.out) / "model"
    if args.skip_training and not (model_dir / "config.json").is_file():
        raise ConfigError(f"--skip-training: {model_dir} holds no model; train first (drop --skip-training)")
    if args.figures is not None:
        try:  # below a file, or in a folder that cannot be written
            check_destination(Path(args.figures))
        except CheckpointError as e:
            raise ConfigError(f"--figures: {e}") from None
    return args


def sentence_check(args: argparse.Namespace) -> Callable[[VAETask], None]:
    """The flags that depend on the run's sentences, checked against a task (by ``train`` before it
    builds the model): --paths needs two held-out sentences a path, --method geodesic a bank of more
    than ``BANK_NEIGHBOURS`` distinct whole training sentences (before the trained model's own filter)."""

    def check(task: VAETask) -> None:
        held = len(task.validation)
        if 2 * args.paths > held:
            fewer = f"--paths {held // 2} or fewer" if held > 1 else "--paths 0"
            raise InputError(
                f"--paths {args.paths} needs {2 * args.paths} held-out sentences, the data gives {held}; "
                f"pass {fewer}, or more data"
            )
        if args.paths and args.method == "geodesic":
            bank = len({t for t in task.train.texts if whole_sentence(t)})
            if bank <= BANK_NEIGHBOURS:
                raise InputError(
                    f"--method geodesic needs more than {BANK_NEIGHBOURS} distinct training sentences for its "
                    f"bank, the data gives {bank}; use --method slerp or more data"
                )

    return check


def main() -> None:
    args = parse_args()
    try:  # said now, not after an hour of training
        require("matplotlib", "plot", "the latent figure")
        draw = True
    except MissingExtraError as e:  # the figure is optional; the rest of the script is not
        print(f"t5_vae_latents.png will not be drawn: {e}")
        draw = False
    cfg = preset_run("t5-vae-tinystories", args)
    out = Path(args.out)
    check = sentence_check(args)
    model_dir = out / "model" if args.skip_training else train(cfg, check_task=check)

    task = VAETask(cfg, out, progress=False)  # the run's tokenizer and the same held-out sentences
    check(task)  # with --skip-training, the first time
    model = eqxllm.from_pretrained(model_dir)
    heldout = task.validation
    (out / "heldout.txt").write_text("".join(f"{t}\n" for t in heldout.texts), encoding="utf-8")
    (out / "bank.txt").write_text("".join(f"{t}\n" for t in task.train.texts), encoding="utf-8")
    metrics = evaluate_sentences(model, heldout)  # batch_size=64: `eqxllm eval --batch-size 64` agrees
    print(json.dumps(metrics, indent=2))

    picture = (Path(args.figures) if args.figures else out) / "t5_vae_latents.png"
    if draw:
        picture.parent.mkdir(parents=True, exist_ok=True)
        pca_figure(encode_rows(model, heldout), list(heldout.texts), heldout.lengths - 1, picture)
        print(f"picture: {picture}")
    if args.paths == 0:
        return

    rng = np.random.default_rng(0)
    picks = rng.choice(len(heldout), size=(args.paths, 2), replace=False)
    pairs = [(heldout.texts[a], heldout.texts[b]) for a, b in picks]
    geodesic = args.method == "geodesic"
    bank = build_bank(model, task.tokenizer, task.train.texts, k=BANK_NEIGHBOURS) if geodesic else None
    paths = [
        interpolate_texts(
            model, task.tokenizer, a, b, args.steps,
            method=args.method, bank=bank, num_beams=args.num_beams, refine_steps=args.refine_steps,
        )
        for a, b in pairs
    ]  # fmt: skip
    table = interpolation_table(pairs, paths)
    (out / "t5_vae_interpolations.md").write_text(table, encoding="utf-8")
    print(table)
    print(f"table: {out / 't5_vae_interpolations.md'}")


if __name__ == "__main__":  # a bad flag, file or network: one line, exit 2 (eqxllm.cli.guarded)
    run_script("train_t5_vae_tinystories.py", main)
