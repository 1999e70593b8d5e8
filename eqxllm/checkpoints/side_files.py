"""The files a Hugging Face checkpoint keeps beside its weights for generation: the tokenizer's and
``generation_config.json``. Copied byte for byte, so that special tokens, chat templates,
normalisation, stop ids and sampling defaults stay exactly as they were."""

import os
import shutil
import tempfile
from pathlib import Path

from eqxllm.checkpoints.generation_config import GENERATION_CONFIG

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)


def copy_file_atomic(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` whole or not at all (a temporary beside ``dst``, then ``os.replace``)."""
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.p{os.getpid()}.", suffix=".eqxllm.tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def copy_side_files(source: Path, dst: Path) -> list[str]:
    """Copy the tokenizer files and ``generation_config.json`` that ``source`` holds into ``dst``,
    each atomically; returns the names copied."""
    copied = []
    for name in (*TOKENIZER_FILES, GENERATION_CONFIG):
        if (source / name).is_file():
            copy_file_atomic(source / name, dst / name)
            copied.append(name)
    return copied
