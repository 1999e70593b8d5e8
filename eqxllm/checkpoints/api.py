"""``from_pretrained`` and ``save_pretrained``: whole models in the Hugging Face layout."""

import json
import os
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from eqxllm.checkpoints.atomic import atomic_write_text, check_destination, write_directory
from eqxllm.checkpoints.checkpoint_dir import parse_size, read_checkpoint, write_checkpoint
from eqxllm.checkpoints.config_json import validate_config_json
from eqxllm.checkpoints.generation_config import read_generation_config
from eqxllm.checkpoints.hub import resolve_pretrained
from eqxllm.checkpoints.keymap import export_from, load_into
from eqxllm.checkpoints.registry import Family, family_for_model, family_for_model_type
from eqxllm.checkpoints.side_files import TOKENIZER_FILES
from eqxllm.errors import CheckpointError, ConfigError, InputError, NonFiniteError
from eqxllm.lora.apply import has_lora

# The floating dtypes a Hugging Face checkpoint holds weights in, and that a model computes in.
_WEIGHT_DTYPES = (jnp.float32, jnp.float16, jnp.bfloat16)


def weight_dtype(dtype: Any, what: str) -> Any:
    """``dtype`` as a NumPy dtype if it is one that weights may be cast to (float32, float16,
    bfloat16; float64 too when JAX runs with ``jax_enable_x64``), ``None`` as is; else
    :class:`InputError` naming ``what`` (the argument), before anything is read or written."""
    if dtype is None:
        return None
    allowed = [np.dtype(d) for d in _WEIGHT_DTYPES]
    if jax.config.read("jax_enable_x64"):
        allowed.append(np.dtype(np.float64))
    try:
        found = np.dtype(dtype)
    except TypeError:
        found = None
    if found not in allowed:
        names = ", ".join(d.name for d in allowed)
        raise InputError(f"{what}={dtype!r} is not a dtype for weights; expected one of {names}, or None")
    return found


def _tokenizer_files(tokenizer: Any) -> dict[str, str] | None:
    """The files of a ``tokenizers.Tokenizer`` by name (``tokenizer.json`` and the
    ``tokenizer_config.json`` that ``transformers.AutoTokenizer`` needs to read it:
    :func:`~eqxllm.data.tokenizer.tokenizer_files`), ``None`` for no tokenizer; anything else is
    refused before a save writes a file."""
    if tokenizer is None:
        return None
    from tokenizers import Tokenizer

    from eqxllm.data.tokenizer import tokenizer_files  # eqxllm.data imports the checkpoints' Hub access

    if isinstance(tokenizer, Tokenizer):
        return tokenizer_files(tokenizer)
    hint = ""
    if hasattr(tokenizer, "backend_tokenizer"):  # a transformers "fast" tokenizer wraps one
        hint = "; for a transformers tokenizer pass tok.backend_tokenizer, or call tok.save_pretrained(dst) afterwards"
    raise InputError(f"tokenizer must be a tokenizers.Tokenizer, found {type(tokenizer).__name__}{hint}")


def read_config_json(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory} has no config.json; a Hugging Face model directory needs one")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path} must hold a JSON object, found {type(cfg).__name__}")
    return validate_config_json(cfg, path)


def checkpoint_family(src: str | os.PathLike, *, revision: str | None = None) -> tuple[Family, dict[str, Any]]:
    """The family that loads a local or Hub checkpoint (by its ``config.json``'s ``model_type`` and
    ``architectures``) and that ``config.json``, without reading any weights."""
    directory = resolve_pretrained(src, revision=revision)
    hf = read_config_json(directory)
    where = str(directory / "config.json")
    return family_for_model_type(hf.get("model_type"), where, hf.get("architectures", ())), hf


def load_config(src: str | os.PathLike, *, revision: str | None = None):
    """The eqxllm config of a local or Hub checkpoint, without reading any weights."""
    family, hf = checkpoint_family(src, revision=revision)
    return family.config_from_hf(hf)


def load_generation_config(src: str | os.PathLike, *, revision: str | None = None) -> dict[str, Any]:
    """What a checkpoint's ``generation_config.json`` says (``{}`` when it has none): ``eos_token_id``
    as a list, and ``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``min_p``, ``repetition_penalty``,
    ``num_beams``, ``length_penalty``, ``early_stopping`` when set.

    Chat and instruct checkpoints often stop on more ids there than ``config.json`` lists (Gemma 2's
    ``<end_of_turn>``, Llama 3's ``<|eot_id|>``); ``eqxllm.generate`` reads only the model config,
    so pass them: ``generate(model, ids, ..., eos_token_id=load_generation_config(src).get("eos_token_id"))``.
    ``eqxllm generate`` on the command line does this itself."""
    return read_generation_config(resolve_pretrained(src, revision=revision))


def from_pretrained(src: str | os.PathLike, *, dtype: Any = jnp.float32, revision: str | None = None) -> Any:
    """Load a model from a Hub repo id or a local directory in Hugging Face layout.

    The family comes from ``config.json``'s ``model_type``; weights from ``model.safetensors`` or a
    sharded ``model.safetensors.index.json`` (pickled ``.bin`` files are never read). Floating
    weights are cast to ``dtype`` (float32, float16 or bfloat16; ``None`` keeps the stored dtype). The model is built abstractly first (``eqx.filter_eval_shape``),
    so weights are allocated once. Returns the family's model (``GPT2``, ``T5``,
    ``T5Encoder`` for a ``T5EncoderModel`` / ``MT5EncoderModel`` checkpoint (``config.json``'s
    ``architectures``), ``T5VAE``, ``Gemma`` or ``Llama``), typed ``Any`` because the family is only
    known from the file.
    """
    dtype = weight_dtype(dtype, "dtype")
    directory = resolve_pretrained(src, revision=revision)
    hf = read_config_json(directory)
    where = str(directory / "config.json")
    return load_family(
        family_for_model_type(hf.get("model_type"), where, hf.get("architectures", ())), directory, hf, dtype
    )


def load_family(family: Family, directory: Path, hf: dict[str, Any], dtype: Any) -> Any:
    """The model of ``family`` from ``directory`` (whose ``config.json`` is ``hf``), weights cast to
    ``dtype`` (already checked by :func:`weight_dtype`)."""
    config = family.config_from_hf(hf)
    tensors = read_checkpoint(directory)
    check_finite(tensors, directory)
    tensors = family.normalize_keys(tensors, config)
    skeleton = eqx.filter_eval_shape(family.model_cls, config, key=jax.random.key(0))
    return load_into(skeleton, family.key_map(config), tensors, dtype)


def check_finite(tensors: dict[str, np.ndarray], where: Path) -> None:
    """Raise :class:`NonFiniteError` naming the first floating tensor of ``tensors`` that holds NaN or
    infinity (a corrupted file, or weights saved from a diverged run): such a model samples nothing
    and scores NaN."""
    for key in sorted(tensors):
        a = tensors[key]
        if np.issubdtype(a.dtype, np.inexact) or a.dtype.kind == "V" or "float" in str(a.dtype):
            bad = ~np.isfinite(a)
            if bad.any():
                first = tuple(int(i) for i in np.argwhere(bad)[0])
                raise NonFiniteError(
                    f"{where}: tensor {key!r} holds {int(bad.sum())} non-finite values (NaN or inf) out of {a.size}, "
                    f"the first at index {first} ({a[first]}); the checkpoint is corrupted or was saved from a "
                    "diverged run"
                )


def save_pretrained(
    model: eqx.Module,
    dst: str | os.PathLike,
    *,
    max_shard_size: int | str | None = "5GB",
    dtype: Any = None,
    tokenizer: Any = None,
) -> Path:
    """Write ``config.json`` and safetensors weights (sharded above ``max_shard_size``) that
    ``transformers`` loads as they are; optionally ``tokenizer.json`` and ``tokenizer_config.json``
    from a ``tokenizers.Tokenizer`` (``transformers.AutoTokenizer`` reads them, whatever the family).

    Weights are written first and atomically, ``config.json`` last (atomically too), so a failed
    save never leaves a directory whose config describes weights that are not there: over an earlier
    save, its ``config.json`` is removed before the first new weight file moves in, so a save cut
    off there leaves a folder that does not load (never new weights under the old config); a directory
    that did not exist is built beside its destination and renamed into place, so it appears whole
    or not at all. ``dst`` must be a
    directory or absent; a bad ``max_shard_size`` is refused before anything is created. Saving
    without a tokenizer over an earlier save removes that save's ``tokenizer.json`` (it belonged to
    the earlier model).
    """
    config = model.config  # type: ignore[attr-defined]
    family = family_for_model(model)
    if has_lora(model):  # the key map reads each LoraLinear's base weight: the adapters would be lost
        raise ConfigError(
            "the model has LoRA adapters, which a Hugging Face checkpoint cannot hold: save "
            "eqxllm.lora.merge_lora(model) for the adapted weights, or eqxllm.lora.save_peft_adapter(model, ...) "
            "for the adapters alone"
        )
    directory = Path(dst)
    check_destination(directory)  # a bad path, size, dtype or tokenizer is refused before anything is created
    if max_shard_size is not None:
        parse_size(max_shard_size)
    dtype = weight_dtype(dtype, "dtype")
    tokenizer_texts = _tokenizer_files(tokenizer)
    tensors = export_from(model, family.key_map(config), dtype=dtype)
    hf_config = json.dumps(family.config_to_hf(config), indent=2) + "\n"

    def write_into(target: Path) -> None:
        resaving = (target / "config.json").is_file()
        write_checkpoint(
            tensors, target, max_shard_size=max_shard_size, metadata={"format": "pt"}, describing="config.json"
        )
        if tokenizer_texts is not None:
            for name, text in tokenizer_texts.items():
                atomic_write_text(target / name, text)
        elif resaving:  # the tokenizer of the model saved here before is not this model's
            for name in TOKENIZER_FILES:  # all of them: vocab.json + merges.txt alone load as a tokenizer
                (target / name).unlink(missing_ok=True)
        atomic_write_text(target / "config.json", hf_config)

    return write_directory(directory, write_into)
