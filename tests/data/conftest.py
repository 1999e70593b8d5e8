"""Fixtures for the data tests: the shared real data (skipped when absent) and small story files."""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
STORIES_FILE = SHARED / "tinystories" / "TinyStories-train-prefix-2MiB.txt"
GPT2_DIR = SHARED / "gpt2-tokenizer"


@pytest.fixture
def stories_file() -> Path:
    if not STORIES_FILE.is_file():
        pytest.skip(f"shared TinyStories slice not found at {STORIES_FILE}")
    return STORIES_FILE


@pytest.fixture
def gpt2_dir() -> Path:
    if not (GPT2_DIR / "vocab.json").is_file() or not (GPT2_DIR / "merges.txt").is_file():
        pytest.skip(f"shared GPT-2 tokenizer files not found in {GPT2_DIR}")
    return GPT2_DIR


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path, monkeypatch):
    # No test may read or fill the user's real caches, or reach for the network.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("EQXLLM_TOKEN_CACHE", str(tmp_path / "token_cache"))
