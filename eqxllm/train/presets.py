"""Training presets, as data: a base run (TinyStories at CPU scale, or seconds for tests) plus the
model and the few fields each preset changes (nanoGPT's config overrides, in one table).

Every schedule spans the run: ``optim.total_steps`` is ``None`` (the run's ``train.max_steps``) and the
warmup a fraction of it, so ``--train.max-steps N`` rescales a preset's whole schedule.
"""

from collections.abc import Callable
from typing import Any

from eqxllm.errors import ConfigError
from eqxllm.models.gemma_config import GemmaConfig
from eqxllm.models.gpt2 import GPT2Config
from eqxllm.models.llama_config import LlamaConfig
from eqxllm.models.t5_config import T5Config
from eqxllm.models.t5_vae_config import T5VAEConfig
from eqxllm.train.config import DataConfig, LoopConfig, TrainConfig
from eqxllm.train.optim import OptimConfig

# About ten minutes on a 2-core CPU: 128-token windows of a 4096-token BPE trained on the stories.
_CPU_LOOP: dict[str, Any] = dict(seq_len=128, batch_size=32, max_minutes=10.0, eval_every=100, checkpoint_every=200)
_CPU_OPTIM: dict[str, Any] = dict(learning_rate=2e-3, warmup_steps=30, weight_decay=0.1, b2=0.99)
# Seconds on a CPU: for tests and smoke runs.
_TEST_LOOP: dict[str, Any] = dict(seq_len=16, batch_size=8, eval_every=4, eval_batches=2, log_every=2, checkpoint_every=4,
                  num_samples=1)  # fmt: skip
_TEST_OPTIM: dict[str, Any] = dict(learning_rate=1e-2, warmup_steps=2)
_NO_DROPOUT: dict[str, Any] = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def _run(
    model: Any,
    *,
    out: str,
    steps: int,
    loop: dict[str, Any],
    optim: dict[str, Any],
    task: str = "lm",
    data: DataConfig | None = None,
) -> TrainConfig:
    """A preset: ``steps`` of ``loop`` and ``optim`` (whose ``warmup_steps`` becomes a fraction of the run)."""
    optim = dict(optim)
    fraction = optim.pop("warmup_steps") / steps
    return TrainConfig(
        model=model,
        task=task,
        data=data or DataConfig(vocab_size=4096),
        optim=OptimConfig(total_steps=None, warmup_steps=None, warmup_fraction=fraction, **optim),
        train=LoopConfig(max_steps=steps, **loop),
        out=out,
    )


def _llama_tinystories(**changes: Any) -> LlamaConfig:
    # Llama 3-style at TinyStories scale: GQA (4 query heads sharing 2 key/value heads), SwiGLU, untied head
    return LlamaConfig(
        vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=0,
        pad_token_id=0,
    ).replace(**changes)  # fmt: skip


# Every model claims only the context it is trained on (its positions = train.seq_len): a longer one
# would evaluate and generate on untrained positions.
_PRESETS: dict[str, Callable[[], TrainConfig]] = {
    # 4 layers of width 256; 400 steps of 4096 tokens, about two passes over the 2 MiB slice
    "gpt2-tinystories": lambda: _run(
        GPT2Config(vocab_size=4096, n_positions=128, n_embd=256, n_layer=4, n_head=4, bos_token_id=0,
                   eos_token_id=0, **_NO_DROPOUT),
        out="runs/gpt2-tinystories", steps=400, loop=_CPU_LOOP, optim=_CPU_OPTIM,
    ),
    # one GPU/TPU host or more: GPT-2 small's shape, bfloat16 compute, vocabulary padded to 128s
    "gpt2-tinystories-gpu": lambda: _run(
        GPT2Config(n_positions=512, pad_vocab_multiple=128, attention_impl="jax", remat="dots", **_NO_DROPOUT),
        out="runs/gpt2-tinystories-gpu", steps=20_000, data=DataConfig(tokenizer="gpt2"),
        loop=dict(seq_len=512, batch_size=256, compute_dtype="bfloat16", eval_every=500, checkpoint_every=1000),
        optim=dict(learning_rate=6e-4, warmup_steps=500),
    ),
    "gpt2-tinystories-test": lambda: _run(
        GPT2Config(vocab_size=300, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0,
                   **_NO_DROPOUT),
        out="runs/test", steps=8, data=DataConfig(vocab_size=300), loop=dict(_TEST_LOOP, sample_tokens=8),
        optim=_TEST_OPTIM,
    ),
    # Gemma 3-style: GQA, query/key norms, GeGLU, 64-token windows alternating with global layers
    # whose rotary base differs
    "gemma-tinystories": lambda: _run(
        GemmaConfig(
            generation=3, vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=128,
            query_pre_attn_scalar=64.0, sliding_window=64, rope_theta=1_000_000.0, rope_local_base_freq=10_000.0,
            sliding_window_pattern=2, bos_token_id=0, eos_token_id=0, pad_token_id=0,
        ),
        out="runs/gemma-tinystories", steps=500, loop=_CPU_LOOP, optim=_CPU_OPTIM,
    ),
    "llama-tinystories": lambda: _run(
        _llama_tinystories(), out="runs/llama-tinystories", steps=500, loop=_CPU_LOOP, optim=_CPU_OPTIM
    ),
    # Mixtral's layout: every MLP a top-2 mixture of 8 narrower experts (about twice the dense
    # model's active MLP width per token)
    "mixtral-tinystories": lambda: _run(
        _llama_tinystories(model_type="mixtral", intermediate_size=384, num_local_experts=8, num_experts_per_tok=2),
        out="runs/mixtral-tinystories", steps=500, loop=_CPU_LOOP, optim=_CPU_OPTIM,
    ),
    # T5 v1.1 style (gated GELU, untied head, relative positions): a story's first half in, its second out
    "t5-tinystories": lambda: _run(
        T5Config(vocab_size=4096, d_model=256, d_kv=64, d_ff=640, num_layers=3, num_decoder_layers=3, num_heads=4,
                 feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0),
        out="runs/t5-tinystories", steps=400, task="seq2seq", loop=dict(_CPU_LOOP, seq_len=96, sample_tokens=64),
        optim=_CPU_OPTIM,
    ),
    # sentences of < 24 tokens autoencoded, with the interpolation loss; 6,000 steps (docs/t5_vae.md)
    "t5-vae-tinystories": lambda: _run(
        T5VAEConfig.tinystories(), out="runs/t5-vae-tinystories", steps=6000, task="vae",
        data=DataConfig(vocab_size=4096, val_fraction=0.02),
        loop=dict(_CPU_LOOP, seq_len=24, max_minutes=45.0, eval_every=250, eval_batches=8, log_every=25,
                  checkpoint_every=500),
        optim=dict(_CPU_OPTIM, learning_rate=3e-3, warmup_steps=50, weight_decay=0.01),
    ),
    "t5-vae-test": lambda: _run(
        T5VAEConfig.tiny(), out="runs/t5-vae-test", steps=8, task="vae", data=DataConfig(vocab_size=300, val_fraction=0.1),
        loop=_TEST_LOOP, optim=_TEST_OPTIM,
    ),
}  # fmt: skip

TRAIN_PRESETS = dict(sorted(_PRESETS.items()))


def train_preset(name: str) -> TrainConfig:
    """The training run named ``name`` (one of :data:`TRAIN_PRESETS`)."""
    try:
        return TRAIN_PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown training preset {name!r}; known: {sorted(TRAIN_PRESETS)}") from None
