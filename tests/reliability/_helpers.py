"""Shared by the hostile-input corpus: a tiny saved model with its tokenizer, a story file, the CLI
run in-process, and snapshots of folders to prove that nothing was written or changed."""

import hashlib
import shutil
from pathlib import Path

import jax
import numpy as np

import eqxllm
from eqxllm.cli import main
from eqxllm.data.tokenizer import train_bpe_tokenizer
from eqxllm.models.gpt2 import GPT2, GPT2Config

STORIES = [
    "Once upon a time, there was a little cat named Tom. Tom liked to play in the sun.",
    "One day, Sara went to the park with her mom. She saw a big red ball and ran to get it.",
    "The bird sang a happy song. The sun was warm and the flowers were bright.",
    "Lily and Max built a tall tower of blocks. It fell down, and they built it again.",
]


def story_file(path: Path, n: int = 60) -> Path:
    rng = np.random.default_rng(0)
    stories = [STORIES[i] for i in rng.integers(0, len(STORIES), n)]
    path.write_text("".join(f"{s}\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    return path


def make_model_dir(path: Path) -> Path:
    """A tiny GPT-2 (random weights) and a BPE tokenizer trained on the stories, saved in ``path``."""
    tok = train_bpe_tokenizer(STORIES * 5, vocab_size=300, min_frequency=1)
    eos = tok.token_to_id("<|endoftext|>")
    cfg = GPT2Config(
        vocab_size=tok.get_vocab_size(), n_positions=32, n_embd=16, n_layer=1, n_head=2,
        bos_token_id=eos, eos_token_id=eos,
    )  # fmt: skip
    return eqxllm.save_pretrained(GPT2(cfg, key=jax.random.key(0)), path, tokenizer=tok)


def copy_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` (relative path -> content hash, or 'dir')."""
    if not root.exists():
        return {}
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``eqxllm ARGV`` in-process; returns (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(capsys, argv, *facts: str, command: str | None = None) -> str:
    """The CLI exits 2 with exactly one line on stderr, no traceback, holding every fact."""
    code, out, err = cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err
    prefix = f"eqxllm {command or argv[0]}"
    assert lines[0].startswith(prefix), lines[0]
    for fact in facts:
        assert fact in lines[0], (fact, lines[0])
    return lines[0]
