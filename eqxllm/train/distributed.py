"""Multi-process (multi-host) start-up: one call before any other JAX work.

JAX runs one process per host (or per GPU), all executing the same program; ``jax.distributed``
connects them through a coordinator so that ``jax.devices()`` lists every device of every process and
a mesh can span them. Each process then feeds its own rows of the batch
(:func:`eqxllm.train.sharding.place_batch`). On CPU, cross-process collectives use gloo (JAX's default,
``jax_cpu_collectives_implementation``).
"""

import os

import jax

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
