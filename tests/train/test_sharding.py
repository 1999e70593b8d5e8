"""Meshes, partition rules and sharded training steps.

The sharded runs need 8 devices, and JAX fixes the device count when it starts, so they run in one
subprocess with 8 virtual CPU devices (``_sharded_run.py``) that reports back as JSON."""

import json

import pytest
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P

from eqxllm.errors import ConfigError
from eqxllm.train import DEFAULT_RULES, check_batch_size, make_mesh, parse_mesh_spec, partition_spec

from ._common import REPO_ROOT, run_script

LAYOUTS = ["data=8", "fsdp=8", "data=2,fsdp=2,tensor=2", "fsdp=2,tensor=4"]
# Adam divides by sqrt(v): a gradient that differs by float rounding between layouts (reductions
# summed in another order) moves a parameter by up to ~1% of its update; updates here are ~1e-3
PARAM_TOL = 5e-5


def test_parse_mesh_spec_fills_absent_axes():
    assert parse_mesh_spec("data=4,fsdp=2,tensor=1") == {"data": 4, "fsdp": 2, "tensor": 1}
    assert parse_mesh_spec(" fsdp = 8 ") == {"data": 1, "fsdp": 8, "tensor": 1}
    assert parse_mesh_spec({"tensor": 2}) == {"data": 1, "fsdp": 1, "tensor": 2}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("data=4,fsdp", r"axis=size.*'fsdp'"),
        ("data=four", r"axis=size.*'data=four'"),
        ("data=2,data=2", r"axis 'data' twice"),
        ("pipeline=2", r"unknown axes \['pipeline'\]"),
        ("data=0", r">= 1.*'data': 0"),
        ("", r"axis=size"),
    ],
)
def test_malformed_mesh_spec_is_refused(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_mesh_spec(spec)


def test_mesh_must_use_every_device():
    # the test process has one CPU device
    with pytest.raises(ConfigError, match=r"mesh data=2 x fsdp=2 x tensor=1 has 4 devices but 1 are available"):
        make_mesh("data=2,fsdp=2")
    assert make_mesh("data=1").shape == {"data": 1, "fsdp": 1, "tensor": 1}


def test_partition_spec_tensor_and_fsdp():
    mesh = {"data": 1, "fsdp": 2, "tensor": 2}
    q = ".blocks.blocks.attn.q_proj.weight"
    # stacked [layers, out, in]: layers never sharded, out over tensor, in over fsdp
    assert partition_spec(q, (4, 32, 16), 1, mesh, DEFAULT_RULES) == P(None, "tensor", "fsdp")
    assert partition_spec(".blocks.blocks.attn.q_proj.bias", (4, 32), 1, mesh, DEFAULT_RULES) == P(None, "tensor")
    assert partition_spec(".blocks.blocks.mlp.down.weight", (4, 16, 64), 1, mesh, DEFAULT_RULES) == P(
        None, "fsdp", "tensor"
    )
    # o_proj's bias lives on the (unsplit) output features
    assert partition_spec(".blocks.blocks.attn.o_proj.bias", (4, 16), 1, mesh, DEFAULT_RULES) == P(None, None)
    # an embedding: no tensor rule, fsdp on its largest dim
    assert partition_spec(".wte.weight", (128, 32), 0, mesh, DEFAULT_RULES) == P("fsdp", None)
    # vectors (norms, biases) stay whole under fsdp, even stacked ones that are 2-D
    assert partition_spec(".blocks.blocks.ln_1.weight", (4, 32), 1, mesh, DEFAULT_RULES) == P(None, None)


def test_partition_spec_never_splits_layers_or_indivisible_dims():
    mesh = {"data": 1, "fsdp": 8, "tensor": 3}
    # layers (8) is divisible by fsdp but is not eligible; 4 and 6 are not divisible by 8
    assert partition_spec(".blocks.blocks.mlp.up.weight", (8, 6, 4), 1, mesh, DEFAULT_RULES) == P(None, "tensor", None)
    assert partition_spec(".blocks.blocks.mlp.up.weight", (8, 4, 4), 1, mesh, DEFAULT_RULES) == P(None, None, None)
    # fsdp picks the largest divisible dim, not merely the largest
    assert partition_spec(".wte.weight", (100, 16), 0, mesh, DEFAULT_RULES) == P(None, "fsdp")


def test_first_matching_rule_wins():
    mesh = {"data": 1, "fsdp": 1, "tensor": 2}
    rules = ((r"q_proj\.weight$", (None, "tensor")), *DEFAULT_RULES)
    assert partition_spec(".attn.q_proj.weight", (8, 8), 0, mesh, rules) == P(None, "tensor")
    assert partition_spec(".attn.q_proj.weight", (8, 8), 0, mesh, DEFAULT_RULES) == P("tensor", None)


@pytest.fixture(scope="module")
def sharded_report():
    proc = run_script([str(REPO_ROOT / "tests/train/_sharded_run.py"), *LAYOUTS], devices=8)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow  # one 8-device subprocess, shared by three tests
def test_sharded_steps_match_single_device(sharded_report):
    assert sharded_report["devices"] == 8
    assert sharded_report["update"] > 10 * PARAM_TOL  # the comparison below is not vacuous
    for spec in LAYOUTS:
        result = sharded_report["layouts"][spec]
        assert result["loss_diff"] < 1e-5, spec
        assert result["param_diff"] < PARAM_TOL, spec


@pytest.mark.slow  # one 8-device subprocess, shared by three tests
def test_parameters_are_really_split(sharded_report):
    layouts = sharded_report["layouts"]
    assert layouts["data=8"]["split"] == [] and layouts["data=8"]["moments_split"] == 0
    for spec in ("fsdp=8", "data=2,fsdp=2,tensor=2", "fsdp=2,tensor=4"):
        split = set(layouts[spec]["split"])
        assert {".blocks.blocks.attn.q_proj.weight", ".blocks.blocks.mlp.down.weight"} <= split, spec
        assert layouts[spec]["moments_split"] > 0, spec  # Adam moments follow the parameters
        for path, (shape, shard) in layouts[spec]["shapes"].items():
            if path.startswith(".blocks."):
                assert shard[0] == shape[0], (spec, path)  # the layers axis is never split
    assert ".wte.weight" in layouts["fsdp=8"]["split"]
    # tensor=4 splits o_proj's input features ([layers, out, in] = [2, 32, 32] -> in / 4)
    assert layouts["fsdp=2,tensor=4"]["shapes"][".blocks.blocks.attn.o_proj.weight"][1][2] == 32 // 4


@pytest.mark.slow  # one 8-device subprocess, shared by three tests
def test_the_weights_fingerprint_does_not_depend_on_the_layout(sharded_report):
    """A LoRA checkpoint is resumed on whatever mesh the next run has: its base's fingerprint, an
    integer reduction, is the same bit for bit on one device and split across eight."""
    layouts = sharded_report["layouts"]
    assert {layouts[spec]["fingerprint"] for spec in LAYOUTS} == {sharded_report["fingerprint"]}
    assert any(layouts[spec]["split"] for spec in LAYOUTS)  # the arrays were really split


def test_indivisible_batch_is_refused(sharded_report):
    assert sharded_report["indivisible_error"] is not None
    assert "global batch size 6 is not divisible by data x fsdp = 4 x 2 = 8" in sharded_report["indivisible_error"]


def test_batch_must_split_into_micro_batches_over_the_batch_shards():
    # checked when a run starts (train() calls it before writing), not at the first step
    mesh = AbstractMesh((2, 2, 2), ("data", "fsdp", "tensor"))
    check_batch_size(16, mesh, accum_steps=4)
    check_batch_size(8, mesh)
    with pytest.raises(ConfigError, match=r"8 is not divisible by accum_steps=4 x 4 batch shards .* = 16"):
        check_batch_size(8, mesh, accum_steps=4)
