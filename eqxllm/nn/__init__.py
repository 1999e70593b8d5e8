"""The layer library: small, immutable, single-example Equinox modules that every family composes.

Dimension names used in every annotation (one vocabulary, used everywhere):

- ``seq``: query positions of one sequence.
- ``kv_seq``: key/value positions (the same sequence, an encoder output, or a KV cache's slots).
- ``heads``: query heads; ``kv_heads``: key/value heads (MQA: 1, GQA: divides ``heads``).
- ``head_dim``: width of one head.
- ``embed``: the residual stream width (``d_model``, ``n_embd``, ``hidden_size``).
- ``mlp``: the feed-forward hidden width.
- ``vocab``: vocabulary size (possibly padded).
- ``latent`` / ``latent_tokens``: the T5-VAE bottleneck width and token count.
- ``layers``: the leading axis of stacked (scanned) blocks.

Every module takes one example; ``jax.vmap`` adds a batch at the edge (loss, sampler).
"""

from eqxllm.nn.activations import ACTIVATIONS, activation
from eqxllm.nn.attention import Attention
from eqxllm.nn.attention_kernel import AttentionImpl, dot_product_attention
from eqxllm.nn.dropout import dropout
from eqxllm.nn.embedding import Embedding
from eqxllm.nn.kv_cache import KVCache
from eqxllm.nn.linear import Linear
from eqxllm.nn.linear_cross_entropy import linear_cross_entropy
from eqxllm.nn.masks import CausalMask, attention_mask
from eqxllm.nn.materialize import materialize
from eqxllm.nn.mlp import MLP
from eqxllm.nn.moe import MoE, load_balancing_loss
from eqxllm.nn.norms import LayerNorm, RMSNorm
from eqxllm.nn.positions import (
    RelativePositionBias,
    apply_rotary,
    relative_position_bucket,
    rotary_angles,
    sinusoidal_positions,
)
from eqxllm.nn.ring_cache import RingCache
from eqxllm.nn.stack import Stack

__all__ = [
    "ACTIVATIONS",
    "Attention",
    "AttentionImpl",
    "CausalMask",
    "Embedding",
    "KVCache",
    "LayerNorm",
    "Linear",
    "linear_cross_entropy",
    "MLP",
    "MoE",
    "RMSNorm",
    "RelativePositionBias",
    "RingCache",
    "Stack",
    "activation",
    "apply_rotary",
    "attention_mask",
    "dot_product_attention",
    "dropout",
    "load_balancing_loss",
    "materialize",
    "relative_position_bucket",
    "rotary_angles",
    "sinusoidal_positions",
]
