"""Scoring texts with a decoder-only language model: against a direct computation, and bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.errors import InputError
from eqxllm.generation.score import text_log_likelihoods

from ._helpers import FakeSeq2Seq, FakeSeq2SeqConfig, tiny_gpt2


class CharTokenizer:
    """One token per character (ids 1..), as ``tokenizers.Tokenizer.encode(...).ids`` returns them."""

    class _Encoding:
        def __init__(self, ids):
            self.ids = ids

    def encode(self, text, add_special_tokens=True):
        del add_special_tokens
        return self._Encoding([1 + (ord(c) % 200) for c in text])


@pytest.fixture(scope="module")
def lm():
    return tiny_gpt2(seed=4, bos_token_id=0, eos_token_id=0)


def _direct(lm, ids):
    row = [0, *ids]
    logits = eqx.filter_jit(lm)(jnp.asarray(row))  # one compiled forward per length, not op by op
    logp = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1))
    return float(np.mean([logp[t - 1, row[t]] for t in range(1, len(row))]))


def test_scores_are_mean_token_log_likelihoods_whatever_the_batching(lm):
    tok = CharTokenizer()
    texts = ["a", "the cat sat.", "Tom ran home quickly!", "xyzzy", "a much longer sentence than the rest of them"]
    want = [_direct(lm, tok.encode(t).ids) for t in texts]
    for batch_size in (2, 8):  # padded rows and chunks of unequal lengths must not change a score
        got = text_log_likelihoods(lm, tok, texts, batch_size=batch_size)
        assert got.shape == (5,) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert len(set(np.round(want, 4))) == 5  # the texts really score differently


def test_scoring_rejects_what_it_cannot_score(lm):
    tok = CharTokenizer()
    with pytest.raises(InputError, match="empty"):
        text_log_likelihoods(lm, tok, ["fine", ""])
    with pytest.raises(InputError, match="64 positions"):
        text_log_likelihoods(lm, tok, ["x" * 64])
    for bad in (0, -1):  # -1 gave zeros: no batch ran
        with pytest.raises(InputError, match=f"batch_size must be an integer >= 1, got {bad}"):
            text_log_likelihoods(lm, tok, ["fine"], batch_size=bad)
    with pytest.raises(InputError, match="decoder-only"):
        text_log_likelihoods(FakeSeq2Seq(FakeSeq2SeqConfig(), key=jax.random.key(0)), tok, ["a"])
    assert text_log_likelihoods(lm, tok, ["x" * 63]).shape == (1,)

    class WideTokenizer(CharTokenizer):  # another model's tokenizer: ids beyond this vocabulary
        def encode(self, text, add_special_tokens=True):
            return self._Encoding([500 + ord(c) for c in text])

    with pytest.raises(InputError, match=r"token id 6\d\d for 'hi', outside the model's vocabulary \[0, 211\)"):
        text_log_likelihoods(lm, WideTokenizer(), ["hi"])
