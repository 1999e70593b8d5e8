"""The ``eqxllm`` command: one entry point, a subcommand per tool, ``--help`` on each.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` (which registers its
arguments and sets ``func``), so a new tool is one new file plus one line here.
"""

import argparse
import importlib
import sys

from eqxllm.errors import EqxllmError

# subcommand name -> module under eqxllm.cli
SUBCOMMANDS = {
    "train": "eqxllm.cli.train",
    "convert": "eqxllm.cli.convert",
    "generate": "eqxllm.cli.generate",
    "eval": "eqxllm.cli.eval",
    "plot": "eqxllm.cli.plot",
    "vae": "eqxllm.cli.vae",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eqxllm", description="Train, convert, evaluate and sample language models built with Equinox."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "takes_rest", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    try:
        return int(args.func(args) or 0)
    except EqxllmError as e:  # bad input: one clear line, no traceback
        print(f"eqxllm {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
