"""Splices: what the code part-way between two sentences should write, for the interpolation loss
(``splice_weight``; docs/t5_vae.md, "The interpolation loss").

The target for the point ``t`` of the way from sentence ``a`` to sentence ``b`` is a *splice*,
``a``'s words up to a token that both contain and that begins a word, then ``b``'s words from that
token on, with ``t`` the share of its tokens that come from ``b``; "He felt so lucky." and "Timmy was
so happy." give "He felt so happy." at ``t = 3 / 5``. (Recombining fragments of real examples at
shared contexts is how GECA builds new examples: Andreas, 2020, "Good-Enough Compositional Data
Augmentation".) A pair without a splice gets the nearer sentence itself, ``a`` for ``t < 1/2``.
Pairs are adjacent rows of a batch (rows ``2k`` and ``2k + 1``), so that a data-parallel shard of an
even number of rows holds both sentences of its pairs.
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


def splices(
    a: list[int],
    b: list[int],
    max_tokens: int,
    joinable: Bool[np.ndarray, " vocab"] | None = None,
) -> list[tuple[list[int], float]]:
    """Every splice ``a[:i] + b[j:]`` with ``a[i] == b[j]``, ``i, j >= 1`` (each sentence gives at
    least one token of its own), at most ``max_tokens`` long and unlike ``a`` and ``b``, with the share
    of its tokens taken from ``b``. ``a`` and ``b`` are token ids without the end token; with
    ``joinable`` (e.g. :func:`word_starts`) only tokens it marks are junctions."""
    out, seen = [], {tuple(a), tuple(b)}
    if len(a) < 2 or len(b) < 2:
        return out
    same = np.asarray(a)[1:, None] == np.asarray(b)[None, 1:]
    if joinable is not None:
        same &= joinable[np.asarray(a)[1:]][:, None]
    for i, j in zip(*np.nonzero(same)):
        i, j = int(i) + 1, int(j) + 1
        tokens = a[:i] + b[j:]
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
) -> dict[str, np.ndarray]:
    """The interpolation targets of a batch (rows: tokens, end token, padding; ``lengths`` with the end
    token): for each row, one splice drawn at random from those of (this row, its partner), or, when
    there is none, the row itself at a ``t`` drawn from ``[0, 1/2)``; ``joinable`` as in
    :func:`splices`. Returns ``splice_ids [batch, seq]`` (the target: tokens, end
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
