"""The plain fields of a run config read from JSON (a run's ``run_config.json``, ``--config-file``):
each value is checked against its field's annotation before the config is built, so that a string
where a number belongs is refused naming its field, not later by a comparison that names nothing."""

import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from eqxllm.checkpoints.config_json import is_json_int, is_json_number
from eqxllm.errors import ConfigError

_NAMES = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string", type(None): "null"}


def check_json_fields(cls: type, raw: Mapping[str, Any], owner: str) -> None:
    """Raise :class:`ConfigError` naming ``owner.field`` (``field`` where ``owner`` is empty) for the first value of ``raw`` that its field
    in the dataclass ``cls`` cannot hold. Fields of other kinds (nested configs) and unknown names are
    left to the constructor."""
    hints = typing.get_type_hints(cls)
    for name, value in raw.items():
        kind = hints.get(name)
        if kind is None or not _plain(kind):
            continue
        if not _holds(kind, value):
            raise ConfigError(f"{owner}{'.' if owner else ''}{name} is {value!r}; expected {_describe(kind)}")


def _options(kind: Any) -> tuple[Any, ...]:
    """The members of a union annotation (``int | None``), or the annotation alone."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return typing.get_args(kind)
    return (kind,)


def _plain(kind: Any) -> bool:
    return all(k in _NAMES or typing.get_origin(k) is Literal for k in _options(kind))


def _holds(kind: Any, value: Any) -> bool:
    for k in _options(kind):
        if typing.get_origin(k) is Literal:
            if any(type(value) is type(a) and value == a for a in typing.get_args(k)):
                return True
        elif k is float:
            if is_json_number(value):
                return True
        elif k is int:
            if is_json_int(value):
                return True
        elif isinstance(value, k):
            return True
    return False


def _describe(kind: Any) -> str:
    parts = []
    for k in _options(kind):
        if typing.get_origin(k) is Literal:
            parts.append("one of " + ", ".join(repr(a) for a in typing.get_args(k)))
        else:
            parts.append(_NAMES[k])
    return " or ".join(parts)
