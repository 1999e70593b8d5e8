"""Packed batches: windows come from the token array, order depends on (seed, step) only, shares add up."""

import numpy as np
import pytest

from eqxllm.data import batch_at, eval_batches, num_batches, num_windows
from eqxllm.errors import ConfigError, DataError

SEQ = 8


@pytest.fixture
def tokens() -> np.ndarray:
    # Distinct values (mod 2**16), so every window is identified by its first token.
    return np.arange(1001, dtype=np.uint16)


def test_counts(tokens):
    assert num_windows(tokens, SEQ) == 125  # (1001 - 1) // 8
    assert num_batches(tokens, 4, SEQ) == 31  # one window waits for a later epoch
    assert num_windows(tokens[:9], SEQ) == 1


def test_rows_are_windows_of_the_token_array(tokens):
    batch = batch_at(tokens, 3, batch_size=4, seq_len=SEQ, seed=0)
    assert batch.shape == (4, SEQ + 1) and batch.dtype == np.int32
    for row in batch:
        start = int(row[0])
        assert start % SEQ == 0
        np.testing.assert_array_equal(row, tokens[start : start + SEQ + 1])


def test_same_seed_and_step_same_batch(tokens):
    a = batch_at(tokens, 17, batch_size=4, seq_len=SEQ, seed=5)
    b = batch_at(tokens.copy(), 17, batch_size=4, seq_len=SEQ, seed=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, batch_at(tokens, 18, batch_size=4, seq_len=SEQ, seed=5))
    assert not np.array_equal(a, batch_at(tokens, 17, batch_size=4, seq_len=SEQ, seed=6))


def test_an_epoch_visits_each_window_at_most_once(tokens):
    steps = num_batches(tokens, 4, SEQ)
    starts = np.concatenate([batch_at(tokens, s, batch_size=4, seq_len=SEQ, seed=1)[:, 0] for s in range(steps)])
    assert len(np.unique(starts)) == len(starts) == steps * 4
    next_epoch = np.concatenate(
        [batch_at(tokens, steps + s, batch_size=4, seq_len=SEQ, seed=1)[:, 0] for s in range(steps)]
    )
    assert len(np.unique(next_epoch)) == len(next_epoch)
    assert not np.array_equal(starts, next_epoch)  # a fresh shuffle each epoch
    assert starts.tolist() != sorted(starts.tolist())  # shuffled, not in file order


def test_process_shares_concatenate_to_the_global_batch(tokens):
    whole = batch_at(tokens, 9, batch_size=8, seq_len=SEQ, seed=2)
    shares = [
        batch_at(tokens, 9, batch_size=8, seq_len=SEQ, seed=2, process_index=p, process_count=4) for p in range(4)
    ]
    assert all(s.shape == (2, SEQ + 1) for s in shares)
    np.testing.assert_array_equal(np.concatenate(shares), whole)


def test_memmap_tokens(tmp_path, tokens):
    path = tmp_path / "t.bin"
    tokens.tofile(path)
    mapped = np.memmap(path, dtype=np.uint16, mode="r")
    batch = batch_at(mapped, 4, batch_size=4, seq_len=SEQ, seed=0)
    assert type(batch) is np.ndarray
    np.testing.assert_array_equal(batch, batch_at(tokens, 4, batch_size=4, seq_len=SEQ, seed=0))


def test_uint16_ids_above_int16_range_survive():
    tokens = np.full(20, 50256, dtype=np.uint16)
    assert batch_at(tokens, 0, batch_size=2, seq_len=4, seed=0).max() == 50256


def test_eval_batches_cover_windows_in_order(tokens):
    batches = list(eval_batches(tokens, 16, SEQ))
    assert [len(b) for b in batches] == [16] * 7 + [13]
    starts = np.concatenate([b[:, 0] for b in batches])
    np.testing.assert_array_equal(starts, np.arange(125) * SEQ)
    np.testing.assert_array_equal(batches[-1][-1], tokens[124 * SEQ :])


def test_eval_batches_process_shares(tokens):
    whole = list(eval_batches(tokens, 16, SEQ))
    parts = [list(eval_batches(tokens, 16, SEQ, process_index=p, process_count=2)) for p in range(2)]
    # The last batch's 13 leftover windows round down to 12 so both processes get 6.
    assert [len(b) for b in parts[0]] == [8] * 7 + [6]
    for i, (a, b) in enumerate(zip(*parts, strict=True)):
        np.testing.assert_array_equal(np.concatenate([a, b]), whole[i][: len(a) + len(b)])


def test_too_few_tokens():
    with pytest.raises(DataError, match=r"0 tokens are fewer than one window of seq_len \+ 1 = 9"):
        num_windows(np.zeros(0, np.uint16), SEQ)
    with pytest.raises(DataError, match=r"8 tokens are fewer than one window"):
        batch_at(np.zeros(8, np.uint16), 0, batch_size=1, seq_len=SEQ, seed=0)
    with pytest.raises(DataError, match=r"make 2 windows .* fewer than one batch of 4"):
        batch_at(np.zeros(17, np.uint16), 0, batch_size=4, seq_len=SEQ, seed=0)
    with pytest.raises(DataError, match="fewer than one window"):
        list(eval_batches(np.zeros(5, np.uint16), 2, SEQ))


def test_bad_settings(tokens):
    with pytest.raises(ConfigError, match=r"batch_size=6 is not a multiple of process_count=4"):
        batch_at(tokens, 0, batch_size=6, seq_len=SEQ, seed=0, process_count=4)
    with pytest.raises(ConfigError, match=r"process_index=2 must be in \[0, process_count=2\)"):
        batch_at(tokens, 0, batch_size=4, seq_len=SEQ, seed=0, process_index=2, process_count=2)
    with pytest.raises(ConfigError, match="step must be >= 0, got -1"):
        batch_at(tokens, -1, batch_size=4, seq_len=SEQ, seed=0)
    with pytest.raises(ConfigError, match="seq_len must be >= 1, got 0"):
        num_windows(tokens, 0)
