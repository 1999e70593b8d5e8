"""The ``eqxllm`` command: one entry point, a subcommand per tool, ``--help`` on each.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` (which registers its
arguments and sets ``func``), so a new tool is one new file plus one line here.

Exit codes: 0 success; 2 a user error (bad flag, bad file, bad value), printed as one line without a
traceback; 1 a bug in eqxllm, printed with its traceback and a line saying it is a bug.
"""

import argparse
import difflib
import importlib
import re
import sys
import traceback
from collections.abc import Callable

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


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``eqxllm eval: error: ...``, then exit 2 (no usage block)."""

    def error(self, message: str):  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="eqxllm", description="Train, convert, evaluate and sample language models built with Equinox."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for name, module in SUBCOMMANDS.items():
        importlib.import_module(module).add_parser(sub)
    return parser


def _subparser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The deepest subparser the arguments selected (``eqxllm vae encode``'s, not ``eqxllm``'s)."""
    current = parser
    for dest in ("command", "action"):
        actions = [a for a in current._actions if isinstance(a, argparse._SubParsersAction) and a.dest == dest]
        if not actions or getattr(args, dest, None) is None:
            break
        current = actions[0].choices[getattr(args, dest)]
    return current


def _unknown(sub: argparse.ArgumentParser, rest: list[str]) -> str:
    """``unrecognized arguments: --top_k (did you mean --top-k?)``."""
    flags = [s for a in sub._actions for s in a.option_strings]
    hints = []
    for arg in rest:
        name = arg.split("=", 1)[0]
        if name.startswith("-"):
            close = difflib.get_close_matches(name.replace("_", "-"), flags, n=1, cutoff=0.6)
            if close:
                hints.append(f"{name}: did you mean {close[0]}?")
    return f"unrecognized arguments: {' '.join(rest)}" + (f" ({'; '.join(hints)})" if hints else "")


def user_error_message(e: BaseException) -> str | None:
    """The one-line message of a user error, or None for a bug.

    Besides :class:`EqxllmError`, a check that fires inside compiled code (``eqx.error_if`` under
    ``jax.jit``, e.g. a token id beyond the vocabulary) reaches us as a runtime error whose text buries
    the check's message in a callback traceback: the message is dug out and shown alone.
    """
    if isinstance(e, EqxllmError):
        return " ".join(str(e).split("\n"))
    if isinstance(e, RuntimeError):
        found = re.search(r"EquinoxRuntimeError: (.+)", str(e))
        if found:
            return found[1].strip()
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        args, rest = parser.parse_known_args(argv)
        if rest and not getattr(args, "takes_rest", False):
            sub = _subparser(parser, args)
            sub.error(_unknown(sub, rest))
    except SystemExit as e:  # --help (0) or a one-line usage error (2)
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    args.rest = rest
    return guarded(f"eqxllm {args.command}", lambda: args.func(args))


def guarded(name: str, run: Callable[[], int | None]) -> int:
    """Run ``run()`` as a command named ``name`` and return its exit status: 0 (or what it returns)
    on success, 2 with one line ``NAME: error: ...`` for a user error, 1 with the traceback and a
    line saying it is a bug for anything else. Scripts use it too (``examples/``):
    ``raise SystemExit(guarded("train_gpt2_tinystories.py", main))``."""
    try:
        return int(run() or 0)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # argparse's and tyro's own usage errors (they printed them)
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    except Exception as e:
        message = user_error_message(e)
        if message is not None:  # bad input: one clear line, no traceback
            print(f"{name}: error: {message}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(
            f"{name}: this is a bug in eqxllm ({type(e).__name__}), not a problem with your input; "
            "please report it with the traceback above",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
