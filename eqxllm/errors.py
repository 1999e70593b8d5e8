"""Exceptions raised for bad input. Each message says what was expected, what was found, and what to do."""


class EqxllmError(Exception):
    """Base class of every error eqxllm raises on purpose."""


class CheckpointError(EqxllmError, ValueError):
    """A checkpoint on disk does not match what the model expects."""


class SafetensorsFormatError(CheckpointError):
    """A file is not a readable safetensors file (truncated, foreign, corrupted header)."""


class MissingKeyError(CheckpointError, KeyError):
    """A tensor the model needs is absent from the checkpoint."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class UnexpectedKeyError(CheckpointError, KeyError):
    """The checkpoint holds a tensor the model has no place for."""

    def __str__(self) -> str:
        return str(self.args[0])


class ShapeMismatchError(CheckpointError):
    """A tensor's shape differs from the shape the config implies."""


class DtypeMismatchError(CheckpointError):
    """A tensor's dtype is not a floating type the model can hold."""


class ShardIndexError(CheckpointError):
    """A sharded checkpoint's index is malformed or points outside its directory."""


class UnknownModelTypeError(CheckpointError):
    """`config.json` names a `model_type` eqxllm does not implement, or names none."""


class ConfigError(EqxllmError, ValueError):
    """A configuration is inconsistent."""


class InputError(EqxllmError, ValueError):
    """Model input is out of range: token ids beyond the vocabulary, sequences beyond the context."""


class DataError(EqxllmError, ValueError):
    """Training or evaluation data is missing, empty or undecodable."""


class NonFiniteError(EqxllmError, FloatingPointError):
    """Weights, a loss or logits hold NaN or infinity; the message says where they were found."""


class MissingExtraError(EqxllmError, ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""


def require(module: str, extra: str, what: str):
    """Import ``module`` or raise :class:`MissingExtraError` naming the pip extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"{what} needs the optional package {module.split('.')[0]!r}, which is not installed; "
            f"install it with: pip install 'eqxllm[{extra}]'"
        ) from e
