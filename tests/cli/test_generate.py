"""``eqxllm generate`` end to end: a tiny GPT-2 saved with a tiny trained tokenizer, text streamed to stdout."""

import io
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.cli import main
from eqxllm.data.tokenizer import save_tokenizer, train_bpe_tokenizer
from tests.generation._helpers import tiny_gpt2

SENTENCES = [
    "Once upon a time, there was a little cat named Tom. Tom liked to play in the sun.",
    "One day, Sara went to the park with her mom. She saw a big red ball and ran to get it.",
    "The bird sang a happy song. The sun was warm and the flowers were bright.",
    "Lily and Max built a tall tower of blocks. It fell down, and they built it again.",
]
PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tok = train_bpe_tokenizer(SENTENCES * 5, vocab_size=300, min_frequency=1)
    eos = tok.token_to_id("<|endoftext|>")
    model = tiny_gpt2(vocab_size=tok.get_vocab_size(), bos_token_id=eos, eos_token_id=eos)
    path = tmp_path_factory.mktemp("tiny-gpt2")
    eqxllm.save_pretrained(model, path)
    save_tokenizer(tok, path)
    return path, eqxllm.from_pretrained(path), tok


def _expected(model, tok, **kwargs) -> str:
    ids = jnp.asarray(tok.encode(PROMPT).ids)
    tokens, length = eqxllm.generate(model, ids, max_new_tokens=12, return_lengths=True, **kwargs)
    new = np.asarray(tokens)[: int(length)].tolist()
    if new and new[-1] == model.config.eos_token_id:
        new = new[:-1]
    return tok.decode(new)


class _Recorder(io.StringIO):
    """A stdout that remembers each write, to see the text arrive piece by piece."""

    def __init__(self):
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_greedy_prints_the_prompt_and_streams_the_continuation(saved, monkeypatch):
    path, model, tok = saved
    expected = _expected(model, tok)
    assert expected.strip(), "the continuation should hold some text"
    recorder = _Recorder()
    monkeypatch.setattr(sys, "stdout", recorder)
    argv = ["generate", "--model", str(path), "--prompt", PROMPT, "--max-new-tokens", "12", "--greedy"]
    assert main([*argv, "--chunk-size", "2"]) == 0
    assert "".join(recorder.writes) == PROMPT + expected + "\n"
    assert len([w for w in recorder.writes if w.strip()]) >= 3  # prompt, then text in several pieces


def test_samples_are_reproducible_with_their_own_keys(saved, capsys):
    path, model, tok = saved
    options = dict(temperature=0.9, top_k=20, top_p=0.95)
    expected = [_expected(model, tok, key=jax.random.fold_in(jax.random.key(3), i), **options) for i in range(2)]
    argv = ["generate", "--model", str(path), "--prompt", PROMPT, "--max-new-tokens", "12", "--num-samples", "2",
            "--seed", "3", "--temperature", "0.9", "--top-k", "20", "--top-p", "0.95"]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().out == (
        f"--- sample 1 ---\n{PROMPT}{expected[0]}\n\n--- sample 2 ---\n{PROMPT}{expected[1]}\n"
    )
    assert expected[0] != expected[1]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--top-p", "1.5"], "argument --top-p: expected a number in (0, 1], got 1.5"),
        (["--top-k", "0"], "argument --top-k: expected an integer >= 1, got 0"),
        (["--temperature", "-1"], "argument --temperature: expected a finite number >= 0"),
        (["--max-new-tokens", "500"], "exceeds the model's context (max_positions=64)"),
        (["--num-samples", "0"], "argument --num-samples: expected an integer >= 1, got 0"),
        (["--greedy", "--top-k", "5"], "--greedy always takes the most likely token; --top-k would be ignored"),
    ],
)
def test_bad_flags_print_one_error_line(saved, capsys, flags, message):
    path, _, _ = saved
    assert main(["generate", "--model", str(path), "--prompt", PROMPT, "--max-new-tokens", "8", *flags]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("eqxllm generate: error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and out == ""  # one line, and the prompt is not echoed


def test_an_encoder_decoder_prints_its_text_apart_from_the_prompt():
    import argparse

    from eqxllm.cli.generate import print_stream
    from tests.generation._helpers import FakeSeq2Seq, FakeSeq2SeqConfig

    class Digits:  # id i is the character str(i % 10)
        def decode(self, ids):
            return "".join(str(i % 10) for i in ids)

    model = FakeSeq2Seq(FakeSeq2SeqConfig(), key=jax.random.key(0))
    out, args = io.StringIO(), argparse.Namespace(prompt="Lily saw a cat.", max_new_tokens=4, chunk_size=2)
    print_stream(model, Digits(), jnp.array([5, 6, 7]), args, None, {}, out, stops=set())
    new = eqxllm.generate(model, jnp.array([5, 6, 7]), max_new_tokens=4, eos_token_id=())
    assert out.getvalue() == "Lily saw a cat. => " + Digits().decode(np.asarray(new).tolist())


def test_help(capsys):
    assert main(["generate", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "--model",
        "--prompt",
        "--max-new-tokens",
        "--top-k",
        "--top-p",
        "--seed",
        "--num-samples",
        "--greedy",
    ):
        assert flag in out
