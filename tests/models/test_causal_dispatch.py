"""A whole sequence without padding or a cache reaches ``jax.nn.dot_product_attention`` as ``is_causal``
(with the window of sliding layers, also in stacks that mix them with global ones), so cuDNN runs its
causal kernel, and gives the same logits as the plain path; padded and cached passes keep their
boolean masks."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.models import GPT2, T5, Gemma, GemmaConfig, GPT2Config, Llama, T5Config
from eqxllm.models.llama import LLAMA_PRESETS

SEQ = 12
MODELS = {
    "gpt2": (GPT2, GPT2Config.tiny()),
    "llama": (Llama, LLAMA_PRESETS["llama-tiny"]()),
    "mistral": (Llama, LLAMA_PRESETS["mistral-tiny"]()),  # a window of 8 on every layer
    "gemma3": (Gemma, GemmaConfig.tiny(3)),  # sliding and global layers in one stack
}


def _models(name: str):
    cls, config = MODELS[name]
    return cls(config, key=jax.random.key(0)), cls(config.replace(attention_impl="jax"), key=jax.random.key(0))


@eqx.filter_jit
def _logits(model, *args, **kwargs):
    return model(*args, **kwargs)


def _ids(vocab: int) -> jax.Array:
    return jax.random.randint(jax.random.key(1), (SEQ,), 0, vocab)


@pytest.mark.parametrize("name", list(MODELS))
def test_whole_sequence_is_passed_as_causal(attention_calls, name):
    plain, structured = _models(name)
    ids = _ids(plain.dims.vocab_size)
    np.testing.assert_allclose(np.asarray(_logits(structured, ids)), np.asarray(_logits(plain, ids)), atol=1e-5)
    assert attention_calls, "the jax path was not taken"
    assert all(c["is_causal"] is True and c["mask"] is None for c in attention_calls)
    # Gemma 3 mixes sliding and global layers: each scanned layer picks one of two kernels
    windows = {"mistral": {(7, 0)}, "gemma3": {(7, 0), None}}.get(name, {None})
    assert {c["local_window_size"] for c in attention_calls} == windows


@pytest.mark.parametrize("name", ["gpt2", "mistral"])
def test_padded_and_cached_passes_keep_their_masks(attention_calls, name):
    plain, structured = _models(name)
    ids = _ids(plain.dims.vocab_size)
    mask = jnp.arange(SEQ) >= 3  # three left pads
    np.testing.assert_allclose(
        np.asarray(_logits(structured, ids, mask=mask))[3:], np.asarray(_logits(plain, ids, mask=mask))[3:], atol=1e-5
    )
    logits, _ = eqx.filter_jit(structured.decode)(ids, structured.init_cache(SEQ + 1))
    np.testing.assert_allclose(np.asarray(logits), np.asarray(_logits(plain, ids)), atol=1e-5)
    assert attention_calls and all(c["is_causal"] is False and c["mask"] is not None for c in attention_calls)


def test_t5_decoder_self_attention_is_causal_and_the_rest_masked(attention_calls):
    config = T5Config.tiny()
    plain = T5(config, key=jax.random.key(0))
    structured = T5(config.replace(attention_impl="jax"), key=jax.random.key(0))
    ids, dec = _ids(config.vocab_size), _ids(config.vocab_size)[:7]
    np.testing.assert_allclose(
        np.asarray(_logits(structured, ids, dec)), np.asarray(_logits(plain, ids, dec)), atol=1e-5
    )
    # each scanned stack is traced once: encoder self-attention, decoder self- and cross-attention
    encoder, decoder_self, cross = attention_calls
    assert decoder_self["is_causal"] and decoder_self["mask"] is None and decoder_self["bias"] is not None
    assert not encoder["is_causal"] and not cross["is_causal"] and cross["mask"] is not None


def test_gradients_through_the_picked_kernels_equal_the_plain_path():
    """Training differentiates through each layer's choice of kernel (Gemma 3's mixed stack)."""
    plain, structured = _models("gemma3")
    ids = _ids(plain.dims.vocab_size)

    @eqx.filter_jit
    @eqx.filter_grad
    def grads(model):
        return jnp.mean(jax.nn.log_softmax(model(ids))[jnp.arange(SEQ - 1), ids[1:]])

    for a, b in zip(jax.tree.leaves(grads(structured)), jax.tree.leaves(grads(plain)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
