"""Multi-process training: two processes on this machine, connected by ``jax.distributed`` and gloo
CPU collectives, must train exactly like one process with the whole batch, and ``train()`` must run
end to end (export included) with parameters or a tensor axis split across them."""

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np
import pytest

import eqxllm
from eqxllm.train import (
    init_opt_state,
    initialize_distributed,
    make_optimizer,
    make_train_step,
    next_token_loss,
)
from eqxllm.train.distributed import _CLUSTER_ENV_VARS

from ._common import (
    OPTIM,
    REPO_ROOT,
    copy_tree,
    fixed_batch,
    free_port,
    params_numpy,
    run_script,
    story_corpus,
    tiny_model,
)

TIMEOUT_S = 300  # generous for busy cores: a process that fails stops the test at once (_wait_all)


def _gloo_available() -> bool:
    try:
        from jax._src.lib import _jax
    except ImportError:
        return False
    return hasattr(_jax, "make_gloo_tcp_collectives")


def test_single_process_initialization_is_a_no_op(monkeypatch):
    for name in (*_CLUSTER_ENV_VARS, "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)
    assert initialize_distributed() is False
    assert initialize_distributed(num_processes=1) is False
    assert not jax.distributed.is_initialized()


def _wait_all(procs: list[subprocess.Popen], timeout: float) -> list[tuple[str, str]]:
    """Each process's ``(stdout, stderr)``. When one fails (or time runs out) the others are killed:
    they would wait for it at their next collective until the timeout."""
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(len(procs)) as pool:
        outputs = [pool.submit(p.communicate) for p in procs]
        while not all(f.done() for f in outputs):
            if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
                for p in procs:  # only our own children, by handle
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.1)
        return [f.result() for f in outputs]


@pytest.mark.slow
@pytest.mark.skipif(not _gloo_available(), reason="this jaxlib has no gloo CPU collectives")
def test_two_processes_match_one(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    out = tmp_path / "result.npz"
    story_corpus(tmp_path / "stories.txt")
    script = str(REPO_ROOT / "tests/train/_two_process_worker.py")
    procs = [run_script([script, address, str(i), str(out)], devices=2) for i in range(2)]
    outputs = _wait_all(procs, TIMEOUT_S)
    for p, (_, err) in sorted(zip(procs, outputs, strict=True), key=lambda item: item[0].returncode == -9):
        assert p.returncode == 0, err[-4000:]  # a failed process's error first, not the one stopped for it

    # the same two steps in this process, on one device with the whole batch
    model = tiny_model()
    optimizer = make_optimizer(OPTIM, model)
    step = make_train_step(next_token_loss, optimizer)
    opt_state, batch, key = (
        init_opt_state(optimizer, model),
        jax.numpy.asarray(fixed_batch()),
        jax.random.key(3),
    )
    trained, losses = copy_tree(model), []
    for i in range(2):
        trained, opt_state, metrics = step(trained, opt_state, batch, jax.random.fold_in(key, i))
        losses.append(float(metrics["loss"]))

    result = np.load(out)
    assert int(result["split"]) > 0  # fsdp really split parameters across the two processes' devices
    np.testing.assert_allclose(result["losses"], losses, atol=1e-5)
    expected = params_numpy(trained)
    assert len(result.files) == len(expected) + 4
    for i, want in enumerate(expected):
        # Adam amplifies rounding in near-zero gradients; updates are ~1e-3 (see test_sharding.py)
        np.testing.assert_allclose(result[f"arr_{i}"], want, atol=5e-5, rtol=0)

    # train() with fsdp=4 (paused after a step and resumed) exported whole weights; with tensor=4 each
    # process fed the whole batch, so both runs saw the same batches from the same initial model and
    # logged the same losses: the resume across processes continued where the pause left
    exported = eqxllm.from_pretrained(tmp_path / "fsdp4" / "model")
    assert np.isfinite(np.asarray(exported.wte.weight)).all()
    np.testing.assert_allclose(result["loss_tensor=4"], result["loss_fsdp=4"], atol=1e-5)
    assert len(result["loss_fsdp=4"]) == 2
