"""Evaluate a language model on an arbitrary UTF-8 text file (``eqxllm eval``)."""

from pathlib import Path

import numpy as np

from eqxllm.data import load_tokenizer
from eqxllm.data.tinystories import EOT
from eqxllm.errors import DataError, InputError
from eqxllm.train.evaluate import evaluate_tokens


def read_utf8(path: str | Path) -> str:
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{p} is a directory; pass one UTF-8 text file (concatenate the files to evaluate)")
    if not p.is_file():
        raise DataError(f"data file {p} does not exist")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{p} is not UTF-8: byte {e.start} is 0x{raw[e.start]:02x}") from e
    if not text.strip():
        raise DataError(f"{p} is empty: there is no text to evaluate")
    return text


def evaluate_text_file(
    model, model_dir: str | Path, path: str | Path, *, seq_len: int | None = None, batch_size: int = 8
) -> dict:
    """Loss (nats/token), perplexity and bits per byte of ``path`` under ``model`` and the tokenizer
    saved in ``model_dir``. Documents separated by ``<|endoftext|>`` are tokenized one by one with the
    end-of-text id between them (as in training); the bits are divided by the file's UTF-8 bytes."""
    text = read_utf8(path)
    tok = load_tokenizer(model_dir)
    eot = tok.token_to_id(EOT)
    pieces = [p.strip() for p in text.split(EOT)] if EOT in text else [text]
    pieces = [p for p in pieces if p]
    ids: list[int] = []
    for enc in tok.encode_batch(pieces, add_special_tokens=False):
        ids.extend(enc.ids)
        if eot is not None:
            ids.append(eot)
    if eot is not None:
        ids = [eot] + ids[:-1]  # the first document is predicted from a separator, like the others
    tokens = np.asarray(ids, np.int32)
    if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1):
        raise InputError(f"seq_len must be an integer >= 1, got {seq_len!r}")
    context = model.config.max_positions
    if seq_len is not None and context is not None and seq_len > context:
        raise InputError(f"seq_len={seq_len} exceeds the model's context ({context} positions); pass at most {context}")
    seq = (seq_len or context) if context is not None else seq_len or 1024
    res = evaluate_tokens(model, tokens, num_bytes=len(text.encode("utf-8")), seq_len=seq, batch_size=batch_size)
    return res.as_dict()
