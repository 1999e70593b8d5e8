"""The regularisers, the warm-up and the metrics against NumPy references written from their formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxllm.vae.metrics as metrics


def _np_mmd(x, y, scale):
    """The Transformer-VAE / InfoVAE estimate, with explicit loops over the pairs."""

    def k(a, b):
        out = np.empty((len(a), len(b)))
        for i in range(len(a)):
            for j in range(len(b)):
                out[i, j] = np.exp(-np.mean((a[i] - b[j]) ** 2) / scale)
        return out

    return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


@pytest.mark.parametrize("scale", [None, 0.5])
def test_mmd_matches_numpy(scale):
    rng = np.random.default_rng(0)
    x = rng.normal(0.5, 1.3, (12, 5)).astype(np.float32)
    y = rng.normal(0.0, 1.0, (9, 5)).astype(np.float32)
    want = _np_mmd(x.astype(np.float64), y.astype(np.float64), 5 if scale is None else scale)
    assert float(metrics.mmd(jnp.asarray(x), jnp.asarray(y), scale)) == pytest.approx(want, rel=1e-5, abs=1e-7)
    k = np.asarray(metrics.gaussian_kernel(jnp.asarray(x), jnp.asarray(y), 2.0))
    assert k.shape == (12, 9) and k[3, 4] == pytest.approx(np.exp(-np.mean((x[3] - y[4]) ** 2) / 2.0), rel=1e-6)


def test_mmd_is_zero_for_equal_samples_and_grows_with_the_shift():
    x = jax.random.normal(jax.random.key(0), (64, 8))
    assert float(metrics.mmd(x, x)) == pytest.approx(0.0, abs=1e-6)
    near, far = (float(metrics.mmd_to_normal(x + s, jax.random.key(1))) for s in (0.2, 2.0))
    assert 0 < near < far


def test_mmd_to_normal_flattens_every_latent_token_into_a_sample():
    z = jax.random.normal(jax.random.key(2), (4, 3, 6)) * 2 + 1
    key = jax.random.key(5)
    normal = jax.random.normal(key, (12, 6))
    assert float(metrics.mmd_to_normal(z, key)) == pytest.approx(float(metrics.mmd(z.reshape(12, 6), normal)), rel=1e-6)
    # no key: fixed draws, so evaluations are reproducible
    assert float(metrics.mmd_to_normal(z, None)) == float(metrics.mmd_to_normal(z, None))


def test_kl_matches_the_closed_form():
    rng = np.random.default_rng(1)
    mean, logvar = rng.normal(size=(2, 3, 4)), rng.normal(scale=0.5, size=(2, 3, 4))
    var = np.exp(logvar)
    # KL(N(m, v) || N(0, 1)) = log(1 / sqrt(v)) + (v + m^2) / 2 - 1/2, summed
    want = np.sum(-0.5 * logvar + (var + mean**2) / 2 - 0.5)
    assert float(metrics.gaussian_kl(jnp.asarray(mean), jnp.asarray(logvar))) == pytest.approx(want, rel=1e-5)
    assert float(metrics.gaussian_kl(jnp.zeros((3, 4)), jnp.zeros((3, 4)))) == 0.0


def test_annealed_weight_is_the_scaled_sigmoid():
    for step in (0, 100, 2500, 10_000):
        want = 3.0 / (1.0 + np.exp(-(0.0025 * step - 6.25)))
        assert float(metrics.annealed_weight(step, 3.0, 0.0025, 6.25)) == pytest.approx(want, rel=1e-5)
    assert float(metrics.annealed_weight(jnp.asarray(2500), 1.0, 0.0025, 6.25)) == pytest.approx(0.5)


def test_accuracies_count_only_unmasked_tokens():
    targets = jnp.asarray([[1, 2, 3, 0], [2, 2, 0, 0]])
    mask = jnp.asarray([[True, True, True, False], [True, True, False, False]])
    preds = jnp.asarray([[1, 2, 0, 3], [2, 2, 1, 1]])  # row 0: one miss; row 1: right where it counts
    logits = jax.nn.one_hot(preds, 5)
    correct, count = metrics.token_accuracy(logits, targets, mask)
    assert (float(correct), float(count)) == (4.0, 5.0)
    np.testing.assert_array_equal(np.asarray(metrics.sequence_accuracy(logits, targets, mask)), [0.0, 1.0])


def test_active_units_counts_dimensions_that_vary():
    rng = np.random.default_rng(0)
    means = np.zeros((50, 2, 3), np.float32)
    means[:, 0, 1] = rng.normal(size=50)  # one informative dimension
    means[:, 1, 2] = 0.001 * rng.normal(size=50)  # varies, but below the threshold
    assert int(metrics.active_units(jnp.asarray(means))) == 1


def test_shift_right_prepends_the_start_token():
    np.testing.assert_array_equal(np.asarray(metrics.shift_right(jnp.asarray([[5, 6, 7]]), 9)), [[9, 5, 6]])
