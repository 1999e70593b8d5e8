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
    "chat_template.jinja",  # an instruct model's chat template, saved apart by transformers >= 4.43
)
CHAT_TEMPLATE_DIR = "chat_templates"  # its other named templates, NAME.jinja


def copy_side_files(source: Path, dst: Path) -> list[str]:
    """Copy the tokenizer files (chat templates included) and ``generation_config.json`` that ``source``
    holds into ``dst``, each atomically; returns the names copied."""
    copied = []
    for name in (*TOKENIZER_FILES, GENERATION_CONFIG):
        if (source / name).is_file():
            atomic_write_bytes(dst / name, (source / name).read_bytes())
            copied.append(name)
    for template in sorted((source / CHAT_TEMPLATE_DIR).glob("*.jinja")):
        (dst / CHAT_TEMPLATE_DIR).mkdir(exist_ok=True)
        atomic_write_bytes(dst / CHAT_TEMPLATE_DIR / template.name, template.read_bytes())
        copied.append(f"{CHAT_TEMPLATE_DIR}/{template.name}")
    return copied
