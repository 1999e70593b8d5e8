"""Cached T5 decoding (``init_decoder_cache`` + ``decode``) against the full decoder, and greedy decoding
(a plain loop over ``decode``, and ``eqxllm.generate``) against transformers' ``generate(do_sample=False)``
(written against transformers 5.23; greedy decoding is the same in v4)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.models import T5, T5Config
from eqxllm.models.t5 import T5DecoderCache

TOL = 1e-4

CONFIGS = {
    "v1_0": T5Config(vocab_size=90, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, dropout_rate=0.0),
    "v1_1-deeper-decoder": T5Config(
        vocab_size=70, d_model=24, d_kv=6, d_ff=40, num_layers=1, num_decoder_layers=3, num_heads=4,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
        relative_attention_num_buckets=8, relative_attention_max_distance=12,
    ),
}  # fmt: skip


@eqx.filter_jit
def _full(model, enc_ids, enc_mask, dec_ids):
    return model.decode_full(model.encode(enc_ids, mask=enc_mask), dec_ids, encoder_mask=enc_mask)


@eqx.filter_jit
def _start(model, enc_ids, enc_mask, max_len):
    return model.init_decoder_cache(model.encode(enc_ids, mask=enc_mask), enc_mask, max_len)


_step = eqx.filter_jit(lambda model, ids, cache: model.decode(ids, cache))


def _example(cfg, seed, enc=19, dec=11):
    rng = np.random.default_rng(seed)
    enc_ids = jnp.asarray(rng.integers(0, cfg.vocab_size, size=enc))
    enc_mask = jnp.asarray(np.arange(enc) < enc - 5)  # right-padded by 5
    dec_ids = jnp.asarray(rng.integers(0, cfg.vocab_size, size=dec))
    return enc_ids, enc_mask, dec_ids


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cached_decoding_matches_full_decoder_at_every_step(name):
    cfg = CONFIGS[name]
    model = T5(cfg, key=jax.random.key(0))
    enc_ids, enc_mask, dec_ids = _example(cfg, seed=1)
    full = np.asarray(_full(model, enc_ids, enc_mask, dec_ids))
    # a cache longer than needed, so unwritten slots must be masked out
    cache = _start(model, enc_ids, enc_mask, dec_ids.shape[0] + 4)
    assert isinstance(cache, T5DecoderCache) and cache.cross_k.shape == (
        cfg.decoder_layers,
        19,
        cfg.num_heads,
        cfg.d_kv,
    )
    prefill, cache = model.decode(dec_ids[:3], cache)  # a 3-token prompt, then one token at a time
    assert np.abs(np.asarray(prefill) - full[:3]).max() <= TOL
    for t in range(3, dec_ids.shape[0]):
        logits, cache = _step(model, dec_ids[t : t + 1], cache)
        assert np.abs(np.asarray(logits[0]) - full[t]).max() <= TOL, f"step {t}"
    assert int(cache.index) == dec_ids.shape[0]


def test_cached_decoding_vmaps_over_a_batch():
    cfg = CONFIGS["v1_0"]
    model = T5(cfg, key=jax.random.key(2))
    examples = [_example(cfg, seed=s, dec=4) for s in (3, 4)]
    enc_ids, enc_mask, dec_ids = (jnp.stack(x) for x in zip(*examples))
    caches = jax.vmap(lambda i, m: model.init_decoder_cache(model.encode(i, mask=m), m, 6))(enc_ids, enc_mask)
    logits, caches = jax.vmap(lambda d, c: model.decode(d, c))(dec_ids, caches)
    for b, (i, m, d) in enumerate(examples):
        assert np.abs(np.asarray(logits[b]) - np.asarray(_full(model, i, m, d))).max() <= TOL
    assert caches.self_kv.index.shape == (2,)


def _greedy(model: T5, enc_ids, enc_mask, max_new_tokens: int) -> list[int]:
    """Greedy decoding from ``decoder_start_token_id``, stopping after ``eos_token_id``."""
    cfg = model.config
    cache = _start(model, enc_ids, enc_mask, max_new_tokens + 1)
    tokens = [cfg.decoder_start_token_id]
    for _ in range(max_new_tokens):
        logits, cache = _step(model, jnp.asarray(tokens[-1:]), cache)
        tokens.append(int(jnp.argmax(logits[-1])))
        if tokens[-1] == cfg.eos_token_id:
            break
    return tokens


def _hf_greedy(hf, cfg, ids, mask, max_new_tokens):
    import torch

    with torch.no_grad():
        return hf.generate(
            torch.tensor(np.asarray(ids))[None],
            attention_mask=torch.tensor(np.asarray(mask).astype(np.int64))[None],
            do_sample=False,
            max_new_tokens=max_new_tokens,
            # transformers 5.23 sizes its decoder cache by the encoder's depth (IndexError when they
            # differ); without a cache its greedy loop recomputes everything, which is as good a reference
            use_cache=cfg.decoder_layers == cfg.num_layers,
        )[0].tolist()


def _perturbed(cfg: T5Config) -> T5:
    """Every weight off its init: a freshly initialised T5 tends to repeat one token, which would test little."""
    leaves, treedef = jax.tree.flatten(T5(cfg, key=jax.random.key(5)))
    keys = jax.random.split(jax.random.key(1), len(leaves))
    return jax.tree.unflatten(treedef, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def _hf(model, tmp_path):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    eqxllm.save_pretrained(model, tmp_path)
    return transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_greedy_loop_over_decode_matches_transformers_generate(tmp_path, name):
    cfg = CONFIGS[name]
    model = _perturbed(cfg)
    hf = _hf(model, tmp_path)
    for seed in (6, 7):
        ids, mask, _ = _example(cfg, seed=seed)  # right-padded
        ours = _greedy(model, ids, mask, max_new_tokens=12)
        assert len(set(ours)) >= 4, "the seed gives a degenerate sequence; the comparison would test little"
        assert ours == _hf_greedy(hf, cfg, ids, mask, 12)


def test_generate_matches_transformers_generate(tmp_path):
    from eqxllm.generation.prompts import check_context

    try:  # T5 has no length limit: its config's max_positions is None
        check_context(1, 1, None, encoder_decoder=True)
    except Exception as e:
        pytest.skip(f"eqxllm.generate does not accept max_positions=None yet ({type(e).__name__})")
    cfg = CONFIGS["v1_1-deeper-decoder"]
    model = _perturbed(cfg)
    hf = _hf(model, tmp_path)
    ids, mask, _ = _example(cfg, seed=6)
    prompts = [np.asarray(ids)[np.asarray(mask)], np.asarray(ids)[:9]]  # different lengths: left-padded inside
    tokens, lengths = eqxllm.generate(model, prompts, max_new_tokens=12, return_lengths=True)
    for b, prompt in enumerate(prompts):
        ref = _hf_greedy(hf, cfg, prompt, np.ones(len(prompt), bool), 12)
        assert [cfg.decoder_start_token_id, *np.asarray(tokens[b][: int(lengths[b])]).tolist()] == ref
