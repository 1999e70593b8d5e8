"""Do T5-VAE interpolation paths read as sentences? A reading, made reproducible.

The attested measure of ``benchmarks/vae_paths.py`` checks words and word pairs, not grammar. This
script keeps a person's reading instead, sentence by sentence, in a labels file
(``benchmarks/vae_reading_labels.json``: ``reads`` and ``does_not_read``), so that a run is scored
against the same judgments, and only sentences never read before need a reader.

    # the paths of --pairs held-out pairs (a fixed draw), reranked by a judge (benchmarks/_vae_lab.py)
    PYTHONPATH=. python benchmarks/vae_reading.py paths --model runs/t5-vae-tinystories --lm JUDGE --out paths.json
    # geodesic paths through the exact bank, ends refined, greedy (no judge)
    PYTHONPATH=. python benchmarks/vae_reading.py paths --model runs/t5-vae-tinystories --method geodesic \
        --refine-steps 300 --out geo.json
    # the sentences of those paths that the labels do not cover, shuffled, one per line, for reading
    PYTHONPATH=. python benchmarks/vae_reading.py unread paths.json
    # the share of paths whose every point reads (a sentence without a label is an error)
    PYTHONPATH=. python benchmarks/vae_reading.py score paths.json

A path's two given sentences count as read, whatever the labels say; a path end that differs from its
sentence (a reconstruction that changed it) is read like any other point.
"""

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

LABELS = Path(__file__).with_name("vae_reading_labels.json")


def novel(path: dict) -> list[str]:
    """The points of one path that are neither of its two given sentences."""
    return [s for s in path["path"] if s not in (path["a"], path["b"])]


def make_paths(args) -> None:
    from _vae_lab import interpolate_reranked

    import eqxllm
    from eqxllm.data.tokenizer import load_tokenizer
    from eqxllm.vae.text import interpolate_texts

    run = Path(args.model)
    model, tok = eqxllm.from_pretrained(run / "model"), load_tokenizer(run)
    heldout = (run / "heldout.txt").read_text(encoding="utf-8").splitlines()
    options = {"method": args.method, "refine_steps": args.refine_steps}
    decode = interpolate_texts
    if args.lm is not None:
        lm, lm_tok = eqxllm.from_pretrained(args.lm), load_tokenizer(args.lm)

        def decode(model, tok, a, b, steps, **options):
            return interpolate_reranked(model, tok, a, b, steps, lm, lm_tok, lm_weight=args.lm_weight, **options)

    if args.method == "geodesic":
        from eqxllm.train.config import load_config_file
        from eqxllm.train.tasks.vae import VAETask
        from eqxllm.vae.text import build_bank

        task = VAETask(load_config_file(run / "run_config.json"), run, progress=False)  # the run's training split
        options["bank"] = build_bank(model, tok, task.train.texts, k=args.bank_k, exact=not args.bank_inexact)
    picks = np.random.default_rng(args.seed).choice(len(heldout), size=(args.pairs, 2), replace=False)
    paths = [
        {"a": heldout[a], "b": heldout[b], "path": decode(model, tok, heldout[a], heldout[b], args.steps, **options)}
        for a, b in picks
    ]  # fmt: skip
    Path(args.out).write_text(json.dumps(paths, indent=1, ensure_ascii=False), encoding="utf-8")
    print(f"{len(paths)} paths of {args.steps} points -> {args.out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    make = sub.add_parser("paths", help="decode the paths of a run")
    make.add_argument("--model", required=True, help="a T5-VAE run directory (model/, tokenizer.json, heldout.txt)")
    make.add_argument(
        "--lm", default=None, help="the judge that reranks each path: a decoder-only language model directory "
        "(default: none, greedy decoding)",
    )  # fmt: skip
    make.add_argument("--lm-weight", type=float, default=0.25)
    make.add_argument("--pairs", type=int, default=90)
    make.add_argument("--seed", type=int, default=0, help="the draw of the pairs of held-out sentences")
    make.add_argument("--steps", type=int, default=7)
    make.add_argument("--method", choices=("slerp", "linear", "geodesic"), default="slerp")
    make.add_argument("--bank-k", type=int, default=16, help="neighbours a code in the geodesic's graph")
    make.add_argument("--bank-inexact", action="store_true", help="keep bank sentences their codes do not write back")
    make.add_argument("--refine-steps", type=int, default=0, help="refine the ends' codes (eqxllm.vae.refine)")
    make.add_argument("--out", required=True)
    for name in ("unread", "score"):
        cmd = sub.add_parser(name)
        cmd.add_argument("paths", nargs="+", help="files written by the paths command")
        cmd.add_argument("--labels", default=str(LABELS))
    args = p.parse_args()
    if args.command == "paths":
        return make_paths(args)

    labels = json.loads(Path(args.labels).read_text(encoding="utf-8"))
    reads, not_read = set(labels["reads"]), set(labels["does_not_read"])
    if reads & not_read:
        sys.exit(f"{args.labels}: {len(reads & not_read)} sentences are labelled both ways")
    runs = {f: json.loads(Path(f).read_text(encoding="utf-8")) for f in args.paths}
    seen = {s for paths in runs.values() for path in paths for s in novel(path)}
    unread = sorted(seen - reads - not_read)
    if args.command == "unread":
        random.Random(0).shuffle(unread)  # no order that tells which run wrote a sentence
        if unread:
            print("\n".join(unread))
        return None
    if unread:
        sys.exit(f"{len(unread)} sentences have no label yet: list them with the unread command")
    print("paths                           read at every point  interior points read  ends read  exact ends")
    for f, paths in runs.items():
        whole = np.mean([not any(s in not_read for s in novel(path)) for path in paths])
        interior = np.mean([s not in not_read for path in paths for s in path["path"][1:-1]])
        ends = np.mean([s not in not_read for path in paths for s in (path["path"][0], path["path"][-1])])
        exact = np.mean([[path["path"][0] == path["a"], path["path"][-1] == path["b"]] for path in paths])
        print(f"{f:30s}  {whole:19.1%}  {interior:20.1%}  {ends:9.1%}  {exact:10.1%}   ({len(paths)} paths)")
    return None


if __name__ == "__main__":
    main()
