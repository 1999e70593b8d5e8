"""The loss curve of a run, drawn from its ``metrics.jsonl`` (``eqxllm plot RUN_DIR``)."""

from pathlib import Path

from eqxllm.errors import DataError, require
from eqxllm.train.metrics import read_metrics


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``loss.png``: training loss per logged step and validation loss per evaluation.

    Needs matplotlib (``pip install 'eqxllm[plot]'``)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise DataError(f"{run}: no such run directory; pass the --out folder of an eqxllm train run")
    if not (run / "metrics.jsonl").is_file():
        raise DataError(f"{run} has no metrics.jsonl; it is not an eqxllm train run directory (or it never logged)")
    matplotlib = require("matplotlib", "plot", "drawing the loss curve")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    path = Path(out) if out is not None else run / "loss.png"
    fig.savefig(path)
    plt.close(fig)
    return path
