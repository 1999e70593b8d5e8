"""Training checkpoints with Orbax: model, optimizer state, step, RNG and data position.

Orbax writes each step into a temporary directory and renames it when complete, so a checkpoint is
either whole or absent; the manager keeps the last ``keep`` steps. The data order is a pure function
of ``(seed, step)``, so the data position is the step and resuming needs no iterator state: a resumed
run continues bit for bit.

Arrays are stored as a flat list (``jax.tree.leaves`` of the array part of ``(model, opt_state)``)
and restored onto an abstract skeleton carrying the target shardings, so the same checkpoint
restores onto one CPU or a sharded mesh.

A run that trains part of a model it can rebuild (LoRA adapters over a base from ``--init-from`` or
the seed) stores only that part and the optimizer state (:class:`RebuiltBase`): a checkpoint of
adapters over a 7B base is megabytes, not the base's gigabytes again every ``checkpoint_every``
steps. The base is rebuilt on resume and must have the fingerprint
(:func:`~eqxllm.train.fingerprint.weights_fingerprint`) recorded with the checkpoint.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import orbax.checkpoint as ocp
from jaxtyping import PyTree

from eqxllm.errors import CheckpointError
from eqxllm.train.fingerprint import weights_fingerprint


@dataclass(frozen=True)
class RebuiltBase:
    """The part of a model that checkpoints leave out because the run rebuilds it identically.

    ``stored``: a filter spec over the model, ``True`` on the leaves a checkpoint holds (the trained
    ones); ``fingerprint``: :func:`~eqxllm.train.fingerprint.weights_fingerprint` of the other leaves;
    ``source``: where they come from, for messages (``"--init-from gpt2"``)."""

    stored: PyTree[bool]
    fingerprint: str
    source: str

    @classmethod
    def of(cls, model: eqx.Module, stored: PyTree[bool], source: str) -> "RebuiltBase":
        """The rebuilt part of ``model``: every array leaf where ``stored`` is ``False``, fingerprinted."""
        return cls(
            stored=stored, fingerprint=weights_fingerprint(eqx.filter(model, stored, inverse=True)), source=source
        )


_REBUILT = "rebuilt_base"  # the checkpoint's meta entry: {"fingerprint", "source"} of what it left out


def _stored_flags(model: eqx.Module, stored: PyTree[bool]) -> list[bool]:
    """For each array leaf of ``model`` (in ``jax.tree.leaves`` order): whether a checkpoint holds it."""
    return jax.tree.leaves(jax.tree.map(lambda x, keep: bool(keep) if eqx.is_array(x) else None, model, stored))


class TrainCheckpointer:
    """Save and restore ``(model, opt_state, key, step, extra)`` under ``directory/<step>``.

    With ``rebuilt``, a save leaves out the model's rebuilt part and a restore takes it from the model
    it restores onto, after checking its fingerprint. A checkpoint that holds the whole model (written
    without ``rebuilt``, as every LoRA run's were before) restores whole either way."""

    def __init__(self, directory: str | Path, *, keep: int = 3, rebuilt: RebuiltBase | None = None):
        self.directory = Path(directory).absolute()
        self.rebuilt = rebuilt
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, model: eqx.Module, opt_state: Any, key: jax.Array, extra: dict[str, Any]) -> None:
        model_arrays = jax.tree.leaves(eqx.filter(model, eqx.is_array))
        meta = {"step": step, "key": jax.random.key_data(key).tolist(), **extra}
        if self.rebuilt is not None:
            flags = _stored_flags(model, self.rebuilt.stored)
            model_arrays = [x for x, keep in zip(model_arrays, flags) if keep]
            meta[_REBUILT] = {"fingerprint": self.rebuilt.fingerprint, "source": self.rebuilt.source}
        arrays = model_arrays + jax.tree.leaves(eqx.filter(opt_state, eqx.is_array))
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
        A checkpoint that left out a rebuilt part takes it from ``model_like``, which must then hold
        that part's arrays with the recorded fingerprint. Raises :class:`CheckpointError` naming the
        step and directory when the checkpoint is unreadable (corrupted, truncated), was written for a
        different model or optimizer, or over a different base.
        """
        where = self.directory / str(step)
        meta = dict(self._read(step, ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
        model_leaves = jax.tree.leaves(eqx.filter(model_like, eqx.is_array))
        opt_leaves = jax.tree.leaves(eqx.filter(opt_state_like, eqx.is_array))
        flags = [True] * len(model_leaves)
        if _REBUILT in meta:
            flags = self._check_rebuilt(meta.pop(_REBUILT), model_like, where)
        flags += [True] * len(opt_leaves)
        leaves = model_leaves + opt_leaves
        sharding_leaves = jax.tree.leaves(shardings) if shardings is not None else [None] * len(leaves)
        wanted = [
            jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s if s is not None else getattr(x, "sharding", None))
            for x, s, keep in zip(leaves, sharding_leaves, flags)
            if keep
        ]
        args = ocp.args.Composite(state=ocp.args.StandardRestore(wanted), meta=ocp.args.JsonRestore())
        stored = self._read(step, args)["state"]
        if len(stored) != len(wanted) or any(
            tuple(a.shape) != tuple(x.shape) or a.dtype != x.dtype for a, x in zip(stored, wanted)
        ):
            raise CheckpointError(
                f"training checkpoint {where} holds arrays that do not match this run's model and optimizer "
                "(different config?); start a fresh run in a new --out directory"
            )
        restored = iter(stored)
        arrays = [next(restored) if keep else x for x, keep in zip(leaves, flags)]
        model = jax.tree.unflatten(
            jax.tree.structure(eqx.filter(model_like, eqx.is_array)), arrays[: len(model_leaves)]
        )
        opt = jax.tree.unflatten(
            jax.tree.structure(eqx.filter(opt_state_like, eqx.is_array)), arrays[len(model_leaves) :]
        )
        model = eqx.combine(model, eqx.filter(model_like, eqx.is_array, inverse=True))
        opt_state = eqx.combine(opt, eqx.filter(opt_state_like, eqx.is_array, inverse=True))
        key = jax.random.wrap_key_data(jax.numpy.asarray(meta.pop("key"), dtype=jax.numpy.uint32))
        return model, opt_state, key, meta

    def _read(self, step: int, args: Any) -> Any:
        try:
            return self._manager.restore(step, args=args)
        except Exception as e:  # orbax raises many types (ValueError, FileNotFoundError, tensorstore errors)
            raise CheckpointError(
                f"training checkpoint {self.directory / str(step)} cannot be restored ({type(e).__name__}: "
                f"{str(e)[:300]}); it is corrupted or was written for another model/optimizer. Delete that step "
                "directory to resume from an earlier one, or start a fresh run in a new --out directory."
            ) from e

    def _check_rebuilt(self, recorded: dict[str, str], model_like: eqx.Module, where: Path) -> list[bool]:
        """Which of ``model_like``'s array leaves the checkpoint holds, once the rest is known to be the
        base it was trained over."""
        if self.rebuilt is None:
            raise CheckpointError(
                f"training checkpoint {where} holds the trained part of a model only (its base comes from "
                f"{recorded['source']}); restore it with the run that wrote it (eqxllm train --resume)"
            )
        if self.rebuilt.fingerprint != recorded["fingerprint"]:
            raise CheckpointError(
                f"training checkpoint {where} was trained over a different base than {self.rebuilt.source} gives "
                f"now (weights fingerprint {self.rebuilt.fingerprint[:12]}, the checkpoint's "
                f"{recorded['fingerprint'][:12]}): its weights changed since the run started (a Hub id's newer "
                "revision, a directory written over). Resume with the original base, or start a fresh run in a "
                "new --out directory."
            )
        return _stored_flags(model_like, self.rebuilt.stored)

    def close(self) -> None:
        self._manager.close()
