"""Greedy Gemma continuations equal transformers' ``generate(do_sample=False)``: Gemma 1 (MQA, GQA),
and Gemma 2 and 3 with sliding windows shorter than prompt + continuation, so that the cached
decoding must drop the keys that leave the window, and with active soft-caps."""

import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.models import Gemma

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

BASE = dict(
    vocab_size=300, hidden_size=64, intermediate_size=96, num_attention_heads=4, head_dim=24,
    max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
)  # fmt: skip
# (config class, model class, config, (weight std, norm scale std)): each chosen so that greedy decoding does not settle
# on one token, which would hide position and window bugs
CASES = {
    "gemma1-mqa": ("GemmaConfig", "GemmaForCausalLM", dict(num_key_value_heads=1, num_hidden_layers=2), (0.2, 0.5)),
    "gemma1-gqa": ("GemmaConfig", "GemmaForCausalLM", dict(num_key_value_heads=2, num_hidden_layers=3), (0.2, 0.5)),
    "gemma2-window": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        dict(
            num_key_value_heads=2,
            num_hidden_layers=4,
            sliding_window=5,
            query_pre_attn_scalar=20,
            attn_logit_softcapping=2.0,
            final_logit_softcapping=3.0,
        ),
        (0.05, 0.1),
    ),  # fmt: skip
    "gemma3-window": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        dict(
            num_key_value_heads=1,
            num_hidden_layers=4,
            sliding_window=4,
            sliding_window_pattern=2,
            rope_theta=1e6,
            rope_local_base_freq=1e4,
        ),
        (0.05, 0.1),
    ),  # fmt: skip
}
PROMPTS = [[1, 7], [1, 141, 59, 26, 53, 11, 230, 9]]
NEW = 12


@pytest.fixture(scope="module", params=sorted(CASES))
def models(request, tmp_path_factory):
    config_cls, model_cls, kwargs, (std, norm_std) = CASES[request.param]
    torch.manual_seed(0)
    hf = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**BASE, **kwargs))
    hf.config._attn_implementation = "eager"  # exact soft-caps and windows
    with torch.no_grad():  # random norm scales (they start at the identity)
        for name, p in hf.named_parameters():
            p.copy_(torch.randn_like(p) * (norm_std if "norm" in name else std))
    hf.eval()
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    hf.generation_config.eos_token_id = None  # compared without early stopping
    model = eqxllm.from_pretrained(path)
    assert isinstance(model, Gemma)
    return hf, model


@pytest.mark.parametrize("prompt", PROMPTS, ids=lambda p: f"len{len(p)}")
def test_greedy_equals_transformers(models, prompt):
    hf, model = models
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=NEW, pad_token_id=0)
    ref = out[0, len(prompt) :].numpy()
    ours = np.asarray(eqxllm.generate(model, jnp.asarray(prompt), max_new_tokens=NEW, eos_token_id=()))
    assert ref.shape == (NEW,)
    assert len(set(ref.tolist())) > 1, "a constant continuation would hide position bugs; pick another seed"
    np.testing.assert_array_equal(ours, ref)
