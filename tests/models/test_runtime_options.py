"""eqxllm.reconfigure: run-time options change on a model with weights; nothing else does.

And the reason ``moe_dispatch`` is one: per-example expert gradients need the dense dispatch."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.errors import ConfigError, InputError
from eqxllm.lora import apply_lora
from eqxllm.models import GPT2, Llama, config_preset
from eqxllm.models.gpt2 import GPT2Config
from eqxllm.models.t5_vae import T5VAE
from eqxllm.models.t5_vae_config import T5VAEConfig


@pytest.fixture(scope="module")
def gpt2():
    return GPT2(GPT2Config.tiny(), key=jax.random.key(0))


def test_runtime_options_change_and_the_weights_are_shared(gpt2):
    ids = jnp.arange(12) % gpt2.config.vocab_size
    changed = eqxllm.reconfigure(gpt2, attention_impl="jax", remat="dots")
    assert (changed.config.attention_impl, changed.config.remat) == ("jax", "dots")
    assert changed.config.replace(attention_impl="xla", remat="none") == gpt2.config
    assert all(a is b for a, b in zip(jax.tree.leaves(changed), jax.tree.leaves(gpt2), strict=True))
    np.testing.assert_allclose(np.asarray(changed(ids)), np.asarray(gpt2(ids)), atol=1e-5)
    assert eqxllm.reconfigure(gpt2) is gpt2


def test_nested_fields_are_named_with_a_dot():
    vae = T5VAE(T5VAEConfig(), key=jax.random.key(0))
    changed = eqxllm.reconfigure(vae, **{"t5.remat": "dots", "reg_weight": 0.5})
    assert (changed.config.t5.remat, changed.config.reg_weight) == ("dots", 0.5)


def test_what_is_not_a_runtime_option_is_refused(gpt2):
    with pytest.raises(ConfigError, match=r"\['n_layer'\] would change what the weights compute"):
        eqxllm.reconfigure(gpt2, n_layer=3)
    with pytest.raises(ConfigError, match=r"GPT2Config has no field\(s\) \['moe_dispatch'\]"):
        eqxllm.reconfigure(gpt2, moe_dispatch="dense")
    adapted = apply_lora(gpt2, rank=2, alpha=4.0, targets="attn", key=jax.random.key(1))
    with pytest.raises(InputError, match="before apply_lora"):
        eqxllm.reconfigure(adapted, remat="dots")
    with pytest.raises(InputError, match="needs an eqxllm model"):
        eqxllm.reconfigure(eqx.nn.Linear(2, 2, key=jax.random.key(0)), remat="dots")


def test_per_example_expert_gradients_need_the_dense_dispatch():
    grouped = Llama(config_preset("mixtral-tiny").replace(num_hidden_layers=1), key=jax.random.key(0))
    dense = eqxllm.reconfigure(grouped, moe_dispatch="dense")
    batch = jax.random.randint(jax.random.key(1), (3, 6), 0, grouped.config.vocab_size)
    gate = lambda grads: np.asarray(grads.blocks.blocks.mlp.gate)  # noqa: E731

    grad = eqx.filter_grad(lambda m, ids: jnp.mean(m(ids)[:, 0]))
    per_example = eqx.filter_jit(lambda model: jax.vmap(grad, in_axes=(None, 0))(model, batch))
    grad = eqx.filter_jit(grad)

    loop = np.stack([gate(grad(dense, ids)) for ids in batch])
    np.testing.assert_allclose(gate(per_example(dense)), loop, atol=1e-6)
    # the grouped dispatch's backward adds the expert gradients over the mapped axis (as training needs)
    summed = gate(per_example(grouped))
    np.testing.assert_allclose(summed[0], loop.sum(0), atol=1e-6)
    assert np.abs(loop[0] - loop.sum(0)).max() > 10 * 1e-6
