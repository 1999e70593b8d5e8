"""The text-to-text task of encoder-decoder models: example construction and a short training run."""

from pathlib import Path

import numpy as np
import pytest

from eqxllm.data import train_bpe_tokenizer
from eqxllm.models import T5Config
from eqxllm.train.config import DataConfig, LoopConfig, TrainConfig
from eqxllm.train.loop import train
from eqxllm.train.optim import OptimConfig
from eqxllm.train.tasks.seq2seq import build_examples

STORIES = [
    "Tom had a red ball. He threw it high. The ball fell in the pond. Tom was sad. A duck brought it back.",
    "Sue saw a cat. The cat was small. She gave it milk. The cat purred. They became friends.",
] * 40


def test_examples_split_at_a_sentence_end_and_shift_the_decoder():
    tok = train_bpe_tokenizer(STORIES, 300)
    ex = build_examples(STORIES[:2], tok, encoder_len=64, decoder_len=64)
    eot = tok.token_to_id("<|endoftext|>")
    for r in range(2):
        src = tok.decode(ex.enc[r][ex.enc_mask[r]].tolist())
        tgt_ids = ex.target[r][ex.dec_mask[r]].tolist()
        assert src.rstrip().endswith(".")  # cut after a full stop
        assert tgt_ids[-1] == eot  # targets end with end-of-text
        assert ex.dec_in[r, 0] == eot  # decoder starts with the start token
        np.testing.assert_array_equal(ex.dec_in[r, 1 : len(tgt_ids)], tgt_ids[:-1])
        assert (src + tok.decode(tgt_ids[:-1])).replace(" ", "") == STORIES[r].replace(" ", "")


def test_plain_text_tasks_read_every_format_through_one_path(tmp_path):
    """seq2seq and vae read their stories as the lm task does (here JSON Lines through ``datasets``);
    prompt/completion pairs and chat messages are refused."""
    import json

    from eqxllm.errors import ConfigError
    from eqxllm.train.prepare import stories_of

    pytest.importorskip("datasets")
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps({"text": s, "q": "a"}) + "\n" for s in STORIES[:10]), encoding="utf-8")
    sources = stories_of(DataConfig(source=str(path), val_fraction=0.3), task="seq2seq")
    assert sorted(sources["train"].stories() + sources["validation"].stories()) == sorted(STORIES[:10])
    paired = DataConfig(source=str(path), prompt_field="q", completion_field="text")
    with pytest.raises(ConfigError, match="task 'vae' reads plain texts"):
        stories_of(paired, task="vae")
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"text": [{"role": "user", "content": "hi"}]}) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="records of chat messages are for the 'lm' task"):
        stories_of(DataConfig(source=str(chats)), task="seq2seq")


def test_seq2seq_training_runs_and_exports_a_t5(tmp_path):
    data = tmp_path / "stories.txt"
    data.write_text("\n<|endoftext|>\n".join(STORIES) + "\n<|endoftext|>\n")
    cfg = TrainConfig(
        model=T5Config(
            vocab_size=300,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=1,
            num_decoder_layers=2,
            num_heads=4,
            feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,
        ),
        task="seq2seq",
        data=DataConfig(source=str(data), vocab_size=300, val_fraction=0.1, cache_dir=str(tmp_path / "c")),
        optim=OptimConfig(learning_rate=1e-2, warmup_steps=1, total_steps=6),
        train=LoopConfig(
            seq_len=32,
            batch_size=8,
            max_steps=6,
            eval_every=3,
            eval_batches=1,
            log_every=1,
            checkpoint_every=6,
            num_samples=1,
            sample_tokens=4,
        ),
        out=str(tmp_path / "run"),
    )
    export = train(cfg, progress=False)
    rows = (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()
    import json

    losses = [json.loads(r)["loss"] for r in rows if '"train"' in r]
    assert losses[-1] < losses[0]
    evals = [json.loads(r) for r in rows if '"eval"' in r]
    assert 0.0 <= evals[-1]["val_token_accuracy"] <= 1.0
    transformers = pytest.importorskip("transformers")
    hf = transformers.T5ForConditionalGeneration.from_pretrained(export)
    assert hf.config.num_decoder_layers == 2 and hf.config.vocab_size == 300
