"""Bad input raises InputError with a message that says what was expected and what was found."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.errors import InputError
from eqxllm.generation import stream
from eqxllm.generation.prompts import check_context

from ._helpers import tiny_gpt2

KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def model():
    return tiny_gpt2()  # n_positions=64, vocab_size=211


@pytest.mark.parametrize(
    ("prompt", "kwargs", "match"),
    [
        (jnp.zeros((0,), jnp.int32), {}, r"empty prompt \(0 tokens\)"),
        (jnp.zeros((2, 0), jnp.int32), {}, r"empty prompt \(0 tokens\)"),
        ([[1, 2], []], {}, r"prompt 1 of the batch is empty"),
        ([], {}, "batch of 0 prompts"),
        ([1, 2, 3], {}, "items are ints"),
        (jnp.zeros((1, 2, 3), jnp.int32), {}, r"1-D \[seq\] or 2-D \[batch, seq\], got shape \(1, 2, 3\)"),
        (jnp.zeros((65,), jnp.int32), {"max_new_tokens": 1}, r"prompt has 65 tokens, longer than .*max_positions=64"),
        (jnp.zeros((60,), jnp.int32), {"max_new_tokens": 5}, r"60 tokens\) \+ max_new_tokens=5 = 65 .* at most 4 new"),
        ([[1] * 10, [1] * 59], {"max_new_tokens": 6}, r"59 tokens\) \+ max_new_tokens=6"),
        (jnp.ones((3,), jnp.int32), {"max_new_tokens": 0}, r"max_new_tokens must be an integer >= 1, got 0"),
        (jnp.asarray([1, 211, 2]), {}, r"prompt 0 holds token id 211 at index 1, outside the vocabulary \[0, 211\)"),
        ([[5], [3, -1]], {}, r"prompt 1 holds token id -1 at index 1"),
        ([[5, 6, 7], [211, 3]], {}, r"prompt 1 holds token id 211 at index 0"),  # its index before the padding
        (jnp.ones((3,), jnp.int32), {"top_p": 0.0, "key": KEY}, r"top_p must be in \(0, 1\].*got 0.0"),
        (jnp.ones((3,), jnp.int32), {"top_p": 1.5, "key": KEY}, r"top_p must be in \(0, 1\].*got 1.5"),
        (jnp.ones((3,), jnp.int32), {"top_k": 0, "key": KEY}, r"top_k must be an integer >= 1.*got 0"),
        (jnp.ones((3,), jnp.int32), {"temperature": -0.5, "key": KEY}, r"temperature must be >= 0.*got -0.5"),
        (jnp.ones((3,), jnp.int32), {"temperature": float("nan"), "key": KEY}, r"finite number >= 0, got nan"),
        (jnp.ones((3,), jnp.int32), {"top_k": 5}, r"sampling options \{'top_k': 5\} need a random key"),
        (jnp.ones((3,), jnp.int32), {"temperature": 0.7}, r"sampling options \{'temperature': 0.7\} need a random key"),
    ],
)
def test_bad_input_raises_input_error(model, prompt, kwargs, match):
    kwargs = {"max_new_tokens": 4, **kwargs}
    with pytest.raises(InputError, match=match):
        eqxllm.generate(model, prompt, **kwargs)
    with pytest.raises(InputError, match=match):  # streaming checks the same before compiling anything
        next(iter(stream(model, prompt, **kwargs)))


@pytest.mark.usefixtures("unchecked_annotations")  # called as a user calls it, without the type hook
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [  # each was read as something else ("69" as the stop ids 6 and 9, 1.7 as 1) or failed deep inside
        ({"eos_token_id": "69"}, r"eos_token_id must be a token id \(an integer\) or a sequence of them, got '69'"),
        ({"eos_token_id": 69.0}, "eos_token_id must be a token id .*got 69.0"),
        ({"eos_token_id": [69.9]}, r"eos_token_id must be a token id .*got \[69.9\]"),
        ({"stop_token_ids": [True]}, r"stop_token_ids must be a token id .*got \[True\]"),
        ({"pad_token_id": 1.7}, "pad_token_id must be an integer that int32 tokens hold, got 1.7"),
        ({"pad_token_id": 2**40}, "pad_token_id must be an integer that int32 tokens hold, got 1099511627776"),
        ({"key": 0}, "key must be one random key .*got 0"),
        ({"key": jax.random.split(KEY, 2)}, r"key must be one random key .*of shape \(2,\)"),
    ],
)
def test_bad_stop_pad_and_key_arguments_are_named(model, kwargs, match):
    with pytest.raises(InputError, match=match):
        eqxllm.generate(model, jnp.ones((3,), jnp.int32), max_new_tokens=2, **kwargs)


def test_stop_ids_may_be_arrays(model):
    prompt = jnp.ones((3,), jnp.int32)
    greedy = np.asarray(eqxllm.generate(model, prompt, max_new_tokens=6, eos_token_id=()))
    stop = int(greedy[2])
    expected = np.asarray(eqxllm.generate(model, prompt, max_new_tokens=6, eos_token_id=stop))
    assert int(np.argmax(expected == stop)) <= 2 and expected[-1] == stop  # stopped, then padded with it
    for given in (jnp.asarray(stop), np.int64(stop), jnp.asarray([stop]), [jnp.asarray(stop)]):
        np.testing.assert_array_equal(
            np.asarray(eqxllm.generate(model, prompt, max_new_tokens=6, eos_token_id=given)), expected
        )


def test_numpy_prompts_and_the_whole_context_are_accepted(model):
    out = eqxllm.generate(model, np.arange(60, dtype=np.int64) % 211, max_new_tokens=4)
    assert out.shape == (4,)


def test_stream_rejects_a_bad_chunk_size(model):
    with pytest.raises(InputError, match="chunk_size must be an integer >= 1, got 0"):
        next(iter(stream(model, jnp.ones((3,), jnp.int32), max_new_tokens=4, chunk_size=0)))


def test_a_model_without_a_fixed_context_bounds_nothing():
    check_context(5000, 3000, None, encoder_decoder=True)  # T5: relative positions, max_positions=None
    with pytest.raises(InputError, match="max_new_tokens must be an integer >= 1"):
        check_context(5, 0, None, encoder_decoder=True)
    with pytest.raises(InputError, match="exceeds the decoder's context"):
        check_context(5, 30, 24, encoder_decoder=True)


def test_numpy_and_jax_scalars_are_numbers(model):
    prompt = jnp.ones((3,), jnp.int32)
    plain = eqxllm.generate(model, prompt, max_new_tokens=3, temperature=0.5, top_k=5, top_p=0.9, key=KEY)
    scalars = eqxllm.generate(
        model, prompt, max_new_tokens=np.int64(3), temperature=np.float32(0.5), top_k=np.int64(5),
        top_p=jnp.asarray(0.9), key=KEY,
    )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(scalars), np.asarray(plain))


def test_generation_under_jit_says_where_to_call_it(model):
    with pytest.raises(InputError, match=r"the prompt is a traced value: .*call it outside jax.jit"):
        jax.jit(lambda ids: eqxllm.generate(model, ids, max_new_tokens=2))(jnp.ones((3,), jnp.int32))
    prompt = np.ones((3,), np.int32)  # concrete: made outside the trace
    with pytest.raises(InputError, match="temperature is a traced value"):
        jax.jit(lambda t: eqxllm.generate(model, prompt, max_new_tokens=2, temperature=t, key=KEY))(0.5)
    # a traced key is fine: several samples of one prompt under jax.vmap
    keys = jax.random.split(KEY, 2)
    samples = jax.vmap(lambda k: eqxllm.generate(model, jnp.ones((3,), jnp.int32), max_new_tokens=2, key=k))(keys)
    assert samples.shape == (2, 2)


def test_beam_search_checks_its_input_like_generate(model):
    from eqxllm.generation import beam_search

    with pytest.raises(InputError, match="prompt 1 of the batch is empty"):
        beam_search(model, [[1, 2, 3], []], max_new_tokens=2)
    with pytest.raises(InputError, match=r"prompt 1 holds token id 211 at index 1, outside the vocabulary \[0, 211\)"):
        beam_search(model, [[1, 2, 3], [4, 211]], max_new_tokens=2)
    with pytest.raises(InputError, match=r"stop token id 211 is outside the vocabulary \[0, 211\)"):
        beam_search(model, jnp.ones((3,), jnp.int32), max_new_tokens=2, eos_token_id=211)
    with pytest.raises(InputError, match="stop token id -1"):
        beam_search(model, jnp.ones((3,), jnp.int32), max_new_tokens=2, eos_token_id=[3, -1])
    # generate reads () as "never stop"; a beam search needs a stop id, and the config has one
    with pytest.raises(
        InputError, match=r"eos_token_id=\(\) gives none; pass eos_token_id=ID \(or None for the config's \[7\]\)"
    ):
        beam_search(tiny_gpt2(eos_token_id=7), jnp.ones((3,), jnp.int32), max_new_tokens=2, eos_token_id=())
    # this model's config eos (GPT-2's 50256) is beyond its 211 tokens: dropped with generate's warning
    with pytest.raises(InputError, match=r"eos_token_id=\(\) gives none; pass eos_token_id=ID$"):
        beam_search(model, jnp.ones((3,), jnp.int32), max_new_tokens=2, eos_token_id=())
    with (
        pytest.warns(UserWarning, match=r"eos_token_id \[50256\] is outside the vocabulary"),
        pytest.raises(InputError, match="the model's config has none in the vocabulary; pass eos_token_id=ID$"),
    ):
        beam_search(model, jnp.ones((3,), jnp.int32), max_new_tokens=2)
