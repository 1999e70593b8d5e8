"""``eqxllm generate`` end to end: a tiny GPT-2 saved with a tiny trained tokenizer, text streamed to stdout."""

import io
import json
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.cli import main
from eqxllm.data import chat_prompt
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
    recorder.truncate(0)
    recorder.seek(0)
    assert main([*argv, "--prefill-chunk", "3"]) == 0  # the prompt fills the cache 3 tokens at a time
    assert recorder.getvalue() == PROMPT + expected + "\n"


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
        (["--greedy", "--min-p", "0.1"], "--greedy always takes the most likely token; --min-p would be ignored"),
        (["--min-p", "1.5"], "argument --min-p: expected a number in [0, 1], got 1.5"),
        (["--min-p", "x"], "argument --min-p: expected a number in [0, 1], got 'x'"),
        (["--repetition-penalty", "0"], "argument --repetition-penalty: expected a finite number > 0, got 0"),
        (["--repetition-penalty", "-1.2"], "argument --repetition-penalty: expected a finite number > 0, got -1.2"),
        (["--prefill-chunk", "0"], "argument --prefill-chunk: expected an integer >= 1, got 0"),
        (["--seed", str(2**64)], f"argument --seed: expected an integer from 0 to 2**63 - 1, got {2**64}"),
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
        "--min-p",
        "--repetition-penalty",
        "--chat",
        "--system",
    ):
        assert flag in out


def _with_generation_config(saved, tmp_path, config: dict):
    path, _, _ = saved
    shutil.copytree(path, tmp_path / "m")
    (tmp_path / "m" / "generation_config.json").write_text(json.dumps(config))
    return tmp_path / "m"


def _run(capsys, path, *flags) -> str:
    assert main(["generate", "--model", str(path), "--prompt", PROMPT, "--max-new-tokens", "12", *flags]) == 0
    return capsys.readouterr().out


def test_the_generation_config_sets_the_repetition_penalty_of_greedy_decoding(saved, tmp_path, capsys):
    _, model, tok = saved
    path = _with_generation_config(saved, tmp_path, {"do_sample": False, "repetition_penalty": 1.5})
    penalised, plain = _expected(model, tok, repetition_penalty=1.5), _expected(model, tok)
    assert penalised != plain
    assert _run(capsys, path) == PROMPT + penalised + "\n"
    assert _run(capsys, path, "--repetition-penalty", "1") == PROMPT + plain + "\n"  # an explicit flag wins
    assert _run(capsys, path, "--greedy") == PROMPT + penalised + "\n"  # --greedy keeps the penalty


def test_the_generation_config_sets_every_sampling_default_and_flags_win(saved, tmp_path, capsys):
    _, model, tok = saved
    config = {"do_sample": True, "temperature": 2.0, "top_k": 40, "min_p": 0.1, "repetition_penalty": 1.3}
    path = _with_generation_config(saved, tmp_path, config)
    key = jax.random.fold_in(jax.random.key(0), 0)
    options = {name: config[name] for name in ("temperature", "top_k", "min_p", "repetition_penalty")}
    expected = _expected(model, tok, key=key, **options)
    for name, off in (("temperature", 1.0), ("min_p", None), ("repetition_penalty", 1.0), ("top_k", None)):
        assert _expected(model, tok, key=key, **{**options, name: off}) != expected, f"{name} changes nothing here"
    assert _run(capsys, path) == PROMPT + expected + "\n"
    flags = ["--temperature", "1.5", "--min-p", "0.3", "--repetition-penalty", "0.8"]
    wins = _expected(model, tok, key=key, temperature=1.5, top_k=40, min_p=0.3, repetition_penalty=0.8)
    assert _run(capsys, path, *flags) == PROMPT + wins + "\n"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"repetition_penalty": 0}, "repetition_penalty must be a number > 0 (1.0 is no penalty), found 0"),
        ({"repetition_penalty": "high"}, "repetition_penalty must be a number > 0 (1.0 is no penalty), found 'high'"),
        ({"min_p": 1.2}, "min_p must be a number in [0, 1], found 1.2"),
        ({"temperature": "hot"}, "temperature must be a number >= 0, found 'hot'"),  # was a traceback
    ],
)
def test_a_bad_generation_config_value_prints_one_error_line(saved, tmp_path, capsys, config, message):
    path = _with_generation_config(saved, tmp_path, config)
    assert main(["generate", "--model", str(path), "--prompt", PROMPT]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("eqxllm generate: error: ") and "generation_config.json: " + message in err
    assert len(err.strip().splitlines()) == 1 and out == ""


def _beams(model, tok, **options) -> list[str]:
    """What beam_search finds for the prompt: every hypothesis's text, best first."""
    from eqxllm.generation import beam_search

    ids = jnp.asarray(tok.encode(PROMPT).ids)
    found = beam_search(model, ids, max_new_tokens=12, return_all=True, **options)
    eos = model.config.eos_token_id
    texts = []
    for row in np.asarray(found).tolist():
        texts.append(tok.decode(row[: row.index(eos)] if eos in row else row))
    return texts


def test_num_beams_prints_the_best_texts_of_the_search(saved, capsys):
    _, model, tok = saved
    best = _beams(model, tok, num_beams=4, length_penalty=0.0, early_stopping=True)
    assert best[0] != _expected(model, tok)  # the search finds another text than greedy decoding here
    flags = ["--num-beams", "4", "--length-penalty", "0", "--early-stopping", "true"]
    assert _run(capsys, saved[0], *flags) == PROMPT + best[0] + "\n"
    # the cache filled with the prompt 2 tokens at a time
    assert _run(capsys, saved[0], *flags, "--prefill-chunk", "2") == PROMPT + best[0] + "\n"
    two = _run(capsys, saved[0], *flags, "--num-samples", "2")
    assert two == f"--- beam 1 ---\n{PROMPT}{best[0]}\n\n--- beam 2 ---\n{PROMPT}{best[1]}\n"


def test_the_generation_config_num_beams_searches_unless_the_run_samples(saved, tmp_path, capsys):
    _, model, tok = saved
    config = {"num_beams": 3, "length_penalty": 2.0, "early_stopping": "never"}
    path = _with_generation_config(saved, tmp_path, config)
    searched = _beams(model, tok, num_beams=3, length_penalty=2.0, early_stopping="never")[0]
    assert _run(capsys, path) == PROMPT + searched + "\n"
    key = jax.random.fold_in(jax.random.key(0), 0)
    assert searched not in (_expected(model, tok), _expected(model, tok, key=key))  # the search shows
    # the flag wins: one beam is the command's default, sampling
    assert _run(capsys, path, "--num-beams", "1") == PROMPT + _expected(model, tok, key=key) + "\n"
    assert _run(capsys, path, "--greedy") == PROMPT + _expected(model, tok) + "\n"
    assert _run(capsys, path, "--temperature", "1") == PROMPT + _expected(model, tok, key=key) + "\n"
    # a config that samples with beams (transformers' beam sampling) samples one sequence, and says so
    path = _with_generation_config(saved, tmp_path / "s", {"num_beams": 3, "do_sample": True})
    assert main(["generate", "--model", str(path), "--prompt", PROMPT, "--max-new-tokens", "12"]) == 0
    out, err = capsys.readouterr()
    assert out == PROMPT + _expected(model, tok, key=key) + "\n" and "beam sampling" in err


def test_the_repetition_and_a_negative_length_penalty_apply_to_beam_search(saved, tmp_path, capsys):
    _, model, tok = saved
    options = dict(num_beams=4, length_penalty=-0.5)  # 4 beams, as above: the search without a penalty is compiled
    penalised, plain = _beams(model, tok, **options, repetition_penalty=1.5)[0], _beams(model, tok, **options)[0]
    assert penalised != plain
    flags = ["--num-beams", "4", "--length-penalty", "-0.5", "--repetition-penalty", "1.5"]
    assert _run(capsys, saved[0], *flags) == PROMPT + penalised + "\n"
    # generation_config.json's penalty applies to its beam search too (no note says otherwise); the flag wins
    path = _with_generation_config(saved, tmp_path, {"num_beams": 4, "length_penalty": -0.5, "repetition_penalty": 1.5})
    assert _run(capsys, path, "--repetition-penalty", "1") == PROMPT + plain + "\n"
    assert main(["generate", "--model", str(path), "--prompt", PROMPT, "--max-new-tokens", "12"]) == 0
    assert capsys.readouterr() == (PROMPT + penalised + "\n", "")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--num-beams", "4", "--top-k", "5"],
            "--num-beams 4 searches for the likeliest text; --top-k would be ignored",
        ),
        (["--num-beams", "2", "--greedy"], "--greedy would be ignored"),
        (
            ["--num-beams", "2", "--length-penalty", "inf"],
            "argument --length-penalty: expected a finite number, got inf",
        ),
        (["--num-beams", "2", "--num-samples", "3"], "--num-samples 3 asks for more texts than the 2 beams find"),
        (["--length-penalty", "2"], "--length-penalty set(s) how a beam search scores or stops: add --num-beams N"),
        (["--early-stopping", "never"], "--early-stopping set(s) how a beam search scores or stops"),
        (["--num-beams", "0"], "argument --num-beams: expected an integer >= 1, got 0"),
        (["--early-stopping", "maybe"], "argument --early-stopping: invalid choice: 'maybe'"),
    ],
)
def test_bad_beam_flags_print_one_error_line(saved, capsys, flags, message):
    test_bad_flags_print_one_error_line(saved, capsys, flags, message)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"num_beams": 0}, "num_beams must be an integer >= 1, found 0"),
        ({"num_beams": 2.5}, "num_beams must be an integer >= 1, found 2.5"),
        ({"length_penalty": "long"}, "length_penalty must be a finite number, found 'long'"),
        ({"early_stopping": "soon"}, "early_stopping must be true, false or \"never\", found 'soon'"),
    ],
)
def test_a_bad_beam_setting_in_the_generation_config_prints_one_error_line(saved, tmp_path, capsys, config, message):
    test_a_bad_generation_config_value_prints_one_error_line(saved, tmp_path, capsys, config, message)


CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
MESSAGES = [{"role": "user", "content": PROMPT}]


def _with_chat_template(saved, tmp_path, **config):
    path = _with_generation_config(saved, tmp_path, {})
    tokenizer_config = json.loads((path / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, **config}))
    return path


def test_chat_prints_the_reply_to_the_templated_prompt_and_stops_at_the_eos_token(saved, tmp_path, capsys):
    _, model, tok = saved
    path = _with_chat_template(saved, tmp_path, chat_template=CHAT_TEMPLATE)
    ids = chat_prompt(path, MESSAGES)
    assert tok.decode(ids) == f"user: {PROMPT}\nassistant:"
    tokens = np.asarray(eqxllm.generate(model, jnp.asarray(ids), max_new_tokens=12, eos_token_id=())).tolist()

    def until(stops: set[int]) -> str:
        return tok.decode(next((tokens[:i] for i, t in enumerate(tokens) if t in stops), tokens))

    reply = until({model.config.eos_token_id})
    assert reply.strip() and reply != _expected(model, tok)
    assert _run(capsys, path, "--chat", "--greedy") == reply + "\n"  # the reply alone
    # the tokenizer's eos_token (an instruct tokenizer's end of turn) stops the reply too
    third = tokens[2]
    assert model.config.eos_token_id not in tokens[:3]
    path = _with_chat_template(saved, tmp_path / "eot", chat_template=CHAT_TEMPLATE, eos_token=tok.id_to_token(third))
    cut = until({model.config.eos_token_id, third})
    assert _run(capsys, path, "--chat", "--greedy") == cut + "\n" and len(cut) < len(reply)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--system", "Be brief."], "--system gives a chat's system message: add --chat"),
        (["--chat", "--system", "Be brief."], "refuses these messages: System role not supported"),
    ],
)
def test_bad_chat_flags_print_one_error_line(saved, tmp_path, capsys, flags, message):
    path = _with_chat_template(saved, tmp_path, chat_template=CHAT_TEMPLATE)
    test_bad_flags_print_one_error_line((path, None, None), capsys, flags, message)


def test_chat_without_a_template_prints_one_error_line(saved, capsys):
    test_bad_flags_print_one_error_line(saved, capsys, ["--chat"], "has no chat template: neither chat_template.jinja")
