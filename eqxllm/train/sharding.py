"""Device meshes, partition rules keyed on pytree paths, and batch placement.

A mesh has three named axes (any of size 1):

- ``data``: pure data parallelism; parameters replicated.
- ``fsdp``: data parallelism with parameters and optimizer state sharded (ZeRO-3, Rajbhandari et
  al., 2020): each big weight is split along its largest dimension that divides evenly.
- ``tensor``: Megatron-style tensor parallelism (Shoeybi et al., 2019): attention heads (q/k/v
  output features, o_proj input features) and the MLP hidden width (up/gate output features, down
  input features) are split.
- ``expert`` (only in meshes that name it): expert parallelism (Lepikhin et al., 2020, GShard): the
  stacked weights of :class:`eqxllm.nn.MoE` (``gate``/``up`` ``[experts, embed, mlp]``, ``down``
  ``[experts, mlp, embed]``) split their ``experts`` axis, and their ``mlp`` width over ``tensor``
  like a dense MLP's. The batch is split over ``expert`` too, so that the layers outside the experts
  stay data parallel; XLA inserts the exchanges of tokens or weights between expert shards.

The batch is split over ``("data", "fsdp")`` (and ``expert`` when the mesh has it). Rules are ``(regex, per_layer_spec)`` pairs matched with
``re.search`` against ``jax.tree_util.keystr`` of each leaf's path (first match wins; leaves matching
none get no tensor sharding). ``per_layer_spec`` names a mesh axis (or None) for the leading dims of
one layer's array, e.g. ``("tensor",)`` for a ``[out, in]`` weight and its ``[out]`` bias. Leaves inside
an :class:`eqxllm.nn.Stack` carry a leading ``layers`` axis that is never sharded; it is found from the
pytree's structure, so the same rules serve the Adam moments, which mirror the parameters.
Any dimension that an axis does not divide stays replicated.
"""

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import AbstractMesh, AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import PyTree

from eqxllm.errors import ConfigError
from eqxllm.lora import trainable_params
from eqxllm.nn import Stack

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
# named only by meshes that use it, so that meshes without experts keep their three axes
EXPERT_AXIS = "expert"
# mesh axis order, outermost first: tensor innermost (fastest links), experts next to it
_MESH_ORDER = ("data", "fsdp", EXPERT_AXIS, "tensor")

Rule = tuple[str, tuple[str | None, ...]]
DEFAULT_RULES: tuple[Rule, ...] = (
    # column-parallel: a weight's output features (and its bias) split across tensor shards
    (r"\.(q_proj|k_proj|v_proj|up|gate)\.(weight|bias)$", ("tensor",)),
    # row-parallel: input features split; the partial sums are all-reduced by XLA
    (r"\.(o_proj|down)\.weight$", (None, "tensor")),
    # a mixture of experts' stacked weights: experts split over `expert`, the mlp width over `tensor`
    (r"\.(gate|up)$", (EXPERT_AXIS, None, "tensor")),
    (r"\.down$", (EXPERT_AXIS, "tensor", None)),
    # LoRA adapters follow their base weight: B [out, r] splits like a column-parallel output,
    # A [r, in] like a row-parallel input; the other factor is small and replicated
    (r"\.(q_proj|k_proj|v_proj|up|gate)\.lora_b$", ("tensor",)),
    (r"\.(o_proj|down)\.lora_a$", (None, "tensor")),
)


def parse_mesh_spec(spec: str | Mapping[str, int]) -> dict[str, int]:
    """``"data=4,fsdp=2"`` -> ``{"data": 4, "fsdp": 2, "tensor": 1}`` (absent axes have size 1);
    ``expert`` appears only when the spec names it."""
    if isinstance(spec, str):
        items = {}
        for part in (p.strip() for p in spec.split(",")):
            name, sep, value = part.partition("=")
            name, value = name.strip(), value.strip()
            if not sep or not name or not value.lstrip("-").isdigit():
                raise ConfigError(
                    f"malformed mesh spec {spec!r}: each comma-separated part must be axis=size "
                    f"(e.g. 'data=4,fsdp=2'), found {part!r}"
                )
            if name in items:
                raise ConfigError(f"mesh spec {spec!r} gives axis {name!r} twice")
            items[name] = int(value)
    else:
        items = dict(spec)
    known = (*AXES, EXPERT_AXIS)
    unknown = sorted(set(items) - set(known))
    if unknown:
        raise ConfigError(f"mesh spec {spec!r} names unknown axes {unknown}; expected some of {list(known)}")
    bad = {k: v for k, v in items.items() if not isinstance(v, int) or v < 1}
    if bad:
        raise ConfigError(f"mesh axis sizes must be integers >= 1; mesh spec {spec!r} has {bad}")
    sizes = {axis: items.get(axis, 1) for axis in AXES}
    if EXPERT_AXIS in items:
        sizes[EXPERT_AXIS] = items[EXPERT_AXIS]
    return sizes


def make_mesh(spec: str | Mapping[str, int], devices: Sequence[Any] | None = None) -> Mesh:
    """A mesh with axes ``("data", "fsdp", "tensor")``, or ``("data", "fsdp", "expert", "tensor")`` when
    the spec names ``expert``, over ``devices`` (default: every device of every process).

    The product of the axis sizes must equal the number of devices. ``tensor`` is the innermost
    axis, so tensor-parallel shards sit on neighbouring (fastest-connected) devices.
    """
    sizes = parse_mesh_spec(spec)
    devices = jax.devices() if devices is None else list(devices)
    product = math.prod(sizes.values())
    if product != len(devices):
        shape = " x ".join(f"{k}={v}" for k, v in sizes.items())
        raise ConfigError(
            f"mesh {shape} has {product} devices but {len(devices)} are available; "
            f"make the axis sizes multiply to {len(devices)}"
        )
    # Auto axes: shardings are propagated by XLA from the constraints we place (jax.make_mesh's
    # default of Explicit axes would put shardings into the types instead)
    names = tuple(axis for axis in _MESH_ORDER if axis in sizes)
    shape = tuple(sizes[axis] for axis in names)
    return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(names), devices=devices)


def _leaves_with_layer_dims(tree: PyTree, is_leaf) -> list[tuple[tuple, Any, int]]:
    """``(path, leaf, layer_dims)`` for each leaf in ``jax.tree.leaves`` order, where ``layer_dims``
    counts the ``Stack`` modules enclosing the leaf (each adds one leading ``layers`` axis)."""

    def visit(subtree, prefix, depth):
        if isinstance(subtree, Stack):
            return visit(subtree.blocks, prefix + (jax.tree_util.GetAttrKey("blocks"),), depth + 1)
        out = []
        flat = jax.tree_util.tree_flatten_with_path(subtree, is_leaf=lambda x: is_leaf(x) or isinstance(x, Stack))[0]
        for path, leaf in flat:
            if isinstance(leaf, Stack):
                out += visit(leaf, prefix + path, depth)
            else:
                out.append((prefix + path, leaf, depth))
        return out

    return visit(tree, (), 0)


def partition_spec(
    path: str, shape: tuple[int, ...], layer_dims: int, mesh_shape: Mapping[str, int], rules: Sequence[Rule]
) -> P:
    """The ``PartitionSpec`` of one leaf: the first matching rule's tensor sharding of its per-layer
    dims, then ``fsdp`` on the largest remaining per-layer dim it divides (matrices only)."""
    per_layer = shape[layer_dims:]
    spec: list[str | None] = [None] * len(per_layer)
    for pattern, rule_spec in rules:
        if re.search(pattern, path):
            for i, axis in enumerate(rule_spec[: len(per_layer)]):
                spec[i] = axis
            break
    for i, axis in enumerate(spec):
        if axis is not None and (mesh_shape.get(axis, 1) == 1 or per_layer[i] % mesh_shape[axis]):
            spec[i] = None
    fsdp = mesh_shape.get("fsdp", 1)
    if fsdp > 1 and len(per_layer) >= 2 and "fsdp" not in spec:
        free = [i for i, axis in enumerate(spec) if axis is None and per_layer[i] % fsdp == 0]
        if free:
            spec[max(free, key=lambda i: per_layer[i])] = "fsdp"
    return P(*([None] * layer_dims), *spec)


def _is_array_like(x) -> bool:
    return isinstance(x, jax.Array | np.ndarray | jax.ShapeDtypeStruct)


def tree_shardings(tree: PyTree, mesh: Mesh, rules: Sequence[Rule] = DEFAULT_RULES) -> PyTree:
    """A ``NamedSharding`` for every array (or ``ShapeDtypeStruct``) leaf of ``tree``, None elsewhere."""
    arrays = eqx.filter(tree, _is_array_like)
    leaves, treedef = jax.tree.flatten(arrays)
    found = _leaves_with_layer_dims(arrays, is_leaf=lambda x: x is None)
    found = [item for item in found if item[1] is not None]
    assert len(found) == len(leaves)  # the same traversal order, by construction
    mesh_shape = dict(mesh.shape)
    specs = [
        NamedSharding(mesh, partition_spec(jax.tree_util.keystr(path), leaf.shape, depth, mesh_shape, rules))
        for path, leaf, depth in found
    ]
    return jax.tree.unflatten(treedef, specs)


def model_shardings(model: PyTree, mesh: Mesh, rules: Sequence[Rule] = DEFAULT_RULES) -> PyTree:
    """Shardings matching ``eqx.filter(model, eqx.is_array)``, for ``eqx.filter_shard``."""
    return tree_shardings(eqx.filter(model, eqx.is_array), mesh, rules)


def opt_state_shardings(
    optimizer: optax.GradientTransformation, model: PyTree, mesh: Mesh, rules: Sequence[Rule] = DEFAULT_RULES
) -> PyTree:
    """Shardings of ``optimizer.init(trainable_params(model))``, computed on its shape
    alone: moments that mirror a parameter shard like it, counters and scalars are replicated."""
    abstract = eqx.filter_eval_shape(optimizer.init, trainable_params(model))
    return tree_shardings(abstract, mesh, rules)


def batch_axes(mesh: Mesh | AbstractMesh) -> tuple[str, ...]:
    """The mesh axes that split the batch: ``("data", "fsdp")``, and ``"expert"`` when the mesh has it."""
    return (*BATCH_AXES, EXPERT_AXIS) if EXPERT_AXIS in mesh.axis_names else BATCH_AXES


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The batch's leading axis split over :func:`batch_axes`; other axes replicated."""
    return NamedSharding(mesh, P(batch_axes(mesh)))


def check_batch_size(batch_size: int, mesh: Mesh | AbstractMesh, accum_steps: int = 1) -> None:
    """Raise ``ConfigError`` unless ``batch_size`` splits evenly into ``accum_steps`` micro-batches,
    each spread evenly over the mesh's batch shards."""
    axes = batch_axes(mesh)
    shards = math.prod(mesh.shape[a] for a in axes)
    if batch_size % (shards * accum_steps):
        names = " x ".join(axes)
        sizes = " x ".join(str(mesh.shape[a]) for a in axes)
        split = f"{names} = {sizes} = {shards}"
        if accum_steps > 1:
            split = f"accum_steps={accum_steps} x {shards} batch shards ({split}) = {shards * accum_steps}"
        raise ConfigError(
            f"global batch size {batch_size} is not divisible by {split}; choose a multiple of {shards * accum_steps}"
        )


def process_batch_blocks(mesh: Mesh) -> list[tuple[int, int]]:
    """The rows of the global batch that this process loads, as ``(index, count)`` pairs: block ``index``
    of the batch cut into ``count`` equal contiguous blocks (what a data loader's ``process_index`` and
    ``process_count`` select), in row order.

    They are the rows its devices hold under :func:`batch_sharding`, so processes whose devices hold
    the same batch shards (a ``tensor`` axis spanning processes) load the same rows, and a process
    whose devices hold several shards loads them all. One process: ``[(0, 1)]``.
    """
    shards = math.prod(mesh.shape[a] for a in batch_axes(mesh))
    # a batch of one row per shard: the row a device holds is the index of its shard
    indices = batch_sharding(mesh).addressable_devices_indices_map((shards,)).values()
    held = sorted({index[0].start or 0 for index in indices if index is not None})
    n = len(held)
    if held == list(range(held[0], held[0] + n)) and held[0] % n == 0 and shards % n == 0:
        return [(held[0] // n, shards // n)]  # one aligned run of shards (the usual device order): one block
    return [(k, shards) for k in held]


def load_process_batch(load: Callable[[int, int], PyTree], mesh: Mesh) -> PyTree:
    """This process's rows of a global batch: ``load(process_index, process_count)`` (a loader of
    contiguous blocks, e.g. ``eqxllm.data.batch_at``) for each block of :func:`process_batch_blocks`,
    concatenated; what :func:`place_batch` expects."""
    parts = [load(index, count) for index, count in process_batch_blocks(mesh)]
    if len(parts) == 1:
        return parts[0]
    return jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *parts)


def place_batch(local_batch: PyTree, mesh: Mesh) -> PyTree:
    """Assemble a global batch from each process's rows (``jax.make_array_from_process_local_data``).

    Every process passes the rows of :func:`process_batch_blocks` (see :func:`load_process_batch`),
    the same number everywhere; processes that share a batch shard pass the same rows. The batch's
    leading axis is split over :func:`batch_axes`. With one process this is a plain sharded ``device_put``.
    """
    sharding = batch_sharding(mesh)
    blocks = process_batch_blocks(mesh)
    count = blocks[0][1]

    def place(x):
        x = np.asarray(x)
        if x.shape[0] % len(blocks):
            raise ConfigError(
                f"this process holds {len(blocks)} equal blocks of the batch but was given {x.shape[0]} rows; "
                "pass the rows of process_batch_blocks(mesh), e.g. from load_process_batch"
            )
        rows = x.shape[0] // len(blocks) * count
        check_batch_size(rows, mesh)
        return jax.make_array_from_process_local_data(sharding, x, (rows, *x.shape[1:]))

    return jax.tree.map(place, local_batch)


def place(tree: PyTree, shardings: PyTree) -> PyTree:
    """Put a pytree onto the devices with ``shardings`` (a pytree matching ``eqx.filter(tree,
    eqx.is_array)``). Arrays of this process (e.g. a model every process built from the same key) must
    be the same on every process: each device receives only its own slices, which also works when the
    sharding spans several processes. Arrays that already span several processes (e.g. Adam moments
    initialized from a placed model) are resharded on the devices, by every process together."""
    arrays, static = eqx.partition(tree, eqx.is_array)

    def put(x, sharding):
        if x is None:
            return None
        if isinstance(x, jax.Array) and not x.is_fully_addressable:  # no process can read it whole
            return jax.device_put(x, sharding)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    placed = jax.tree.map(put, arrays, shardings, is_leaf=lambda x: x is None)
    return eqx.combine(placed, static)


def gather(tree: PyTree) -> PyTree:
    """``tree`` with every array that spans several processes replaced by its whole value on this
    process's default device, so that it can be read to the host (e.g. to export weights). A
    collective: every process must call it, with the same tree; arrays of one process stay as they are."""

    def whole(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jnp.asarray(multihost_utils.process_allgather(x, tiled=True))
        return x

    return jax.tree.map(whole, tree)
