"""Tokenizers from Hugging Face ``tokenizers``: load (local folder or Hub), train a byte-level BPE, save.

GPT-2's tokenizer (Radford et al., 2019) is a byte-level BPE: text is split by a regex into words, each
word's UTF-8 bytes are mapped to printable characters and merged pairwise by rank. Built from
``vocab.json`` + ``merges.txt`` here, it is configured exactly as ``transformers``' ``GPT2TokenizerFast``:
no prefix space, a byte-level decoder, ``<|endoftext|>`` a special token (id 50256 in GPT-2's vocabulary).
"""

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from eqxllm.checkpoints.atomic import atomic_write_text
from eqxllm.checkpoints.hub import HubFileMissing, download, looks_like_repo_id
from eqxllm.data.tinystories import EOT
from eqxllm.errors import ConfigError, DataError

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"


def load_tokenizer(src: str | Path) -> Tokenizer:
    """Load a tokenizer from a folder, a ``tokenizer.json`` file, or a Hub model id.

    A folder (or Hub repository) must hold ``tokenizer.json`` (used as is, less any saved truncation
    or padding, as ``transformers`` does) or GPT-2's ``vocab.json`` +
    ``merges.txt`` (built as ``GPT2TokenizerFast`` builds them). Hub files go through ``hf_hub_download``
    and its cache (offline with ``HF_HUB_OFFLINE=1``).
    """
    path = Path(src).expanduser()
    if path.is_file():
        return _from_json(path)
    if path.is_dir():
        if (path / TOKENIZER_FILE).is_file():
            return _from_json(path / TOKENIZER_FILE)
        if (path / VOCAB_FILE).is_file() and (path / MERGES_FILE).is_file():
            return gpt2_tokenizer(path / VOCAB_FILE, path / MERGES_FILE)
        found = sorted(p.name for p in path.iterdir())[:20]
        raise DataError(
            f"tokenizer folder {path} holds neither {TOKENIZER_FILE} nor {VOCAB_FILE} + {MERGES_FILE} "
            f"(found: {found or 'nothing'})"
        )
    if looks_like_repo_id(src):
        return _from_hub(str(src))
    raise DataError(f"tokenizer source {str(src)!r} is neither an existing file or folder nor a Hub model id")


def _from_json(path: Path) -> Tokenizer:
    """The tokenizer of ``path`` without the truncation and padding it may have been saved with: as
    ``transformers`` clears them unless a call asks, so that a text is never cut to the saved
    ``max_length`` nor filled with pad ids (which would silently corrupt a token stream)."""
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for malformed JSON
        raise DataError(f"tokenizer file {path} is not a valid tokenizers JSON file: {e}") from e
    tok.no_truncation()
    tok.no_padding()
    return tok


def _from_hub(repo_id: str) -> Tokenizer:
    try:
        return _from_json(download(repo_id, TOKENIZER_FILE))
    except HubFileMissing as no_json:
        try:
            vocab, merges = download(repo_id, VOCAB_FILE), download(repo_id, MERGES_FILE)
        except HubFileMissing as no_bpe:
            raise DataError(
                f"Hub repository {repo_id!r} gives neither {TOKENIZER_FILE} ({no_json}) nor "
                f"{VOCAB_FILE} + {MERGES_FILE} ({no_bpe})"
            ) from no_bpe
        return gpt2_tokenizer(vocab, merges)


def gpt2_tokenizer(vocab: str | Path, merges: str | Path, *, special: str = EOT) -> Tokenizer:
    """GPT-2's byte-level BPE from ``vocab.json`` and ``merges.txt``, as ``GPT2TokenizerFast`` builds it."""
    try:
        vocab_map, merge_list = models.BPE.read_file(str(vocab), str(merges))
    except Exception as e:  # tokenizers raises a bare Exception for a missing or malformed file
        raise DataError(f"cannot read a BPE vocabulary from {vocab} and {merges}: {e}") from e
    # The same model options as transformers' GPT2Tokenizer: no subword prefix/suffix, no unknown token.
    tok = Tokenizer(
        models.BPE(
            vocab_map,
            merge_list,
            dropout=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
        )
    )
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(special, special=True, normalized=False)])
    return tok


def train_bpe_tokenizer(
    stories: Iterable[str],
    vocab_size: int = 4096,
    *,
    special: str = EOT,
    min_frequency: int = 2,
    progress: bool = False,
) -> Tokenizer:
    """Train a GPT-2-style byte-level BPE on ``stories``; ``special`` becomes id 0.

    All 256 byte symbols are in the vocabulary from the start, so any text encodes and decodes back
    exactly. ``vocab_size`` counts them, the special token, and the learned merges (4096 suits
    TinyStories' small vocabulary).
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + 1:
        raise ConfigError(
            f"vocab_size={vocab_size} is too small for a byte-level BPE: it needs the {len(alphabet)} byte "
            f"symbols and {special!r}, so at least {len(alphabet) + 1}"
        )
    tok = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[AddedToken(special, special=True, normalized=False)],
        initial_alphabet=alphabet,
        show_progress=progress,
    )
    seen = 0

    def counted() -> Iterable[str]:
        nonlocal seen
        for story in stories:
            seen += 1
            yield story

    tok.train_from_iterator(counted(), trainer)
    if seen == 0:
        raise DataError("cannot train a tokenizer on no stories")
    return tok


def tokenizer_files(tok: Tokenizer) -> dict[str, str]:
    """The files that save ``tok`` for eqxllm and ``transformers``, by name: ``tokenizer.json`` and a
    ``tokenizer_config.json`` naming ``PreTrainedTokenizerFast`` (without one, ``AutoTokenizer`` picks
    the model type's own class, for a T5 the SentencePiece one, which cannot read a BPE
    ``tokenizer.json``), with ``<|endoftext|>`` as its special tokens when the vocabulary has it."""
    config: dict[str, object] = {"tokenizer_class": "PreTrainedTokenizerFast", "add_prefix_space": False}
    if tok.token_to_id(EOT) is not None:
        config.update(bos_token=EOT, eos_token=EOT, unk_token=EOT)
    return {TOKENIZER_FILE: tok.to_str(), TOKENIZER_CONFIG_FILE: json.dumps(config, indent=2)}


def save_tokenizer(tok: Tokenizer, directory: str | Path) -> Path:
    """Write :func:`tokenizer_files` (``tokenizer.json`` and ``tokenizer_config.json``) into ``directory``.

    Files are written atomically. Returns the path of ``tokenizer.json``; ``load_tokenizer(directory)``
    and ``transformers.AutoTokenizer.from_pretrained(directory)`` read it back.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in tokenizer_files(tok).items():
        atomic_write_text(directory / name, text)
    return directory / TOKENIZER_FILE


def eot_id(tok: Tokenizer, special: str = EOT) -> int:
    """The id of the end-of-text token that separates stories."""
    token_id = tok.token_to_id(special)
    if token_id is None:
        raise DataError(
            f"the tokenizer (vocabulary of {tok.get_vocab_size()}) has no {special!r} token; "
            "use one that has it, or train one with train_bpe_tokenizer"
        )
    return token_id


def find_tokenizer(directory: str | Path) -> Tokenizer | None:
    """The tokenizer saved beside a model in ``directory`` (``tokenizer.json`` or ``vocab.json`` +
    ``merges.txt``), or None when it holds none. Used to carry a tokenizer through conversions."""
    d = Path(directory)
    if (d / "tokenizer.json").is_file() or ((d / "vocab.json").is_file() and (d / "merges.txt").is_file()):
        return load_tokenizer(d)
    return None
