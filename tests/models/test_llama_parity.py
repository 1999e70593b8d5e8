"""Llama, Mistral, Qwen2 and Qwen3 against transformers (PyTorch, CPU, float32, eager attention):
random weights with randomized norm scales, both directions (a transformers ``save_pretrained``
loads with ``eqxllm.from_pretrained``; ``eqxllm.save_pretrained`` loads in transformers), GQA,
untied heads, rotary scaling (linear, llama3, and yarn over a sequence longer than its original
context), a sliding window shorter than the sequence, biases and q/k norms."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

import eqxllm
from eqxllm.models import Llama, LlamaConfig

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4
SEQ = 20  # longer than every window below and than the original context of yarn (16)
_BASE = dict(
    vocab_size=300, hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=64, num_hidden_layers=3, tie_word_embeddings=False,
)  # fmt: skip
_LLAMA3 = dict(rope_type="llama3", factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0,
               original_max_position_embeddings=16, rope_theta=10000.0)  # fmt: skip
# factor = max_position_embeddings / original_max_position_embeddings, as transformers expects (else it warns)
_YARN = dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=16, beta_fast=2.0, rope_theta=100.0)
# name -> (config class, model class, changes to _BASE)
CASES = {
    "llama-llama3-rope": ("LlamaConfig", "LlamaForCausalLM", dict(rope_parameters=_LLAMA3)),
    "llama-linear-bias-tied": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(
            rope_parameters=dict(rope_type="linear", factor=2.0, rope_theta=500.0),
            attention_bias=True,
            mlp_bias=True,
            tie_word_embeddings=True,
            num_key_value_heads=1,
        ),
    ),  # fmt: skip
    "mistral-window": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=5, head_dim=24)),
    "qwen2-yarn-rope": ("Qwen2Config", "Qwen2ForCausalLM", dict(rope_parameters=_YARN)),
    "qwen2-bias-window": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        dict(use_sliding_window=True, sliding_window=4, max_window_layers=1),
    ),
    "qwen3-qk-norm": (
        "Qwen3Config",
        "Qwen3ForCausalLM",
        dict(head_dim=32, tie_word_embeddings=True, attention_bias=True),
    ),
    "mixtral-top2-of-4": (
        "MixtralConfig",
        "MixtralForCausalLM",
        dict(num_local_experts=4, num_experts_per_tok=2, sliding_window=6, rope_parameters={"rope_theta": 1e4}),
    ),
}


def random_hf(name: str, seed: int = 0):
    config_cls, model_cls, changes = CASES[name]
    torch.manual_seed(seed)
    cfg = getattr(transformers, config_cls)(**{**_BASE, **changes})
    model = getattr(transformers, model_cls)(cfg)
    model.config._attn_implementation = "eager"  # exact sliding windows
    with torch.no_grad():  # norm scales start at 1: randomise them too
        for pname, p in model.named_parameters():
            p.copy_(1.0 + 0.3 * torch.randn_like(p) if "norm" in pname else 0.08 * torch.randn_like(p))
    return model.eval()


def hf_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(ids)).logits[0].numpy()


@eqx.filter_jit
def _logits(model, ids, mask=None):
    return model(ids, mask=mask)


@eqx.filter_jit
def _decode(model, ids, cache):
    return model.decode(ids, cache)


def eqx_logits(model, ids: np.ndarray) -> np.ndarray:
    return np.asarray(_logits(model, jnp.asarray(ids[0])))


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request, tmp_path_factory):
    hf = random_hf(request.param)
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    return request.param, hf, path, eqxllm.from_pretrained(path)


def test_hf_to_eqxllm(pair):
    name, hf, _, model = pair
    assert isinstance(model, Llama)
    ids = np.random.default_rng(1).integers(0, _BASE["vocab_size"], size=(1, SEQ))
    ref = hf_logits(hf, ids)
    assert np.abs(eqx_logits(model, ids) - ref).max() <= TOL, name


def test_eqxllm_to_hf(pair, tmp_path):
    name, hf, _, model = pair
    eqxllm.save_pretrained(model, tmp_path)
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert type(back) is type(hf)
    ids = np.random.default_rng(2).integers(0, _BASE["vocab_size"], size=(1, SEQ))
    assert np.abs(hf_logits(back, ids) - hf_logits(hf, ids)).max() <= TOL, name
    assert eqxllm.load_config(tmp_path) == model.config


def test_switches_matter(pair, tmp_path):
    """The feature each case exercises changes the logits, so the parity above is not vacuous."""
    name, hf, path, model = pair
    cfg = json.loads((path / "config.json").read_text())
    change = {
        "llama-llama3-rope": {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}},
        "llama-linear-bias-tied": {"rope_parameters": {"rope_type": "default", "rope_theta": 500.0}},
        "mistral-window": {"sliding_window": None},
        "qwen2-yarn-rope": {"rope_parameters": {"rope_type": "default", "rope_theta": 100.0}},
        "qwen2-bias-window": {"use_sliding_window": False, "layer_types": None},
        "qwen3-qk-norm": {"rope_parameters": {"rope_type": "default", "rope_theta": 20000.0}},
        "mixtral-top2-of-4": {"num_experts_per_tok": 1},
    }[name]
    cfg.update(change)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    for f in path.glob("*.safetensors"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    ids = np.random.default_rng(3).integers(0, _BASE["vocab_size"], size=(1, SEQ))
    assert np.abs(eqx_logits(eqxllm.from_pretrained(tmp_path), ids) - hf_logits(hf, ids)).max() > 1e-3


def test_mixtral_routing_equals_transformers(pair):
    """Every layer's router logits, and so the top-2 experts each token goes to, equal the reference's."""
    name, hf, _, model = pair
    if not name.startswith("mixtral"):
        pytest.skip("dense model")
    ids = np.random.default_rng(5).integers(0, _BASE["vocab_size"], size=(1, SEQ))
    with torch.no_grad():
        ref = np.stack([r.numpy() for r in hf(torch.tensor(ids), output_router_logits=True).router_logits])
    _, _, ours = eqx.filter_jit(lambda m, x: m.forward(x))(model, jnp.asarray(ids[0]))
    assert ours.shape == ref.shape == (_BASE["num_hidden_layers"], SEQ, 4)
    assert np.abs(np.asarray(ours) - ref).max() <= TOL
    np.testing.assert_array_equal(np.argsort(-np.asarray(ours))[..., :2], np.argsort(-ref)[..., :2])


def test_mixtral_with_fused_experts_loads(pair, tmp_path):
    """transformers 5 can save its in-memory layout (one ``gate_up_proj`` and one ``down_proj`` per layer,
    the router as ``mlp.gate``); it loads as the Hub's per-expert layout does."""
    name, hf, _, model = pair
    if not name.startswith("mixtral"):
        pytest.skip("dense model")
    hf.save_pretrained(tmp_path, save_original_format=False)
    keys = load_file(tmp_path / "model.safetensors").keys()
    assert "model.layers.0.mlp.experts.gate_up_proj" in keys and not any("block_sparse_moe" in k for k in keys)
    ids = np.random.default_rng(6).integers(0, _BASE["vocab_size"], size=(1, SEQ))
    assert np.abs(eqx_logits(eqxllm.from_pretrained(tmp_path), ids) - hf_logits(hf, ids)).max() <= TOL


def test_padded_batch_and_cache_match_full_pass(pair):
    """Left padding and the KV cache (prefill then one token at a time) give the logits of a plain pass."""
    _, _, _, model = pair
    ids = jnp.asarray(np.random.default_rng(4).integers(0, _BASE["vocab_size"], size=SEQ))
    full = _logits(model, ids)
    padded = _logits(model, jnp.concatenate([jnp.zeros(3, jnp.int32), ids]), jnp.arange(SEQ + 3) >= 3)
    np.testing.assert_allclose(padded[3:], full, atol=1e-5)
    cache = model.init_cache(SEQ)
    logits, cache = _decode(model, ids[:7], cache)
    steps = [logits]
    for t in range(7, SEQ):  # one program for every single-token step
        logits, cache = _decode(model, ids[t : t + 1], cache)
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps), full, atol=1e-5)


def test_sharded_and_bfloat16_checkpoints(pair, tmp_path):
    """Multi-file checkpoints (an index and shards) load; bfloat16 weights load with dtype=None."""
    _, _, _, model = pair
    eqxllm.save_pretrained(model, tmp_path, max_shard_size=20_000, dtype=jnp.bfloat16)
    assert (tmp_path / "model.safetensors.index.json").is_file()
    back = eqxllm.from_pretrained(tmp_path, dtype=None)
    assert back.embed.weight.dtype == jnp.bfloat16
    same = jax.tree.map(lambda a, b: bool(jnp.all(a.astype(jnp.bfloat16) == b)), model, back)
    assert all(jax.tree.leaves(same))


def test_config_is_the_one_transformers_reads(pair):
    name, hf, path, model = pair
    cfg: LlamaConfig = model.config
    spec = cfg.decoder
    head_dim = getattr(hf.config, "head_dim", None) or hf.config.hidden_size // hf.config.num_attention_heads
    assert spec.num_kv_heads == hf.config.num_key_value_heads and spec.head_dim == head_dim
    assert cfg.layer_types == tuple(getattr(hf.config, "layer_types", None) or cfg.layer_types)
    assert spec.sliding_flags == tuple(t == "sliding_attention" for t in cfg.layer_types)  # type: ignore[union-attr]
