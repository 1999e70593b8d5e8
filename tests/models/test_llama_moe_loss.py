"""Mixtral's training loss: next-token cross-entropy plus ``router_aux_loss_coef`` times the
load-balancing loss, equal to transformers' ``MixtralForCausalLM`` (its ``aux_loss`` over every
layer's router logits); dense models keep the plain loss and report no ``aux_loss``."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.models import Llama, config_preset
from eqxllm.train.loss import next_token_loss

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.MixtralConfig(
        vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, router_aux_loss_coef=0.3,
        max_position_embeddings=64,
    )  # fmt: skip
    hf = transformers.MixtralForCausalLM(cfg)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.copy_(1.0 + 0.3 * torch.randn_like(p) if "norm" in name else 0.2 * torch.randn_like(p))
    hf.eval()
    path = tmp_path_factory.mktemp("mixtral")
    hf.save_pretrained(path)
    return hf, eqxllm.from_pretrained(path)


def test_loss_and_aux_loss_equal_transformers(pair):
    hf, model = pair
    batch = np.random.default_rng(0).integers(0, 128, size=(2, 13))
    loss, metrics = eqx.filter_jit(next_token_loss)(model, jnp.asarray(batch))
    with torch.no_grad():
        out = hf(torch.tensor(batch[:, :-1]), output_router_logits=True)
        ce = torch.nn.functional.cross_entropy(out.logits.reshape(-1, 128), torch.tensor(batch[:, 1:]).reshape(-1))
    assert abs(float(metrics["aux_loss"]) - float(out.aux_loss)) <= 1e-5
    assert abs(float(loss) - float(ce + 0.3 * out.aux_loss)) <= 1e-4
    assert float(metrics["tokens"]) == 24


def test_aux_loss_trains_the_router(pair):
    _, model = pair
    batch = jnp.asarray(np.random.default_rng(1).integers(0, 128, size=(2, 9)))
    grads = eqx.filter_grad(lambda m: next_token_loss(m, batch)[0])(model)
    router = grads.blocks.blocks.mlp.router.weight
    assert router.shape == (2, 4, 32) and bool(jnp.all(jnp.isfinite(router))) and float(jnp.abs(router).max()) > 0


def test_dense_models_report_no_aux_loss():
    model = Llama(config_preset("llama-tiny"), key=jax.random.key(0))
    _, metrics = next_token_loss(model, jnp.zeros((2, 6), jnp.int32))
    assert set(metrics) == {"loss", "tokens"}
