"""Tokenizers: GPT-2 parity with transformers, a trained BPE round trip, save/load, the Hub cache, errors."""

import os
import shutil
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models

from eqxllm.data import eot_id, load_tokenizer, read_stories, save_tokenizer, train_bpe_tokenizer
from eqxllm.errors import ConfigError, DataError

from ._helpers import SAMPLE_STORIES

TEXTS = [
    "Hello world",
    " Hello world",
    "héllo wörld — naïve café, 日本語のテキスト, emoji 🙂👍🏽 and Ωμέγα",
    "a  b\t\tc\n\n\n   d    \n",
    "   leading and trailing   ",
    "<|endoftext|>",
    "The end.<|endoftext|>Once upon a time",
    "I'm sure they'll say it's John's, don't you think? 12345 3.14159 $100",
    "",
]


@pytest.fixture
def reference(gpt2_dir):
    transformers = pytest.importorskip("transformers")
    ref = transformers.GPT2TokenizerFast.from_pretrained(str(gpt2_dir))
    assert len(ref) == 50257  # a reference with an empty vocabulary would prove nothing
    return ref


def test_gpt2_parity_with_transformers(gpt2_dir, reference, stories_file):
    tok = load_tokenizer(gpt2_dir)
    assert tok.get_vocab_size() == 50257 and eot_id(tok) == 50256
    for text in TEXTS + read_stories(stories_file)[:5]:
        ids = tok.encode(text).ids
        assert ids == reference(text)["input_ids"], text
        assert tok.decode(ids, skip_special_tokens=False) == reference.decode(ids) == text
        assert tok.decode(ids) == reference.decode(ids, skip_special_tokens=True)


def test_gpt2_known_ids(gpt2_dir):
    # The ids printed in transformers' GPT2Tokenizer docstring; the separator is one special token.
    tok = load_tokenizer(str(gpt2_dir))
    assert tok.encode("Hello world").ids == [15496, 995]
    assert tok.encode(" Hello world").ids == [18435, 995]
    assert tok.encode("a<|endoftext|>b").ids == [64, 50256, 65]


def test_tokenizer_json_in_folder_is_preferred(tmp_path, gpt2_dir):
    shutil.copy(gpt2_dir / "vocab.json", tmp_path / "vocab.json")
    shutil.copy(gpt2_dir / "merges.txt", tmp_path / "merges.txt")
    trained = train_bpe_tokenizer(SAMPLE_STORIES, 300)
    save_tokenizer(trained, tmp_path)
    assert load_tokenizer(tmp_path).get_vocab_size() == trained.get_vocab_size()


def test_a_saved_truncation_or_padding_is_not_applied(tmp_path):
    """A tokenizer.json saved with truncation at 8 tokens cut every story to 8; with padding on, pad ids
    went into the token stream. transformers clears both on load, and so does eqxllm."""
    tok = train_bpe_tokenizer(SAMPLE_STORIES, 300)
    text = " ".join(SAMPLE_STORIES)
    whole = tok.encode(text).ids
    assert len(whole) > 8
    tok.enable_truncation(max_length=8)
    tok.enable_padding(length=len(whole) + 50, pad_id=0)
    tok.save(str(tmp_path / "tokenizer.json"))
    assert len(Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(text).ids) == len(whole) + 50
    loaded = load_tokenizer(tmp_path)
    assert loaded.encode(text).ids == whole
    assert loaded.truncation is None and loaded.padding is None


def test_train_bpe_round_trips(tmp_path):
    tok = train_bpe_tokenizer(SAMPLE_STORIES, 400, min_frequency=1)
    assert 257 < tok.get_vocab_size() <= 400
    assert eot_id(tok) == 0
    for text in SAMPLE_STORIES + ["unseen: Zürich ∑ 🙂", "  spaces\n\nand lines "]:
        ids = tok.encode(text).ids
        assert tok.decode(ids) == text
    # Merges were learned: a training story takes fewer tokens than its bytes.
    assert len(tok.encode(SAMPLE_STORIES[0]).ids) < len(SAMPLE_STORIES[0].encode())
    assert tok.encode("x<|endoftext|>y").ids[1] == 0


def test_save_and_load_round_trip(tmp_path):
    tok = train_bpe_tokenizer(SAMPLE_STORIES, 320)
    path = save_tokenizer(tok, tmp_path / "out")
    assert path == tmp_path / "out" / "tokenizer.json"
    loaded = load_tokenizer(tmp_path / "out")
    assert loaded.to_str() == tok.to_str()
    assert load_tokenizer(path).encode(SAMPLE_STORIES[1]).ids == tok.encode(SAMPLE_STORIES[1]).ids
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def test_saved_tokenizer_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = train_bpe_tokenizer(SAMPLE_STORIES, 320)
    save_tokenizer(tok, tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    text = SAMPLE_STORIES[2] + "<|endoftext|>"
    assert hf(text)["input_ids"] == tok.encode(text).ids
    assert hf.eos_token == "<|endoftext|>"


def _fake_hub_model(repo: str, files: dict[str, Path]) -> None:
    root = Path(os.environ["HF_HOME"]) / "hub" / f"models--{repo.replace('/', '--')}"
    commit = "b" * 40
    (root / "snapshots" / commit).mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    for name, src in files.items():
        shutil.copy(src, root / "snapshots" / commit / name)


def test_hub_vocab_and_merges_from_cache(gpt2_dir):
    _fake_hub_model(
        "openai-community/gpt2",
        {"vocab.json": gpt2_dir / "vocab.json", "merges.txt": gpt2_dir / "merges.txt"},
    )
    tok = load_tokenizer("openai-community/gpt2")
    assert tok.encode("Hello world<|endoftext|>").ids == [15496, 995, 50256]


def test_hub_tokenizer_json_from_cache(tmp_path):
    trained = train_bpe_tokenizer(SAMPLE_STORIES, 300)
    save_tokenizer(trained, tmp_path / "t")
    _fake_hub_model("me/tiny", {"tokenizer.json": tmp_path / "t" / "tokenizer.json"})
    assert load_tokenizer("me/tiny").to_str() == trained.to_str()


def test_hub_repo_without_tokenizer_files():
    with pytest.raises(DataError, match=r"'nobody/none' gives neither tokenizer\.json .* nor vocab\.json \+ merges"):
        load_tokenizer("nobody/none")


def test_folder_without_tokenizer_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(
        DataError, match=r"holds neither tokenizer\.json nor vocab\.json \+ merges\.txt .*'config\.json'"
    ):
        load_tokenizer(tmp_path)


def test_malformed_tokenizer_json(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"model": ')
    with pytest.raises(DataError, match=r"tokenizer\.json is not a valid tokenizers JSON file"):
        load_tokenizer(tmp_path)


def test_malformed_vocab(tmp_path):
    (tmp_path / "vocab.json").write_text("[1, 2")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(DataError, match=r"cannot read a BPE vocabulary from .*vocab\.json"):
        load_tokenizer(tmp_path)


def test_missing_local_tokenizer_path(tmp_path):
    with pytest.raises(DataError, match=r"'\./no/such/dir' is neither an existing file or folder nor a Hub model id"):
        load_tokenizer("./no/such/dir")


def test_eot_id_missing():
    tok = Tokenizer(models.BPE({"a": 0, "b": 1}, []))
    with pytest.raises(DataError, match=r"vocabulary of 2\) has no '<\|endoftext\|>' token"):
        eot_id(tok)


def test_train_errors():
    with pytest.raises(ConfigError, match=r"vocab_size=100 is too small .* at least 257"):
        train_bpe_tokenizer(SAMPLE_STORIES, 100)
    with pytest.raises(DataError, match="no stories"):
        train_bpe_tokenizer([], 300)
