"""The one rule that splits a local data folder by file name, on the separated-text path (the
``datasets`` path: tests/data/test_hf_datasets.py)."""

from pathlib import Path

import pytest

from eqxllm.data import resolve_text_files, story_sources
from eqxllm.data.layouts import split_files
from eqxllm.errors import DataError

from ._helpers import SAMPLE_STORIES, write_stories


@pytest.mark.parametrize(
    ("name", "split"),
    [
        ("TinyStories-valid.txt", "validation"),
        ("notes.validation.txt", "validation"),
        ("dev-00000-of-00001.txt", "validation"),
        ("data/val/part-0.txt", "validation"),
        ("contest_valid.txt", "validation"),
        ("test.txt", "test"),
        ("EVAL_2024.txt", "test"),
        ("interval.txt", "train"),
        ("latest.txt", "train"),
        ("invalid_removed.txt", "train"),
        ("contest_2023.txt", "train"),
        ("devices.txt", "train"),
    ],
)
def test_split_names_are_whole_words(name, split):
    root = Path("/data")
    train, held = split_files(root, [root / "train.txt", root / name])
    assert (root / name in held, root / name in train) == (split != "train", split == "train")


def test_test_files_are_validation_only_without_validation_files():
    root = Path("/data")
    files = [root / n for n in ("a.txt", "b_dev.txt", "c_test.txt")]
    assert split_files(root, files) == (files[:1], files[1:2])  # c_test is read by neither split
    assert split_files(root, [files[0], files[2]]) == (files[:1], files[2:])


def test_text_folders_follow_the_same_rule(tmp_path):
    write_stories(tmp_path / "contest_2023.txt", SAMPLE_STORIES[:3])
    write_stories(tmp_path / "interval.txt", SAMPLE_STORIES[3:4])
    write_stories(tmp_path / "contest_test.txt", SAMPLE_STORIES[4:])
    sources = story_sources(tmp_path)
    assert [p.name for p in sources["train"].files] == ["contest_2023.txt", "interval.txt"]
    assert sources["validation"].stories() == SAMPLE_STORIES[4:]  # test.txt was trained on before


def test_a_text_folder_of_validation_files_is_refused(tmp_path):
    write_stories(tmp_path / "dev.txt", SAMPLE_STORIES)
    write_stories(tmp_path / "test.txt", SAMPLE_STORIES)
    with pytest.raises(DataError, match=r"holds only validation files \['dev.txt', 'test.txt'\]"):
        resolve_text_files(tmp_path, split="validation")
