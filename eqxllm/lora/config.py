"""The ``lora`` section of a training run."""

import math
import re
from dataclasses import dataclass, fields
from typing import Literal

from eqxllm.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class LoraConfig:
    """Low-rank adapters for a run (``rank = 0``: off, every weight trains).

    With ``rank > 0`` only the adapters train (gradients and optimizer state exist for them alone),
    and the run exports both the merged model and a PEFT adapter directory.
    """

    rank: int = 0
    """Adapter rank ``r``; 0 trains the whole model instead."""
    alpha: float = 16.0
    """The update is scaled by ``alpha / rank``."""
    targets: str = "attn"
    """Regular expression searched in module paths (``blocks.blocks.attn.q_proj``): ``attn`` adapts
    every attention projection, ``q_proj|v_proj`` two of them, ``attn|mlp`` every linear layer of a block."""
    dropout: float = 0.0
    """Dropout on the adapters' input during training."""
    base_dtype: Literal["float32", "bfloat16"] = "float32"
    """Storage of the frozen weights: ``bfloat16`` halves their memory between steps (adapters and their
    optimizer state stay float32). The step still computes in ``train.compute_dtype``: with ``float32``
    the frozen weights are cast up inside it, so pair this with ``bfloat16`` compute to save there too."""

    def __post_init__(self):
        if not isinstance(self.rank, int) or self.rank < 0:
            raise ConfigError(f"lora.rank must be an integer >= 0 (0 turns LoRA off), got {self.rank!r}")
        if not 0 < self.alpha < math.inf:
            raise ConfigError(f"lora.alpha must be finite and > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout!r}")
        if self.base_dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"lora.base_dtype must be 'float32' or 'bfloat16', got {self.base_dtype!r}")
        try:
            re.compile(self.targets)
        except re.error as e:
            raise ConfigError(f"lora.targets {self.targets!r} is not a valid regular expression: {e}") from None
        if self.rank == 0:  # LoRA is off: an adapter option given alone would be dropped without a word
            given = [f.name for f in fields(self) if f.name != "rank" and getattr(self, f.name) != f.default]
            if given:
                raise ConfigError(
                    f"lora.{given[0]} is set but lora.rank is 0, which turns LoRA off (the whole model trains); "
                    "set lora.rank to train adapters"
                )

    @property
    def enabled(self) -> bool:
        return self.rank > 0
