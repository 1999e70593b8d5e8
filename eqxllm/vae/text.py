"""Text in, latents out and back: a T5-VAE with its tokenizer (what ``eqxllm vae`` and the example use)."""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from eqxllm.data.sentences import SentenceSet, encode_sentences, whole_sentence
from eqxllm.errors import InputError
from eqxllm.generation.sampling import make_sampler
from eqxllm.vae.batches import fixed_batches
from eqxllm.vae.decoding import beam_search_from_latent, generate_from_latent, strip_after_end
from eqxllm.vae.geodesic import CodeBank, bank_from_codes
from eqxllm.vae.interpolate import interpolation_path
from eqxllm.vae.refine import reconstructs, refine_latents


def tokenize(model, tokenizer, texts: Sequence[str], *, strict: bool = True) -> SentenceSet:
    """``texts`` as the model's input rows (tokens, end token, padding to ``max_length``). With
    ``strict``, a text too long for the model (or empty) raises :class:`InputError` naming it. A bare
    ``str`` is refused (it would be read as one sentence per character): pass ``[text]``."""
    if isinstance(texts, str):
        raise InputError(f"texts must be a list of sentences, got one string {texts[:80]!r}; pass [text]")
    cfg = model.config
    data = encode_sentences(
        tokenizer, list(texts), max_length=cfg.max_length, eos_id=cfg.eos_token_id, pad_id=cfg.pad_token_id
    )
    if strict and data.dropped:
        kept = set(data.texts)
        bad = next(t for t in texts if t not in kept)
        n = len(tokenizer.encode(bad, add_special_tokens=False).ids)
        raise InputError(
            f"the text {bad[:80]!r} is {n} tokens; this model encodes 1 to {cfg.max_length - 1} tokens "
            "(max_length minus the end token): split it into sentences"
        )
    return data


@eqx.filter_jit
def _encode_batch(
    model, ids: Int[Array, "batch seq"], mask: Bool[Array, "batch seq"]
) -> Float[Array, "batch latent_tokens latent"]:
    return jax.vmap(lambda i, m: model.encode(i, mask=m))(ids, mask)


def encode_texts(model, tokenizer, texts: Sequence[str], *, batch_size: int = 64, refine_steps: int = 0) -> np.ndarray:
    """The latents ``[n, latent_tokens, latent]`` (posterior means) of ``texts``, a list of sentences (a
    bare ``str`` is refused: pass ``[text]`` for one); with ``refine_steps``,
    each refined by at most that many gradient steps until it reconstructs its text
    (:func:`~eqxllm.vae.refine.refine_latents`; a text it cannot reach keeps its last refined code)."""
    data = tokenize(model, tokenizer, texts)
    codes = encode_rows(model, data, batch_size=batch_size)
    if refine_steps == 0:
        return codes
    return refine_latents(model, data, codes, steps=refine_steps, batch_size=batch_size).latents


def encode_rows(model, data: SentenceSet, *, batch_size: int = 64) -> np.ndarray:
    """The latents of already tokenized rows, in fixed-size batches (one compiled program)."""
    mask = np.arange(data.ids.shape[1])[None, :] < data.lengths[:, None]
    out = [
        np.asarray(_encode_batch(model, jnp.asarray(ids), jnp.asarray(m)))[:real]
        for real, ids, m in fixed_batches(batch_size, data.ids, mask)
    ]
    cfg = model.config
    return np.concatenate(out) if out else np.zeros((0, cfg.n_latent_tokens, cfg.latent_size), np.float32)


def decode_latents(
    model,
    tokenizer,
    latents: np.ndarray | Array,
    *,
    temperature: float = 0.0,
    num_beams: int = 1,
    key: jax.Array | None = None,
) -> list[str]:
    """The sentences written from ``latents [n, latent_tokens, latent]``: greedy by default, sampled
    with ``temperature > 0`` and a ``key``, or the best of a beam search with ``num_beams > 1``
    (:func:`~eqxllm.vae.decoding.beam_search_from_latent`). The options are checked as
    :func:`eqxllm.generate` checks them: a ``temperature`` above 0 without a key, or below 0, raises
    :class:`InputError`."""
    sampler = make_sampler(temperature=temperature, has_key=key is not None, vocab_size=model.config.vocab_size)
    if num_beams != 1 and not sampler.greedy:
        raise InputError("choose beam search (num_beams > 1) or sampling (temperature > 0 with a key), not both")
    latents = jnp.asarray(latents, jnp.float32)
    if latents.ndim == 2:
        latents = latents[None]
    if latents.shape[0] == 0:
        return []
    if num_beams != 1:  # beam search checks num_beams >= 1
        tokens = np.asarray(beam_search_from_latent(model, latents, num_beams=num_beams))
    else:
        tokens = np.asarray(generate_from_latent(model, latents, temperature=temperature, key=key))
    eos = model.config.eos_token_id
    return [tokenizer.decode(strip_after_end(row, eos)) for row in tokens]


def build_bank(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    k: int = 16,
    whole: bool = True,
    exact: bool = True,
    batch_size: int = 64,
) -> CodeBank:
    """A :class:`~eqxllm.vae.geodesic.CodeBank` of ``texts`` for ``interpolate_texts(method="geodesic")``,
    leaving out duplicates, texts the model cannot encode (empty or too long), with ``whole`` pieces
    of sentences (:func:`~eqxllm.data.sentences.whole_sentence`: "said Jack."), and with ``exact``
    texts whose code does not reconstruct them (:func:`~eqxllm.vae.refine.reconstructs`), so that
    each interior point of a path is written back as the bank sentence it is."""
    given = list(dict.fromkeys(texts))
    data = tokenize(model, tokenizer, [t for t in given if not whole or whole_sentence(t)], strict=False)
    codes = encode_rows(model, data, batch_size=batch_size)
    if exact and len(data):
        keep = np.flatnonzero(reconstructs(model, data, codes, batch_size=batch_size))
        data, codes = data.take(keep), codes[keep]
    if len(data) == 0:
        rules = [f"{model.config.max_length - 1} tokens at most"]
        rules += ["opening with a capital or a quote"] * whole + ["that its code reconstructs"] * exact
        raise InputError(f"none of the {len(given)} bank texts is a sentence that fits this model ({', '.join(rules)})")
    return bank_from_codes(data.texts, codes, k=k)


def interpolate_texts(
    model,
    tokenizer,
    a: str,
    b: str,
    steps: int,
    *,
    method: str = "slerp",
    per_token: bool = True,
    bank: CodeBank | None = None,
    num_beams: int = 1,
    refine_steps: int = 0,
) -> list[str]:
    """The sentences along the latent path from ``a`` to ``b`` (``steps`` points, ends included; see
    :func:`~eqxllm.vae.interpolate.interpolation_path` for ``method``, ``per_token`` and ``bank``),
    decoded as :func:`decode_latents` does (greedy, or ``num_beams``). ``refine_steps``: refine the
    codes of ``a`` and ``b`` (see :func:`encode_texts`) before the path is drawn, so that its ends are
    the two sentences themselves where refinement reaches them."""
    za, zb = encode_texts(model, tokenizer, [a, b], refine_steps=refine_steps)
    path = interpolation_path(jnp.asarray(za), jnp.asarray(zb), steps, method=method, per_token=per_token, bank=bank)
    return decode_latents(model, tokenizer, path, num_beams=num_beams)
