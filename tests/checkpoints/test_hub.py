"""Resolving ``from_pretrained`` sources: local directories, and Hub repo ids through the real
``huggingface_hub`` code against a cache laid out as the Hub lays it out (the Hub itself is never reached)."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import httpx2
import numpy as np
import pytest
from huggingface_hub import constants
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError
from huggingface_hub.utils import filter_repo_objects

from eqxllm.checkpoints import hub
from eqxllm.checkpoints.checkpoint_dir import read_checkpoint, write_checkpoint
from eqxllm.checkpoints.hub import DEFAULT_PATTERNS, resolve_pretrained
from eqxllm.errors import CheckpointError, DataError, ShardIndexError

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def offline_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hub cache, offline. huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE into
    ``constants`` at import, and reads those constants at call time, so they are what we patch."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def fake_hub_repo(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT) -> Path:
    """Lay a repo out as ``snapshot_download`` leaves it: content in ``blobs/<sha256>``, the snapshot's
    files as relative symlinks to them, and ``refs/main`` holding the commit (no newline)."""
    storage = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = storage / "snapshots" / commit
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        blob = storage / "blobs" / hashlib.sha256(content).hexdigest()
        blob.write_bytes(content)
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).symlink_to(os.path.relpath(blob, (snapshot / name).parent))
    (storage / "refs").mkdir(exist_ok=True)
    (storage / "refs" / "main").write_text(commit)
    return snapshot


def test_local_directory_is_returned_as_is(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_pretrained(tmp_path) == tmp_path
    assert resolve_pretrained(str(tmp_path)) == tmp_path


def test_local_directory_must_hold_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="has no config.json") as info:
        resolve_pretrained(tmp_path)
    assert str(tmp_path) in str(info.value) and "model.safetensors" in str(info.value)
    with pytest.raises(CheckpointError, match="is a file"):
        resolve_pretrained(tmp_path / "model.safetensors")


@pytest.mark.parametrize("src", ["./nope", "/no/such/dir", "~/eqxllm-no-such-dir", "a/b/c", "runs/typo"])
def test_missing_paths_never_reach_the_hub(tmp_path, monkeypatch, src):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    monkeypatch.setattr(hub, "snapshot_download", lambda *a, **k: pytest.fail("asked the Hub for a path"))
    with pytest.raises(CheckpointError, match="no such directory") as info:
        resolve_pretrained(src)
    assert src.lstrip("~./") in str(info.value)


@pytest.mark.parametrize("repo_id", ["org/name", "gpt2"])
def test_cached_repo_resolves_offline(offline_cache, repo_id):
    snapshot = fake_hub_repo(offline_cache, repo_id, {"config.json": b"{}", "model.safetensors": b""})
    assert resolve_pretrained(repo_id) == snapshot
    assert resolve_pretrained(repo_id, revision=COMMIT) == snapshot


def test_cache_dir_argument(tmp_path, offline_cache):
    snapshot = fake_hub_repo(tmp_path / "elsewhere", "org/name", {"config.json": b"{}"})
    assert resolve_pretrained("org/name", cache_dir=tmp_path / "elsewhere") == snapshot
    with pytest.raises(CheckpointError, match="'org/name'"):  # not in the default cache
        resolve_pretrained("org/name")


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HF_HOME"])
def test_environment_selects_the_cache(tmp_path, variable):
    """A fresh interpreter, configured only by the environment, as a user would run it."""
    cache = tmp_path / "env-cache"
    snapshot = fake_hub_repo(cache if variable == "HF_HUB_CACHE" else cache / "hub", "org/name", {"config.json": b"{}"})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env |= {variable: str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    code = "from eqxllm.checkpoints.hub import resolve_pretrained as r; print(r('org/name'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(snapshot)


def test_uncached_repo_offline_raises_with_hint(offline_cache):
    with pytest.raises(CheckpointError) as info:
        resolve_pretrained("org/missing-model")
    message = str(info.value)
    assert "'org/missing-model'" in message and "HF_HUB_OFFLINE=0" in message and str(offline_cache) in message
    assert isinstance(info.value.__cause__, LocalEntryNotFoundError)
    fake_hub_repo(offline_cache, "org/name", {"config.json": b"{}"})
    with pytest.raises(CheckpointError, match="revision 'v2'"):
        resolve_pretrained("org/name", revision="v2")


def test_invalid_repo_id():
    with pytest.raises(CheckpointError, match="neither an existing directory nor a valid repo id") as info:
        resolve_pretrained("bad id!")
    assert "'bad id!'" in str(info.value) and isinstance(info.value.__cause__, HFValidationError)


def test_repo_not_found_on_the_hub(monkeypatch):
    response = httpx2.Response(404, request=httpx2.Request("GET", "https://huggingface.co/api/models/org/typo"))

    def not_found(*args, **kwargs):
        raise RepositoryNotFoundError("404 Client Error: Repository Not Found", response=response)

    monkeypatch.setattr(hub, "snapshot_download", not_found)
    with pytest.raises(CheckpointError, match="'org/typo'.*check the id") as info:
        resolve_pretrained("org/typo")
    assert isinstance(info.value.__cause__, RepositoryNotFoundError)


def test_snapshot_without_config(offline_cache):
    fake_hub_repo(offline_cache, "org/weights-only", {"model.safetensors": b""})
    with pytest.raises(CheckpointError, match="'org/weights-only'.*has no config.json"):
        resolve_pretrained("org/weights-only")


def test_default_patterns_fetch_safetensors_and_tokenizer_but_no_pickles():
    repo = [
        "config.json", "model.safetensors", "model-00001-of-00002.safetensors",
        "model.safetensors.index.json", "tokenizer.json", "vocab.json", "merges.txt",
        "generation_config.json", "chat_template.jinja", "chat_templates/tool_use.jinja", "pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5",
        "flax_model.msgpack", "README.md",
    ]  # fmt: skip
    kept = set(filter_repo_objects(repo, allow_patterns=list(DEFAULT_PATTERNS)))
    assert kept == set(repo[:10])


def test_sharded_checkpoint_in_the_cache_loads(offline_cache, tmp_path):
    """Shards in the cache are symlinks into ``blobs``, outside the snapshot folder: they must be allowed."""
    tensors = {f"w{i}": np.full((4,), i, np.float32) for i in range(4)}
    write_checkpoint(tensors, tmp_path / "saved", max_shard_size=32)
    files = {p.name: p.read_bytes() for p in (tmp_path / "saved").iterdir()}
    assert len(files) > 2
    snapshot = fake_hub_repo(offline_cache, "org/sharded", {"config.json": b"{}", **files})
    loaded = read_checkpoint(resolve_pretrained("org/sharded"))
    assert {k: v.tolist() for k, v in loaded.items()} == {k: v.tolist() for k, v in tensors.items()}
    assert (snapshot / "model-00001-of-00002.safetensors").is_symlink()


@pytest.mark.parametrize("shard", [None, 32])
def test_a_broken_link_in_the_cache_says_the_download_is_incomplete(offline_cache, tmp_path, shard):
    tensors = {f"w{i}": np.full((4,), i, np.float32) for i in range(4)}
    write_checkpoint(tensors, tmp_path / "saved", max_shard_size=shard)
    files = {p.name: p.read_bytes() for p in (tmp_path / "saved").iterdir()}
    snapshot = fake_hub_repo(offline_cache, "org/cut", {"config.json": b"{}", **files})
    weights = "model.safetensors" if shard is None else "model-00002-of-00002.safetensors"
    (snapshot / weights).resolve().unlink()  # its blob never arrived
    error = CheckpointError if shard is None else ShardIndexError
    with pytest.raises(error, match=rf"{weights} is a broken link .*incomplete: download the repo again"):
        read_checkpoint(resolve_pretrained("org/cut"))


def test_one_offline_policy_for_models_and_datasets(offline_cache):
    """A model repo missing from the cache offline is a CheckpointError, a dataset file a DataError; both
    are decided by one look at the cache (no download tried) and say how to get them."""
    with pytest.raises(CheckpointError) as model:
        resolve_pretrained("org/not-cached")
    with pytest.raises(hub.HubFileMissing) as data:
        hub.download("org/not-cached", "train.txt", repo_type="dataset")
    assert isinstance(data.value, DataError) and not isinstance(data.value, CheckpointError)
    for info, what, instead in ((model, "model repository 'org/not-cached'", "pass a local directory"),
                                (data, "'train.txt' from the Hub dataset repository", "--data FILE_OR_FOLDER")):  # fmt: skip
        message = str(info.value)
        assert what in message and instead in message and str(offline_cache) in message
        assert "HF_HUB_OFFLINE=1 forbids downloading it: set HF_HUB_OFFLINE=0" in message
        assert isinstance(info.value.__cause__, LocalEntryNotFoundError)
