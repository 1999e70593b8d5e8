"""Language modelling on packed stories: the task of decoder-only models (GPT-2, Gemma)."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from eqxllm.data import batch_at
from eqxllm.errors import ConfigError
from eqxllm.train.evaluate import evaluate_tokens
from eqxllm.train.loss import completion_loss, next_token_loss
from eqxllm.train.prepare import prepare_data


class LMTask:
    """Next-token prediction on fixed-length windows of the token stream; validation reports loss,
    perplexity and bits per byte; samples continue ``train.sample_prompt``."""

    def __init__(self, cfg, run_dir: Path, *, progress: bool = True):
        if cfg.model.is_encoder_decoder:
            raise ConfigError(
                f"task 'lm' trains decoder-only models, got a {cfg.model.model_type!r} model; train a T5 with "
                "--task seq2seq and a T5-VAE with --task vae (or their presets, e.g. --config t5-tinystories)"
            )
        self.cfg = cfg
        # the tokenizer by the one rule of every task (eqxllm.train.tokenizer_source): the checkpoint's with
        # --init-from, whose end-of-sequence id then separates the examples
        self.data = prepare_data(cfg.data, run_dir, progress=progress, init_from=cfg.init_from)
        self.tokenizer = self.data.tokenizer

    @property
    def chat_templates(self):
        """The chat templates of the run's chat records (None for other data): the export carries them."""
        return self.data.chat

    def model_config(self, model_cfg):
        eot = self.data.eot
        # trained on chat replies, the model ends a reply with the template's end token: it stops there
        end = self.data.reply_end()
        return model_cfg.replace(
            vocab_size=self.tokenizer.get_vocab_size(), bos_token_id=eot, eos_token_id=eot if end is None else end
        )

    def loss_fn(self, model, batch, key):
        if isinstance(batch, dict):  # prompt/completion data: loss on completion tokens only
            return completion_loss(model, batch, key)
        return next_token_loss(model, batch, key)

    def batch(self, step: int, *, process_index: int, process_count: int) -> np.ndarray | dict[str, np.ndarray]:
        t = self.cfg.train
        where = dict(
            batch_size=t.batch_size,
            seq_len=t.seq_len,
            seed=t.seed,
            process_index=process_index,
            process_count=process_count,
        )
        tokens = batch_at(self.data.train, step, **where)
        if self.data.train_mask is None:
            return tokens
        # the same windows of the mask: batch_at's order depends only on (seed, step, length)
        return {"tokens": tokens, "loss_mask": batch_at(self.data.train_mask, step, **where)}

    def evaluate(self, model, *, max_batches: int | None = -1) -> dict[str, float]:
        t = self.cfg.train
        limit = (t.eval_batches or None) if max_batches == -1 else max_batches
        res = evaluate_tokens(
            model,
            self.data.validation,
            num_bytes=self.data.validation_bytes,
            seq_len=t.seq_len,
            batch_size=t.batch_size,
            max_batches=limit,
            loss_mask=self.data.validation_mask,
        )
        return {"val_loss": res.loss, "val_perplexity": res.perplexity, "val_bits_per_byte": res.bits_per_byte}

    def samples(self, model, key) -> list[str]:
        from eqxllm.generation import generate

        t, tok, eot = self.cfg.train, self.tokenizer, self.data.eot
        prompt = np.asarray(tok.encode(t.sample_prompt).ids, np.int32)
        room = model.config.max_positions - len(prompt)
        if t.num_samples < 1 or room < 1:
            return []
        prompts = jnp.asarray(np.repeat(prompt[None], t.num_samples, axis=0))
        new = generate(
            model,
            prompts,
            max_new_tokens=min(t.sample_tokens, room),
            temperature=0.8,
            top_k=50,
            key=key,
            eos_token_id=eot,
        )
        return [t.sample_prompt + tok.decode([i for i in row if i != eot]) for row in np.asarray(new).tolist()]
