"""Private helpers of the T5-VAE benchmark scripts: the decoding and splice variants that were measured
(docs/t5_vae.md, "Midpoints"; docs/benchmarks.md) and not adopted by the library.

- **Reranking a path with a language model** (noisy-channel reranking, Yee et al., 2019, "Simple and
  Effective Noisy Channel Modeling for Neural Machine Translation"): every point of the path is
  decoded by beam search, the finished beams of all points (and ``anchors``, such as the path's two
  sentences) are pooled, and point ``k`` takes the candidate ``y`` maximising
  ``code(y | z_k) + lm_weight * lm(y)``: the decoder's mean log-probability per token of ``y`` given
  the code ``z_k`` (teacher-forced, the beam search's score), plus a decoder-only language model's
  (:func:`eqxllm.generation.text_log_likelihoods`, on its own tokenizer).
- **Fusing the decoder's own language model** (shallow fusion, Gulcehre et al., 2015): a model
  trained with code dropout (the null code's rows) adds ``prior_weight * log p(token | prefix, null
  code)`` to each step's scores; greedy decoding is the one-beam search.
- **Attested splice junctions**: the splices of a pair whose junction, the token before the shared
  one, the shared one and the one after it, is a trigram of the training sentences.

    python benchmarks/_vae_lab.py     # a smoke check on tiny untrained models (seconds)
"""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from eqxllm.errors import InputError
from eqxllm.generation import beam_search_cached, text_log_likelihoods
from eqxllm.nn.cross_entropy import cross_entropy
from eqxllm.train.tasks.splices import splices
from eqxllm.vae.decoding import beam_search_from_latent, strip_after_end
from eqxllm.vae.interpolate import interpolation_path
from eqxllm.vae.metrics import shift_right
from eqxllm.vae.text import decode_latents, encode_texts

# --- reranking ------------------------------------------------------------------------------------


@eqx.filter_jit
def _code_scores(model, latents, targets, lengths):
    inputs = shift_right(targets, model.config.decoder_start_token_id)
    keep = jnp.arange(targets.shape[1])[None, :] < lengths[:, None]  # [cands, seq]

    def one(latent, dec_in, target, k):
        total, count = cross_entropy(model.decode_full(latent, dec_in), target, k)
        return -total / count

    over_cands = jax.vmap(one, in_axes=(None, 0, 0, 0))
    return jax.vmap(over_cands, in_axes=(0, None, None, None))(latents, inputs, targets, keep)


def code_log_likelihoods(model, latents, candidates: Sequence[Sequence[int]]) -> np.ndarray:
    """``[points, len(candidates)]``: the decoder's mean log-probability per token of each candidate
    (token ids without the end token, which is appended and scored) given each latent."""
    cfg = model.config
    rows = np.full((len(candidates), cfg.max_length), cfg.eos_token_id, np.int32)
    lengths = np.zeros((len(candidates),), np.int32)
    for i, ids in enumerate(candidates):
        if len(ids) + 1 > cfg.max_length:
            raise InputError(
                f"candidate {i} is {len(ids)} tokens; with its end token this model reads {cfg.max_length}"
            )
        rows[i, : len(ids)], lengths[i] = ids, len(ids) + 1
    return np.asarray(_code_scores(model, jnp.asarray(latents, jnp.float32), jnp.asarray(rows), jnp.asarray(lengths)))


def rerank_path(model, tokenizer, latents, lm, lm_tokenizer, *, lm_weight=0.25, num_beams=8, anchors=()) -> list[str]:
    """The sentence chosen for each point of ``latents [points, latent_tokens, latent]`` (module docstring)."""
    if lm_weight < 0:
        raise InputError(f"lm_weight must be >= 0, got {lm_weight}")
    latents = jnp.asarray(latents, jnp.float32)
    tokens, scores = beam_search_from_latent(model, latents, num_beams=num_beams, return_scores=True, return_all=True)
    eos = model.config.eos_token_id
    pool: dict[tuple[int, ...], str] = {}
    for row, score in zip(np.asarray(tokens).reshape(-1, tokens.shape[-1]), np.asarray(scores).reshape(-1)):
        ids = tuple(strip_after_end(row, eos))
        if ids and len(ids) < len(row) and np.isfinite(score):  # a beam without its end token is no sentence
            pool.setdefault(ids, tokenizer.decode(list(ids)))
    for text in anchors:
        ids = tuple(tokenizer.encode(text, add_special_tokens=False).ids)
        if not ids or len(ids) >= model.config.max_length:
            raise InputError(
                f"the anchor {text[:60]!r} is {len(ids)} tokens; this model writes 1 to {model.config.max_length - 1}"
            )
        pool.setdefault(ids, tokenizer.decode(list(ids)))
    pool = {ids: text for ids, text in pool.items() if text.strip()}
    if not pool:
        raise InputError("no beam of this path decoded to a non-empty sentence")
    cands = list(pool)
    total = code_log_likelihoods(model, latents, cands)
    if lm_weight > 0:
        total = total + lm_weight * text_log_likelihoods(lm, lm_tokenizer, [pool[c] for c in cands])[None, :]
    return [pool[cands[k]] for k in np.argmax(total, axis=1)]


def interpolate_reranked(model, tokenizer, a, b, steps, lm, lm_tokenizer, *, lm_weight=0.25, num_beams=8, **path):
    """``interpolate_texts`` reranked: the path's points, the two sentences and (geodesic) its bank
    sentences pooled; ``path``: ``method``, ``bank``, ``refine_steps`` as ``interpolate_texts`` takes them."""
    latents = latent_path(model, tokenizer, a, b, steps, **path)
    anchors = [a, b]
    if path.get("bank") is not None:  # the bank sentences whose codes the path passes through
        bank = path["bank"]
        hits = np.all(bank.codes[None] == np.asarray(latents)[:, None], axis=(2, 3))  # [points, bank]
        anchors += [bank.texts[r] for r in hits.argmax(axis=1)[hits.any(axis=1)]]
    return rerank_path(
        model, tokenizer, latents, lm, lm_tokenizer, lm_weight=lm_weight, num_beams=num_beams,
        anchors=tuple(dict.fromkeys(anchors)),
    )  # fmt: skip


def latent_path(model, tokenizer, a, b, steps, *, method="slerp", bank=None, refine_steps=0):
    """The codes of ``interpolate_texts``' path."""
    za, zb = encode_texts(model, tokenizer, [a, b], refine_steps=refine_steps)
    return interpolation_path(jnp.asarray(za), jnp.asarray(zb), steps, method=method, bank=bank)


# --- fusing the null code's language model ----------------------------------------------------------


@eqx.filter_jit
def _fused(model, latents, num_beams: int, steps: int, prior_weight: float):
    cfg = model.config

    def step(token, caches):
        code, code_cache = model.decode(token, caches[0])
        null, null_cache = model.decode(token, caches[1])
        fused = jax.nn.log_softmax(code, axis=-1) + prior_weight * jax.nn.log_softmax(null, axis=-1)
        return fused, (code_cache, null_cache)

    def one(latent):
        caches = tuple(model.init_decoder_cache(z, None, steps, jnp.float32) for z in (latent, jnp.zeros_like(latent)))
        out, _ = beam_search_cached(
            step, caches, cfg.decoder_start_token_id, num_beams=num_beams, steps=steps, stop_ids=(cfg.eos_token_id,)
        )
        return out[0]

    return jax.vmap(one)(latents)


def decode_fused(model, tokenizer, latents, *, prior_weight: float, num_beams: int = 1) -> list[str]:
    """The sentences of ``latents`` by a beam search (one beam: greedy) over the fused scores."""
    tokens = _fused(model, jnp.asarray(latents, jnp.float32), num_beams, model.config.max_length, float(prior_weight))
    return [tokenizer.decode(strip_after_end(row, model.config.eos_token_id)) for row in np.asarray(tokens)]


# --- attested splice junctions ---------------------------------------------------------------------------

_START = -1  # stands before a sentence's first token in trigrams (no token id is negative)


def token_trigrams(ids: np.ndarray, lengths: np.ndarray) -> frozenset[tuple[int, int, int]]:
    """Every three adjacent tokens of the rows ``ids`` (tokens then the end token; ``lengths`` counts
    it), with a start marker before each row."""
    out: set[tuple[int, int, int]] = set()
    for row, n in zip(ids, lengths):
        t = [_START, *row[:n].tolist()]
        out.update(zip(t, t[1:], t[2:]))
    return frozenset(out)


def attested_splices(a, b, max_tokens, joinable, trigrams, eos_id) -> list[tuple[list[int], float]]:
    """The splices of ``a`` and ``b`` (:func:`eqxllm.vae.splice.splices`) whose junction is a trigram."""
    out = []
    for tokens, t in splices(a, b, max_tokens, joinable):
        j = len(b) - round(t * len(tokens))  # the splice is a[:i] + b[j:]
        i = len(tokens) - (len(b) - j)
        if (a[i - 1], b[j], b[j + 1] if j + 1 < len(b) else eos_id) in trigrams:
            out.append((tokens, t))
    return out


if __name__ == "__main__":  # smoke check: every helper runs on tiny untrained models
    from eqxllm.data.tokenizer import eot_id, train_bpe_tokenizer
    from eqxllm.models import GPT2, T5VAE, GPT2Config, T5VAEConfig

    tok = train_bpe_tokenizer(["Tom saw a big dog. Lily ate a red apple. The dog ran to Lily."] * 8, vocab_size=300)
    eot = eot_id(tok)
    vae = T5VAE(T5VAEConfig.tiny().with_vocabulary(300, pad=eot, eos=eot, start=eot), key=jax.random.key(0))
    lm = GPT2(GPT2Config.tiny().replace(vocab_size=300, bos_token_id=eot, eos_token_id=eot), key=jax.random.key(1))
    a, b = "Tom saw a big dog.", "Lily ate a red apple."
    print(interpolate_reranked(vae, tok, a, b, 3, lm, tok, num_beams=2))
    z = jax.random.normal(jax.random.key(2), (2, 4, 8))
    print(decode_fused(vae, tok, z, prior_weight=0.5, num_beams=2))
    assert decode_fused(vae, tok, z, prior_weight=0.0) == decode_latents(vae, tok, z)  # one beam, no fusion: greedy
    ids = [tok.encode(s).ids for s in (a, b)]
    tri = token_trigrams(np.array([x + [eot] * (12 - len(x)) for x in ids]), np.array([len(x) + 1 for x in ids]))
    print(attested_splices(ids[0], ids[1], 20, None, tri, eot))
