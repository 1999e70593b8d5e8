"""A sparse mixture of gated experts with top-k routing, and the Switch auxiliary load-balancing loss."""

import functools
import math
from typing import Literal, cast

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from eqxllm.errors import ConfigError
from eqxllm.nn.activations import activation as get_activation
from eqxllm.nn.linear import Linear

Dispatch = Literal["grouped", "dense"]
DISPATCHES = ("grouped", "dense")


class MoE(eqx.Module):
    """Sparse mixture of SwiGLU experts (Shazeer et al., 2017; Fedus et al., 2021; Jiang et al., 2024).

    Each token's router logits ``router(x)`` go through a float32 softmax over all experts; the
    ``top_k`` largest probabilities pick the experts (``jax.lax.top_k``: among equal probabilities
    the lower expert index wins), and with ``normalize_top_k`` (Mixtral; Qwen-MoE's
    ``norm_topk_prob=True``) the k weights are rescaled to sum to 1. The weights are cast to the
    activation dtype and the output is ``sum_k w_k down_e(act(x gate_e) * (x up_e))``. No token is
    ever dropped: there is no capacity limit.

    Expert weights are stacked and stored input-major, ``gate``/``up`` ``[experts, embed, mlp]`` and
    ``down`` ``[experts, mlp, embed]``, so that ``x @ w[e]`` needs no transpose (Hugging Face stores
    each expert's ``[out, in]``; the checkpoint key map transposes).

    ``dispatch="dense"`` runs every expert on every token and weights the outputs by the zero-padded
    routing weights: the simple reference, costing ``experts`` expert passes per token.
    ``dispatch="grouped"`` sorts the ``(token, expert)`` assignments by expert, pads each expert's group
    to a multiple of a block of rows, and runs the blocks one after another (``jax.lax.scan``), each
    with its expert's weights (block-sparse, as MegaBlocks, Gale et al., 2023, without its custom
    kernels): it costs about ``top_k`` expert passes per token, plus at most one padded block per
    expert and one read of each used expert's weights, and equals the dense result up to rounding.
    (``jax.lax.ragged_dot`` would express the same grouping, but on CPU it computes every group for
    every row, as dense dispatch does.) Under ``jax.vmap`` (forward and backward) the grouped
    dispatch folds the batch into the tokens, so a batch is dispatched at once and each expert's
    weights are read once per call rather than once per example. Its gradient is a custom VJP
    (reverse mode only: use ``"dense"`` for ``jax.jvp`` or higher derivatives) whose batched form
    adds the expert weights' gradients over the mapped axis: right for the gradient of a batch's loss
    (``grad`` of a function that ``vmap``s the model, as training does), but wrong for per-example
    gradients of the expert weights (``vmap`` of ``grad``, ``jax.jacrev``), where each example would
    get the batch's sum. JAX gives a batching rule no way to tell the two apart, and keeping
    per-example weight gradients in training would cost ``batch`` copies of the experts; so use
    ``"dense"`` for per-example expert gradients (``eqxllm.reconfigure(model, moe_dispatch="dense")``
    on a Mixtral). Gradients of the inputs and of the router are exact either way.

    Shapes: ``x [seq, embed] -> ([seq, embed], router logits [seq, experts] in float32)``; the logits
    feed :func:`load_balancing_loss`.
    """

    router: Linear
    gate: Float[Array, "experts embed mlp"]
    up: Float[Array, "experts embed mlp"]
    down: Float[Array, "experts mlp embed"]
    num_experts: int = eqx.field(static=True)
    top_k: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    normalize_top_k: bool = eqx.field(static=True)
    dispatch: Dispatch = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        hidden: int,
        *,
        num_experts: int,
        top_k: int,
        activation: str = "silu",
        normalize_top_k: bool = True,
        dispatch: Dispatch = "grouped",
        init_std: float = 0.02,
        key: PRNGKeyArray,
    ):
        if num_experts < 1:
            raise ConfigError(f"num_experts must be at least 1, got {num_experts}")
        if not 1 <= top_k <= num_experts:
            raise ConfigError(
                f"top_k must be between 1 and num_experts={num_experts}, got {top_k}; "
                "each token is routed to top_k distinct experts"
            )
        if dispatch not in DISPATCHES:
            raise ConfigError(f"unknown dispatch {dispatch!r}; expected one of {list(DISPATCHES)}")
        get_activation(activation)  # validate the name now, not at the first call
        router_key, gate_key, up_key, down_key = jax.random.split(key, 4)
        self.router = Linear(dim, num_experts, use_bias=False, init_std=init_std, key=router_key)
        self.gate = init_std * jax.random.normal(gate_key, (num_experts, dim, hidden), jnp.float32)
        self.up = init_std * jax.random.normal(up_key, (num_experts, dim, hidden), jnp.float32)
        self.down = init_std * jax.random.normal(down_key, (num_experts, hidden, dim), jnp.float32)
        self.num_experts = num_experts
        self.top_k = top_k
        self.activation = activation
        self.normalize_top_k = normalize_top_k
        self.dispatch = dispatch

    def route(
        self, x: Float[Array, "*batch seq embed"]
    ) -> tuple[Int[Array, "*batch seq top_k"], Float[Array, "*batch seq top_k"], Float[Array, "*batch seq experts"]]:
        """The chosen experts (most probable first), their weights (activation dtype) and the float32
        router logits."""
        # the logits in the activation dtype, then a float32 softmax, as the Hugging Face routers do
        logits = self.router(x).astype(jnp.float32)
        probs = jax.nn.softmax(logits, axis=-1)
        weights, experts = jax.lax.top_k(probs, self.top_k)
        if self.normalize_top_k:
            weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
        return experts, weights.astype(x.dtype), logits

    def __call__(
        self, x: Float[Array, "*batch seq embed"]
    ) -> tuple[Float[Array, "*batch seq embed"], Float[Array, "*batch seq experts"]]:
        """Routes every token of ``x`` and sums its experts' outputs. Returns the output and the router logits.

        Routing is per token, so leading axes are allowed: a whole batch dispatched at once shares
        the grouped blocks (and the gathered expert weights) that ``jax.vmap`` would repeat per example.
        """
        experts, weights, logits = self.route(x)
        params = (self.gate.astype(x.dtype), self.up.astype(x.dtype), self.down.astype(x.dtype))
        run = _dense_experts if self.dispatch == "dense" else _grouped_dispatch
        tokens = x.reshape(-1, x.shape[-1])
        y = run(
            tokens,
            experts.reshape(-1, self.top_k),
            weights.reshape(-1, self.top_k),
            *params,
            activation=self.activation,
        )
        return y.reshape(x.shape), logits


def _expert_mlp(x, gate, up, down, activation: str):
    """``down(act(x gate) * (x up))`` for stacked experts: ``x [n, rows, embed]`` with weights ``[n, ...]``."""
    act = get_activation(activation)
    hidden = act(jnp.einsum("nrd,ndh->nrh", x, gate)) * jnp.einsum("nrd,ndh->nrh", x, up)
    return jnp.einsum("nrh,nhd->nrd", hidden, down)


def _dense_experts(
    x: Float[Array, "seq embed"],
    experts: Int[Array, "seq top_k"],
    weights: Float[Array, "seq top_k"],
    gate: Float[Array, "experts embed mlp"],
    up: Float[Array, "experts embed mlp"],
    down: Float[Array, "experts mlp embed"],
    *,
    activation: str,
) -> Float[Array, "seq embed"]:
    """Every expert on every token, combined with the zero-padded routing weights."""
    num_experts = gate.shape[0]
    # [seq, top_k, experts] one-hot rows summed: a token's weight for each expert, zero if not chosen
    combine = jnp.einsum("sk,ske->se", weights, jax.nn.one_hot(experts, num_experts, dtype=weights.dtype))
    outputs = _expert_mlp(jnp.broadcast_to(x, (num_experts, *x.shape)), gate, up, down, activation)
    return jnp.einsum("se,esd->sd", combine, outputs)


def _block_size(assignments: int, num_experts: int) -> int:
    """Rows per block, a power of two in [8, 128].

    Fewer, larger blocks load fewer weight matrices but pad more rows (up to a block per expert):
    the total is smallest near ``sqrt(c * assignments / experts)`` rows, where ``c`` is the cost of
    loading one expert's weights in rows of matmul; ``c = 32`` suits CPUs.
    """
    target = math.sqrt(32 * assignments / num_experts)
    return min(128, max(8, 1 << round(math.log2(max(target, 1.0)))))


def _grouped_raw(
    x: Float[Array, "seq embed"],
    experts: Int[Array, "seq top_k"],
    weights: Float[Array, "seq top_k"],
    gate: Float[Array, "experts embed mlp"],
    up: Float[Array, "experts embed mlp"],
    down: Float[Array, "experts mlp embed"],
    *,
    activation: str,
) -> Float[Array, "seq embed"]:
    """Block-sparse dispatch: assignments sorted by expert, each group padded to whole blocks, and a
    loop over the blocks, each multiplied by its expert's weights."""
    seq, top_k = experts.shape
    num_experts = gate.shape[0]
    assignments = seq * top_k
    block = _block_size(assignments, num_experts)
    # at most min(experts, assignments) groups are non-empty, each padded by fewer than `block` rows
    num_blocks = (assignments + min(num_experts, assignments) * (block - 1)) // block
    slots = num_blocks * block

    flat = experts.reshape(-1)  # assignment a = token * top_k + j
    order = jnp.argsort(flat, stable=True)  # assignments grouped by expert
    sorted_experts = flat[order]
    counts = jnp.bincount(flat, length=num_experts)
    starts = jnp.cumsum(counts) - counts
    padded = (counts + block - 1) // block * block
    padded_ends = jnp.cumsum(padded)
    padded_starts = padded_ends - padded
    # slot of each sorted assignment: its group's padded start plus its rank within the group
    rank = jnp.arange(assignments) - starts[sorted_experts]
    slot_of_sorted = padded_starts[sorted_experts] + rank
    slot_of_assignment = jnp.zeros(assignments, jnp.int32).at[order].set(slot_of_sorted.astype(jnp.int32))
    # padding slots read an extra zero row (index `seq`) and are never read back
    token_of_slot = jnp.full(slots, seq, jnp.int32).at[slot_of_sorted].set((order // top_k).astype(jnp.int32))
    # a block's expert: the group whose padded range holds its first slot (blocks past the end, which
    # hold only padding, take the last expert)
    block_expert = jnp.searchsorted(padded_ends, jnp.arange(num_blocks) * block, side="right")
    block_expert = jnp.minimum(block_expert, num_experts - 1)

    rows = jnp.concatenate([x, jnp.zeros((1, x.shape[1]), x.dtype)])[token_of_slot]
    act = get_activation(activation)

    def run_block(carry, inputs):
        block_rows, expert = inputs
        w_gate, w_up, w_down = (jax.lax.dynamic_index_in_dim(w, expert, keepdims=False) for w in (gate, up, down))
        hidden = act(block_rows @ w_gate) * (block_rows @ w_up)
        return carry, hidden @ w_down

    # A loop over blocks slices each block's expert weights where they lie; gathering them for one
    # batched matmul would copy [blocks, embed, mlp] three times over, and the copies dominate the
    # cost. Saving only the matmul outputs keeps the backward pass from stacking those slices too.
    run_block = jax.checkpoint(run_block, policy=jax.checkpoint_policies.dots_saveable)
    _, outputs = jax.lax.scan(run_block, None, (rows.reshape(num_blocks, block, -1), block_expert))
    outputs = outputs.reshape(slots, -1)
    return jnp.einsum("sk,skd->sd", weights, outputs[slot_of_assignment].reshape(seq, top_k, -1))


def _grouped_vjp_raw(x, experts, weights, cotangent, gate, up, down, activation: str):
    """Cotangents of ``x``, the routing weights and the expert weights (the forward recomputed)."""
    fn = functools.partial(_grouped_raw, experts=experts, activation=activation)
    _, vjp = jax.vjp(lambda x, w, g, u, d: fn(x, weights=w, gate=g, up=u, down=d), x, weights, gate, up, down)
    return vjp(cotangent)


@functools.cache
def _tokenwise(raw, activation: str, token_args: int, token_outputs: int):
    """``raw`` (token arguments first, then expert weights; token outputs first, then outputs summed over
    tokens) with a ``jax.vmap`` rule that folds the mapped axis into the tokens.

    Routing is per token, so a batch of examples is one longer sequence: dispatching it at once loads
    each expert's weights once per call instead of once per example, and shares the padded blocks.
    Mapped expert weights (a different MoE per example) fall back to the plain per-example map.
    """
    fn = custom_vmap(functools.partial(raw, activation=activation))

    @fn.def_vmap
    def rule(axis_size, in_batched, *args):
        if any(in_batched[token_args:]):
            outs = jax.vmap(functools.partial(raw, activation=activation), [0 if b else None for b in in_batched])(
                *args
            )
            return outs, jax.tree.map(lambda _: True, outs)
        tokens = [
            (a if batched else jnp.broadcast_to(a, (axis_size, *a.shape))).reshape(-1, *a.shape[1 + batched :])
            for a, batched in zip(args[:token_args], in_batched[:token_args], strict=True)
        ]
        seq = args[0].shape[1] if in_batched[0] else args[0].shape[0]
        outs = fn(*tokens, *args[token_args:])
        single = not isinstance(outs, tuple)
        outs = (outs,) if single else outs
        outs = tuple(o.reshape(axis_size, seq, *o.shape[1:]) for o in outs[:token_outputs]) + tuple(
            outs[token_outputs:]
        )
        batched = (True,) * token_outputs + (False,) * (len(outs) - token_outputs)
        return (outs[0], batched[0]) if single else (outs, batched)

    return fn


def _grouped_dispatch(
    x: Float[Array, "seq embed"],
    experts: Int[Array, "seq top_k"],
    weights: Float[Array, "seq top_k"],
    gate: Float[Array, "experts embed mlp"],
    up: Float[Array, "experts embed mlp"],
    down: Float[Array, "experts mlp embed"],
    *,
    activation: str,
) -> Float[Array, "seq embed"]:
    return cast(Array, _grouped_experts(x, experts, weights, gate, up, down, activation))


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _grouped_experts(x, experts, weights, gate, up, down, activation: str):
    """:func:`_grouped_raw` whose ``jax.vmap`` (forward and backward) dispatches the whole batch at once."""
    return _tokenwise(_grouped_raw, activation, 3, 1)(x, experts, weights, gate, up, down)


def _grouped_experts_fwd(x, experts, weights, gate, up, down, activation: str):
    return _grouped_experts(x, experts, weights, gate, up, down, activation), (x, experts, weights, gate, up, down)


def _grouped_experts_bwd(activation: str, residuals, cotangent):
    x, experts, weights, gate, up, down = residuals
    dx, dweights, dgate, dup, ddown = _tokenwise(_grouped_vjp_raw, activation, 4, 2)(
        x, experts, weights, cotangent, gate, up, down
    )
    return dx, None, dweights, dgate, dup, ddown


_grouped_experts.defvjp(_grouped_experts_fwd, _grouped_experts_bwd)


def load_balancing_loss(
    router_logits: Float[Array, "*batch tokens experts"],
    top_k: int,
    mask: Bool[Array, "*#batch tokens"] | None = None,
) -> Float[Array, ""]:
    """The Switch Transformer auxiliary loss (Fedus et al., 2021, eqs. 4-6) as Hugging Face computes it
    for Mixtral and Qwen-MoE: ``experts * sum_e f_e P_e``.

    ``f_e`` is the fraction of top-k assignments that go to expert ``e`` counted per token (so the
    ``f_e`` sum to ``top_k``) and ``P_e`` the mean router probability of ``e``; both are pooled over
    every leading axis (for the decoder's ``[batch, layers, seq, experts]`` stack: batch, layers and
    positions together, not a per-layer loss averaged), which is what the reference does with its
    logits concatenated over layers. ``mask`` (True = a real token) must broadcast against the
    logits' leading axes: for the decoder's stack pass ``attention_mask[:, None, :]``. Padding tokens
    count towards neither ``f`` nor ``P``. Returns a float32 scalar; training adds
    ``router_aux_loss_coef * loss``.
    """
    num_experts = router_logits.shape[-1]
    probs = jax.nn.softmax(router_logits.astype(jnp.float32), axis=-1)
    _, chosen = jax.lax.top_k(probs, top_k)
    assigned = jnp.sum(jax.nn.one_hot(chosen, num_experts, dtype=jnp.float32), axis=-2)
    if mask is None:
        weight = jnp.ones(probs.shape[:-1], jnp.float32)
    else:
        weight = jnp.broadcast_to(mask, probs.shape[:-1]).astype(jnp.float32)
    axes = tuple(range(probs.ndim - 1))
    total = jnp.sum(weight)
    fraction = jnp.sum(assigned * weight[..., None], axis=axes) / total
    mean_prob = jnp.sum(probs * weight[..., None], axis=axes) / total
    return num_experts * jnp.sum(fraction * mean_prob)
