"""Sentence splitting, bounded tokenized rows, unseen validation sentences, deterministic batches."""

import numpy as np
import pytest

from eqxllm.data import train_bpe_tokenizer
from eqxllm.data.sentences import (
    encode_sentences,
    sentence_batch,
    split_sentences,
    story_sentences,
    unseen,
    whole_sentence,
)
from eqxllm.errors import ConfigError, DataError


def test_split_keeps_quotations_whole():
    text = 'He said, "Stop. Look!" Then he ran. The end!!\nA new line? Yes'
    assert split_sentences(text) == ['He said, "Stop. Look!"', "Then he ran.", "The end!!", "A new line?", "Yes"]
    assert split_sentences("“Hi. Bye,” she said. Ok.") == ["“Hi. Bye,” she said.", "Ok."]
    assert story_sentences(["A b.  C d.", "E."]) == ["A b.", "C d.", "E."]


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(["the cat sat on the mat. a dog ran."] * 20, 300)


def test_whole_sentences_and_the_pieces_the_splitter_leaves():
    pieces = split_sentences('"Stop!" said Jack. Mrs. Lee smiled. "Ouch!" 3 cats ran. Alas! again.')
    assert pieces == ['"Stop!"', "said Jack.", "Mrs.", "Lee smiled.", '"Ouch!"', "3 cats ran.", "Alas!", "again."]
    assert [p for p in pieces if whole_sentence(p)] == ['"Stop!"', "Lee smiled.", '"Ouch!"', "3 cats ran."]
    assert whole_sentence("“Hi,” she said.") and whole_sentence("‘Yes.’") and not whole_sentence("  ")
    assert not whole_sentence("Inside the building, Mr.") and not whole_sentence("Then Dr.")
    assert whole_sentence("Mr. Brown smiled.")


def test_encode_sentences_appends_the_end_token_and_bounds_the_length(tok):
    texts = ["the cat sat.", "a dog ran on the mat and the cat sat on the dog.", ""]
    data = encode_sentences(tok, texts, max_length=8, eos_id=0, pad_id=5)
    assert data.texts == ("the cat sat.",) and data.dropped == 2
    n = len(tok.encode("the cat sat.").ids)
    assert data.lengths[0] == n + 1 and data.ids[0, n] == 0 and np.all(data.ids[0, n + 1 :] == 5)
    assert tok.decode(data.ids[0, :n].tolist()) == "the cat sat."
    with pytest.raises(ConfigError, match="max_length must be >= 2"):
        encode_sentences(tok, texts, max_length=1, eos_id=0, pad_id=0)
    with pytest.raises(DataError, match=r"1 sentences are fewer than one batch of 4 \(2 more were dropped"):
        sentence_batch(data, 0, batch_size=4, seed=0)  # the count of the dropped says what to change


def test_unseen_drops_validation_sentences_read_in_training(tok):
    train = encode_sentences(tok, ["the cat sat.", "a dog ran."], max_length=12, eos_id=0, pad_id=0)
    val = encode_sentences(tok, ["a dog ran.", "the dog sat."], max_length=12, eos_id=0, pad_id=0)
    assert unseen(val, train).texts == ("the dog sat.",)


def test_batches_are_a_pure_function_of_the_step_and_cover_an_epoch(tok):
    texts = [f"the cat {i} sat." for i in range(10)]
    data = encode_sentences(tok, texts, max_length=16, eos_id=0, pad_id=0)
    first = sentence_batch(data, 3, batch_size=4, seed=1)
    again = sentence_batch(data, 3, batch_size=4, seed=1)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert first["input_ids"].shape == (4, 16) and np.all(first["step"] == 3)
    # an epoch is 2 steps of 4 (the 2 sentences left over wait for a later shuffle): 8 distinct sentences
    rows = np.concatenate([sentence_batch(data, s, batch_size=4, seed=1)["input_ids"] for s in (0, 1)])
    assert len({r.tobytes() for r in rows}) == 8 and {r.tobytes() for r in rows} <= {r.tobytes() for r in data.ids}
    assert not np.array_equal(sentence_batch(data, 0, batch_size=4, seed=2)["input_ids"], rows[:4])
    halves = [sentence_batch(data, 2, batch_size=4, seed=1, process_index=i, process_count=2) for i in (0, 1)]
    whole = sentence_batch(data, 2, batch_size=4, seed=1)["input_ids"]
    np.testing.assert_array_equal(np.concatenate([h["input_ids"] for h in halves]), whole)
    with pytest.raises(DataError, match="fewer than one batch"):
        sentence_batch(data, 0, batch_size=64, seed=0)
