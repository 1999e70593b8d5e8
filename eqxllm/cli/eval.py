"""``eqxllm eval --model DIR --data FILE [--json]``: loss, perplexity and bits per byte of a text file.

Any UTF-8 text, with or without ``<|endoftext|>`` separators; bits per byte are counted over the
file's UTF-8 bytes, so models with different tokenizers compare fairly.
"""

import argparse
import json
import math

from eqxllm.cli._numbers import positive_int
from eqxllm.errors import InputError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model on a text file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="model directory or Hub id (with its tokenizer)")
    p.add_argument("--data", required=True, help="UTF-8 text file")
    p.add_argument(
        "--seq-len", type=positive_int, default=None,
        help="window length, at most the model's context (default: the context, its max positions)",
    )  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, default=8, help="windows per batch (default 8)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eqxllm.checkpoints import from_pretrained, load_config
    from eqxllm.checkpoints.hub import resolve_pretrained
    from eqxllm.train.init_from import refuse_encoder_alone
    from eqxllm.train.text_eval import evaluate_text_file

    directory = resolve_pretrained(args.model)
    refuse_encoder_alone(args.model, "eqxllm eval has no loss to score it with")
    _check_evaluable(args.model, load_config(directory))
    model = from_pretrained(directory)
    if model.config.model_type == "t5_vae":  # an autoencoder: reconstruction metrics, not perplexity
        from eqxllm.vae.evaluate import evaluate_text_file as evaluate_vae

        result = evaluate_vae(model, directory, args.data, batch_size=args.batch_size)
    else:
        result = evaluate_text_file(model, directory, args.data, seq_len=args.seq_len, batch_size=args.batch_size)
    bad = [k for k, v in result.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:  # evaluate_tokens raises first; this guards other evaluators (JSON has no NaN)
        from eqxllm.errors import NonFiniteError

        raise NonFiniteError(f"the evaluation of {args.model} gave non-finite {', '.join(bad)}: {result}")
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        for k, v in result.items():
            print(f"{k:>14}: {v:.6g}" if isinstance(v, float) else f"{k:>14}: {v}")
    return 0


def _check_evaluable(src: str, config) -> None:
    """Refuse an encoder-decoder other than a T5-VAE: a text file has no next-token loss under it."""
    if config.is_encoder_decoder and config.model_type != "t5_vae":
        raise InputError(
            f"--model {src} is an encoder-decoder ({config.model_type}): eqxllm eval scores decoder-only "
            "language models on a text file (and a T5-VAE on its reconstructions), not a model that maps inputs "
            f"to targets: `eqxllm train --init-from {src} --task seq2seq` logs its validation loss on "
            "text-to-text pairs (metrics.jsonl), and `eqxllm generate` samples it"
        )
