"""Gemma 1/2/3 against transformers (PyTorch, CPU, float32, eager attention): random weights with
randomized norm scales, both directions, MHA/GQA/MQA, sliding windows shorter than the sequence,
active soft-caps, Gemma 3's two rotary bases."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.models import Gemma, GemmaConfig
from eqxllm.nn import CausalMask
from eqxllm.nn.decoding import token_slots

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4
SEQ = 20  # longer than every window below
HF_CLASSES = {
    1: ("GemmaConfig", "GemmaForCausalLM"),
    2: ("Gemma2Config", "Gemma2ForCausalLM"),
    3: ("Gemma3TextConfig", "Gemma3ForCausalLM"),
}
# head_dim 24 differs from hidden_size / heads = 16; transformers wants hidden_size % heads == 0
_BASE = dict(
    vocab_size=300,
    hidden_size=64,
    intermediate_size=96,
    num_attention_heads=4,
    head_dim=24,
    max_position_embeddings=64,
)
_HEADS = {"mha": 4, "gqa": 2, "mqa": 1}
_GEN_KWARGS = {
    1: [
        dict(num_hidden_layers=2),
        dict(num_hidden_layers=3, tie_word_embeddings=False),
        dict(num_hidden_layers=2, attention_bias=True, rope_scaling={"rope_type": "linear", "factor": 2.0}),
    ],
    2: [
        dict(
            num_hidden_layers=4,
            sliding_window=5,
            query_pre_attn_scalar=20,
            attn_logit_softcapping=2.0,
            final_logit_softcapping=3.0,
        ),
        dict(
            num_hidden_layers=3,
            sliding_window=7,
            query_pre_attn_scalar=32,
            attn_logit_softcapping=1.5,
            final_logit_softcapping=5.0,
            tie_word_embeddings=False,
        ),
        dict(
            num_hidden_layers=4,
            sliding_window=4,
            attn_logit_softcapping=2.5,
            final_logit_softcapping=None,
            layer_types=["full_attention", "sliding_attention", "sliding_attention", "full_attention"],
        ),
    ],
    3: [
        dict(
            num_hidden_layers=4,
            sliding_window=5,
            sliding_window_pattern=2,
            query_pre_attn_scalar=20,
            rope_theta=1e6,
            rope_local_base_freq=1e4,
        ),
        dict(
            num_hidden_layers=3,
            sliding_window=6,
            sliding_window_pattern=3,
            rope_theta=5e5,
            rope_local_base_freq=1e3,
            rope_scaling={"rope_type": "linear", "factor": 4.0},
            final_logit_softcapping=4.0,
            tie_word_embeddings=False,
        ),
        dict(
            num_hidden_layers=4,
            sliding_window=3,
            rope_theta=1e6,
            rope_local_base_freq=10.0,
            layer_types=["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"],
        ),
    ],
}
CASES = [(gen, heads, i) for gen in (1, 2, 3) for i, heads in enumerate(_HEADS)]


def hf_config(gen: int, heads: str, variant: int):
    cls = getattr(transformers, HF_CLASSES[gen][0])
    return cls(**_BASE, num_key_value_heads=_HEADS[heads], **_GEN_KWARGS[gen][variant])


def hf_model(config, seed: int = 0):
    torch.manual_seed(seed)
    model = getattr(transformers, HF_CLASSES[config_generation(config)][1])(config)
    model.config._attn_implementation = "eager"  # exact soft-caps and windows
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * weight_std(name))
    return model.eval()


def weight_std(name: str) -> float:
    """Norm scales start at zero (the identity) and biases at zero: randomize them so that they are
    checked. Matrices get a std large enough that attention logits exceed the soft-caps below."""
    return 0.5 if "norm" in name else 0.1 if name.endswith("bias") else 0.2


def config_generation(config) -> int:
    return {"gemma": 1, "gemma2": 2, "gemma3_text": 3}[config.model_type]


def hf_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


@eqx.filter_jit
def _batched(model, ids):
    return jax.vmap(model)(ids)


def eqx_logits(model, ids: np.ndarray) -> np.ndarray:
    return np.asarray(_batched(model, jnp.asarray(ids)))


def random_model(config: GemmaConfig, seed: int) -> Gemma:
    """A Gemma with random weights (as :func:`weight_std` says), built from the abstract skeleton
    without the slow eager initialisation."""
    skeleton = eqx.filter_eval_shape(Gemma, config, key=jax.random.key(0))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        std = weight_std(jax.tree_util.keystr(path))
        return jnp.asarray(std * rng.standard_normal(leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, skeleton)


@pytest.mark.parametrize("gen,heads,variant", CASES, ids=[f"gemma{g}-{h}" for g, h, _ in CASES])
def test_hf_to_eqxllm(tmp_path, gen, heads, variant):
    hf = hf_model(hf_config(gen, heads, variant), seed=gen)
    hf.save_pretrained(tmp_path)
    model = eqxllm.from_pretrained(tmp_path)
    assert isinstance(model, Gemma) and model.config.generation == gen
    assert model.config.num_key_value_heads == _HEADS[heads]
    if gen > 1:
        assert model.config.layer_types == tuple(hf.config.layer_types)
    ids = np.random.default_rng(gen).integers(0, _BASE["vocab_size"], size=(2, SEQ))
    ours, ref = eqx_logits(model, ids), hf_logits(hf, ids)
    assert ours.shape == ref.shape == (2, SEQ, _BASE["vocab_size"])
    assert np.abs(ours - ref).max() <= TOL


@pytest.mark.parametrize("gen,heads,variant", CASES, ids=[f"gemma{g}-{h}" for g, h, _ in CASES])
def test_eqxllm_to_hf(tmp_path, gen, heads, variant):
    from eqxllm.checkpoints.gemma import config_from_hf

    hf_cfg = hf_config(gen, heads, variant).to_dict()
    config = config_from_hf(hf_cfg)
    model = random_model(config, seed=10 + gen)
    eqxllm.save_pretrained(model, tmp_path)
    hf = getattr(transformers, HF_CLASSES[gen][1]).from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids = np.random.default_rng(10 + gen).integers(0, _BASE["vocab_size"], size=(2, SEQ))
    ours, ref = eqx_logits(model, ids), hf_logits(hf, ids)
    assert np.abs(ref).max() > 0.5  # the comparison is not between near-zero logits
    assert np.abs(ours - ref).max() <= TOL


@pytest.mark.parametrize(
    "gen,change",
    [
        (2, {"sliding_window": 6}),
        (2, {"sliding_window": 4}),
        (3, {"sliding_window": 6}),
        (3, {"sliding_window": 4}),
        (2, {"attn_logit_softcapping": None}),
        (2, {"final_logit_softcapping": None}),
        (3, {"rope_local_base_freq": 1e6}),
        (2, {"query_pre_attn_scalar": 24}),
    ],
)
def test_parity_detects_each_feature(tmp_path, gen, change):
    """The parity checks above would fail if a window were off by one, a cap or the local base were
    ignored, or the attention scale taken from head_dim: changing each one moves the logits."""
    hf = hf_model(hf_config(gen, "gqa", 0), seed=5)
    hf.save_pretrained(tmp_path)
    ids = np.random.default_rng(5).integers(0, _BASE["vocab_size"], size=(1, SEQ))
    assert np.abs(eqx_logits(eqxllm.from_pretrained(tmp_path), ids) - hf_logits(hf, ids)).max() <= TOL
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.update(change)
    if "rope_local_base_freq" in change:  # the legacy key counts only without transformers 5's nested dict
        cfg.pop("rope_parameters")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    changed = eqxllm.from_pretrained(tmp_path)
    assert np.abs(eqx_logits(changed, ids) - hf_logits(hf, ids)).max() > 1e-3


def test_sliding_window_is_exclusive_like_hf():
    """transformers keeps key k for query q when ``q - k < sliding_window``; window 1 sees itself only."""
    from transformers.masking_utils import sliding_window_causal_mask_function

    for window in (1, 3):
        cfg = GemmaConfig.tiny(2).replace(sliding_window=window, layer_types=("sliding_attention",) * 4)
        skeleton = eqx.filter_eval_shape(Gemma, cfg, key=jax.random.key(0))  # masks need the config only
        # a whole sequence: masks passed by their structure (every layer slides, so no scanned choice)
        local, full = skeleton._masks(token_slots(jnp.ones(6, bool), None, None, whole=True))
        assert isinstance(local, CausalMask) and isinstance(full, CausalMask)
        assert (local.window, full.window) == (window, None)
        fn = sliding_window_causal_mask_function(window)
        t = torch.tensor
        ref = np.array([[bool(fn(t(0), t(0), t(q), t(k))) for k in range(6)] for q in range(6)])
        np.testing.assert_array_equal(np.asarray(local.dense), ref)
        np.testing.assert_array_equal(np.asarray(full.dense), np.tril(np.ones((6, 6), bool)))
    np.testing.assert_array_equal(np.asarray(local.dense)[5], [False, False, False, True, True, True])
