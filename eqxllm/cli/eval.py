"""``eqxllm eval --model DIR --data FILE [--json]``: loss, perplexity and bits per byte of a text file.

Any UTF-8 text, with or without ``<|endoftext|>`` separators; bits per byte are counted over the
file's UTF-8 bytes, so models with different tokenizers compare fairly.
"""

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model on a text file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="model directory or Hub id (with its tokenizer)")
    p.add_argument("--data", required=True, help="UTF-8 text file")
    p.add_argument("--seq-len", type=int, default=None, help="window length (default: the model's context)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eqxllm.checkpoints import from_pretrained
    from eqxllm.checkpoints.hub import resolve_pretrained
    from eqxllm.train.text_eval import evaluate_text_file

    directory = resolve_pretrained(args.model)
    model = from_pretrained(directory)
    if model.config.model_type == "t5_vae":  # an autoencoder: reconstruction metrics, not perplexity
        from eqxllm.vae.evaluate import evaluate_text_file as evaluate_vae

        result = evaluate_vae(model, directory, args.data, batch_size=args.batch_size)
    else:
        result = evaluate_text_file(model, directory, args.data, seq_len=args.seq_len, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>14}: {v:.6g}" if isinstance(v, float) else f"{k:>14}: {v}")
    return 0
