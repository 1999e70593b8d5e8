"""How many held-out sentences does a T5-VAE write back, from the encoder's codes and from refined ones?

Reads the held-out sentences of a run (``RUN/heldout.txt``, as the example writes it), encodes them,
and refines every code by at most ``--steps`` Adam steps on its reconstruction loss
(:func:`eqxllm.vae.refine.refine_latents`). Prints, for the encoder's codes and for the refined ones:
the share of sentences whose code reconstructs them exactly by the teacher-forced margin, the share
that greedy decoding writes back word for word (the check of the first), and for the codes that
refinement moved (those that did not reconstruct at the start) the steps taken and how far they
moved relative to their norm, and the time.

    PYTHONPATH=. python benchmarks/vae_refine.py --model runs/t5-vae-tinystories [--steps 300] [--lr 0.1]
"""

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a T5-VAE run directory (model/, tokenizer.json, heldout.txt)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--margin", type=float, default=0.5)
    args = p.parse_args()

    import eqxllm
    from eqxllm.data.tokenizer import load_tokenizer
    from eqxllm.vae.refine import reconstructs, refine_latents
    from eqxllm.vae.text import decode_latents, encode_rows, tokenize

    run = Path(args.model)
    model, tok = eqxllm.from_pretrained(run / "model"), load_tokenizer(run)
    heldout = (run / "heldout.txt").read_text(encoding="utf-8").splitlines()
    data = tokenize(model, tok, heldout, strict=False)
    codes = encode_rows(model, data)
    targets = [tok.decode(list(ids[: n - 1])) for ids, n in zip(data.ids, data.lengths)]

    def written_back(latents) -> float:
        return float(np.mean([a == b for a, b in zip(decode_latents(model, tok, latents), targets)]))

    refine_latents(model, data.take(range(min(64, len(data)))), codes[:64], steps=1)  # compile outside the clock
    t0 = time.perf_counter()
    done = refine_latents(model, data, codes, steps=args.steps, learning_rate=args.lr, margin=args.margin)
    seconds = time.perf_counter() - t0
    moved = np.linalg.norm((done.latents - codes).reshape(len(codes), -1), axis=1)
    norm = np.linalg.norm(codes.reshape(len(codes), -1), axis=1)
    print(f"{len(data)} held-out sentences of {run} ({data.dropped} too long, left out)")
    print("codes            exact (margin > 0)  written back (greedy)")
    print(f"encoder          {reconstructs(model, data, codes).mean():18.1%}  {written_back(codes):21.1%}")
    print(
        f"refined          {reconstructs(model, data, done.latents).mean():18.1%}  {written_back(done.latents):21.1%}"
    )
    print(
        f"refinement: at most {args.steps} steps of lr {args.lr}, margin {args.margin}: {done.exact.mean():.1%} reach "
        f"the margin; {int((done.steps > 0).sum())} codes refined, with {done.steps[done.steps > 0].mean():.1f} steps "
        f"and a move of {np.median((moved / norm)[done.steps > 0]):.1%} of their norm (medians: "
        f"{np.median(done.steps[done.steps > 0]):.0f} steps); {seconds:.1f} s ({1e3 * seconds / len(data):.1f} ms a sentence)"
    )


if __name__ == "__main__":
    main()
