"""The files a Hugging Face checkpoint keeps beside its weights for generation: the tokenizer's and
``generation_config.json``. Copied byte for byte, so that special tokens, chat templates,
normalisation, stop ids and sampling defaults stay exactly as they were."""

from pathlib import Path

from eqxllm.checkpoints.atomic import atomic_write_bytes
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


def copy_side_files(source: Path, dst: Path) -> list[str]:
    """Copy the tokenizer files and ``generation_config.json`` that ``source`` holds into ``dst``,
    each atomically; returns the names copied."""
    copied = []
    for name in (*TOKENIZER_FILES, GENERATION_CONFIG):
        if (source / name).is_file():
            atomic_write_bytes(dst / name, (source / name).read_bytes())
            copied.append(name)
    return copied
