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


@pytest.mark.parametrize("damage", ["cut short", "odd size", "empty", "not ours"])
def test_a_damaged_cache_file_is_refused_naming_it(tmp_path, tok, source, damage):
    """A cut cache file was read as a shorter stream (or failed with numpy's bare ValueError)."""
    whole = cached_tokens(source, tok, cache_dir=tmp_path / "c", progress=False).tolist()
    path = token_cache_path(source, tok, tmp_path / "c")
    data = path.read_bytes()
    path.write_bytes(
        {"cut short": data[: len(data) * 2 // 3 // 2 * 2], "odd size": data[:-1], "empty": b"", "not ours": data[16:]}[
            damage
        ]
    )
    with pytest.raises(DataError, match=f"token cache file {path} .*damaged; delete it"):
        cached_tokens(source, tok, cache_dir=tmp_path / "c", progress=False)
    path.unlink()
    assert cached_tokens(source, tok, cache_dir=tmp_path / "c", progress=False).tolist() == whole


def test_example_caches_hold_equally_long_tokens_and_masks(tmp_path, tok):
    from eqxllm.data.example_cache import cached_examples, mask_path

    class Pairs:
        split = "train"

        def __init__(self, pairs):
            self.pairs = pairs

        def iter_examples(self):
            return iter(self.pairs)

        def iter_stories(self):  # the rest of a TextSource (the token cache's key reads fingerprint alone)
            return iter(p + c for p, c in self.pairs)

        def stories(self):
            return list(self.iter_stories())

        def fingerprint(self):
            return {"pairs": self.pairs}

    pairs = Pairs([("Tom saw", " a cat."), ("The sun", " was warm.")])
    tokens, mask = cached_examples(pairs, tok, eot=eot_id(tok), cache_dir=tmp_path, progress=False)
    assert len(tokens) == len(mask) and 0 < int(mask.sum()) < len(mask)
    assert tokens[-1] == eot_id(tok) and mask[-1] == 1  # the closing end-of-sequence carries loss
    path = token_cache_path(pairs, tok, tmp_path, eot=eot_id(tok))
    other = cached_examples(Pairs([("A", " b.")]), tok, eot=eot_id(tok), cache_dir=tmp_path, progress=False)[1]
    mask_path(path).write_bytes(Path(other.filename).read_bytes())  # a whole mask file of another stream
    with pytest.raises(DataError, match="do not match: delete both"):
        cached_examples(pairs, tok, eot=eot_id(tok), cache_dir=tmp_path, progress=False)


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
