"""Hostile token inputs and weights given to models in memory, the presets' claimed context, and
the Hub without a network: each is refused at once with a message saying what to do."""

import math
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.errors import InputError, NonFiniteError
from eqxllm.models.gpt2 import GPT2, GPT2Config
from eqxllm.train.config import train_preset
from eqxllm.train.evaluate import evaluate_tokens

CFG = GPT2Config(vocab_size=50, n_positions=16, n_embd=8, n_layer=1, n_head=2)


@pytest.fixture(scope="module")
def model():
    return GPT2(CFG, key=jax.random.key(0))


def _call_unchecked(model, ids):
    # the suite's jaxtyping hook would reject these shapes before the model's own check: call the
    # model as a user does, without the hook, through its undecorated forward (what __call__ runs)
    forward = getattr(type(model).forward, "__wrapped__", type(model).forward)
    return forward(model, ids)[0]


@pytest.mark.parametrize(
    ("ids", "facts"),
    [
        (jnp.array([1.0, 2.0]), ["token ids must be integers, got dtype float32", ".astype(jnp.int32)"]),
        (jnp.array([[1, 2], [3, 4]]), ["shape [seq], got shape (2, 2)", "jax.vmap"]),
        (jnp.array([1, 2, 99]), ["token ids must be in [0, 50)", "got 99"]),
        (jnp.array([-1, 2]), ["token ids must be in [0, 50)", "got -1"]),
        (jnp.zeros((17,), jnp.int32), ["17 tokens is longer than n_positions=16"]),
    ],
)
def test_bad_token_inputs(model, ids, facts):
    with pytest.raises(InputError) as info:
        _call_unchecked(model, ids)
    for fact in facts:
        assert fact in str(info.value)


def test_out_of_range_ids_under_filter_jit_name_the_vocabulary(model):
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"token ids must be in \[0, 50\)"):
        jax.block_until_ready(eqx.filter_jit(model)(jnp.array([1, 50])))


def test_evaluation_of_non_finite_weights_names_the_batch(model):
    bad = eqx.tree_at(lambda m: m.ln_f.weight, model, model.ln_f.weight.at[0].set(jnp.inf))
    tokens = np.arange(40, dtype=np.int32) % 50
    with pytest.raises(NonFiniteError, match=r"evaluation loss is nan on batch 0 \(windows 0 to"):
        evaluate_tokens(bad, tokens, num_bytes=100, seq_len=8, batch_size=2)


def test_an_evaluation_that_scores_no_token_is_nan_not_perfect(model):
    tokens = np.arange(40, dtype=np.int32) % 50
    result = evaluate_tokens(model, tokens, num_bytes=100, seq_len=8, batch_size=2, loss_mask=np.zeros(40, np.int32))
    assert result.tokens == 0 and all(math.isnan(v) for v in (result.loss, result.perplexity, result.bits_per_byte))
    scored = evaluate_tokens(model, tokens, num_bytes=100, seq_len=8, batch_size=2, loss_mask=np.ones(40, np.int32))
    assert scored.tokens == 39 and math.isfinite(scored.loss) and scored.loss > 0


@pytest.mark.parametrize(("seq_len", "batch_size"), [(0, 2), (8, 0), (-5, 2), (8, -1)])
def test_evaluation_sizes(model, seq_len, batch_size):
    with pytest.raises(InputError, match="must be an integer >= 1"):
        evaluate_tokens(model, np.arange(20, dtype=np.int32), num_bytes=20, seq_len=seq_len, batch_size=batch_size)


@pytest.mark.parametrize("name", ["gpt2-tinystories", "gemma-tinystories"])
def test_presets_claim_the_context_they_train_on(name):
    cfg = train_preset(name)
    assert cfg.model.max_positions == cfg.train.seq_len  # eval's and generate's default context


def test_an_unreachable_hub_fails_at_once_without_retry_warnings(monkeypatch, tmp_path, capfd):
    import eqxllm
    from eqxllm.checkpoints import hub
    from eqxllm.errors import CheckpointError, DataError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "_reachable", lambda endpoint: False)
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="the Hub could not be reached"):
        eqxllm.from_pretrained("some-org/some-model")
    with pytest.raises(DataError, match="the Hub could not be reached.*--data FILE_OR_FOLDER"):
        hub.download("roneneldan/TinyStories", "TinyStories-train.txt", repo_type="dataset")
    assert time.monotonic() - start < 5
    assert "Retrying" not in capfd.readouterr().err
