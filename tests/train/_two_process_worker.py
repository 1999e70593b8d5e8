"""One of two processes for ``test_distributed.py``: ``python _two_process_worker.py ADDRESS PROCESS_ID OUT``.

Each process has 2 virtual CPU devices; together they form a ``data=2,fsdp=2`` mesh of 4 devices
connected by gloo collectives. Each feeds its own half of the batch through ``place_batch``, trains
the tiny GPT-2 for two steps, and process 0 writes the losses and the gathered parameters to OUT."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")

import _common  # noqa: E402
import equinox as eqx  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from eqxllm.train import (  # noqa: E402
    batch_sharding,
    init_opt_state,
    initialize_distributed,
    make_mesh,
    make_optimizer,
    make_train_step,
    model_shardings,
    next_token_loss,
    opt_state_shardings,
    place,
    place_batch,
)

STEPS = 2


def main(address: str, process_id: int, out: Path) -> None:
    assert initialize_distributed(address, num_processes=2, process_id=process_id, initialization_timeout=60)
    assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 4, 2)
    mesh = make_mesh("data=2,fsdp=2")
    model = _common.tiny_model()
    optimizer = make_optimizer(_common.OPTIM, model)
    m_sh, o_sh = model_shardings(model, mesh), opt_state_shardings(optimizer, model, mesh)
    model_g = place(model, m_sh)
    opt_state = place(init_opt_state(optimizer, model), o_sh)
    step = make_train_step(
        next_token_loss,
        optimizer,
        model_sharding=m_sh,
        opt_state_sharding=o_sh,
        batch_sharding=batch_sharding(mesh),
    )
    full = _common.fixed_batch()
    rows = full.shape[0] // 2
    batch = place_batch(full[process_id * rows : (process_id + 1) * rows], mesh)  # this process's rows only
    key = jax.random.key(3)
    losses = []
    for i in range(STEPS):
        model_g, opt_state, metrics = step(model_g, opt_state, batch, jax.random.fold_in(key, i))
        losses.append(float(metrics["loss"]))
    params = [
        np.asarray(multihost_utils.process_allgather(x, tiled=True))
        for x in jax.tree.leaves(eqx.filter(model_g, eqx.is_inexact_array))
    ]
    split = sum(x.addressable_shards[0].data.shape != x.shape for x in jax.tree.leaves(model_g))
    if process_id == 0:
        np.savez(out, *params, losses=np.array(losses), split=np.array(split))
    multihost_utils.sync_global_devices("done")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
