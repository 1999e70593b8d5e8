"""Boolean attention masks (``True`` = may attend), built from slot indices so the same code serves
full sequences, padded batches and KV caches."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Int


def attention_mask(
    q_slots: Int[Array, " seq"],
    kv_valid: Bool[Array, " kv_seq"],
    *,
    causal: bool,
    window: Int[Array, ""] | int | None = None,
) -> Bool[Array, "seq kv_seq"]:
    """Which key slots each query may see.

    ``q_slots[i]`` is query ``i``'s slot index in the key axis (``arange(seq)`` without a cache,
    ``cache_index + arange(seq)`` with one); ``kv_valid`` marks real (non-padding, already written)
    keys. ``causal`` keeps keys at or before the query; ``window`` (sliding-window attention,
    Beltagy et al., 2020; Gemma 2/3) further keeps only the last ``window`` keys, i.e.
    ``q - k < window``. ``window`` may be a traced scalar so scanned layers can differ.
    """
    k_slots = jnp.arange(kv_valid.shape[0])
    mask = jnp.broadcast_to(kv_valid[None, :], (q_slots.shape[0], kv_valid.shape[0]))
    if causal:
        mask = mask & (k_slots[None, :] <= q_slots[:, None])
    if window is not None:
        mask = mask & (q_slots[:, None] - k_slots[None, :] < window)
    return mask


class CausalMask(eqx.Module):
    """The mask of a pass over one whole sequence of real tokens without a cache, where the keys are the
    queries' own slots: key ``k`` is visible to query ``q`` iff ``k <= q`` (and ``q - k < window`` with a
    sliding ``window``), nothing else.

    ``dense`` is that mask as an array, for the plain attention path. Kernels that take the structure
    itself use ``window`` instead: cuDNN flash attention's causal mode skips the blocks above the
    diagonal and reads no mask, where a dense mask would become an added ``[seq, kv_seq]`` bias.

    In a stack that mixes sliding and global layers, ``windowed`` is the scanned layer's flag: the
    window applies only where it is true (and ``dense`` is that layer's mask).
    """

    dense: Bool[Array, "seq kv_seq"]
    window: int | None = eqx.field(static=True, default=None)
    windowed: Bool[Array, ""] | None = None

    @staticmethod
    def pick(flag: Bool[Array, ""], local: "CausalMask", full: "CausalMask") -> "CausalMask":
        """``local`` (a sliding layer's) where ``flag`` is true, ``full`` (a global layer's) elsewhere."""
        return CausalMask(jnp.where(flag, local.dense, full.dense), local.window, flag)


# what attention layers take: any boolean mask, or a causal one whose structure is known
Mask = Bool[Array, "seq kv_seq"] | CausalMask
