"""Multi-process (multi-host) start-up: one call before any other JAX work, and the others' wait for
what process 0 alone prepares.

JAX runs one process per host (or per GPU), all executing the same program; ``jax.distributed``
connects them through a coordinator so that ``jax.devices()`` lists every device of every process and
a mesh can span them. Each process then feeds its own rows of the batch
(:func:`eqxllm.train.sharding.place_batch`). On CPU, cross-process collectives use gloo (JAX's default,
``jax_cpu_collectives_implementation``).
"""

import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from eqxllm.errors import CheckpointError, ConfigError

# environment variables by which JAX's own cluster detection recognises a multi-process launch
_CLUSTER_ENV_VARS = (
    "JAX_COORDINATOR_ADDRESS",  # set by hand or by a launcher
    "SLURM_JOB_ID",  # SLURM (srun)
    "OMPI_MCA_orte_hnp_uri",  # Open MPI (mpirun) before 5.x
    "OMPI_MCA_ess_base_jobid",  # Open MPI 5.x
    "TPU_WORKER_HOSTNAMES",  # Cloud TPU pod slices
    "MEGASCALE_COORDINATOR_ADDRESS",  # multi-slice TPU
)


def _cluster_detected() -> bool:
    """Whether JAX's auto-detection (``jax.distributed.initialize()`` without arguments) would find a
    launcher: SLURM, Open MPI, Cloud TPU, GKE/Kubernetes, or ``JAX_COORDINATOR_ADDRESS``."""
    if any(name in os.environ for name in _CLUSTER_ENV_VARS):
        return True
    try:  # the same checks JAX makes; a private module, so tolerate its absence
        from jax._src.clusters import ClusterEnv

        return any(env.is_env_present() for env in ClusterEnv._cluster_types if not env.opt_in_only_method)
    except (ImportError, AttributeError):
        return False


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: int | list[int] | None = None,
    initialization_timeout: int = 300,
) -> bool:
    """Connect this process to the others with ``jax.distributed.initialize``; returns whether it did.

    - With ``coordinator_address`` (``"host:port"`` of process 0), ``num_processes`` and ``process_id``
      given (as arguments, or as ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
      ``JAX_PROCESS_ID`` in the environment), connects explicitly (e.g. several processes on one machine, or a custom launcher).
    - With none given, defers to JAX's auto-detection when a cluster launcher is present (SLURM,
      Open MPI, Cloud TPU pod slices, GKE, or ``JAX_COORDINATOR_ADDRESS`` in the environment).
    - Otherwise (a plain single process), or with ``num_processes=1``, or when already initialized,
      does nothing: the same training script runs unchanged on one machine.

    Must be called before any JAX computation (device lists are fixed at first use).
    """
    # JAX itself reads only JAX_COORDINATOR_ADDRESS; a hand launch also needs the count and the rank
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    if jax.distributed.is_initialized() or num_processes == 1:
        return False
    given = (coordinator_address, num_processes, process_id)
    if all(arg is None for arg in given) and not _cluster_detected():
        return False
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout,
    )
    return True


# how much of process 0's error message the others receive
_MESSAGE_BYTES = 2048


def share_lead_outcome(failure: BaseException | None) -> None:
    """Let every process know whether process 0 succeeded at what it alone did (e.g. check and prepare
    the run directory, which the others must not inspect while it writes): process 0 passes its error
    (or None) and re-raises it; the others raise a ``ConfigError`` (``CheckpointError`` for one) with
    its message. A collective (a broadcast over every device): every process must call it. With one
    process it only re-raises."""
    if jax.process_count() > 1:
        text = b"" if failure is None else f"{type(failure).__name__}: {failure}".encode()[:_MESSAGE_BYTES]
        kind = 0 if failure is None else 2 if isinstance(failure, CheckpointError) else 1
        sent = np.frombuffer(bytes([kind]) + text.ljust(_MESSAGE_BYTES, b"\0"), np.uint8)
        received = np.asarray(multihost_utils.broadcast_one_to_all(sent))
        if failure is None and received[0]:
            message = bytes(received[1:]).rstrip(b"\0").decode(errors="replace")
            error = CheckpointError if received[0] == 2 else ConfigError
            raise error(f"process 0 could not start the run: {message}")
    if failure is not None:
        raise failure


def lead_number(value: float) -> float:
    """Process 0's ``value`` on every process (a broadcast; every process must call it), for a number
    that only process 0 can read, such as a resumed run's best ``val_loss`` from its ``metrics.jsonl``,
    when every process must take the same decisions from it. With one process, ``value`` itself."""
    if jax.process_count() == 1:
        return value
    return float(np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(value, np.float32))))
