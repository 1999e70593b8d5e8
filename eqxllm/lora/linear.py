"""A linear map with a trainable low-rank update: LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of
Large Language Models").

``y = x W^T + b + scale * dropout(x) A^T B^T`` with the base ``W [out, in]`` and ``b`` frozen,
``A [rank, in]`` random and ``B [out, rank]`` zero at the start (so the model is unchanged until the
first update), and ``scale = alpha / rank``.

The fields keep :class:`eqxllm.nn.Linear`'s names (``weight``, ``bias``), so checkpoint key maps and
sharding rules that address ``...q_proj.weight`` still find the base weight. Inside a scanned
:class:`eqxllm.nn.Stack` every array carries the stack's leading ``layers`` axis, like the base.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Key, PRNGKeyArray

from eqxllm.nn.dropout import dropout
from eqxllm.nn.linear import Linear


class LoraLinear(eqx.Module):
    """A frozen :class:`eqxllm.nn.Linear` plus ``scale * B @ A``.

    ``dropout_key`` is None except inside a training step, which sets a fresh key per step
    (:func:`eqxllm.lora.with_dropout_keys`); dropout then applies to the adapter's input only, as in
    the paper's implementation and PEFT. Shapes: ``[*batch, in] -> [*batch, out]``.
    """

    weight: Float[Array, "*layers out in"]
    bias: Float[Array, "*layers out"] | None
    lora_a: Float[Array, "*layers rank in"]
    lora_b: Float[Array, "*layers out rank"]
    dropout_key: Key[Array, "*layers"] | None
    scale: float = eqx.field(static=True)
    dropout_rate: float = eqx.field(static=True)

    def __init__(
        self,
        weight: Float[Array, "*layers out in"],
        bias: Float[Array, "*layers out"] | None,
        lora_a: Float[Array, "*layers rank in"],
        lora_b: Float[Array, "*layers out rank"],
        *,
        scale: float,
        dropout_rate: float = 0.0,
    ):
        self.weight = weight
        self.bias = bias
        self.lora_a = lora_a
        self.lora_b = lora_b
        self.dropout_key = None
        self.scale = scale
        self.dropout_rate = dropout_rate

    @property
    def rank(self) -> int:
        return self.lora_a.shape[-2]

    def __call__(self, x: Float[Array, "*batch in"]) -> Float[Array, "*batch out"]:
        y = x @ self.weight.T.astype(x.dtype)
        if self.bias is not None:
            y = y + self.bias.astype(x.dtype)
        h = dropout(x, self.dropout_rate, self.dropout_key)
        # (h A^T) B^T: two thin matmuls, never the [out, in] product
        update = (h @ self.lora_a.T.astype(x.dtype)) @ self.lora_b.T.astype(x.dtype)
        return y + (self.scale * update).astype(x.dtype)

    def merged_weight(self) -> Float[Array, "*layers out in"]:
        """``W + scale * B @ A`` in float32, cast back to the base weight's dtype."""
        delta = jnp.matmul(self.lora_b.astype(jnp.float32), self.lora_a.astype(jnp.float32))
        return (self.weight.astype(jnp.float32) + self.scale * delta).astype(self.weight.dtype)


def lora_linear(base: Linear, *, rank: int, alpha: float, dropout_rate: float, key: PRNGKeyArray) -> LoraLinear:
    """Wrap ``base`` (a Linear, possibly stacked ``[*layers, out, in]``): ``A`` drawn like PyTorch's
    default ``nn.Linear`` init that PEFT uses (uniform with bound ``1/sqrt(in)``; Kaiming-uniform
    with ``a=sqrt(5)``), one independent draw per layer, and ``B`` zero."""
    *layers, out_features, in_features = base.weight.shape
    bound = 1.0 / in_features**0.5
    a = jax.random.uniform(key, (*layers, rank, in_features), jnp.float32, -bound, bound)
    b = jnp.zeros((*layers, out_features, rank), jnp.float32)
    return LoraLinear(base.weight, base.bias, a, b, scale=alpha / rank, dropout_rate=dropout_rate)


def plain_linear(lora: LoraLinear) -> Linear:
    """The merged :class:`eqxllm.nn.Linear` (same structure as the wrapped one, with ``W + scale B A``)."""
    skeleton = eqx.filter_eval_shape(Linear, 1, 1, use_bias=lora.bias is not None, key=jax.random.key(0))
    if lora.bias is None:
        return eqx.tree_at(lambda lin: lin.weight, skeleton, lora.merged_weight())
    return eqx.tree_at(lambda lin: (lin.weight, lin.bias), skeleton, (lora.merged_weight(), lora.bias))
