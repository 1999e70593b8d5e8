"""``eqxllm vae``: a trained T5-VAE's latent space from the command line.

    eqxllm vae interpolate --model DIR --a "Tom saw a dog." --b "Lily ate an apple." --steps 7
    eqxllm vae interpolate --model DIR --a ... --b ... --num-beams 4
    eqxllm vae interpolate --model DIR --a ... --b ... --method geodesic --bank sentences.txt [--bank-k 16]
    eqxllm vae interpolate --model DIR --a ... --b ... [--method geodesic --bank ...] --refine-steps 300
    eqxllm vae encode --model DIR --input sentences.txt --output latents.npy [--refine-steps 300]
    eqxllm vae decode --model DIR --input latents.npy [--output sentences.txt]
    eqxllm vae sample --model DIR --num 5 [--seed 0] [--fit sentences.txt]

``encode`` reads one sentence per line (row ``i`` of the output is line ``i``: a blank line before
the last sentence is refused) and writes ``[n, latent_tokens, latent]`` float32 latents (the
posterior means) with ``numpy.save``; ``--num-beams`` decodes by beam search instead of greedily;
``interpolate --method geodesic`` walks from one sentence to the other
through the codes of the sentences of ``--bank`` (one per line, such as the training sentences), so
that every point on the way is a real sentence's code (``eqxllm.vae.geodesic``; bank sentences
whose code does not write them back are left out unless ``--bank-inexact``); ``--refine-steps``
refines a sentence's code by gradient steps until the decoder writes the sentence back
(``eqxllm.vae.refine``), so that a path starts and ends on the given sentences; ``decode`` writes
one sentence per latent (greedy), to the output file or to stdout; ``sample`` decodes draws from
the N(0, I) prior or, with ``--fit FILE``, from a Gaussian fitted to the codes of the sentences of
FILE (``eqxllm.vae.latent_fit``: a trained model's codes do not fill the prior, and most prior draws
decode to empty sentences). The tokenizer is the one saved beside the model.
"""

import argparse
import io
import sys
from pathlib import Path

import numpy as np

from eqxllm.cli._numbers import seed
from eqxllm.errors import DataError, InputError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "vae", help="encode, decode and interpolate sentences with a T5-VAE", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help: str, writes: bool = True) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help, description=help)
        a.add_argument("--model", required=True, help="T5-VAE directory or Hub id (with its tokenizer)")
        if writes:
            a.add_argument(
                "--num-beams", type=int, default=1, help="beam search with this many beams (default 1: greedy)"
            )
        return a

    a = action("interpolate", "print the sentences along the latent path between two sentences")
    a.add_argument("--a", required=True, help="the first sentence")
    a.add_argument("--b", required=True, help="the last sentence")
    a.add_argument("--steps", type=int, default=7, help="points on the path, both ends included (default 7)")
    a.add_argument(
        "--method", choices=("slerp", "linear", "geodesic"), default="slerp",
        help="path shape (default slerp); geodesic: the shortest path through the codes of --bank",
    )  # fmt: skip
    a.add_argument(
        "--bank", default=None, help="UTF-8 text file, one sentence per line: the sentences a geodesic path "
        "walks through (such as the training sentences)",
    )  # fmt: skip
    a.add_argument("--bank-k", type=int, default=16, help="neighbours a code in the geodesic's graph (default 16)")
    a.add_argument(
        "--bank-inexact", action="store_true", help="keep the bank sentences whose code does not reconstruct them "
        "(default: left out, so that every interior point is written back as its bank sentence)",
    )  # fmt: skip
    _refine_option(a, "the codes of --a and --b")
    a.add_argument(
        "--all-tokens", action="store_true", help="slerp the whole code as one vector (default: per latent token)"
    )
    a = action("encode", "sentences (one per line) -> latents (.npy)", writes=False)
    a.add_argument("--input", required=True, help="UTF-8 text file, one sentence per line")
    a.add_argument("--output", required=True, help=".npy file to write")
    _refine_option(a, "each code")
    a = action("decode", "latents (.npy) -> sentences")
    a.add_argument("--input", required=True, help=".npy file of [n, latent_tokens, latent] latents")
    a.add_argument("--output", default=None, help="text file to write (default: stdout)")
    a = action("sample", "sentences written from latent draws: N(0, I), or a Gaussian fitted to real codes")
    a.add_argument("--num", type=int, default=5, help="how many (default 5)")
    a.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    a.add_argument(
        "--fit", default=None, help="UTF-8 text file, one sentence per line: draw from a Gaussian fitted to their "
        "codes (a mean and a standard deviation per dimension) instead of N(0, I)",
    )  # fmt: skip
    p.set_defaults(func=run)


def _refine_option(a: argparse.ArgumentParser, what: str) -> None:
    a.add_argument(
        "--refine-steps", type=int, default=0, help=f"refine {what} by at most this many gradient steps on the "
        "reconstruction loss, until each reconstructs its sentence (eqxllm.vae.refine; default 0: the encoder's code)",
    )  # fmt: skip


def _with_tokenizer(src: str):
    """The model in ``src`` (a directory or Hub id) and the tokenizer saved beside it."""
    from eqxllm.checkpoints import from_pretrained
    from eqxllm.checkpoints.hub import resolve_pretrained
    from eqxllm.train.tokenizer_source import saved_tokenizer

    directory = resolve_pretrained(src)
    return from_pretrained(directory), saved_tokenizer(directory, flag="--model")


def _load(model_src: str):
    from eqxllm.models.t5_vae import T5VAE

    model, tokenizer = _with_tokenizer(model_src)
    if not isinstance(model, T5VAE):
        raise InputError(f"{model_src} holds a {type(model).__name__}; `eqxllm vae` needs a T5-VAE (model_type t5_vae)")
    return model, tokenizer


def _output(args: argparse.Namespace) -> Path | None:
    """The file ``--output`` names (``encode``: ``.npy`` added when it has no suffix, as numpy would),
    checked before the model loads: not a folder, below no file."""
    from eqxllm.checkpoints.atomic import check_file_destination

    if getattr(args, "output", None) is None:
        return None
    path = Path(args.output)
    if args.action == "encode":
        if not path.suffix:
            path = path.with_name(f"{path.name}.npy")
        if path.suffix != ".npy":
            raise InputError(f"--output {path}: latents are written as a NumPy array; name a .npy file")
    check_file_destination(path)
    return path


def _write_lines(lines: list[str], output: Path | None) -> None:
    from eqxllm.checkpoints.atomic import write_file

    text = "".join(f"{line}\n" for line in lines)
    if output is None:
        sys.stdout.write(text)
    else:
        write_file(output, text.encode("utf-8"))
        print(f"wrote {len(lines)} sentences to {output}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    import jax

    from eqxllm.vae.text import build_bank, decode_latents, encode_texts, interpolate_texts

    output = _output(args)
    model, tokenizer = _load(args.model)
    if args.action == "interpolate":
        if (args.method == "geodesic") != (args.bank is not None):
            raise InputError("--method geodesic walks through the sentences of --bank: give both or neither")
        bank = None
        if args.bank is not None:
            lines = _read_lines(args.bank)
            bank = build_bank(model, tokenizer, lines, k=args.bank_k, exact=not args.bank_inexact)
        path = interpolate_texts(
            model, tokenizer, args.a, args.b, args.steps, method=args.method, per_token=not args.all_tokens,
            bank=bank, num_beams=args.num_beams, refine_steps=args.refine_steps,
        )  # fmt: skip
        for i, text in enumerate(path):
            print(f"{i / (len(path) - 1):.2f}  {text}")
    elif args.action == "encode":
        lines = _read_lines(args.input, aligned=True)
        from eqxllm.checkpoints.atomic import write_file

        assert output is not None  # --output is required for encode
        array = io.BytesIO()
        np.save(array, encode_texts(model, tokenizer, lines, refine_steps=args.refine_steps))
        print(f"wrote {len(lines)} latents to {write_file(output, array.getvalue())}", file=sys.stderr)
    elif args.action == "decode":
        latents = _read_latents(args.input)
        _write_lines(decode_latents(model, tokenizer, latents, num_beams=args.num_beams), output)
    else:
        if args.num < 1:
            raise InputError(f"--num must be >= 1, got {args.num}")
        key = jax.random.key(args.seed)
        if args.fit is None:
            cfg = model.config
            z = jax.random.normal(key, (args.num, cfg.n_latent_tokens, cfg.latent_size))
        else:
            from eqxllm.vae.latent_fit import fit_latent_gaussian, sample_latents

            z = sample_latents(
                key, fit_latent_gaussian(encode_texts(model, tokenizer, _read_lines(args.fit))), args.num
            )
        _write_lines(decode_latents(model, tokenizer, z, num_beams=args.num_beams), None)
    return 0


def _read_lines(path: str, *, aligned: bool = False) -> list[str]:
    """The non-empty lines of a UTF-8 text file, stripped. With ``aligned`` (row ``i`` of the output is
    line ``i``) a blank line before the last sentence raises :class:`DataError` naming it; blank lines
    at the end are dropped."""
    from eqxllm.train.text_eval import read_utf8

    lines = [line.strip() for line in read_utf8(path).splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    blank = next((i for i, line in enumerate(lines) if not line), None)
    if aligned and blank is not None:
        raise DataError(
            f"line {blank + 1} of {path} is blank; row i of the latents is the sentence of line i: remove the line "
            "or put a sentence on it"
        )
    return [line for line in lines if line]


def _read_latents(path: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"latent file {p} does not exist")
    try:
        latents = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{p} is not a .npy array file: {e}") from e
    if latents.ndim == 2:
        latents = latents[None]
    if latents.ndim != 3 or not np.issubdtype(latents.dtype, np.floating):
        raise DataError(
            f"{p} holds a {latents.dtype} array of shape {latents.shape}; expected float [n, tokens, latent]"
        )
    if not np.isfinite(latents).all():  # they would decode to nothing, and exit 0
        first = tuple(int(i) for i in np.argwhere(~np.isfinite(latents))[0])
        raise DataError(f"{p} holds non-finite values (NaN or inf), the first at index {first}; encode the texts again")
    return latents
