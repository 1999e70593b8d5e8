"""Reconstruction metrics of a T5-VAE on sentences: what the trainer's evaluation and ``eqxllm eval`` report.

- ``reconstruction_loss``: teacher-forced cross-entropy per target token (nats), the code being the
  posterior mean; ``token_accuracy``: the share of target tokens (end token included) whose greedy
  teacher-forced prediction is right; ``sequence_accuracy``: the share of sentences with every token right.
- ``mmd`` (or ``kl``): the regulariser, averaged over batches (MMD with fixed normal draws; KL in nats
  per sentence).
- ``active_units``: latent dimensions (of ``latent_tokens x latent``) whose mean varies over the data
  by more than 0.01 (Burda et al., 2016).
"""

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int

from eqxllm.data.sentences import SentenceSet, split_sentences
from eqxllm.data.tinystories import iter_stories
from eqxllm.data.tokenizer import load_tokenizer
from eqxllm.errors import DataError
from eqxllm.nn.cross_entropy import cross_entropy
from eqxllm.vae.batches import fixed_batches
from eqxllm.vae.metrics import active_units, gaussian_kl, mmd_to_normal, sequence_accuracy, shift_right, token_accuracy
from eqxllm.vae.text import tokenize


@eqx.filter_jit
def _batch_metrics(model, ids: Int[Array, "batch seq"], lengths: Int[Array, " batch"], real: Bool[Array, " batch"]):
    cfg = model.config
    mask = (jnp.arange(ids.shape[1])[None, :] < lengths[:, None]) & real[:, None]
    dec_in = shift_right(ids, cfg.decoder_start_token_id)
    out = jax.vmap(lambda i, m, d: model.autoencode(i, d, mask=m | ~jnp.any(m), decoder_mask=m))(ids, mask, dec_in)
    total, count = cross_entropy(out.logits, ids, mask)
    correct, _ = token_accuracy(out.logits, ids, mask)
    whole = jnp.sum(sequence_accuracy(out.logits, ids, mask) * real)
    if cfg.regulariser == "kl":
        keep = real[:, None, None]
        reg = gaussian_kl(jnp.where(keep, out.mean, 0.0), jnp.where(keep, out.logvar, 0.0))
    else:  # the padded rows of a last batch are left out of the sample
        reg = mmd_to_normal(out.mean, None, cfg.kernel_scale)
    return total, count, correct, whole, reg, out.mean


def evaluate_sentences(model, data: SentenceSet, *, batch_size: int = 64, max_batches: int | None = None) -> dict:
    """The metrics of the module docstring over ``data`` (or its first ``max_batches`` batches)."""
    if len(data) == 0:
        raise DataError("no sentences to evaluate (all empty or longer than the model's max_length)")
    cfg = model.config
    total = count = correct = whole = reg_sum = 0.0
    sentences, batches, means = 0, 0, []
    real_rows = np.ones((len(data),), bool)
    for n, ids, lengths, real in fixed_batches(batch_size, data.ids, data.lengths, real_rows):
        if max_batches is not None and batches >= max_batches:
            break
        real[n:] = False  # the padding of a last batch repeats its last row: left out of every sum
        t, c, r, w, reg, mean = _batch_metrics(model, jnp.asarray(ids), jnp.asarray(lengths), jnp.asarray(real))
        if cfg.regulariser == "mmd" and n < len(ids):  # the MMD of a short batch, on its real rows only
            reg = mmd_to_normal(mean[:n], None, cfg.kernel_scale)
        total, count, correct, whole = total + float(t), count + float(c), correct + float(r), whole + float(w)
        reg_sum += float(reg) / (n if cfg.regulariser == "kl" else 1)
        sentences, batches = sentences + n, batches + 1
        means.append(np.asarray(mean)[:n])
    units = int(active_units(jnp.asarray(np.concatenate(means)))) if sentences > 1 else 0
    return {
        "reconstruction_loss": total / max(count, 1.0),
        "token_accuracy": correct / max(count, 1.0),
        "sequence_accuracy": whole / max(sentences, 1),
        cfg.regulariser: reg_sum / max(batches, 1),
        "active_units": units,
        "latent_units": cfg.n_latent_tokens * cfg.latent_size,
        "sentences": sentences,
        "tokens": int(count),
    }


def file_sentences(path: str | Path) -> list[str]:
    """The sentences of a UTF-8 text file: stories (``<|endoftext|>``-separated or not) or one per line."""
    return [s for story in iter_stories(path) for s in split_sentences(story)]


def evaluate_text_file(model, model_dir: str | Path, path: str | Path, *, batch_size: int = 64) -> dict:
    """``eqxllm eval`` on a T5-VAE: reconstruct the sentences of ``path`` with the tokenizer saved in
    ``model_dir``; sentences longer than the model's ``max_length`` are skipped and counted."""
    sentences = file_sentences(path)
    if not sentences:
        raise DataError(f"{path} holds no sentences to reconstruct")
    data = tokenize(model, load_tokenizer(model_dir), sentences, strict=False)
    if len(data) == 0:
        raise DataError(
            f"every sentence of {path} is longer than the model's max_length={model.config.max_length} tokens"
        )
    result = evaluate_sentences(model, data, batch_size=batch_size)
    result["skipped_sentences"] = data.dropped
    return result
