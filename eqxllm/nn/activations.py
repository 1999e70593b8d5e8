"""Activation functions by the names Hugging Face configs use.

The smooth ones carry their derivative as one closed-form expression (``jax.custom_jvp``), so reverse
mode keeps a single ``[..., hidden]`` array per activation, its slope, for the backward pass. Left to
autodiff, GELU's tanh form keeps four or five intermediates of that size (``x**2``, the tanh, ``1 -
tanh**2``, ...), and inside a scan over layers each of them is stacked per layer and written once more.
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _with_slope(value_and_slope: Callable[[Array], tuple[Array, Array]]) -> Callable[[Array], Array]:
    """The elementwise function ``x -> value_and_slope(x)[0]``, differentiated as ``slope * dx``."""

    @jax.custom_jvp
    def fn(x: Array) -> Array:
        return value_and_slope(x)[0]

    def jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
        value, slope = value_and_slope(primals[0])
        return value, slope * tangents[0]

    fn.defjvp(jvp)
    return fn


def _gelu_tanh(x: Array) -> tuple[Array, Array]:
    # x * Phi(x) with Phi ~ (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2 (Hendrycks & Gimpel, 2016),
    # the same expression as jax.nn.gelu(approximate=True)
    t = jnp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3))
    cdf = 0.5 * (1.0 + t)
    return x * cdf, cdf + 0.5 * x * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x)


def _gelu_erf(x: Array) -> tuple[Array, Array]:
    # x * Phi(x) with the Gaussian CDF Phi written with erfc, as jax.nn.gelu(approximate=False);
    # d/dx = Phi(x) + x * phi(x), phi the Gaussian density
    cdf = 0.5 * jax.lax.erfc(-x * _INV_SQRT_2)
    return x * cdf, cdf + x * _INV_SQRT_2PI * jnp.exp(-0.5 * x * x)


def _silu(x: Array) -> tuple[Array, Array]:
    # x * sigmoid(x) (Elfwing et al., 2018); d/dx = s (1 + x (1 - s))
    s = jax.nn.sigmoid(x)
    return x * s, s * (1.0 + x * (1.0 - s))


gelu_tanh = _with_slope(_gelu_tanh)
gelu_erf = _with_slope(_gelu_erf)
silu = _with_slope(_silu)

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    # tanh approximation of GELU: GPT-2's "gelu_new", Gemma's "gelu_pytorch_tanh".
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_tanh": gelu_tanh,
    # exact erf GELU: torch's nn.GELU(), T5's "gelu".
    "gelu": gelu_erf,
    "relu": jax.nn.relu,
    "silu": silu,
    "swish": silu,
}


# the names transformers' ACT2FN knows for eqxllm's own aliases, written into an exported config.json
_HF_NAMES = {"gelu_tanh": "gelu_pytorch_tanh"}


def hf_activation(name: str) -> str:
    """``name`` as a ``config.json`` holds it for ``transformers`` (which has no ``"gelu_tanh"``)."""
    return _HF_NAMES.get(name, name)


def activation(name: str) -> Callable[[Array], Array]:
    """The activation called ``name`` (a key of :data:`ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None
