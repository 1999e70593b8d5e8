"""One validation layer for every ``config.json`` read from disk, before any family builds its config.

A hand-edited or foreign ``config.json`` can hold a string where a boolean belongs (``"false"`` is
truthy in Python), a float vocabulary size, a negative norm epsilon or a negative special token id;
each would otherwise build a model that gives wrong answers without a word. A special token id
beyond the vocabulary is typed here but refused only where it is used (:func:`eqxllm.generate`
stopping on it): `transformers` loads such configs (tiny test models, fine-tunes whose tokenizer grew
a pad token), and so does eqxllm. The checks
here are by field *kind* (sizes, flags, epsilons, probabilities, token ids) over the names every
family uses, so a new family is covered without code of its own. Nested configs (the T5-VAE's
``"t5"``) are checked the same way.
"""

import math
from pathlib import Path
from typing import Any

from eqxllm.errors import CheckpointError, ConfigError


class ConfigJsonError(CheckpointError, ConfigError):
    """A ``config.json`` field has the wrong type or an impossible value."""


# Sizes and counts: integers >= 1 (None allowed: "use the default").
_SIZES = frozenset(
    [
        "vocab_size",
        "n_positions",
        "n_ctx",
        "n_embd",
        "n_layer",
        "n_head",
        "n_inner",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "max_position_embeddings",
        "d_model",
        "d_kv",
        "d_ff",
        "num_layers",
        "num_decoder_layers",
        "num_heads",
        "relative_attention_num_buckets",
        "relative_attention_max_distance",
        "sliding_window",
        "latent_size",
        "n_latent_tokens",
        "pad_vocab_multiple",
    ]
)
_FLAGS = frozenset(
    [
        "tie_word_embeddings",
        "is_encoder_decoder",
        "scale_attn_weights",
        "scale_attn_by_inverse_layer_idx",
        "reorder_and_upcast_attn",
        "add_cross_attention",
        "use_bias",
        "tie_encoder_decoder",
    ]
)
# Positive numbers that have no "default" meaning for null (rope bases; epsilons are matched by name).
_POSITIVE = frozenset(["rope_theta", "rope_local_base_freq"])
# Non-negative numbers, null refused as well (transformers' initialisers multiply by them).
_NON_NEGATIVE = frozenset(["initializer_range", "initializer_factor"])
_TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def is_json_int(v: Any) -> bool:
    """An integer as JSON gives it (not a bool)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_json_number(v: Any) -> bool:
    """A finite number as JSON gives it (not a bool)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check(cfg: dict[str, Any], where: str) -> None:
    def fail(key: str, expected: str) -> ConfigJsonError:
        v = cfg[key]
        return ConfigJsonError(
            f"{where}: {key!r} is {v!r} (a JSON {type(v).__name__}); expected {expected}. Fix config.json"
        )

    for key, v in cfg.items():
        epsilon = key.endswith(("_eps", "_epsilon")) or key == "eps"
        if epsilon and not (is_json_number(v) and v > 0):
            raise fail(key, "a positive number (a norm's epsilon)")
        if key in _POSITIVE and not (is_json_number(v) and v > 0):
            raise fail(key, "a positive number")
        if key in _NON_NEGATIVE and not (is_json_number(v) and v >= 0):
            raise fail(key, "a number >= 0")
        if v is None:
            continue
        if key in _SIZES and not (is_json_int(v) and v >= 1):
            raise fail(key, "an integer >= 1")
        if key in _FLAGS and not isinstance(v, bool):
            raise fail(key, "true or false (a JSON boolean, not a string)")
        if (key.endswith(("pdrop", "dropout_rate", "_dropout")) or key == "dropout") and not (
            is_json_number(v) and 0 <= v <= 1
        ):
            raise fail(key, "a probability in [0, 1]")
        if isinstance(v, dict) and "vocab_size" in v:  # a nested family config (T5-VAE's "t5")
            _check(v, f"{where} [{key}]")
    for key in _TOKEN_IDS:
        ids = cfg.get(key)
        if ids is None:
            continue
        for i in ids if isinstance(ids, list) else [ids]:
            if not is_json_int(i) or i < 0:
                raise fail(key, "token ids: integers >= 0")


def validate_config_json(cfg: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """Check the fields of a ``config.json`` (already parsed) by kind; returns it, less a negative
    ``pad_token_id``.

    Configs of the Llama 1 era carry ``"pad_token_id": -1`` for "no pad token"; `transformers` loads
    them with a warning, and so does eqxllm, reading the field as absent (the family's default) so
    that no negative id reaches an embedding lookup. Raises :class:`ConfigJsonError` (a
    :class:`CheckpointError` and a :class:`ConfigError`) naming the file, the field, the value found
    and what is expected.
    """
    pad = cfg.get("pad_token_id")
    if isinstance(pad, int) and not isinstance(pad, bool) and pad < 0:
        cfg = {k: v for k, v in cfg.items() if k != "pad_token_id"}
    _check(cfg, str(path))
    return cfg
