"""N identical blocks stored as one stacked module and run with ``jax.lax.scan``.

Compile time and program size stay flat as depth grows (MaxText, Levanter do the same); an optional
rematerialisation policy trades compute for activation memory in training.
"""

import copy
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

Block = TypeVar("Block", bound=eqx.Module)

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    # keep matmul outputs that carry no batch dimension: the usual transformer trade-off
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Stack(eqx.Module, Generic[Block]):
    """``num_layers`` copies of a block, built with ``eqx.filter_vmap`` so every array leaf gains a
    leading ``layers`` axis.

    ``stack(body, carry, xs)`` scans ``body(block, carry, x) -> (carry, y)`` over the layers, where ``xs``
    is a pytree of per-layer inputs (a cache slice, a dropout key, a per-layer window) with a leading
    ``layers`` axis, or None. Returns ``(carry, ys)``.
    """

    blocks: Block
    num_layers: int = eqx.field(static=True)
    remat: str = eqx.field(static=True)

    def __init__(
        self,
        make_block: Callable[[PRNGKeyArray], Block],
        num_layers: int,
        *,
        key: PRNGKeyArray,
        remat: str = "none",
    ):
        if remat not in REMAT_POLICIES:
            raise ValueError(f"unknown remat policy {remat!r}; expected one of {sorted(REMAT_POLICIES)}")
        self.blocks = eqx.filter_vmap(make_block)(jax.random.split(key, num_layers))
        self.num_layers = num_layers
        self.remat = remat

    def __call__(self, body: Callable[[Block, Any, Any], tuple[Any, Any]], carry: Any, xs: Any = None):
        dynamic, static = eqx.partition(self.blocks, eqx.is_array)

        def step(carry, inputs):
            params, x = inputs
            return body(eqx.combine(params, static), carry, x)

        if self.remat != "none":
            # prevent_cse=False: scan already keeps the recomputation apart, and the extra
            # optimisation barriers would only slow the step (the JAX docs and MaxText do the same)
            step = jax.checkpoint(step, policy=REMAT_POLICIES[self.remat], prevent_cse=False)
        return jax.lax.scan(step, carry, (dynamic, xs))

    def scan_periods(self, body: Callable[[Block, Any, int, Any], tuple[Any, Any]], carry: Any, period: int):
        """Run ``body(block, carry, p, g) -> (carry, y)`` over the layers ``period`` at a time, for stacks
        whose layers follow a repeating pattern that the body must know statically (e.g. which cache a
        layer reads, :mod:`eqxllm.nn.ring_cache`): a scan over the ``num_layers // period`` whole periods
        (``g``: the period's index, traced), each running its layers in turn with their place ``p`` in
        the period a Python int, then the ``num_layers % period`` layers left, unrolled (``g`` an int).
        Returns ``(carry, ys)`` with the ``y`` stacked in layer order. Meant for inference: the remat
        policy is not applied."""
        dynamic, static = eqx.partition(self.blocks, eqx.is_array)

        def run(carry, g, count: int):
            ys = []
            for p in range(count):  # the layer's weights are read in place: no stacked copy is sliced out
                i = g * period + p
                block = eqx.combine(jax.tree.map(lambda w, i=i: w[i], dynamic), static)
                carry, y = body(block, carry, p, g)
                ys.append(y)
            return carry, ys

        def whole(carry, g):
            carry, ys = run(carry, g, period)
            return carry, jax.tree.map(lambda *y: jnp.stack(y), *ys)

        groups, rest = divmod(self.num_layers, period)
        carry, ys = jax.lax.scan(whole, carry, jnp.arange(groups))
        ys = jax.tree.map(lambda y: y.reshape(groups * period, *y.shape[2:]), ys)
        carry, tail = run(carry, groups, rest)
        if tail:
            ys = jax.tree.map(lambda y, *t: jnp.concatenate([y, jnp.stack(t)]), ys, *tail)
        return carry, ys

    def with_remat(self, remat: str) -> "Stack[Block]":
        """The same weights with another rematerialisation policy."""
        if remat not in REMAT_POLICIES:
            raise ValueError(f"unknown remat policy {remat!r}; expected one of {sorted(REMAT_POLICIES)}")
        # static fields are not pytree leaves, so eqx.tree_at cannot reach them: copy and set
        new = copy.copy(self)
        object.__setattr__(new, "remat", remat)
        return new
