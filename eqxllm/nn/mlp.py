"""Position-wise feed-forward networks, plain and gated."""

import equinox as eqx
import jax
from jaxtyping import Array, Float, PRNGKeyArray

from eqxllm.nn.activations import activation as get_activation
from eqxllm.nn.dropout import dropout
from eqxllm.nn.linear import Linear
from eqxllm.nn.materialize import materialize


class MLP(eqx.Module):
    """``down(act(up(x)))`` (Vaswani et al., 2017), or gated ``down(act(gate(x)) * up(x))`` (Shazeer, 2020).

    Gated variants: SwiGLU (``activation="silu"``), GeGLU (``"gelu"`` exact, or ``"gelu_pytorch_tanh"``).
    Hugging Face names: GPT-2 ``c_fc``/``c_proj``; T5 ``wi``/``wo`` or ``wi_0`` (gate) / ``wi_1`` (up) / ``wo``;
    Gemma ``gate_proj``/``up_proj``/``down_proj``. Shapes: ``[seq, embed] -> [seq, embed]``.
    ``dropout_rate`` drops hidden units before ``down`` when a ``key`` is passed (T5's feed-forward).
    """

    up: Linear
    gate: Linear | None
    down: Linear
    activation: str = eqx.field(static=True)
    dropout_rate: float = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        hidden: int,
        *,
        activation: str,
        gated: bool,
        use_bias: bool,
        init_std: float = 0.02,
        out_init_std: float | None = None,
        dropout_rate: float = 0.0,
        key: PRNGKeyArray,
    ):
        up_key, gate_key, down_key = jax.random.split(key, 3)
        self.up = Linear(dim, hidden, use_bias=use_bias, init_std=init_std, key=up_key)
        self.gate = Linear(dim, hidden, use_bias=use_bias, init_std=init_std, key=gate_key) if gated else None
        out_std = init_std if out_init_std is None else out_init_std
        self.down = Linear(hidden, dim, use_bias=use_bias, init_std=out_std, key=down_key)
        get_activation(activation)  # validate the name now, not at the first call
        self.activation = activation
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
        self.dropout_rate = dropout_rate

    def __call__(self, x: Float[Array, "seq embed"], *, key: PRNGKeyArray | None = None) -> Float[Array, "seq embed"]:
        act = get_activation(self.activation)
        if self.gate is None:
            hidden = act(self.up(x))
        else:
            hidden = act(self.gate(x)) * self.up(x)
        if x.shape[0] == 1:  # one position, a decoding step: compute the activation once
            hidden = materialize(hidden)
        return self.down(dropout(hidden, self.dropout_rate, key))
