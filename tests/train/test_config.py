"""Training configs: every preset survives JSON (a run's ``run_config.json``), bad JSON is refused."""

import pytest

from eqxllm.errors import ConfigError
from eqxllm.train import TrainConfig
from eqxllm.train.config import TRAIN_PRESETS, train_preset


@pytest.mark.parametrize("name", sorted(TRAIN_PRESETS))
def test_every_preset_round_trips_through_json(name):
    cfg = train_preset(name)
    back = TrainConfig.from_json(cfg.to_json())
    assert back == cfg
    assert type(back.model) is type(cfg.model)


def test_json_without_a_section_is_refused():
    with pytest.raises(ConfigError, match="not a TrainConfig JSON"):
        TrainConfig.from_json('{"model": {"model_type": "gpt2"}}')


def test_for_run_sets_only_what_is_given():
    cfg = train_preset("gpt2-tinystories")
    run = cfg.for_run(data="stories.txt", out="runs/x", max_minutes=2.5, resume=True)
    assert (run.data.source, run.out, run.train.max_minutes, run.resume) == ("stories.txt", "runs/x", 2.5, True)
    assert run.model == cfg.model and run.optim == cfg.optim and run.train.max_steps == cfg.train.max_steps
    assert cfg.for_run() == cfg
    assert cfg.for_run(out="runs/y").data == cfg.data
