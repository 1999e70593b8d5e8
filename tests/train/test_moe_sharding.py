"""Expert parallelism: the ``expert`` mesh axis, the partition rules of a mixture of experts' stacked
weights, and sharded training steps of a small MoE stack that equal the single-device step.

The sharded runs need 8 devices, fixed when JAX starts, so they run in one subprocess with 8 virtual
CPU devices (``_moe_sharded_run.py``) that reports back as JSON."""

import json

import pytest
from jax.sharding import PartitionSpec as P

from eqxllm.errors import ConfigError
from eqxllm.train import DEFAULT_RULES, make_mesh, parse_mesh_spec, partition_spec

from ._common import REPO_ROOT, run_script

LAYOUTS = ["data=8", "fsdp=2,tensor=4", "expert=8", "data=2,expert=4", "fsdp=2,expert=2,tensor=2"]
# SGD: the sharded update differs from the single-device one only by float rounding of the reductions
PARAM_TOL = 1e-5


def test_expert_axis_only_when_named():
    assert parse_mesh_spec("data=2") == {"data": 2, "fsdp": 1, "tensor": 1}
    assert parse_mesh_spec("expert=4,data=2") == {"data": 2, "fsdp": 1, "tensor": 1, "expert": 4}
    assert make_mesh("data=1").axis_names == ("data", "fsdp", "tensor")
    # tensor stays innermost, experts next to it
    assert make_mesh("expert=1").axis_names == ("data", "fsdp", "expert", "tensor")
    with pytest.raises(ConfigError, match=r"unknown axes \['experts'\]; expected some of .*'expert'"):
        parse_mesh_spec("experts=2")


def test_partition_spec_of_expert_weights():
    mesh = {"data": 1, "fsdp": 2, "tensor": 2, "expert": 4}
    # stacked [layers, experts, embed, mlp]: experts over `expert`, mlp over tensor, embed over fsdp
    for name in ("gate", "up"):
        assert partition_spec(f".blocks.blocks.moe.{name}", (3, 8, 16, 32), 1, mesh, DEFAULT_RULES) == P(
            None, "expert", "fsdp", "tensor"
        )
    assert partition_spec(".blocks.blocks.moe.down", (3, 8, 32, 16), 1, mesh, DEFAULT_RULES) == P(
        None, "expert", "tensor", "fsdp"
    )
    # unstacked [experts, embed, mlp]
    assert partition_spec(".moe.gate", (8, 16, 32), 0, mesh, DEFAULT_RULES) == P("expert", "fsdp", "tensor")
    # the router is small and every token needs all of it: no expert split
    assert partition_spec(".blocks.blocks.moe.router.weight", (3, 8, 16), 1, mesh, DEFAULT_RULES) == P(
        None, None, "fsdp"
    )
    # a dense MLP beside the experts is untouched by the new rules
    dense = partition_spec(".blocks.blocks.mlp.gate.weight", (3, 32, 16), 1, mesh, DEFAULT_RULES)
    assert dense == P(None, "tensor", "fsdp")


def test_partition_spec_without_expert_axis_is_dense_like():
    mesh = {"data": 1, "fsdp": 2, "tensor": 2}
    assert partition_spec(".blocks.blocks.moe.gate", (3, 8, 16, 32), 1, mesh, DEFAULT_RULES) == P(
        None, None, "fsdp", "tensor"
    )
    # experts that the axis does not divide stay whole
    mesh = {"data": 1, "fsdp": 1, "tensor": 1, "expert": 4}
    assert partition_spec(".moe.down", (6, 32, 16), 0, mesh, DEFAULT_RULES) == P(None, None, None)


@pytest.fixture(scope="module")
def sharded_report():
    proc = run_script([str(REPO_ROOT / "tests/train/_moe_sharded_run.py"), *LAYOUTS], devices=8)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow  # one 8-device subprocess, shared by two tests
def test_sharded_mixtral_steps_match_single_device(sharded_report):
    assert sharded_report["devices"] == 8
    assert sharded_report["update"] > 10 * PARAM_TOL  # the comparison below is not vacuous
    for spec in LAYOUTS:
        result = sharded_report["layouts"][spec]
        assert result["loss_diff"] < 1e-5, spec
        assert result["param_diff"] < PARAM_TOL, spec


@pytest.mark.slow  # one 8-device subprocess, shared by two tests
def test_experts_are_really_split(sharded_report):
    layouts = sharded_report["layouts"]
    experts = 8
    for spec, ways in (("expert=8", 8), ("data=2,expert=4", 4), ("fsdp=2,expert=2,tensor=2", 2)):
        for name in ("gate", "up", "down"):
            shape, shard = layouts[spec]["shapes"][f".blocks.blocks.mlp.{name}"]
            assert shard[0] == shape[0] and shard[1] == experts // ways, (spec, name)
    # without an expert axis the experts stay whole and the mlp width splits like a dense MLP's
    shape, shard = layouts["fsdp=2,tensor=4"]["shapes"][".blocks.blocks.mlp.gate"]
    assert shard[1] == experts and shard[3] == shape[3] // 4
    shape, shard = layouts["data=8"]["shapes"][".blocks.blocks.mlp.down"]
    assert shard == shape
