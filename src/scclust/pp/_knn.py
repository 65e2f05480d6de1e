"""Nearest-neighbour search backends.

``exact`` is scikit-learn's brute force (the same call scanpy makes below 8,192 cells, so the
neighbours and distances are identical); ``hnsw`` is hnswlib's approximate index, compiled C++
with no JIT. ``auto`` picks exact up to :data:`EXACT_MAX_CELLS` cells.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from .._errors import ConfigError

logger = logging.getLogger(__name__)

BACKENDS = ("exact", "hnsw")
EXACT_MAX_CELLS = 50_000


def knn(
    X: np.ndarray, k: int, *, metric: str = "euclidean", backend: str = "auto", random_state: int = 0
) -> tuple[np.ndarray, np.ndarray, str]:
    """Return ``(indices, distances, backend_used)``; row ``i`` starts with cell ``i`` itself."""
    n = X.shape[0]
    if backend == "auto":
        backend = "exact" if n <= EXACT_MAX_CELLS else "hnsw"
    if backend == "exact":
        idx, dist = _exact(X, k, metric)
    elif backend == "hnsw":
        idx, dist = _hnsw(X, k, metric, random_state)
    else:
        raise ConfigError(f"backend {backend!r} is not one of {', '.join(map(repr, BACKENDS))}")
    return *_self_first(idx, dist), backend


def _exact(X: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric=metric).fit(X)
    dist, idx = nn.kneighbors(X)
    return idx, dist


def _hnsw(X: np.ndarray, k: int, metric: str, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    import hnswlib

    Y = np.asarray(X, dtype=np.float32)
    if metric == "euclidean":
        space = "l2"
    elif metric == "cosine":
        space = "cosine"
    elif metric == "correlation":
        Y = Y - Y.mean(axis=1, keepdims=True)
        space = "cosine"
    else:
        raise ConfigError(f"metric {metric!r} is not supported by the hnsw backend; use 'euclidean', 'cosine', 'correlation' or backend='exact'")
    n, d = Y.shape
    index = hnswlib.Index(space=space, dim=d)
    # M=16, ef_construction=100: recall 0.999 at k=20 on 100k cells x 30 dims (benchmarks/bench_knn.py)
    index.init_index(max_elements=n, ef_construction=100, M=16, random_seed=random_state)
    index.set_num_threads(1)  # build on one thread: insertion order, hence the index, is reproducible
    index.add_items(Y, np.arange(n))
    index.set_ef(max(2 * k, 100))
    # queries are independent of each other, so answering them in parallel changes nothing
    idx, dist = index.knn_query(Y, k=k, num_threads=os.cpu_count() or 1)
    dist = np.sqrt(np.maximum(dist, 0)) if space == "l2" else dist
    return idx.astype(np.int64), dist.astype(np.float64)


def _self_first(idx: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Put each cell itself in column 0 (duplicated cells can push it elsewhere or out)."""
    n = idx.shape[0]
    me = np.arange(n)[:, None]
    if (idx[:, 0] == me[:, 0]).all():
        return idx, dist
    idx, dist = idx.copy(), dist.copy()
    for i in np.flatnonzero(idx[:, 0] != me[:, 0]):
        row, drow = list(idx[i]), list(dist[i])
        if i in row:
            j = row.index(i)
            row.pop(j)
            drow.pop(j)
        else:
            row.pop()
            drow.pop()
        idx[i] = [i, *row]
        dist[i] = [0.0, *drow]
    return idx, dist
