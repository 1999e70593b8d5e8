"""Every malformed checkpoint gets a specific exception whose message names the key and the facts."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import eqxllm
from eqxllm.errors import (
    CheckpointError,
    ConfigError,
    DtypeMismatchError,
    InputError,
    MissingKeyError,
    ShapeMismatchError,
    UnexpectedKeyError,
    UnknownModelTypeError,
)
from eqxllm.models import GPT2, GPT2Config


@pytest.fixture
def saved(tmp_path):
    model = GPT2(GPT2Config.tiny(), key=jax.random.key(0))
    eqxllm.save_pretrained(model, tmp_path)
    return tmp_path


def _edit_tensors(directory, edit):
    tensors = load_file(directory / "model.safetensors")
    edit(tensors)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


def _edit_config(directory, edit):
    cfg = json.loads((directory / "config.json").read_text())
    edit(cfg)
    (directory / "config.json").write_text(json.dumps(cfg))


def test_missing_key(saved):
    _edit_tensors(saved, lambda t: t.pop("transformer.h.1.mlp.c_fc.weight"))
    with pytest.raises(MissingKeyError, match=r"transformer\.h\.1\.mlp\.c_fc\.weight"):
        eqxllm.from_pretrained(saved)


def test_unexpected_key(saved):
    _edit_tensors(saved, lambda t: t.update({"transformer.h.7.extra.weight": np.zeros((2, 2), np.float32)}))
    with pytest.raises(UnexpectedKeyError, match=r"transformer\.h\.7\.extra\.weight"):
        eqxllm.from_pretrained(saved)


def test_more_layers_than_config(saved):
    _edit_config(saved, lambda c: c.update(n_layer=1))
    with pytest.raises(UnexpectedKeyError, match=r"transformer\.h\.1\."):
        eqxllm.from_pretrained(saved)


def test_wrong_shape_names_key_and_both_shapes(saved):
    _edit_tensors(saved, lambda t: t.update({"transformer.wpe.weight": np.zeros((64, 64), np.float32)}))
    with pytest.raises(ShapeMismatchError) as err:
        eqxllm.from_pretrained(saved)
    msg = str(err.value)
    assert "transformer.wpe.weight" in msg and "(64, 64)" in msg and "(128, 64)" in msg


def test_config_disagreeing_with_weights(saved):
    _edit_config(saved, lambda c: c.update(n_embd=128, n_head=4))
    with pytest.raises(ShapeMismatchError, match="128"):
        eqxllm.from_pretrained(saved)


def test_wrong_dtype(saved):
    _edit_tensors(saved, lambda t: t.update({"transformer.ln_f.weight": np.ones((64,), np.int32)}))
    with pytest.raises(DtypeMismatchError, match=r"transformer\.ln_f\.weight.*int32"):
        eqxllm.from_pretrained(saved)


def test_float8_weights_are_named_and_refused(saved):
    # FP8 checkpoints store scaled float8 weights; eqxllm loads floating weights of 16 bits or more
    _edit_tensors(saved, lambda t: t.update({"transformer.ln_f.weight": np.ones((64,), jnp.float8_e4m3fn)}))
    with pytest.raises(DtypeMismatchError, match=r"transformer\.ln_f\.weight.*float8_e4m3fn"):
        eqxllm.from_pretrained(saved)


def test_unknown_model_type(saved):
    _edit_config(saved, lambda c: c.update(model_type="llama_v9"))
    with pytest.raises(UnknownModelTypeError, match=r"llama_v9.*gpt2"):
        eqxllm.from_pretrained(saved)


def test_missing_model_type(saved):
    _edit_config(saved, lambda c: c.pop("model_type"))
    with pytest.raises(UnknownModelTypeError, match="no 'model_type'"):
        eqxllm.from_pretrained(saved)


def test_missing_and_invalid_config(tmp_path, saved):
    (saved / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        eqxllm.from_pretrained(saved)
    (saved / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        eqxllm.from_pretrained(saved)


def test_unsupported_hf_option_refused(saved):
    _edit_config(saved, lambda c: c.update(scale_attn_by_inverse_layer_idx=True))
    with pytest.raises(ConfigError, match="scale_attn_by_inverse_layer_idx"):
        eqxllm.from_pretrained(saved)


def test_tied_config_with_different_head(saved):
    def add_head(t):
        t["lm_head.weight"] = t["transformer.wte.weight"] + 1.0

    _edit_tensors(saved, add_head)
    with pytest.raises(CheckpointError, match="tie_word_embeddings"):
        eqxllm.from_pretrained(saved)


def test_failed_save_leaves_previous_checkpoint_intact(saved, monkeypatch):
    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    other = GPT2(GPT2Config.tiny(), key=jax.random.key(7))

    import eqxllm.checkpoints.api as api

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(api, "write_checkpoint", boom)
    with pytest.raises(OSError, match="disk full"):
        eqxllm.save_pretrained(other, saved)
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before


def test_token_ids_out_of_range_and_sequence_too_long():
    model = GPT2(GPT2Config.tiny(), key=jax.random.key(0))
    with pytest.raises(InputError, match=r"token ids must be in \[0, 512\)"):
        jax.block_until_ready(model(jnp.array([1, 2, 512])))
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"token ids must be in \[0, 512\)"):
        jax.block_until_ready(eqx.filter_jit(model)(jnp.array([-1, 2, 3])))
    with pytest.raises(InputError, match=r"129 tokens.*n_positions=128"):
        model(jnp.zeros((129,), jnp.int32))
    with pytest.raises(InputError, match="empty"):
        model(jnp.zeros((0,), jnp.int32))
