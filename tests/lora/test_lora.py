"""LoRA core: the adapted model starts equal to the base, the adapter maths against a hand-written
formula, merging restores the original type and structure, the filter spec leaves gradients and
optimizer state on adapters only, dropout keys, a bfloat16 frozen base, and each bad input's error."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import eqxllm
from eqxllm.errors import ConfigError
from eqxllm.lora import (
    LoraLinear,
    apply_lora,
    cast_frozen,
    linear_modules,
    lora_filter,
    merge_lora,
    trainable_params,
    with_adapter_dropout,
    with_dropout_keys,
)
from eqxllm.models.gpt2 import GPT2, GPT2Config
from eqxllm.nn import Linear

CFG = GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0,
                 resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # fmt: skip
IDS = jnp.arange(8) % 64


@pytest.fixture(scope="module")
def base():
    return GPT2(CFG, key=jax.random.key(0))


def _with_b(model, value=0.1):
    return eqx.tree_at(
        lambda m: [m.blocks.blocks.attn.q_proj.lora_b, m.blocks.blocks.attn.v_proj.lora_b],
        model,
        [value * jnp.ones_like(model.blocks.blocks.attn.q_proj.lora_b)] * 2,
    )


def test_paths_and_replacement(base):
    assert "blocks.blocks.attn.q_proj" in linear_modules(base)
    m = apply_lora(base, rank=2, alpha=4.0, targets=r"q_proj|v_proj", key=jax.random.key(1))
    q = m.blocks.blocks.attn.q_proj
    assert isinstance(q, LoraLinear) and isinstance(m.blocks.blocks.attn.k_proj, Linear)
    assert q.lora_a.shape == (2, 2, 16) and q.lora_b.shape == (2, 16, 2) and q.scale == 2.0  # stacked per layer
    np.testing.assert_array_equal(np.asarray(m(IDS)), np.asarray(base(IDS)))  # B = 0: unchanged


def test_adapter_formula_and_merge(base):
    m = _with_b(apply_lora(base, rank=2, alpha=4.0, targets=r"q_proj|v_proj", key=jax.random.key(1)))
    q = m.blocks.blocks.attn.q_proj
    x = jax.random.normal(jax.random.key(3), (5, 16))
    layer0 = jax.tree.map(lambda a: a[0], q)
    want = x @ q.weight[0].T + q.bias[0] + 2.0 * x @ q.lora_a[0].T @ q.lora_b[0].T
    np.testing.assert_allclose(np.asarray(layer0(x)), np.asarray(want), atol=1e-5)
    merged = merge_lora(m)
    assert type(merged) is GPT2 and jax.tree.structure(merged) == jax.tree.structure(base)
    np.testing.assert_allclose(np.asarray(merged(IDS)), np.asarray(m(IDS)), atol=1e-5)
    assert np.abs(np.asarray(m(IDS)) - np.asarray(base(IDS))).max() > 1e-3


def test_only_adapters_get_gradients_and_optimizer_state(base):
    m = apply_lora(base, rank=2, alpha=4.0, targets="attn", key=jax.random.key(1))
    spec = lora_filter(m)
    train, frozen = eqx.partition(m, spec)

    def loss(train, frozen):
        return jnp.mean(eqx.combine(train, frozen)(IDS) ** 2)

    grads = eqx.filter_grad(loss)(train, frozen)
    leaves = jax.tree.leaves(grads)
    assert len(leaves) == 8  # lora_a and lora_b of q, k, v, o
    assert sum(x.size for x in leaves) == sum(x.size for x in jax.tree.leaves(trainable_params(m)))
    state = optax.adam(1e-3).init(eqx.filter(m, spec))
    n_state = sum(x.size for x in jax.tree.leaves(state) if x.ndim)
    assert n_state == 2 * sum(x.size for x in leaves)


def test_dropout_keys_and_bf16_base(base):
    m = apply_lora(base, rank=2, alpha=4.0, targets="attn", dropout=0.5, key=jax.random.key(1))
    m = _with_b(m)
    dropped = with_dropout_keys(m, jax.random.key(5))
    assert dropped.blocks.blocks.attn.q_proj.dropout_key.shape == (2,)  # one key per stacked layer
    assert np.abs(np.asarray(dropped(IDS)) - np.asarray(m(IDS))).max() > 1e-4
    half = cast_frozen(m, jnp.bfloat16)
    assert half.blocks.blocks.attn.q_proj.weight.dtype == jnp.bfloat16
    assert half.blocks.blocks.attn.q_proj.lora_a.dtype == jnp.float32
    assert half.wte.weight.dtype == jnp.bfloat16


def test_each_example_of_a_batch_draws_its_own_adapter_mask(base):
    """The adapters' keys live in the model, which a loss's ``vmap`` closes over: keyed once per step,
    every example would share one dropout mask. eqxllm's losses redraw them per example."""
    from eqxllm.train.loss import _per_example

    m = _with_b(apply_lora(base, rank=2, alpha=4.0, targets="attn", dropout=0.5, key=jax.random.key(1)))
    rows = jnp.tile(IDS, (4, 1))
    keys = jax.random.split(jax.random.key(2), 4)
    logits = _per_example(m, lambda model, ids, k: model(ids, key=k), rows, keys)
    assert all(np.abs(np.asarray(logits[i] - logits[0])).max() > 1e-4 for i in range(1, 4))
    shared = with_adapter_dropout(m, jax.random.key(2))  # one mask for the batch: identical rows
    assert np.abs(np.asarray(jax.vmap(shared)(rows) - shared(IDS))).max() == 0
    assert with_adapter_dropout(m, None) is m


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(rank=0, alpha=1.0, targets="attn"), "rank must be a positive integer"),
        (dict(rank=-2, alpha=1.0, targets="attn"), "rank must be a positive integer"),
        (dict(rank=2, alpha=0.0, targets="attn"), "alpha must be finite and > 0"),
        (dict(rank=2, alpha=float("inf"), targets="attn"), "alpha must be finite and > 0, got inf"),
        (dict(rank=2, alpha=1.0, targets="attn", dropout=1.0), "dropout must be in"),
        (dict(rank=2, alpha=1.0, targets="nothing_here"), r"matches no linear layer.*blocks\.blocks\.attn\.q_proj"),
        (dict(rank=2, alpha=1.0, targets="(unclosed"), "not a valid regular expression"),
    ],
)
def test_errors(base, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        apply_lora(base, key=jax.random.key(0), **kwargs)


def test_a_mixture_of_experts_adapts_attention_never_its_router():
    from eqxllm.models import Llama, config_preset

    moe = eqx.filter_eval_shape(Llama, config_preset("mixtral-tiny"), key=jax.random.key(0))
    assert "blocks.blocks.mlp.router" in linear_modules(moe)
    with pytest.raises(ConfigError, match=r"matches only mixture-of-experts routers \(blocks\.blocks\.mlp\.router\)"):
        apply_lora(moe, rank=2, alpha=1.0, targets="mlp", key=jax.random.key(0))
    adapted = apply_lora(Llama(config_preset("mixtral-tiny"), key=jax.random.key(0)), rank=2, alpha=1.0,
                         targets="attn|mlp", key=jax.random.key(1))  # fmt: skip
    assert [p for p, lin in linear_modules(adapted).items() if isinstance(lin, LoraLinear)] == [
        f"blocks.blocks.attn.{n}_proj" for n in "qkvo"
    ]


def test_no_double_apply(base):
    m = apply_lora(base, rank=2, alpha=1.0, targets="attn", key=jax.random.key(0))
    with pytest.raises(ConfigError, match="already has LoRA adapters"):
        apply_lora(m, rank=2, alpha=1.0, targets="mlp", key=jax.random.key(0))


def test_adapters_follow_their_base_weights_partition():
    from jax.sharding import PartitionSpec as P

    from eqxllm.train.sharding import DEFAULT_RULES, partition_spec

    mesh = {"data": 1, "fsdp": 1, "tensor": 2}
    spec = lambda path, shape: partition_spec(path, shape, 1, mesh, DEFAULT_RULES)  # noqa: E731
    # column-parallel q_proj: the output features of W and of B split; A is replicated
    assert spec(".blocks.blocks.attn.q_proj.weight", (2, 16, 16)) == P(None, "tensor", None)
    assert spec(".blocks.blocks.attn.q_proj.lora_b", (2, 16, 4)) == P(None, "tensor", None)
    assert spec(".blocks.blocks.attn.q_proj.lora_a", (2, 4, 16)) == P(None, None, None)
    # row-parallel o_proj: the input features of W and of A split; B is replicated
    assert spec(".blocks.blocks.attn.o_proj.weight", (2, 16, 16)) == P(None, None, "tensor")
    assert spec(".blocks.blocks.attn.o_proj.lora_a", (2, 4, 16)) == P(None, None, "tensor")
    assert spec(".blocks.blocks.attn.o_proj.lora_b", (2, 16, 4)) == P(None, None, None)


def test_a_failed_adapter_save_changes_nothing(base, tmp_path, monkeypatch):
    import eqxllm.lora.peft_export as export

    first = apply_lora(base, rank=2, alpha=4.0, targets="attn", key=jax.random.key(1))
    export.save_peft_adapter(first, tmp_path / "adapter")
    before = {p.name: p.read_bytes() for p in (tmp_path / "adapter").iterdir()}
    assert sorted(before) == [export.ADAPTER_CONFIG, export.ADAPTER_WEIGHTS]

    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(export, "write_file", full_disk)
    other = apply_lora(base, rank=4, alpha=4.0, targets="mlp", key=jax.random.key(2))
    for dst in (tmp_path / "adapter", tmp_path / "new" / "adapter"):
        with pytest.raises(OSError, match="No space left"):
            export.save_peft_adapter(other, dst)
    assert {p.name: p.read_bytes() for p in (tmp_path / "adapter").iterdir()} == before
    assert not (tmp_path / "new").exists()


def test_an_adapter_save_cut_off_before_its_config_leaves_no_config(base, tmp_path, monkeypatch):
    import eqxllm.lora.peft_export as export

    dst = tmp_path / "adapter"
    export.save_peft_adapter(apply_lora(base, rank=2, alpha=4.0, targets="attn", key=jax.random.key(1)), dst)

    class Cut(BaseException):  # a kill: nothing after it runs
        pass

    def cut(path, text):
        raise Cut

    monkeypatch.setattr(export, "atomic_write_text", cut)
    with pytest.raises(Cut):  # the rank-4 mlp weights are in place, the rank-2 attn config must not stay
        export.save_peft_adapter(apply_lora(base, rank=4, alpha=4.0, targets="mlp", key=jax.random.key(2)), dst)
    assert sorted(p.name for p in dst.iterdir()) == [export.ADAPTER_WEIGHTS]


@pytest.mark.usefixtures("unchecked_annotations")  # called as a user calls it, without the type hook
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(rank=2, alpha="8"), "alpha must be a number, got '8'"),
        (dict(rank=2, alpha=None), "alpha must be a number, got None"),
        (dict(rank=2.0, alpha=1.0), "rank must be a positive integer, got 2.0"),
        (dict(rank=True, alpha=1.0), "rank must be a positive integer, got True"),
    ],
)
def test_numbers_of_the_wrong_type_are_refused(base, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        apply_lora(base, targets="attn", key=jax.random.key(0), **kwargs)


@pytest.mark.usefixtures("unchecked_annotations")  # typed int and float; users pass numpy and JAX scalars
def test_numpy_and_jax_numbers_are_plain_numbers_in_the_adapters(base):
    lora = apply_lora(base, rank=np.int64(2), alpha=jnp.float32(8.0), targets="attn", key=jax.random.key(0))
    layer = linear_modules(lora)["blocks.blocks.attn.q_proj"]
    assert isinstance(layer, LoraLinear) and type(layer.scale) is float and layer.scale == 4.0
    assert layer.lora_a.shape[-2] == 2


def test_saving_an_unmerged_lora_model_is_refused(base, tmp_path):
    """The checkpoint layout holds each LoraLinear's base weight only: the adapters would vanish."""
    lora = _with_b(apply_lora(base, rank=2, alpha=4.0, targets="attn", key=jax.random.key(0)))
    with pytest.raises(ConfigError, match=r"has LoRA adapters.*merge_lora\(model\).*save_peft_adapter"):
        eqxllm.save_pretrained(lora, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    eqxllm.save_pretrained(merge_lora(lora), tmp_path / "out")
    again = eqxllm.from_pretrained(tmp_path / "out")
    assert np.abs(np.asarray(again(IDS) - lora(IDS))).max() < 1e-5
