"""Where the command line writes (``train --out``, ``plot --out``, ``vae ... --output``): a path it
cannot write is one line and exit 2 before any work, missing parent folders are created, and the path
printed is the file written."""

import json
from pathlib import Path

import pytest

from ._helpers import assert_user_error, cli, snapshot

TRAIN = ["train", "--config", "gpt2-tinystories-test", "--max-steps", "1"]


@pytest.fixture
def afile(tmp_path) -> Path:
    path = tmp_path / "afile"
    path.write_text("keep")
    return path


def test_train_out_below_a_file_or_where_the_system_refuses(capsys, tmp_path, afile):
    before = snapshot(tmp_path)
    assert_user_error(capsys, [*TRAIN, "--out", afile / "sub"], "--out", "its parent", "afile is a file")
    assert snapshot(tmp_path) == before
    if Path("/proc/self").is_dir():  # Linux's /proc: a folder no one can create things in
        assert_user_error(capsys, [*TRAIN, "--out", "/proc/eqxllm-run"], "cannot create the folder /proc/eqxllm-run")
        assert not Path("/proc/eqxllm-run").exists()


@pytest.fixture
def run(tmp_path) -> Path:
    rows = [{"kind": "train", "step": s, "loss": 5.0 - 0.1 * s} for s in range(1, 5)]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "run"


def test_plot_creates_missing_folders_and_prints_the_file_it_wrote(capsys, run, tmp_path):
    code, out, err = cli(capsys, "plot", run, "--out", tmp_path / "new" / "sub" / "x.png")
    assert code == 0, err
    assert (tmp_path / "new" / "sub" / "x.png").read_bytes()[:4] == b"\x89PNG"
    assert out.strip() == str(tmp_path / "new" / "sub" / "x.png")
    (tmp_path / "hf").mkdir()  # no suffix: .png is added, and said
    code, out, err = cli(capsys, "plot", run, "--out", tmp_path / "hf")
    assert code == 0 and out.strip() == str(tmp_path / "hf.png") and (tmp_path / "hf.png").is_file(), err
    code, out, err = cli(capsys, "plot", run, "--out", tmp_path / "curve.svg")
    assert code == 0 and (tmp_path / "curve.svg").read_text().lstrip().startswith("<?xml"), err


def test_plot_refuses_paths_it_cannot_write(capsys, run, tmp_path, afile):
    (tmp_path / "d.png").mkdir()
    before = snapshot(tmp_path)
    assert_user_error(capsys, ["plot", run, "--out", afile / "x.png"], "its parent", "afile is a file")
    assert_user_error(capsys, ["plot", run, "--out", tmp_path / "plot.txt"], "'.txt' is not an image format", ".png")
    assert_user_error(capsys, ["plot", run, "--out", tmp_path / "d.png"], "d.png is a folder")
    assert snapshot(tmp_path) == before


@pytest.fixture(scope="module")
def encoder_decoders(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny T5 and a tiny T5-VAE (4 latent tokens, 16 positions), random weights, with a tokenizer."""
    import jax

    import eqxllm
    from eqxllm.data.tokenizer import train_bpe_tokenizer
    from eqxllm.models import T5VAE, T5VAEConfig
    from eqxllm.models.t5 import T5
    from eqxllm.models.t5_config import T5Config

    from ._helpers import STORIES

    tok = train_bpe_tokenizer(STORIES * 5, vocab_size=300, min_frequency=1)
    eos = tok.token_to_id("<|endoftext|>")
    t5 = T5Config.tiny().replace(
        vocab_size=tok.get_vocab_size(), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, dropout_rate=0.0,
        eos_token_id=eos, pad_token_id=eos, decoder_start_token_id=eos,
    )  # fmt: skip
    root = tmp_path_factory.mktemp("encdec")
    vae = T5VAE(T5VAEConfig(t5=t5, n_latent_tokens=4, latent_size=4, max_length=16), key=jax.random.key(0))
    return (
        eqxllm.save_pretrained(T5(t5, key=jax.random.key(0)), root / "t5", tokenizer=tok),
        eqxllm.save_pretrained(vae, root / "vae", tokenizer=tok),
    )


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where nothing can be created")
def test_convert_where_the_system_refuses_is_one_line(capsys, encoder_decoders):
    t5, _ = encoder_decoders
    assert_user_error(capsys, ["convert", t5, "/proc/eqxllm-model"], "cannot write in /proc", "the system says")
    assert not Path("/proc/eqxllm-model").exists()


def test_vae_outputs_are_checked_before_the_model_loads(capsys, encoder_decoders, tmp_path, afile):
    _, vae = encoder_decoders
    (tmp_path / "in.txt").write_text("Tom saw a cat.\nThe sun was warm.\n")
    (tmp_path / "adir").mkdir()
    encode = ["vae", "encode", "--model", tmp_path / "no-model", "--input", tmp_path / "in.txt", "--output"]
    decode = ["vae", "decode", "--model", tmp_path / "no-model", "--input", tmp_path / "z.npy", "--output"]
    before = snapshot(tmp_path)
    assert_user_error(capsys, [*encode, afile / "x.npy"], "its parent", "afile is a file")
    assert_user_error(capsys, [*encode, tmp_path / "x.txt"], "name a .npy file")
    assert_user_error(capsys, [*decode, tmp_path / "adir"], "adir is a folder")
    assert_user_error(capsys, [*decode, afile / "x.txt"], "afile is a file")
    assert snapshot(tmp_path) == before


def test_vae_encode_refuses_a_blank_line_that_would_shift_the_rows(capsys, encoder_decoders, tmp_path):
    _, vae = encoder_decoders
    (tmp_path / "in.txt").write_text("Tom saw a cat.\n\nThe sun was warm.\n")
    before = snapshot(tmp_path)
    encode = ["vae", "encode", "--model", vae, "--input", tmp_path / "in.txt", "--output", tmp_path / "z.npy"]
    assert_user_error(capsys, encode, "line 2 of", "is blank", "row i of the latents is the sentence of line i")
    assert snapshot(tmp_path) == before


def test_vae_outputs_create_missing_folders_and_name_the_file_written(capsys, encoder_decoders, tmp_path):
    _, vae = encoder_decoders
    (tmp_path / "in.txt").write_text("Tom saw a cat.\nThe sun was warm.\n\n")  # blank lines at the end are dropped
    (tmp_path / "adir").mkdir()
    code, _, err = cli(
        capsys, "vae", "encode", "--model", vae, "--input", tmp_path / "in.txt", "--output", tmp_path / "adir"
    )
    assert code == 0 and err.strip().endswith(f"to {tmp_path / 'adir.npy'}") and (tmp_path / "adir.npy").is_file(), err
    latents = tmp_path / "new" / "z.npy"
    code, _, err = cli(capsys, "vae", "encode", "--model", vae, "--input", tmp_path / "in.txt", "--output", latents)
    assert code == 0 and latents.is_file(), err
    text = tmp_path / "new" / "sub" / "out.txt"
    code, _, err = cli(
        capsys, "vae", "decode", "--model", vae, "--input", latents, "--output", text, "--num-beams", "1"
    )
    assert code == 0 and len(text.read_text().splitlines()) == 2 and str(text) in err, err


def test_eval_and_generate_say_what_an_encoder_decoder_needs(capsys, encoder_decoders, tmp_path):
    t5, vae = encoder_decoders
    (tmp_path / "val.txt").write_text("Tom saw a cat. The sun was warm.")
    assert_user_error(
        capsys, ["eval", "--model", t5, "--data", tmp_path / "val.txt"], "encoder-decoder (t5)", "--task seq2seq"
    )
    line = assert_user_error(capsys, ["generate", "--model", vae, "--prompt", "Once", "--num-samples", "2"], "T5-VAE")
    assert "eqxllm vae" in line and capsys.readouterr().out == ""


def test_a_sample_header_is_not_printed_before_an_error(capsys, tmp_path):
    from ._helpers import make_model_dir

    model = make_model_dir(tmp_path / "gpt2")  # 32 positions
    code, out, err = cli(
        capsys, "generate", "--model", model, "--prompt", "Tom", "--num-samples", "2", "--max-new-tokens", "40"
    )
    assert code == 2 and out == "" and "exceeds" in err, (out, err)


def test_train_config_file_errors_say_why(capsys, tmp_path):
    (tmp_path / "bad.json").write_text("{bad")
    (tmp_path / "empty.json").write_text("{}")
    (tmp_path / "dir").mkdir()
    train = ["train", "--config-file"]
    assert_user_error(capsys, [*train, tmp_path / "bad.json"], "bad.json is not valid JSON", "run_config.json")
    assert_user_error(capsys, [*train, tmp_path / "empty.json"], "--config-file", "not a TrainConfig JSON")
    assert_user_error(
        capsys, [*train, tmp_path / "dir"], "dir is a directory", str(tmp_path / "dir" / "run_config.json")
    )
    assert_user_error(capsys, [*train, tmp_path / "none.json"], "none.json does not exist")


@pytest.mark.parametrize("argv", [["--data"], ["--data="], ["--data", ""]])
def test_train_data_without_a_value_is_refused(capsys, tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)  # read as a path, an empty source would be this folder
    (tmp_path / "notes.txt").write_text("not training data\n<|endoftext|>\n" * 50)
    train = ["train", "--config", "gpt2-tinystories-test", "--out", tmp_path / "run"]
    assert_user_error(capsys, [*train, *argv], "data.source")
    assert not (tmp_path / "run").exists()


def test_train_flag_errors_are_not_repeated(capsys):
    line = assert_user_error(capsys, ["train", "--bogus-flag"], "Unrecognized options: --bogus-flag")
    assert line.count("Unrecognized options") == 1
