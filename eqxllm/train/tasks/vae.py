"""Autoencoding sentences: the task of the T5-VAE.

The stories are split into sentences (:mod:`eqxllm.data.sentences`); those of up to
``train.seq_len - 1`` tokens are kept, each with its end token, padded to ``train.seq_len``. The
validation stories are held out whole (``data.val_fraction``), and their sentences that also occur in
the training stories are dropped, so validation measures sentences the model never read. The step
rides in every batch row, so that the regulariser's warm-up stays inside a pure loss.
"""

from pathlib import Path

import jax
import numpy as np

from eqxllm.data.sentences import encode_sentences, sentence_batch, story_sentences, unseen
from eqxllm.errors import ConfigError, DataError
from eqxllm.models.t5_vae_config import T5VAEConfig
from eqxllm.train.prepare import stories_of
from eqxllm.train.tasks.splices import splice_rows, word_starts
from eqxllm.train.tasks.vae_loss import vae_loss
from eqxllm.train.tokenizer_source import run_tokenizer
from eqxllm.vae.evaluate import evaluate_sentences

_FIT_SENTENCES = 256  # validation codes that the samples' fitted Gaussian is fitted to


class VAETask:
    """Reconstruct each sentence through the latent; validation reports the reconstruction loss,
    token and whole-sentence accuracy, the regulariser and the active latent units; samples show
    held-out sentences next to their reconstructions, a sentence written from a N(0, I) draw and one
    from a draw of the Gaussian fitted to the validation sentences' codes (:mod:`eqxllm.vae.latent_fit`;
    a trained model's codes do not fill N(0, I), and its draws often decode to nothing)."""

    def __init__(self, cfg, run_dir: Path, *, progress: bool = True):
        if not isinstance(cfg.model, T5VAEConfig):
            raise ConfigError(f"task 'vae' trains a T5-VAE (T5VAEConfig), got {type(cfg.model).__name__}")
        self.cfg = cfg
        d, seq_len = cfg.data, cfg.train.seq_len
        sources = stories_of(cfg.data, task=cfg.task)
        train_stories = sources["train"].stories()
        chosen = run_tokenizer(d, run_dir, lambda: train_stories, init_from=cfg.init_from, progress=progress)
        self.tokenizer, self.eot = chosen.tokenizer, chosen.eot
        # a checkpoint's config keeps its own special ids; a new model's come from the tokenizer
        trained = cfg.model if cfg.init_from else self.model_config(cfg.model)
        self.eos, self.pad = trained.eos_token_id, trained.pad_token_id
        self.joinable = word_starts(self.tokenizer)  # where the interpolation loss may splice sentences
        options = dict(max_length=seq_len, eos_id=self.eos, pad_id=self.pad)
        self.train = encode_sentences(self.tokenizer, story_sentences(train_stories), **options)
        val = encode_sentences(self.tokenizer, story_sentences(sources["validation"].iter_stories()), **options)
        self.validation = unseen(val, self.train)
        if len(self.validation) == 0:
            raise DataError(f"the validation stories of {d.source!r} hold no unseen sentence of < {seq_len} tokens")

    def model_config(self, model_cfg: T5VAEConfig) -> T5VAEConfig:
        vocab = self.tokenizer.get_vocab_size()
        # one special token plays T5's pad, end and decoder-start roles (masks tell padding apart)
        cfg = model_cfg.with_vocabulary(vocab, pad=self.eot, eos=self.eot, start=self.eot)
        return cfg.replace(max_length=self.cfg.train.seq_len)

    def loss_fn(self, model, batch, key):
        return vae_loss(model, batch, key)

    def batch(self, step: int, *, process_index: int, process_count: int) -> dict[str, np.ndarray]:
        t = self.cfg.train
        batch = sentence_batch(
            self.train, step, batch_size=t.batch_size, seed=t.seed, process_index=process_index,
            process_count=process_count,
        )  # fmt: skip
        if self.cfg.model.splice_weight > 0:
            rng = np.random.default_rng((t.seed, int(step), process_index))
            batch |= splice_rows(
                batch["input_ids"], batch["lengths"], rng, eos_id=self.eos, pad_id=self.pad, joinable=self.joinable
            )
        return batch

    def evaluate(self, model, *, max_batches: int | None = -1) -> dict[str, float]:
        t = self.cfg.train
        limit = (t.eval_batches or None) if max_batches == -1 else max_batches
        m = evaluate_sentences(model, self.validation, batch_size=t.batch_size, max_batches=limit)
        reg = model.config.regulariser
        return {
            "val_loss": m["reconstruction_loss"],
            "val_token_accuracy": m["token_accuracy"],
            "val_sequence_accuracy": m["sequence_accuracy"],
            f"val_{reg}": m[reg],
            "val_active_units": float(m["active_units"]),
        }

    def samples(self, model, key) -> list[str]:
        from eqxllm.vae.latent_fit import fit_latent_gaussian, sample_latents
        from eqxllm.vae.text import decode_latents, encode_rows

        n = min(self.cfg.train.num_samples, len(self.validation))
        if n < 1:
            return []
        fit_rows = self.validation.take(range(min(len(self.validation), _FIT_SENTENCES)))
        codes = encode_rows(model, fit_rows, batch_size=self.cfg.train.batch_size)
        prior_key, fit_key = jax.random.split(key)
        draws = [np.asarray(jax.random.normal(prior_key, (1, *codes.shape[1:])))]
        if len(codes) >= 2:  # a fit needs two codes
            draws.append(np.asarray(sample_latents(fit_key, fit_latent_gaussian(codes), 1)))
        texts = decode_latents(model, self.tokenizer, np.concatenate([codes[:n], *draws]))
        out = [f"{src!r} -> {rec!r}" for src, rec in zip(fit_rows.texts[:n], texts)]
        out.append(f"prior draw -> {texts[n]!r}")
        if len(draws) > 1:
            out.append(f"fitted draw -> {texts[n + 1]!r}")
        return out
