"""The `vae` training task: the loss falls on a tiny synthetic corpus, batches carry the step, the
whole trainer runs and exports a T5-VAE that `eqxllm eval` and `eqxllm vae` use (CLI smoke tests)."""

import dataclasses
import json
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest

import eqxllm
from eqxllm.cli import main
from eqxllm.data.tokenizer import TOKENIZER_CONFIG_FILE, TOKENIZER_FILE
from eqxllm.errors import ConfigError
from eqxllm.models import T5VAE
from eqxllm.train.config import train_preset
from eqxllm.train.loop import train
from eqxllm.train.optim import OptimConfig, init_opt_state, make_optimizer
from eqxllm.train.step import make_train_step
from eqxllm.train.tasks.vae import VAETask


def _corpus(path: Path, n: int = 120, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    names, things = ["Lily", "Tom", "Mia", "Ben", "Sue", "Max"], ["ball", "cat", "tree", "cake", "kite", "hat"]
    colours = ["red", "blue", "big", "small", "green", "old", "new", "soft"]
    stories = []
    for _ in range(n):  # 288 "had a" sentences: most held-out ones are not in a training story
        a, b, c = rng.choice(names), rng.choice(things), rng.choice(colours)
        stories.append(f"{a} had a {c} {b}. {a} loved the {b}. One day the {b} was lost. {a} found it.")
    path.write_text("\n<|endoftext|>\n".join(stories) + "\n<|endoftext|>\n", encoding="utf-8")
    return path


def _cfg(tmp_path: Path, **loop):
    cfg = train_preset("t5-vae-test")
    data = dataclasses.replace(cfg.data, source=str(_corpus(tmp_path / "stories.txt")), val_fraction=0.2)
    train_cfg = dataclasses.replace(cfg.train, **loop)
    optim = dataclasses.replace(cfg.optim, total_steps=train_cfg.max_steps)
    return cfg.replace(data=data, train=train_cfg, optim=optim, out=str(tmp_path / "run"))


def test_task_batches_and_loss_decreases(tmp_path):
    cfg = _cfg(tmp_path)
    task = VAETask(cfg, tmp_path / "run", progress=False)
    model_cfg = task.model_config(cfg.model)
    assert model_cfg.vocab_size == task.tokenizer.get_vocab_size() and model_cfg.max_length == cfg.train.seq_len
    assert model_cfg.eos_token_id == model_cfg.pad_token_id == task.eot
    assert set(task.validation.texts).isdisjoint(task.train.texts)
    batch = task.batch(5, process_index=0, process_count=1)
    assert batch["input_ids"].shape == (8, 16) and np.all(batch["step"] == 5)
    model = T5VAE(model_cfg, key=jax.random.key(0))
    optimizer = make_optimizer(OptimConfig(learning_rate=3e-3, warmup_steps=0, total_steps=30), model)
    step = make_train_step(task.loss_fn, optimizer)
    state = init_opt_state(optimizer, model)
    fixed = task.batch(0, process_index=0, process_count=1)
    loss = eqx.filter_jit(task.loss_fn)
    first, _ = loss(model, fixed, None)
    for i in range(25):
        model, state, metrics = step(model, state, fixed, jax.random.key(i))
    last, aux = loss(model, fixed, None)
    assert float(last) < 0.7 * float(first)
    assert {"reconstruction", "mmd", "reg_weight", "token_accuracy", "tokens"} <= set(aux)
    ev = task.evaluate(model, max_batches=1)
    assert {"val_loss", "val_token_accuracy", "val_sequence_accuracy", "val_mmd", "val_active_units"} <= set(ev)


def test_task_rejects_another_model_family(tmp_path):
    cfg = _cfg(tmp_path).replace(model=train_preset("gpt2-tinystories-test").model)
    with pytest.raises(ConfigError, match="task 'vae' trains a T5-VAE"):
        VAETask(cfg, tmp_path / "run", progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vae")
    export = train(_cfg(tmp), progress=False)
    return tmp, export


def test_trainer_exports_a_t5_vae(trained):
    tmp, export = trained
    names = sorted(p.name for p in export.iterdir())
    assert names == sorted(
        ["config.json", "generation_config.json", "model.safetensors", TOKENIZER_FILE, TOKENIZER_CONFIG_FILE]
    )
    model = eqxllm.from_pretrained(export)
    assert isinstance(model, T5VAE)
    rows = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "eval" and "val_token_accuracy" in r for r in rows)
    assert any(r["kind"] == "sample" and "prior draw" in r["text"] for r in rows)
    assert any(r["kind"] == "sample" and "fitted draw" in r["text"] for r in rows)


def test_samples_decode_reconstructions_a_prior_draw_and_a_fitted_draw(trained):
    from eqxllm.vae import decode_latents, fit_latent_gaussian, sample_latents
    from eqxllm.vae.text import encode_rows

    tmp, export = trained
    model = eqxllm.from_pretrained(export)
    task = VAETask(_cfg(tmp), tmp / "run", progress=False)
    key = jax.random.key(3)
    got = task.samples(model, key)
    n = min(task.cfg.train.num_samples, len(task.validation))
    fit_rows = task.validation.take(range(min(len(task.validation), 256)))
    codes = encode_rows(model, fit_rows, batch_size=task.cfg.train.batch_size)
    prior_key, fit_key = jax.random.split(key)
    prior = jax.random.normal(prior_key, (1, *codes.shape[1:]))
    fitted = sample_latents(fit_key, fit_latent_gaussian(codes), 1)
    want = decode_latents(model, task.tokenizer, np.concatenate([codes[:n], np.asarray(prior), np.asarray(fitted)]))
    assert len(got) == n + 2
    assert got[:n] == [f"{src!r} -> {rec!r}" for src, rec in zip(task.validation.texts, want[:n])]
    assert got[n:] == [f"prior draw -> {want[n]!r}", f"fitted draw -> {want[n + 1]!r}"]


def test_cli_eval_and_vae_commands(trained, tmp_path, capsys):
    tmp, export = trained
    assert main(["eval", "--model", str(export), "--data", str(tmp / "stories.txt"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.0 <= result["token_accuracy"] <= 1.0 and result["sentences"] > 0 and "mmd" in result
    assert main(["vae", "interpolate", "--model", str(export), "--a", "Tom had a cat.", "--b", "Mia found it.",
                 "--steps", "4"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[0].startswith("0.00") and lines[-1].startswith("1.00")
    (tmp_path / "in.txt").write_text("Tom had a cat.\nMia found it.\n")
    assert main(["vae", "encode", "--model", str(export), "--input", str(tmp_path / "in.txt"),
                 "--output", str(tmp_path / "z.npy")]) == 0  # fmt: skip
    z = np.load(tmp_path / "z.npy")
    assert z.shape == (2, 4, 8)
    for fit in ([], ["--fit", str(tmp_path / "in.txt")]):  # the prior, then a Gaussian fitted to two codes
        assert main(["vae", "sample", "--model", str(export), "--num", "3", *fit]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 3
    (tmp_path / "one.txt").write_text("Tom had a cat.\n")
    assert main(["vae", "sample", "--model", str(export), "--fit", str(tmp_path / "one.txt")]) == 2
    assert "at least 2 sentences" in capsys.readouterr().err
    assert main(["vae", "decode", "--model", str(export), "--input", str(tmp_path / "z.npy")]) == 0
    greedy = capsys.readouterr().out.splitlines()
    assert len(greedy) == 2
    assert main(["vae", "decode", "--model", str(export), "--input", str(tmp_path / "z.npy"), "--num-beams", "3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["vae", "decode", "--model", str(export), "--input", str(tmp_path / "z.npy"), "--num-beams", "0"]) == 2
    assert "num_beams must be an integer >= 1" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 3), np.float32))
    assert main(["vae", "decode", "--model", str(export), "--input", str(tmp_path / "bad.npy")]) == 2
    assert "latents must be [4, 8]" in capsys.readouterr().err
    np.save(tmp_path / "nan.npy", np.where(np.arange(z.size).reshape(z.shape) == 5, np.nan, z))
    assert main(["vae", "decode", "--model", str(export), "--input", str(tmp_path / "nan.npy")]) == 2
    assert "non-finite values (NaN or inf), the first at index" in capsys.readouterr().err
    (tmp_path / "long.txt").write_text("Tom " * 40 + "ran.\n")
    assert main(["vae", "encode", "--model", str(export), "--input", str(tmp_path / "long.txt"),
                 "--output", str(tmp_path / "l.npy")]) == 2  # fmt: skip
    assert "tokens; this model encodes 1 to 15 tokens" in capsys.readouterr().err


def test_cli_interpolate_along_a_geodesic(trained, tmp_path, capsys):
    tmp, export = trained
    bank = sorted({s.strip() + "." for line in (tmp / "stories.txt").read_text().splitlines() for s in line.split(".")
                   if s.strip() and "endoftext" not in s})  # fmt: skip
    (tmp_path / "bank.txt").write_text("\n".join(bank) + "\n")
    ends = ["--a", "Tom had a cat.", "--b", "Mia found it.", "--steps", "5"]
    assert main(["vae", "interpolate", "--model", str(export), *ends, "--method", "geodesic",
                 "--bank", str(tmp_path / "bank.txt"), "--bank-k", "4", "--bank-inexact"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    from eqxllm.data.tokenizer import load_tokenizer
    from eqxllm.vae import build_bank, interpolate_texts

    model, tok = eqxllm.from_pretrained(export), load_tokenizer(export)
    want = interpolate_texts(model, tok, "Tom had a cat.", "Mia found it.", 5, method="geodesic",
                             bank=build_bank(model, tok, bank, k=4, exact=False))  # fmt: skip
    assert lines == [f"{i / 4:.2f}  {text}" for i, text in enumerate(want)]
    assert main(["vae", "interpolate", "--model", str(export), *ends, "--method", "geodesic"]) == 2
    assert "give both or neither" in capsys.readouterr().err
    assert main(["vae", "interpolate", "--model", str(export), *ends, "--bank", str(tmp_path / "bank.txt")]) == 2
    assert "give both or neither" in capsys.readouterr().err


def test_cli_refines_codes_and_keeps_an_exact_bank(trained, tmp_path, capsys):
    from eqxllm.data.tokenizer import load_tokenizer
    from eqxllm.vae import encode_texts, interpolate_texts

    tmp, export = trained
    model, tok = eqxllm.from_pretrained(export), load_tokenizer(export)
    (tmp_path / "in.txt").write_text("Tom had a cat.\nMia found it.\n")
    assert main(["vae", "encode", "--model", str(export), "--input", str(tmp_path / "in.txt"),
                 "--output", str(tmp_path / "z.npy"), "--refine-steps", "3"]) == 0  # fmt: skip
    refined = encode_texts(model, tok, ["Tom had a cat.", "Mia found it."], refine_steps=3)
    np.testing.assert_allclose(np.load(tmp_path / "z.npy"), refined, rtol=1e-5, atol=1e-6)
    assert not np.allclose(refined, encode_texts(model, tok, ["Tom had a cat.", "Mia found it."]))
    ends = ["--a", "Tom had a cat.", "--b", "Mia found it.", "--steps", "4"]
    assert main(["vae", "interpolate", "--model", str(export), *ends, "--refine-steps", "3"]) == 0
    want = interpolate_texts(model, tok, "Tom had a cat.", "Mia found it.", 4, refine_steps=3)
    assert capsys.readouterr().out.splitlines() == [f"{i / 3:.2f}  {text}" for i, text in enumerate(want)]
    assert main(["vae", "encode", "--model", str(export), "--input", str(tmp_path / "in.txt"),
                 "--output", str(tmp_path / "z.npy"), "--refine-steps", "-1"]) == 2  # fmt: skip
    assert "refinement steps must be an integer >= 0" in capsys.readouterr().err
    # this briefly trained model writes back none of these sentences: an exact bank has none left
    (tmp_path / "bank.txt").write_text("Tom had a cat.\nMia found it.\nSue had a hat.\n")
    assert main(["vae", "interpolate", "--model", str(export), *ends, "--method", "geodesic",
                 "--bank", str(tmp_path / "bank.txt"), "--bank-k", "1"]) == 2  # fmt: skip
    assert "that its code reconstructs" in capsys.readouterr().err
