"""Prompt/completion examples tokenized once: the packed token stream plus a loss mask beside it.

Each example becomes ``prompt ids + completion ids + end-of-sequence`` (prompt and completion are
encoded separately, so the boundary is exact; a chat completion, which ends with the template's own
end of turn, gets no end-of-sequence added, as in TRL's ``SFTTrainer``), appended to one flat stream
exactly like stories in :mod:`eqxllm.data.token_cache`. A second file of the same length holds one
byte per token: 1 where the token is a completion token or its closing end-of-sequence (a target
that carries loss), 0 on prompt tokens. Windows cut from the stream take the same slices of the
mask, so packing, the deterministic order and exact resume are those of plain text.
"""

import itertools
import os
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from eqxllm.checkpoints.atomic import temporary_beside
from eqxllm.data.token_cache import (
    begin_cache_file,
    end_cache_file,
    open_cache_file,
    token_cache_path,
    token_dtype,
)
from eqxllm.errors import DataError


def mask_path(tokens_path: Path) -> Path:
    return tokens_path.with_name(tokens_path.name.removesuffix(".bin") + ".mask.bin")


def _encode(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    return [e.ids for e in encode(texts, add_special_tokens=False)]


def cached_examples(
    source,
    tok: Tokenizer,
    *,
    eot: int,
    cache_dir: str | Path | None = None,
    chunk_size: int = 2048,
    progress: bool = True,
    end: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens, loss_mask)`` of every example of ``source`` (an object with ``iter_examples()`` of
    ``(prompt, completion)`` pairs and a ``fingerprint()``), both memory-mapped and equally long.
    ``end=False``: no ``eot`` after each completion (chat completions end their turn themselves)."""
    path = token_cache_path(source, tok, cache_dir, eot=eot if end else -1)  # -1: no end, an id none has
    mpath = mask_path(path)
    dtype = token_dtype(tok)
    if not (path.exists() and mpath.exists()):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_tokens = temporary_beside(path, f".{path.name}.", ".tmp")
        tmp_mask = temporary_beside(mpath, f".{mpath.name}.", ".tmp")
        try:
            with os.fdopen(tmp_tokens[0], "wb") as out, os.fdopen(tmp_mask[0], "wb") as mout:
                begin_cache_file(out)
                begin_cache_file(mout)
                count = 0
                with tqdm(desc=f"tokenizing {source.split}", unit=" examples", disable=not progress) as bar:
                    chunk: list[tuple[str, str]] = []
                    for pair in itertools.chain(source.iter_examples(), [None]):  # None: flush
                        if pair is not None:
                            chunk.append(pair)
                        if chunk and (pair is None or len(chunk) == chunk_size):
                            prompts = _encode(tok, [p for p, _ in chunk])
                            completions = _encode(tok, [c for _, c in chunk])
                            closing = [eot] if end else []
                            for p, c in zip(prompts, completions):
                                out.write(np.asarray([*p, *c, *closing], dtype).tobytes())
                                mout.write(np.asarray([0] * len(p) + [1] * (len(c) + len(closing)), np.uint8).tobytes())
                            count += len(chunk)
                            bar.update(len(chunk))
                            chunk = []
                end_cache_file(out, dtype)
                end_cache_file(mout, np.dtype(np.uint8))
            if count == 0:
                raise DataError(f"the {source.split} split holds no examples")
            os.replace(tmp_mask[1], mpath)  # the mask first: the token file's presence means both are whole
            os.replace(tmp_tokens[1], path)
        except BaseException:
            Path(tmp_tokens[1]).unlink(missing_ok=True)
            Path(tmp_mask[1]).unlink(missing_ok=True)
            raise
    tokens, mask = open_cache_file(path, dtype), open_cache_file(mpath, np.dtype(np.uint8))
    if len(tokens) != len(mask):  # each file whole, yet not of one write: the rows would not line up
        raise DataError(
            f"token cache files {path} ({len(tokens)} ids) and {mpath} ({len(mask)} mask bytes) do not match: "
            "delete both, and the run tokenizes again"
        )
    return tokens, mask
