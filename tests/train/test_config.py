"""Training configs: every preset survives JSON (a run's ``run_config.json``), bad JSON is refused, and
every config's bad field is named with the value found."""

import dataclasses
import json
import re

import pytest

from eqxllm.errors import ConfigError
from eqxllm.lora.config import LoraConfig
from eqxllm.models import GPT2Config, T5Config, T5VAEConfig
from eqxllm.train import TrainConfig
from eqxllm.train.config import TRAIN_PRESETS, train_preset


def _loop(**changes) -> TrainConfig:
    return TrainConfig().replace(train=dataclasses.replace(TrainConfig().train, **changes))


@pytest.mark.parametrize("name", sorted(TRAIN_PRESETS))
def test_every_preset_round_trips_through_json(name):
    cfg = train_preset(name)
    back = TrainConfig.from_json(cfg.to_json())
    assert back == cfg
    assert type(back.model) is type(cfg.model)


def test_json_without_a_section_is_refused():
    with pytest.raises(ConfigError, match="not a TrainConfig JSON"):
        TrainConfig.from_json('{"model": {"model_type": "gpt2"}}')


@pytest.mark.parametrize(
    ("section", "name", "value", "message"),
    [
        ("optim", "learning_rate", "1e-3", "optim.learning_rate is '1e-3'; expected a finite number"),
        ("train", "max_minutes", float("nan"), "train.max_minutes is nan; expected a finite number or null"),
        ("train", "seed", 1.5, "train.seed is 1.5; expected an integer"),
        ("train", "export_best", 1, "train.export_best is 1; expected true or false"),
        ("data", "version", "v3", "data.version is 'v3'; expected one of 'v1', 'v2'"),
        ("lora", "rank", True, "lora.rank is True; expected an integer"),
        (None, "mesh", 4, "mesh is 4; expected a string"),
    ],
)
def test_json_values_of_the_wrong_type_are_named_by_field(section, name, value, message):
    raw = json.loads(train_preset("gpt2-tinystories-test").to_json())
    (raw[section] if section else raw)[name] = value
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig.from_json(json.dumps(raw))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(train=dict(seed=-1)), "train.seed=-1 is out of range"),
        (dict(train=dict(seed=2**63)), "train.seed=9223372036854775808 is out of range"),
        (dict(data=dict(source=" ")), "data.source is empty"),
        (dict(mesh="dta=1"), r"mesh spec 'dta=1' names unknown axes \['dta'\]"),
    ],
)
def test_what_would_fail_after_the_data_is_read_is_refused_by_the_config(changes, message):
    cfg = train_preset("gpt2-tinystories-test")
    sections = {k: dataclasses.replace(getattr(cfg, k), **v) for k, v in changes.items() if isinstance(v, dict)}
    with pytest.raises(ConfigError, match=message):
        cfg.replace(**{**changes, **sections})


def test_for_run_sets_only_what_is_given():
    cfg = train_preset("gpt2-tinystories")
    run = cfg.for_run(data="stories.txt", out="runs/x", max_minutes=2.5, resume=True)
    assert (run.data.source, run.out, run.train.max_minutes, run.resume) == ("stories.txt", "runs/x", 2.5, True)
    assert run.model == cfg.model and run.optim == cfg.optim and run.train.max_steps == cfg.train.max_steps
    assert cfg.for_run() == cfg
    assert cfg.for_run(out="runs/y").data == cfg.data


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: GPT2Config(n_layer=0), "GPT2Config.n_layer must be a positive integer, got 0"),
        (lambda: GPT2Config(n_inner=0), r"GPT2Config.n_inner must be a positive integer \(or None\), got 0"),
        (lambda: GPT2Config(attn_pdrop=1.0), r"GPT2Config.attn_pdrop must be a probability in \[0, 1\), got 1.0"),
        (lambda: T5Config(num_decoder_layers=0), r"T5Config.num_decoder_layers must be a positive integer \(or None\)"),
        (lambda: T5Config(d_kv=0), "T5Config.d_kv must be a positive integer, got 0"),
        (lambda: T5VAEConfig.tiny(mmd_scale=0.0), r"T5VAEConfig.mmd_scale must be positive \(or None\), got 0.0"),
        (lambda: T5VAEConfig.tiny(bow_weight=-1.0), "T5VAEConfig.bow_weight must be >= 0, got -1.0"),
        (
            lambda: TrainConfig().replace(train=dataclasses.replace(TrainConfig().train, seq_len=0)),
            "train.seq_len must be a positive integer, got 0",
        ),
        # each of these used to pass and fail mid-run (a division by zero, no checkpoint left to resume,
        # or an error at the first evaluation, after the training it cost)
        (lambda: _loop(checkpoint_every=0), "train.checkpoint_every must be a positive integer, got 0"),
        (lambda: _loop(checkpoint_every=-1), "train.checkpoint_every must be a positive integer, got -1"),
        (lambda: _loop(keep_checkpoints=0), "train.keep_checkpoints must be a positive integer, got 0"),
        (lambda: _loop(max_minutes=0.0), r"train.max_minutes must be positive \(or None\), got 0.0"),
        (lambda: _loop(sample_tokens=0), "train.sample_tokens must be a positive integer, got 0"),
        (lambda: _loop(num_samples=-1), "train.num_samples must be >= 0, got -1"),
        (lambda: _loop(sample_prompt=""), "train.sample_prompt is empty"),
        (lambda: LoraConfig(targets="mlp"), "lora.targets is set but lora.rank is 0, which turns LoRA off"),
    ],
)
def test_bad_fields_name_the_config_the_field_and_the_value(make, message):
    with pytest.raises(ConfigError, match=message):
        make()
