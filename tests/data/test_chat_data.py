"""Chat messages as training data (TRL's conversational formats): laid out by the chat template of the
run's tokenizer, the loss on the reply only for prompt/completion records, and each refusal."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

pytest.importorskip("datasets")

from eqxllm.data.chat import load_chat_templates  # noqa: E402
from eqxllm.data.hf_datasets import DatasetSpec, dataset_sources  # noqa: E402
from eqxllm.data.tokenizer import save_tokenizer, train_bpe_tokenizer  # noqa: E402
from eqxllm.errors import DataError  # noqa: E402
from eqxllm.models.gpt2 import GPT2, GPT2Config  # noqa: E402
from eqxllm.train.config import DataConfig  # noqa: E402
from eqxllm.train.export import export_run  # noqa: E402
from eqxllm.train.prepare import prepare_data, with_chat_templates  # noqa: E402
from eqxllm.train.tasks.lm import LMTask  # noqa: E402

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# lays the last turn out otherwise when it is a finished reply: the prompt is not a prefix of the chat
SHIFTY = (
    "{% for m in messages %}{{ m['role'] }}{% if loop.last and not add_generation_prompt %}!{% endif %}"
    "{{ ': ' + m['content'] + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)


def _tokenizer_dir(root: Path, template: str | None) -> Path:
    tok = train_bpe_tokenizer(["Q: what did the cat see? A: the cat saw a dog."] * 8, vocab_size=300, min_frequency=1)
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    save_tokenizer(tok, root)
    if template is not None:
        config = json.loads((root / "tokenizer_config.json").read_text())
        # as ChatML tokenizers declare it: a reply's end is the end of sequence
        (root / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": template,
                                                                "eos_token": "<|im_end|>"}))  # fmt: skip
    return root


@pytest.fixture(scope="module")
def chatml(tmp_path_factory) -> Path:
    return _tokenizer_dir(tmp_path_factory.mktemp("chatml"), CHATML)


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _reply(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _pairs(path: Path, n: int = 10) -> Path:
    rows = [{"prompt": _user(f"what did cat {i} see?"), "completion": _reply(f"a dog {i}")} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_chat_pair_trains_on_the_reply_and_its_end_of_turn_only(tmp_path, chatml):
    path = _pairs(tmp_path / "pairs.jsonl")
    cfg = DataConfig(source=str(path), cache_dir=str(tmp_path / "c"), tokenizer=str(chatml), val_fraction=0.2,
                     prompt_field="prompt", completion_field="completion")  # fmt: skip
    data = prepare_data(cfg, tmp_path / "run", progress=False)
    tok = data.tokenizer
    # the first training record (the hold-out is the same on every run)
    source = with_chat_templates(dataset_sources(DatasetSpec(str(path), prompt_field="prompt",
                                 completion_field="completion", val_fraction=0.2)), cfg)[0]["train"]  # fmt: skip
    prompt, completion = next(iter(source.iter_examples()))
    i = prompt.split("cat ")[1].split(" ")[0]
    assert prompt == f"<|im_start|>user\nwhat did cat {i} see?<|im_end|>\n<|im_start|>assistant\n"
    assert completion == f"a dog {i}<|im_end|>\n"
    p_ids = tok.encode(prompt, add_special_tokens=False).ids
    c_ids = tok.encode(completion, add_special_tokens=False).ids
    n = len(p_ids) + len(c_ids)
    # no end-of-sequence after the reply: the template's <|im_end|> ends it, and carries loss
    np.testing.assert_array_equal(np.asarray(data.train[:n]), [*p_ids, *c_ids])
    np.testing.assert_array_equal(np.asarray(data.train_mask[:n]), [0] * len(p_ids) + [1] * len(c_ids))
    assert tok.token_to_id("<|im_end|>") in c_ids and data.train[n] == tok.token_to_id("<|im_start|>")
    assert len(data.train) == len(data.train_mask) and len(data.validation) == len(data.validation_mask)

    # the model trained on these replies stops where they end, and its export chats with their template
    # (it had no template, and stopped only at <|endoftext|>, which chat replies never hold)
    end = tok.token_to_id("<|im_end|>")
    assert data.reply_end() == end
    cfg_m = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=32, n_embd=16, n_layer=1, n_head=2)
    task = LMTask.__new__(LMTask)  # the task's model config alone, without preparing the data again
    task.data, task.tokenizer = data, tok
    trained = task.model_config(cfg_m)
    assert trained.eos_token_id == end and trained.bos_token_id == data.eot
    export_run(GPT2(trained, key=jax.random.key(0)), tmp_path / "model", tokenizer=tok, chat=data.chat)
    templates = load_chat_templates(tmp_path / "model")
    assert templates.select() == CHATML and templates.special_tokens["eos_token"] == "<|im_end|>"
    assert json.loads((tmp_path / "model" / "generation_config.json").read_text())["eos_token_id"] == end


def test_a_messages_field_is_one_whole_conversation(tmp_path, chatml):
    rows = [{"messages": _user(f"hi {i}") + _reply(f"hello {i}")} for i in range(6)]
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = DataConfig(source=str(path), tokenizer=str(chatml), text_field="messages", val_fraction=0.5)
    sources, chat = with_chat_templates(dataset_sources(DatasetSpec(str(path), text_field="messages",
                                                                    val_fraction=0.5)), cfg)  # fmt: skip
    assert chat
    texts = sources["train"].stories() + sources["validation"].stories()
    assert sorted(texts) == sorted(
        f"<|im_start|>user\nhi {i}<|im_end|>\n<|im_start|>assistant\nhello {i}<|im_end|>\n" for i in range(6)
    )
    # another template lays the same records out as other text: the token cache must not be shared
    other = with_chat_templates(dataset_sources(DatasetSpec(str(path), text_field="messages", val_fraction=0.5)),
                                cfg, init_from=str(_tokenizer_dir(tmp_path / "shifty", SHIFTY)))[0]  # fmt: skip
    assert other["train"].fingerprint()["chat"] != sources["train"].fingerprint()["chat"]


def test_chat_records_are_refused_without_a_template_that_continues_the_prompt(tmp_path, chatml):
    path = _pairs(tmp_path / "pairs.jsonl")
    fields = dict(prompt_field="prompt", completion_field="completion", val_fraction=0.2)
    run = lambda **data: prepare_data(DataConfig(source=str(path), **fields, **data), tmp_path / "run", progress=False)  # noqa: E731
    with pytest.raises(DataError, match=r"a tokenizer trained here has none: start from an instruct checkpoint"):
        run(tokenizer="train", vocab_size=300)
    with pytest.raises(DataError, match=r"that tokenizer cannot give one: .* has no chat template"):
        run(tokenizer=str(_tokenizer_dir(tmp_path / "base", None)))
    with pytest.raises(DataError, match=r"lays the prompt out differently once a reply follows"):
        run(tokenizer=str(_tokenizer_dir(tmp_path / "shifty", SHIFTY)), cache_dir=str(tmp_path / "c1"))
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps({"prompt": _user("hi"), "completion": "hello"}) + "\n" for _ in range(4)))
    with pytest.raises(DataError, match=r"must both be chat messages or both text, got list and str"):
        prepare_data(DataConfig(source=str(mixed), tokenizer=str(chatml), cache_dir=str(tmp_path / "c2"), **fields),
                     tmp_path / "run", progress=False)  # fmt: skip
    # chat records, then plain text ones: these were packed as chat replies, with no end token
    rows = [{"prompt": _user("hi"), "completion": _reply("hello")}, {"prompt": "plain", "completion": " text"}] * 4
    mixed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"mixes chat records and plain text \(\['plain', ' text'\]\)"):
        prepare_data(DataConfig(source=str(mixed), tokenizer=str(chatml), cache_dir=str(tmp_path / "c3"), **fields),
                     tmp_path / "run", progress=False)  # fmt: skip
