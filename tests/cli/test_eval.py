"""`eqxllm eval` (loss, perplexity, bits per byte of a text file) and `eqxllm plot`."""

import json
import math

import jax
import pytest

import eqxllm
from eqxllm.cli import main
from eqxllm.data import train_bpe_tokenizer
from eqxllm.models import GPT2, GPT2Config

TEXT = "Once upon a time there was a cat.\n<|endoftext|>\nThe dog ran fast. It was happy.\n<|endoftext|>\n"


@pytest.fixture
def model_dir(tmp_path):
    tok = train_bpe_tokenizer([TEXT.replace("<|endoftext|>", "")] * 20, 280)
    model = GPT2(GPT2Config.tiny().replace(vocab_size=tok.get_vocab_size()), key=jax.random.key(0))
    return eqxllm.save_pretrained(model, tmp_path / "model", tokenizer=tok)


def test_eval_json_reports_loss_perplexity_and_bits_per_byte(model_dir, tmp_path, capsys):
    data = tmp_path / "valid.txt"
    data.write_text(TEXT, encoding="utf-8")
    assert main(["eval", "--model", str(model_dir), "--data", str(data), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"loss", "perplexity", "bits_per_byte"} <= out.keys()
    assert math.isclose(out["perplexity"], math.exp(out["loss"]), rel_tol=1e-6)
    # bits per byte: the summed loss in bits over the file's UTF-8 bytes
    assert out["bytes"] == len(TEXT.encode("utf-8"))
    assert math.isclose(out["bits_per_byte"], out["loss"] * out["tokens"] / math.log(2) / out["bytes"], rel_tol=1e-6)
    # an untrained model is near uniform over the vocabulary
    assert abs(out["loss"] - math.log(GPT2Config.tiny().vocab_size)) < 1.5


def test_eval_refuses_a_window_beyond_the_context(model_dir, tmp_path, capsys):
    data = tmp_path / "valid.txt"
    data.write_text(TEXT, encoding="utf-8")
    context = GPT2Config.tiny().n_positions  # used to be capped without a word
    assert main(["eval", "--model", str(model_dir), "--data", str(data), "--seq-len", str(context + 1)]) == 2
    assert f"seq_len={context + 1} exceeds the model's context ({context} positions)" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"caf\xe9", "not UTF-8: byte 3")])
def test_eval_bad_files(model_dir, tmp_path, capsys, content, message):
    data = tmp_path / "bad.txt"
    data.write_bytes(content)
    assert main(["eval", "--model", str(model_dir), "--data", str(data)]) == 2
    assert message in capsys.readouterr().err


def test_plot_draws_the_loss_curve(tmp_path, capsys):
    rows = [{"kind": "train", "step": s, "loss": 5.0 - 0.1 * s} for s in range(1, 20)]
    rows += [{"kind": "eval", "step": 10, "val_loss": 4.2}, {"kind": "eval", "step": 19, "val_loss": 3.5}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["plot", str(tmp_path)]) == 0
    png = tmp_path / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    (tmp_path / "metrics.jsonl").write_text("")
    assert main(["plot", str(tmp_path)]) == 2
    assert "no training or evaluation rows" in capsys.readouterr().err
