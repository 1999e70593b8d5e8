"""Subprocess script for ``test_sharding.py``: started with 8 virtual CPU devices, it trains the tiny
GPT-2 for two steps on one device and then under each mesh layout given on the command line, and
prints one JSON line with, per layout, the largest differences from the single-device run, which
parameters are really split, and the trained weights' fingerprint (which must not depend on the layout). Run as ``python tests/train/_sharded_run.py data=8 fsdp=8 ...``."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from eqxllm.errors import ConfigError  # noqa: E402
from eqxllm.train import (  # noqa: E402
    batch_sharding,
    init_opt_state,
    make_mesh,
    make_optimizer,
    make_train_step,
    model_shardings,
    next_token_loss,
    opt_state_shardings,
    place,
    place_batch,
)
from eqxllm.train.fingerprint import weights_fingerprint  # noqa: E402

STEPS = 2


def train(model, opt_state, step, batch, key):
    losses = []
    for i in range(STEPS):
        model, opt_state, metrics = step(model, opt_state, batch, jax.random.fold_in(key, i))
        losses.append(float(metrics["loss"]))
    return model, opt_state, losses


def main(layouts: list[str]) -> dict:
    key = jax.random.key(3)
    model = _common.tiny_model()
    optimizer = make_optimizer(_common.OPTIM, model)
    batch = _common.fixed_batch()

    step = make_train_step(next_token_loss, optimizer)
    ref_model, _, ref_losses = train(
        _common.copy_tree(model), init_opt_state(optimizer, model), step, jax.numpy.asarray(batch), key
    )
    ref_params = _common.params_numpy(ref_model)
    update = max(float(np.max(np.abs(a - b))) for a, b in zip(ref_params, _common.params_numpy(model), strict=True))

    report = {"devices": jax.device_count(), "layouts": {}, "fingerprint": weights_fingerprint(model)}
    for spec in layouts:
        mesh = make_mesh(spec)
        m_sh, o_sh = model_shardings(model, mesh), opt_state_shardings(optimizer, model, mesh)
        sharded_step = make_train_step(
            next_token_loss,
            optimizer,
            model_sharding=m_sh,
            opt_state_sharding=o_sh,
            batch_sharding=batch_sharding(mesh),
            max_traces=1,
        )
        placed = place(model, m_sh)
        fingerprint = weights_fingerprint(placed)  # before the step donates the placed weights
        opt_state = place(init_opt_state(optimizer, model), o_sh)
        new_model, new_opt_state, losses = train(placed, opt_state, sharded_step, place_batch(batch, mesh), key)
        params = _common.params_numpy(new_model)
        arrays = jax.tree_util.tree_flatten_with_path(eqx.filter(new_model, eqx.is_inexact_array))[0]
        split = [jax.tree_util.keystr(path) for path, x in arrays if x.addressable_shards[0].data.shape != x.shape]
        moments = [x for x in jax.tree.leaves(new_opt_state) if x.ndim >= 2]
        report["layouts"][spec] = {
            "loss_diff": max(abs(a - b) for a, b in zip(losses, ref_losses, strict=True)),
            "param_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(params, ref_params, strict=True)),
            "split": split,
            "shapes": {
                jax.tree_util.keystr(p): [list(x.shape), list(x.addressable_shards[0].data.shape)] for p, x in arrays
            },
            "moments_split": sum(x.addressable_shards[0].data.shape != x.shape for x in moments),
            "fingerprint": fingerprint,
        }
    report["ref_losses"] = ref_losses
    report["update"] = update

    # a batch the mesh cannot split evenly is refused before anything runs
    try:
        place_batch(batch[:6], make_mesh("data=4,fsdp=2"))
        report["indivisible_error"] = None
    except ConfigError as e:
        report["indivisible_error"] = str(e)
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
