"""The key map of the shared llama-like decoder (Llama, Mistral, Qwen, Mixtral, Gemma), as one table.

Each row is ``(Hugging Face key template, pytree path, switch)``: ``{i}`` in the key is the layer
(the path is then inside the stacked blocks), and the row applies when the :class:`DecoderSpec`
property named by the switch is true (``None``: always). Mixture-of-experts rows also name a
transform: a Hub checkpoint stores each expert as its own ``[out, in]`` matrix (``{j}``), eqxllm
stacks them as ``[experts, in, out]``.
"""

from collections.abc import Callable
from functools import reduce
from typing import NamedTuple

import numpy as np

from eqxllm.checkpoints.keymap import KeyMap, Param, drop_tied_head, transpose, transpose_back
from eqxllm.models.decoder_spec import DecoderSpec


class KeyRow(NamedTuple):
    hf: str
    path: str
    when: str | None = None
    transform: str | None = None  # a key of _TRANSFORMS


ToModel = Callable[[np.ndarray], tuple[np.ndarray, ...]]
ToHF = Callable[[tuple[np.ndarray, ...]], np.ndarray]
_TRANSFORMS: dict[str | None, tuple[ToModel, ToHF]] = {  # (to_model, to_hf)
    None: (lambda x: (x,), lambda xs: xs[0]),
    "transpose": (transpose, transpose_back),
}


_L = "model.layers.{i}."
DECODER_KEYS = (
    KeyRow("model.embed_tokens.weight", "embed.weight"),
    KeyRow("model.norm.weight", "norm.weight"),
    KeyRow("lm_head.weight", "lm_head.weight", "untied"),
    KeyRow(_L + "input_layernorm.weight", "pre_attn_norm.weight"),
    # one name, two roles: the pre-MLP norm without sandwich norms, the attention output's norm with them
    KeyRow(_L + "post_attention_layernorm.weight", "pre_mlp_norm.weight", "plain_norms"),
    KeyRow(_L + "post_attention_layernorm.weight", "post_attn_norm.weight", "sandwich_norms"),
    KeyRow(_L + "pre_feedforward_layernorm.weight", "pre_mlp_norm.weight", "sandwich_norms"),
    KeyRow(_L + "post_feedforward_layernorm.weight", "post_mlp_norm.weight", "sandwich_norms"),
    KeyRow(_L + "self_attn.q_proj.weight", "attn.q_proj.weight"),
    KeyRow(_L + "self_attn.k_proj.weight", "attn.k_proj.weight"),
    KeyRow(_L + "self_attn.v_proj.weight", "attn.v_proj.weight"),
    KeyRow(_L + "self_attn.o_proj.weight", "attn.o_proj.weight"),
    KeyRow(_L + "self_attn.q_proj.bias", "attn.q_proj.bias", "qkv_bias"),
    KeyRow(_L + "self_attn.k_proj.bias", "attn.k_proj.bias", "qkv_bias"),
    KeyRow(_L + "self_attn.v_proj.bias", "attn.v_proj.bias", "qkv_bias"),
    KeyRow(_L + "self_attn.o_proj.bias", "attn.o_proj.bias", "o_bias"),
    KeyRow(_L + "self_attn.q_norm.weight", "attn.q_norm.weight", "qk_norm"),
    KeyRow(_L + "self_attn.k_norm.weight", "attn.k_norm.weight", "qk_norm"),
    KeyRow(_L + "mlp.gate_proj.weight", "mlp.gate.weight", "dense"),
    KeyRow(_L + "mlp.up_proj.weight", "mlp.up.weight", "dense"),
    KeyRow(_L + "mlp.down_proj.weight", "mlp.down.weight", "dense"),
    KeyRow(_L + "mlp.gate_proj.bias", "mlp.gate.bias", "mlp_bias"),
    KeyRow(_L + "mlp.up_proj.bias", "mlp.up.bias", "mlp_bias"),
    KeyRow(_L + "mlp.down_proj.bias", "mlp.down.bias", "mlp_bias"),
    # Mixtral's layout on the Hub (transformers 5 fuses the experts in memory, and saves this layout back)
    KeyRow(_L + "block_sparse_moe.gate.weight", "mlp.router.weight", "moe"),
    KeyRow(_L + "block_sparse_moe.experts.{j}.w1.weight", "mlp.gate", "moe", "transpose"),
    KeyRow(_L + "block_sparse_moe.experts.{j}.w3.weight", "mlp.up", "moe", "transpose"),
    KeyRow(_L + "block_sparse_moe.experts.{j}.w2.weight", "mlp.down", "moe", "transpose"),
)
IGNORED = (".rotary_emb.inv_freq",)  # buffers some older checkpoints stored


def _where(path: str):
    parts = tuple(path.split("."))
    return lambda m: reduce(getattr, parts, m)


def decoder_key_map(spec: DecoderSpec, rows: tuple[KeyRow, ...] = DECODER_KEYS) -> KeyMap:
    """The rows of ``rows`` that ``spec`` switches on, as a :class:`KeyMap`."""
    params = []
    for row in rows:
        if row.when is not None and not getattr(spec, row.when):
            continue
        layered = "{i}" in row.hf
        where = _where("blocks.blocks." + row.path if layered else row.path)
        to_model, to_hf = _TRANSFORMS[row.transform]
        n = spec.num_layers if layered else 0
        params.append(
            Param(
                key=row.hf, leaves=(where,), num_layers=n, num_experts=spec.num_experts, to_model=to_model, to_hf=to_hf
            )
        )
    return KeyMap(params=params, ignore=IGNORED)


BASE_MODEL_RENAMES = (("layers.", "model.layers."), ("embed_tokens.", "model.embed_tokens."), ("norm.", "model.norm."))


def rename_keys(
    tensors: dict[str, np.ndarray], renames: tuple[tuple[str, str], ...], *, skip: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    """Keys brought to the ``*ForCausalLM`` layout: the first matching ``(old prefix, new prefix)``
    of ``renames`` is applied (e.g. :data:`BASE_MODEL_RENAMES` for base-model checkpoints without
    ``model.``); keys starting with a prefix in ``skip`` are dropped."""
    out = {}
    for key, value in tensors.items():
        if key.startswith(skip):
            continue
        for old, new in renames:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


def drop_decoder_tied_head(tensors: dict[str, np.ndarray], tied: bool) -> dict[str, np.ndarray]:
    return drop_tied_head(tensors, tied, "model.embed_tokens.weight")
