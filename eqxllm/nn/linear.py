"""A linear map over the last axis, with PyTorch's ``(out, in)`` weight layout."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array, Float, PRNGKeyArray

from eqxllm.nn.materialize import identity_gather


def _plain(x: Array, weight: Array) -> Array:
    return x @ weight.T


@custom_vmap
def _one_row(x: Float[Array, "1 in"], weight: Float[Array, "out in"]) -> Float[Array, "1 out"]:
    return _plain(x, weight)


@_one_row.def_vmap
def _rows(axis_size: int, in_batched: list[bool], x: Array, weight: Array) -> tuple[Array, bool]:
    # A batch of decoding steps: ``batch`` rows against one weight. XLA:CPU's library kernel packs the
    # right-hand operand of a product on every call; with the rows on the right (the weight as the
    # streamed left operand, ``weight @ rows^T``), it packs the few rows instead of the whole weight.
    x_batched, weight_batched = in_batched
    if x_batched and not weight_batched and axis_size > 1:
        rows = x.reshape(axis_size, x.shape[-1])
        # the product's own buffer: XLA would otherwise fold the transpose below into the product and
        # put the rows back on the left
        out = identity_gather(jax.lax.dot_general(weight, rows, (((1,), (1,)), ((), ()))))  # [out, batch]
        return out.T.reshape(axis_size, 1, weight.shape[0]), True
    if not (x_batched or weight_batched):
        return _plain(x, weight), False
    in_axes = (0 if x_batched else None, 0 if weight_batched else None)
    return jax.vmap(_plain, in_axes=in_axes)(x, weight), True


@jax.custom_jvp
def project(x: Float[Array, "*batch in"], weight: Float[Array, "out in"]) -> Float[Array, "*batch out"]:
    """``x @ weight^T``. A single row (a decoding step) goes through a product that, when ``jax.vmap``
    gives it many rows (a batch of sequences, one step each), runs as ``weight @ rows^T`` on the CPU:
    the same values up to float rounding. Differentiable as the plain product."""
    if math.prod(x.shape[:-1]) != 1 or jax.default_backend() != "cpu":
        return x @ weight.T
    return _one_row(x.reshape(1, x.shape[-1]), weight).reshape(*x.shape[:-1], weight.shape[0])


def _project_jvp(primals, tangents):
    (x, weight), (dx, dweight) = primals, tangents
    # with symbolic zeros, a frozen weight (LoRA's base) or a constant input costs no tangent product
    parts = [d @ w.T for d, w, zero in ((dx, weight, dx), (x, dweight, dweight)) if not isinstance(zero, SymbolicZero)]
    y = project(x, weight)
    return y, sum(parts[1:], parts[0]) if parts else jnp.zeros_like(y)


project.defjvp(_project_jvp, symbolic_zeros=True)


class Linear(eqx.Module):
    """``y = x W^T + b`` over the last axis of ``x``.

    Unlike ``eqx.nn.Linear`` this accepts any leading axes (``[seq, in] -> [seq, out]``), which keeps
    model code free of ``vmap`` over positions. The weight is ``[out, in]`` as in ``torch.nn.Linear``
    (GPT-2's Conv1D stores ``[in, out]``; the checkpoint key map transposes it).
    Initialisation: normal with standard deviation ``init_std`` (GPT-2 and T5 style), zero bias.
    """

    weight: Float[Array, "out in"]
    bias: Float[Array, " out"] | None

    def __init__(
        self, in_features: int, out_features: int, *, use_bias: bool, init_std: float = 0.02, key: PRNGKeyArray
    ):
        self.weight = init_std * jax.random.normal(key, (out_features, in_features), jnp.float32)
        self.bias = jnp.zeros((out_features,), jnp.float32) if use_bias else None

    def __call__(self, x: Float[Array, "*batch in"]) -> Float[Array, "*batch out"]:
        y = project(x, self.weight.astype(x.dtype))
        if self.bias is not None:
            y = y + self.bias.astype(x.dtype)
        return y
