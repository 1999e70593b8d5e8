"""Evaluation: mean next-token loss, perplexity and bits per byte.

Bits per byte (BPB) divides the total negative log-likelihood, in bits, by the UTF-8 byte count of
the text, so models with different tokenizers compare fairly (Gao et al., 2020, "The Pile").
"""

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from eqxllm.errors import DataError, InputError, NonFiniteError
from eqxllm.train.loss import cross_entropy


@dataclass(frozen=True)
class EvalResult:
    loss: float
    perplexity: float
    bits_per_byte: float
    tokens: int
    bytes: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "loss": self.loss,
            "perplexity": self.perplexity,
            "bits_per_byte": self.bits_per_byte,
            "tokens": self.tokens,
            "bytes": self.bytes,
        }


@eqx.filter_jit
def _window_nll(
    model,
    windows: Int[Array, "batch window"],
    mask: Bool[Array, "batch window"],
    loss_mask: Bool[Array, "batch window"],
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    inputs, targets = windows[:, :-1], windows[:, 1:]
    logits = jax.vmap(lambda ids: model(ids))(inputs)
    return cross_entropy(logits, targets, mask[:, 1:] & mask[:, :-1] & loss_mask[:, 1:])


def windows_covering(tokens: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``seq_len + 1`` tokens starting every ``seq_len``, so every token but the first is
    predicted exactly once; the last is padded and masked. Returns ``(windows, mask)``."""
    n = len(tokens)
    if n < 2:
        raise DataError(f"evaluation needs at least 2 tokens, got {n}")
    count = math.ceil((n - 1) / seq_len)
    windows = np.zeros((count, seq_len + 1), np.int32)
    mask = np.zeros((count, seq_len + 1), bool)
    for i in range(count):
        piece = np.asarray(tokens[i * seq_len : i * seq_len + seq_len + 1], np.int32)
        windows[i, : len(piece)] = piece
        mask[i, : len(piece)] = True
    return windows, mask


def evaluate_tokens(
    model,
    tokens: np.ndarray,
    *,
    num_bytes: int,
    seq_len: int,
    batch_size: int = 8,
    max_batches: int | None = None,
    place: Callable[[np.ndarray], jax.Array] = jnp.asarray,
    loss_mask: np.ndarray | None = None,
) -> EvalResult:
    """Loss over ``tokens`` (every token predicted once, or the first ``max_batches`` batches of
    windows), with BPB scaled to the ``num_bytes`` of text the scored targets encode. ``loss_mask``
    (same length as ``tokens``, 0 on prompt tokens) restricts the loss to the targets where it is 1,
    and ``num_bytes`` is then the bytes of those targets alone (the completions); when the evaluated
    windows score no target at all, loss, perplexity and bits per byte are NaN.

    Raises :class:`InputError` for a ``seq_len`` or ``batch_size`` below 1, and
    :class:`NonFiniteError` when the loss is NaN or infinite (non-finite weights, or logits that
    overflow the compute dtype), naming the first batch where it happened."""
    for name, value in (("seq_len", seq_len), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise InputError(f"{name} must be an integer >= 1, got {value!r}")
    windows, mask = windows_covering(tokens, seq_len)
    scored = mask if loss_mask is None else windows_covering(loss_mask, seq_len)[0].astype(bool)
    total, count = 0.0, 0.0
    batches: Iterable[int] = range(0, len(windows), batch_size)
    for b, start in enumerate(batches):
        if max_batches is not None and b >= max_batches:
            break
        w, m, s = (a[start : start + batch_size] for a in (windows, mask, scored))
        if len(w) < batch_size:  # pad the last batch so that one program serves every batch
            pad = batch_size - len(w)
            w = np.concatenate([w, np.zeros((pad, w.shape[1]), w.dtype)])
            m = np.concatenate([m, np.zeros((pad, m.shape[1]), bool)])
            s = np.concatenate([s, np.zeros((pad, s.shape[1]), bool)])
        nll, n = _window_nll(model, place(w), place(m), place(s))
        if not math.isfinite(float(nll)):
            raise NonFiniteError(
                f"the evaluation loss is {float(nll)} on batch {b} (windows {start} to {start + len(w) - 1} of "
                f"{seq_len} tokens): the model's weights hold NaN or inf, or its logits overflow; "
                "check the checkpoint (eqxllm.checkpoints.from_pretrained reports non-finite weights)"
            )
        total += float(nll)
        count += float(n)
    # no scored token (every target a prompt token): the loss is undefined, not a perfect 0
    loss = total / count if count else math.nan
    # scale the bits of the evaluated targets to the bytes they stand for: num_bytes is the text of
    # every target the stream scores (all but the first token, or the masked-in ones)
    targets = len(tokens) - 1 if loss_mask is None else int(np.count_nonzero(np.asarray(loss_mask)[1:]))
    evaluated_bytes = num_bytes * count / max(targets, 1)
    bpb = total / math.log(2) / max(evaluated_bytes, 1.0) if count else math.nan
    return EvalResult(
        loss=loss,
        perplexity=math.exp(min(loss, 700.0)),
        bits_per_byte=bpb,
        tokens=int(count),
        bytes=int(round(evaluated_bytes)),
    )
