"""``eqxllm plot RUN_DIR``: draw a run's loss curve (``RUN_DIR/loss.png``) from its metrics.jsonl."""


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="draw the loss curve of a training run", description=__doc__)
    p.add_argument("run_dir", help="a directory written by eqxllm train")
    p.add_argument(
        "--out", default=None, help="image file: .png, .pdf, .svg, ... (default RUN_DIR/loss.png; folders are created)"
    )
    p.set_defaults(func=lambda args: print(_plot(args)) or 0)


def _plot(args) -> str:
    from eqxllm.train.plot import plot_run

    return str(plot_run(args.run_dir, args.out))
