"""The command line on hostile input: one line on stderr and exit 2 for every user error, nothing
printed or written before it; a bug exits 1 with its traceback and a line saying it is a bug."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import eqxllm
from eqxllm.cli import main, user_error_message

from ._helpers import assert_user_error, cli, copy_dir, make_model_dir, snapshot, story_file


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    return story_file(tmp_path_factory.mktemp("text") / "valid.txt", n=12)


@pytest.fixture(scope="module")
def nan_dir(model_dir, tmp_path_factory) -> Path:
    bad = copy_dir(model_dir, tmp_path_factory.mktemp("nan") / "model")
    tensors = load_file(bad / "model.safetensors")
    tensors["transformer.ln_f.weight"][2] = np.nan
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    return bad


@pytest.mark.parametrize(
    ("flags", "facts"),
    [
        (["--batch-size", "-1"], ["argument --batch-size: expected an integer >= 1, got -1"]),
        (["--batch-size", "0"], ["argument --batch-size: expected an integer >= 1, got 0"]),
        (["--seq-len", "-5"], ["argument --seq-len: expected an integer >= 1, got -5"]),
        (["--seq-len", "ten"], ["argument --seq-len: expected an integer >= 1, got 'ten'"]),
    ],
)
def test_eval_numbers(capsys, model_dir, text, flags, facts):
    assert_user_error(capsys, ["eval", "--model", model_dir, "--data", text, *flags], *facts)


def test_eval_data_is_a_directory(capsys, model_dir, tmp_path):
    assert_user_error(capsys, ["eval", "--model", model_dir, "--data", tmp_path], f"{tmp_path} is a directory")


def test_eval_and_generate_refuse_non_finite_weights(capsys, nan_dir, text):
    facts = ["'transformer.ln_f.weight' holds 1 non-finite values", "index (2,)"]
    assert_user_error(capsys, ["eval", "--model", nan_dir, "--data", text, "--json"], *facts)
    line = assert_user_error(capsys, ["generate", "--model", nan_dir, "--prompt", "Once upon"], *facts)
    assert "Once upon" not in line.split("error:")[0]


def test_eval_json_is_valid_json(capsys, model_dir, text):
    code, out, _ = cli(capsys, "eval", "--model", model_dir, "--data", text, "--json")
    assert code == 0 and set(json.loads(out)) >= {"loss", "perplexity", "bits_per_byte"}


@pytest.mark.parametrize(
    ("flags", "facts"),
    [
        (["--greedy", "--top-k", "0"], ["argument --top-k: expected an integer >= 1, got 0"]),
        (["--greedy", "--top-k", "5"], ["--greedy always takes the most likely token; --top-k would be ignored"]),
        (["--top-p", "1.5"], ["argument --top-p: expected a number in (0, 1], got 1.5"]),
        (["--temperature", "nan"], ["argument --temperature: expected a finite number >= 0"]),
        (["--max-new-tokens", "0"], ["argument --max-new-tokens: expected an integer >= 1, got 0"]),
        (["--max-new-tokens", "500"], ["exceeds the model's context"]),
    ],
)
def test_generate_flags_fail_before_the_prompt_is_echoed(capsys, model_dir, flags, facts):
    code, out, err = cli(capsys, "generate", "--model", model_dir, "--prompt", "Once upon a time", *flags)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert all(f in err for f in facts), err


def test_unknown_flag_is_blamed_on_the_subcommand_with_a_suggestion(capsys, model_dir, text):
    line = assert_user_error(
        capsys, ["eval", "--model", model_dir, "--data", text, "--batch_size", "4"], "unrecognized arguments"
    )
    assert line.startswith("eqxllm eval: error:") and "did you mean --batch-size?" in line
    line = assert_user_error(capsys, ["vae", "encode", "--model", "m", "--input", "i", "--output", "o", "--refine"])
    assert line.startswith("eqxllm vae encode: error:") and "--refine-steps" in line


def test_plot_on_a_missing_folder(capsys, tmp_path):
    assert_user_error(capsys, ["plot", tmp_path / "nope"], "no such run directory")
    assert_user_error(capsys, ["plot", tmp_path], "has no metrics.jsonl")
    assert not (tmp_path / "loss.png").exists()


def test_convert_into_a_file_and_with_a_bad_shard_size(capsys, model_dir, tmp_path):
    target = tmp_path / "file"
    target.write_text("keep")
    assert_user_error(capsys, ["convert", model_dir, target], "is a file")
    assert target.read_text() == "keep"
    assert_user_error(capsys, ["convert", model_dir, tmp_path / "dst", "--max-shard-size", "0"], "--max-shard-size")
    assert not (tmp_path / "dst").exists()


def test_convert_a_run_directory_reads_its_model(capsys, model_dir, tmp_path):
    run = tmp_path / "run"
    copy_dir(model_dir, run / "model")
    (run / "run_config.json").write_text("{}")
    code, out, err = cli(capsys, "convert", run, tmp_path / "dst")
    assert code == 0, err
    assert (tmp_path / "dst" / "model.safetensors").is_file()
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "run_config.json").write_text("{}")
    assert_user_error(capsys, ["convert", unfinished, tmp_path / "dst2"], "has not exported a model yet")


def test_a_model_dir_that_does_not_exist(capsys, tmp_path):
    assert_user_error(capsys, ["generate", "--model", tmp_path / "none", "--prompt", "x"], "no such directory")


def test_a_bug_exits_1_with_its_traceback_and_says_so(capsys, monkeypatch):
    import eqxllm.cli.plot as plot_cli

    def broken(args):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(plot_cli, "_plot", broken)
    code, _, err = cli(capsys, "plot", "somewhere")
    assert code == 1
    assert "Traceback" in err and "ZeroDivisionError: oops" in err
    assert err.strip().splitlines()[-1].startswith("eqxllm plot: this is a bug in eqxllm (ZeroDivisionError)")


def test_out_of_range_ids_under_jax_jit_give_the_clear_message(model_dir):
    model = eqxllm.from_pretrained(model_dir)
    vocab = model.config.vocab_size
    with pytest.raises(Exception) as info:
        jax.block_until_ready(jax.jit(lambda ids: model(ids))(jnp.array([1, vocab + 7])))
    assert "CpuCallback" in str(info.value) or "EquinoxRuntimeError" in str(info.value)
    assert user_error_message(info.value) == f"token ids must be in [0, {vocab}) (the vocabulary size); got one outside"


def test_train_help_renders_for_every_preset(capsys):
    from eqxllm.train.config import TRAIN_PRESETS

    for name in TRAIN_PRESETS:
        assert main(["train", "--config", name, "--help"]) == 0, name
        assert "--train.max-steps" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "total", "warmup"),
    [
        (["--train.max-steps", "50"], 50, 4),  # the --help example
        (["--max-steps", "1"], 1, 0),  # shorter than the preset's warmup
        (["--max-steps", "800"], 800, 60),
        (["--max-steps", "50", "--optim.warmup-steps", "5"], 50, 5),
        ([], 400, 30),  # the preset as documented
    ],
)
def test_the_schedule_follows_the_runs_length(argv, total, warmup):
    from eqxllm.cli.train import parse

    o = parse(["--config", "gpt2-tinystories", *argv]).resolved_optim()
    assert (o.total_steps, o.warmup_steps) == (total, warmup)


def test_train_refuses_a_warmup_not_shorter_than_the_run(capsys, tmp_path):
    argv = ["train", "--config", "gpt2-tinystories-test", "--out", tmp_path / "r", "--max-steps", "5"]
    assert_user_error(capsys, [*argv, "--optim.warmup-steps", "5"], "total_steps must be > warmup_steps=5")
    assert snapshot(tmp_path) == {}


def test_train_without_network_is_one_line_with_the_data_hint(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "run"
    assert_user_error(capsys, ["train", "--config", "gpt2-tinystories-test", "--out", out], "--data")


def test_a_missing_optional_package_names_its_extra(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # as if not installed
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "loss": 2.0}\n')
    assert_user_error(capsys, ["plot", tmp_path], "needs the optional package 'matplotlib'", "eqxllm[plot]")
    assert not (tmp_path / "loss.png").exists()


def test_scripts_get_the_same_one_line_errors(capsys):
    from eqxllm.cli import guarded
    from eqxllm.errors import DataError

    def script():
        raise DataError("no stories in x.txt")

    assert guarded("train.py", script) == 2
    assert capsys.readouterr().err == "train.py: error: no stories in x.txt\n"
    assert guarded("train.py", lambda: None) == 0


def test_python_m_eqxllm_is_the_command_and_subpackages_are_attributes():
    import subprocess
    import sys

    code = "import eqxllm; eqxllm.lora.apply_lora; eqxllm.train.make_train_step; eqxllm.data; eqxllm.vae"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    out = subprocess.run([sys.executable, "-m", "eqxllm", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("usage: eqxllm")
    with pytest.raises(AttributeError, match="no attribute 'lorra'"):
        eqxllm.lorra  # noqa: B018
