"""An exact fingerprint of a model's weights that does not depend on how they are sharded.

Each array's bit patterns are read as unsigned integers and reduced with wrapping ``uint32``
arithmetic, which is associative and commutative: the result is the same bit for bit whatever the
mesh, the number of processes or the order XLA reduces in, unlike a floating-point sum. Two sums per
array (of the words, and of each word times an odd weight drawn from its flat index) tell apart
arrays that differ in any one element, and arrays holding the same values in another order.

A LoRA run's checkpoints leave out the frozen base (:mod:`eqxllm.train.checkpoint`): a resumed run
rebuilds it from ``--init-from`` (or the seed) and compares fingerprints, so a base that changed in
between (a Hub id whose revision moved, a directory written over) is refused rather than trained on.
"""

import hashlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree, UInt32


def _words(x: Array) -> UInt32[Array, "..."]:
    """``x``'s bit patterns as ``uint32`` words, one per element (two for a 64-bit element)."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    size = x.dtype.itemsize
    if size == 8:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)  # a trailing axis of two words
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[size]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _flat_index(shape: tuple[int, ...]) -> UInt32[Array, "..."]:
    """Each element's row-major index, modulo 2**32 (built from iotas, so a sharded array is not reshaped)."""
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride % 2**32)
        stride *= shape[axis]
    return index


@eqx.filter_jit
def _sums(arrays: list[Array]) -> list[UInt32[Array, "2"]]:
    out = []
    for x in arrays:
        w = _words(x)
        weight = _flat_index(w.shape) * jnp.uint32(2654435761) + jnp.uint32(1)  # odd: no word is erased
        out.append(jnp.stack([jnp.sum(w, dtype=jnp.uint32), jnp.sum(w * weight, dtype=jnp.uint32)]))
    return out


def weights_fingerprint(tree: PyTree) -> str:
    """A hex digest of every array leaf of ``tree``: its shape, dtype and contents, in tree order.

    Equal for equal weights however they are placed (one device, a mesh, several processes); any
    changed element, dtype, shape or number of arrays changes it. The arrays are read on their devices
    (one compiled pass); only two words per array reach the host."""
    arrays = [x for x in jax.tree.leaves(tree) if eqx.is_array(x)]
    digest = hashlib.sha256()
    for x, sums in zip(arrays, jax.device_get(_sums(arrays)) if arrays else []):
        digest.update(f"{x.dtype}{tuple(x.shape)}".encode())
        digest.update(np.asarray(sums, dtype=np.uint32).tobytes())
    return digest.hexdigest()
