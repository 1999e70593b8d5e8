"""The output projection and the cross-entropy in one pass, a chunk of positions at a time.

``linear_cross_entropy(hidden, weight, targets, mask)`` equals ``cross_entropy(hidden @ weight.T,
targets, mask)`` (:mod:`eqxllm.nn.cross_entropy`) without ever holding the whole ``[batch, seq,
vocab]`` float32 logits: positions are scanned in chunks, and each chunk's logits live only inside
its step. Its gradient is computed in that same pass (the loss is the end of the program, so the
logits' cotangent is ``softmax - onehot`` up to the incoming scalar), as in the fused "linear
cross-entropy" kernels of Liger (Hsu et al., 2024) and Cut Your Losses (Wijmans et al., 2024):
no logits are saved for the backward pass and none are recomputed. The weight's gradient is skipped
when the weight is not differentiated (a frozen head under LoRA).

Each chunk's matmuls are two-dimensional ``[batch * chunk, embed] x [embed, vocab]`` products, the
form XLA:CPU runs fastest (a per-example vmapped head gives it three-dimensional ones whose weight
gradient needs a transposed copy of the logits).
"""

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

_DEFAULT_CHUNK_TOKENS = 1024


def linear_cross_entropy(
    hidden: Float[Array, "batch seq embed"],
    weight: Float[Array, "vocab embed"],
    targets: Int[Array, "batch seq"],
    mask: Bool[Array, "batch seq"] | None = None,
    *,
    softcap: float | None = None,
    chunk_tokens: int = _DEFAULT_CHUNK_TOKENS,
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Summed negative log-likelihood of ``targets`` under ``logits = hidden @ weight.T`` (optionally
    soft-capped, ``softcap * tanh(logits / softcap)`` as Gemma 2's final layer), over unmasked
    positions, and their count; both float32, as :func:`eqxllm.nn.cross_entropy.cross_entropy`.

    The logits are computed in ``hidden``'s dtype and taken to float32 for the softmax, as the
    unfused path does. ``chunk_tokens`` bounds the positions (``batch x chunk``) whose logits are live
    at once; the sequence is split into the largest number of equal chunks that keeps under it.
    """
    if mask is None:
        mask = jnp.ones(targets.shape, bool)
    targets = jnp.where(mask, targets, 0)  # masked targets may be padding ids: read a valid row
    chunks = _num_chunks(hidden.shape[0], hidden.shape[1], chunk_tokens)
    total: Array = _fused(hidden, weight.astype(hidden.dtype), targets, mask, chunks, softcap)
    return total, jnp.sum(mask, dtype=jnp.float32)


def _num_chunks(batch: int, seq: int, chunk_tokens: int) -> int:
    """The fewest chunks dividing ``seq`` with at most ``chunk_tokens`` positions each (``seq`` when
    even one position per example is over)."""
    for n in range(1, seq + 1):
        if seq % n == 0 and batch * (seq // n) <= chunk_tokens:
            return n
    return seq


def _split(x: Array, chunks: int) -> Array:
    """``[batch, seq, ...] -> [chunks, batch * seq / chunks, ...]``, chunks along the sequence."""
    b, s = x.shape[:2]
    x = x.reshape(b, chunks, s // chunks, *x.shape[2:])
    return jnp.moveaxis(x, 1, 0).reshape(chunks, b * (s // chunks), *x.shape[3:])


def _unsplit(x: Array, batch: int) -> Array:
    """The inverse of :func:`_split`."""
    chunks, rows = x.shape[:2]
    x = x.reshape(chunks, batch, rows // batch, *x.shape[2:])
    return jnp.moveaxis(x, 0, 1).reshape(batch, chunks * (rows // batch), *x.shape[3:])


def _chunk_logits(h, w, softcap):
    logits = (h @ w.T).astype(jnp.float32)
    return logits if softcap is None else softcap * jnp.tanh(logits / softcap)


def _chunk_loss(h, w, t, m, softcap):
    """One chunk's logits, their log-sum-exp, the one-hot targets and its summed loss."""
    logits = _chunk_logits(h, w, softcap)
    lse = jax.nn.logsumexp(logits, axis=-1)
    onehot = t[:, None] == jnp.arange(w.shape[0])
    picked = jnp.sum(jnp.where(onehot, logits, 0.0), axis=-1)
    return logits, lse, onehot, jnp.sum(jnp.where(m, lse - picked, 0.0))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _fused(hidden, weight, targets, mask, chunks, softcap):
    def step(total, xs):
        h, t, m = xs
        return total + _chunk_loss(h, weight, t, m, softcap)[3], None

    xs = (_split(hidden, chunks), _split(targets, chunks), _split(mask, chunks))
    total, _ = jax.lax.scan(step, jnp.zeros((), jnp.float32), xs)
    return total


def _fused_fwd(hidden, weight, targets, mask, chunks, softcap):
    want_weight = weight.perturbed
    hidden, weight, targets, mask = hidden.value, weight.value, targets.value, mask.value

    def step(carry, xs):
        total, dweight = carry
        h, t, m = xs
        logits, lse, onehot, loss = _chunk_loss(h, weight, t, m, softcap)
        dlogits = jnp.exp(logits - lse[:, None]) - onehot
        if softcap is not None:  # d/dz [c tanh(z / c)] = 1 - tanh^2 = 1 - (capped / c)^2
            dlogits = dlogits * (1.0 - jnp.square(logits / softcap))
        dlogits = jnp.where(m[:, None], dlogits, 0.0).astype(h.dtype)
        if want_weight:
            dweight = dweight + (dlogits.T @ h).astype(jnp.float32)
        return (total + loss, dweight), dlogits @ weight

    dweight0 = jnp.zeros(weight.shape if want_weight else (), jnp.float32)
    xs = (_split(hidden, chunks), _split(targets, chunks), _split(mask, chunks))
    (total, dweight), dhidden = jax.lax.scan(step, (jnp.zeros((), jnp.float32), dweight0), xs)
    dweight = dweight.astype(weight.dtype) if want_weight else None
    return total, (_unsplit(dhidden, hidden.shape[0]), dweight)


def _fused_bwd(chunks, softcap, residuals, g):
    dhidden, dweight = residuals
    dweight = None if dweight is None else (g * dweight).astype(dweight.dtype)
    return (g * dhidden).astype(dhidden.dtype), dweight, None, None


_fused.defvjp(_fused_fwd, _fused_bwd, symbolic_zeros=True)
