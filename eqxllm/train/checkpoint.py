"""Training checkpoints with Orbax: model, optimizer state, step, RNG and data position.

Orbax writes each step into a temporary directory and renames it when complete, so a checkpoint is
either whole or absent; the manager keeps the last ``keep`` steps. The data order is a pure function
of ``(seed, step)``, so the data position is the step and resuming needs no iterator state: a resumed
run continues bit for bit.

Arrays are stored as a flat list (``jax.tree.leaves`` of the array part of ``(model, opt_state)``)
and restored onto an abstract skeleton carrying the target shardings, so the same checkpoint
restores onto one CPU or a sharded mesh.
"""

from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import orbax.checkpoint as ocp

from eqxllm.errors import CheckpointError


class TrainCheckpointer:
    """Save and restore ``(model, opt_state, key, step, extra)`` under ``directory/<step>``."""

    def __init__(self, directory: str | Path, *, keep: int = 3):
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, model: eqx.Module, opt_state: Any, key: jax.Array, extra: dict[str, Any]) -> None:
        arrays = jax.tree.leaves(eqx.filter((model, opt_state), eqx.is_array))
        meta = {"step": step, "key": jax.random.key_data(key).tolist(), **extra}
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        self._manager.wait_until_finished()

    def restore(
        self, step: int, model_like: eqx.Module, opt_state_like: Any, shardings: Any = None
    ) -> tuple[eqx.Module, Any, jax.Array, dict[str, Any]]:
        """Restore ``step`` onto the structure of ``model_like``/``opt_state_like`` (arrays or shapes).

        ``shardings``: an optional pytree of shardings matching ``(model, opt_state)``'s arrays.
        Raises :class:`CheckpointError` naming the step and directory when the checkpoint is
        unreadable (corrupted, truncated) or was written for a different model or optimizer.
        """
        tree = eqx.filter((model_like, opt_state_like), eqx.is_array)
        leaves, treedef = jax.tree.flatten(tree)
        sharding_leaves = jax.tree.leaves(shardings) if shardings is not None else [None] * len(leaves)
        abstract = [
            jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s if s is not None else getattr(x, "sharding", None))
            for x, s in zip(leaves, sharding_leaves)
        ]
        where = self.directory / str(step)
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()),
            )
        except Exception as e:  # orbax raises many types (ValueError, FileNotFoundError, tensorstore errors)
            raise CheckpointError(
                f"training checkpoint {where} cannot be restored ({type(e).__name__}: {str(e)[:300]}); it is "
                "corrupted or was written for another model/optimizer. Delete that step directory to resume "
                "from an earlier one, or start a fresh run in a new --out directory."
            ) from e
        arrays = restored["state"]
        if len(arrays) != len(leaves) or any(
            tuple(a.shape) != tuple(x.shape) or a.dtype != x.dtype for a, x in zip(arrays, leaves)
        ):
            raise CheckpointError(
                f"training checkpoint {where} holds arrays that do not match this run's model and optimizer "
                "(different config?); start a fresh run in a new --out directory"
            )
        model_arrays, opt_arrays = jax.tree.unflatten(treedef, arrays)
        model = eqx.combine(model_arrays, eqx.filter(model_like, eqx.is_array, inverse=True))
        opt_state = eqx.combine(opt_arrays, eqx.filter(opt_state_like, eqx.is_array, inverse=True))
        meta = dict(restored["meta"])
        key = jax.random.wrap_key_data(jax.numpy.asarray(meta.pop("key"), dtype=jax.numpy.uint32))
        return model, opt_state, key, meta

    def close(self) -> None:
        self._manager.close()
