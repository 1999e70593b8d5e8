"""Text-to-text on TinyStories for encoder-decoder models (T5, the original Transformer): the first
half of a story in, its second half out.

Each story is tokenized once, cut at the sentence boundary nearest its middle (in tokens), the first
part truncated to ``encoder_len`` tokens from the left (keeping the words nearest the cut) and the
second to ``decoder_len - 1`` tokens plus the end id. A trained tokenizer's end-of-text id also serves
as padding and as the decoder start token (as T5's pad id does); with ``--init-from`` the checkpoint's
own pad, end and decoder-start ids do. Batches are a fixed permutation of the examples per epoch, a
function of ``(seed, step)`` only.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from eqxllm.data import eot_id
from eqxllm.errors import DataError
from eqxllm.lora import with_adapter_dropout
from eqxllm.train.loss import cross_entropy
from eqxllm.train.prepare import stories_of
from eqxllm.train.tokenizer_source import run_tokenizer


@dataclass(frozen=True)
class Seq2SeqArrays:
    """Padded examples: encoder ids/mask ``[n, enc]``, decoder inputs/targets/mask ``[n, dec]``."""

    enc: np.ndarray
    enc_mask: np.ndarray
    dec_in: np.ndarray
    target: np.ndarray
    dec_mask: np.ndarray

    def rows(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "enc": self.enc[idx],
            "enc_mask": self.enc_mask[idx],
            "dec_in": self.dec_in[idx],
            "target": self.target[idx],
            "dec_mask": self.dec_mask[idx],
        }


def _cut(ids: list[int], boundaries: set[int]) -> int:
    """Index at which to split ``ids``: the sentence end nearest the middle, else the middle."""
    mid = len(ids) // 2
    ends = [i for i in boundaries if 0 < i < len(ids)]
    return min(ends, key=lambda i: abs(i - mid)) if ends else mid


@dataclass(frozen=True)
class SpecialIds:
    """The ids that end a target, pad a row and start the decoder."""

    eos: int
    pad: int
    start: int


def build_examples(
    stories: list[str], tok, *, encoder_len: int, decoder_len: int, special: SpecialIds | None = None
) -> Seq2SeqArrays:
    """Split each story in two (see the module docstring); the ``special`` ids default to the tokenizer's
    end-of-text id in every role."""
    if special is None:
        eot = eot_id(tok)
        special = SpecialIds(eos=eot, pad=eot, start=eot)
    # sentence ends of a byte-level BPE ("Ġ.") and of a SentencePiece vocabulary ("▁.") alike
    ends = (".", "!", "?", "Ġ.", "▁.")
    sentence_end = {tok.token_to_id(t) for t in ends if tok.token_to_id(t) is not None}
    rows = []
    for enc in tok.encode_batch(stories, add_special_tokens=False):
        ids = enc.ids
        if len(ids) < 4:
            continue
        cut = _cut(ids, {i + 1 for i, t in enumerate(ids) if t in sentence_end})
        rows.append((ids[:cut][-encoder_len:], ids[cut:][: decoder_len - 1] + [special.eos]))
    if not rows:
        raise DataError("no story is long enough to split into a first and a second half")
    n = len(rows)
    out = Seq2SeqArrays(
        enc=np.full((n, encoder_len), special.pad, np.int32),
        enc_mask=np.zeros((n, encoder_len), bool),
        dec_in=np.full((n, decoder_len), special.pad, np.int32),
        target=np.full((n, decoder_len), special.pad, np.int32),
        dec_mask=np.zeros((n, decoder_len), bool),
    )
    for r, (src, tgt) in enumerate(rows):
        out.enc[r, : len(src)], out.enc_mask[r, : len(src)] = src, True
        out.target[r, : len(tgt)], out.dec_mask[r, : len(tgt)] = tgt, True
        out.dec_in[r, 0] = special.start
        out.dec_in[r, 1 : len(tgt)] = tgt[:-1]  # shifted right behind the start token
    return out


def seq2seq_loss(model, batch, key):
    """Mean cross entropy of the decoder's targets, teacher-forced."""
    keys = None if key is None else jax.random.split(key, batch["enc"].shape[0])

    def one(enc, enc_mask, dec_in, dec_mask, k):  # adapters draw this example's dropout mask
        return with_adapter_dropout(model, k)(enc, dec_in, mask=enc_mask, decoder_mask=dec_mask, key=k)

    logits = jax.vmap(one)(batch["enc"], batch["enc_mask"], batch["dec_in"], batch["dec_mask"], keys)
    total, count = cross_entropy(logits, batch["target"], batch["dec_mask"])
    loss = total / jnp.maximum(count, 1.0)
    return loss, {"loss": loss, "tokens": count}


@eqx.filter_jit
def _eval_batch(model, batch):
    logits = jax.vmap(lambda e, em, d, dm: model(e, d, mask=em, decoder_mask=dm))(
        batch["enc"], batch["enc_mask"], batch["dec_in"], batch["dec_mask"]
    )
    total, count = cross_entropy(logits, batch["target"], batch["dec_mask"])
    correct = jnp.sum((jnp.argmax(logits, -1) == batch["target"]) & batch["dec_mask"])
    return total, count, correct


class Seq2SeqTask:
    """First half of a story -> second half; reports loss, perplexity and teacher-forced token accuracy."""

    def __init__(self, cfg, run_dir: Path, *, progress: bool = True):
        self.cfg = cfg
        d, t = cfg.data, cfg.train
        sources = stories_of(cfg.data, task=cfg.task)
        train_stories = sources["train"].stories()
        chosen = run_tokenizer(d, run_dir, lambda: train_stories, init_from=cfg.init_from, progress=progress)
        self.tokenizer, self.eot = chosen.tokenizer, chosen.eot
        # a checkpoint's config keeps its own special ids; a new model's come from the tokenizer
        trained = cfg.model if cfg.init_from else self.model_config(cfg.model)
        self.ids = SpecialIds(eos=trained.eos_token_id, pad=trained.pad_token_id, start=trained.decoder_start_token_id)
        lens = {"encoder_len": t.seq_len, "decoder_len": t.seq_len, "special": self.ids}
        self.train = build_examples(train_stories, self.tokenizer, **lens)
        self.val = build_examples(sources["validation"].stories(), self.tokenizer, **lens)
        if len(self.train.enc) < t.batch_size:
            raise DataError(f"{len(self.train.enc)} training stories are fewer than one batch of {t.batch_size}")

    def model_config(self, model_cfg):
        return model_cfg.replace(
            vocab_size=self.tokenizer.get_vocab_size(),
            pad_token_id=self.eot,
            eos_token_id=self.eot,
            decoder_start_token_id=self.eot,
        )

    def loss_fn(self, model, batch, key):
        return seq2seq_loss(model, batch, key)

    def batch(self, step: int, *, process_index: int, process_count: int) -> dict[str, np.ndarray]:
        t = self.cfg.train
        n = len(self.train.enc)
        per_epoch = max(n // t.batch_size, 1)
        epoch, index = divmod(step, per_epoch)
        order = np.random.default_rng([t.seed, epoch]).permutation(n)
        rows = order[index * t.batch_size : (index + 1) * t.batch_size]
        share = t.batch_size // process_count
        return self.train.rows(rows[process_index * share : (process_index + 1) * share])

    def evaluate(self, model) -> dict[str, float]:
        t = self.cfg.train
        n = len(self.val.enc)
        limit = n if not t.eval_batches else min(n, t.eval_batches * t.batch_size)
        total = count = correct = 0.0
        for start in range(0, limit, t.batch_size):
            rows = self.val.rows(np.arange(start, min(start + t.batch_size, n)))
            s, c, k = _eval_batch(model, {k: jnp.asarray(v) for k, v in rows.items()})
            total, count, correct = total + float(s), count + float(c), correct + float(k)
        loss = total / count if count else math.nan  # no scored target: undefined, not a perfect 0
        return {
            "val_loss": loss,
            "val_perplexity": math.exp(min(loss, 700.0)),
            "val_token_accuracy": correct / count if count else math.nan,
        }

    def samples(self, model, key) -> list[str]:
        from eqxllm.generation import generate

        t = self.cfg.train
        k = min(t.num_samples, len(self.val.enc))
        if k < 1:
            return []
        prompts = [self.val.enc[i][self.val.enc_mask[i]] for i in range(k)]
        new = generate(
            model,
            [jnp.asarray(p) for p in prompts],
            max_new_tokens=t.sample_tokens,
            key=None,
            eos_token_id=self.ids.eos,
        )
        out = []
        for p, row in zip(prompts, np.asarray(new).tolist()):
            first = self.tokenizer.decode(p.tolist())
            second = self.tokenizer.decode([i for i in row if i not in (self.ids.eos, self.ids.pad)])
            out.append(f"{first} => {second}")
        return out
