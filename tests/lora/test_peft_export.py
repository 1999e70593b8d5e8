"""PEFT export against ``peft`` + ``transformers`` (CPU, float32): a random-weight Hugging Face model is
loaded by eqxllm, given LoRA adapters with random non-zero ``B``, exported; ``peft`` loads the adapter
onto the same ``transformers`` model and the logits match eqxllm's LoRA model; the merged export
loaded by ``transformers`` matches both."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm
from eqxllm.lora import LoraLinear, apply_lora, merge_lora
from eqxllm.lora.peft_export import save_peft_adapter
from eqxllm.train.export import export_run

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

TOL = 1e-4
SEQ = 12


def _randomize_norms(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln" in name or name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if "weight" in name and "gemma" not in name else 0.0))
    return model


def _gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    return _randomize_norms(transformers.GPT2LMHeadModel(cfg).eval())


def _gemma():
    torch.manual_seed(0)
    cfg = transformers.Gemma3TextConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=64,
        sliding_window=4,
        sliding_window_pattern=2,
    )
    return _randomize_norms(transformers.Gemma3ForCausalLM(cfg).eval())


def _llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, rms_norm_eps=1e-6,
    )  # fmt: skip
    return _randomize_norms(transformers.LlamaForCausalLM(cfg).eval())


def _t5():
    torch.manual_seed(0)
    cfg = transformers.T5Config(
        vocab_size=100, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=4,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0, decoder_start_token_id=0,
    )  # fmt: skip
    return _randomize_norms(transformers.T5ForConditionalGeneration(cfg).eval())


def _random_b(model, key):
    """Every adapter's ``B`` drawn at random (it starts at zero, which would test nothing)."""
    loras = [
        x for x in jax.tree.leaves(model, is_leaf=lambda x: isinstance(x, LoraLinear)) if isinstance(x, LoraLinear)
    ]
    keys = jax.random.split(key, len(loras))
    new_b = [0.2 * jax.random.normal(k, lin.lora_b.shape) for lin, k in zip(loras, keys)]
    return eqx.tree_at(
        lambda m: [
            x.lora_b
            for x in jax.tree.leaves(m, is_leaf=lambda x: isinstance(x, LoraLinear))
            if isinstance(x, LoraLinear)
        ],
        model,
        new_b,
    )


CASES = {
    # GPT-2's fused c_attn: q, k, v adapters become one rank-3r adapter; o_proj -> attn.c_proj; mlp -> Conv1D c_fc
    "gpt2-attn-mlp": (_gpt2, r"attn|mlp\.up", 4, 8.0),
    # only part of the fused c_attn adapted
    "gpt2-q-v": (_gpt2, r"attn\.(q_proj|v_proj)", 2, 3.0),
    "gemma3-all": (_gemma, r"attn|mlp", 4, 16.0),
    # the llama-like family (grouped-query attention): every projection and the untied head, then a few
    "llama-all": (_llama, r"attn|mlp|lm_head", 4, 8.0),
    "llama-k-down": (_llama, r"attn\.k_proj|mlp\.down", 2, 2.0),
    "t5-attn": (_t5, r"attn", 2, 4.0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_peft_adapter_and_merged_export_match_transformers(case, tmp_path):
    make_hf, targets, rank, alpha = CASES[case]
    hf = make_hf()
    hf.save_pretrained(tmp_path / "base")
    base = eqxllm.from_pretrained(tmp_path / "base")
    model = _random_b(
        apply_lora(base, rank=rank, alpha=alpha, targets=targets, key=jax.random.key(1)), jax.random.key(2)
    )
    save_peft_adapter(model, tmp_path / "adapter", base_model_name_or_path=str(tmp_path / "base"))
    eqxllm.save_pretrained(merge_lora(model), tmp_path / "merged")

    ids = np.random.default_rng(0).integers(1, 100, size=(SEQ,)).astype(np.int32)
    if hf.config.is_encoder_decoder:
        dec = ids[::-1].copy()
        ours = np.asarray(model(jnp.asarray(ids), jnp.asarray(dec)))
        merged_ours = np.asarray(merge_lora(model)(jnp.asarray(ids), jnp.asarray(dec)))
        inputs = dict(input_ids=torch.tensor(ids[None]).long(), decoder_input_ids=torch.tensor(dec[None]).long())
    else:
        ours = np.asarray(model(jnp.asarray(ids)))
        merged_ours = np.asarray(merge_lora(model)(jnp.asarray(ids)))
        inputs = dict(input_ids=torch.tensor(ids[None]).long())
    with torch.no_grad():
        plain = hf(**inputs).logits[0].numpy()
        lora_hf = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
        theirs = lora_hf(**inputs).logits[0].numpy()
        merged_hf = type(hf).from_pretrained(tmp_path / "merged").eval()(**inputs).logits[0].numpy()
    assert np.abs(ours - plain).max() > 1e-2  # the adapters really change the model
    np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)
    np.testing.assert_allclose(merged_ours, ours, atol=TOL, rtol=0)
    np.testing.assert_allclose(merged_hf, theirs, atol=TOL, rtol=0)
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["bias"] == "none"


def _multimodal_gemma():
    """A Gemma3ForConditionalGeneration (gemma-3-4b and larger): its text layers are named
    ``model.language_model.layers.N`` instead of the text-only model's ``model.layers.N``."""
    torch.manual_seed(0)
    text = _gemma().config.to_dict()
    vision = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                  num_attention_heads=2, image_size=28, patch_size=14)  # fmt: skip
    cfg = transformers.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                                    image_token_index=99, boi_token_index=97, eoi_token_index=98)  # fmt: skip
    cfg._attn_implementation = "eager"
    return _randomize_norms(transformers.Gemma3ForConditionalGeneration(cfg).eval())


@pytest.mark.parametrize("how", ["local path", "base config", "run export"])
def test_a_multimodal_gemma3_base_takes_the_adapter_under_its_own_module_names(how, tmp_path):
    hf = _multimodal_gemma()
    hf.save_pretrained(tmp_path / "base")
    model = eqxllm.from_pretrained(tmp_path / "base")
    model = _random_b(
        apply_lora(model, rank=2, alpha=4.0, targets=r"attn|mlp", key=jax.random.key(1)), jax.random.key(2)
    )
    if how == "local path":
        save_peft_adapter(model, tmp_path / "adapter", base_model_name_or_path=str(tmp_path / "base"))
    elif how == "base config":  # a Hub id, with the snapshot's config.json at hand
        base_config = json.loads((tmp_path / "base" / "config.json").read_text())
        save_peft_adapter(model, tmp_path / "adapter", base_model_name_or_path="org/gemma-3", base_config=base_config)
    else:
        export_run(model, tmp_path / "model", tokenizer=None, init_from=str(tmp_path / "base"))
    names = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["target_modules"]
    assert "model\\.language_model\\.layers" in names
    ids = np.random.default_rng(0).integers(1, 90, size=(SEQ,)).astype(np.int32)
    with torch.no_grad():
        plain = hf(input_ids=torch.tensor(ids[None]).long()).logits[0].numpy()
        lora_hf = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
        theirs = lora_hf(input_ids=torch.tensor(ids[None]).long()).logits[0].numpy()
    ours = np.asarray(model(jnp.asarray(ids)))
    assert np.abs(ours - plain).max() > 1e-2
    np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)
