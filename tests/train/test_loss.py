"""The cross-entropy against NumPy, and the next-token loss of a tiny GPT-2."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.errors import InputError
from eqxllm.train import cross_entropy, next_token_loss

from ._common import fixed_batch, tiny_model

# eager dispatch of a scanned model is slow on a busy CPU; compile the calls instead
loss_fn = eqx.filter_jit(next_token_loss)


def _numpy_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``-log softmax(logits)[target]`` in float64, written out."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return -np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]


def test_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 11)).astype(np.float32) * 4
    targets = rng.integers(0, 11, size=(3, 5)).astype(np.int32)
    total, count = cross_entropy(jnp.asarray(logits), jnp.asarray(targets))
    assert total.dtype == jnp.float32 and count.dtype == jnp.float32
    np.testing.assert_allclose(float(total), _numpy_nll(logits, targets).sum(), rtol=1e-5)
    assert float(count) == 15


def test_cross_entropy_known_value():
    # uniform logits over 4 classes: every position costs log 4
    total, count = cross_entropy(jnp.zeros((2, 4)), jnp.array([1, 3]))
    np.testing.assert_allclose(float(total), 2 * np.log(4), rtol=1e-6)
    assert float(count) == 2


def test_cross_entropy_ignores_masked_positions():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 6, 7)).astype(np.float32)
    targets = rng.integers(0, 7, size=(2, 6)).astype(np.int32)
    mask = rng.random((2, 6)) > 0.4
    # masked targets may be padding ids outside the vocabulary
    padded = np.where(mask, targets, -100).astype(np.int32)
    total, count = cross_entropy(jnp.asarray(logits), jnp.asarray(padded), jnp.asarray(mask))
    np.testing.assert_allclose(float(total), _numpy_nll(logits, targets)[mask].sum(), rtol=1e-5)
    assert float(count) == mask.sum()


def test_cross_entropy_of_bfloat16_logits_is_computed_in_float32():
    rng = np.random.default_rng(2)
    logits = jnp.asarray(rng.normal(size=(4, 1000)) * 8, jnp.bfloat16)
    targets = jnp.asarray(rng.integers(0, 1000, size=(4,)), jnp.int32)
    total, _ = cross_entropy(logits, targets)
    assert total.dtype == jnp.float32
    expected = _numpy_nll(np.asarray(logits.astype(jnp.float32)), np.asarray(targets)).sum()
    np.testing.assert_allclose(float(total), expected, rtol=1e-6)


def test_next_token_loss_shifts_targets():
    model = tiny_model()
    batch = jnp.asarray(fixed_batch(batch=2, seq=8))
    loss, aux = loss_fn(model, batch, None)
    logits = np.asarray(eqx.filter_jit(lambda m, ids: jax.vmap(m)(ids))(model, batch[:, :-1]))
    expected = _numpy_nll(logits, np.asarray(batch[:, 1:])).mean()
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    assert float(aux["tokens"]) == 2 * 8
    assert float(aux["loss"]) == float(loss)


def test_next_token_loss_dropout_follows_the_key():
    model = tiny_model(resid_pdrop=0.5)
    batch = jnp.asarray(fixed_batch(batch=2, seq=8))
    plain, _ = loss_fn(model, batch, None)
    again, _ = loss_fn(model, batch, None)
    k1, _ = loss_fn(model, batch, jax.random.key(0))
    k1_again, _ = loss_fn(model, batch, jax.random.key(0))
    k2, _ = loss_fn(model, batch, jax.random.key(1))
    assert float(plain) == float(again) and float(k1) == float(k1_again)
    assert float(k1) != float(plain) and float(k1) != float(k2)


def test_next_token_loss_needs_two_tokens():
    with pytest.raises(InputError, match=r"at least 2 tokens.*\(4, 1\)"):
        next_token_loss(tiny_model(), jnp.zeros((4, 1), jnp.int32), None)


def _tiny_decoder(kind: str):
    from eqxllm.lora import apply_lora
    from eqxllm.models import GemmaConfig, LlamaConfig
    from eqxllm.models.gemma import Gemma
    from eqxllm.models.llama import Llama

    if kind == "gpt2-padded-vocab":  # tied head, vocabulary padded to a multiple of 64 and cut
        model = tiny_model(vocab_size=100, pad_vocab_multiple=64)
        assert model.config.padded_vocab_size > 100
        return model
    if kind == "gemma2-softcap":  # a cap small enough to bend the logits
        return Gemma(GemmaConfig.tiny(2).replace(final_logit_softcapping=0.5), key=jax.random.key(0))
    cfg = LlamaConfig(vocab_size=61, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                      tie_word_embeddings=False)  # fmt: skip
    model = Llama(cfg, key=jax.random.key(0))
    if kind == "llama-lora-head":  # adapters on the head: the loss takes the logits path
        model = apply_lora(model, rank=2, alpha=4.0, targets=r"lm_head", key=jax.random.key(1))
        assert model.output_head() is None
    return model


@pytest.mark.parametrize("kind", ["gpt2-padded-vocab", "llama-untied", "llama-lora-head", "gemma2-softcap"])
def test_the_fused_head_loss_equals_the_loss_of_the_logits(kind):
    """next_token_loss projects the features with the head inside the fused cross-entropy; its value
    and every gradient equal the cross-entropy of the model's own logits."""
    model = _tiny_decoder(kind)
    vocab = model.config.vocab_size
    batch = jax.random.randint(jax.random.key(2), (3, 13), 0, vocab)

    def from_logits(m, b):
        total, count = cross_entropy(jax.vmap(m)(b[:, :-1]), b[:, 1:])
        return total / count

    grad = eqx.filter_jit(eqx.filter_value_and_grad(lambda m, b: next_token_loss(m, b)[0]))
    ref = eqx.filter_jit(eqx.filter_value_and_grad(from_logits))
    (loss, grads), (want, want_grads) = grad(model, batch), ref(model, batch)
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    for g, w in zip(
        jax.tree.leaves(eqx.filter(grads, eqx.is_array)), jax.tree.leaves(eqx.filter(want_grads, eqx.is_array))
    ):
        np.testing.assert_allclose(g, w, atol=2e-6, rtol=1e-5)
