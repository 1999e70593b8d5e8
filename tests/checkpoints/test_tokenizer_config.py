"""A tokenizer that eqxllm saves beside a model (``save_pretrained(tokenizer=)``, ``extract_t5``) is read
by ``transformers.AutoTokenizer`` whatever the family: a T5 directory without ``tokenizer_config.json``
would get T5's SentencePiece class, which cannot read a BPE ``tokenizer.json``."""

import jax
import pytest

import eqxllm
from eqxllm.checkpoints.t5_vae import extract_t5
from eqxllm.data.tokenizer import load_tokenizer, train_bpe_tokenizer
from eqxllm.models import T5VAE, T5VAEConfig

TEXT = "Lily saw a cat. The cat ran to the park, and Lily ran after it."


def test_saved_t5_and_extracted_t5_tokenizers_load_with_auto_tokenizer(tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = train_bpe_tokenizer([TEXT] * 10, vocab_size=300, min_frequency=1)
    eos = tok.token_to_id("<|endoftext|>")
    cfg = T5VAEConfig.tiny().with_vocabulary(tok.get_vocab_size(), pad=eos, eos=eos, start=eos)
    vae = T5VAE(cfg, key=jax.random.key(0))
    eqxllm.save_pretrained(vae.t5, tmp_path / "t5", tokenizer=tok)
    eqxllm.save_pretrained(vae, tmp_path / "vae", tokenizer=tok)
    extract_t5(tmp_path / "vae", tmp_path / "extracted")
    for name in ("t5", "vae", "extracted"):
        auto = transformers.AutoTokenizer.from_pretrained(tmp_path / name)
        assert auto(TEXT).input_ids == load_tokenizer(tmp_path / name).encode(TEXT).ids == tok.encode(TEXT).ids
        assert auto.eos_token == "<|endoftext|>"
    eqxllm.save_pretrained(vae.t5, tmp_path / "t5")  # over it without a tokenizer: the old one's files go
    assert not (tmp_path / "t5" / "tokenizer.json").exists()
    assert not (tmp_path / "t5" / "tokenizer_config.json").exists()
