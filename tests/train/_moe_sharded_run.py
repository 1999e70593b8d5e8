"""Subprocess script for ``test_moe_sharding.py``: started with 8 virtual CPU devices, it takes two SGD
steps of a tiny Mixtral (the llama-like decoder with a top-2 mixture of 8 experts in every layer,
trained through the LM loss with its load-balancing term) on one device and then under each mesh
layout given on the command line, and prints one JSON line with, per layout, the largest differences
from the single-device run and each parameter's whole and per-device shapes.
Run as ``python tests/train/_moe_sharded_run.py expert=8 fsdp=2,expert=2,tensor=2 ...``."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from eqxllm.models import LLAMA_PRESETS, Llama  # noqa: E402
from eqxllm.train import (  # noqa: E402
    batch_sharding,
    make_mesh,
    make_train_step,
    model_shardings,
    next_token_loss,
    opt_state_shardings,
    place,
    place_batch,
)

BATCH, SEQ = 8, 12
STEPS = 2
CONFIG = LLAMA_PRESETS["mixtral-tiny"]().replace(vocab_size=64, num_local_experts=8, num_experts_per_tok=2)
loss_fn = next_token_loss


def train(model, opt_state, step, batch):
    losses = []
    for _ in range(STEPS):
        model, opt_state, metrics = step(model, opt_state, batch)
        losses.append(float(metrics["loss"]))
    return model, losses


def main(layouts: list[str]) -> dict:
    model = Llama(CONFIG, key=jax.random.key(0))
    optimizer = optax.sgd(0.1)
    batch = np.asarray(jax.random.randint(jax.random.key(1), (BATCH, SEQ + 1), 0, CONFIG.vocab_size))
    init = lambda m: optimizer.init(eqx.filter(m, eqx.is_inexact_array))  # noqa: E731

    step = make_train_step(loss_fn, optimizer)
    ref_model, ref_losses = train(_common.copy_tree(model), init(model), step, jnp.asarray(batch))
    ref_params = _common.params_numpy(ref_model)
    update = max(float(np.max(np.abs(a - b))) for a, b in zip(ref_params, _common.params_numpy(model), strict=True))

    report = {"devices": jax.device_count(), "layouts": {}, "update": update, "ref_losses": ref_losses}
    for spec in layouts:
        mesh = make_mesh(spec)
        m_sh, o_sh = model_shardings(model, mesh), opt_state_shardings(optimizer, model, mesh)
        sharded_step = make_train_step(
            loss_fn,
            optimizer,
            model_sharding=m_sh,
            opt_state_sharding=o_sh,
            batch_sharding=batch_sharding(mesh),
            max_traces=1,
        )
        placed = place(model, m_sh)
        new_model, losses = train(placed, init(model), sharded_step, place_batch(batch, mesh))
        params = _common.params_numpy(new_model)
        arrays = jax.tree_util.tree_flatten_with_path(eqx.filter(new_model, eqx.is_inexact_array))[0]
        report["layouts"][spec] = {
            "loss_diff": max(abs(a - b) for a, b in zip(losses, ref_losses, strict=True)),
            "param_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(params, ref_params, strict=True)),
            "shapes": {
                jax.tree_util.keystr(p): [list(x.shape), list(x.addressable_shards[0].data.shape)] for p, x in arrays
            },
        }
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
