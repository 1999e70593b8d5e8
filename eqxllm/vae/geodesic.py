"""Geodesic paths between two codes: shortest paths through a bank of real sentences' codes.

The codes of a bank of real sentences are the nodes of a k-nearest-neighbour graph, and the path
from ``a`` to ``b`` is the shortest path through it (Isomap's graph geodesic: Tenenbaum et al., 2000,
"A Global Geometric Framework for Nonlinear Dimensionality Reduction"; for generative models' latent
spaces, Arvanitidis et al., 2018, "Latent Space Oddity", and Chen et al., 2018, "Metrics for Deep
Generative Models"), so that every interior point is a real sentence's code.

Distances are Euclidean over the flattened ``[latent_tokens * latent]`` code, and edges are locally
scaled (Zelnik-Manor & Perona, 2004, "Self-Tuning Spectral Clustering"): the edge ``i - j`` weighs
``d(i, j) / sqrt(r_i r_j)``, with ``r_i`` the distance from ``i`` to its ``k``-th neighbour, so that
short sentences, close to many others, do not become hubs. The ends join the graph through their
own ``k`` nearest bank codes; a path of ``steps`` points takes the path's nodes nearest to ``steps``
evenly spaced positions along its (unscaled) length, the ends exactly.

The graph search needs ``scipy``, an optional dependency: ``pip install "eqxllm[vae]"``.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from jaxtyping import Float, Int

from eqxllm.errors import InputError, require


def _sparse():
    """scipy.sparse and its graph routines, an optional dependency (``pip install 'eqxllm[vae]'``)."""
    sparse = require("scipy.sparse", "vae", "the geodesic path through a sentence bank")
    return sparse, require("scipy.sparse.csgraph", "vae", "the geodesic path through a sentence bank")


_CHUNK = 2048  # bank rows per block of the neighbour search: [chunk, bank] distances at a time


@dataclass(frozen=True)
class CodeBank:
    """Real sentences and their codes, with the k-nearest-neighbour graph between the codes:
    ``texts[i]`` has the code ``codes[i]``, ``neighbours[i]`` are its ``k`` nearest other codes
    (nearest first) at ``distances[i]``. Made by :func:`~eqxllm.vae.text.build_bank`."""

    texts: tuple[str, ...]
    codes: Float[np.ndarray, "n latent_tokens latent"]
    neighbours: Int[np.ndarray, "n k"]
    distances: Float[np.ndarray, "n k"]
    graph: Any  # a scipy.sparse.csr_matrix [n + 2, n + 2] locally scaled edges; the last two rows are the path's ends

    @property
    def k(self) -> int:
        return self.neighbours.shape[1]

    @property
    def scale(self) -> Float[np.ndarray, " n"]:
        return _scale(self.distances)


def _scale(distances: Float[np.ndarray, "n k"]) -> Float[np.ndarray, " n"]:
    """Each code's local scale, the distance to its ``k``-th neighbour, kept above zero."""
    return np.maximum(distances[:, -1], 1e-12)


def nearest(
    flat: Float[np.ndarray, "n dim"], queries: Float[np.ndarray, "q dim"], k: int, *, exclude_self: bool = False
) -> tuple[Int[np.ndarray, "q k"], Float[np.ndarray, "q k"]]:
    """The ``k`` nearest rows of ``flat`` to each query (nearest first) and their Euclidean distances,
    in blocks of rows; ``exclude_self``: the queries are ``flat`` itself, and a row is not its own
    neighbour."""
    norms = np.einsum("nd,nd->n", flat, flat)
    idx = np.zeros((len(queries), k), np.int64)
    dist = np.zeros((len(queries), k), np.float32)
    for lo in range(0, len(queries), _CHUNK):
        q = queries[lo : lo + _CHUNK]
        d2 = norms[None, :] + np.einsum("qd,qd->q", q, q)[:, None] - 2.0 * q @ flat.T  # [chunk, n]
        if exclude_self:
            d2[np.arange(len(q)), np.arange(lo, lo + len(q))] = np.inf
        part = np.argpartition(d2, k - 1, axis=1)[:, :k]
        d2k = np.take_along_axis(d2, part, axis=1)
        order = np.argsort(d2k, axis=1, kind="stable")
        idx[lo : lo + len(q)] = np.take_along_axis(part, order, axis=1)
        dist[lo : lo + len(q)] = np.sqrt(np.maximum(np.take_along_axis(d2k, order, axis=1), 0.0))
    return idx, dist


def bank_from_codes(texts: Sequence[str], codes: np.ndarray, *, k: int = 16) -> CodeBank:
    """A :class:`CodeBank` of ``texts`` with their codes ``[n, latent_tokens, latent]``: each code
    linked to its ``k`` nearest, and islands of the graph bridged, so that a path joins any two codes."""
    codes = np.asarray(codes, np.float32)
    if codes.ndim != 3 or codes.shape[0] != len(texts):
        raise InputError(
            f"a bank needs one [latent_tokens, latent] code per text: {len(texts)} texts, codes {codes.shape}"
        )
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"a bank's graph needs k >= 1 neighbours a code, got {k!r}")
    if len(texts) <= k:
        raise InputError(
            f"a bank of {len(texts)} sentences cannot give each code k={k} neighbours: give it more than k"
        )
    if not np.isfinite(codes).all():
        raise InputError("the bank's codes are not all finite")
    n = len(texts)
    flat = codes.reshape(n, -1)
    sparse = _sparse()[0]
    neighbours, distances = nearest(flat, flat, k, exclude_self=True)
    scale = _scale(distances)
    weights = distances / np.sqrt(scale[:, None] * scale[neighbours])
    rows, cols, vals = [np.repeat(np.arange(n), k)], [neighbours.reshape(-1)], [weights.reshape(-1)]
    rows, cols, vals = _bridges(flat, scale, rows, cols, vals)
    # 1e-12 keeps an edge between identical codes: a stored zero is no edge to scipy's graph routines
    sparse, _ = _sparse()
    graph = sparse.csr_matrix(
        (np.maximum(np.concatenate(vals), 1e-12), (np.concatenate(rows), np.concatenate(cols))), shape=(n + 2, n + 2)
    )
    return CodeBank(tuple(texts), codes, neighbours, distances, graph.maximum(graph.T).tocsr())


def _bridges(flat, scale, rows, cols, vals):
    """The edge lists, with bridges added until the graph is connected: each island gets an edge from
    its code nearest to the rest to that code's nearest outsider, as Isomap's implementations do."""
    n = len(flat)
    sparse, csgraph = _sparse()
    while True:
        edges = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
        count, label = csgraph.connected_components(edges, directed=False)
        if count == 1:
            return rows, cols, vals
        for island in range(count):
            inside, outside = np.flatnonzero(label == island), np.flatnonzero(label != island)
            idx, dist = nearest(flat[outside], flat[inside], 1)
            i = int(dist[:, 0].argmin())
            src, dst = inside[i], outside[idx[i, 0]]
            rows.append(np.array([src]))
            cols.append(np.array([dst]))
            vals.append(np.array([dist[i, 0] / np.sqrt(scale[src] * scale[dst])], np.float32))


def geodesic_nodes(
    bank: CodeBank,
    a: Float[np.ndarray, "tokens_a latent_a"],  # checked against the bank's codes below, with a message
    b: Float[np.ndarray, "tokens_b latent_b"],
) -> list[int]:
    """The bank rows that the shortest path from ``a`` to ``b`` passes through, in order (one at
    least); ``a`` and ``b`` join the graph through their ``k`` nearest bank codes."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a.shape != bank.codes.shape[1:] or b.shape != bank.codes.shape[1:]:
        raise InputError(f"the ends {a.shape} and {b.shape} do not match the bank's codes {bank.codes.shape[1:]}")
    n, k = len(bank.texts), bank.k
    idx, dist = nearest(bank.codes.reshape(n, -1), np.stack([a.reshape(-1), b.reshape(-1)]), k)
    own = np.maximum(dist[:, -1:], 1e-12)
    weights = np.maximum(dist / np.sqrt(own * bank.scale[idx]), 1e-12)
    ends = np.repeat([n, n + 1], k)
    sparse, csgraph = _sparse()
    link = sparse.csr_matrix((weights.reshape(-1), (ends, idx.reshape(-1))), shape=bank.graph.shape)
    graph = bank.graph + link + link.T
    _, previous = csgraph.dijkstra(graph, directed=False, indices=n, return_predecessors=True)
    nodes, at = [], previous[n + 1]
    while at != n:
        nodes.append(int(at))
        at = previous[at]
    return nodes[::-1]


def geodesic_path(
    bank: CodeBank,
    a: Float[np.ndarray, "latent_tokens latent"],
    b: Float[np.ndarray, "latent_tokens latent"],
    steps: int,
) -> tuple[Float[np.ndarray, "steps latent_tokens latent"], list[int | None]]:
    """``steps`` points of the geodesic from ``a`` to ``b`` (both ends exact) and, for each, the bank
    row whose code it is (``None`` at the ends): the path's nodes nearest to evenly spaced fractions
    of its Euclidean length."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise InputError(f"an interpolation path needs steps >= 2 (both ends included), got {steps!r}")
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    nodes = geodesic_nodes(bank, a, b)
    points = np.stack([a, *(bank.codes[i] for i in nodes), b])  # [hops + 1, latent_tokens, latent]
    hops = np.linalg.norm((points[1:] - points[:-1]).reshape(len(points) - 1, -1), axis=1)
    along = np.concatenate([[0.0], np.cumsum(hops)])
    targets = np.linspace(0.0, along[-1], steps)
    picked = np.abs(along[None, :] - targets[:, None]).argmin(axis=1)
    picked[0], picked[-1] = 0, len(points) - 1  # a zero-length path would pick the first node for both
    rows: list[int | None] = [None, *nodes, None]
    return points[picked], [rows[j] for j in picked]
