"""The loss curve of a run, drawn from its ``metrics.jsonl`` (``eqxllm plot RUN_DIR``)."""

import io
from pathlib import Path

from eqxllm.checkpoints.atomic import check_file_destination, write_file
from eqxllm.errors import DataError, InputError, require
from eqxllm.train.metrics import read_metrics


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``loss.png`` (or ``out``): training loss per logged step and validation loss per
    evaluation; returns the path written.

    ``out``'s suffix picks the format (``.png``, ``.pdf``, ``.svg``, ...; none: ``.png`` is added);
    missing parent folders are created and the file appears whole or not at all. Needs matplotlib
    (``pip install 'eqxllm[plot]'``)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise DataError(f"{run}: no such run directory; pass the --out folder of an eqxllm train run")
    if not (run / "metrics.jsonl").is_file():
        raise DataError(f"{run} has no metrics.jsonl; it is not an eqxllm train run directory (or it never logged)")
    matplotlib = require("matplotlib", "plot", "drawing the loss curve")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(out) if out is not None else run / "loss.png"
    if not path.suffix:  # what matplotlib would do, said here so that the path returned is the one written
        path = path.with_name(f"{path.name}.png")
    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix[1:].lower() not in formats:
        supported = ", ".join(f".{f}" for f in sorted(formats))
        raise InputError(
            f"cannot draw the loss curve as {path}: {path.suffix!r} is not an image format; use {supported}"
        )
    check_file_destination(path)

    rows = read_metrics(run)
    train = [(r["step"], r["loss"]) for r in rows if r["kind"] == "train"]
    val = [(r["step"], r["val_loss"]) for r in rows if r["kind"] == "eval"]
    if not train and not val:
        raise DataError(f"{run / 'metrics.jsonl'} holds no training or evaluation rows to plot")
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1.2)
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(run.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format=path.suffix[1:].lower())
    plt.close(fig)
    return write_file(path, image.getvalue())
