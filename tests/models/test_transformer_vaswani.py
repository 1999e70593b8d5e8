"""The original Transformer (Vaswani et al., 2017) as a T5Config, against a NumPy transcription of the
paper's equations (float64, tiny sizes), plus cached decoding and the eqxllm-only checkpoint format."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.models import T5, T5Config

TOL = 1e-4


# --- the paper, section 3, in NumPy -----------------------------------------------------------------
def positional_encoding(n: int, d: int) -> np.ndarray:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d))   (section 3.5)"""
    pe = np.zeros((n, d))
    angle = np.arange(n)[:, None] / 10000 ** (np.arange(0, d, 2)[None, :] / d)
    pe[:, 0::2], pe[:, 1::2] = np.sin(angle), np.cos(angle)
    return pe


def layer_norm(x, gain, bias, eps):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * gain + bias


def multi_head(q_in, kv_in, wq, wk, wv, wo, h, allowed):
    """MultiHead(Q, K, V) = Concat(head_1..head_h) W^O, head_i = softmax(Q W_i^Q (K W_i^K)^T / sqrt(d_k)) V W_i^V"""
    d_k = wq.shape[0] // h
    heads = []
    for i in range(h):
        part = slice(i * d_k, (i + 1) * d_k)
        q, k, v = q_in @ wq[part].T, kv_in @ wk[part].T, kv_in @ wv[part].T
        scores = np.where(allowed, q @ k.T / np.sqrt(d_k), -np.inf)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        heads.append(weights / weights.sum(-1, keepdims=True) @ v)
    return np.concatenate(heads, -1) @ wo.T


def ffn(x, w1, b1, w2, b2):
    """FFN(x) = max(0, x W_1 + b_1) W_2 + b_2   (equation 2)"""
    return np.maximum(0, x @ w1.T + b1) @ w2.T + b2


def paper_forward(p, cfg: T5Config, src, tgt, src_mask):
    """Post-norm sub-layers LayerNorm(x + Sublayer(x)); embeddings times sqrt(d_model) plus PE."""
    d, h, eps = cfg.d_model, cfg.num_heads, cfg.layer_norm_epsilon
    x = p["src_emb"][src] * np.sqrt(d) + positional_encoding(len(src), d)
    for lay in p["enc"]:
        x = layer_norm(x + multi_head(x, x, *lay["self"], h, src_mask[None, :]), *lay["ln0"], eps)
        x = layer_norm(x + ffn(x, *lay["ffn"]), *lay["ln1"], eps)
    y = p["tgt_emb"][tgt] * np.sqrt(d) + positional_encoding(len(tgt), d)
    causal = np.tril(np.ones((len(tgt), len(tgt)), bool))
    for lay in p["dec"]:
        y = layer_norm(y + multi_head(y, y, *lay["self"], h, causal), *lay["ln0"], eps)
        y = layer_norm(y + multi_head(y, x, *lay["cross"], h, src_mask[None, :]), *lay["ln1"], eps)
        y = layer_norm(y + ffn(y, *lay["ffn"]), *lay["ln2"], eps)
    return y @ p["out"].T  # pre-softmax linear transformation


def paper_params(model: T5) -> dict:
    """Our weights, renamed to the paper's symbols (one dict per layer)."""
    f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731

    def layers(stack, names):
        b = stack.layers.blocks
        out = []
        for i in range(stack.layers.num_layers):
            attn = lambda a, i=i: tuple(f64(getattr(a, n).weight[i]) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))  # noqa: E731
            norms = [getattr(b, n) for n in names]
            lay = {f"ln{j}": (f64(n.weight[i]), f64(n.bias[i])) for j, n in enumerate(norms)}
            lay["self"] = attn(b.self_attn)
            if b.cross_attn is not None:
                lay["cross"] = attn(b.cross_attn)
            lay["ffn"] = (
                f64(b.ffn.up.weight[i]),
                f64(b.ffn.up.bias[i]),
                f64(b.ffn.down.weight[i]),
                f64(b.ffn.down.bias[i]),
            )
            out.append(lay)
        return out

    src = f64(model.shared.weight)
    tgt = src if model.decoder_embed is None else f64(model.decoder_embed.weight)
    return {
        "src_emb": src,
        "tgt_emb": tgt,
        "out": tgt if model.lm_head is None else f64(model.lm_head.weight),
        "enc": layers(model.encoder, ["self_norm", "ffn_norm"]),
        "dec": layers(model.decoder, ["self_norm", "cross_norm", "ffn_norm"]),
    }


# --- tests -------------------------------------------------------------------------------------------
@eqx.filter_jit
def _shifted(model: T5, key) -> T5:
    leaves, treedef = jax.tree.flatten(model)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def _perturbed(cfg: T5Config, seed: int) -> T5:
    """A model whose every weight (LayerNorm gains and biases, FFN biases included) is off its init."""
    return _shifted(T5(cfg, key=jax.random.key(seed)), jax.random.key(seed + 100))


# compiled once per shape: op by op, a tiny model's forward and decoding step are mostly dispatch
_forward = eqx.filter_jit(lambda model, src, tgt, mask=None: model(src, tgt, mask=mask))
_step = eqx.filter_jit(lambda model, ids, cache: model.decode(ids, cache))


TINY = T5Config.transformer_tiny().replace(vocab_size=50, d_model=16, d_kv=8, d_ff=32, num_heads=2, dropout_rate=0.0)
CONFIGS = {
    "shared-tied": TINY,
    "separate-untied-deeper-decoder": TINY.replace(
        share_embeddings=False, tie_word_embeddings=False, num_layers=1, num_decoder_layers=3
    ),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_the_papers_equations(name):
    cfg = CONFIGS[name]
    model = _perturbed(cfg, seed=0)
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(0, cfg.vocab_size, size=13), rng.integers(0, cfg.vocab_size, size=7)
    src_mask = np.arange(13) < 10  # right-padded by 3
    ours = _forward(model, jnp.asarray(src), jnp.asarray(tgt), jnp.asarray(src_mask))
    ref = paper_forward(paper_params(model), cfg, src, tgt, src_mask)
    assert np.abs(np.asarray(ours) - ref).max() <= TOL


def test_left_and_right_padding_give_the_same_outputs():
    """Positions count real tokens, so sinusoids do not shift under left padding."""
    cfg = CONFIGS["shared-tied"]
    model = _perturbed(cfg, seed=3)
    src, tgt = jnp.arange(1, 8), jnp.arange(2, 6)
    alone = np.asarray(_forward(model, src, tgt))
    pad = jnp.zeros((3,), src.dtype)
    for ids, mask in [
        (jnp.concatenate([pad, src]), jnp.arange(10) >= 3),
        (jnp.concatenate([src, pad]), jnp.arange(10) < 7),
    ]:
        assert np.abs(np.asarray(_forward(model, ids, tgt, mask)) - alone).max() <= TOL


def test_cached_decoding_matches_full_decoder():
    cfg = CONFIGS["separate-untied-deeper-decoder"]
    model = _perturbed(cfg, seed=1)
    src, tgt = jnp.arange(9) % cfg.vocab_size, (jnp.arange(6) * 7) % cfg.vocab_size
    enc = model.encode(src)
    full = np.asarray(model.decode_full(enc, tgt))
    cache = model.init_decoder_cache(enc, None, 8)
    for t in range(tgt.shape[0]):
        logits, cache = _step(model, tgt[t : t + 1], cache)
        assert np.abs(np.asarray(logits[0]) - full[t]).max() <= TOL


def test_checkpoint_round_trip_uses_its_own_model_type(tmp_path):
    model = _perturbed(CONFIGS["separate-untied-deeper-decoder"], seed=2)
    eqxllm.save_pretrained(model, tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    assert hf["model_type"] == "eqxllm_transformer" and "architectures" not in hf
    back = eqxllm.from_pretrained(tmp_path)
    assert back.config == model.config
    assert bool(eqx.tree_equal(back, model))
    transformers = pytest.importorskip("transformers")
    with pytest.raises((ValueError, KeyError)):  # transformers must not mistake it for a T5
        transformers.AutoConfig.from_pretrained(tmp_path)
