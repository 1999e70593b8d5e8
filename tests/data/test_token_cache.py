"""The token cache: contents, reuse without re-tokenizing, keys that follow their inputs, atomic writes."""

import os
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models

from eqxllm.data import (
    StorySource,
    cached_tokens,
    default_cache_dir,
    eot_id,
    load_tokenizer,
    story_sources,
    token_cache_path,
    token_dtype,
    train_bpe_tokenizer,
)
from eqxllm.data import token_cache as token_cache_module
from eqxllm.errors import DataError

from ._helpers import SAMPLE_STORIES, write_stories


@pytest.fixture
def tok() -> Tokenizer:
    return train_bpe_tokenizer(SAMPLE_STORIES, 320)


@pytest.fixture
def source(tmp_path) -> StorySource:
    return StorySource((write_stories(tmp_path / "s.txt", SAMPLE_STORIES, tail="cut off"),), "train")


def test_tokens_are_stories_each_followed_by_eot(tmp_path, tok, source):
    tokens = cached_tokens(source, tok, cache_dir=tmp_path / "c", chunk_size=4, progress=False)
    expected = [i for s in SAMPLE_STORIES for i in [*tok.encode(s).ids, eot_id(tok)]]
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
    assert tokens.tolist() == expected
    assert not tokens.flags.writeable


def test_second_call_reuses_the_file(tmp_path, tok, source, monkeypatch):
    first = cached_tokens(source, tok, cache_dir=tmp_path / "c", progress=False)
    path = token_cache_path(source, tok, tmp_path / "c")
    mtime = path.stat().st_mtime_ns

    def no_encoding(*args):
        raise AssertionError("re-tokenized although the cache holds these tokens")

    monkeypatch.setattr(token_cache_module, "_encode_chunk", no_encoding)
    again = cached_tokens(source, tok, cache_dir=tmp_path / "c", progress=False)
    assert again.tolist() == first.tolist()
    assert path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [path.name]


def test_key_changes_with_tokenizer(tmp_path, tok, source):
    other = train_bpe_tokenizer(SAMPLE_STORIES, 300)
    assert other.to_str() != tok.to_str()
    a = cached_tokens(source, tok, cache_dir=tmp_path, progress=False)
    b = cached_tokens(source, other, cache_dir=tmp_path, progress=False)
    assert token_cache_path(source, tok, tmp_path) != token_cache_path(source, other, tmp_path)
    assert b.tolist() == [i for s in SAMPLE_STORIES for i in [*other.encode(s).ids, eot_id(other)]]
    assert a.tolist() != b.tolist()


def test_key_changes_with_file_and_split(tmp_path, tok, source):
    before = token_cache_path(source, tok, tmp_path)
    path = source.files[0]
    write_stories(path, SAMPLE_STORIES[:2])
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert token_cache_path(source, tok, tmp_path) != before
    assert cached_tokens(source, tok, cache_dir=tmp_path, progress=False)[-1] == eot_id(tok)
    carved = story_sources(path, val_fraction=0.5, seed=0)
    paths = {token_cache_path(s, tok, tmp_path) for s in carved.values()}
    assert len(paths) == 2 and token_cache_path(source, tok, tmp_path) not in paths


def test_carved_splits_partition_the_stories(tmp_path, tok):
    stories = [f"Story {i} is here." for i in range(40)]
    sources = story_sources(write_stories(tmp_path / "s.txt", stories), val_fraction=0.25, seed=1)
    train = cached_tokens(sources["train"], tok, cache_dir=tmp_path / "c", progress=False)
    val = cached_tokens(sources["validation"], tok, cache_dir=tmp_path / "c", progress=False)
    eot = eot_id(tok)
    assert (val == eot).sum() == 10 and (train == eot).sum() == 30
    assert len(train) + len(val) == sum(len(tok.encode(s).ids) + 1 for s in stories)


def test_gpt2_real_slice(tmp_path, gpt2_dir, stories_file):
    gpt2 = load_tokenizer(gpt2_dir)
    tokens = cached_tokens(StorySource((stories_file,), "train"), gpt2, cache_dir=tmp_path, progress=False)
    assert tokens.dtype == np.uint16
    assert (tokens == 50256).sum() == 2316 and tokens[-1] == 50256
    first = gpt2.encode("One day, a little girl named Lily found a needle in her room.").ids
    assert tokens[: len(first)].tolist() == first


def test_failed_tokenization_leaves_no_file(tmp_path, tok, source, monkeypatch):
    real = token_cache_module._encode_chunk
    calls = []

    def fail_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return real(*args)

    monkeypatch.setattr(token_cache_module, "_encode_chunk", fail_second)
    with pytest.raises(RuntimeError, match="interrupted"):
        cached_tokens(source, tok, cache_dir=tmp_path / "c", chunk_size=2, progress=False)
    assert list((tmp_path / "c").iterdir()) == []


def test_uint32_for_large_vocabularies():
    big = Tokenizer(models.WordLevel({f"w{i}": i for i in range(70_000)}, unk_token="w0"))
    assert token_dtype(big) == np.uint32
    exact = Tokenizer(models.WordLevel({f"w{i}": i for i in range(65_536)}, unk_token="w0"))
    assert token_dtype(exact) == np.uint16


def test_default_cache_dir(monkeypatch, tmp_path):
    assert default_cache_dir() == Path(os.environ["EQXLLM_TOKEN_CACHE"])
    monkeypatch.delenv("EQXLLM_TOKEN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "eqxllm" / "tokens"


def test_missing_data_file(tmp_path, tok):
    with pytest.raises(DataError, match=r"data file .*gone\.txt cannot be read: No such file"):
        cached_tokens(StorySource((tmp_path / "gone.txt",), "train"), tok, cache_dir=tmp_path)
