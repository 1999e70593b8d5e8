"""One of two processes for ``test_distributed.py``: ``python _two_process_worker.py ADDRESS PROCESS_ID OUT``.

Each process has 2 virtual CPU devices; together they form a ``data=2,fsdp=2`` mesh of 4 devices
connected by gloo collectives. Each feeds its own half of the batch through ``place_batch``, trains
the tiny GPT-2 for two steps, and process 0 writes the losses and the gathered parameters to OUT.

Then they check that the rows each loads assemble the whole batch on other meshes, and run
``train()`` of LoRA adapters twice on the stories in ``OUT``'s folder: with ``fsdp=4`` (the base,
the adapters and their Adam moments split across the processes; paused after one step and resumed;
the run exports the merged model) and with ``tensor=4`` (the batch whole on every device, so both
processes load the same rows). Process 0 adds each run's losses to OUT."""

import dataclasses
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")

import _common  # noqa: E402
import equinox as eqx  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

import eqxllm.train.run_dir  # noqa: E402
from eqxllm.errors import ConfigError  # noqa: E402
from eqxllm.lora.config import LoraConfig  # noqa: E402
from eqxllm.train import (  # noqa: E402
    batch_sharding,
    init_opt_state,
    initialize_distributed,
    load_process_batch,
    make_mesh,
    make_optimizer,
    make_train_step,
    model_shardings,
    next_token_loss,
    opt_state_shardings,
    place,
    place_batch,
    process_batch_blocks,
    train_preset,
)
from eqxllm.train.distributed import lead_number  # noqa: E402
from eqxllm.train.loop import train  # noqa: E402
from eqxllm.train.metrics import read_metrics  # noqa: E402

STEPS = 2


def _slow_run_config(process_id: int) -> None:
    """Hold process 0's ``run_config.json`` write half-done for a second, and start process 1 half a
    second late: it would find the run directory holding only the temporary (a start that raced)."""
    if process_id == 1:
        time.sleep(0.5)
        return
    write = eqxllm.train.run_dir.atomic_write_text

    def slow_write(path: Path, text: str) -> None:
        temp = path.with_name(f".{path.name}.p{os.getpid()}.slow.eqxllm.tmp")
        temp.write_text(text)
        time.sleep(1.0)
        temp.unlink()
        write(path, text)
        eqxllm.train.run_dir.atomic_write_text = write

    eqxllm.train.run_dir.atomic_write_text = slow_write


def check_batch_layouts(full: np.ndarray) -> None:
    """Whatever the mesh, the rows each process loads assemble the whole batch: with a tensor axis
    spanning the processes (both load every row), fsdp across them (a contiguous half each), and a data
    axis whose devices alternate between them (process 0 holds rows 0-1 and 4-5: two blocks)."""
    by_process = [[d for d in jax.devices() if d.process_index == p] for p in range(2)]
    alternating = make_mesh("data=4", [d for pair in zip(*by_process, strict=True) for d in pair])
    assert process_batch_blocks(alternating) == [(jax.process_index(), 4), (jax.process_index() + 2, 4)]
    for mesh in (make_mesh("tensor=4"), make_mesh("fsdp=4"), alternating):
        rows = load_process_batch(lambda index, count: np.split(full, count)[index], mesh)
        np.testing.assert_array_equal(multihost_utils.process_allgather(place_batch(rows, mesh), tiled=True), full)


def train_runs(process_id: int, folder: Path) -> dict[str, np.ndarray]:
    """``train()`` of LoRA adapters with the base split across the processes, paused after its first
    step and resumed, then uninterrupted with a tensor axis spanning them; each run's logged training
    losses (two steps). The resume rebuilds the base and checks its fingerprint over arrays that no
    process holds whole. A third start, into the second's folder, is refused on both processes."""
    base = train_preset("gpt2-tinystories-test")
    data = dataclasses.replace(base.data, source=str(folder / "stories.txt"), cache_dir=str(folder / "tokens"))
    loop = dataclasses.replace(base.train, max_steps=2, log_every=1, eval_every=100, num_samples=0)
    optim = dataclasses.replace(base.optim, warmup_steps=0)  # the first step moves the adapters: the resume sees it
    lora = LoraConfig(rank=2, alpha=4.0, targets="attn")
    losses = {}
    _slow_run_config(process_id)
    for mesh, whole in (("fsdp=4", True), ("tensor=4", False)):  # the second stops before its evaluation
        out = folder / mesh.replace("=", "")
        cfg = base.replace(data=data, train=loop, optim=optim, lora=lora, out=str(out), mesh=mesh)
        if whole:
            train(cfg, progress=False, stop_after_step=1)
            cfg = cfg.replace(resume=True)
        train(cfg, progress=False, stop_after_step=None if whole else loop.max_steps)
        if process_id == 0:
            losses[f"loss_{mesh}"] = np.array([r["loss"] for r in read_metrics(out) if r["kind"] == "train"])
    try:  # process 0 refuses a finished run's folder; process 1 stops with its message
        train(cfg.replace(resume=False), progress=False)
    except ConfigError as e:
        assert "already holds a training run" in str(e), e
    else:
        raise AssertionError(f"a fresh start into {cfg.out}, which holds a run, was not refused")
    return losses


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
    check_batch_layouts(full)
    # a resumed run's best val_loss is read by process 0 only; every process takes its value
    assert lead_number(0.25 if process_id == 0 else float("inf")) == 0.25
    runs = train_runs(process_id, out.parent)
    if process_id == 0:
        np.savez(out, *params, losses=np.array(losses), split=np.array(split), **runs)
    multihost_utils.sync_global_devices("done")


if __name__ == "__main__":
    try:
        main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
    except BaseException:  # exit now: a normal exit would wait for the other process at jax.distributed's shutdown
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
