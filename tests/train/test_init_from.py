"""Runs that start from a checkpoint (``init_from``), with and without LoRA: the first step sees exactly
the loaded weights, LoRA trains the adapters alone and resumes bit for bit, the exports (merged model,
PEFT adapter, tokenizer, generation config), and the errors of bad input."""

import dataclasses
import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.checkpoints.hub import resolve_pretrained
from eqxllm.data import batch_at, load_tokenizer, train_bpe_tokenizer
from eqxllm.data.tokenizer import TOKENIZER_CONFIG_FILE, TOKENIZER_FILE
from eqxllm.errors import ConfigError, DataError
from eqxllm.lora import apply_lora, merge_lora
from eqxllm.lora.config import LoraConfig
from eqxllm.models.gpt2 import GPT2, GPT2Config
from eqxllm.train.config import train_preset
from eqxllm.train.export import adapter_base, export_run
from eqxllm.train.init_from import checkpoint_config
from eqxllm.train.loop import train
from eqxllm.train.loss import next_token_loss
from eqxllm.train.prepare import prepare_data


def _stories(n: int = 200) -> list[str]:
    rng = np.random.default_rng(0)
    names, things = ["Lily", "Tom", "Mia", "Ben"], ["ball", "cat", "tree", "cake", "kite"]
    return [f"Once upon a time, {rng.choice(names)} had a {rng.choice(things)}. It was fun. The end." for _ in range(n)]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A random tiny GPT-2 saved in Hugging Face layout with its tokenizer, and the stories file."""
    root = tmp_path_factory.mktemp("base")
    stories = _stories()
    (root / "stories.txt").write_text("\n<|endoftext|>\n".join(stories) + "\n<|endoftext|>\n", encoding="utf-8")
    tok = train_bpe_tokenizer(stories, 300)
    eot = tok.token_to_id("<|endoftext|>")
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=32, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=eot, eos_token_id=eot, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # fmt: skip
    eqxllm.save_pretrained(GPT2(cfg, key=jax.random.key(3)), root / "ckpt", tokenizer=tok)
    return root


def _cfg(base: Path, out: Path, *, lora: LoraConfig | None = None, steps: int = 4, **model_changes):
    cfg = train_preset("gpt2-tinystories-test")
    ckpt = str(base / "ckpt")
    data = dataclasses.replace(cfg.data, source=str(base / "stories.txt"), cache_dir=str(base / "cache"))
    loop = dataclasses.replace(cfg.train, num_samples=0, log_every=1, max_steps=steps, eval_every=100)
    optim = dataclasses.replace(cfg.optim, total_steps=steps, warmup_steps=0)
    return cfg.replace(
        model=checkpoint_config(ckpt, model_changes),
        init_from=ckpt,
        lora=lora or LoraConfig(),
        data=data,
        train=loop,
        optim=optim,
        out=str(out),
    )


def _first_loss(cfg) -> float:
    rows = [json.loads(line) for line in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    return next(r["loss"] for r in rows if r["kind"] == "train" and r["step"] == 1)


def _checkpoint_loss(cfg) -> float:
    """The loaded checkpoint evaluated on the run's first batch (what ``eqxllm eval`` computes)."""
    model = eqxllm.from_pretrained(cfg.init_from)
    eot = model.config.eos_token_id
    tok = load_tokenizer(cfg.init_from)
    data = prepare_data(cfg.data, Path(cfg.out), progress=False, tokenizer=tok, eot=eot)
    t = cfg.train
    batch = batch_at(data.train, 0, batch_size=t.batch_size, seq_len=t.seq_len, seed=t.seed)
    loss, _ = next_token_loss(model, jnp.asarray(batch), None)
    return float(loss)


LORA = LoraConfig(rank=2, alpha=4.0, targets="attn")


def test_full_finetune_first_step_sees_the_checkpoint(base, tmp_path):
    cfg = _cfg(base, tmp_path / "full")
    train(cfg, progress=False, stop_after_step=1)
    assert _first_loss(cfg) == pytest.approx(_checkpoint_loss(cfg), abs=1e-6)


def test_lora_run_first_step_exports_and_bit_identical_resume(base, tmp_path):
    a = _cfg(base, tmp_path / "a", lora=LORA)
    export = train(a, progress=False)
    assert _first_loss(a) == pytest.approx(_checkpoint_loss(a), abs=1e-6)  # B = 0: exactly the checkpoint
    names = sorted(p.name for p in export.iterdir())
    assert names == sorted(
        ["config.json", "generation_config.json", "model.safetensors", TOKENIZER_FILE, TOKENIZER_CONFIG_FILE]
    )
    assert (export / "tokenizer.json").read_bytes() == (base / "ckpt" / "tokenizer.json").read_bytes()
    gen = json.loads((export / "generation_config.json").read_text())
    assert gen["eos_token_id"] == eqxllm.load_config(a.init_from).eos_token_id
    adapter = json.loads((Path(a.out) / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 2 and adapter["base_model_name_or_path"] == str(Path(a.init_from).resolve())

    merged, start = eqxllm.from_pretrained(export), eqxllm.from_pretrained(a.init_from)
    # only the attention projections moved (by the merged low-rank update); everything else is frozen
    changed = jax.tree.map(lambda x, y: bool(np.any(np.asarray(x) != np.asarray(y))), merged, start)
    assert changed.blocks.blocks.attn.q_proj.weight and changed.blocks.blocks.attn.o_proj.weight
    assert not changed.wte.weight and not changed.blocks.blocks.mlp.up.weight
    assert not changed.blocks.blocks.ln_1.weight and not changed.blocks.blocks.attn.q_proj.bias

    b = _cfg(base, tmp_path / "b", lora=LORA)
    train(b, progress=False, stop_after_step=2)
    # the message names the field, both values, and the run's own config as a way to resume
    with pytest.raises(ConfigError, match=r"lora\.rank \(was 2, now 4\) differs .*--config-file .*run_config\.json"):
        train(b.replace(resume=True, lora=dataclasses.replace(LORA, rank=4)), progress=False)
    resumed = eqxllm.from_pretrained(train(b.replace(resume=True), progress=False))
    for x, y in zip(
        jax.tree.leaves(eqx.filter(merged, eqx.is_array)), jax.tree.leaves(eqx.filter(resumed, eqx.is_array))
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for name in ("adapter_model.safetensors",):
        assert (Path(a.out) / "adapter" / name).read_bytes() == (Path(b.out) / "adapter" / name).read_bytes()


def test_a_lora_resume_refuses_a_base_that_changed(base, tmp_path):
    """The checkpoints hold the adapters, not the base, which the resumed run reloads from --init-from:
    if those weights changed since (a directory written over, a Hub id's new revision), resuming over
    them would be training another model, so it stops, naming both fingerprints, and touches nothing."""
    import shutil

    from eqxllm.errors import CheckpointError

    ckpt = tmp_path / "ckpt"
    shutil.copytree(base / "ckpt", ckpt)
    cfg = _cfg(base, tmp_path / "run", lora=LORA).replace(init_from=str(ckpt))
    train(cfg, progress=False, stop_after_step=2)
    run = Path(cfg.out)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    other = GPT2(eqxllm.load_config(ckpt), key=jax.random.key(11))  # the same architecture, other weights
    eqxllm.save_pretrained(other, ckpt, tokenizer=load_tokenizer(ckpt))
    with pytest.raises(CheckpointError, match=rf"different base than --init-from {ckpt} gives now"):
        train(cfg.replace(resume=True), progress=False)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_changeable_fields_apply_and_fixed_ones_are_refused(base, tmp_path):
    cfg = _cfg(base, tmp_path / "x", remat="full", resid_pdrop=0.1)
    assert cfg.model.remat == "full" and cfg.model.resid_pdrop == 0.1
    with pytest.raises(ConfigError, match="--model.n-layer cannot be set with --init-from"):
        checkpoint_config(cfg.init_from, {"n_layer": 3})
    wrong = cfg.replace(model=cfg.model.replace(n_embd=64, n_head=2))
    with pytest.raises(ConfigError, match=r"--model.n-embd=64 \(checkpoint: 32\) cannot be set with --init-from"):
        train(wrong, progress=False)


def test_cli_refuses_architecture_flags(base):
    from eqxllm.cli.train import parse

    ckpt = str(base / "ckpt")
    with pytest.raises(ConfigError, match="--model.n-layer cannot be set with --init-from"):
        parse(["--init-from", ckpt, "--model.n-layer", "3"])
    cfg = parse(["--config", "gpt2-tinystories-test", "--init-from", ckpt, "--model.remat", "full", "--lora.rank", "4"])
    assert cfg.init_from == ckpt and cfg.model.remat == "full" and cfg.model.n_embd == 32 and cfg.lora.rank == 4


def test_checkpoint_without_tokenizer(base, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((base / "ckpt" / name).read_bytes())
    cfg = _cfg(base, tmp_path / "run").replace(init_from=str(bare))
    with pytest.raises(DataError, match="holds no tokenizer"):
        train(cfg, progress=False)


def test_checkpoint_with_nan_weights_is_named_before_training(base, tmp_path):
    from safetensors.numpy import load_file, save_file

    from eqxllm.errors import NonFiniteError
    from eqxllm.train.init_from import load_weights

    bad = tmp_path / "nan"
    bad.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (bad / name).write_bytes((base / "ckpt" / name).read_bytes())
    tensors = load_file(base / "ckpt" / "model.safetensors")
    tensors["transformer.ln_f.bias"][1] = np.nan
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(NonFiniteError, match=r"tensor 'transformer.ln_f.bias' holds 1 non-finite"):
        load_weights(checkpoint_config(str(bad)), str(bad))


def test_prompt_completion_lora_run(base, tmp_path):
    """A LoRA run on prompt/completion JSON Lines: its first loss is the checkpoint's completion-only loss
    on the first batch, and the run exports the merged model and the adapter."""
    from eqxllm.train.loss import completion_loss

    rows = [{"q": f"Who had the {s.split()[-4]}?", "a": " " + s} for s in _stories(120)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = _cfg(base, tmp_path / "pc", lora=LORA, steps=2)
    cfg = cfg.replace(
        data=dataclasses.replace(cfg.data, source=str(path), prompt_field="q", completion_field="a", val_fraction=0.2)
    )
    export = train(cfg, progress=False)
    assert (export / "model.safetensors").is_file() and (Path(cfg.out) / "adapter" / "adapter_config.json").is_file()
    tok = load_tokenizer(cfg.init_from)
    eot = eqxllm.load_config(cfg.init_from).eos_token_id
    data = prepare_data(cfg.data, Path(cfg.out), progress=False, tokenizer=tok, eot=eot)
    t = cfg.train
    where = dict(batch_size=t.batch_size, seq_len=t.seq_len, seed=t.seed)
    batch = {"tokens": batch_at(data.train, 0, **where), "loss_mask": batch_at(data.train_mask, 0, **where)}
    assert 0 < batch["loss_mask"][:, 1:].sum() < batch["loss_mask"][:, 1:].size
    loss, _ = completion_loss(eqxllm.from_pretrained(cfg.init_from), jax.tree.map(jnp.asarray, batch))
    assert _first_loss(cfg) == pytest.approx(float(loss), abs=1e-6)


def test_a_chat_lora_run_trains_on_the_replies_and_keeps_the_template(base, tmp_path):
    """Chat records through the checkpoint's chat template: the first loss is the checkpoint's loss on the
    replies of the first batch, and the export keeps the template."""
    import shutil

    from eqxllm.data import load_chat_templates
    from eqxllm.train.loss import completion_loss

    ckpt = tmp_path / "chat-ckpt"
    shutil.copytree(base / "ckpt", ckpt)
    template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    config = json.loads((ckpt / TOKENIZER_CONFIG_FILE).read_text())
    (ckpt / TOKENIZER_CONFIG_FILE).write_text(json.dumps({**config, "chat_template": template}))
    rows = [
        {"prompt": [{"role": "user", "content": f"Who had the {s.split()[-4]}?"}],
         "completion": [{"role": "assistant", "content": s}]}
        for s in _stories(120)
    ]  # fmt: skip
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = _cfg(base, tmp_path / "chat", lora=LORA, steps=2).replace(init_from=str(ckpt))
    cfg = cfg.replace(
        data=dataclasses.replace(
            cfg.data, source=str(path), prompt_field="prompt", completion_field="completion", val_fraction=0.2
        )
    )
    export = train(cfg, progress=False)
    assert load_chat_templates(export).templates == {"default": template}
    data = prepare_data(cfg.data, Path(cfg.out), progress=False, init_from=str(ckpt))
    t = cfg.train
    where = dict(batch_size=t.batch_size, seq_len=t.seq_len, seed=t.seed)
    batch = {"tokens": batch_at(data.train, 0, **where), "loss_mask": batch_at(data.train_mask, 0, **where)}
    assert 0 < batch["loss_mask"][:, 1:].sum() < batch["loss_mask"][:, 1:].size
    loss, _ = completion_loss(eqxllm.from_pretrained(ckpt), jax.tree.map(jnp.asarray, batch))
    assert _first_loss(cfg) == pytest.approx(float(loss), abs=1e-6)


def test_lora_base_in_bfloat16(base, tmp_path):
    from eqxllm.train.init_from import initial_model

    cfg = _cfg(base, tmp_path / "bf16", lora=LoraConfig(rank=2, targets="attn", base_dtype="bfloat16"))
    model = initial_model(cfg, cfg.model, jax.random.key(0))
    q = model.blocks.blocks.attn.q_proj
    assert q.weight.dtype == jnp.bfloat16 and model.wte.weight.dtype == jnp.bfloat16
    assert q.lora_a.dtype == jnp.float32 and q.lora_b.dtype == jnp.float32


def test_gemma_lora_run_first_step_sees_the_checkpoint(base, tmp_path):
    """The same path for another family: a Gemma 3 checkpoint (its own EOS id separates stories)."""
    from eqxllm.models import Gemma, GemmaConfig

    tok = load_tokenizer(base / "ckpt")
    gemma_cfg = GemmaConfig.tiny(3).replace(
        vocab_size=tok.get_vocab_size(), num_hidden_layers=2, max_position_embeddings=32,
        layer_types=("sliding_attention", "full_attention"), eos_token_id=tok.token_to_id("<|endoftext|>"),
    )  # fmt: skip
    ckpt = tmp_path / "gemma"
    eqxllm.save_pretrained(Gemma(gemma_cfg, key=jax.random.key(4)), ckpt, tokenizer=tok)
    cfg = _cfg(base, tmp_path / "run", lora=LoraConfig(rank=2, targets="attn|mlp"))
    cfg = cfg.replace(model=checkpoint_config(str(ckpt)), init_from=str(ckpt))
    train(cfg, progress=False, stop_after_step=1)
    assert _first_loss(cfg) == pytest.approx(_checkpoint_loss(cfg), abs=1e-6)


def test_the_adapter_names_its_base_from_anywhere(tmp_path, monkeypatch):
    """A relative --init-from, or a run directory (which --init-from accepts), is written as the
    absolute model directory; a Hub id as given."""
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}")
    (run / "run_config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert adapter_base("run", Path(resolve_pretrained("run"))) == str((run / "model").resolve())
    assert adapter_base("run/model", Path("run/model")) == str((run / "model").resolve())
    assert adapter_base("google/gemma-3-1b-pt", tmp_path / "cache-snapshot") == "google/gemma-3-1b-pt"
    assert adapter_base(None, None) is None


def test_a_lora_model_from_scratch_exports_the_merged_model_only(tmp_path):
    """No file holds a randomly initialised base, so an adapter on it could never be loaded."""
    tiny = GPT2Config.tiny()
    model = apply_lora(GPT2(tiny, key=jax.random.key(0)), rank=2, alpha=4.0, targets="attn", key=jax.random.key(1))
    (tmp_path / "run").mkdir()
    dst = export_run(model, tmp_path / "run" / "model", tokenizer=None)
    assert (dst / "config.json").is_file() and not (tmp_path / "run" / "adapter").exists()
    ids = jnp.arange(5)
    assert np.abs(np.asarray(eqxllm.from_pretrained(dst)(ids) - merge_lora(model)(ids))).max() < 1e-5
