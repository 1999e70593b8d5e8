"""Hostile checkpoints and config.json files: each is refused with its own error type, a message
naming the file, field or tensor, and nothing is written or changed."""

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import eqxllm
from eqxllm.checkpoints.atomic import SAVE_PREFIX, remove_stale_temporaries
from eqxllm.checkpoints.config_json import ConfigJsonError
from eqxllm.errors import (
    CheckpointError,
    ConfigError,
    InputError,
    NonFiniteError,
    ShapeMismatchError,
    ShardIndexError,
)
from eqxllm.models import GPT2

from ._helpers import copy_dir, make_model_dir, snapshot


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("tiny") / "model")


def _edit_config(path: Path, **changes) -> None:
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    ("changes", "facts"),
    [
        ({"tie_word_embeddings": "false"}, ["'tie_word_embeddings' is 'false'", "JSON boolean"]),
        ({"layer_norm_epsilon": -1e-5}, ["'layer_norm_epsilon' is -1e-05", "positive number"]),
        ({"layer_norm_epsilon": 0}, ["'layer_norm_epsilon' is 0", "positive number"]),
        ({"eos_token_id": 1.5}, ["'eos_token_id' is 1.5", "token ids"]),
        ({"bos_token_id": -3}, ["'bos_token_id' is -3", "token ids"]),
        ({"vocab_size": "300"}, ["'vocab_size' is '300'", "an integer >= 1"]),
        ({"vocab_size": 300.0}, ["'vocab_size' is 300.0", "an integer >= 1"]),
        ({"n_layer": 0}, ["'n_layer' is 0", "an integer >= 1"]),
        ({"n_head": True}, ["'n_head' is True", "an integer >= 1"]),
        ({"resid_pdrop": 1.5}, ["'resid_pdrop' is 1.5", "probability"]),
        ({"layer_norm_epsilon": None}, ["'layer_norm_epsilon' is None", "positive number"]),
        ({"rms_norm_eps": None}, ["'rms_norm_eps' is None", "positive number"]),
        ({"rope_theta": None}, ["'rope_theta' is None", "a positive number"]),
        ({"rope_theta": "1e4"}, ["'rope_theta' is '1e4'", "a positive number"]),
        ({"initializer_range": None}, ["'initializer_range' is None", "a number >= 0"]),
    ],
)
def test_config_json_fields_are_checked_before_any_family(model_dir, tmp_path, changes, facts):
    bad = copy_dir(model_dir, tmp_path / "bad")
    _edit_config(bad, **changes)
    before = snapshot(bad)
    for load in (eqxllm.from_pretrained, eqxllm.load_config):
        with pytest.raises(ConfigJsonError) as info:
            load(bad)
        assert isinstance(info.value, CheckpointError) and isinstance(info.value, ConfigError)
        assert str(bad / "config.json") in str(info.value)
        for fact in facts:
            assert fact in str(info.value)
    assert snapshot(bad) == before


def test_eos_beyond_the_vocabulary_loads_and_generation_says_so(model_dir, tmp_path):
    # transformers loads such configs (tiny test models, fine-tunes whose tokenizer grew a pad token);
    # generation drops the config's unreachable stop id with a warning, and refuses one passed explicitly
    odd = copy_dir(model_dir, tmp_path / "odd")
    _edit_config(odd, eos_token_id=100_000)
    model = eqxllm.from_pretrained(odd)
    prompt = jnp.array([1, 2, 3])
    with pytest.warns(UserWarning, match=r"eos_token_id \[100000\] is outside the vocabulary"):
        assert eqxllm.generate(model, prompt, max_new_tokens=2).shape == (2,)
    with pytest.raises(InputError, match=r"stop token id 100000 is outside the vocabulary"):
        eqxllm.generate(model, prompt, max_new_tokens=2, stop_token_ids=[100_000])
    with pytest.raises(InputError, match=r"stop token id 100000 is outside the vocabulary"):
        eqxllm.generate(model, prompt, max_new_tokens=2, eos_token_id=100_000)


def test_config_json_checks_a_nested_config():
    from eqxllm.checkpoints.config_json import validate_config_json

    with pytest.raises(ConfigJsonError, match=r"\[t5\]: 'layer_norm_epsilon' is -1"):
        validate_config_json({"model_type": "t5_vae", "t5": {"vocab_size": 10, "layer_norm_epsilon": -1}}, "c.json")


def test_vocab_size_beyond_the_embedding_rows(model_dir, tmp_path):
    bad = copy_dir(model_dir, tmp_path / "bad")
    rows = load_file(bad / "model.safetensors")["transformer.wte.weight"].shape[0]
    _edit_config(bad, vocab_size=rows + 50)
    with pytest.raises(ShapeMismatchError, match=rf"has {rows} rows but config.json says vocab_size={rows + 50}"):
        eqxllm.from_pretrained(bad)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_reported_with_where(model_dir, tmp_path, value):
    bad = copy_dir(model_dir, tmp_path / "bad")
    tensors = load_file(bad / "model.safetensors")
    tensors["transformer.h.0.mlp.c_fc.weight"][3, 5] = value
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(NonFiniteError) as info:
        eqxllm.from_pretrained(bad)
    msg = str(info.value)
    assert "'transformer.h.0.mlp.c_fc.weight'" in msg and "index (3, 5)" in msg and "1 non-finite" in msg


def test_weight_map_value_that_is_a_list(model_dir, tmp_path):
    bad = tmp_path / "sharded"
    eqxllm.save_pretrained(eqxllm.from_pretrained(model_dir), bad, max_shard_size=4000)
    index = json.loads((bad / "model.safetensors.index.json").read_text())
    key = next(iter(index["weight_map"]))
    index["weight_map"][key] = [index["weight_map"][key]]
    (bad / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ShardIndexError, match=rf"tensor '{key}' is mapped to \['model-0000"):
        eqxllm.from_pretrained(bad)


def test_fused_attention_width_not_divisible_by_3(model_dir, tmp_path):
    bad = copy_dir(model_dir, tmp_path / "bad")
    tensors = load_file(bad / "model.safetensors")
    w = tensors["transformer.h.0.attn.c_attn.weight"]
    tensors["transformer.h.0.attn.c_attn.weight"] = np.ascontiguousarray(w[:, :-1])
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ShapeMismatchError, match=r"c_attn\) has shape \(16, 47\).*3 \* n_embd"):
        eqxllm.from_pretrained(bad)


def test_save_into_a_path_that_is_a_file(model_dir, tmp_path):
    model = eqxllm.from_pretrained(model_dir)
    target = tmp_path / "a-file"
    target.write_text("mine")
    with pytest.raises(CheckpointError, match="is a file; pass a directory path"):
        eqxllm.save_pretrained(model, target)
    with pytest.raises(CheckpointError, match=r"its parent .*a-file is a file"):
        eqxllm.save_pretrained(model, target / "sub")
    assert target.read_text() == "mine" and snapshot(tmp_path) == {"a-file": snapshot(tmp_path)["a-file"]}


@pytest.mark.usefixtures("unchecked_annotations")  # called as a user calls it, without the type hook
@pytest.mark.parametrize("size", ["0", "-5MB", "lots", "5XB", 2.5, float("nan"), True])
def test_bad_max_shard_size_creates_nothing(model_dir, tmp_path, size):
    model = eqxllm.from_pretrained(model_dir)
    with pytest.raises(CheckpointError, match=f"max_shard_size={size!r}"):
        eqxllm.save_pretrained(model, tmp_path / "new" / "dst", max_shard_size=size)
    assert not (tmp_path / "new").exists()


def test_a_killed_saves_temporaries_are_removed_by_the_next_save(model_dir, tmp_path):
    dst = copy_dir(model_dir, tmp_path / "dst")
    # what a SIGKILLed save leaves: its temporary folder (pid of a process that is gone) and file
    dead = 2**22 + 12345  # above the default pid_max: no such process
    (dst / f"{SAVE_PREFIX}p{dead}-abc").mkdir()
    (dst / f"{SAVE_PREFIX}p{dead}-abc" / "model.safetensors").write_bytes(b"half")
    (dst / f".config.json.p{dead}.xyz.eqxllm.tmp").write_text("{")
    live = dst / f"{SAVE_PREFIX}p{os.getppid()}-def"  # a concurrent save of a live process: kept
    live.mkdir()
    eqxllm.save_pretrained(eqxllm.from_pretrained(model_dir), dst)
    assert sorted(p.name for p in dst.iterdir()) == sorted(
        ["config.json", "model.safetensors", live.name]
    )  # the stale tokenizer.json went too: this save had no tokenizer
    assert remove_stale_temporaries(dst) == []


class _Cut(BaseException):  # what a kill does to the save: nothing after it runs
    pass


@pytest.mark.parametrize("moment", ["first weight file moved", "all weights moved, config.json not written"])
def test_a_resave_cut_off_midway_leaves_a_folder_that_does_not_load(model_dir, tmp_path, monkeypatch, moment):
    import eqxllm.checkpoints.checkpoint_dir as checkpoint_dir

    old = eqxllm.from_pretrained(model_dir)
    new = GPT2(old.config.replace(layer_norm_epsilon=0.5), key=jax.random.key(1))  # same shapes
    dst = copy_dir(model_dir, tmp_path / "dst")
    if moment == "first weight file moved":  # between the moves of a sharded save
        real = os.replace

        def cut_after_one(src, target):
            real(src, target)
            raise _Cut

        monkeypatch.setattr(checkpoint_dir.os, "replace", cut_after_one)
    else:
        real_text = eqxllm.checkpoints.api.atomic_write_text

        def cut_at_config(path, text):
            if Path(path).name == "config.json":
                raise _Cut
            real_text(path, text)

        monkeypatch.setattr(eqxllm.checkpoints.api, "atomic_write_text", cut_at_config)
    with pytest.raises(_Cut):
        eqxllm.save_pretrained(new, dst, max_shard_size="20KB")
    monkeypatch.undo()
    # never the new weights under the old config.json: the folder does not load at all
    with pytest.raises(CheckpointError, match="config.json"):
        eqxllm.from_pretrained(dst)
    assert eqxllm.from_pretrained(eqxllm.save_pretrained(new, dst)).config.layer_norm_epsilon == 0.5


def test_a_resave_whose_weights_fail_to_write_leaves_the_old_model(model_dir, tmp_path, monkeypatch):
    import eqxllm.checkpoints.checkpoint_dir as checkpoint_dir

    dst = copy_dir(model_dir, tmp_path / "dst")
    before = snapshot(dst)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_dir.safetensors_io, "write_file", full_disk)
    with pytest.raises(OSError, match="No space left"):
        eqxllm.save_pretrained(eqxllm.from_pretrained(model_dir), dst)
    assert snapshot(dst) == before  # config.json included: it is withdrawn only once the weights are written


def test_resaving_without_a_tokenizer_drops_the_stale_one(model_dir, tmp_path):
    dst = copy_dir(model_dir, tmp_path / "dst")
    assert (dst / "tokenizer.json").is_file()
    for name in ("vocab.json", "merges.txt"):  # as convert copies them: alone they load as a tokenizer
        (dst / name).write_text("{}")
    eqxllm.save_pretrained(eqxllm.from_pretrained(model_dir), dst)
    assert not any(
        (dst / name).exists() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")
    )
    fresh = tmp_path / "fresh"  # a tokenizer saved first into a new folder is not touched
    fresh.mkdir()
    (fresh / "tokenizer.json").write_text((model_dir / "tokenizer.json").read_text())
    eqxllm.save_pretrained(eqxllm.from_pretrained(model_dir), fresh)
    assert (fresh / "tokenizer.json").is_file()


def test_a_negative_pad_token_id_reads_as_none():
    """Llama 1 era configs say ``"pad_token_id": -1`` for "none"; transformers loads them, so does eqxllm."""
    from eqxllm.checkpoints.config_json import validate_config_json
    from eqxllm.checkpoints.llama import config_from_hf

    hf = {"model_type": "llama", "vocab_size": 32, "hidden_size": 16, "num_attention_heads": 2, "pad_token_id": -1}
    read = validate_config_json(hf, "c.json")
    assert "pad_token_id" not in read and hf["pad_token_id"] == -1  # the caller's dict is not changed
    assert config_from_hf(read).pad_token_id is None


@pytest.mark.parametrize("dtype", [jnp.int8, jnp.bool_, jnp.float8_e4m3fn, np.complex64, "nonsense"])
def test_save_and_load_refuse_dtypes_that_are_not_for_weights(model_dir, tmp_path, dtype):
    dst = copy_dir(model_dir, tmp_path / "dst")
    before = snapshot(dst)
    model = eqxllm.from_pretrained(model_dir)
    with pytest.raises(
        InputError, match=r"dtype=.* is not a dtype for weights; expected one of float32, float16, bfloat16"
    ):
        eqxllm.save_pretrained(model, dst, dtype=dtype)
    with pytest.raises(InputError, match="is not a dtype for weights"):
        eqxllm.save_pretrained(model, tmp_path / "new", dtype=dtype)
    assert snapshot(dst) == before and not (tmp_path / "new").exists()
    with pytest.raises(InputError, match="is not a dtype for weights"):
        eqxllm.from_pretrained(model_dir, dtype=dtype)


def test_a_tokenizer_of_another_kind_is_refused_before_the_save_writes(model_dir, tmp_path):
    """A transformers tokenizer used to fail only after the new weights had replaced the old ones,
    leaving the old config.json over weights it does not describe."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer

    dst = copy_dir(model_dir, tmp_path / "dst")
    before = snapshot(dst)
    wrapped = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    )
    model = eqxllm.from_pretrained(model_dir)
    with pytest.raises(
        InputError,
        match=r"must be a tokenizers.Tokenizer, found \w+; for a transformers tokenizer pass tok.backend_tokenizer",
    ):
        eqxllm.save_pretrained(model, dst, tokenizer=wrapped)
    assert snapshot(dst) == before
    eqxllm.save_pretrained(model, dst, tokenizer=wrapped.backend_tokenizer)  # the hint works
    assert Tokenizer.from_file(str(dst / "tokenizer.json")).to_str() == wrapped.backend_tokenizer.to_str()


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_files_take_the_mode_the_umask_gives(model_dir, tmp_path, umask):
    from tokenizers import Tokenizer

    from eqxllm.data.tokenizer import save_tokenizer

    previous = os.umask(umask)
    try:  # atomic writes go through mkstemp, whose 0600 the rename kept: others could not read a saved model
        model = eqxllm.from_pretrained(model_dir)
        eqxllm.save_pretrained(
            model, tmp_path / "new", tokenizer=Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        )
        save_tokenizer(Tokenizer.from_file(str(model_dir / "tokenizer.json")), tmp_path / "tok")
    finally:
        os.umask(previous)
    written = [p for p in (*(tmp_path / "new").iterdir(), *(tmp_path / "tok").iterdir()) if p.is_file()]
    assert {p.name for p in written} >= {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in written} == {p.name: oct(0o666 & ~umask) for p in written}
