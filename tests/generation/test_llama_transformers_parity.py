"""Greedy continuations of llama-like checkpoints written by transformers' ``save_pretrained`` equal
``generate(do_sample=False)`` for 200 tokens from the BOS token: Llama (GQA, untied head, llama3
rotary scaling), Mistral with a sliding window far shorter than the continuation (the cached
decoding must drop the keys that leave the window), Qwen3 (q/k norms) and Mixtral (top-2 of 4
experts, with a window too)."""

import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.models import Llama

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

NEW = 200
BASE = dict(
    vocab_size=256, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
    num_hidden_layers=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    tie_word_embeddings=False,
)  # fmt: skip
_LLAMA3 = dict(rope_type="llama3", factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0,
               original_max_position_embeddings=32, rope_theta=10000.0)  # fmt: skip
# (config class, model class, changes, weight std): the std keeps greedy decoding off a fixed point,
# which would hide position and window bugs
CASES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(rope_parameters=_LLAMA3), 0.3),
    "mistral-window": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=6), 0.3),
    "mixtral-window": (
        "MixtralConfig",
        "MixtralForCausalLM",
        dict(num_local_experts=4, num_experts_per_tok=2, sliding_window=8, rope_parameters={"rope_theta": 1e4}),
        0.3,
    ),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=16, tie_word_embeddings=True), 0.8),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def models(request, tmp_path_factory):
    config_cls, model_cls, changes, std = CASES[request.param]
    torch.manual_seed(0)
    hf = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**{**BASE, **changes}))
    hf.config._attn_implementation = "eager"  # exact sliding windows
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.copy_(1.0 + 0.3 * torch.randn_like(p) if "norm" in name else std * torch.randn_like(p))
    hf.eval()
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    hf.generation_config.eos_token_id = None  # compared without early stopping
    model = eqxllm.from_pretrained(path)
    assert isinstance(model, Llama)
    return hf, model


def test_greedy_from_bos_equals_transformers(models):
    hf, model = models
    bos = [BASE["bos_token_id"]]
    ids = torch.tensor([bos])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=NEW, pad_token_id=0)
    ref = out[0, 1:].numpy()
    ours = np.asarray(eqxllm.generate(model, jnp.asarray(bos), max_new_tokens=NEW, eos_token_id=()))
    assert ref.shape == (NEW,)
    assert len(set(ref[-50:].tolist())) > 3, "a (nearly) constant continuation would hide position bugs"
    np.testing.assert_array_equal(ours, ref)
