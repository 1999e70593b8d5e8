"""From a :class:`DataConfig` to a tokenizer and token arrays: the one-way data path of a run."""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from eqxllm.data import cached_tokens, eot_id, story_sources
from eqxllm.data.chat import ChatTemplates, load_chat_templates
from eqxllm.data.example_cache import cached_examples
from eqxllm.data.hf_datasets import DatasetSource, DatasetSpec, dataset_sources, is_dataset_file, is_dataset_folder
from eqxllm.data.sources import TextSource
from eqxllm.data.tinystories import Split
from eqxllm.errors import ConfigError, DataError
from eqxllm.train.config import DataConfig
from eqxllm.train.tokenizer_source import keep_in_run, run_tokenizer


@dataclass(frozen=True)
class PreparedData:
    tokenizer: Tokenizer
    eot: int
    train: np.ndarray
    validation: np.ndarray
    validation_bytes: int
    """UTF-8 bytes of the validation text the scored tokens encode (stories and their end tokens; for
    prompt/completion data, completions and theirs), for bits per byte."""
    train_mask: np.ndarray | None = None
    """Prompt/completion data: 1 on tokens that carry loss (completion and its end), 0 on prompts."""
    validation_mask: np.ndarray | None = None
    chat: ChatTemplates | None = None
    """Chat records: the templates that laid them out (the tokenizer's), which the export carries."""

    def reply_end(self) -> int | None:
        """The id a chat reply ends with (its template's ``eos_token``), which a model trained on chat
        records should stop at; None for other data, or when the tokenizer lacks that token."""
        end = None if self.chat is None else self.chat.special_tokens.get("eos_token")
        return None if end is None else self.tokenizer.token_to_id(end)


def uses_datasets(cfg: DataConfig) -> bool:
    """Whether ``cfg`` is read through Hugging Face ``datasets`` (see ``DataConfig.loader``)."""
    if cfg.loader != "auto":
        return cfg.loader == "datasets"
    if cfg.prompt_field is not None or cfg.completion_field is not None:
        return True
    path = Path(cfg.source).expanduser()
    if path.is_file():
        return is_dataset_file(path)
    return is_dataset_folder(path)


# The seed of the validation hold-out (a data source without validation text of its own): fixed, so that
# every run of a source, whatever its train.seed, holds out the same texts (0: the hold-out of the runs
# and figures documented before it was fixed, and of their token caches).
HOLDOUT_SEED = 0


def data_sources(cfg: DataConfig) -> tuple[Mapping[Split, TextSource], bool]:
    """The training and validation sources of ``cfg`` and whether they are prompt/completion pairs: the one
    path of every task. Separated text (TinyStories and its presets, ``.txt`` files) is read without
    ``datasets``; JSON/Parquet/CSV and Hub datasets through it. Either way the sources give their texts
    in a fixed order and a fingerprint for the token cache, the hold-out is the same on every run
    (:data:`HOLDOUT_SEED`), and batches are a function of ``(train.seed, step)``."""
    if uses_datasets(cfg):
        spec = DatasetSpec(
            source=cfg.source,
            text_field=cfg.text_field,
            prompt_field=cfg.prompt_field,
            completion_field=cfg.completion_field,
            streaming=cfg.streaming,
            val_fraction=cfg.val_fraction,
            seed=HOLDOUT_SEED,
        )
        return dataset_sources(spec), spec.paired
    sources = story_sources(cfg.source, version=cfg.version, val_fraction=cfg.val_fraction, seed=HOLDOUT_SEED)
    return sources, False


def with_chat_templates(
    sources: Mapping[Split, TextSource], cfg: DataConfig, *, init_from: str | None = None
) -> tuple[Mapping[Split, TextSource], bool]:
    """``sources`` given the chat templates of the run's tokenizer when their records hold chat messages
    (:mod:`eqxllm.data.hf_datasets`), and whether they do. The templates are those beside the tokenizer
    the run uses: the ``init_from`` checkpoint's, else ``data.tokenizer``'s; a tokenizer trained here has
    none, and a tokenizer without one is refused, naming what to pass instead."""
    datasets = [s for s in sources.values() if isinstance(s, DatasetSource)]
    if not any(s.holds_chat() for s in datasets):
        return sources, False
    where = init_from if init_from is not None else (None if cfg.tokenizer == "train" else cfg.tokenizer)
    if where is None:
        raise DataError(
            f"the records of {cfg.source!r} are chat messages, laid out by the chat template of the run's "
            "tokenizer, and a tokenizer trained here has none: start from an instruct checkpoint (--init-from) "
            "or name a tokenizer that has one (--data.tokenizer DIR|HUB_ID)"
        )
    try:
        templates = load_chat_templates(where)
    except ConfigError as e:
        raise DataError(
            f"the records of {cfg.source!r} are chat messages, laid out by the chat template of the run's "
            f"tokenizer, and that tokenizer cannot give one: {e}"
        ) from e
    given: dict[Split, TextSource] = {
        k: dataclasses.replace(s, chat=templates) if isinstance(s, DatasetSource) else s for k, s in sources.items()
    }
    return given, True


def stories_of(cfg: DataConfig, *, task: str) -> Mapping[Split, TextSource]:
    """The sources of a task that reads plain texts (``seq2seq``, ``vae``): :func:`data_sources` without pairs
    or chat messages."""
    sources, paired = data_sources(cfg)
    if paired:
        raise ConfigError(
            f"task {task!r} reads plain texts; --data.prompt-field/--data.completion-field pairs are for the 'lm' task"
        )
    if any(isinstance(s, DatasetSource) and s.holds_chat() for s in sources.values()):
        raise ConfigError(f"task {task!r} reads plain texts; records of chat messages are for the 'lm' task")
    return sources


def prepare_data(
    cfg: DataConfig,
    run_dir: Path,
    *,
    progress: bool = True,
    tokenizer: Tokenizer | None = None,
    eot: int | None = None,
    init_from: str | None = None,
) -> PreparedData:
    """Resolve the text, get the tokenizer (``tokenizer`` when given, with the id ``eot`` that ends each
    example, else by :func:`~eqxllm.train.tokenizer_source.run_tokenizer`: the ``init_from`` checkpoint's,
    the run's own on resume, trained or loaded) and tokenize both splits once into the token cache."""
    sources, paired = data_sources(cfg)
    sources, chat = with_chat_templates(sources, cfg, init_from=init_from)
    if tokenizer is None:
        chosen = run_tokenizer(cfg, run_dir, sources["train"].stories, init_from=init_from, progress=progress)
        tok, eot = chosen.tokenizer, chosen.eot
    else:
        tok, eot = tokenizer, eot_id(tokenizer) if eot is None else eot
        keep_in_run(tok, run_dir)
    masks = {}
    if paired:
        train, masks["train"] = cached_examples(
            sources["train"], tok, eot=eot, cache_dir=cfg.cache_dir, progress=progress, end=not chat
        )
        val, masks["val"] = cached_examples(
            sources["validation"], tok, eot=eot, cache_dir=cfg.cache_dir, progress=progress, end=not chat
        )
    else:
        train = cached_tokens(sources["train"], tok, cache_dir=cfg.cache_dir, progress=progress, eot=eot)
        val = cached_tokens(sources["validation"], tok, cache_dir=cfg.cache_dir, progress=progress, eot=eot)
    if len(val) < 2:
        raise DataError(f"the validation split of {cfg.source!r} is too small to evaluate ({len(val)} tokens)")
    # the text the scored targets stand for: each story and its end token, or (paired data, where
    # only completions carry loss) each completion and its end token; chat replies end their turn
    # themselves, in their text
    end = 0 if paired and chat else len((tok.id_to_token(eot) or "").encode("utf-8"))
    held_out = sources["validation"]
    if paired:  # prompt/completion records come through datasets
        assert isinstance(held_out, DatasetSource)
        scored = (completion for _, completion in held_out.iter_examples())
    else:
        scored = held_out.iter_stories()
    val_bytes = sum(len(text.encode("utf-8")) + end for text in scored)
    return PreparedData(
        tokenizer=tok,
        eot=eot,
        train=train,
        validation=val,
        validation_bytes=val_bytes,
        train_mask=masks.get("train"),
        validation_mask=masks.get("val"),
        chat=next((s.chat for s in sources.values() if isinstance(s, DatasetSource) and s.chat), None),
    )
