"""Gemma's cached decoding equals its full forward at every step (past the sliding window too),
left padding changes nothing for the real tokens, and the eqxllm-only options (remat, attention
implementation) leave the logits unchanged."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.errors import InputError
from eqxllm.models import Gemma, GemmaConfig

TOL = 1e-4
SEQ = 20  # the tiny configs slide over windows of 8


def random_model(config: GemmaConfig, seed: int = 0) -> Gemma:
    """Random weights from the abstract skeleton: norm scales N(0, 0.5^2), matrices N(0, 0.2^2)."""
    skeleton = eqx.filter_eval_shape(Gemma, config, key=jax.random.key(0))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        std = 0.5 if "norm" in jax.tree_util.keystr(path) else 0.2
        return jnp.asarray(std * rng.standard_normal(leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, skeleton)


@eqx.filter_jit
def _forward(model, ids, mask):
    return model(ids, mask=mask)


@eqx.filter_jit
def _decode(model, ids, cache, mask):
    return model.decode(ids, cache, mask=mask)


def _ids(n: int, seed: int = 0) -> jnp.ndarray:
    return jnp.asarray(np.random.default_rng(seed).integers(0, 512, size=n))


@pytest.mark.parametrize("gen", [1, 2, 3])
def test_decode_matches_forward_at_every_step(gen):
    model = random_model(GemmaConfig.tiny(gen), seed=gen)
    ids = _ids(SEQ, gen)
    full = np.asarray(_forward(model, ids, jnp.ones(SEQ, bool)))
    prefill = 5
    cache = model.init_cache(SEQ + 4)
    logits, cache = _decode(model, ids[:prefill], cache, jnp.ones(prefill, bool))
    assert np.abs(np.asarray(logits) - full[:prefill]).max() <= TOL
    for t in range(prefill, SEQ):  # 15 single-token steps, the last 12 beyond the window of 8
        logits, cache = _decode(model, ids[t : t + 1], cache, jnp.ones(1, bool))
        assert np.abs(np.asarray(logits[0]) - full[t]).max() <= TOL, f"step {t}"
    assert int(cache.index) == SEQ and bool(cache.valid[:SEQ].all()) and not bool(cache.valid[SEQ:].any())


def test_window_matters_in_decode():
    """The cached path applies the window: ignoring it (a window as long as the cache) changes step 19."""
    cfg = GemmaConfig.tiny(2)
    model, wide = random_model(cfg, 7), random_model(cfg.replace(sliding_window=64), 7)
    ids = _ids(SEQ, 7)
    outs = []
    for m in (model, wide):
        logits, _ = _decode(m, ids, m.init_cache(SEQ), jnp.ones(SEQ, bool))
        outs.append(np.asarray(logits))
    assert np.abs(outs[0][:8] - outs[1][:8]).max() <= TOL  # inside the window both agree
    assert np.abs(outs[0][-1] - outs[1][-1]).max() > 1e-3


@pytest.mark.parametrize("gen", [2, 3])
def test_left_padding_is_invisible(gen):
    model = random_model(GemmaConfig.tiny(gen), seed=gen)
    ids, pad = _ids(SEQ, gen), 3
    alone = np.asarray(_forward(model, ids, jnp.ones(SEQ, bool)))
    padded_ids = jnp.concatenate([jnp.zeros(pad, ids.dtype), ids])
    mask = jnp.arange(SEQ + pad) >= pad
    padded = np.asarray(_forward(model, padded_ids, mask))
    assert np.abs(padded[pad:] - alone).max() <= TOL
    cache = model.init_cache(SEQ + pad + 2)
    logits, cache = _decode(model, padded_ids[: pad + 10], cache, mask[: pad + 10])
    assert np.abs(np.asarray(logits)[pad:] - alone[:10]).max() <= TOL
    for t in range(10, SEQ):
        logits, cache = _decode(model, ids[t : t + 1], cache, jnp.ones(1, bool))
        assert np.abs(np.asarray(logits[0]) - alone[t]).max() <= TOL, f"step {t}"


@pytest.mark.parametrize("change", [{"remat": "full"}, {"remat": "dots"}, {"attention_impl": "jax"}])
def test_options_do_not_change_logits(change):
    cfg = GemmaConfig.tiny(3)  # Gemma 3 has no attention soft-cap, so "jax" really uses jax.nn's kernel
    ids, mask = _ids(12, 3), jnp.ones(12, bool)
    ref = np.asarray(_forward(random_model(cfg, 3), ids, mask))
    out = np.asarray(_forward(random_model(cfg.replace(**change), 3), ids, mask))
    assert np.abs(out - ref).max() <= TOL


def test_gradients_flow_through_the_scan():
    model = random_model(GemmaConfig.tiny(2).replace(remat="dots"), 1)
    ids = _ids(10, 1)

    @eqx.filter_jit
    @eqx.filter_grad
    def grad(m):
        logits = m(ids)
        return -jnp.mean(jax.nn.log_softmax(logits[:-1])[jnp.arange(9), ids[1:]])

    g = grad(model)
    norms = [float(jnp.linalg.norm(x)) for x in jax.tree.leaves(g)]
    assert all(np.isfinite(norms)) and all(n > 0 for n in norms)


def test_bad_lengths():
    model = random_model(GemmaConfig.tiny(1))
    with pytest.raises(ValueError, match="max_position_embeddings=128"):
        model.init_cache(129)
    with pytest.raises(InputError, match="max_position_embeddings=128"):
        model(jnp.zeros(129, jnp.int32))
    cache = model.init_cache(4)
    with pytest.raises(InputError, match="the cache length=4"):
        model.decode(jnp.zeros(5, jnp.int32), cache)
