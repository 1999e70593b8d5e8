"""Input checks shared by every family, run at trace time (shapes) and at run time (token values)."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Shaped

from eqxllm.errors import InputError


def check_tokens(input_ids: Shaped[Array, "..."], vocab_size: int, max_len: int | None, limit_name: str):
    """Raise :class:`InputError` for ids that are not one sequence of integers (typed ``...`` so that
    wrong shapes and dtypes reach this message, which says to ``vmap``), an empty or over-long sequence (at trace time), and an
    ``EqxRuntimeError`` naming the vocabulary size for ids outside ``[0, vocab_size)`` (at run time,
    also under ``jit``; set ``EQX_ON_ERROR=nan`` to turn the check off)."""
    if input_ids.ndim != 1:
        raise InputError(
            f"expected one sequence of token ids of shape [seq], got shape {tuple(input_ids.shape)}; models take "
            "one sequence: for a batch, wrap the call in jax.vmap (e.g. jax.vmap(model)(ids))"
        )
    if not jnp.issubdtype(input_ids.dtype, jnp.integer):
        raise InputError(
            f"token ids must be integers, got dtype {input_ids.dtype}; convert them with .astype(jnp.int32)"
        )
    seq = input_ids.shape[0]
    if seq == 0:
        raise InputError("got an empty sequence of token ids; pass at least one token")
    if max_len is not None and seq > max_len:
        raise InputError(
            f"sequence of {seq} tokens is longer than {limit_name}={max_len}; truncate it or use a model "
            "with a longer context"
        )
    bad = (input_ids < 0) | (input_ids >= vocab_size)
    try:  # eager (concrete ids): a plain InputError, not a runtime callback error
        eager_bad = bool(jnp.any(bad))
    except jax.errors.ConcretizationTypeError:  # traced (jit, vmap): checked at run time below
        eager_bad = False
    if eager_bad:
        first = int(jnp.asarray(input_ids)[jnp.argmax(bad)])
        raise InputError(f"token ids must be in [0, {vocab_size}) (the vocabulary size); got {first}")
    return eqx.error_if(
        input_ids, jnp.any(bad), f"token ids must be in [0, {vocab_size}) (the vocabulary size); got one outside"
    )
