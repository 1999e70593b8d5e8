"""Greedy decoding with a repetition penalty equals transformers' ``generate(do_sample=False,
repetition_penalty=...)`` for 20 new tokens: GPT-2 (the prompt is penalised), a llama-like decoder,
and T5 (only the decoder's tokens are, from its start token); a penalty above 1 and one below 1
(which rewards repeats), each of which changes the continuation."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.generation.penalty import penalize
from eqxllm.models import T5, T5Config

from ._helpers import TINY

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

NEW = 20
# (T5 at 0.7 writes only its decoder start token, 0: the start token counts as seen, as in transformers)
PENALTIES = [1.5, 0.7]
LLAMA = dict(
    vocab_size=256, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
    num_hidden_layers=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    tie_word_embeddings=False,
)  # fmt: skip
T5_CONFIG = T5Config(vocab_size=90, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, dropout_rate=0.0)


def _gpt2(path):
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**TINY))
    with torch.no_grad():  # random norms and biases, so that every parameter matters
        for name, p in hf.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
    hf.save_pretrained(path)
    return hf, [3, 141, 59, 26, 53, 141]


def _llama(path):
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA))
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.copy_(1.0 + 0.3 * torch.randn_like(p) if "norm" in name else 0.3 * torch.randn_like(p))
    hf.save_pretrained(path)
    return hf, [1, 77, 5, 77, 200]


def _t5(path):
    # every weight off its init: a freshly initialised T5 tends to repeat one token
    leaves, treedef = jax.tree.flatten(T5(T5_CONFIG, key=jax.random.key(5)))
    keys = jax.random.split(jax.random.key(1), len(leaves))
    model = jax.tree.unflatten(treedef, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    eqxllm.save_pretrained(model, path)
    return transformers.T5ForConditionalGeneration.from_pretrained(path), [12, 40, 7, 7, 63, 21, 88, 1]


@pytest.fixture(scope="module", params=["gpt2", "llama", "t5"])
def models(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    hf, prompt = {"gpt2": _gpt2, "llama": _llama, "t5": _t5}[request.param](path)
    hf.eval()
    hf.generation_config.eos_token_id = None  # compared without early stopping
    return hf, eqxllm.from_pretrained(path), prompt


def _hf_greedy(hf, prompt, **kwargs) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = hf.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=NEW, pad_token_id=0, **kwargs
        )
    # a decoder-only model's output starts with the prompt, an encoder-decoder's with its start token
    return out[0, 1 if hf.config.is_encoder_decoder else len(prompt) :].tolist()


@pytest.mark.parametrize("penalty", PENALTIES)
def test_greedy_with_a_repetition_penalty_equals_transformers(models, penalty):
    hf, model, prompt = models
    generate = lambda **kw: np.asarray(
        eqxllm.generate(model, jnp.asarray(prompt), max_new_tokens=NEW, eos_token_id=(), **kw)
    ).tolist()
    ours = generate(repetition_penalty=penalty)
    assert ours == _hf_greedy(hf, prompt, repetition_penalty=penalty)
    plain = generate()
    assert plain == _hf_greedy(hf, prompt)
    assert ours != plain, "the penalty must change the continuation, or this test proves nothing"


@pytest.fixture(scope="module")
def zero_second(models, tmp_path_factory):
    """The decoder-only model with the pad id, 0, made a close second to the first greedy token of the
    first (padded) prompt: counting the padding as seen would then change the continuation."""
    hf, _, prompt = models
    if hf.config.is_encoder_decoder:
        pytest.skip("T5's prompts go to the encoder, whose tokens are never penalised")
    hf = copy.deepcopy(hf)
    first = _hf_greedy(hf, prompt[:3])[0]
    with torch.no_grad():
        head = hf.get_output_embeddings().weight
        head[0] = 0.9 * head[first]
    path = tmp_path_factory.mktemp("zero-second")
    hf.save_pretrained(path)
    return hf, eqxllm.from_pretrained(path), prompt


@pytest.mark.parametrize("penalty", PENALTIES)
def test_a_left_padded_batch_equals_transformers(zero_second, penalty):
    """transformers (v5) skips a prompt's left padding (here the pad id 0, which the model nearly
    chooses) when penalising, as eqxllm does; the second prompt holds a real 0, which counts."""
    hf, model, prompt = zero_second
    prompts = [prompt[:3], [*prompt[1:], 0, 9]]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        ref = hf.generate(
            ids, attention_mask=mask, do_sample=False, max_new_tokens=NEW, pad_token_id=0, repetition_penalty=penalty
        )[:, width:].numpy()
    ours = np.asarray(eqxllm.generate(model, prompts, max_new_tokens=NEW, eos_token_id=(), repetition_penalty=penalty))
    np.testing.assert_array_equal(ours, ref)
    if penalty < 1:  # had the padding counted, the rewarded 0 would have come first
        logits = model(jnp.asarray(prompts[0]))[-1]
        with_pad = jnp.zeros(logits.shape, bool).at[jnp.asarray([0, *prompts[0]])].set(True)
        assert int(jnp.argmax(penalize(logits, with_pad, jnp.asarray(penalty)))) == 0 != ours[0, 0]
