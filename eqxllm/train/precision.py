"""Mixed precision: float32 master parameters, a lower-precision copy for the forward and backward pass.

The training step keeps the model in float32 and calls the loss on ``cast_floating(model, compute_dtype)``
inside the differentiated function, so the cast is part of the graph and gradients arrive in float32
(the cotangent of ``astype`` casts back). The layers already run norms and softmax in float32 and the
loss computes its log-softmax in float32 (Micikevicius et al., 2018, "Mixed Precision Training").
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike
from jaxtyping import PyTree

from eqxllm.errors import ConfigError

DTYPES = {
    "float32": jnp.float32,
    "fp32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "bf16": jnp.bfloat16,
    "float16": jnp.float16,
    "fp16": jnp.float16,
}


def resolve_dtype(name: DTypeLike | None) -> jnp.dtype | None:
    """``"bfloat16"`` / ``"bf16"`` / ``jnp.bfloat16`` -> ``dtype('bfloat16')``; ``None`` stays ``None``."""
    if name is None:
        return None
    if isinstance(name, str):
        if name not in DTYPES:
            raise ConfigError(f"unknown compute dtype {name!r}; expected one of {sorted(DTYPES)}")
        return jnp.dtype(DTYPES[name])
    dtype = jnp.dtype(name)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ConfigError(f"compute dtype must be a floating type, got {dtype}")
    return dtype


def cast_floating(tree: PyTree, dtype: DTypeLike | None) -> PyTree:
    """Cast every floating-point array leaf of ``tree`` to ``dtype``; integer arrays, keys and
    non-array leaves are left alone. ``dtype=None`` returns ``tree`` unchanged."""
    if dtype is None:
        return tree

    def cast(x):
        if eqx.is_array(x) and jnp.issubdtype(x.dtype, jnp.floating):
            return x.astype(dtype)
        return x

    return jax.tree.map(cast, tree)
