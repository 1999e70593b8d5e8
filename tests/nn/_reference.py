"""NumPy references written from the papers' equations (they never call eqxllm), shared by the layer
tests, and a helper that randomises a module's weights so that zero biases and unit norm scales cannot
hide a mistake. Everything here computes in float64."""

import equinox as eqx
import jax
import numpy as np


def randomize(module, key, std: float = 0.5):
    """``module`` with every floating array leaf replaced by ``N(0, std^2)`` values of its shape and dtype."""
    params, static = eqx.partition(module, eqx.is_inexact_array)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    new = [std * jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves, strict=True)]
    return eqx.combine(jax.tree.unflatten(treedef, new), static)


def np64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def linear(x: np.ndarray, layer) -> np.ndarray:
    """``x W^T + b`` from an ``eqxllm.nn.Linear``'s stored ``[out, in]`` weight."""
    y = x @ np64(layer.weight).T
    return y if layer.bias is None else y + np64(layer.bias)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float, unit_offset: bool) -> np.ndarray:
    """Zhang & Sennrich (2019): ``x / sqrt(mean(x^2) + eps) * g`` with ``g = w`` or Gemma's ``1 + w``."""
    g = 1.0 + w if unit_offset else w
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g


def attention(q, k, v, *, mask=None, bias=None, scale: float, softcap: float | None = None) -> np.ndarray:
    """Scaled dot-product attention, one query head at a time. Query head ``h`` reads key/value head
    ``h // (heads // kv_heads)`` (Ainslie et al., 2023; Hugging Face's ``repeat_kv``). Soft-capping
    comes before the bias and the mask (Gemma 2). Fully masked rows come out NaN here."""
    seq, heads, _ = q.shape
    group = heads // k.shape[1]
    out = np.zeros((seq, heads, v.shape[-1]))
    for h in range(heads):
        logits = scale * q[:, h] @ k[:, h // group].T
        if softcap is not None:
            logits = softcap * np.tanh(logits / softcap)
        if bias is not None:
            logits = logits + bias[h]
        if mask is not None:
            logits = np.where(mask, logits, -np.inf)
        with np.errstate(invalid="ignore"):
            out[:, h] = softmax(logits) @ v[:, h // group]
    return out


def rotary_cos_sin(positions, head_dim: int, base: float = 10000.0, scale: float = 1.0):
    """RoFormer angles ``p * base^(-2i/d)`` (Su et al., 2021), positions divided by ``scale`` (linear
    interpolation, Chen et al., 2023), duplicated over both halves as in Hugging Face's Llama."""
    inv_freq = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    freqs = np.outer(np.asarray(positions, np.float64) / scale, inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb), np.sin(emb)


def rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Hugging Face's ``apply_rotary_pos_emb`` for ``x [seq, heads, head_dim]``."""
    return x * cos[:, None, :] + rotate_half(x) * sin[:, None, :]
