"""How often do T5-VAE interpolation paths stay made of real words, per decoding setting?

For ``--pairs`` pairs of held-out sentences (a fixed draw), the slerp path of ``--steps`` points
(per latent token) is decoded greedily, by beam search and with the decoder's language model fused
in (``prior_weight``, for a model trained with ``code_dropout``). A point counts as *well-formed* when
each of its words (letters and apostrophes, lower-cased) occurs in the training text: subword
crossovers such as "Annaing" or "enormousff" fail; grammar is not checked, so the figure is an upper
bound on how many points read as sentences. A stricter check, *attested*, asks that every pair of
adjacent words (and the first word after a sentence start) also occurs in the training text: "did
not his" fails it where "did not see" passes. Real held-out sentences do not all pass it either (the
text is only 2 MiB), so the first line prints their own rate, the ceiling. It prints, per setting,
the share of well-formed and attested points (all, and the interior ones), of paths whose every
point is attested, of path ends that are exactly the sentence they encode (the cost of leaning on
the language model), and of interior points that only repeat one end's sentence (a path that jumps
from one sentence to the other scores high there: attested, but no sentence in between);
``--show N`` prints the first N paths. A setting is ``num_beams:prior_weight``, or
``num_beams:0:lm_weight`` to rerank the pooled beams of each path with the language model of
``--lm`` (``benchmarks/_vae_lab.py``; so is the fusion of ``prior_weight``).

    PYTHONPATH=. python benchmarks/vae_paths.py --model runs/t5-vae-tinystories \\
        --train ../shared/data/tinystories/TinyStories-train-prefix-2MiB.txt
"""

import argparse
import re
import time
from pathlib import Path

import numpy as np

WORD = re.compile(r"[a-z']+")


def words(text: str) -> list[str]:
    return [w.strip("'") for w in WORD.findall(text.lower()) if w.strip("'")]


def bigrams(text: str) -> list[tuple[str, str]]:
    """Adjacent word pairs of one sentence, the first with a start marker."""
    ws = ["<s>", *words(text)]
    return list(zip(ws, ws[1:]))


def sentence_bigrams(text: str) -> set[tuple[str, str]]:
    """Every adjacent word pair of the sentences of ``text`` (split at . ! ? and line breaks)."""
    seen: set[tuple[str, str]] = set()
    for sentence in re.split(r"[.!?\n]+", text):
        seen.update(bigrams(sentence))
    return seen


class TextChecks:
    """The two measures against a training text: *well-formed* (every word occurs in it) and
    *attested* (besides, every pair of adjacent words, and the first word after a sentence start)."""

    def __init__(self, text: str):
        self.vocab, self.pairs = set(words(text)), sentence_bigrams(text)

    def well_formed(self, s: str) -> bool:
        return bool(words(s)) and all(w in self.vocab for w in words(s))

    def attested(self, s: str) -> bool:
        return self.well_formed(s) and all(pair in self.pairs for pair in bigrams(s))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a T5-VAE run directory (model/, tokenizer.json, heldout.txt)")
    p.add_argument("--train", required=True, help="the training text, for the vocabulary of real words")
    p.add_argument("--heldout", default=None, help="held-out sentences, one per line (default: MODEL/heldout.txt)")
    p.add_argument("--pairs", type=int, default=30)
    p.add_argument("--steps", type=int, default=7)
    p.add_argument(
        "--settings", default="1:0,8:0,1:0.5,8:0.5,8:1", help="num_beams:prior_weight[:lm_weight], comma-separated"
    )
    p.add_argument("--show", type=int, default=0, help="print this many whole paths per setting")
    p.add_argument(
        "--lm",
        default=None,
        help="a decoder-only language model directory (with its tokenizer), for num_beams:0:lm_weight settings",
    )
    args = p.parse_args()

    from _vae_lab import decode_fused, interpolate_reranked, latent_path

    import eqxllm
    from eqxllm.data.tokenizer import load_tokenizer
    from eqxllm.vae.text import interpolate_texts

    run = Path(args.model)
    model = eqxllm.from_pretrained(run / "model")
    tok = load_tokenizer(run)
    checks = TextChecks(Path(args.train).read_text(encoding="utf-8"))
    well_formed, attested = checks.well_formed, checks.attested
    heldout = Path(args.heldout or run / "heldout.txt").read_text(encoding="utf-8").splitlines()
    picks = np.random.default_rng(0).choice(len(heldout), size=(args.pairs, 2), replace=False)
    settings = [
        (int(b), float(w), float(lw[0]) if lw else None)
        for b, w, *lw in (s.split(":") for s in args.settings.split(","))
    ]
    if not getattr(model.config, "code_dropout", 0):  # a model trained before code dropout left the library
        settings = [s for s in settings if s[1] == 0]
    lm = lm_tok = None
    if any(s[2] is not None for s in settings):
        if args.lm is None:
            p.error("a num_beams:0:lm_weight setting needs --lm")
        lm, lm_tok = eqxllm.from_pretrained(args.lm), load_tokenizer(args.lm)

    ceiling = np.mean([attested(s) for s in heldout])
    print(f"{run}: {args.pairs} held-out pairs, {args.steps}-point slerp paths, {len(checks.vocab)} known words")
    print(f"held-out sentences themselves: {ceiling:.1%} attested")
    print(
        "beams  prior_weight  lm_weight  well-formed  interior  attested  interior  attested paths  exact ends  "
        "interior = an end  seconds"
    )
    for beams, weight, lm_weight in settings:
        start = time.perf_counter()

        def path(a: str, b: str, beams=beams, weight=weight, lm_weight=lm_weight) -> list[str]:
            if lm_weight is not None:
                return interpolate_reranked(
                    model, tok, a, b, args.steps, lm, lm_tok, lm_weight=lm_weight, num_beams=beams
                )
            if weight > 0:
                return decode_fused(
                    model, tok, latent_path(model, tok, a, b, args.steps), prior_weight=weight, num_beams=beams
                )
            return interpolate_texts(model, tok, a, b, args.steps, num_beams=beams)

        paths = [path(heldout[a], heldout[b]) for a, b in picks]
        seconds = time.perf_counter() - start
        ends = np.mean([[p[0] == heldout[a], p[-1] == heldout[b]] for p, (a, b) in zip(paths, picks)])
        ok = np.array([[well_formed(s) for s in path] for path in paths])
        att = np.array([[attested(s) for s in path] for path in paths])
        repeats = np.mean([[s in (p[0], p[-1]) for s in p[1:-1]] for p in paths])
        print(
            f"{beams:5d}  {weight:12.2f}  {'-' if lm_weight is None else f'{lm_weight:.2f}':>9}  {ok.mean():11.1%}  "
            f"{ok[:, 1:-1].mean():8.1%}  {att.mean():8.1%}  {att[:, 1:-1].mean():8.1%}  "
            f"{att.all(axis=1).mean():14.1%}  {ends:10.1%}  {repeats:17.1%}  {seconds:7.1f}"
        )
        for path, (a, b) in list(zip(paths, picks))[: args.show]:
            print(f"    {heldout[a]!r} -> {heldout[b]!r}")
            for i, s in enumerate(path):
                print(f"      {i / (len(path) - 1):.2f} {s}")


if __name__ == "__main__":
    main()
