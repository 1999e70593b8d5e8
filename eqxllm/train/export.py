"""What a run leaves behind for the Hugging Face world: ``OUT/model`` (weights in Hugging Face layout,
adapters merged, the tokenizer, ``generation_config.json``) and, for a LoRA run, ``OUT/adapter`` (a
PEFT adapter directory on top of the ``--init-from`` checkpoint)."""

import json
import shutil
from pathlib import Path
from typing import Any

from eqxllm.checkpoints.api import save_pretrained
from eqxllm.checkpoints.generation_config import GENERATION_CONFIG, generation_config
from eqxllm.checkpoints.hub import resolve_pretrained
from eqxllm.lora import has_lora, merge_lora
from eqxllm.lora.peft_export import save_peft_adapter

# the tokenizer files of a Hugging Face checkpoint, copied byte for byte so its special tokens,
# chat template and normalisation stay exactly as they were
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)


def export_run(model: Any, dst: Path, *, tokenizer: Any, init_from: str | None = None) -> Path:
    """Write ``dst`` (merged weights, tokenizer, generation config) and, when ``model`` has adapters,
    ``dst.parent / "adapter"`` (PEFT). With ``init_from`` the checkpoint's tokenizer files and its
    ``generation_config.json`` (sampling defaults included) are copied as they are."""
    save_pretrained(merge_lora(model), dst, tokenizer=tokenizer)
    source = None if init_from is None else resolve_pretrained(init_from)
    if source is not None:
        for name in TOKENIZER_FILES:
            if (Path(source) / name).is_file():
                shutil.copyfile(Path(source) / name, dst / name)
    if source is not None and (Path(source) / GENERATION_CONFIG).is_file():
        shutil.copyfile(Path(source) / GENERATION_CONFIG, dst / GENERATION_CONFIG)
    else:
        text = json.dumps(generation_config(model.config), indent=2) + "\n"
        (dst / GENERATION_CONFIG).write_text(text, encoding="utf-8")
    if has_lora(model):
        save_peft_adapter(model, dst.parent / "adapter", base_model_name_or_path=init_from)
    return dst
