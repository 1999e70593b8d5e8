"""The switches of the shared llama-like decoder, derived from each family's config.

A family config (``GemmaConfig``, ``LlamaConfig``) keeps Hugging Face's field names and validation;
its ``decoder`` property translates them into this one small record, which is all that
:mod:`eqxllm.models.decoder` and the shared checkpoint table read.
"""

from dataclasses import dataclass

from eqxllm.nn.attention_kernel import AttentionImpl
from eqxllm.nn.moe import Dispatch
from eqxllm.nn.positions import Rope


@dataclass(frozen=True, kw_only=True)
class DecoderSpec:
    """One llama-like decoder: sizes, then what differs between the families.

    - ``unit_offset_norms``: RMSNorm scales ``1 + w`` (Gemma) instead of ``w`` (Llama, Qwen).
    - ``embed_scale``: embeddings multiplied by ``sqrt(hidden_size)`` (Gemma).
    - ``sandwich_norms``: sub-layer outputs normalised before the residual add (Gemma 2/3).
    - ``qk_norm``: RMSNorm over each query and key head (Gemma 3, Qwen3).
    - ``qkv_bias`` / ``o_bias`` / ``mlp_bias``: biases on the q/k/v projections (Qwen2 has them
      without an output bias), on the output projection, on the MLP.
    - ``attention_scale``: ``None`` is ``head_dim**-0.5``.
    - ``attn_softcap`` / ``final_softcap``: tanh caps of attention and final logits (Gemma 2).
    - ``sliding_flags``: per layer, whether it attends over the last ``sliding_window`` keys only
      (Mistral: every layer; Gemma 2/3 and Qwen: a pattern).
    - ``rope`` / ``local_rope``: rotary base and scaling of global and of sliding layers
      (``local_rope=None``: the same as ``rope``; Gemma 3 gives local layers their own base).
    - ``num_experts`` / ``num_experts_per_tok``: a mixture-of-experts MLP (0: a dense one), whose
      load-balancing loss training adds with weight ``router_aux_loss_coef``.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    activation: str
    norm_eps: float
    max_position_embeddings: int
    rope: Rope
    local_rope: Rope | None = None
    unit_offset_norms: bool = False
    embed_scale: bool = False
    sandwich_norms: bool = False
    qk_norm: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    attention_scale: float | None = None
    attn_softcap: float | None = None
    final_softcap: float | None = None
    sliding_flags: tuple[bool, ...] = ()
    sliding_window: int | None = None
    tie_word_embeddings: bool = False
    num_experts: int = 0
    num_experts_per_tok: int = 0
    router_aux_loss_coef: float = 0.0
    initializer_range: float = 0.02
    attention_impl: AttentionImpl = "xla"
    remat: str = "none"
    moe_dispatch: Dispatch = "grouped"

    @property
    def untied(self) -> bool:
        return not self.tie_word_embeddings

    @property
    def plain_norms(self) -> bool:
        """Norms around the sub-layers' inputs only (Gemma 1, Llama, Mistral, Qwen)."""
        return not self.sandwich_norms

    @property
    def moe(self) -> bool:
        return self.num_experts > 0

    @property
    def dense(self) -> bool:
        return self.num_experts == 0
