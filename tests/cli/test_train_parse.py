"""``eqxllm train`` flags over a preset: per-layer lists that a config derives follow the new depth."""

import pytest

from eqxllm.cli.train import parse
from eqxllm.errors import ConfigError

FULL, SLIDING = "full_attention", "sliding_attention"


@pytest.mark.parametrize("preset", ["llama-tinystories", "mixtral-tinystories"])
def test_depth_flag_derives_layer_types_for_the_new_depth(preset):
    cfg = parse(["--config", preset, "--model.num-hidden-layers", "2"])
    assert cfg.model.num_hidden_layers == 2 and cfg.model.layer_types == (FULL, FULL)


def test_window_flags_derive_sliding_layers():
    cfg = parse(["--config", "llama-tinystories", "--model.model-type", "mistral", "--model.sliding-window", "32"])
    assert cfg.model.layer_types == (SLIDING,) * 4 and cfg.model.sliding_window == 32


def test_gemma_depth_flag_keeps_the_presets_pattern():
    assert parse(["--config", "gemma-tinystories"]).model.layer_types == (SLIDING, FULL) * 2
    cfg = parse(["--config", "gemma-tinystories", "--model.num-hidden-layers", "6"])
    assert cfg.model.layer_types == (SLIDING, FULL) * 3
    cfg = parse(
        ["--config", "gemma-tinystories", "--model.num-hidden-layers", "6", "--model.sliding-window-pattern", "3"]
    )
    assert cfg.model.layer_types == (SLIDING, SLIDING, FULL) * 2


def test_a_spelled_out_layer_list_is_kept_and_checked():
    cfg = parse(
        ["--config", "gemma-tinystories", "--model.num-hidden-layers", "2", "--model.layer-types", FULL, SLIDING]
    )
    assert cfg.model.layer_types == (FULL, SLIDING)
    with pytest.raises(ConfigError, match="layer_types has 2 entries; num_hidden_layers=4"):
        parse(["--config", "gemma-tinystories", "--model.layer-types", SLIDING, FULL])


@pytest.mark.parametrize("preset", ["llama-tinystories", "gemma-tinystories"])
def test_help_renders(preset, capsys):
    with pytest.raises(SystemExit) as info:
        parse(["--config", preset, "--help"])
    assert info.value.code == 0 and "--model.layer-types" in capsys.readouterr().out
