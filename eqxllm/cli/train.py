"""``eqxllm train``: train a model from a preset, a config file and flag overrides.

    eqxllm train --config gpt2-tinystories --data ../shared/data/tinystories --out runs/ts
    eqxllm train --config gpt2-tinystories --train.max-steps 50 --model.n-layer 2
    eqxllm train --config-file runs/ts/run_config.json --resume
    eqxllm train --init-from gpt2 --data notes.jsonl --lora.rank 8 --lora.targets attn

With ``--init-from DIR|HUB_ID`` the model config, weights and tokenizer are the checkpoint's (a T5 with
``--task seq2seq``, a T5-VAE with ``--task vae``); only the model's dropout rates, ``--model.remat``,
``--model.attention-impl`` and a T5-VAE's loss-only fields (``--model.reg-weight``, ...) may be set.

Every field of the configuration is a flag (``--help`` lists them with their defaults); ``--data``,
``--out``, ``--max-steps``, ``--checkpoint-every``, ``--resume`` and ``--mesh`` are short forms.
"""

import argparse
import contextlib
import dataclasses
import io
import json
import re
from pathlib import Path

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
    """Short flags to their full names."""
    out, i = [], 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        if not eq and name in SHORT_FLAGS and i + 1 < len(argv):
            value, i = argv[i + 1], i + 1
        elif not eq and name in SHORT_FLAGS:  # no value: the full name alone, which the parser refuses
            out.append(SHORT_FLAGS[name])
            break
        if name in SHORT_FLAGS:  # the schedule follows --max-steps by itself (TrainConfig.resolved_optim)
            out += [SHORT_FLAGS[name], value]
        else:
            out.append(argv[i])
        i += 1
    return out


def parse(argv: list[str]):
    """Turn ``eqxllm train`` arguments into a :class:`TrainConfig` (``--config``/``--config-file`` first)."""
    import tyro

    from eqxllm.cli import OneLineParser
    from eqxllm.errors import ConfigError
    from eqxllm.train.config import TRAIN_PRESETS, TrainConfig, train_preset

    pre = OneLineParser(prog="eqxllm train", add_help=False)
    pre.add_argument("--config", default="gpt2-tinystories", choices=sorted(TRAIN_PRESETS))
    pre.add_argument("--config-file", default=None)
    pre.add_argument("--init-from", default=None)
    known, rest = pre.parse_known_args(argv)
    default = _config_file(known.config_file) if known.config_file else train_preset(known.config)
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
    shown = default.replace(model=_shown_default(default.model))
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            cfg = tyro.cli(
                TrainConfig,
                args=_expand(rest),
                default=shown,
                prog="eqxllm train",
                config=(tyro.conf.AvoidSubcommands,),
                description=f"{__doc__}\nPresets (--config): {', '.join(sorted(TRAIN_PRESETS))}; or --config-file FILE.",
            )
    except SystemExit as e:
        if not e.code:  # --help
            raise
        raise ConfigError(_one_line(errors.getvalue())) from None
    tuples = {
        f.name: tuple(v) for f in dataclasses.fields(cfg.model) if isinstance(v := getattr(cfg.model, f.name), list)
    }
    return cfg.replace(model=dataclasses.replace(cfg.model, **tuples)) if tuples else cfg


def _config_file(path: str):
    """The :class:`TrainConfig` saved in ``path`` (a run's ``run_config.json``), or a ConfigError that
    says why not: a folder, a missing file, text that is not JSON, JSON that is not a config."""
    from eqxllm.errors import ConfigError
    from eqxllm.train.config import load_config_file

    p = Path(path)
    expected = "pass the run_config.json that eqxllm train writes"
    if p.is_dir():
        raise ConfigError(f"--config-file {p} is a directory; {expected} (such as {p / 'run_config.json'})")
    if not p.is_file():
        raise ConfigError(f"--config-file {p} does not exist; {expected}, or a preset with --config")
    try:
        json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"--config-file {p} is not valid JSON ({e}); {expected}") from None
    try:
        return load_config_file(p)
    except ConfigError as e:
        raise ConfigError(f"--config-file {p}: {e}; {expected}") from None


def _one_line(boxed: str) -> str:
    """tyro's error report as one line: its frame (box characters on a terminal, dashes elsewhere), its
    title (the kind of error, which the text says again), its rules and its help pointer dropped."""
    lines = [re.sub(r"[│╭╮╰╯─┃━┏┓┗┛]+", " ", line).strip() for line in boxed.splitlines()]
    lines = [line for line in lines if line and not re.fullmatch(r"-+", line)]
    text = " ".join(lines[1:] if len(lines) > 1 else lines)
    text = re.sub(r"For full helptext, (see|run) .*", "", text)
    return " ".join(text.split()) + " (see eqxllm train --help)"


def _shown_default(model_cfg):
    """A copy of ``model_cfg`` as tyro's default, changed in two ways that the parsed config undoes:

    - a per-layer list that the config derives by itself (a field whose default is ``None`` and that
      ``None`` gives back unchanged, such as ``layer_types`` of the llama family and Gemma) is ``None``
      again, so ``--model.num-hidden-layers 2`` derives two entries instead of clashing with the
      preset's four (a list that a preset spells out stays);
    - other tuples are lists: tyro renders a ``Sequence[str]`` field's default only from a list (a
      tuple default crashes ``--help``), and the parsed config gets its tuples back.
    """
    copy = dataclasses.replace(model_cfg)
    for f in dataclasses.fields(copy):
        value = getattr(copy, f.name)
        if not isinstance(value, tuple):
            continue
        derived = f.default is None and getattr(dataclasses.replace(model_cfg, **{f.name: None}), f.name) == value
        object.__setattr__(copy, f.name, None if derived else list(value))
    return copy


def run(args: argparse.Namespace) -> int:
    from eqxllm.train.loop import train

    cfg = parse(args.rest + (["--help"] if args.help else []))
    export = train(cfg)
    if export.name != "model":  # a signal stopped it between steps: a checkpoint, nothing exported
        print(
            f"stopped early; checkpoint saved in {export}, no model exported: continue with the same flags and --resume"
        )
        return 0
    print(f"model exported to {export}")
    return 0
