"""Splices: what the code part-way between two sentences should write, for the interpolation loss.

Trained on codes of real sentences only, a T5-VAE's decoder has never seen the code half-way between
two sentences, and with first-n codes it writes a slot-by-slot mix of both there ("Timmy finished
what bath do, but then she had an amazing idea."). ``splice_weight`` trains those codes too. The
target for the point ``t`` of the way from sentence ``a`` to sentence ``b`` is a *splice*: ``a``'s
words up to a token that both sentences contain, then ``b``'s words from that token on, with ``t``
the share of its tokens that come from ``b``:

    a = "He felt so lucky to have found the field of flowers."
    b = "Timmy was so happy and said "Yes please!""
    a[:2] + b[2:] = "He felt so happy and said "Yes please!""          (t = 8 / 10 of its tokens from b)

A splice joins two real sentences at a shared token that begins a word, so every word in it is one of
theirs and every pair of adjacent tokens occurs in one of them: locally it reads like text, and it
holds some of each sentence, which is what a point between them should. (Recombining fragments of real examples at shared contexts is also how GECA,
Andreas 2020, "Good-Enough Compositional Data Augmentation", builds new examples.) A pair that
shares no token has no splice; its target is then the nearer sentence itself, ``a`` for ``t`` below
one half: the decoder learns to write one sentence or the other there, not a mix.

A junction can still break the grammar: the words on either side of it may never have been next to
each other. With ``trigrams`` (:func:`token_trigrams` of the training sentences) a row prefers the
splices whose junction is *attested*: the token before the shared one, the shared one and the token
after it occur together in the training text. Of ``"Do you want to fix it?"`` and ``They ran to the
net and looked at it.``, the splice ``"Do you want to the net and looked at it.`` joins at "to" with
"want to the", which TinyStories never writes; ``"Do you want to fix it.`` joins at "it" with "fix
it.", which it does. On TinyStories such splices score as well as the sentences themselves under a
GPT-2 trained on them (mean log-probability per token -3.85, against -3.89 for the training
sentences and -4.36 for the other splices), and 21% of pairs of training sentences have one,
against 51% with any splice (docs/t5_vae.md).

Pairs are adjacent rows of a batch (rows ``2k`` and ``2k + 1``), so that a data-parallel shard of
an even number of rows holds both sentences of each of its pairs. Row ``r`` carries the splice that
starts with its own sentence and ends with its partner's.
"""

import numpy as np
from jaxtyping import Bool, Int32

from eqxllm.errors import ConfigError


def word_starts(tokenizer) -> Bool[np.ndarray, " vocab"]:
    """Which token ids may begin a word: those written with a leading space marker (byte-level BPE's
    ``Ġ``, SentencePiece's ``▁``) and those that do not start with a letter or digit (punctuation).
    A token such as ``ing`` continues the word before it, and a splice joined there would make a
    word that neither sentence has ("pen" + "ing")."""
    out = np.zeros((tokenizer.get_vocab_size(),), bool)
    for token, i in tokenizer.get_vocab().items():
        out[i] = token[:1] in ("Ġ", "▁") or not token[:1].isalnum()
    return out


_START = -1  # stands before a sentence's first token in trigrams (no token id is negative)


def token_trigrams(
    ids: Int32[np.ndarray, "n seq"], lengths: Int32[np.ndarray, " n"]
) -> frozenset[tuple[int, int, int]]:
    """Every three adjacent tokens of the rows ``ids`` (tokens then the end token; ``lengths`` counts
    it), with a start marker before each row: the contexts that :func:`splices` accepts as attested."""
    out: set[tuple[int, int, int]] = set()
    for row, n in zip(ids, lengths):
        t = [_START, *row[:n].tolist()]
        out.update(zip(t, t[1:], t[2:]))
    return frozenset(out)


def _attested(a: list[int], b: list[int], i: int, j: int, trigrams, eos_id: int) -> bool:
    """Whether the junction of ``a[:i] + b[j:]`` (``a[i] == b[j]``) is attested: the token before it
    (``a[i - 1]``), the shared token and the one after it (``b[j + 1]``, or the end token after ``b``'s
    last) occur together in ``trigrams``. The other contexts of a splice are its two sentences' own."""
    return (a[i - 1], b[j], b[j + 1] if j + 1 < len(b) else eos_id) in trigrams


def splices(
    a: list[int],
    b: list[int],
    max_tokens: int,
    joinable: Bool[np.ndarray, " vocab"] | None = None,
    *,
    trigrams: frozenset[tuple[int, int, int]] | None = None,
    eos_id: int | None = None,
) -> list[tuple[list[int], float]]:
    """Every splice ``a[:i] + b[j:]`` with ``a[i] == b[j]``, ``i, j >= 1`` (each sentence gives at
    least one token of its own), at most ``max_tokens`` long and unlike ``a`` and ``b``, with the share
    of its tokens taken from ``b``. ``a`` and ``b`` are token ids without the end token; with
    ``joinable`` (e.g. :func:`word_starts`) only tokens it marks are junctions; with ``trigrams``
    (:func:`token_trigrams`, whose rows end with ``eos_id``) only attested junctions (module
    docstring)."""
    attested = None
    if trigrams is not None:
        if eos_id is None:
            raise ConfigError("attested splices need eos_id: the end token that ends the rows of trigrams")
        attested = (trigrams, eos_id)
    out, seen = [], {tuple(a), tuple(b)}
    if len(a) < 2 or len(b) < 2:
        return out
    same = np.asarray(a)[1:, None] == np.asarray(b)[None, 1:]
    if joinable is not None:
        same &= joinable[np.asarray(a)[1:]][:, None]
    for i, j in zip(*np.nonzero(same)):
        i, j = int(i) + 1, int(j) + 1
        tokens = a[:i] + b[j:]
        if attested is not None and not _attested(a, b, i, j, *attested):
            continue
        if len(tokens) <= max_tokens and tuple(tokens) not in seen:
            seen.add(tuple(tokens))
            out.append((tokens, (len(b) - j) / len(tokens)))
    return out


def splice_rows(
    ids: Int32[np.ndarray, "batch seq"],
    lengths: Int32[np.ndarray, " batch"],
    rng: np.random.Generator,
    *,
    eos_id: int,
    pad_id: int,
    joinable: Bool[np.ndarray, " vocab"] | None = None,
    trigrams: frozenset[tuple[int, int, int]] | None = None,
) -> dict[str, np.ndarray]:
    """The interpolation targets of a batch (rows: tokens, end token, padding; ``lengths`` with the end
    token): for each row, one splice drawn at random from those of (this row, its partner), or, when
    there is none, the row itself at a ``t`` drawn from ``[0, 1/2)``; ``joinable`` as in
    :func:`splices`. With ``trigrams`` the draw is among the attested splices when the pair has any,
    and among all of them otherwise. Returns ``splice_ids [batch, seq]`` (the target: tokens, end
    token, padding), ``splice_lengths [batch]`` and ``splice_t [batch]``."""
    batch, seq = ids.shape
    if batch % 2:
        raise ConfigError(f"interpolation pairs are adjacent rows: the batch (per process) must be even, got {batch}")
    out_ids = np.full((batch, seq), pad_id, np.int32)
    out_len = np.zeros((batch,), np.int32)
    out_t = np.zeros((batch,), np.float32)
    for row in range(batch):
        own = ids[row, : lengths[row] - 1].tolist()
        partner = row ^ 1
        other = ids[partner, : lengths[partner] - 1].tolist()
        options = [] if trigrams is None else splices(own, other, seq - 1, joinable, trigrams=trigrams, eos_id=eos_id)
        if not options:
            options = splices(own, other, seq - 1, joinable)
        if options:
            tokens, t = options[rng.integers(len(options))]
        else:
            tokens, t = own, 0.5 * rng.random()
        out_ids[row, : len(tokens)] = tokens
        out_ids[row, len(tokens)] = eos_id
        out_len[row] = len(tokens) + 1
        out_t[row] = t
    return {"splice_ids": out_ids, "splice_lengths": out_len, "splice_t": out_t}
