"""How do the interpolation loss's splice targets read, with and without attested junctions?

Draws ``--pairs`` random pairs of the training sentences of a T5-VAE run (the split and tokenizer of
its ``run_config.json``), and prints the share of pairs that have a splice and the share that have
one with an attested junction (``benchmarks/_vae_lab.py``; the ``splice_junction="attested"`` option
that trained on them was measured and removed, docs/t5_vae.md). With
``--lm`` (a decoder-only language model trained on the same text, such as the GPT-2 preset's) it
also prints that model's mean log-probability per token for the first sentences of the pairs, for
one attested splice per pair that has one, and for one other splice per pair that has one.

    PYTHONPATH=. python benchmarks/vae_splices.py --run runs/t5-vae-tinystories --lm runs/gpt2-tinystories/model
"""

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a T5-VAE run directory (run_config.json, tokenizer.json)")
    p.add_argument("--lm", default=None, help="a decoder-only language model directory, to score the splices")
    p.add_argument("--pairs", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from _vae_lab import attested_splices, token_trigrams

    import eqxllm
    from eqxllm.data.tokenizer import load_tokenizer
    from eqxllm.generation.score import text_log_likelihoods
    from eqxllm.train.config import load_config_file
    from eqxllm.train.tasks.splices import splices
    from eqxllm.train.tasks.vae import VAETask

    run = Path(args.run)
    task = VAETask(load_config_file(run / "run_config.json"), run, progress=False)  # the run's split and tokenizer
    train, tok, joinable, eos = task.train, task.tokenizer, task.joinable, task.eot
    seq_len = train.ids.shape[1]
    trigrams = token_trigrams(train.ids, train.lengths)
    rng = np.random.default_rng(args.seed)
    any_splice = attested = 0
    firsts, good, other = [], [], []
    for x, y in rng.choice(len(train), size=(args.pairs, 2)):
        a, b = (train.ids[r, : train.lengths[r] - 1].tolist() for r in (x, y))
        every = splices(a, b, seq_len - 1, joinable)
        kept = attested_splices(a, b, seq_len - 1, joinable, trigrams, eos)
        rest = [s for s in every if s not in kept]
        any_splice, attested = any_splice + bool(every), attested + bool(kept)
        firsts.append(train.texts[x])
        good += [tok.decode(kept[rng.integers(len(kept))][0])] if kept else []
        other += [tok.decode(rest[rng.integers(len(rest))][0])] if rest else []
    print(f"{args.pairs} pairs of training sentences of {run}: {any_splice / args.pairs:.1%} have a splice, "
          f"{attested / args.pairs:.1%} an attested one")  # fmt: skip
    for label, texts in (("attested", good), ("other", other)):
        for text in texts[:3]:
            print(f"  {label}: {text}")
    if args.lm:
        lm, lm_tok = eqxllm.from_pretrained(args.lm), load_tokenizer(args.lm)

        def score(texts: list[str]) -> float:
            return float(np.mean(np.asarray(text_log_likelihoods(lm, lm_tok, texts))))

        print(f"mean log-probability per token under {args.lm}: training sentences {score(firsts):.2f}, "
              f"attested splices {score(good):.2f} ({len(good)}), other splices {score(other):.2f} ({len(other)})")  # fmt: skip


if __name__ == "__main__":
    main()
