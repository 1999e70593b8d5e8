"""T5 against transformers (PyTorch, CPU, float32): random weights with randomized norms, both directions,
and checkpoints laid out as transformers v4 and v5 write them.

Written against transformers 5.23. Version 5 changed how T5 ties and scales its head (``tie_word_embeddings``
is always true in memory, ``scale_decoder_outputs`` holds the scaling, an untied head is recognised from the
weights); the reference models built here rely on that, so other major versions are skipped.
"""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import eqxllm
from eqxllm.errors import CheckpointError
from eqxllm.models import T5, T5Config
from eqxllm.nn import RMSNorm

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.skipif(
    int(transformers.__version__.split(".")[0]) != 5,
    reason=f"written against transformers 5.x (5.23); found {transformers.__version__}, whose T5 head tying differs",
)

TOL = 1e-4

CONFIGS = {
    "v1_0-tied-relu": dict(vocab_size=120, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),
    "v1_1-untied-gated-gelu-deeper-decoder": dict(
        vocab_size=97, d_model=48, d_kv=12, d_ff=40, num_layers=1, num_decoder_layers=3, num_heads=3,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        relative_attention_num_buckets=16, relative_attention_max_distance=20,
    ),
    "untied-gated-silu-shallower-decoder": dict(
        vocab_size=64, d_model=24, d_kv=6, d_ff=56, num_layers=3, num_decoder_layers=2, num_heads=2,
        feed_forward_proj="gated-silu", tie_word_embeddings=False, layer_norm_epsilon=1e-5,
    ),
    "tied-gelu-wide-heads": dict(
        vocab_size=80, d_model=16, d_kv=12, d_ff=32, num_layers=2, num_heads=2, feed_forward_proj="gelu",
        relative_attention_num_buckets=8, relative_attention_max_distance=10,
    ),
}  # fmt: skip


def _hf_model(kwargs, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.T5Config(**kwargs, dropout_rate=0.0, decoder_start_token_id=0)
    model = transformers.T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # randomize norms so that they are really checked
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(torch.randn_like(p) * 0.5 + 1.0)
        if not kwargs.get("tie_word_embeddings", True):  # v5 ties in memory whatever the config says
            model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.shared.weight) * 0.3)
    return model


def _inputs(vocab, seed, batch=2, enc=25, dec=9):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(batch, enc))
    dec_ids = rng.integers(0, vocab, size=(batch, dec))
    mask = np.ones((batch, enc), bool)
    mask[1, enc - 7 :] = False  # second example right-padded by 7
    return ids, dec_ids, mask


def _hf_logits(model, ids, dec_ids, mask=None, dec_mask=None):
    kwargs = {"input_ids": torch.tensor(ids), "decoder_input_ids": torch.tensor(dec_ids)}
    if mask is not None:
        kwargs["attention_mask"] = torch.tensor(mask.astype(np.int64))
    if dec_mask is not None:
        kwargs["decoder_attention_mask"] = torch.tensor(dec_mask.astype(np.int64))
    with torch.no_grad():
        return model(**kwargs).logits.numpy()


@eqx.filter_jit
def _forward(model, ids, dec_ids, mask, dec_mask):
    return jax.vmap(lambda i, d, m, dm: model(i, d, mask=m, decoder_mask=dm))(ids, dec_ids, mask, dec_mask)


def _ours(model, ids, dec_ids, mask, dec_mask=None):
    dec_mask = np.ones(dec_ids.shape, bool) if dec_mask is None else dec_mask
    return np.asarray(_forward(model, *(jnp.asarray(x) for x in (ids, dec_ids, mask, dec_mask))))


def _randomize(model: T5, seed: int) -> T5:
    """Give every norm a random scale (they start at one); the other weights are random already."""
    is_norm = lambda x: isinstance(x, RMSNorm)  # noqa: E731
    norms = [x for x in jax.tree.leaves(model, is_leaf=is_norm) if is_norm(x)]
    keys = jax.random.split(jax.random.key(seed), len(norms))
    new = [n.weight * (1.0 + 0.5 * jax.random.normal(k, n.weight.shape)) for n, k in zip(norms, keys)]
    return eqx.tree_at(lambda m: [n.weight for n in jax.tree.leaves(m, is_leaf=is_norm) if is_norm(n)], model, new)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_hf_to_eqxllm(tmp_path, name):
    kwargs = CONFIGS[name]
    hf = _hf_model(kwargs)
    hf.save_pretrained(tmp_path)
    model = eqxllm.from_pretrained(tmp_path)
    assert isinstance(model, T5)
    assert model.config.decoder_layers == kwargs.get("num_decoder_layers", kwargs["num_layers"])
    assert (model.lm_head is None) == kwargs.get("tie_word_embeddings", True)
    ids, dec_ids, mask = _inputs(kwargs["vocab_size"], seed=0)
    ours, ref = _ours(model, ids, dec_ids, mask), _hf_logits(hf, ids, dec_ids, mask)
    assert ours.shape == ref.shape == (2, 9, kwargs["vocab_size"])
    assert np.abs(ours - ref).max() <= TOL


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_eqxllm_to_hf(tmp_path, name):
    kwargs = CONFIGS[name]
    model = _randomize(T5(T5Config(**kwargs, dropout_rate=0.0), key=jax.random.key(1)), seed=2)
    eqxllm.save_pretrained(model, tmp_path)
    hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    tied = hf.lm_head.weight.data_ptr() == hf.shared.weight.data_ptr()
    assert tied == kwargs.get("tie_word_embeddings", True)
    ids, dec_ids, mask = _inputs(kwargs["vocab_size"], seed=1, enc=13, dec=17)
    assert np.abs(_ours(model, ids, dec_ids, mask) - _hf_logits(hf, ids, dec_ids, mask)).max() <= TOL


def test_decoder_padding_mask_matches_hf(tmp_path):
    kwargs = CONFIGS["v1_0-tied-relu"]
    hf = _hf_model(kwargs, seed=3)
    hf.save_pretrained(tmp_path)
    model = eqxllm.from_pretrained(tmp_path)
    ids, dec_ids, mask = _inputs(kwargs["vocab_size"], seed=3)
    dec_mask = np.ones(dec_ids.shape, bool)
    dec_mask[0, 6:] = False
    ours = _ours(model, ids, dec_ids, mask, dec_mask)
    ref = _hf_logits(hf, ids, dec_ids, mask, dec_mask)
    assert np.abs(ours[dec_mask] - ref[dec_mask]).max() <= TOL


def test_v4_layout_with_aliases_and_head_copy(tmp_path):
    """v4 ``.bin`` conversions store ``embed_tokens`` and ``lm_head`` copies of ``shared``, the unused
    cross-attention bias table, and a config without ``scale_decoder_outputs``."""
    kwargs = CONFIGS["v1_0-tied-relu"]
    hf = _hf_model(kwargs, seed=4)
    hf.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    shared = tensors["shared.weight"]
    for alias in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"):
        tensors[alias] = shared.copy()
    tensors["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"] = np.zeros((32, 4), np.float32)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.pop("scale_decoder_outputs")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    model = eqxllm.from_pretrained(tmp_path)
    assert model.lm_head is None and model.config.scales_decoder_outputs
    ids, dec_ids, mask = _inputs(kwargs["vocab_size"], seed=4)
    assert np.abs(_ours(model, ids, dec_ids, mask) - _hf_logits(hf, ids, dec_ids, mask)).max() <= TOL


def test_v4_untied_config_without_scale_field(tmp_path):
    kwargs = CONFIGS["v1_1-untied-gated-gelu-deeper-decoder"]
    hf = _hf_model(kwargs, seed=5)
    hf.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.pop("scale_decoder_outputs")
    cfg["tie_word_embeddings"] = False  # as v4 wrote v1.1 and Flan configs
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    model = eqxllm.from_pretrained(tmp_path)
    assert model.lm_head is not None and not model.config.scales_decoder_outputs
    ids, dec_ids, mask = _inputs(kwargs["vocab_size"], seed=5)
    assert np.abs(_ours(model, ids, dec_ids, mask) - _hf_logits(hf, ids, dec_ids, mask)).max() <= TOL


def test_v5_unscaled_model_with_one_table(tmp_path):
    """v5 builds ``tie_word_embeddings=False`` as a tied, unscaled head and stores only ``shared.weight``."""
    torch.manual_seed(6)
    kwargs = dict(CONFIGS["v1_1-untied-gated-gelu-deeper-decoder"])
    hf = transformers.T5ForConditionalGeneration(transformers.T5Config(**kwargs, dropout_rate=0.0)).eval()
    hf.save_pretrained(tmp_path)
    assert "lm_head.weight" not in load_file(tmp_path / "model.safetensors")
    model = eqxllm.from_pretrained(tmp_path)
    np.testing.assert_array_equal(np.asarray(model.lm_head.weight), np.asarray(model.shared.weight))
    ids, dec_ids, mask = _inputs(kwargs["vocab_size"], seed=6)
    assert np.abs(_ours(model, ids, dec_ids, mask) - _hf_logits(hf, ids, dec_ids, mask)).max() <= TOL


@pytest.mark.parametrize(
    ("alias", "expect"),
    [("encoder.embed_tokens.weight", "encoder.embed_tokens.weight"), ("lm_head.weight", "tie_word_embeddings")],
)
def test_alias_that_differs_is_refused(tmp_path, alias, expect):
    hf = _hf_model(CONFIGS["v1_0-tied-relu"], seed=7)
    hf.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors[alias] = tensors["shared.weight"] + 1.0
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=expect):
        eqxllm.from_pretrained(tmp_path)


def test_round_trip_is_bit_identical(tmp_path):
    hf = _hf_model(CONFIGS["v1_1-untied-gated-gelu-deeper-decoder"], seed=8)
    src, dst = tmp_path / "src", tmp_path / "dst"
    hf.save_pretrained(src)
    eqxllm.save_pretrained(eqxllm.from_pretrained(src), dst)
    a, b = load_file(src / "model.safetensors"), load_file(dst / "model.safetensors")
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
    out = json.loads((dst / "config.json").read_text())
    assert out["model_type"] == "t5" and out["num_decoder_layers"] == 3 and out["feed_forward_proj"] == "gated-gelu"


def test_mt5_loads_as_t5_and_saves_back_as_t5(tmp_path):
    """mT5 is T5 v1.1's architecture (gated GELU, untied head) with a multilingual vocabulary; umT5's
    per-layer position tables are another architecture and stay refused."""
    kwargs = CONFIGS["v1_1-untied-gated-gelu-deeper-decoder"]
    torch.manual_seed(3)
    hf = transformers.MT5ForConditionalGeneration(transformers.MT5Config(**kwargs, dropout_rate=0.0)).eval()
    with torch.no_grad():  # a head of its own, as the released mT5 checkpoints have
        hf.lm_head.weight = torch.nn.Parameter(torch.randn_like(hf.shared.weight) * 0.3)
    hf.save_pretrained(tmp_path / "mt5")
    assert json.loads((tmp_path / "mt5" / "config.json").read_text())["model_type"] == "mt5"
    model = eqxllm.from_pretrained(tmp_path / "mt5")
    ids, dec_ids, mask = _inputs(kwargs["vocab_size"], seed=4)
    ref = _hf_logits(hf, ids, dec_ids, mask)
    assert np.abs(_ours(model, ids, dec_ids, mask) - ref).max() <= TOL
    eqxllm.save_pretrained(model, tmp_path / "back")
    back = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "back").eval()
    assert np.abs(_hf_logits(back, ids, dec_ids, mask) - ref).max() <= TOL
    cfg = json.loads((tmp_path / "mt5" / "config.json").read_text())
    (tmp_path / "mt5" / "config.json").write_text(json.dumps({**cfg, "model_type": "umt5"}))
    with pytest.raises(CheckpointError, match="umt5"):
        eqxllm.from_pretrained(tmp_path / "mt5")
