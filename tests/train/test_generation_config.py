"""``generation_config.json``: written from a model config, read back, and honoured by ``eqxllm generate``
(its EOS ids stop the text, ``do_sample: false`` means greedy, an explicit flag wins)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.checkpoints.generation_config import generation_config, read_generation_config
from eqxllm.cli import main
from eqxllm.data.tokenizer import save_tokenizer, train_bpe_tokenizer
from eqxllm.errors import CheckpointError
from eqxllm.models import GPT2, GPT2Config
from eqxllm.models.gemma_config import GemmaConfig

PROMPT = "Once upon a time"
TEXT = ["Once upon a time, there was a little cat named Tom. Tom liked to play in the sun."] * 5


def test_written_and_read_back(tmp_path):
    written = generation_config(GemmaConfig.tiny().replace(eos_token_id=(1, 106)))
    assert written["eos_token_id"] == [1, 106] and written["pad_token_id"] == 0
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 5, "do_sample": True, "top_k": 7}))
    assert read_generation_config(tmp_path) == {"eos_token_id": [5], "do_sample": True, "top_k": 7}
    assert read_generation_config(tmp_path / "nothing") == {}
    (tmp_path / "generation_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_generation_config(tmp_path)


def test_the_sampling_fields_are_read_and_checked(tmp_path):
    # Qwen2.5-Instruct's generation_config.json, sampling part
    qwen = {"do_sample": True, "repetition_penalty": 1.05, "temperature": 0.7, "top_p": 0.8, "top_k": 20}
    (tmp_path / "generation_config.json").write_text(json.dumps({**qwen, "min_p": 0}))
    assert read_generation_config(tmp_path) == {**qwen, "min_p": 0.0}
    (tmp_path / "generation_config.json").write_text(json.dumps({"repetition_penalty": None, "min_p": None}))
    assert read_generation_config(tmp_path) == {}
    (tmp_path / "generation_config.json").write_text(json.dumps({"top_k": 0, "do_sample": True}))
    assert read_generation_config(tmp_path) == {"do_sample": True}  # 0: no top-k filtering, as transformers
    for bad, found in (
        ({"repetition_penalty": 0.0}, "repetition_penalty must be a number > 0 .*found 0.0"),
        ({"repetition_penalty": -1}, "repetition_penalty must be a number > 0 .*found -1"),
        ({"repetition_penalty": True}, "repetition_penalty must be a number > 0 .*found True"),
        ({"min_p": 1.5}, r"min_p must be a number in \[0, 1\], found 1.5"),
        ({"min_p": "0.1"}, r"min_p must be a number in \[0, 1\], found '0.1'"),
        # each of these was read as something else ("false" as true, "50256" as the ids 5, 0, 2, 5, 6,
        # 2.7 as 2) or failed with a traceback
        ({"do_sample": "false"}, "do_sample must be true or false, found 'false'"),
        ({"eos_token_id": "50256"}, r"eos_token_id must be a token id \(an integer >= 0\) or a list of them"),
        ({"eos_token_id": [1, None]}, r"eos_token_id must be a token id .*found \[1, None\]"),
        ({"top_k": 2.7}, r"top_k must be an integer >= 0 \(0: no top-k filtering\), found 2.7"),
        ({"temperature": "hot"}, "temperature must be a number >= 0, found 'hot'"),
    ):
        (tmp_path / "generation_config.json").write_text(json.dumps(bad))
        with pytest.raises(CheckpointError, match="generation_config.json: " + found):
            read_generation_config(tmp_path)


def test_generate_stops_at_its_eos_and_is_greedy_without_do_sample(tmp_path, capsys):
    tok = train_bpe_tokenizer(TEXT, vocab_size=300, min_frequency=1)
    eot = tok.token_to_id("<|endoftext|>")
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                     initializer_range=0.3, bos_token_id=eot, eos_token_id=eot)  # fmt: skip
    model = GPT2(cfg, key=jax.random.key(0))
    eqxllm.save_pretrained(model, tmp_path)
    save_tokenizer(tok, tmp_path)
    ids = jnp.asarray(tok.encode(PROMPT).ids)
    greedy = np.asarray(eqxllm.generate(model, ids, max_new_tokens=10)).tolist()
    stop_at = next(i for i in range(1, len(greedy)) if greedy[i] not in greedy[:i] and greedy[i] != eot)
    gen = {"eos_token_id": [eot, greedy[stop_at]], "do_sample": False}
    (tmp_path / "generation_config.json").write_text(json.dumps(gen))
    argv = ["generate", "--model", str(tmp_path), "--prompt", PROMPT, "--max-new-tokens", "10"]
    assert main(argv) == 0
    assert capsys.readouterr().out == PROMPT + tok.decode(greedy[:stop_at]) + "\n"
    # the same ids from Python: load_generation_config gives them to eqxllm.generate
    stops = eqxllm.load_generation_config(tmp_path)["eos_token_id"]
    tokens, length = eqxllm.generate(model, ids, max_new_tokens=10, eos_token_id=stops, return_lengths=True)
    assert np.asarray(tokens)[: int(length)].tolist() == greedy[: stop_at + 1]
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "config.json").write_text("{}")
    assert eqxllm.load_generation_config(tmp_path / "bare") == {}
