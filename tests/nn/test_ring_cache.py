"""The ring buffers of sliding layers: which cache row each layer of a pattern uses, which slot each
ring row holds, and the mask of a pass over ``[ring rows..., new keys...]``."""

import jax.numpy as jnp
import numpy as np
import pytest

from eqxllm.nn.ring_cache import RingLayout, held_slots, ring_mask

S, G = True, False


@pytest.mark.parametrize(
    ("flags", "pattern"),
    [
        ((S, S, G) * 2 + (S, S), (S, S, G)),  # Gemma 3's shape: whole periods, then two sliding layers
        ((S, G) * 3, (S, G)),  # Gemma 2
        ((S,) * 4, (S,)),  # Mistral: every layer slides
    ],
)
def test_each_layer_gets_its_own_row_of_its_kind(flags, pattern):
    layout = RingLayout.of(flags)
    assert layout is not None and layout.pattern == pattern
    assert layout.num_sliding == sum(flags) and layout.num_global == len(flags) - sum(flags)
    rows = {S: [], G: []}
    for i, sliding in enumerate(flags):
        g, p = divmod(i, layout.period)
        assert layout.pattern[p] == sliding
        rows[sliding].append(int(layout.row(p, g)))
    assert rows[S] == list(range(layout.num_sliding)) and rows[G] == list(range(layout.num_global))


def test_no_layout_without_sliding_layers_or_a_short_period():
    assert RingLayout.of((G, G, G)) is None
    assert RingLayout.of((G,) * 3 + (S,) * 9) is None  # Qwen's max_window_layers: no period of 8 or less


def test_ring_rows_hold_the_last_window_slots():
    np.testing.assert_array_equal(held_slots(jnp.asarray(0), 4), [-4, -3, -2, -1])  # nothing written
    np.testing.assert_array_equal(held_slots(jnp.asarray(2), 4), [0, 1, -2, -1])
    np.testing.assert_array_equal(held_slots(jnp.asarray(9), 4), [8, 5, 6, 7])  # slot s at row s % 4


def test_the_mask_sees_the_window_over_ring_and_new_keys():
    # slots 0-1 are padding, 2-5 real and cached; three new tokens at slots 6, 7, 8; window 3
    valid = jnp.asarray([0, 0, 1, 1, 1, 1, 1, 1, 1, 0], bool)
    mask = np.asarray(ring_mask(jnp.arange(6, 9), valid, jnp.asarray(6), 3))
    # ring rows hold slots [3, 4, 5] (rows 0, 1, 2); then the new slots 6, 7, 8
    expected = [
        [0, 1, 1, 1, 0, 0],  # slot 6 sees 4, 5, 6
        [0, 0, 1, 1, 1, 0],  # slot 7 sees 5, 6, 7
        [0, 0, 0, 1, 1, 1],  # slot 8 sees 6, 7, 8
    ]
    np.testing.assert_array_equal(mask, np.asarray(expected, bool))
    # a decoding step (slot 9) writes first: the ring then holds slots [8, 9, 6, 7], the window 6 to 9
    step = np.asarray(ring_mask(jnp.arange(9, 10), valid.at[9].set(True), jnp.asarray(9), 4))
    np.testing.assert_array_equal(step, [[1, 1, 1, 1]])
    np.testing.assert_array_equal(np.asarray(ring_mask(jnp.arange(9, 10), valid, jnp.asarray(9), 4)), [[1, 0, 1, 1]])
    # at the start nothing in the ring is real, and left padding among the new keys is invisible
    first = np.asarray(ring_mask(jnp.arange(3), valid, jnp.asarray(0), 3))
    np.testing.assert_array_equal(first[:, :3], False)
    np.testing.assert_array_equal(first[:, 3:], [[0, 0, 0], [0, 0, 0], [0, 0, 1]])
