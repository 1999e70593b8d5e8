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
