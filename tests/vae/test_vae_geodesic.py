"""Geodesic paths through a bank of codes: the neighbour search, the locally scaled graph, paths that
follow the data instead of cutting across it, the sampled points, and the inputs refused."""

import sys

import jax
import numpy as np
import pytest

import eqxllm.vae.geodesic as geodesic
from eqxllm.errors import InputError
from eqxllm.vae.geodesic import bank_from_codes, geodesic_nodes, geodesic_path, nearest


def _arc(n: int, radius: float = 10.0, span: float = np.pi) -> np.ndarray:
    """``n`` codes ``[n, 1, 2]`` evenly spaced along a half circle: a curved one-dimensional "data"."""
    angles = np.linspace(0.0, span, n)
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=-1)[:, None, :].astype(np.float32)


@pytest.mark.parametrize("chunk", [2048, 7])  # one block, and several (the last one short)
def test_nearest_is_the_brute_force_neighbour_search(monkeypatch, chunk):
    monkeypatch.setattr(geodesic, "_CHUNK", chunk)
    rng = np.random.default_rng(0)
    flat, queries = rng.normal(size=(40, 6)).astype(np.float32), rng.normal(size=(17, 6)).astype(np.float32)
    full = np.linalg.norm(queries[:, None] - flat[None], axis=-1)
    idx, dist = nearest(flat, queries, 5)
    np.testing.assert_array_equal(idx, np.argsort(full, axis=1)[:, :5])
    np.testing.assert_allclose(dist, np.sort(full, axis=1)[:, :5], rtol=1e-4, atol=1e-4)
    own, _ = nearest(flat, flat, 3, exclude_self=True)
    self_dist = np.linalg.norm(flat[:, None] - flat[None], axis=-1) + np.diag(np.full(40, np.inf))
    np.testing.assert_array_equal(own, np.argsort(self_dist, axis=1)[:, :3])


def test_the_graph_is_symmetric_and_locally_scaled():
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(30, 2, 3)).astype(np.float32) * rng.uniform(0.2, 3.0, size=(30, 1, 1))
    bank = bank_from_codes([f"s{i}" for i in range(30)], codes, k=4)
    g = bank.graph.toarray()
    assert g.shape == (32, 32) and np.allclose(g, g.T) and not g[30:].any()  # the ends join per query
    flat = codes.reshape(30, -1)
    scale = np.sort(np.linalg.norm(flat[:, None] - flat[None], axis=-1), axis=1)[:, 4]  # the 4th other code
    np.testing.assert_allclose(bank.scale, scale, rtol=1e-4)
    for i in range(30):
        for j in bank.neighbours[i]:
            want = np.linalg.norm(flat[i] - flat[j]) / np.sqrt(scale[i] * scale[j])
            assert g[i, j] == pytest.approx(want, rel=1e-4)


def test_the_path_follows_the_arc_instead_of_cutting_across():
    codes = _arc(41)
    rng = np.random.default_rng(2)
    order = rng.permutation(41)  # the bank's order says nothing about the arc
    bank = bank_from_codes([f"s{i}" for i in order], codes[order], k=4)
    a, b = codes[0] * 1.02, codes[-1] * 1.02  # just outside the two ends of the half circle
    nodes = geodesic_nodes(bank, a, b)
    along = order[nodes]  # positions on the arc of the nodes passed
    assert along[0] <= 4 and along[-1] >= 36  # hops of at most k neighbours
    assert np.all(np.diff(along) > 0)  # monotone along the arc: it never doubles back
    radius = np.linalg.norm(bank.codes[nodes].reshape(len(nodes), -1), axis=1)
    np.testing.assert_allclose(radius, 10.0, rtol=1e-5)  # every point is on the data, none on the chord


def test_local_scaling_keeps_paths_off_a_dense_hub():
    # "long sentences" on a half circle of radius 3, and a dense cluster of "short sentences" at its
    # centre, close enough to be some of their neighbours: plain distances cut through the cluster
    # (3 + 3 < 3 pi), locally scaled ones keep to the half circle
    rng = np.random.default_rng(3)
    arc = _arc(12, radius=3.0)
    hub = rng.normal(scale=0.05, size=(30, 1, 2)).astype(np.float32)
    codes = np.concatenate([arc, hub])
    bank = bank_from_codes([f"s{i}" for i in range(42)], codes, k=4)
    assert any(j >= 12 for i in range(12) for j in bank.neighbours[i])  # the cluster is in reach
    nodes = geodesic_nodes(bank, arc[0] * 1.05, arc[-1] * 1.05)
    assert all(i < 12 for i in nodes) and nodes == sorted(nodes)  # along the half circle, in order

    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    rows = np.repeat(np.arange(42), 4)
    plain = csr_matrix((bank.distances.reshape(-1), (rows, bank.neighbours.reshape(-1))), shape=(42, 42))
    _, previous = dijkstra(plain.maximum(plain.T), indices=0, return_predecessors=True)
    at, passed = 11, []
    while at != 0:
        at = previous[at]
        passed.append(at)
    assert any(i >= 12 for i in passed)  # what the scaling is for: unscaled, the path cuts through the hub


def test_points_are_evenly_spaced_nodes_and_the_ends_are_exact():
    codes = _arc(21)
    bank = bank_from_codes([f"s{i}" for i in range(21)], codes, k=3)
    a, b = codes[0] * 1.01, codes[-1] * 1.01
    nodes = geodesic_nodes(bank, a, b)
    for steps in (2, 5, 9, 40):
        points, rows = geodesic_path(bank, a, b, steps)
        assert points.shape == (steps, 1, 2) and len(rows) == steps
        np.testing.assert_array_equal(points[0], a)
        np.testing.assert_array_equal(points[-1], b)
        assert rows[0] is None and rows[-1] is None
        interior = rows[1:-1]
        assert all(r in nodes for r in interior)
        for r, p in zip(interior, points[1:-1]):
            np.testing.assert_array_equal(p, codes[r])
        positions = [nodes.index(r) for r in interior]
        assert positions == sorted(positions)  # in the path's order
        if steps == 40:  # more points than nodes: each node is taken, some twice
            assert set(interior) == set(nodes) and len(interior) > len(nodes)
    _, rows = geodesic_path(bank, a, b, 3)
    assert rows[1] == nodes[len(nodes) // 2]  # the half-way point of an evenly spaced path


def test_islands_of_the_graph_are_bridged():
    # two arcs far apart: each code's neighbours are all on its own arc, and one bridge joins them,
    # the closest pair of codes across (an island gets one edge a round; two islands, one round)
    near = _arc(10)
    far = near + np.array([[0.0, 100.0]], np.float32)
    bank = bank_from_codes([f"s{i}" for i in range(20)], np.concatenate([near, far]), k=3)
    assert all((bank.neighbours[i] < 10).all() == (i < 10) for i in range(20))
    g = bank.graph.toarray()[:20, :20]
    across = [(i, j) for i in range(10) for j in range(10, 20) if g[i, j]]
    flat = bank.codes.reshape(20, -1)
    gaps = np.linalg.norm(flat[:10, None] - flat[None, 10:], axis=-1)
    closest = {(int(i), int(j) + 10) for i, j in zip(*np.nonzero(gaps <= gaps.min() + 1e-4))}
    assert len(across) == 1 and across[0] in closest
    nodes = geodesic_nodes(bank, near[0], far[-1])
    assert across[0][0] in nodes and across[0][1] in nodes


def test_bad_banks_and_ends_are_refused():
    codes = _arc(8)
    texts = [f"s{i}" for i in range(8)]
    with pytest.raises(InputError, match="more than k"):
        bank_from_codes(texts, codes, k=8)
    with pytest.raises(InputError, match="k >= 1"):
        bank_from_codes(texts, codes, k=0)
    with pytest.raises(InputError, match="one \\[latent_tokens, latent\\] code per text"):
        bank_from_codes(texts[:5], codes, k=2)
    with pytest.raises(InputError, match="finite"):
        bank_from_codes(texts, np.where(np.arange(8)[:, None, None] == 3, np.nan, codes), k=2)
    bank = bank_from_codes(texts, codes, k=2)
    with pytest.raises(InputError, match="do not match the bank's codes"):
        geodesic_nodes(bank, np.zeros((2, 2)), codes[1])
    with pytest.raises(InputError, match="steps >= 2"):
        geodesic_path(bank, codes[0], codes[-1], 1)


def test_interpolate_texts_walks_through_the_bank():
    from eqxllm.models import T5VAE, T5VAEConfig
    from eqxllm.models.t5_config import T5Config
    from eqxllm.vae import build_bank, encode_texts, interpolate_texts
    from tests.vae._letters import VAELetters

    t5 = T5Config.tiny().replace(vocab_size=6, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    vae = T5VAE(T5VAEConfig(t5=t5, n_latent_tokens=2, latent_size=4, max_length=8), key=jax.random.key(0))
    tok = VAELetters()
    rng = np.random.default_rng(4)
    texts = ["".join("cdef"[i] for i in rng.integers(0, 4, size=rng.integers(1, 6))) for _ in range(60)]
    # a duplicate, a text too long, an empty one; the letters' "sentences" open with no capital
    bank = build_bank(vae, tok, [*texts, texts[0], "c" * 9, ""], k=4, whole=False, exact=False)
    assert list(bank.texts) == list(dict.fromkeys(texts))
    np.testing.assert_allclose(bank.codes, encode_texts(vae, tok, list(bank.texts)), rtol=1e-5, atol=1e-6)
    a, b = "cdd", "feec"
    za, zb = encode_texts(vae, tok, [a, b])
    points, _ = geodesic_path(bank, za, zb, 5)
    from eqxllm.vae import decode_latents

    assert interpolate_texts(vae, tok, a, b, 5, method="geodesic", bank=bank) == decode_latents(vae, tok, points)
    with pytest.raises(InputError, match="bank=build_bank"):
        interpolate_texts(vae, tok, a, b, 5, method="geodesic")
    with pytest.raises(InputError, match="does not use one"):
        interpolate_texts(vae, tok, a, b, 5, method="slerp", bank=bank)
    with pytest.raises(InputError, match="'slerp', 'linear' or 'geodesic'"):
        interpolate_texts(vae, tok, a, b, 5, method="straight")
    with pytest.raises(InputError, match="none of the 2 bank texts"):
        build_bank(vae, tok, ["c" * 9, ""], k=1, whole=False, exact=False)
    with pytest.raises(InputError, match="opening with a capital or a quote"):
        build_bank(vae, tok, texts, k=4, exact=False)  # whole sentences only, by default


def test_without_scipy_the_error_names_the_extra(monkeypatch):
    for name in ("scipy.sparse", "scipy.sparse.csgraph"):  # a None entry makes the import fail
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"eqxllm\[vae\]"):
        bank_from_codes(["a", "b", "c"], np.zeros((3, 1, 2), np.float32), k=1)
