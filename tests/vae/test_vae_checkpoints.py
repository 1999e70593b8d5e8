"""T5-VAE checkpoints: an exact round trip, the T5 part under HF key names (transformers loads it once
extracted), a VAE started from a pretrained T5, and specific errors for broken files."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

import eqxllm
from eqxllm.checkpoints.t5_vae import extract_t5
from eqxllm.errors import CheckpointError, ConfigError, MissingKeyError
from eqxllm.models import T5VAE, T5VAEConfig

CONFIGS = {
    "first-mmd": dict(),
    "attention-kl-untied": dict(pooling="attention", regulariser="kl", latent_activation="none"),
    "mean": dict(pooling="mean", n_latent_tokens=1),
    "bag-of-words-splice": dict(bow_weight=0.5, splice_weight=1.0),
}


def _leaves(model):
    return [np.asarray(x) for x in jax.tree.leaves(model)]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_round_trip_is_bit_exact(tmp_path, name):
    cfg = T5VAEConfig.tiny(**CONFIGS[name])
    if name == "attention-kl-untied":
        cfg = cfg.replace(t5=cfg.t5.replace(tie_word_embeddings=False, feed_forward_proj="gated-gelu"))
    model = T5VAE(cfg, key=jax.random.key(1))
    eqxllm.save_pretrained(model, tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    assert hf["model_type"] == "t5_vae" and hf["t5"]["model_type"] == "t5"
    back = eqxllm.from_pretrained(tmp_path)
    assert isinstance(back, T5VAE) and back.config == cfg
    for a, b in zip(_leaves(model), _leaves(back), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    keys = set(load_file(tmp_path / "model.safetensors"))
    assert "shared.weight" in keys and "encoder.block.1.layer.1.DenseReluDense.wo.weight" in keys
    assert {k for k in keys if k.startswith("vae.")} >= {"vae.to_latent.weight", "vae.from_latent.bias"}
    assert ("vae.bow_head.weight" in keys) == (cfg.bow_weight > 0)


def test_configs_with_retired_fields_load_at_their_retired_values(tmp_path):
    model = T5VAE(T5VAEConfig.tiny(), key=jax.random.key(1))
    eqxllm.save_pretrained(model, tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    old = {"splice_junction": "shared", "word_deletion": 0.0, "code_dropout": 0.0}  # measured, then removed
    (tmp_path / "config.json").write_text(json.dumps({**hf, **old}))
    assert eqxllm.from_pretrained(tmp_path).config == model.config
    assert T5VAEConfig.from_dict({**dataclasses.asdict(model.config), **old}) == model.config
    (tmp_path / "config.json").write_text(json.dumps({**hf, "code_dropout": 0.1}))
    with pytest.raises(ConfigError, match="code_dropout"):
        eqxllm.from_pretrained(tmp_path)


def test_extracted_t5_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    model = T5VAE(T5VAEConfig.tiny(), key=jax.random.key(2))
    eqxllm.save_pretrained(model, tmp_path / "vae")
    extract_t5(tmp_path / "vae", tmp_path / "t5")
    hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "t5").eval()
    ours = {k: v.shape for k, v in load_file(tmp_path / "t5" / "model.safetensors").items()}
    theirs = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    assert all(theirs[k] == tuple(s) for k, s in ours.items())  # every tensor found its place
    # and the weights are the VAE's T5: same encoder states
    ids = np.arange(1, 9)[None]
    with torch.no_grad():
        ref = hf.encoder(input_ids=torch.tensor(ids)).last_hidden_state.numpy()[0]
    np.testing.assert_allclose(np.asarray(model.t5.encode(jnp.asarray(ids[0]))), ref, atol=1e-4)
    assert isinstance(eqxllm.from_pretrained(tmp_path / "t5"), eqxllm.models.T5)


def test_broken_checkpoints_raise_specific_errors(tmp_path):
    model = T5VAE(T5VAEConfig.tiny(), key=jax.random.key(0))
    eqxllm.save_pretrained(model, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    # a config that says attention pooling: the weights lack the pooling queries
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "pooling": "attention"}))
    with pytest.raises(MissingKeyError, match="vae.pool"):
        eqxllm.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "t5"}))
    with pytest.raises(ConfigError, match="under 't5'"):
        eqxllm.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "latent_dims": 3}))
    with pytest.raises(ConfigError, match="unknown fields \\['latent_dims'\\]"):
        eqxllm.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg["t5"]))
    with pytest.raises(CheckpointError, match="expected 't5_vae'"):
        extract_t5(tmp_path, tmp_path / "out")
