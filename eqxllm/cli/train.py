"""``eqxllm train``: train a model from a preset, a config file and flag overrides.

    eqxllm train --config gpt2-tinystories --data ../shared/data/tinystories --out runs/ts
    eqxllm train --config gpt2-tinystories --train.max-steps 50 --model.n-layer 2
    eqxllm train --config-file runs/ts/run_config.json --resume
    eqxllm train --init-from gpt2 --data notes.jsonl --lora.rank 8 --lora.targets attn

With ``--init-from DIR|HUB_ID`` the model config, weights and tokenizer are the checkpoint's; only the
model's dropout rates, ``--model.remat`` and ``--model.attention-impl`` may be set.

Every field of the configuration is a flag (``--help`` lists them with their defaults); ``--data``,
``--out``, ``--max-steps``, ``--checkpoint-every``, ``--resume`` and ``--mesh`` are short forms.
"""

import argparse
import dataclasses

SHORT_FLAGS = {
    "--data": "--data.source",
    "--max-steps": "--train.max-steps",
    "--checkpoint-every": "--train.checkpoint-every",
    "--max-minutes": "--train.max-minutes",
    "--seed": "--train.seed",
}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (presets: gpt2-tinystories, ...)",
        description=__doc__,
        add_help=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-h", "--help", action="store_true", help="show every configuration flag")
    p.set_defaults(func=run, takes_rest=True)


def _expand(argv: list[str]) -> list[str]:
    """Short flags to their full names; ``--max-steps`` also sets the schedule's length."""
    out, i = [], 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        if not eq and name in SHORT_FLAGS and i + 1 < len(argv):
            value, i = argv[i + 1], i + 1
        if name in SHORT_FLAGS:
            out += [SHORT_FLAGS[name], value]
            if name == "--max-steps":  # the schedule decays over the run: keep its length equal
                out += ["--optim.total-steps", value]
        else:
            out.append(argv[i])
        i += 1
    return out


def parse(argv: list[str]):
    """Turn ``eqxllm train`` arguments into a :class:`TrainConfig` (``--config``/``--config-file`` first)."""
    import tyro

    from eqxllm.train.config import TRAIN_PRESETS, TrainConfig, load_config_file, train_preset

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default="gpt2-tinystories", choices=sorted(TRAIN_PRESETS))
    pre.add_argument("--config-file", default=None)
    pre.add_argument("--init-from", default=None)
    known, rest = pre.parse_known_args(argv)
    default = load_config_file(known.config_file) if known.config_file else train_preset(known.config)
    if known.init_from:
        from eqxllm.train.init_from import checkpoint_config, refuse_fixed

        # refuse architecture flags now; the changeable ones are parsed by tyro on top of the checkpoint's
        names = {a.partition("=")[0][len("--model.") :].replace("-", "_") for a in rest if a.startswith("--model.")}
        refuse_fixed(names, known.init_from)
        model = checkpoint_config(known.init_from)
        # a preset's windows may exceed a small checkpoint's context: cap them (--train.seq-len still applies)
        seq_len = min(default.train.seq_len, model.max_positions or default.train.seq_len)
        train_cfg = dataclasses.replace(default.train, seq_len=seq_len)
        default = default.replace(model=model, init_from=known.init_from, train=train_cfg)
    return tyro.cli(
        TrainConfig,
        args=_expand(rest),
        default=default,
        prog="eqxllm train",
        config=(tyro.conf.AvoidSubcommands,),
        description=f"{__doc__}\nPresets (--config): {', '.join(sorted(TRAIN_PRESETS))}; or --config-file FILE.",
    )


def run(args: argparse.Namespace) -> int:
    from eqxllm.train.loop import train

    cfg = parse(args.rest + (["--help"] if args.help else []))
    export = train(cfg)
    print(f"model exported to {export}")
    return 0
