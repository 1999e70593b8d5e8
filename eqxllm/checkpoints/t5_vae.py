"""T5-VAE checkpoints: the T5 under Hugging Face T5 key names, the latent parts under ``vae.*``.

``config.json`` has ``model_type: "t5_vae"``, the latent options at the top level and the whole T5
config (as :mod:`eqxllm.checkpoints.t5` writes it for ``T5ForConditionalGeneration``) under ``"t5"``.
The safetensors file holds ``shared.weight``, ``encoder.block.{i}...``, ``decoder...``, ``lm_head.weight``
exactly as a T5 checkpoint does, plus::

    vae.to_latent.{weight,bias}        [latent, embed], [latent]   encoder state -> code
    vae.to_logvar.{weight,bias}        (KL regulariser only)
    vae.pool_queries                   [latent_tokens, embed]      (attention pooling only)
    vae.pool_attention.{q,k,v,o}_proj.weight                       (attention pooling only)
    vae.from_latent.{weight,bias}      [embed, latent], [embed]    code -> decoder memory
    vae.memory_positions               [latent_tokens, embed]
    vae.memory_norm.{weight,bias}      [embed]
    vae.bow_head.{weight,bias}         [vocab, latent_tokens * latent], [vocab]   (bow_weight > 0 only)

so :func:`extract_t5` (dropping ``vae.*``, writing the nested config) gives a directory that
``transformers.T5ForConditionalGeneration.from_pretrained`` loads, and :func:`t5_vae_from_t5` starts a
VAE from a pretrained T5 directory.
"""

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from eqxllm.checkpoints import t5 as t5_checkpoints
from eqxllm.checkpoints.checkpoint_dir import read_checkpoint, write_checkpoint
from eqxllm.checkpoints.keymap import KeyMap, Param, param
from eqxllm.errors import CheckpointError, ConfigError
from eqxllm.models.t5_vae_config import T5VAEConfig, without_retired

MODEL_TYPE = "t5_vae"
PREFIX = "vae."
_LATENT_FIELDS = tuple(
    f.name for f in dataclasses.fields(T5VAEConfig) if f.name != "t5"
)  # n_latent_tokens, latent_size, pooling, ...


def config_from_hf(hf: dict[str, Any]) -> T5VAEConfig:
    t5_hf = hf.get("t5")
    if not isinstance(t5_hf, dict):
        raise ConfigError(
            "a t5_vae config.json needs the T5 config as an object under 't5'; found "
            f"{type(t5_hf).__name__ if t5_hf is not None else 'nothing'}"
        )
    hf = without_retired(hf)
    unknown = sorted(set(hf) - {*_LATENT_FIELDS, "t5", "model_type", "is_encoder_decoder", "vocab_size"})
    if unknown:
        raise ConfigError(f"t5_vae config.json has unknown fields {unknown}; expected only {sorted(_LATENT_FIELDS)}")
    return T5VAEConfig(t5=t5_checkpoints.config_from_hf(t5_hf), **{k: hf[k] for k in _LATENT_FIELDS if k in hf})


def config_to_hf(cfg: T5VAEConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"model_type": MODEL_TYPE, "is_encoder_decoder": True, "vocab_size": cfg.vocab_size}
    out.update({k: getattr(cfg, k) for k in _LATENT_FIELDS})
    out["t5"] = t5_checkpoints.config_to_hf(cfg.t5)
    return out


def _rebased(p: Param) -> Param:
    """A T5 entry whose leaves are read from ``model.t5``."""
    return dataclasses.replace(p, leaves=tuple((lambda m, w=w: w(m.t5)) for w in p.leaves))


def _linear(key: str, get) -> list[Param]:
    return [param(f"{key}.weight", lambda m: get(m).weight), param(f"{key}.bias", lambda m: get(m).bias)]


def key_map(cfg: T5VAEConfig) -> KeyMap:
    t5 = t5_checkpoints.key_map(cfg.t5)
    p = [_rebased(x) for x in t5.params]
    p += _linear(f"{PREFIX}to_latent", lambda m: m.to_latent)
    if cfg.regulariser == "kl":
        p += _linear(f"{PREFIX}to_logvar", lambda m: m.to_logvar)
    if cfg.pooling == "attention":
        p.append(param(f"{PREFIX}pool_queries", lambda m: m.pool_queries))
        for proj in "qkvo":
            key = f"{PREFIX}pool_attention.{proj}_proj.weight"
            p.append(param(key, lambda m, x=proj: getattr(m.pool_attention, f"{x}_proj").weight))
    p += _linear(f"{PREFIX}from_latent", lambda m: m.from_latent)
    p.append(param(f"{PREFIX}memory_positions", lambda m: m.memory_positions))
    p += _linear(f"{PREFIX}memory_norm", lambda m: m.memory_norm)
    if cfg.bow_weight > 0:
        p += _linear(f"{PREFIX}bow_head", lambda m: m.bow_head)
    return KeyMap(params=p, ignore=t5.ignore)


def normalize_keys(tensors: dict[str, np.ndarray], cfg: T5VAEConfig) -> dict[str, np.ndarray]:
    """The T5 part goes through T5's own normalisation (embedding aliases, tied heads)."""
    vae = {k: v for k, v in tensors.items() if k.startswith(PREFIX)}
    t5 = t5_checkpoints.normalize_keys({k: v for k, v in tensors.items() if not k.startswith(PREFIX)}, cfg.t5)
    return {**t5, **vae}


def extract_t5(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write the T5 inside the T5-VAE directory ``src`` as a plain T5 directory ``dst`` (config.json
    and model.safetensors, plus tokenizer.json and tokenizer_config.json when ``src`` has a tokenizer)
    that transformers loads."""
    from eqxllm.checkpoints.api import read_config_json
    from eqxllm.checkpoints.atomic import atomic_write_text
    from eqxllm.data.tokenizer import TOKENIZER_FILE, load_tokenizer, tokenizer_files

    src, dst = Path(src), Path(dst)
    hf = read_config_json(src)
    if hf.get("model_type") != MODEL_TYPE:
        raise CheckpointError(f"{src / 'config.json'} has model_type {hf.get('model_type')!r}, expected {MODEL_TYPE!r}")
    cfg = config_from_hf(hf)
    tensors = {k: v for k, v in read_checkpoint(src).items() if not k.startswith(PREFIX)}
    dst.mkdir(parents=True, exist_ok=True)
    write_checkpoint(tensors, dst, metadata={"format": "pt"}, describing="config.json")
    if (src / TOKENIZER_FILE).is_file():  # as they are, with the config transformers needs if src lacks it
        for name, made in tokenizer_files(load_tokenizer(src)).items():
            atomic_write_text(dst / name, (src / name).read_text(encoding="utf-8") if (src / name).is_file() else made)
    atomic_write_text(dst / "config.json", json.dumps(t5_checkpoints.config_to_hf(cfg.t5), indent=2) + "\n")
    return dst


def t5_vae_from_t5(
    src: str | os.PathLike, config: T5VAEConfig | None = None, *, key: jax.Array, revision: str | None = None
):
    """A T5-VAE around the pretrained T5 of ``src`` (a Hub id or a T5 directory), with fresh latent
    parts drawn from ``key``; ``config`` gives the latent options (its ``t5`` is replaced)."""
    from eqxllm.checkpoints.api import from_pretrained
    from eqxllm.models.t5 import T5
    from eqxllm.models.t5_vae import T5VAE

    t5 = from_pretrained(src, revision=revision)
    if not isinstance(t5, T5):
        raise CheckpointError(f"{src} holds a {type(t5).__name__}, not a T5; a T5-VAE starts from a T5 checkpoint")
    return T5VAE.from_t5(t5, config, key=key)


def _family():
    from eqxllm.checkpoints.registry import Family
    from eqxllm.models.t5_vae import T5VAE

    return Family(
        model_types=(MODEL_TYPE,),
        config_cls=T5VAEConfig,
        model_cls=T5VAE,
        config_from_hf=config_from_hf,
        config_to_hf=config_to_hf,
        key_map=key_map,
        normalize_keys=normalize_keys,
    )


FAMILY = _family()
