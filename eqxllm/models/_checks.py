"""Checks shared by every family's config (the checks of model inputs are in :mod:`eqxllm.nn.decoding`)."""

from collections.abc import Collection

from eqxllm.errors import ConfigError
from eqxllm.nn.attention_kernel import ATTENTION_IMPLS

SLIDING = "sliding_attention"
FULL = "full_attention"
LAYER_TYPES = (SLIDING, FULL)


# config validation shared by the family and training configs: each message names the config, the field and the value
def check_positive(
    cfg: object,
    ints: tuple[str, ...],
    reals: tuple[str, ...] = (),
    *,
    optional: tuple[str, ...] = (),
    owner: str | None = None,
) -> None:
    """Fields in ``ints`` must be positive integers (``None`` allowed for those also in ``optional``);
    fields in ``reals`` positive numbers or ``None``. Messages name ``owner.field`` (``owner``: the
    config's class name unless given, e.g. ``"train"`` for the flags of a training run)."""
    owner = owner or type(cfg).__name__
    for name in ints:
        value = getattr(cfg, name)
        if (value is not None or name not in optional) and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"{owner}.{name} must be a positive integer{_or_none(name, optional)}, got {value!r}")
    for name in reals:
        value = getattr(cfg, name)
        if value is not None and not value > 0:
            raise ConfigError(f"{owner}.{name} must be positive (or None), got {value!r}")


def _or_none(name: str, optional: tuple[str, ...]) -> str:
    return " (or None)" if name in optional else ""


def check_nonnegative(cfg: object, names: tuple[str, ...], *, owner: str | None = None) -> None:
    """Fields in ``names`` must be numbers ``>= 0`` (loss weights, noise scales); messages name
    ``owner.field`` as :func:`check_positive`'s do."""
    owner = owner or type(cfg).__name__
    for name in names:
        value = getattr(cfg, name)
        if not value >= 0:
            raise ConfigError(f"{owner}.{name} must be >= 0, got {value!r}")


def check_probability(cfg: object, names: tuple[str, ...]) -> None:
    """Fields in ``names`` are dropout-like rates in ``[0, 1)`` (a rate of 1 would drop everything)."""
    for name in names:
        value = getattr(cfg, name)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{type(cfg).__name__}.{name} must be a probability in [0, 1), got {value!r}")


def check_attention(cfg: object, heads: int, kv_heads: int, head_dim: int) -> None:
    """Grouped-query heads divide evenly, rotary positions need an even head width, and the config's
    ``attention_impl`` names a kernel (:func:`check_attention_impl`)."""
    check_attention_impl(cfg)
    owner = type(cfg).__name__
    if heads % kv_heads:
        raise ConfigError(
            f"{owner}.num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}; "
            "grouped-query attention shares each key/value head among a whole number of query heads"
        )
    if head_dim % 2:
        raise ConfigError(f"{owner}.head_dim must be even for rotary positions, got {head_dim}")


def check_attention_impl(cfg: object) -> None:
    """``cfg.attention_impl`` is one of :data:`~eqxllm.nn.attention_kernel.ATTENTION_IMPLS`, checked when
    the config is made (the kernel would take any other string as a request for cuDNN)."""
    check_choice(cfg, "attention_impl", ATTENTION_IMPLS)


def check_choice(cfg: object, name: str, known: Collection[str]) -> None:
    value = getattr(cfg, name)
    if value not in known:
        raise ConfigError(f"{type(cfg).__name__}.{name}={value!r} is unknown; expected one of {sorted(known)}")


def check_layer_types(cfg: object, layer_types: tuple[str, ...], num_layers: int, sliding_window: int | None) -> None:
    """One known type per layer; sliding layers need a window."""
    owner = type(cfg).__name__
    if len(layer_types) != num_layers:
        raise ConfigError(
            f"{owner}.layer_types has {len(layer_types)} entries; num_hidden_layers={num_layers} needs one per layer"
        )
    unknown = sorted({t for t in layer_types if t not in LAYER_TYPES})
    if unknown:
        raise ConfigError(f"{owner}.layer_types holds unknown layer type(s) {unknown}; expected {list(LAYER_TYPES)}")
    if SLIDING in layer_types and sliding_window is None:
        raise ConfigError(f"{owner}.layer_types has sliding_attention layers but sliding_window is None")
