"""A 124M-shaped checkpoint written by transformers round-trips bit for bit; sharded saves load back."""

import json

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

import eqxllm

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _tensors(directory):
    index = directory / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = {}
    for f in files:
        out.update(load_file(directory / f))
    return out


def test_gpt2_124m_round_trip_is_bit_identical(tmp_path):
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    src, dst = tmp_path / "src", tmp_path / "dst"
    hf.save_pretrained(src)
    del hf
    model = eqxllm.from_pretrained(src)
    assert model.config.n_layer == 12 and model.config.n_embd == 768
    eqxllm.save_pretrained(model, dst)
    a, b = _tensors(src), _tensors(dst)
    a = {
        k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k: v
        for k, v in a.items()
        if not k.endswith((".attn.bias", ".attn.masked_bias"))
    }
    a.pop("lm_head.weight", None)  # tied: written once
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k
    assert json.loads((dst / "config.json").read_text())["model_type"] == "gpt2"


def test_sharded_save_round_trip(tmp_path):
    from eqxllm.models import GPT2, GPT2Config

    model = GPT2(GPT2Config.tiny(), key=jax.random.key(0))
    eqxllm.save_pretrained(model, tmp_path, max_shard_size=40_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 3
    back = eqxllm.from_pretrained(tmp_path)
    for x, y in zip(jax.tree.leaves(model), jax.tree.leaves(back)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path)  # transformers reads our shards
    assert hf.config.n_layer == 2


def test_a_gated_mlp_is_saved_as_a_type_transformers_refuses(tmp_path):
    from eqxllm.models import GPT2, GPT2Config

    model = GPT2(GPT2Config.tiny().replace(mlp="swiglu", use_bias=False), key=jax.random.key(0))
    eqxllm.save_pretrained(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "eqxllm_gpt2" and "architectures" not in config
    back = eqxllm.from_pretrained(tmp_path)
    assert back.config == model.config
    ids = jax.numpy.arange(10) % model.config.vocab_size
    np.testing.assert_array_equal(np.asarray(back(ids)), np.asarray(model(ids)))
    # as "gpt2", transformers loaded it without the gate and computed another model
    with pytest.raises((ValueError, KeyError), match="eqxllm_gpt2"):
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
