"""From a :class:`DataConfig` to a tokenizer and token arrays: the one-way data path of a run."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from eqxllm.data import (
    cached_tokens,
    eot_id,
    load_tokenizer,
    save_tokenizer,
    story_sources,
    train_bpe_tokenizer,
)
from eqxllm.errors import DataError
from eqxllm.train.config import DataConfig


@dataclass(frozen=True)
class PreparedData:
    tokenizer: Tokenizer
    eot: int
    train: np.ndarray
    validation: np.ndarray
    validation_bytes: int
    """UTF-8 bytes of the validation text the tokens encode (stories + separators), for bits per byte."""


def prepare_data(
    cfg: DataConfig,
    run_dir: Path,
    *,
    seed: int,
    progress: bool = True,
    tokenizer: Tokenizer | None = None,
    eot: int | None = None,
) -> PreparedData:
    """Resolve the text, get the tokenizer (reused from ``run_dir`` on resume, else ``tokenizer`` when given
    (a pretrained checkpoint's, with its end-of-sequence id ``eot``), else trained or loaded, and saved
    there), and tokenize both splits once into the token cache."""
    sources = story_sources(cfg.source, version=cfg.version, val_fraction=cfg.val_fraction, seed=seed)
    saved = run_dir / "tokenizer.json"
    if tokenizer is not None:
        tok = tokenizer
    elif saved.is_file():  # a resumed run must keep its vocabulary
        tok = load_tokenizer(run_dir)
    elif cfg.tokenizer == "train":
        tok = train_bpe_tokenizer(sources["train"].stories(), cfg.vocab_size)
    else:
        tok = load_tokenizer(cfg.tokenizer)
    if not saved.is_file():
        run_dir.mkdir(parents=True, exist_ok=True)  # only once the data has been found and read
        save_tokenizer(tok, run_dir)
    train = cached_tokens(sources["train"], tok, cache_dir=cfg.cache_dir, progress=progress, eot=eot)
    val = cached_tokens(sources["validation"], tok, cache_dir=cfg.cache_dir, progress=progress, eot=eot)
    if len(val) < 2:
        raise DataError(f"the validation split of {cfg.source!r} is too small to evaluate ({len(val)} tokens)")
    eot = eot_id(tok) if eot is None else eot
    val_bytes = sum(len(s.encode("utf-8")) + len("<|endoftext|>") for s in sources["validation"].iter_stories())
    return PreparedData(tokenizer=tok, eot=eot, train=train, validation=val, validation_bytes=val_bytes)
