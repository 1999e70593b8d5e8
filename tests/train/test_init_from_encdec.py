"""``--init-from`` for the encoder-decoder tasks: a T5 (``seq2seq``) and a T5-VAE (``vae``) checkpoint
whose pad, end and decoder-start ids are not the tokenizer's ``<|endoftext|>``. The first step sees
exactly the loaded weights and the checkpoint's ids, the export keeps the checkpoint's tokenizer file,
changeable fields apply (nested ones too), fixed ones are refused, and a checkpoint without a
tokenizer is refused before anything is trained."""

import dataclasses
import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.data import train_bpe_tokenizer
from eqxllm.errors import ConfigError, DataError
from eqxllm.models import T5, T5VAE, T5Config, T5VAEConfig
from eqxllm.train.config import DataConfig, LoopConfig, TrainConfig, train_preset
from eqxllm.train.init_from import check_model_matches, checkpoint_config
from eqxllm.train.loop import train
from eqxllm.train.optim import OptimConfig
from tests.data._helpers import write_stories

PAD, EOS = "<pad>", "</s>"


def _stories(n: int = 80) -> list[str]:
    rng = np.random.default_rng(0)
    names, things = ["Lily", "Tom", "Mia", "Ben"], ["ball", "cat", "tree", "cake", "kite"]
    return [
        f"{rng.choice(names)} had a {rng.choice(things)}. It was fun. The {rng.choice(things)} fell. The end."
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The stories file and a tokenizer with T5's own ``<pad>`` and ``</s>`` beside ``<|endoftext|>``."""
    root = tmp_path_factory.mktemp("encdec")
    write_stories(root / "stories.txt", _stories())
    tok = train_bpe_tokenizer(_stories(), 300)
    tok.add_special_tokens([PAD, EOS])
    return root, tok


def _ids(tok) -> dict[str, int]:
    return dict(pad_token_id=tok.token_to_id(PAD), eos_token_id=tok.token_to_id(EOS))


@pytest.fixture(scope="module")
def t5_ckpt(base):
    root, tok = base
    cfg = T5Config(
        vocab_size=tok.get_vocab_size(), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1,
        num_heads=2, feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
        decoder_start_token_id=tok.token_to_id(PAD), **_ids(tok),
    )  # fmt: skip
    eqxllm.save_pretrained(T5(cfg, key=jax.random.key(1)), root / "t5", tokenizer=tok)
    return str(root / "t5")


@pytest.fixture(scope="module")
def vae_ckpt(base):
    root, tok = base
    ids = _ids(tok)
    cfg = T5VAEConfig.tiny().with_vocabulary(
        tok.get_vocab_size(), pad=ids["pad_token_id"], eos=ids["eos_token_id"], start=ids["pad_token_id"]
    )
    eqxllm.save_pretrained(T5VAE(cfg, key=jax.random.key(2)), root / "vae", tokenizer=tok)
    return str(root / "vae")


def _loop(**changes) -> LoopConfig:
    where = dict(seq_len=16, batch_size=8, max_steps=1, eval_every=10, eval_batches=1, log_every=1, num_samples=0)
    return LoopConfig(**(where | changes))


def _t5_cfg(root: Path, ckpt: str, out: Path, **model_changes) -> TrainConfig:
    return TrainConfig(
        model=checkpoint_config(ckpt, model_changes),
        task="seq2seq",
        init_from=ckpt,
        data=DataConfig(source=str(root / "stories.txt"), val_fraction=0.1, cache_dir=str(root / "cache")),
        optim=OptimConfig(learning_rate=1e-2, warmup_steps=0, total_steps=1),
        train=_loop(),
        out=str(out),
    )


def _vae_cfg(root: Path, ckpt: str, out: Path, **model_changes) -> TrainConfig:
    cfg = train_preset("t5-vae-test")
    data = dataclasses.replace(cfg.data, source=str(root / "stories.txt"), val_fraction=0.2)
    optim = dataclasses.replace(cfg.optim, total_steps=1, warmup_steps=0)
    model = checkpoint_config(ckpt, model_changes)
    return cfg.replace(model=model, init_from=ckpt, data=data, optim=optim, train=_loop(), out=str(out))


def _first(cfg: TrainConfig, name: str) -> float:
    rows = [json.loads(line) for line in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    return next(r[name] for r in rows if r["kind"] == "train" and r["step"] == 1)


def test_t5_run_starts_from_the_checkpoint_with_its_ids(base, t5_ckpt, tmp_path):
    from eqxllm.train.tasks.seq2seq import Seq2SeqTask, seq2seq_loss

    root, tok = base
    cfg = _t5_cfg(root, t5_ckpt, tmp_path / "run")
    export = train(cfg, progress=False)
    task = Seq2SeqTask(cfg, tmp_path / "probe", progress=False)
    batch = task.batch(0, process_index=0, process_count=1)
    pad, eos = tok.token_to_id(PAD), tok.token_to_id(EOS)
    assert np.all(batch["dec_in"][:, 0] == pad)  # the config's decoder_start_token_id
    ends = batch["dec_mask"].sum(1) - 1
    assert np.all(batch["target"][np.arange(len(ends)), ends] == eos)  # the config's eos_token_id
    assert np.all(batch["enc"][~batch["enc_mask"]] == pad)
    loss, _ = eqx.filter_jit(seq2seq_loss)(eqxllm.from_pretrained(t5_ckpt), jax.tree.map(jnp.asarray, batch), None)
    assert _first(cfg, "loss") == pytest.approx(float(loss), abs=1e-6)
    assert (export / "tokenizer.json").read_bytes() == (Path(t5_ckpt) / "tokenizer.json").read_bytes()
    assert eqxllm.load_config(export) == eqxllm.load_config(t5_ckpt)


def test_t5_vae_run_starts_from_the_checkpoint_with_its_ids(base, vae_ckpt, tmp_path):
    from eqxllm.train.tasks.vae import VAETask
    from eqxllm.train.tasks.vae_loss import vae_loss

    root, tok = base
    cfg = _vae_cfg(root, vae_ckpt, tmp_path / "run")
    train(cfg, progress=False, stop_after_step=1)  # the export is the T5 test's (the same export_run)
    task = VAETask(cfg, tmp_path / "probe", progress=False)
    batch = task.batch(0, process_index=0, process_count=1)
    rows = np.arange(len(batch["lengths"]))
    assert np.all(batch["input_ids"][rows, batch["lengths"] - 1] == tok.token_to_id(EOS))
    # the regulariser draws normal samples from the step's key: the reconstruction term is key-free
    _, aux = eqx.filter_jit(vae_loss)(eqxllm.from_pretrained(vae_ckpt), jax.tree.map(jnp.asarray, batch), None)
    assert _first(cfg, "reconstruction") == pytest.approx(float(aux["reconstruction"]), abs=1e-6)


def test_changeable_fields_apply_and_fixed_ones_are_refused(vae_ckpt, t5_ckpt):
    from eqxllm.cli.train import parse

    cfg = checkpoint_config(vae_ckpt, {"t5.dropout_rate": 0.1, "t5.remat": "full", "reg_weight": 2.0})
    assert cfg.t5.dropout_rate == 0.1 and cfg.t5.remat == "full" and cfg.reg_weight == 2.0
    check_model_matches(cfg, vae_ckpt)
    with pytest.raises(ConfigError, match="--model.latent-size cannot be set with --init-from"):
        checkpoint_config(vae_ckpt, {"latent_size": 4})
    d_ff = cfg.t5.d_ff
    with pytest.raises(ConfigError, match=rf"--model.t5.d-ff={2 * d_ff} \(checkpoint: {d_ff}\) cannot be set"):
        check_model_matches(cfg.replace(t5=cfg.t5.replace(d_ff=2 * d_ff)), vae_ckpt)
    flags = ["--config", "t5-vae-test", "--init-from", vae_ckpt, "--model.t5.dropout-rate", "0.1"]
    parsed = parse([*flags, "--model.reg-weight", "2"])
    assert parsed.task == "vae" and parsed.model.t5.dropout_rate == 0.1 and parsed.model.reg_weight == 2.0
    with pytest.raises(ConfigError, match="--model.t5.d-ff cannot be set with --init-from"):
        parse([*flags, "--model.t5.d-ff", "8"])
    assert checkpoint_config(t5_ckpt, {"dropout_rate": 0.2}).dropout_rate == 0.2
    with pytest.raises(ConfigError, match="--model.d-model cannot be set with --init-from"):
        checkpoint_config(t5_ckpt, {"d_model": 64})


def test_checkpoint_without_tokenizer_is_refused(base, t5_ckpt, tmp_path):
    root, _ = base
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((Path(t5_ckpt) / name).read_bytes())
    cfg = _t5_cfg(root, t5_ckpt, tmp_path / "run").replace(init_from=str(bare))
    with pytest.raises(DataError, match=r"--init-from .*bare holds no tokenizer \(tokenizer.json"):
        train(cfg, progress=False)
    assert not (tmp_path / "run" / "model").exists()


def test_lm_task_refuses_an_encoder_decoder_checkpoint(base, t5_ckpt, tmp_path):
    cfg = _t5_cfg(base[0], t5_ckpt, tmp_path / "run").replace(task="lm")
    with pytest.raises(ConfigError, match="task 'lm' trains decoder-only models, got a 't5' model"):
        train(cfg, progress=False)
