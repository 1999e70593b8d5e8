"""Sentences for the T5-VAE: stories split into sentences, tokenized, bounded in length, padded.

A sentence ends at ``.``, ``!`` or ``?`` (a run of them, then any closing quotes or brackets) outside
quoted speech, or at a line break: ``He said, "Stop. Look!" Then he ran.`` is two sentences, the
first with its whole quotation. Each kept sentence is stored as its token ids followed by the end
token, right-padded to ``max_length``; longer ones are dropped.

Batches follow the packed-window rule of :mod:`eqxllm.data.batches`: epoch ``e`` visits every sentence
once in the order of a permutation seeded with ``(seed, e)``, so step ``s``'s batch is a pure function
of ``(seed, s)`` and a resumed run needs only its step number.
"""

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Int32

from eqxllm.errors import ConfigError, DataError

_CLOSERS = "\"”’')]"
_END = re.compile(rf"[.!?]+[{re.escape(_CLOSERS)}]*")


def _toggle(quoted: bool, ch: str) -> bool:
    """Inside quoted speech after ``ch``? A straight quote flips it; curly ones say which side they are."""
    if ch == '"':
        return not quoted
    return {"“": True, "”": False}.get(ch, quoted)


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` (see the module docstring), whitespace-normalised, in order."""
    out: list[str] = []
    for line in text.splitlines():
        line = " ".join(line.split())
        start, quoted, i = 0, False, 0
        while i < len(line):
            ch = line[i]
            end = _END.match(line, i) if ch in ".!?" else None
            if end is not None:
                for c in end.group():  # closing quotes after the punctuation
                    quoted = _toggle(quoted, c)
                stop = end.end()
                if not quoted and (stop == len(line) or line[stop] == " "):
                    out.append(line[start:stop].strip())
                    start = stop
                i = stop
                continue
            quoted = _toggle(quoted, ch)
            i += 1
        tail = line[start:].strip()
        if tail:
            out.append(tail)
    return [s for s in out if s]


_OPENERS = "\"“‘'"
_TITLES = frozenset({"Mr.", "Mrs.", "Ms.", "Dr.", "St."})  # abbreviations the splitter cuts after


def whole_sentence(text: str) -> bool:
    """Does ``text`` look like a sentence of its own rather than a piece of one? It opens with a
    capital letter, a digit or a quotation mark, and is more than one word unless it is quoted.
    :func:`split_sentences` cuts after quoted speech and after abbreviations, so that a story also
    yields pieces such as "said Jack." ('"Stop!" said Jack.'), "Mrs." and "Then Mrs." ("Mrs. Lee"), which
    fail; what follows the title ("Lee smiled.") cannot be told from a sentence without its story."""
    text = text.strip()
    if not text or not (text[0].isupper() or text[0].isdigit() or text[0] in _OPENERS):
        return False
    if text.split()[-1] in _TITLES:  # "Inside the building, Mr." ("Mr. Brown" follows in the story)
        return False
    return text[0] in _OPENERS or len(text.split()) > 1


def story_sentences(stories: Iterable[str]) -> list[str]:
    """Every sentence of every story, in order."""
    return [s for story in stories for s in split_sentences(story)]


@dataclass(frozen=True)
class SentenceSet:
    """Tokenized sentences: ``ids [n, max_length]`` (tokens, end token, padding) and ``lengths [n]``
    (tokens including the end token); ``texts`` are the sentences kept, in the same order."""

    ids: Int32[np.ndarray, "n max_length"]
    lengths: Int32[np.ndarray, " n"]
    texts: tuple[str, ...]
    dropped: int
    """Sentences left out because they were longer than ``max_length - 1`` tokens (or empty)."""

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, rows: Sequence[int] | np.ndarray) -> "SentenceSet":
        rows = np.asarray(rows, np.int64)
        return SentenceSet(self.ids[rows], self.lengths[rows], tuple(self.texts[i] for i in rows), 0)


def encode_sentences(tokenizer, sentences: Sequence[str], *, max_length: int, eos_id: int, pad_id: int) -> SentenceSet:
    """Tokenize ``sentences`` (no special tokens added by the tokenizer), append ``eos_id``, keep those
    that fit in ``max_length`` tokens, right-pad with ``pad_id``."""
    if max_length < 2:
        raise ConfigError(f"max_length must be >= 2 (a token and the end token), got {max_length}")
    encodings = tokenizer.encode_batch(list(sentences), add_special_tokens=False) if sentences else []
    kept = [(t, e.ids) for t, e in zip(sentences, encodings) if 0 < len(e.ids) < max_length]
    ids = np.full((len(kept), max_length), pad_id, np.int32)
    lengths = np.zeros((len(kept),), np.int32)
    for row, (_, tokens) in enumerate(kept):
        ids[row, : len(tokens)] = tokens
        ids[row, len(tokens)] = eos_id
        lengths[row] = len(tokens) + 1
    return SentenceSet(ids, lengths, tuple(t for t, _ in kept), len(sentences) - len(kept))


def unseen(validation: SentenceSet, train: SentenceSet) -> SentenceSet:
    """The validation sentences whose text never occurs in ``train`` ("The end." is in many stories):
    held-out figures then measure sentences the model has never read."""
    seen = set(train.texts)
    return validation.take([i for i, t in enumerate(validation.texts) if t not in seen])


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    order = np.random.default_rng([seed, epoch]).permutation(n)
    order.flags.writeable = False
    return order


def sentence_batch(
    data: SentenceSet,
    step: int | np.integer,
    *,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> dict[str, np.ndarray]:
    """Step ``step``'s batch, this process's contiguous rows of it: ``input_ids``, ``lengths`` and
    ``step`` (the step number in every row, for the regulariser's warm-up)."""
    if batch_size < 1 or batch_size % process_count or not 0 <= process_index < process_count:
        raise ConfigError(
            f"batch_size={batch_size} must be >= 1 and a multiple of process_count={process_count}, and "
            f"process_index={process_index} in [0, {process_count})"
        )
    per_epoch = len(data) // batch_size
    if per_epoch == 0:
        dropped = (
            f" ({data.dropped} more were dropped, empty or too long for the sequence length: --train.seq-len)"
            if data.dropped
            else ""
        )
        raise DataError(f"{len(data)} sentences are fewer than one batch of {batch_size}{dropped}; give more text")
    epoch, index = divmod(int(step), per_epoch)
    rows = _epoch_order(seed, epoch, len(data))[index * batch_size : (index + 1) * batch_size]
    local = batch_size // process_count
    rows = rows[process_index * local : (process_index + 1) * local]
    return {
        "input_ids": data.ids[rows],
        "lengths": data.lengths[rows],
        "step": np.full((len(rows),), int(step), np.int32),
    }
