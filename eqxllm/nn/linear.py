"""A linear map over the last axis, with PyTorch's ``(out, in)`` weight layout."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


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
        y = x @ self.weight.T.astype(x.dtype)
        if self.bias is not None:
            y = y + self.bias.astype(x.dtype)
        return y
