"""How often do sentences written from new T5-VAE codes read as sentences: N(0, I) draws against draws
from a Gaussian fitted to the codes of real sentences (``eqxllm.vae.latent_fit``)?

The fit uses the first ``--fit`` held-out sentences; ``--num`` codes are drawn from each source and
decoded greedily. It first prints the root mean square of the fitted codes per latent token (N(0, I)
has 1 everywhere), over all of them and over the short sentences; then, per source, the share of
empty sentences, the share of *attested* ones (every word, and every pair of adjacent words, occurs
in the training text: the measure of ``benchmarks/vae_paths.py``), the mean number of words, and the
first ``--show`` sentences.

    PYTHONPATH=. python benchmarks/vae_samples.py --model runs/t5-vae-tinystories \\
        --train ../shared/data/tinystories/TinyStories-train-prefix-2MiB.txt
"""

import argparse
from pathlib import Path

import numpy as np
from vae_paths import TextChecks, words


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a T5-VAE run directory (model/, tokenizer.json, heldout.txt)")
    p.add_argument("--train", required=True, help="the training text, for the attested measure")
    p.add_argument("--fit", type=int, default=600, help="held-out sentences to fit the Gaussian to (default 600)")
    p.add_argument("--num", type=int, default=96, help="codes drawn from each source (default 96)")
    p.add_argument("--show", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import jax

    import eqxllm
    from eqxllm.data.tokenizer import load_tokenizer
    from eqxllm.vae import decode_latents, encode_texts, fit_latent_gaussian, sample_latents

    run = Path(args.model)
    model, tok = eqxllm.from_pretrained(run / "model"), load_tokenizer(run)
    text = Path(args.train).read_text(encoding="utf-8")
    attested = TextChecks(text).attested
    heldout = (run / "heldout.txt").read_text(encoding="utf-8").splitlines()[: args.fit]
    codes = encode_texts(model, tok, heldout)
    fit = fit_latent_gaussian(codes)
    lengths = np.array([len(tok.encode(s, add_special_tokens=False).ids) for s in heldout])
    cfg = model.config
    k_prior, k_fit = jax.random.split(jax.random.key(args.seed))
    sources = {
        "N(0, I)": jax.random.normal(k_prior, (args.num, cfg.n_latent_tokens, cfg.latent_size)),
        f"fitted to {len(heldout)} codes": sample_latents(k_fit, fit, args.num),
    }

    print(f"{run}: {args.num} draws a source, greedy decoding")
    rms = lambda z: " ".join(f"{v:.2f}" for v in np.sqrt(np.mean(np.square(z), axis=(0, 2))))
    print(f"root mean square per latent token, all {len(codes)} fitted codes: {rms(codes)}")
    short = codes[lengths <= 8]
    print(f"... the {len(short)} sentences of at most 8 tokens: {rms(short)}")
    print("source                   empty  attested  words")
    for name, z in sources.items():
        out = decode_latents(model, tok, z)
        empty = np.mean([not s.strip() for s in out])
        print(f"{name:22s}  {empty:6.1%}  {np.mean([attested(s) for s in out]):8.1%}  "
              f"{np.mean([len(words(s)) for s in out]):5.1f}")  # fmt: skip
        for s in out[: args.show]:
            print(f"    {s!r}")


if __name__ == "__main__":
    main()
