"""Every family's ``attention_impl`` is checked when its config is made: any other string used to be
kept and reach the kernel as a request for cuDNN ("cuDNN is not detected" at the first call on a
CPU, cuDNN silently on a GPU)."""

import jaxtyping
import pytest

from eqxllm.errors import ConfigError
from eqxllm.models import GemmaConfig, GPT2Config, T5Config, config_preset
from eqxllm.models.t5_vae_config import T5VAEConfig

CONFIGS = {
    "gpt2": GPT2Config.tiny,
    "llama": lambda: config_preset("llama-tiny"),
    "gemma": lambda: GemmaConfig.tiny(1),
    "t5": T5Config.tiny,
}


@pytest.fixture(autouse=True)
def _as_users_call_it(monkeypatch):
    # without the suite's jaxtyping hook, whose check of the Literal annotation would answer first
    monkeypatch.setattr(jaxtyping.config, "jaxtyping_disable", True)


@pytest.mark.parametrize("family", CONFIGS)
@pytest.mark.parametrize("impl", ["flash", "Flash", "xla "])
def test_an_unknown_attention_impl_is_refused(family, impl):
    owner = type(CONFIGS[family]()).__name__
    with pytest.raises(
        ConfigError, match=rf"{owner}\.attention_impl='{impl}' is unknown; expected one of \['cudnn', 'jax', 'xla'\]"
    ):
        CONFIGS[family]().replace(attention_impl=impl)


def test_a_t5_vae_checks_its_nested_t5():
    with pytest.raises(ConfigError, match=r"T5Config\.attention_impl='flash' is unknown"):
        T5VAEConfig(t5=T5Config.tiny().replace(attention_impl="flash"))


@pytest.mark.parametrize("family", CONFIGS)
def test_the_known_impls_are_kept(family):
    for impl in ("xla", "jax", "cudnn"):
        assert CONFIGS[family]().replace(attention_impl=impl).attention_impl == impl
