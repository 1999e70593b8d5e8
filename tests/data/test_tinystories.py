"""Stories from files, folders and the Hub cache: splitting rules, hold-out, and every bad input."""

import os
from pathlib import Path

import pytest

from eqxllm.data import (
    HUB_FILES,
    iter_stories,
    read_stories,
    resolve_text_files,
    story_sources,
    train_val_split,
)
from eqxllm.data import tinystories as tinystories_module
from eqxllm.errors import ConfigError, DataError

from ._helpers import SAMPLE_STORIES, write_stories


def test_split_strip_and_drop_empty(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("  first story \n<|endoftext|>\n\n<|endoftext|>second\nstory<|endoftext|>\n", encoding="utf-8")
    assert read_stories(path) == ["first story", "second\nstory"]


def test_a_byte_order_mark_is_not_text(tmp_path):
    path = tmp_path / "s.txt"
    path.write_bytes("first\n<|endoftext|>\nsecond \ufeff<|endoftext|>\n".encode("utf-8-sig"))
    assert read_stories(path) == ["first", "second \ufeff"]  # the mark at the start only: elsewhere it is text


def test_truncated_last_story_is_dropped(tmp_path):
    path = write_stories(tmp_path / "s.txt", SAMPLE_STORIES[:3], tail="Half a story that stops mid-")
    assert read_stories(path) == SAMPLE_STORIES[:3]


def test_file_ending_with_separator_keeps_every_story(tmp_path):
    path = write_stories(tmp_path / "s.txt", SAMPLE_STORIES, tail="\n  \n")
    assert read_stories(path) == SAMPLE_STORIES


def test_file_without_separator_is_one_story(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("\nJust one story, no separator.\n", encoding="utf-8")
    assert read_stories(path) == ["Just one story, no separator."]


def test_separator_across_read_blocks(tmp_path, monkeypatch):
    # Blocks of 7 bytes cut "<|endoftext|>" and multi-byte characters apart; the result must not change.
    stories = ["Zoë saw a café.", "日本の猫 🙂 played.", "The end."]
    path = write_stories(tmp_path / "s.txt", stories, tail="cut")
    monkeypatch.setattr(tinystories_module, "_BLOCK", 7)
    assert read_stories(path) == stories


def test_real_slice(stories_file):
    stories = read_stories(stories_file)
    assert len(stories) == 2316
    assert stories[0].startswith("One day, a little girl named Lily found a needle in her room.")
    assert all(s and s == s.strip() and "<|endoftext|>" not in s for s in stories)
    # The file ends mid-story; that fragment is not among the stories.
    tail = stories_file.read_text(encoding="utf-8").rsplit("<|endoftext|>", 1)[1].strip()
    assert tail and tail not in stories[-1]


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.txt does not exist"):
        read_stories(tmp_path / "nope.txt")


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(DataError, match="is not a file"):
        read_stories(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.txt is empty \(0 bytes\)"):
        read_stories(tmp_path / "empty.txt")


def test_whitespace_only_file(tmp_path):
    (tmp_path / "blank.txt").write_text(" \n\n\t\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"blank\.txt is empty \(only whitespace\)"):
        read_stories(tmp_path / "blank.txt")


def test_only_separators(tmp_path):
    (tmp_path / "seps.txt").write_text("<|endoftext|>\n\n<|endoftext|>\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"seps\.txt holds no complete story \(only '<\|endoftext\|>' separators"):
        read_stories(tmp_path / "seps.txt")


def test_only_a_truncated_story(tmp_path):
    (tmp_path / "cut.txt").write_text("<|endoftext|>\nA story that never ends", encoding="utf-8")
    with pytest.raises(DataError, match=r"cut\.txt holds no complete story \(only a truncated story"):
        read_stories(tmp_path / "cut.txt")


@pytest.mark.parametrize("block", [1 << 24, 5])
def test_non_utf8_names_byte_offset(tmp_path, monkeypatch, block):
    monkeypatch.setattr(tinystories_module, "_BLOCK", block)
    good = "Zoë's story.\n<|endoftext|>\n".encode()
    (tmp_path / "latin1.txt").write_bytes(good + b"caf\xe9 au lait\n<|endoftext|>\n")
    offset = len(good) + 3
    with pytest.raises(DataError, match=rf"latin1\.txt is not valid UTF-8: byte {offset} "):
        read_stories(tmp_path / "latin1.txt")


def test_iter_stories_checks_the_path_before_iterating(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        iter_stories(tmp_path / "missing.txt")  # no next(): the error comes at the call


def test_local_file_has_no_validation_files(tmp_path):
    path = write_stories(tmp_path / "s.txt", SAMPLE_STORIES)
    assert resolve_text_files(path, split="train") == [path]
    assert resolve_text_files(str(path), split="validation") == []


def test_folder_splits_by_name(tmp_path):
    train_b = write_stories(tmp_path / "b-train.txt", SAMPLE_STORIES[:2])
    train_a = write_stories(tmp_path / "a.txt", SAMPLE_STORIES[2:4])
    valid = write_stories(tmp_path / "TinyStories-valid.txt", SAMPLE_STORIES[4:])
    val2 = write_stories(tmp_path / "extra_val.txt", SAMPLE_STORIES[:1])
    (tmp_path / "notes.md").write_text("not text data")
    assert resolve_text_files(tmp_path, split="train") == [train_a, train_b]
    assert resolve_text_files(tmp_path, split="validation") == [valid, val2]


def test_folder_without_text_files(tmp_path):
    (tmp_path / "data.csv").write_text("a,b")
    with pytest.raises(DataError, match=r"holds no \.txt files \(found: \['data\.csv'\]\)"):
        resolve_text_files(tmp_path)


def test_folder_with_only_validation(tmp_path):
    write_stories(tmp_path / "valid.txt", SAMPLE_STORIES)
    with pytest.raises(DataError, match="holds only validation files"):
        resolve_text_files(tmp_path, split="train")


def test_missing_local_path_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(DataError, match=r"stories\.txt' is neither an existing file or folder nor a Hub"):
        resolve_text_files(str(tmp_path / "stories.txt"))
    with pytest.raises(DataError, match="neither an existing file"):
        resolve_text_files("./local/thing")


def _fake_hub_dataset(hf_home: Path, repo: str, files: dict[str, str], commit: str = "a" * 40) -> Path:
    """Lay out ``files`` as the Hub cache does: ``datasets--owner--name/{refs/main, snapshots/<commit>/}``."""
    root = hf_home / "hub" / f"datasets--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    for name, text in files.items():
        (snapshot / name).write_text(text, encoding="utf-8")
    return snapshot


def _layout(stories: list[str]) -> str:
    return "".join(f"{s}\n<|endoftext|>\n" for s in stories)


def test_hub_dataset_from_cache_offline(tmp_path):
    hf_home = Path(os.environ["HF_HOME"])
    snapshot = _fake_hub_dataset(
        hf_home,
        "roneneldan/TinyStories",
        {
            "TinyStories-train.txt": _layout(SAMPLE_STORIES[:4]),
            "TinyStories-valid.txt": _layout(SAMPLE_STORIES[4:]),
        },
    )
    for data in (None, "hub", "tinystories", "roneneldan/TinyStories"):
        assert resolve_text_files(data, split="train") == [snapshot / "TinyStories-train.txt"]
    sources = story_sources("hub")
    assert sources["train"].stories() == SAMPLE_STORIES[:4]
    assert sources["validation"].stories() == SAMPLE_STORIES[4:]
    assert sources["train"].holdout is None


def test_hub_v2_file_names(tmp_path):
    _fake_hub_dataset(Path(os.environ["HF_HOME"]), "someone/TinyStoriesMirror", {HUB_FILES[("v2", "validation")]: "x"})
    (path,) = resolve_text_files("someone/TinyStoriesMirror", split="validation", version="v2")
    assert path.name == "TinyStoriesV2-GPT4-valid.txt"


def test_hub_file_not_cached_offline(tmp_path):
    with pytest.raises(
        DataError, match=r"'TinyStories-train\.txt' from the Hub dataset repository .*HF_HUB_OFFLINE=1 forbids"
    ):
        resolve_text_files("hub")


def test_train_val_split_is_deterministic_and_disjoint():
    stories = [f"story {i}" for i in range(200)]
    train, val = train_val_split(stories, 0.1, seed=3)
    assert len(val) == 20 and len(train) == 180
    assert sorted(train + val, key=lambda s: int(s.split()[1])) == stories
    assert train == sorted(train, key=lambda s: int(s.split()[1]))  # original order kept
    assert train_val_split(stories, 0.1, seed=3) == (train, val)
    assert train_val_split(stories, 0.1, seed=4)[1] != val


def test_train_val_split_holds_out_at_least_one():
    train, val = train_val_split(["a", "b", "c"], 0.01)
    assert len(val) == 1 and len(train) == 2


def test_train_val_split_errors():
    with pytest.raises(ConfigError, match=r"val_fraction must be in \(0, 1\), got 1.5"):
        train_val_split(["a", "b"], 1.5)
    with pytest.raises(DataError, match="cannot hold out 1 of 1 stories"):
        train_val_split(["a"], 0.5)


def test_single_file_sources_carve_validation(tmp_path):
    stories = [f"Story number {i}." for i in range(50)]
    path = write_stories(tmp_path / "s.txt", stories)
    sources = story_sources(path, val_fraction=0.1, seed=7)
    train, val = sources["train"].stories(), sources["validation"].stories()
    assert (train, val) == train_val_split(stories, 0.1, seed=7)
    assert sources["train"].fingerprint() != sources["validation"].fingerprint()
