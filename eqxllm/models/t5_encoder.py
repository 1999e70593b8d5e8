"""T5's encoder alone (Raffel et al., 2020): Hugging Face's ``T5EncoderModel`` / ``MT5EncoderModel``,
the text encoder of embedding models and of diffusion models (the T5 v1.1 XXL encoder).

How this differs from :class:`~eqxllm.models.T5`: the embedding table ``shared`` and the
bidirectional encoder :class:`~eqxllm.models.t5.T5Stack` (relative-position bias, pre-norm RMSNorm
layers, final norm), and nothing else: no decoder is allocated, no head. The pass is the one
:meth:`T5.encode` runs (:func:`~eqxllm.models.t5.encoder_states`), so ``T5Encoder.from_t5(t5)(ids)``
equals ``t5.encode(ids)``. The config is the family's :class:`T5Config`, whose decoder fields are
kept (a checkpoint's ``config.json`` carries them) and unused.

Axes: ``seq`` input tokens, ``embed`` the model width ``d_model``.
"""

import equinox as eqx
import jax
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from eqxllm.errors import InputError
from eqxllm.models.t5 import T5, T5Stack, encoder_states, shared_embedding
from eqxllm.models.t5_config import T5Config
from eqxllm.nn import Embedding

__all__ = ["T5Encoder"]


class T5Encoder(eqx.Module):
    """T5's encoder: ids ``[seq]`` -> final hidden states ``[seq, embed]`` (after the final norm),
    what transformers' ``T5EncoderModel(...).last_hidden_state`` gives (Raffel et al., 2020)."""

    shared: Embedding
    encoder: T5Stack
    config: T5Config = eqx.field(static=True)

    def __init__(self, config: T5Config, *, key: PRNGKeyArray):
        """Random weights drawn as :class:`T5` draws its encoder's: ``T5Encoder(cfg, key=k)`` is the
        encoder of ``T5(cfg, key=k)``."""
        emb_key, _, enc_key, _, _ = jax.random.split(key, 5)  # T5's split: table, -, encoder, -, -
        self.config = config
        self.shared = shared_embedding(config, key=emb_key)
        self.encoder = T5Stack(config, decoder=False, key=enc_key)

    def __call__(
        self,
        input_ids: Int[Array, " seq"],
        *,
        mask: Bool[Array, " seq"] | None = None,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "seq embed"]:
        """The encoder's final hidden states ``[seq, embed]``. ``mask`` ``[seq]`` marks real
        (non-padding) tokens: padding is not attended to, and padded positions hold meaningless
        values (pool over ``mask``). Dropout only with ``key``. Ids outside the vocabulary, or a
        mask whose length is not the ids', raise :class:`InputError`."""
        return encoder_states(self.config, self.shared, self.encoder, input_ids, mask=mask, key=key)

    @classmethod
    def from_t5(cls, t5: T5) -> "T5Encoder":
        """The encoder of an encoder-decoder :class:`T5` (its arrays, not copies): the same states as
        ``t5.encode``. The original Transformer's separate decoder table is not needed and left behind."""
        if not isinstance(t5, T5):
            raise InputError(f"T5Encoder.from_t5 takes a T5, got {type(t5).__name__}")
        skeleton = eqx.filter_eval_shape(cls, t5.config, key=jax.random.key(0))  # shapes only
        return eqx.tree_at(lambda m: (m.shared, m.encoder), skeleton, (t5.shared, t5.encoder))
