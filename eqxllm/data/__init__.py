"""The data pipeline: text -> tokenizer -> token cache -> packed batches.

```python
sources = story_sources("hub")                # or a .txt file / folder: {"train": ..., "validation": ...}
tok = load_tokenizer("gpt2")                  # a folder, or train_bpe_tokenizer(sources["train"].stories())
train = cached_tokens(sources["train"], tok)  # uint16 memmap, tokenized once
batch = batch_at(train, step, batch_size=32, seq_len=256, seed=0)  # int32 [32, 257]
```

For an instruct model, :func:`chat_prompt` lays messages out with the tokenizer's chat template:
``ids = chat_prompt("Qwen/Qwen2.5-0.5B-Instruct", [{"role": "user", "content": "Hi!"}])``.
"""

from eqxllm.data.batches import batch_at, eval_batches, num_batches, num_windows
from eqxllm.data.chat import ChatTemplates, chat_prompt, load_chat_templates, render_chat
from eqxllm.data.sources import Holdout, StorySource, story_sources
from eqxllm.data.tinystories import (
    EOT,
    HUB_DATASET,
    HUB_FILES,
    Split,
    Version,
    iter_stories,
    read_stories,
    resolve_text_files,
    train_val_split,
)
from eqxllm.data.token_cache import (
    cached_tokens,
    default_cache_dir,
    token_cache_path,
    token_dtype,
    write_tokens,
)
from eqxllm.data.tokenizer import eot_id, gpt2_tokenizer, load_tokenizer, save_tokenizer, train_bpe_tokenizer

__all__ = [
    "EOT",
    "HUB_DATASET",
    "HUB_FILES",
    "Holdout",
    "Split",
    "StorySource",
    "Version",
    "ChatTemplates",
    "batch_at",
    "cached_tokens",
    "chat_prompt",
    "default_cache_dir",
    "eot_id",
    "eval_batches",
    "gpt2_tokenizer",
    "iter_stories",
    "load_chat_templates",
    "load_tokenizer",
    "num_batches",
    "num_windows",
    "read_stories",
    "render_chat",
    "resolve_text_files",
    "save_tokenizer",
    "story_sources",
    "token_cache_path",
    "token_dtype",
    "train_bpe_tokenizer",
    "train_val_split",
    "write_tokens",
]
