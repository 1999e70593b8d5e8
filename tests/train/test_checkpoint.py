"""Training checkpoints that leave out a rebuilt base (a LoRA run's): what they hold, how they restore,
the base's fingerprint, and checkpoints that hold the whole model."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.errors import CheckpointError
from eqxllm.lora import LoraLinear, apply_lora, lora_filter
from eqxllm.train import init_opt_state, make_optimizer
from eqxllm.train.checkpoint import RebuiltBase, TrainCheckpointer
from eqxllm.train.fingerprint import weights_fingerprint

from ._common import OPTIM, tiny_model


def _lora(seed: int = 0, vocab: int = 4096):
    """The tiny GPT-2 with a 4096-token vocabulary (a base of ~0.7 MB against ~10 kB of adapters),
    its attention adapted, and ``B`` set so that the adapters are not their initial zeros."""
    model = apply_lora(tiny_model(seed, vocab_size=vocab), rank=2, alpha=4.0, targets="attn", key=jax.random.key(1))
    trained = [jnp.full_like(a.lora_b, 0.25) for a in _adapters(model)]
    return eqx.tree_at(lambda m: [a.lora_b for a in _adapters(m)], model, trained)


def _adapters(model) -> list[LoraLinear]:
    return [x for x in jax.tree.leaves(model, is_leaf=lambda x: isinstance(x, LoraLinear)) if isinstance(x, LoraLinear)]


def _state(model):
    optimizer = make_optimizer(OPTIM, model)
    opt_state = init_opt_state(optimizer, model)
    # moments that are not zeros, so that restoring them is visible
    return jax.tree.map(lambda x: x + 0.5 if eqx.is_inexact_array(x) else x, opt_state)


def _size(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _arrays(tree):
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array))]


def _assert_same(a, b):
    for x, y in zip(_arrays(a), _arrays(b), strict=True):
        np.testing.assert_array_equal(x, y)


def _rebuilt(model) -> RebuiltBase:
    return RebuiltBase.of(model, lora_filter(model), "--init-from base")


def test_a_lora_checkpoint_holds_the_adapters_and_restores_onto_the_rebuilt_base(tmp_path):
    model = _lora()
    opt_state = _state(model)
    key = jax.random.key(5)
    full = TrainCheckpointer(tmp_path / "full")
    full.save(3, model, opt_state, key, {"data_step": 3})
    light = TrainCheckpointer(tmp_path / "light", rebuilt=_rebuilt(model))
    light.save(3, model, opt_state, key, {"data_step": 3})
    base_bytes = sum(x.nbytes for x in _arrays(eqx.filter(model, lora_filter(model), inverse=True)))
    assert _size(tmp_path / "full") > base_bytes / 2  # (Orbax compresses a little)
    assert _size(tmp_path / "light") < base_bytes / 4  # the base is not in it

    # the run rebuilds its model (adapters freshly initialised) and restores the trained state onto it
    fresh = apply_lora(tiny_model(0, vocab_size=4096), rank=2, alpha=4.0, targets="attn", key=jax.random.key(9))
    fresh_opt = init_opt_state(make_optimizer(OPTIM, fresh), fresh)
    reader = TrainCheckpointer(tmp_path / "light", rebuilt=_rebuilt(fresh))
    restored, restored_opt, restored_key, meta = reader.restore(3, fresh, fresh_opt)
    _assert_same(restored, model)
    _assert_same(restored_opt, opt_state)
    np.testing.assert_array_equal(jax.random.key_data(restored_key), jax.random.key_data(key))
    assert meta == {"step": 3, "data_step": 3}
    for c in (full, light, reader):
        c.close()


def test_a_changed_base_is_refused(tmp_path):
    model = _lora(seed=0)
    writer = TrainCheckpointer(tmp_path, rebuilt=_rebuilt(model))
    writer.save(1, model, _state(model), jax.random.key(0), {})
    other = _lora(seed=1)  # the same architecture, other base weights
    reader = TrainCheckpointer(tmp_path, rebuilt=_rebuilt(other))
    with pytest.raises(CheckpointError, match=r"different base than --init-from base gives now .*written over"):
        reader.restore(1, other, _state(other))
    # a checkpoint without its base cannot be restored by a reader that rebuilds nothing
    with pytest.raises(CheckpointError, match=r"holds the trained part of a model only .*--init-from base"):
        TrainCheckpointer(tmp_path).restore(1, model, _state(model))


def test_a_checkpoint_of_the_whole_model_restores_whole(tmp_path):
    """Checkpoints written before LoRA runs left their base out hold it: it comes from the checkpoint."""
    model = _lora(seed=0)
    TrainCheckpointer(tmp_path).save(2, model, _state(model), jax.random.key(0), {})
    other = _lora(seed=1)
    restored, *_ = TrainCheckpointer(tmp_path, rebuilt=_rebuilt(other)).restore(2, other, _state(other))
    _assert_same(restored, model)


def test_the_fingerprint_sees_every_element_its_place_dtype_and_shape():
    x = jnp.arange(24, dtype=jnp.float32).reshape(4, 6) / 7
    base = weights_fingerprint([x])
    assert weights_fingerprint([jnp.array(x)]) == base  # the same values in another buffer
    one_ulp = np.nextafter(np.float32(x[3, 5]), np.float32(np.inf))
    assert weights_fingerprint([x.at[3, 5].set(one_ulp)]) != base  # one element, by one ulp
    swapped = x.at[0, 0].set(x[0, 1]).at[0, 1].set(x[0, 0])
    assert weights_fingerprint([swapped]) != base  # the same values, two of them swapped
    assert weights_fingerprint([x.reshape(6, 4)]) != base
    assert weights_fingerprint([x.astype(jnp.bfloat16)]) != weights_fingerprint([x.astype(jnp.float16)])
    assert weights_fingerprint([x, x]) != base
    assert weights_fingerprint({"a": 1.0, "b": None}) == weights_fingerprint([])  # arrays only
    mixed = [x.astype(jnp.bfloat16), jnp.arange(3), jnp.array([True, False]), jax.random.key(0), jnp.int8(-1)]
    assert len(weights_fingerprint(mixed)) == 64
    assert weights_fingerprint(mixed) != weights_fingerprint([*mixed[:3], jax.random.key(1), mixed[4]])
