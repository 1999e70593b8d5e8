"""Text through Hugging Face ``datasets``: every file format from a small file written here, field names,
streaming, the hold-out, the token cache, prompt/completion masks, and the errors of bad input."""

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("datasets")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from eqxllm.data.hf_datasets import DatasetSpec, dataset_sources  # noqa: E402
from eqxllm.errors import DataError  # noqa: E402
from eqxllm.models.gpt2 import GPT2, GPT2Config  # noqa: E402
from eqxllm.train.config import DataConfig  # noqa: E402
from eqxllm.train.evaluate import evaluate_tokens  # noqa: E402
from eqxllm.train.loss import completion_loss, cross_entropy  # noqa: E402
from eqxllm.train.prepare import prepare_data, uses_datasets  # noqa: E402

TEXTS = [f"Story {i}: the cat, named {name}, sat on a mat." for i, name in enumerate(["Tom", "Mia", "Ben"] * 4)]


def _write(path: Path, rows: list[dict]) -> Path:
    """``rows`` in the format that ``path``'s suffix names."""
    kind = path.suffix
    if kind == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif kind == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif kind == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif kind == ".csv":
        cols = list(rows[0])
        lines = [",".join(cols)] + [",".join('"' + str(r[c]).replace('"', '""') + '"' for c in cols) for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv"])
def test_each_format_is_read_in_order_with_a_deterministic_holdout(tmp_path, suffix):
    path = _write(tmp_path / f"data{suffix}", [{"body": t, "id": i} for i, t in enumerate(TEXTS)])
    assert uses_datasets(DataConfig(source=str(path)))
    spec = DatasetSpec(source=str(path), text_field="body", val_fraction=0.3, seed=1)
    sources = dataset_sources(spec)
    train, val = sources["train"].stories(), sources["validation"].stories()
    assert sorted(train + val) == sorted(TEXTS) and val and train
    assert train == [t for t in TEXTS if t in train]  # file order kept
    again = dataset_sources(spec)
    assert again["validation"].stories() == val  # the same hold-out every time
    assert sources["train"].fingerprint() == again["train"].fingerprint()


def test_streaming_reads_the_same_records(tmp_path):
    path = _write(tmp_path / "data.jsonl", [{"text": t} for t in TEXTS])
    plain = dataset_sources(DatasetSpec(source=str(path), val_fraction=0.3))
    streamed = dataset_sources(DatasetSpec(source=str(path), val_fraction=0.3, streaming=True))
    for split in ("train", "validation"):
        assert streamed[split].stories() == plain[split].stories()


def test_folder_with_its_own_validation_file(tmp_path):
    _write(tmp_path / "train.jsonl", [{"text": t} for t in TEXTS[:8]])
    _write(tmp_path / "valid.jsonl", [{"text": t} for t in TEXTS[8:]])
    sources = dataset_sources(DatasetSpec(source=str(tmp_path)))
    assert sources["train"].stories() == TEXTS[:8] and sources["validation"].stories() == TEXTS[8:]


def test_tokenized_once_into_the_cache(tmp_path):
    path = _write(tmp_path / "data.parquet", [{"text": t} for t in TEXTS * 3])
    cfg = DataConfig(source=str(path), cache_dir=str(tmp_path / "cache"), vocab_size=300, val_fraction=0.2)
    first = prepare_data(cfg, tmp_path / "run", progress=False)
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    second = prepare_data(cfg, tmp_path / "run", progress=False)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == files and len(files) == 2
    np.testing.assert_array_equal(np.asarray(first.train), np.asarray(second.train))
    assert first.train_mask is None


@pytest.mark.parametrize(
    ("rows", "spec", "match"),
    [
        ([{"text": "a"}], dict(text_field="body"), "has no field 'body'; its records have \\['text'\\]"),
        ([{"q": "a", "a": "b"}], dict(prompt_field="question", completion_field="a"), "has no field 'question'"),
        ([], {}, "is empty"),
    ],
)
def test_bad_datasets(tmp_path, rows, spec, match):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=match):
        dataset_sources(DatasetSpec(source=str(path), val_fraction=0.0, **spec))["train"].stories()


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [  # the first was a UnicodeDecodeError reported as a bug in eqxllm; the others named no reason
        ("notes.jsonl", b'{"text": "caf\xe9 au lait"}\n' * 5, r"is not valid UTF-8 \('utf-8' codec can't decode"),
        ("bad.csv", b"text\ncaf\xe9\n", r"cannot be read: .*\(UnicodeDecodeError: 'utf-8' codec"),
        ("cut.jsonl", b'{"text": "a"}\n{"text": "b', r"cannot be read: .*\(ArrowInvalid: JSON parse error"),
    ],
)
def test_malformed_files_say_why(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=match):
        dataset_sources(DatasetSpec(source=str(tmp_path / name), val_fraction=0.0))["train"].stories()


def test_a_compressed_json_lines_file_is_read_as_json_lines(tmp_path):
    import gzip

    rows = [{"text": f"story {i}"} for i in range(6)]
    (tmp_path / "notes.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    spec = DatasetSpec(source=str(tmp_path / "notes.jsonl.gz"), val_fraction=0.0)
    assert uses_datasets(DataConfig(source=spec.source))  # it was read as separated text, and refused as not UTF-8
    assert dataset_sources(spec)["train"].stories() == [r["text"] for r in rows]


def test_records_with_a_null_field_are_skipped_and_counted(tmp_path):
    rows = [
        {"prompt": "Q", "completion": " a"},
        {"prompt": "Q", "completion": None},
        {"prompt": None, "completion": " b"},
    ]
    path = _write(tmp_path / "pairs.jsonl", rows)
    spec = DatasetSpec(source=str(path), prompt_field="prompt", completion_field="completion", val_fraction=0.0)
    with pytest.warns(UserWarning, match=r"2 of the 3 records of its train split have a null 'prompt' or 'completion'"):
        assert list(dataset_sources(spec)["train"].iter_examples()) == [("Q", " a")]


def test_empty_csv_and_held_out_everything(tmp_path):
    (tmp_path / "h.csv").write_text("text\n")
    with pytest.raises(DataError, match="is empty"):
        dataset_sources(DatasetSpec(source=str(tmp_path / "h.csv")))["train"].stories()
    path = _write(tmp_path / "one.jsonl", [{"text": "only"}])
    with pytest.raises(DataError, match=r"the hold-out of 0 of dataset .* took none .*raise --data.val-fraction"):
        dataset_sources(DatasetSpec(source=str(path), val_fraction=0.0))["validation"].stories()
    with pytest.raises(DataError, match=r"every record was held out .*smaller --data.val-fraction"):
        dataset_sources(DatasetSpec(source=str(path), val_fraction=1.0))["train"].stories()


def test_hub_dataset_not_cached_while_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path))
    with pytest.raises(DataError, match="not in the datasets cache and offline mode is on"):
        dataset_sources(DatasetSpec(source="someone/surely-not-cached-dataset"))


def test_prompt_tokens_carry_no_loss(tmp_path):
    rows = [{"prompt": f"Q{i}: who sat?", "completion": f" {t}"} for i, t in enumerate(TEXTS * 2)]
    path = _write(tmp_path / "pairs.jsonl", rows)
    cfg = DataConfig(source=str(path), cache_dir=str(tmp_path / "c"), vocab_size=300, val_fraction=0.2,
                     prompt_field="prompt", completion_field="completion")  # fmt: skip
    data = prepare_data(cfg, tmp_path / "run", progress=False)
    tok, eot = data.tokenizer, data.eot
    first = dataset_sources(DatasetSpec(source=str(path), prompt_field="prompt", completion_field="completion",
                                        val_fraction=0.2))["train"]  # fmt: skip
    prompt, completion = next(first.iter_examples())
    p_ids = tok.encode(prompt, add_special_tokens=False).ids
    c_ids = tok.encode(completion, add_special_tokens=False).ids
    n = len(p_ids) + len(c_ids) + 1
    np.testing.assert_array_equal(np.asarray(data.train[:n]), [*p_ids, *c_ids, eot])
    np.testing.assert_array_equal(np.asarray(data.train_mask[:n]), [0] * len(p_ids) + [1] * (len(c_ids) + 1))
    assert len(data.train_mask) == len(data.train) and len(data.validation_mask) == len(data.validation)

    # the loss averages the completion targets only: the same as a hand-masked cross-entropy
    cfg_m = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=32, n_embd=16, n_layer=1, n_head=2)
    model = GPT2(cfg_m, key=jax.random.key(0))
    tokens = jnp.asarray(np.asarray(data.train[None, :17], np.int32))
    mask = jnp.asarray(np.asarray(data.train_mask[None, :17], np.int32))
    loss, aux = completion_loss(model, {"tokens": tokens, "loss_mask": mask})
    logits = jax.vmap(model)(tokens[:, :-1])
    nll = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, tokens[:, 1:, None], -1)[..., 0]
    keep = np.asarray(mask[:, 1:]) > 0
    assert 0 < keep.sum() < keep.size and float(aux["tokens"]) == keep.sum()
    np.testing.assert_allclose(float(loss), float(np.asarray(nll)[keep].mean()), rtol=1e-5)
    total, _ = cross_entropy(logits, tokens[:, 1:], jnp.asarray(~keep))
    assert float(total) > 0  # the prompt targets would have carried loss without the mask

    # bits per byte: the bits of the completion targets over the bytes of the completions (and the
    # end token each closes with), not over the prompts' bytes too
    held_out = dataset_sources(DatasetSpec(source=str(path), prompt_field="prompt", completion_field="completion",
                                           val_fraction=0.2))["validation"]  # fmt: skip
    completion_bytes = sum(len(c.encode()) + len("<|endoftext|>") for _, c in held_out.iter_examples())
    assert data.validation_bytes == completion_bytes
    res = evaluate_tokens(model, np.asarray(data.validation), num_bytes=data.validation_bytes, seq_len=16,
                          batch_size=4, loss_mask=np.asarray(data.validation_mask))  # fmt: skip
    assert res.tokens == int(np.asarray(data.validation_mask)[1:].sum()) and res.bytes == completion_bytes
    np.testing.assert_allclose(res.bits_per_byte, res.loss * res.tokens / math.log(2) / completion_bytes, rtol=1e-5)


def _folder(root: Path, names: list[str]) -> Path:
    for name in names:
        _write(root / name, [{"text": f"{name} {t}"} for t in TEXTS])
    return root


@pytest.mark.parametrize(
    ("names", "train", "validation"),
    [  # a split's name is a whole word (bounded by - _ . a digit or the ends), as on the Hub
        (["interval.jsonl", "latest.jsonl", "invalid_removed.jsonl", "contest_2023.jsonl", "contest_valid.jsonl"],
         ["contest_2023.jsonl", "interval.jsonl", "invalid_removed.jsonl", "latest.jsonl"], ["contest_valid.jsonl"]),
        (["notes-train.jsonl", "notes-dev.jsonl", "notes-test.jsonl"], ["notes-train.jsonl"], ["notes-dev.jsonl"]),
        (["a.jsonl", "test.jsonl"], ["a.jsonl"], ["test.jsonl"]),
    ],
)  # fmt: skip
def test_folder_names_split_by_whole_words(tmp_path, names, train, validation):
    sources = dataset_sources(DatasetSpec(source=str(_folder(tmp_path, names))))
    assert [p.name for p in sources["train"].files] == train
    assert [p.name for p in sources["validation"].files] == validation
    assert not set(sources["train"].stories()) & set(sources["validation"].stories())


def test_a_folder_of_validation_files_is_never_trained_on(tmp_path):
    folder = _folder(tmp_path, ["news_dev.jsonl", "news_test.jsonl"])
    with pytest.raises(DataError, match=r"holds only validation files .*add a training file"):
        dataset_sources(DatasetSpec(source=str(folder)))


def test_save_to_disk_folders(tmp_path):
    datasets = pytest.importorskip("datasets")
    one = datasets.Dataset.from_dict({"text": TEXTS})
    one.save_to_disk(str(tmp_path / "one"))
    assert uses_datasets(DataConfig(source=str(tmp_path / "one")))
    sources = dataset_sources(DatasetSpec(source=str(tmp_path / "one"), val_fraction=0.3))
    train, val = sources["train"].stories(), sources["validation"].stories()
    assert sorted(train + val) == sorted(TEXTS) and train and val
    both = datasets.DatasetDict({"train": one.select(range(8)), "validation": one.select(range(8, 12))})
    both.save_to_disk(str(tmp_path / "both"))
    sources = dataset_sources(DatasetSpec(source=str(tmp_path / "both")))
    assert sources["train"].stories() == TEXTS[:8] and sources["validation"].stories() == TEXTS[8:]
    assert sources["train"].fingerprint() != sources["validation"].fingerprint()


@pytest.mark.parametrize(
    ("train", "validation"),
    [
        ("data/train-00000-of-00001.parquet", "data/validation-00000-of-00001.parquet"),
        ("train/0.parquet", "dev/0.parquet"),
    ],
)
def test_hub_snapshot_layouts(tmp_path, train, validation):
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n")
    for name, texts in ((train, TEXTS[:8]), (validation, TEXTS[8:])):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        _write(tmp_path / name, [{"text": t} for t in texts])
    assert uses_datasets(DataConfig(source=str(tmp_path)))
    sources = dataset_sources(DatasetSpec(source=str(tmp_path)))
    assert sources["train"].stories() == TEXTS[:8] and sources["validation"].stories() == TEXTS[8:]


@pytest.mark.parametrize(
    ("row", "spec", "match"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, dict(text_field="messages"), "this run has none"),
        ({"q": "2 + 2 =", "a": 4}, dict(prompt_field="q", completion_field="a"), "'a' holds int values"),
    ],
)
def test_a_field_that_is_not_text_is_refused(tmp_path, row, spec, match):
    path = _write(tmp_path / "chat.jsonl", [row] * 4)
    with pytest.raises(DataError, match=match):
        dataset_sources(DatasetSpec(source=str(path), val_fraction=0.5, **spec))["train"].stories()
