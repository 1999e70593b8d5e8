"""Where a run's tokenizer comes from: one rule for every training task.

In order of precedence:

1. ``--init-from DIR|HUB_ID``: the checkpoint's own tokenizer (``tokenizer.json``, or GPT-2's
   ``vocab.json`` + ``merges.txt`` with ``<|endoftext|>`` special), and its ``eos_token_id`` ends each
   example. A checkpoint without a tokenizer, or without an end-of-sequence id, is refused
   (``DataError``): a tokenizer trained or loaded here would not match its embedding rows.
2. A resumed run: the ``tokenizer.json`` of the run directory, so that the vocabulary never changes.
3. ``data.tokenizer="train"``: a byte-level BPE of ``data.vocab_size`` trained on the training texts.
4. Otherwise ``data.tokenizer`` names a folder, a ``tokenizer.json`` file or a Hub model id.

In cases 2-4 ``<|endoftext|>`` ends each example, or, for a tokenizer named by ``data.tokenizer``
without it (Llama's, Gemma's), the ``eos_token`` its ``tokenizer_config.json`` declares. Whatever the source, the tokenizer is saved in the
run directory once, so that a resumed run finds it (case 2) and the export carries it.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from eqxllm.checkpoints.api import load_config
from eqxllm.checkpoints.hub import resolve_pretrained
from eqxllm.data.chat import declared_special_tokens
from eqxllm.data.tokenizer import (
    EOT,
    TOKENIZER_FILE,
    eot_id,
    find_tokenizer,
    load_tokenizer,
    save_tokenizer,
    train_bpe_tokenizer,
)
from eqxllm.errors import ConfigError, DataError
from eqxllm.train.config import DataConfig


@dataclass(frozen=True)
class RunTokenizer:
    """A run's tokenizer and the id that ends each example (and separates packed stories)."""

    tokenizer: Tokenizer
    eot: int


def saved_tokenizer(src: str | Path, *, flag: str = "--init-from") -> Tokenizer:
    """The tokenizer saved beside the model of checkpoint ``src`` (a directory or Hub id); ``flag`` names
    the option ``src`` was given with, for the error when there is none."""
    directory = Path(resolve_pretrained(str(src)))
    tok = find_tokenizer(directory)
    if tok is None:
        found = sorted(p.name for p in directory.iterdir())[:12]
        raise DataError(
            f"{flag} {src}: {directory} holds no tokenizer (tokenizer.json, or vocab.json + merges.txt); "
            f"found {found}. Save the tokenizer beside the weights (save_pretrained(..., tokenizer=tok))"
        )
    return tok


def checkpoint_tokenizer(src: str) -> RunTokenizer:
    """The tokenizer of checkpoint ``src`` and its end-of-sequence id (the first, when it lists several)."""
    tok = saved_tokenizer(src)
    eos = load_config(src).eos_token_id
    eos = eos[0] if isinstance(eos, list | tuple) else eos
    if eos is None:
        raise DataError(f"--init-from {src}: config.json has no eos_token_id to end the training examples")
    return RunTokenizer(tok, int(eos))


def keep_in_run(tok: Tokenizer, run_dir: Path) -> None:
    """Save ``tok`` as the run's ``tokenizer.json`` unless the run has one (a resumed run keeps its own)."""
    if not (run_dir / TOKENIZER_FILE).is_file():
        run_dir.mkdir(parents=True, exist_ok=True)  # only once the data has been found and read
        save_tokenizer(tok, run_dir)


def end_id(tok: Tokenizer, source: str | None) -> int:
    """The id that ends each example: ``<|endoftext|>``, else (a Llama, Gemma or Mistral tokenizer named
    by ``--data.tokenizer``) the ``eos_token`` that its ``source`` folder or Hub repository declares."""
    if tok.token_to_id(EOT) is not None or source is None or Path(source).is_file():
        return eot_id(tok)
    try:
        declared = declared_special_tokens(source).get("eos_token")
    except ConfigError as e:
        raise DataError(f"--data.tokenizer {source}: {e}") from e
    end = None if declared is None else tok.token_to_id(declared)
    if end is None:
        raise DataError(
            f"--data.tokenizer {source}: the tokenizer has no {EOT!r} token and declares no eos_token in its "
            f"vocabulary (tokenizer_config.json: {declared!r}) to end each example with; use a tokenizer that has "
            "one, or train one (--data.tokenizer train)"
        )
    return end


def run_tokenizer(
    data: DataConfig,
    run_dir: Path,
    texts: Callable[[], Iterable[str]],
    *,
    init_from: str | None = None,
    progress: bool = False,
) -> RunTokenizer:
    """The tokenizer of a run writing to ``run_dir`` (see the module docstring for the order);
    ``texts()`` gives the training texts, read only when a tokenizer is trained."""
    if init_from is not None:
        chosen = checkpoint_tokenizer(init_from)
    else:
        if (run_dir / TOKENIZER_FILE).is_file():  # a resumed run must keep its vocabulary
            tok = load_tokenizer(run_dir)
        elif data.tokenizer == "train":
            tok = train_bpe_tokenizer(texts(), data.vocab_size, progress=progress)
        else:
            tok = load_tokenizer(data.tokenizer)
        chosen = RunTokenizer(tok, end_id(tok, None if data.tokenizer == "train" else data.tokenizer))
    keep_in_run(chosen.tokenizer, run_dir)
    return chosen
