"""GPT-2 against transformers (PyTorch, CPU, float32): random weights, both directions."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.models import GPT2, GPT2Config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4

CONFIGS = {
    "tied-gelu_new": dict(n_layer=2, n_embd=64, n_head=4, vocab_size=300, n_positions=64),
    "untied-relu-ninner": dict(
        n_layer=3,
        n_embd=48,
        n_head=3,
        n_inner=80,
        vocab_size=257,
        n_positions=40,
        activation_function="relu",
        tie_word_embeddings=False,
    ),
    "one-layer-gelu-eps": dict(
        n_layer=1,
        n_embd=32,
        n_head=8,
        vocab_size=100,
        n_positions=32,
        activation_function="gelu",
        layer_norm_epsilon=1e-6,
    ),
}


@eqx.filter_jit
def _logits(model, ids):
    """A batch's logits, compiled as one program (op by op, a tiny model's forward is mostly dispatch)."""
    return jax.vmap(model)(ids)


def _hf_model(kwargs, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(**kwargs)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # randomize norms and biases so that they are really checked
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
    return model


def _hf_logits(model, ids: np.ndarray, attention_mask=None) -> np.ndarray:
    with torch.no_grad():
        kwargs = {} if attention_mask is None else {"attention_mask": torch.tensor(attention_mask)}
        return model(torch.tensor(ids), **kwargs).logits.numpy()


def _randomize(model: GPT2, seed: int) -> GPT2:
    leaves, treedef = jax.tree.flatten(model)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [
        x + 0.3 * jax.random.normal(k, x.shape, x.dtype)
        if isinstance(x, jax.Array) and x.ndim <= 2 and "float" in str(x.dtype)
        else x
        for x, k in zip(leaves, keys)
    ]
    return jax.tree.unflatten(treedef, new)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_hf_to_eqxllm(tmp_path, name):
    kwargs = CONFIGS[name]
    hf = _hf_model(kwargs)
    hf.save_pretrained(tmp_path)
    model = eqxllm.from_pretrained(tmp_path)
    assert isinstance(model, GPT2)
    ids = np.random.default_rng(0).integers(0, kwargs["vocab_size"], size=(3, kwargs["n_positions"] // 2))
    ours = np.asarray(_logits(model, jnp.asarray(ids)))
    ref = _hf_logits(hf, ids)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= TOL


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_eqxllm_to_hf(tmp_path, name):
    kwargs = CONFIGS[name]
    model = _randomize(GPT2(GPT2Config(**kwargs), key=jax.random.key(1)), seed=2)
    eqxllm.save_pretrained(model, tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids = np.random.default_rng(1).integers(0, kwargs["vocab_size"], size=(2, kwargs["n_positions"]))
    ours = np.asarray(_logits(model, jnp.asarray(ids)))
    assert np.abs(ours - _hf_logits(hf, ids)).max() <= TOL


def test_eqxllms_own_activation_name_is_saved_as_transformers_names_it(tmp_path):
    """``gelu_tanh`` is eqxllm's alias; transformers' ACT2FN knows the function as ``gelu_pytorch_tanh``."""
    kwargs = dict(CONFIGS["one-layer-gelu-eps"], activation_function="gelu_tanh")
    model = _randomize(GPT2(GPT2Config(**kwargs), key=jax.random.key(1)), seed=2)
    eqxllm.save_pretrained(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["activation_function"] == "gelu_pytorch_tanh"
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids = np.random.default_rng(1).integers(0, kwargs["vocab_size"], size=(2, kwargs["n_positions"]))
    assert np.abs(np.asarray(_logits(model, jnp.asarray(ids))) - _hf_logits(hf, ids)).max() <= TOL


def test_left_padded_batch_matches_hf_and_unpadded(tmp_path):
    kwargs = CONFIGS["tied-gelu_new"]
    hf = _hf_model(kwargs, seed=3)
    hf.save_pretrained(tmp_path)
    model = eqxllm.from_pretrained(tmp_path)
    rng = np.random.default_rng(3)
    ids = rng.integers(0, kwargs["vocab_size"], size=(2, 12))
    mask = np.ones((2, 12), bool)
    mask[1, :5] = False  # second row left-padded by 5
    ours = np.asarray(jax.vmap(lambda i, m: model(i, mask=m))(jnp.asarray(ids), jnp.asarray(mask)))
    alone = np.asarray(model(jnp.asarray(ids[1, 5:])))
    assert np.abs(ours[1, 5:] - alone).max() <= TOL
    # transformers derives positions from the mask only in generate; give them explicitly
    pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    with torch.no_grad():
        ref = hf(
            torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64)), position_ids=torch.tensor(pos)
        ).logits.numpy()
    assert np.abs(ours[:, :][mask] - ref[mask]).max() <= TOL


def test_base_model_checkpoint_without_prefix(tmp_path):
    kwargs = CONFIGS["tied-gelu_new"]
    hf = _hf_model(kwargs, seed=4)
    hf.transformer.save_pretrained(tmp_path)  # GPT2Model: keys "h.0...." without "transformer."
    model = eqxllm.from_pretrained(tmp_path)
    ids = np.arange(10)[None] % kwargs["vocab_size"]
    assert np.abs(np.asarray(_logits(model, jnp.asarray(ids))) - _hf_logits(hf, ids)).max() <= TOL


def test_bfloat16_load(tmp_path):
    hf = _hf_model(CONFIGS["tied-gelu_new"], seed=5)
    hf.save_pretrained(tmp_path)
    model = eqxllm.from_pretrained(tmp_path, dtype=jnp.bfloat16)
    assert model.wte.weight.dtype == jnp.bfloat16
    logits = model(jnp.arange(8))
    assert logits.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(logits.astype(jnp.float32))))


def test_reorder_and_upcast_attn_round_trips_and_matches_hf(tmp_path):
    """The flag survives load and save, and a model with it computes transformers' upcast attention."""
    kwargs = dict(CONFIGS["tied-gelu_new"], reorder_and_upcast_attn=True)
    hf = _hf_model(kwargs, seed=6)
    hf.config._attn_implementation = "eager"  # transformers honours the flag only in eager attention
    hf.save_pretrained(tmp_path / "src")
    model = eqxllm.from_pretrained(tmp_path / "src")
    assert model.config.reorder_and_upcast_attn is True
    ids = np.random.default_rng(6).integers(0, kwargs["vocab_size"], size=(2, 16))
    assert np.abs(np.asarray(_logits(model, jnp.asarray(ids))) - _hf_logits(hf, ids)).max() <= TOL
    eqxllm.save_pretrained(model, tmp_path / "dst")
    assert transformers.GPT2Config.from_pretrained(tmp_path / "dst").reorder_and_upcast_attn is True


def test_bfloat16_attention_is_transformers_upcast_attention():
    """In bfloat16, eqxllm's attention equals transformers' ``_upcast_and_reordered_attn`` (float32
    scores and softmax) exactly, and differs from its plain bfloat16 eager attention."""
    from transformers.models.gpt2.modeling_gpt2 import GPT2Attention, eager_attention_forward

    from eqxllm.nn import dot_product_attention

    hf_cfg = transformers.GPT2Config(n_embd=64, n_head=4, reorder_and_upcast_attn=True)
    attn = GPT2Attention(hf_cfg, layer_idx=0).eval()
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 4, 32, 16, generator=g).mul(3).bfloat16() for _ in range(2))  # large scores
    v = torch.randn(1, 4, 32, 16, generator=g).bfloat16()
    causal = torch.tril(torch.ones(32, 32, dtype=torch.bool))
    additive = torch.where(causal, 0.0, torch.finfo(torch.float32).min)[None, None]
    with torch.no_grad():
        upcast = attn._upcast_and_reordered_attn(q, k, v, additive)[0][0].float().numpy()
        plain = eager_attention_forward(attn, q, k, v, additive.bfloat16(), scaling=attn.scaling)[0][0]
    to_jax = lambda x: jnp.asarray(x[0].transpose(0, 1).float().numpy(), jnp.bfloat16)  # noqa: E731
    for impl in ("xla", "jax"):
        ours = dot_product_attention(
            to_jax(q), to_jax(k), to_jax(v), mask=jnp.asarray(causal.numpy()), scale=attn.scaling, impl=impl
        )
        np.testing.assert_array_equal(np.asarray(ours.astype(jnp.float32)), upcast)
    assert np.abs(plain.float().numpy() - upcast).max() > 0.02  # bfloat16 scores would have shown
