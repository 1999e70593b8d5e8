"""Low-rank adapters (LoRA; Hu et al., 2021) for every eqxllm family: add, train, merge, export.

``apply_lora`` wraps the linear layers that a regular expression selects; ``lora_filter`` marks the
adapter leaves, the only ones a training step differentiates and the optimizer keeps state for;
``merge_lora`` folds the adapters back into plain weights; ``save_peft_adapter`` writes a directory
that ``peft.PeftModel.from_pretrained`` loads onto the matching ``transformers`` model.
"""

from eqxllm.lora.apply import (
    apply_lora,
    cast_frozen,
    has_lora,
    linear_modules,
    lora_filter,
    merge_lora,
    trainable_filter,
    trainable_params,
    with_adapter_dropout,
    with_dropout_keys,
)
from eqxllm.lora.linear import LoraLinear

__all__ = [
    "LoraLinear",
    "apply_lora",
    "cast_frozen",
    "has_lora",
    "linear_modules",
    "lora_filter",
    "merge_lora",
    "trainable_filter",
    "trainable_params",
    "with_adapter_dropout",
    "with_dropout_keys",
]
