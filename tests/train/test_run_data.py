"""What a run's data and run directory keep across runs of one source: the validation hold-out does not
follow ``train.seed``, and a resume may not change ``train.seed`` or the batches' shape (the batches are a function of
them), while it may change what only changes how the run is computed."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from eqxllm.errors import ConfigError
from eqxllm.train.config import train_preset
from eqxllm.train.run_dir import check_out_dir
from eqxllm.train.tasks import make_task

STORIES = ["The cat sat on the mat.", "Ben ran to the park.", "A fish swam in the sea.", "Lily built a tower."]


def _cfg(tmp_path: Path, seed: int):
    cfg = train_preset("gpt2-tinystories-test")
    # 60 stories and 10% held out: 6 validation stories, which another hold-out would mostly change
    path = tmp_path / "stories.txt"
    path.write_text("".join(f"{s} ({i})\n<|endoftext|>\n" for i, s in enumerate(STORIES * 15)), encoding="utf-8")
    data = dataclasses.replace(cfg.data, source=str(path), cache_dir=str(tmp_path / "cache"), val_fraction=0.1)
    return cfg.replace(data=data, train=dataclasses.replace(cfg.train, seed=seed), out=str(tmp_path / "run"))


def test_the_validation_holdout_is_the_same_for_every_train_seed(tmp_path):
    first = make_task(_cfg(tmp_path, 0), tmp_path / "run0", progress=False)
    second = make_task(_cfg(tmp_path, 1), tmp_path / "run1", progress=False)
    np.testing.assert_array_equal(np.asarray(first.data.validation), np.asarray(second.data.validation))
    np.testing.assert_array_equal(np.asarray(first.data.train), np.asarray(second.data.train))


def test_resume_refuses_another_train_seed(tmp_path):
    cfg = _cfg(tmp_path, 0)
    out = Path(cfg.out)
    (out / "checkpoints" / "4").mkdir(parents=True)
    (out / "run_config.json").write_text(cfg.to_json())
    longer = dataclasses.replace(cfg.train, max_steps=cfg.train.max_steps + 4)
    check_out_dir(cfg.replace(resume=True, train=longer), out)  # a longer schedule resumes
    reseeded = cfg.replace(resume=True, train=dataclasses.replace(cfg.train, seed=1))
    with pytest.raises(ConfigError, match=r"--resume: train\.seed \(was 0, now 1\) differs from the run in"):
        check_out_dir(reseeded, out)


@pytest.mark.parametrize(
    ("train", "message"),
    [
        (dict(batch_size=16), r"train\.batch_size \(was 8, now 16\)"),
        (dict(seq_len=8), r"train\.seq_len \(was 16, now 8\)"),
    ],
)
def test_resume_refuses_batches_of_another_shape(tmp_path, train, message):
    cfg = _cfg(tmp_path, 0)
    out = Path(cfg.out)
    (out / "checkpoints" / "4").mkdir(parents=True)
    (out / "run_config.json").write_text(cfg.to_json())
    assert (cfg.train.batch_size, cfg.train.seq_len) == (8, 16)
    with pytest.raises(ConfigError, match=f"--resume: {message} differs"):
        check_out_dir(cfg.replace(resume=True, train=dataclasses.replace(cfg.train, **train)), out)


def test_resume_takes_what_only_changes_how_the_run_is_computed(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, 0)
    out = Path(cfg.out)
    (out / "checkpoints" / "4").mkdir(parents=True)
    (out / "run_config.json").write_text(cfg.to_json())
    monkeypatch.chdir(tmp_path)  # the same data file named by a relative path
    same = cfg.replace(
        resume=True,
        model=cfg.model.replace(remat="dots", attention_impl="xla"),
        data=dataclasses.replace(cfg.data, source="stories.txt", cache_dir=str(tmp_path / "elsewhere")),
        train=dataclasses.replace(cfg.train, accum_steps=2),
    )
    check_out_dir(same, out)
    (tmp_path / "other.txt").write_text((tmp_path / "stories.txt").read_text())
    moved = same.replace(data=dataclasses.replace(same.data, source="other.txt"))
    with pytest.raises(ConfigError, match=r"--resume: data\.source \(was .*stories\.txt', now .*other\.txt'\)"):
        check_out_dir(moved, out)


def test_a_tokenizer_without_endoftext_ends_examples_with_its_declared_eos(tmp_path):
    """A Llama- or Gemma-style tokenizer named by --data.tokenizer (no <|endoftext|>) was refused with
    advice to train one; its tokenizer_config.json's eos_token now ends each story."""
    import json

    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import models, pre_tokenizers

    from eqxllm.data.tokenizer import save_tokenizer
    from eqxllm.errors import DataError
    from eqxllm.train.prepare import prepare_data

    vocab = {c: i for i, c in enumerate(sorted(set("".join(STORIES) + " ()0123456789")))}
    tok = RawTokenizer(models.WordLevel({**vocab, "[UNK]": len(vocab)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.add_special_tokens(["<s>", "</s>"])
    folder = tmp_path / "llama-like"
    save_tokenizer(tok, folder)
    cfg = _cfg(tmp_path, 0).data
    cfg = dataclasses.replace(cfg, tokenizer=str(folder))
    with pytest.raises(DataError, match=r"has no '<\|endoftext\|>' token and declares no eos_token"):
        prepare_data(cfg, tmp_path / "run0", progress=False)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "bos_token": "<s>", "eos_token": "</s>"}))
    data = prepare_data(cfg, tmp_path / "run1", progress=False)
    end = tok.token_to_id("</s>")
    assert data.eot == end and int(np.asarray(data.train)[-1]) == end
    ends = sum(int((np.asarray(split) == end).sum()) for split in (data.train, data.validation))
    assert ends == len(STORIES) * 15  # one after each of the 60 stories, in one split or the other
