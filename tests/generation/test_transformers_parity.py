"""Greedy continuations equal transformers' ``generate(do_sample=False)`` (GPT-2, random weights)."""

import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm

from ._helpers import TINY

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROMPTS = [[7], [3, 141, 59, 26, 53], [90, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 150, 200, 20]]
NEW = 12


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**TINY)).eval()
    with torch.no_grad():  # random norms and biases, so that every parameter matters
        for name, p in hf.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
    path = tmp_path_factory.mktemp("hf-gpt2")
    hf.save_pretrained(path)
    hf.generation_config.eos_token_id = None  # compared without early stopping unless a test sets one
    return hf, eqxllm.from_pretrained(path)


def _hf_generate(hf, prompt, new, **kwargs) -> np.ndarray:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new, **kwargs)
    return out[0, len(prompt) :].numpy()


@pytest.mark.parametrize("prompt", PROMPTS, ids=lambda p: f"len{len(p)}")
def test_greedy_equals_transformers(models, prompt):
    hf, model = models
    ref = _hf_generate(hf, prompt, NEW, pad_token_id=0)
    ours = np.asarray(eqxllm.generate(model, jnp.asarray(prompt), max_new_tokens=NEW, eos_token_id=()))
    assert ref.shape == (NEW,)
    assert len(set(ref.tolist())) > 1, "a constant continuation would hide position bugs; pick another seed"
    np.testing.assert_array_equal(ours, ref)


def test_eos_stops_and_pads_like_transformers(models):
    hf, model = models
    prompt = PROMPTS[1]
    free = np.asarray(eqxllm.generate(model, jnp.asarray(prompt), max_new_tokens=NEW, eos_token_id=()))
    eos = int(free[4])  # a token greedy decoding reaches mid-way
    stop = int(np.argmax(free == eos))
    ref = _hf_generate(hf, prompt, NEW, pad_token_id=5, eos_token_id=eos)
    ours, length = eqxllm.generate(
        model, jnp.asarray(prompt), max_new_tokens=NEW, eos_token_id=eos, pad_token_id=5, return_lengths=True
    )
    # transformers stops the batch at EOS (a shorter output); the rest of ours is padding
    np.testing.assert_array_equal(np.asarray(ours[: len(ref)]), ref)
    np.testing.assert_array_equal(np.asarray(ours[stop + 1 :]), 5)
    assert int(length) == stop + 1 == len(ref)
