"""What a run leaves behind for the Hugging Face world: ``OUT/model`` (weights in Hugging Face layout,
adapters merged, the tokenizer, ``generation_config.json``) and, for a LoRA run, ``OUT/adapter`` (a
PEFT adapter directory on top of the ``--init-from`` checkpoint)."""

import json
from pathlib import Path
from typing import Any

from eqxllm.checkpoints.api import save_pretrained
from eqxllm.checkpoints.atomic import atomic_write_text
from eqxllm.checkpoints.generation_config import GENERATION_CONFIG, generation_config
from eqxllm.checkpoints.hub import resolve_pretrained
from eqxllm.checkpoints.side_files import copy_side_files
from eqxllm.data.chat import ChatTemplates
from eqxllm.data.tokenizer import TOKENIZER_CONFIG_FILE
from eqxllm.lora import has_lora, merge_lora
from eqxllm.lora.peft_export import save_peft_adapter


def export_run(
    model: Any, dst: Path, *, tokenizer: Any, init_from: str | None = None, chat: ChatTemplates | None = None
) -> Path:
    """Write ``dst`` (merged weights, tokenizer, generation config) and, when ``model`` has adapters
    on top of ``init_from``, ``dst.parent / "adapter"`` (PEFT). With ``init_from`` the checkpoint's
    tokenizer files and its ``generation_config.json`` (sampling defaults included) are copied as
    they are; otherwise ``chat`` (the templates that laid out a run's chat records) goes into
    ``tokenizer_config.json`` with its special tokens, so that the model chats as it was trained."""
    save_pretrained(merge_lora(model), dst, tokenizer=tokenizer)
    source = None if init_from is None else Path(resolve_pretrained(init_from))
    copied = [] if source is None else copy_side_files(source, dst)
    if chat is not None and source is None:
        add_chat_templates(dst / TOKENIZER_CONFIG_FILE, chat)
    if GENERATION_CONFIG not in copied:
        atomic_write_text(dst / GENERATION_CONFIG, json.dumps(generation_config(model.config), indent=2) + "\n")
    if has_lora(model) and init_from is not None:  # from scratch, no saved base exists for an adapter
        base_config = json.loads((source / "config.json").read_text(encoding="utf-8")) if source else None
        base = adapter_base(init_from, source)
        save_peft_adapter(model, dst.parent / "adapter", base_model_name_or_path=base, base_config=base_config)
    return dst


def adapter_base(init_from: str | None, source: Path | None) -> str | None:
    """What a run's adapter names as its base model: a Hub id as given; a local checkpoint as the
    absolute path of its model directory (a run directory's ``model/``), which peft's
    ``AutoPeftModel`` loads from any working directory."""
    if init_from is None or source is None or not Path(init_from).exists():
        return init_from
    return str(source.resolve())


def add_chat_templates(path: Path, chat: ChatTemplates) -> None:
    """Add ``chat``'s templates (one as a string, several as transformers' list of ``{"name",
    "template"}``) and its special tokens to the ``tokenizer_config.json`` at ``path``."""
    config = json.loads(path.read_text(encoding="utf-8"))
    templates = chat.templates
    config["chat_template"] = (
        templates["default"]
        if list(templates) == ["default"]
        else [{"name": name, "template": text} for name, text in templates.items()]
    )
    config.update(chat.special_tokens)
    atomic_write_text(path, json.dumps(config, indent=2) + "\n")
