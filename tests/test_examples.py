"""The example scripts (``examples/``): their flags, refusals and run folders, without a training run.

Each script is run in-process as ``__main__`` (``runpy``) with ``sys.argv`` set, so its exit status and
its one-line errors are those a user sees; ``train`` is replaced by a stand-in where a test only needs
the config a script builds, or the state of the run folder when training would start.
"""

import json
import runpy
import sys
from pathlib import Path

import jax
import pytest

import eqxllm
from eqxllm.checkpoints.registry import family_for_config
from eqxllm.data import train_bpe_tokenizer
from eqxllm.errors import InputError
from eqxllm.models.gpt2 import GPT2, GPT2Config
from eqxllm.models.t5_config import T5Config
from eqxllm.train.run_dir import check_out_dir

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TRAINING = {  # script -> preset it runs
    "train_gpt2_tinystories.py": "gpt2-tinystories",
    "train_gemma_tinystories.py": "gemma-tinystories",
    "train_llama_tinystories.py": "llama-tinystories",
    "train_t5_tinystories.py": "t5-tinystories",
    "train_t5_vae_tinystories.py": "t5-vae-tinystories",
}
STORIES = [  # distinct, so that a hold-out of 5% takes some
    f"Tom had {n} {c} balls. He threw them to Lily. She laughed and threw them back. The end."
    for n in range(8)
    for c in ("red", "blue", "green", "big", "small", "new", "old", "soft")
]


def _run(monkeypatch, script: str, *args: str) -> int:
    """Run ``examples/script`` as a user would; its exit status."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setattr(sys, "argv", [script, *args])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    return int(stop.value.code or 0)


class _Stop(InputError):
    """Raised by the stand-in for ``train`` once it has seen the config."""


def _fake_train(monkeypatch, seen: list, then=None):
    """Replace ``eqxllm.train.loop.train`` (which the scripts import) by a recorder."""

    def fake(cfg, **options):
        seen.append(cfg)
        if then is None:
            raise _Stop("stopped before training")
        return then(cfg)

    monkeypatch.setattr("eqxllm.train.loop.train", fake)


@pytest.mark.parametrize("script", sorted(TRAINING))
def test_training_examples_pass_resume_and_out_to_the_preset(script, tmp_path, monkeypatch, capsys):
    seen: list = []
    _fake_train(monkeypatch, seen)
    out = tmp_path / "run"
    rc = _run(monkeypatch, script, "--data", "some.txt", "--out", str(out), "--minutes", "1", "--resume")
    assert rc == 2 and seen, capsys.readouterr().err
    cfg = seen[0]
    assert (cfg.resume, cfg.out, cfg.data.source, cfg.train.max_minutes) == (True, str(out), "some.txt", 1.0)
    err = capsys.readouterr().err.strip()
    assert err == f"{script}: error: stopped before training"  # guarded: one line, no traceback


@pytest.mark.parametrize("script", sorted(TRAINING))
def test_training_examples_refuse_bad_data_in_one_line(script, tmp_path, monkeypatch, capsys):
    rc = _run(monkeypatch, script, "--data", str(tmp_path / "absent.txt"), "--out", str(tmp_path / "run"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith(f"{script}: error: ") and "\n" not in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "1"], "--steps must be >= 2"),
        (["--paths", "-1"], "--paths must be >= 0"),
        (["--num-beams", "0"], "--num-beams must be >= 1"),
        (["--skip-training"], "holds no model; train first"),
        (["--skip-training", "--resume"], "contradict"),
        (["--minutes", "abc"], "argument --minutes: invalid float value: 'abc'"),  # argparse's, in one line
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_t5_vae_example_checks_its_flags_before_training(args, message, tmp_path, monkeypatch, capsys):
    seen: list = []
    _fake_train(monkeypatch, seen)
    rc = _run(monkeypatch, "train_t5_vae_tinystories.py", "--out", str(tmp_path / "run"), *args)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "\n" not in err, err
    assert not seen  # refused before training


def test_t5_vae_example_refuses_too_many_paths_before_the_model_is_built(stories, tmp_path, monkeypatch, capsys):
    """--paths beyond the held-out sentences is refused once the run's sentences are known, by the
    real ``train`` before it builds the model: one line, and the fresh run's folder is gone."""
    built = []
    monkeypatch.setattr("eqxllm.train.loop._build_run", lambda *a, **k: built.append(1))
    out = tmp_path / "run"
    rc = _run(monkeypatch, "train_t5_vae_tinystories.py", "--data", str(stories), "--out", str(out), "--paths", "500")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--paths 500 needs 1000 held-out sentences, the data gives" in err and "\n" not in err, err
    assert not built and not out.exists()


def test_t5_vae_sentence_checks(monkeypatch):
    """The checks of the flags that depend on the data, against a task's sentences."""
    from types import SimpleNamespace

    monkeypatch.syspath_prepend(str(EXAMPLES))
    check = runpy.run_path(str(EXAMPLES / "train_t5_vae_tinystories.py"))["sentence_check"]
    task = lambda held, train: SimpleNamespace(validation=[0] * held, train=SimpleNamespace(texts=train))  # noqa: E731
    flags = lambda paths, method="slerp": SimpleNamespace(paths=paths, method=method)  # noqa: E731
    many = [f"Tom had {n} balls." for n in range(17)]
    check(flags(2))(task(4, []))
    check(flags(0, "geodesic"))(task(0, []))
    check(flags(1, "geodesic"))(task(2, many))
    with pytest.raises(InputError, match="--paths 3 needs 6 held-out sentences, the data gives 5; pass --paths 2"):
        check(flags(3))(task(5, many))
    with pytest.raises(InputError, match="more than 16 distinct training sentences .* gives 16"):
        check(flags(1, "geodesic"))(task(2, many[:16] + many[:3] + ["said Tom."]))  # repeats and pieces count once


def test_t5_vae_example_refuses_figures_below_a_file(tmp_path, monkeypatch, capsys):
    seen: list = []
    _fake_train(monkeypatch, seen)
    (tmp_path / "file").write_text("x")
    rc = _run(monkeypatch, "train_t5_vae_tinystories.py", "--out", str(tmp_path / "run"), "--figures",
              str(tmp_path / "file" / "figs"))  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--figures: cannot save into" in err and "\n" not in err, err
    assert not seen


def test_t5_vae_figure_names_the_extra_when_matplotlib_is_missing(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    script = runpy.run_path(str(EXAMPLES / "train_t5_vae_tinystories.py"))
    with pytest.raises(eqxllm.errors.MissingExtraError, match=r"pip install 'eqxllm\[plot\]'"):
        script["pca_figure"](None, [], None, tmp_path / "x.png")


# --- finetune_lora.py -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_base(tmp_path_factory) -> Path:
    """A tiny GPT-2 with a BPE trained on the stories, saved with its tokenizer."""
    cfg = GPT2Config.tiny()
    tok = train_bpe_tokenizer(STORIES, vocab_size=cfg.vocab_size, min_frequency=1)
    model = GPT2(cfg, key=jax.random.key(0))
    return eqxllm.save_pretrained(model, tmp_path_factory.mktemp("base") / "model", tokenizer=tok)


@pytest.fixture
def stories(tmp_path) -> Path:
    path = tmp_path / "stories.txt"
    path.write_text("".join(s + "<|endoftext|>" for s in STORIES), encoding="utf-8")
    return path


def test_finetune_lora_starts_a_fresh_out_with_an_empty_run_folder(gpt2_base, stories, tmp_path, monkeypatch, capsys):
    """The loss before training is measured outside ``OUT/run``, which train() then finds empty; a
    run of fewer steps than the old fixed warmup builds a valid schedule; the outputs are where the
    docstring says."""
    out = tmp_path / "ft"

    def then(cfg):
        run = Path(cfg.out)
        check_out_dir(cfg, run)  # what train() checks first: raises if OUT/run holds files
        cfg.optim.resolved(cfg.train.max_steps)  # the schedule train() builds
        return eqxllm.save_pretrained(eqxllm.from_pretrained(gpt2_base), run / "model")

    seen: list = []
    _fake_train(monkeypatch, seen, then)
    args = ["--base", str(gpt2_base), "--data", str(stories), "--out", str(out), "--steps", "3", "--batch", "2"]
    assert _run(monkeypatch, "finetune_lora.py", *args) == 0, capsys.readouterr().err
    assert seen[0].out == str(out / "run") and seen[0].train.max_steps == 3
    printed = capsys.readouterr().out
    assert "held-out completion loss: before" in printed
    assert f"merged model: {out / 'run' / 'model'}; PEFT adapter: {out / 'run' / 'adapter'}" in printed
    # run again without --resume: refused in one line before the pairs are rewritten
    (out / "run" / "run_config.json").write_text(seen[0].to_json(), encoding="utf-8")
    (out / "run" / "checkpoints" / "3").mkdir(parents=True)
    (out / "pairs.jsonl").unlink()
    assert _run(monkeypatch, "finetune_lora.py", *args) == 2
    assert "already holds a training run; pass --resume" in capsys.readouterr().err
    assert not (out / "pairs.jsonl").exists()
    doc = runpy.run_path(str(EXAMPLES / "finetune_lora.py"))["__doc__"]
    assert "OUT/run/model" in " ".join(doc.split()) and "OUT/run/adapter" in doc


def _t5_base(tmp_path: Path) -> Path:
    cfg = T5Config.tiny()
    base = tmp_path / "t5"
    base.mkdir()
    (base / "config.json").write_text(json.dumps(family_for_config(cfg).config_to_hf(cfg)), encoding="utf-8")
    return base


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "0"], "--steps must be >= 1"),
        (["--base", "T5"], "this example fine-tunes decoder-only models"),
        (["--base", "GPT2", "--data", "absent.txt"], "absent.txt does not exist"),
    ],
)
def test_finetune_lora_refuses_in_one_line_before_writing(
    args, message, gpt2_base, stories, tmp_path, monkeypatch, capsys
):
    bases = {"T5": lambda: str(_t5_base(tmp_path)), "GPT2": lambda: str(gpt2_base)}
    args = ["--data", str(stories), *[bases[a]() if a in bases else a for a in args]]
    out = tmp_path / "ft"
    rc = _run(monkeypatch, "finetune_lora.py", "--out", str(out), *args)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "\n" not in err, err
    assert not out.exists()
