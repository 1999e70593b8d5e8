"""T5's encoder alone against transformers' ``T5EncoderModel`` / ``MT5EncoderModel`` (PyTorch, CPU, float32):
random weights with randomized norms, both directions, the exact saved layout, an encoder-decoder checkpoint
read as an encoder, a Hub cache, and the errors.

Written against transformers 5.25 (other major versions are skipped, as in test_t5_parity.py).
"""

import json
import shutil

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from huggingface_hub import constants
from safetensors.numpy import load_file, save_file

import eqxllm
from eqxllm.checkpoints.t5_encoder import encoder_from_pretrained
from eqxllm.errors import CheckpointError, InputError, MissingKeyError
from eqxllm.models import T5, GPT2Config, T5Config, T5Encoder
from eqxllm.nn import RMSNorm

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.skipif(
    int(transformers.__version__.split(".")[0]) != 5,
    reason=f"written against transformers 5.x (5.25); found {transformers.__version__}",
)

TOL = 1e-5

CONFIGS = {
    "t5-v1_0-relu": ("t5", dict(vocab_size=120, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)),
    "t5-v1_1-gated-gelu": (
        "t5",
        dict(
            vocab_size=97, d_model=48, d_kv=12, d_ff=40, num_layers=3, num_decoder_layers=1, num_heads=3,
            feed_forward_proj="gated-gelu", relative_attention_num_buckets=16, relative_attention_max_distance=20,
        ),
    ),
    "mt5-gated-gelu": ("mt5", dict(vocab_size=64, d_model=24, d_kv=6, d_ff=56, num_layers=2, num_heads=2,
                                   feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-5)),
}  # fmt: skip


def _hf_config(name: str):
    model_type, kwargs = CONFIGS[name]
    cls = transformers.MT5Config if model_type == "mt5" else transformers.T5Config
    return cls(**kwargs, dropout_rate=0.0)


def _randomize_torch_norms(model) -> None:
    with torch.no_grad():  # norms start at one: randomize them so that they are really checked
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(torch.randn_like(p) * 0.5 + 1.0)


def _hf_encoder(name: str, seed: int = 0):
    torch.manual_seed(seed)
    model_type, _ = CONFIGS[name]
    cls = transformers.MT5EncoderModel if model_type == "mt5" else transformers.T5EncoderModel
    model = cls(_hf_config(name)).eval()
    _randomize_torch_norms(model)
    return model


def _inputs(vocab: int, seed: int, length: int = 19):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(2, length))
    mask = np.ones((2, length), bool)
    mask[1, length - 6 :] = False  # the second example right-padded by 6
    return ids, mask


def _hf_states(model, ids, mask):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64)))
    return out.last_hidden_state.numpy()


@eqx.filter_jit
def _forward(model, ids, mask):
    return jax.vmap(lambda i, m: model(i, mask=m))(ids, mask)


def _ours(model, ids, mask):
    return np.asarray(_forward(model, jnp.asarray(ids), jnp.asarray(mask)))


def _max_diff(a, b, mask):
    assert a.shape == b.shape
    return float(np.abs(a - b)[mask].max())  # padded positions hold meaningless values in both


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory) -> dict:
    """Per config: a transformers encoder-only model and the directory its save_pretrained wrote."""
    out = {}
    for name in CONFIGS:
        model = _hf_encoder(name)
        path = tmp_path_factory.mktemp(name)
        model.save_pretrained(path)
        out[name] = (name, model, path)
    return out


@pytest.fixture(params=sorted(CONFIGS))
def hf_dir(request, hf_dirs):
    return hf_dirs[request.param]


@pytest.fixture
def v1_1_dir(hf_dirs):
    """One of them, for the tests of layouts and errors (they need no other config)."""
    return hf_dirs["t5-v1_1-gated-gelu"]


def test_hf_encoder_checkpoint_loads_with_its_states(hf_dir):
    name, hf, path = hf_dir
    model = eqxllm.from_pretrained(path)
    assert isinstance(model, T5Encoder)
    assert not hasattr(model, "decoder")  # nothing of a decoder is allocated
    ids, mask = _inputs(CONFIGS[name][1]["vocab_size"], seed=0)
    ours, ref = _ours(model, ids, mask), _hf_states(hf, ids, mask)
    assert ours.shape == (2, 19, CONFIGS[name][1]["d_model"])
    assert _max_diff(ours, ref, mask) <= TOL


def test_save_writes_what_transformers_writes(hf_dir, tmp_path):
    """The same keys (``shared.weight`` and ``encoder.*``, no ``encoder.embed_tokens.weight``), the same
    bytes, ``architectures: ["T5EncoderModel"]``; and transformers reads it back to the same states."""
    name, hf, path = hf_dir
    eqxllm.save_pretrained(eqxllm.from_pretrained(path), tmp_path / "out")
    a, b = load_file(path / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    assert sorted(a) == sorted(b) and "shared.weight" in b and "encoder.embed_tokens.weight" not in b
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["architectures"] == ["T5EncoderModel"] and cfg["model_type"] == "t5"
    assert cfg["is_encoder_decoder"] is False
    back = transformers.T5EncoderModel.from_pretrained(tmp_path / "out").eval()
    ids, mask = _inputs(CONFIGS[name][1]["vocab_size"], seed=1)
    assert _max_diff(_hf_states(back, ids, mask), _hf_states(hf, ids, mask), mask) == 0.0


@pytest.mark.parametrize("name", ["t5-v1_0-relu", "t5-v1_1-gated-gelu"])
def test_eqxllm_encoder_loads_in_transformers(tmp_path, name):
    cfg = T5Config(**CONFIGS[name][1], dropout_rate=0.0)
    model = T5Encoder(cfg, key=jax.random.key(1))
    is_norm = lambda x: isinstance(x, RMSNorm)  # noqa: E731
    norms = [x for x in jax.tree.leaves(model, is_leaf=is_norm) if is_norm(x)]
    scales = [n.weight * (1 + 0.5 * jax.random.normal(jax.random.key(i), n.weight.shape)) for i, n in enumerate(norms)]
    model = eqx.tree_at(lambda m: [n.weight for n in jax.tree.leaves(m, is_leaf=is_norm) if is_norm(n)], model, scales)
    eqxllm.save_pretrained(model, tmp_path)
    hf = transformers.T5EncoderModel.from_pretrained(tmp_path).eval()
    ids, mask = _inputs(cfg.vocab_size, seed=2, length=13)
    assert _max_diff(_ours(model, ids, mask), _hf_states(hf, ids, mask), mask) <= TOL


def test_encoder_of_a_t5_is_its_encode():
    cfg = T5Config.tiny(v1_1=True)
    t5 = T5(cfg, key=jax.random.key(3))
    fresh = T5Encoder(cfg, key=jax.random.key(3))  # drawn as T5 draws its encoder
    taken = T5Encoder.from_t5(t5)
    assert taken.shared.weight is t5.shared.weight  # the arrays, not copies
    assert all(a is b for a, b in zip(jax.tree.leaves(taken.encoder), jax.tree.leaves(t5.encoder)))
    ids = jnp.array([5, 9, 13, 1, 0, 0])
    want = t5.encode(ids, mask=ids != 0)
    for enc in (fresh, taken):
        np.testing.assert_array_equal(np.asarray(enc(ids, mask=ids != 0)), np.asarray(want))


@pytest.mark.parametrize("model_type", ["t5", "mt5"])
def test_encoder_decoder_checkpoint_read_as_an_encoder(tmp_path, model_type):
    """``encoder_from_pretrained`` skips the decoder and head of a T5ForConditionalGeneration (or mT5)
    checkpoint, as ``T5EncoderModel.from_pretrained`` does."""
    torch.manual_seed(4)
    kwargs = CONFIGS["mt5-gated-gelu" if model_type == "mt5" else "t5-v1_1-gated-gelu"][1]
    pair = transformers.MT5ForConditionalGeneration if model_type == "mt5" else transformers.T5ForConditionalGeneration
    cfg = (transformers.MT5Config if model_type == "mt5" else transformers.T5Config)(**kwargs, dropout_rate=0.0)
    full = pair(cfg).eval()
    _randomize_torch_norms(full)
    full.save_pretrained(tmp_path)
    enc = encoder_from_pretrained(tmp_path)
    assert isinstance(enc, T5Encoder)
    hf = transformers.T5EncoderModel.from_pretrained(tmp_path).eval()
    ids, mask = _inputs(kwargs["vocab_size"], seed=4)
    ref = _hf_states(hf, ids, mask)
    assert _max_diff(_ours(enc, ids, mask), ref, mask) <= TOL
    assert isinstance(eqxllm.from_pretrained(tmp_path), T5)  # the file's own class is still the default


@pytest.mark.parametrize("architectures", [["T5ForConditionalGeneration"], None])
def test_encoder_only_checkpoint_as_t5_names_the_missing_decoder(v1_1_dir, tmp_path, architectures):
    _, _, path = v1_1_dir
    shutil.copytree(path, tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    cfg.pop("architectures")
    if architectures is not None:
        cfg["architectures"] = architectures
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MissingKeyError, match=r"no decoder\.\*.*T5Encoder.*encoder_from_pretrained"):
        eqxllm.from_pretrained(tmp_path / "ckpt")
    assert isinstance(encoder_from_pretrained(tmp_path / "ckpt"), T5Encoder)


def test_embed_tokens_alias_is_accepted_when_equal_and_refused_when_not(v1_1_dir, tmp_path):
    """v4 ``.bin`` conversions of T5 encoders store ``encoder.embed_tokens.weight`` beside (or instead
    of) ``shared.weight``."""
    name, hf, path = v1_1_dir
    tensors = load_file(path / "model.safetensors")
    shutil.copy(path / "config.json", tmp_path / "config.json")
    only_alias = {("encoder.embed_tokens.weight" if k == "shared.weight" else k): v for k, v in tensors.items()}
    save_file(only_alias, tmp_path / "model.safetensors", metadata={"format": "pt"})
    ids, mask = _inputs(CONFIGS[name][1]["vocab_size"], seed=5)
    assert _max_diff(_ours(eqxllm.from_pretrained(tmp_path), ids, mask), _hf_states(hf, ids, mask), mask) <= TOL
    differs = {**tensors, "encoder.embed_tokens.weight": tensors["shared.weight"] + 1.0}
    save_file(differs, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="encoder.embed_tokens.weight"):
        eqxllm.from_pretrained(tmp_path)


def test_hub_cache_layout_loads_offline(v1_1_dir, tmp_path, monkeypatch):
    """A repo id resolved through huggingface_hub from a cache laid out as the Hub lays it out."""
    name, hf, path = v1_1_dir
    cache, commit = tmp_path / "hub", "c" * 40
    storage = cache / "models--org--t5-encoder"
    (storage / "snapshots" / commit).mkdir(parents=True)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(commit)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(path / f, storage / "snapshots" / commit / f)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    model = eqxllm.from_pretrained("org/t5-encoder")
    assert isinstance(model, T5Encoder)
    ids, mask = _inputs(CONFIGS[name][1]["vocab_size"], seed=6)
    assert _max_diff(_ours(model, ids, mask), _hf_states(hf, ids, mask), mask) <= TOL


def test_transformer_encoder_round_trips(tmp_path):
    """The original Transformer's encoder has no transformers class; it saves and loads as itself."""
    model = T5Encoder(T5Config.transformer_tiny(), key=jax.random.key(7))
    eqxllm.save_pretrained(model, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "eqxllm_transformer" and cfg["architectures"] == ["T5EncoderModel"]
    again = eqxllm.from_pretrained(tmp_path)
    assert isinstance(again, T5Encoder) and again.config == model.config
    ids = jnp.array([4, 8, 15, 16])
    np.testing.assert_array_equal(np.asarray(again(ids)), np.asarray(model(ids)))


@pytest.mark.usefixtures("unchecked_annotations")  # called as a user calls it, without the type hook
def test_bad_input_is_refused():
    cfg = T5Config.tiny()
    enc = T5Encoder(cfg, key=jax.random.key(8))
    with pytest.raises(InputError, match="vocab"):
        enc(jnp.array([1, cfg.vocab_size]))
    with pytest.raises(InputError, match="mask"):
        enc(jnp.array([1, 2, 3]), mask=jnp.array([True, False]))
    with pytest.raises(InputError, match="takes a T5"):
        T5Encoder.from_t5(enc)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="T5Encoder.*no decoder"):
        eqxllm.generate(enc, jnp.array([1, 2, 3]), max_new_tokens=2)


def test_encoder_from_pretrained_refuses_other_families(tmp_path):
    from eqxllm.models import GPT2

    eqxllm.save_pretrained(GPT2(GPT2Config.tiny(), key=jax.random.key(9)), tmp_path)
    with pytest.raises(CheckpointError, match="model_type 'gpt2'"):
        encoder_from_pretrained(tmp_path)


def test_an_encoder_alone_is_refused_by_training_and_eval_in_one_line(v1_1_dir, tmp_path, capsys):
    """It has no decoder: the task it would be sent to (seq2seq) and eval would only fail later, and
    with messages about a decoder-only model or a missing decoder; both say what it is at once."""
    from eqxllm.cli import main
    from eqxllm.errors import ConfigError
    from eqxllm.train.init_from import checkpoint_config

    _, _, path = v1_1_dir
    with pytest.raises(ConfigError, match=r"is T5's encoder alone \(T5EncoderModel\).*no eqxllm task trains it"):
        checkpoint_config(str(path))
    data = tmp_path / "text.txt"
    data.write_text("Once upon a time.\n", encoding="utf-8")
    for argv in (
        ["eval", "--model", str(path), "--data", str(data)],
        ["train", "--init-from", str(path), "--data", str(data), "--out", str(tmp_path / "run")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "encoder alone (T5EncoderModel)" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
