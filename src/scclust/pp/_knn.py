"""Nearest-neighbour search backends of :func:`scclust.pp.neighbors`.

Every backend returns, for each cell, itself and its ``k - 1`` nearest other cells with their
distances, and answers each query on its own from a fixed index, so the graph does not depend on
the number of threads.

- ``exact``: scikit-learn's brute force, the call scanpy makes below 8,192 cells (the same
  neighbours and distances).
- ``flat``: faiss's exact brute force (``IndexFlatL2``), distances of the neighbours found
  recomputed in float64; exact, faster than ``exact`` on large data.
- ``ivf``: faiss's inverted-file index, approximate. The cells are partitioned by a k-means trained
  on a seeded subsample; each query scans the ``nprobe`` nearest partitions using 4-bit codes of
  the cells (``IndexIVFPQFastScan``) and re-ranks its ``k x REFINE_K_FACTOR`` best by exact
  distance (``IndexRefineFlat``), so the neighbours returned are ranked exactly. ``nprobe`` is
  raised until the recall against brute force, measured on :data:`RECALL_SAMPLE` seeded cells,
  reaches ``min_recall`` (the re-ranking factor doubled where more probes stop raising it), then
  bisected down to within 5 % of the fewest probes that reach it.
- ``hnsw``: hnswlib's graph index, approximate, built on one thread (reproducible).

``auto`` takes ``exact`` up to :data:`EXACT_MAX_CELLS` cells. Above, it calibrates ``ivf`` and
keeps it unless reaching ``min_recall`` needs more than :data:`IVF_MAX_PROBE_FRACTION` of the lists
probed per cell, where ``flat`` is as fast and is taken instead (logged, and recorded with the
calibration that decided it). The recall reached, the lists and the probes are returned in
``info``.

Measured speed and recall of each backend: :doc:`/benchmarks` (kNN backends).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from .._errors import ConfigError

logger = logging.getLogger(__name__)

BACKENDS = ("exact", "ivf", "flat", "hnsw")
EXACT_MAX_CELLS = 50_000
#: ``auto`` leaves ivf for flat when the recall needs more than this share of the lists probed.
IVF_MAX_PROBE_FRACTION = 1 / 2
#: Cells whose exact neighbours are computed to measure the recall of an approximate backend.
RECALL_SAMPLE = 1000
#: ivf re-ranks each query's ``k x REFINE_K_FACTOR`` best by code distance with exact distances
#: (the factor's effect on the recall is on the benchmarks page).
REFINE_K_FACTOR = 16
#: When 1.5x the probes raise the sample's recall by less than :data:`PLATEAU_GAIN`, the codes'
#: ranking limits it, not the lists scanned (measured at 10,000,000 cells: recall 0.968 from 332
#: to 2,523 of 6,325 lists): the re-ranking factor is doubled, up to this.
MAX_REFINE_K_FACTOR = 128
PLATEAU_GAIN = 0.001
#: Queries per ivf search call (bounds the re-ranking's candidate arrays: ~250 MB at k = 20).
SEARCH_BATCH = 65_536


def knn(
    X: np.ndarray,
    k: int,
    *,
    metric: str = "euclidean",
    backend: str = "auto",
    random_state: int = 0,
    min_recall: float = 0.995,
    info: dict | None = None,
    client=None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Return ``(indices, distances, backend_used)``; row ``i`` starts with cell ``i`` itself.

    With a ``distributed`` ``client``, the index is built here once (ivf: with its calibration),
    sent to every worker once, and the cells are queried in blocks of :data:`SEARCH_BATCH` on the
    workers (:func:`scclust._dask.map_blocks`): each query is answered from the same index as in
    this process, so the neighbours are the same (see :func:`_dask_search`).

    ``info``, when given, receives what the search measured: ``recall`` (approximate backends:
    mean fraction of the exact ``k`` neighbours found, on :data:`RECALL_SAMPLE` seeded cells;
    1.0 for exact and flat), ``recall_sample``, for ivf ``nlist`` and ``nprobe``, and when ``auto``
    left ivf for flat, ``ivf_nlist``, ``ivf_nprobe`` and ``ivf_recall`` (where the calibration stopped).
    """
    n = X.shape[0]
    info = {} if info is None else info
    auto = backend == "auto"
    if auto:
        backend = "exact" if n <= EXACT_MAX_CELLS else "ivf"
    if backend == "exact":
        idx, dist = _exact(X, k, metric) if client is None else _dask_search("exact", (X, metric), X, k, client, info)
        info.update(recall=1.0, recall_sample=n)
    elif backend == "ivf":
        Y = _prepared(X, metric)
        index, _ = _ivf_calibrate(
            Y, k, random_state, min_recall, info, max_probe_fraction=IVF_MAX_PROBE_FRACTION if auto else 1.0
        )
        if index is None:
            logger.info(
                "kNN: ivf would probe more than %d of %d lists per cell for recall %.3f (%.4f at %d): "
                "brute force (flat) instead",
                int(IVF_MAX_PROBE_FRACTION * info["nlist"]),
                info["nlist"],
                min_recall,
                info["recall"],
                info["nprobe"],
            )
            info.update({f"ivf_{key}": info.pop(key) for key in ("nlist", "nprobe", "recall")})
            backend = "flat"
            idx, dist = _flat(Y, k, metric, client=client, info=info)
            info.update(recall=1.0, recall_sample=n)
        else:
            idx, dist = _ivf_search(Y, k, metric, index, client=client, info=info)
    elif backend == "flat":
        idx, dist = _flat(_prepared(X, metric), k, metric, client=client, info=info)
        info.update(recall=1.0, recall_sample=n)
    elif backend == "hnsw":
        idx, dist = _hnsw(X, k, metric, random_state, client=client, info=info)
        q = _recall_sample(n, random_state)
        info.update(recall=recall(idx[q], _exact_rows(_prepared(X, metric), q, k)), recall_sample=q.size)
    else:
        raise ConfigError(f"backend {backend!r} is not one of {', '.join(map(repr, BACKENDS))}")
    idx, dist = _self_first(idx, dist)
    dist[:, 0] = 0.0  # a cell's distance to itself (BLAS cancellation can leave ~1e-4 in flat)
    return idx, dist, backend


def recall(idx: np.ndarray, ref: np.ndarray) -> float:
    """Mean fraction of each row of ``ref`` (exact neighbours) found in the same row of ``idx``."""
    k = ref.shape[1]
    hits = (np.sort(idx[:, :k], axis=1)[:, :, None] == ref[:, None, :]).any(axis=2).sum()
    return float(hits / ref.size)


def _recall_sample(n: int, random_state: int) -> np.ndarray:
    return np.sort(np.random.default_rng([random_state, 17]).choice(n, min(n, RECALL_SAMPLE), replace=False))


def _prepared(X: np.ndarray, metric: str) -> np.ndarray:
    """float32 rows on which squared Euclidean distance ranks like ``metric`` (ivf / hnsw search space)."""
    Y = np.asarray(X, dtype=np.float32)
    if metric == "euclidean":
        return np.ascontiguousarray(Y)
    if metric == "correlation":
        Y = Y - Y.mean(axis=1, keepdims=True)
    elif metric != "cosine":
        raise ConfigError(
            f"metric {metric!r} is not supported by the approximate backends; use 'euclidean', 'cosine', "
            "'correlation' or backend='exact'"
        )
    norm = np.linalg.norm(Y, axis=1, keepdims=True)
    if not (norm > 0).all():
        raise ConfigError(f"metric {metric!r} is undefined for cells with all-zero (or constant) values")
    return np.ascontiguousarray(Y / norm, dtype=np.float32)


def _exact_rows(Y: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Exact k nearest rows of ``Y`` for ``Y[rows]``: faiss's brute force, re-ranked in float64
    (:func:`_flat_block`). At 1,000,000 cells x 30 dims and 1,000 rows 9.5 s (a float64 brute force
    in NumPy blocks: 17.0 s; the same neighbours in the same order)."""
    import faiss

    index = faiss.IndexFlatL2(Y.shape[1])
    index.add(Y)
    return _flat_block(index, Y[rows], k)[0]


def ivf_nlist(n: int) -> int:
    """Partitions of the ivf index: about ``2 sqrt(n)`` up to 1,000,000 cells (2,000 lists of 500
    cells), then ``n / 500`` (lists of 500 cells: a query scans as many cells per probe at any
    size), 16 to 32,768."""
    return int(min(32_768, max(16, round(max(2 * np.sqrt(n), n / 500)))))


def _ivf_calibrate(
    Y: np.ndarray, k: int, random_state: int, min_recall: float, info: dict, max_probe_fraction: float = 1.0
):
    """faiss ivf (fast-scan codes, exact re-ranking) on the prepared rows ``Y``, ``nprobe`` raised until ``min_recall``.

    The cells are partitioned into :func:`ivf_nlist` lists by a faiss k-means (10 iterations,
    seeded) trained on at most 64 seeded cells per list; each cell is searched in the ``nprobe``
    lists whose centroids are nearest to it. faiss answers queries independently (in parallel over
    queries), so a cell's neighbours do not depend on the number of threads. ``nprobe`` starts at
    ``nlist / 64`` and grows by half until the recall on :data:`RECALL_SAMPLE` seeded cells
    (against brute force, :func:`_exact_rows`) reaches ``min_recall``, then is bisected down to within 5 % of
    the fewest probes that reach it; ``(None, None)`` is returned as soon as it would exceed
    ``max_probe_fraction`` of the lists (``info`` then holds where it stopped).

    Alternatives measured (benchmarks/bench_knn.py, 2 shared cores): hnswlib's single-threaded
    build took 905 s at 1,000,000 cells (its multi-threaded build is not reproducible); answering
    the lists block by block with BLAS instead of query by query was slower at 100,000 cells
    (33 s vs 19.5 s), the top-k selection dominating. pynndescent (scanpy's backend) on the
    Harmony embedding of 200,000 simulated cells: recall 0.91 and graphs that differ between 1
    and 2 threads (72 % of the entries equal); hnswlib there: recall 0.964.
    """
    import faiss

    n, d = Y.shape
    k = min(k, n)
    # the recall's reference first: its brute-force index (a copy of the data) is freed before the ivf's
    q = _recall_sample(n, random_state)
    ref = _exact_rows(Y, q, k)
    nlist = min(ivf_nlist(n), max(1, n // 8))  # small inputs (tests): at least 8 cells per list
    rng = np.random.default_rng([random_state, 3])
    n_train = min(n, 64 * nlist)
    train = Y[np.sort(rng.choice(n, n_train, replace=False))] if n_train < n else Y
    km = faiss.Kmeans(
        d, nlist, niter=10, seed=int(random_state), max_points_per_centroid=64, min_points_per_centroid=1, verbose=False
    )
    km.train(train)
    # lists of 4-bit codes, one sub-quantizer per dimension (faiss's fast-scan: SIMD look-ups, ~3x
    # faster per probed list than exact distances), each query's k x REFINE_K_FACTOR best re-ranked
    # by their exact distances (IndexRefineFlat): the neighbours returned are ranked exactly
    ivf = faiss.IndexIVFPQFastScan(km.index, d, nlist, d, 4, faiss.METRIC_L2)
    ivf.pq.cp.seed = int(random_state)
    ivf.pq.cp.min_points_per_centroid = 1  # small inputs: no warning below 39 points per code centroid
    ivf.train(train)  # the quantizer is trained already: this trains the codes on the residuals
    index = faiss.IndexRefineFlat(ivf)
    index.k_factor = REFINE_K_FACTOR
    index.add(Y)  # (faiss's wrappers keep the inner indexes alive with the outer ones)
    info.update(codes=f"PQ{d}x4 fast-scan", refine_k_factor=REFINE_K_FACTOR)

    def sample_recall(nprobe: int) -> float:
        ivf.nprobe = nprobe
        rec = recall(index.search(Y[q], k)[1], ref)
        logger.debug("ivf: nlist %d, nprobe %d: recall %.4f", nlist, nprobe, rec)
        info.update(recall=rec, recall_sample=int(q.size), nlist=nlist, nprobe=nprobe)
        return rec

    below, nprobe, last = 0, max(1, min(nlist, nlist // 64)), None
    while (rec := sample_recall(nprobe)) < min_recall and nprobe < nlist:
        if last is not None and rec - last < PLATEAU_GAIN and index.k_factor < MAX_REFINE_K_FACTOR:
            # more lists no longer help: re-rank more candidates, and look for the fewest probes anew
            index.k_factor *= 2
            below, last = 0, None
            info.update(refine_k_factor=int(index.k_factor))
            logger.debug("ivf: recall %.4f levels off at %d probes: re-ranking factor %d", rec, nprobe, index.k_factor)
            continue
        below, nprobe, last = nprobe, min(nlist, int(np.ceil(1.5 * nprobe))), rec
        if nprobe > max_probe_fraction * nlist:
            return None, None
    if rec >= min_recall:
        # The recall never falls when a list is added (each list is scanned exhaustively), so the
        # fewest probes that reach min_recall lie in (below, nprobe]: bisect to within 5 %. The
        # full search costs in proportion to nprobe; the sample searches are ~1/1000 of it.
        # At 1M cells (noisy Harmony embedding) the growth by half had stopped at 242 probes.
        above, rec_above = nprobe, rec
        while above - below > max(1, above // 20):
            mid = (below + above) // 2
            if (r := sample_recall(mid)) >= min_recall:
                above, rec_above = mid, r
            else:
                below = mid
        info.update(recall=rec_above, nprobe=above)
        ivf.nprobe = above
    return index, km.index


def _ivf_search(
    Y: np.ndarray, k: int, metric: str, index, *, client=None, info: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Every cell's ``k`` nearest in the calibrated ivf index.

    The cells are queried in the order of their nearest list (the answers do not depend on the
    order): at 1,000,000 cells 100,000 queries took 15.5 s in that order and 38.4 s in cell order.

    Queries go in batches of :data:`SEARCH_BATCH` (fewer when the calibration raised the re-ranking
    factor, in proportion): the re-ranking keeps ``k x REFINE_K_FACTOR``
    candidates per query (12 bytes each), 3.8 GB for 1,000,000 queries at once (measured: the run
    grew by 9 GB during a one-shot search at 1M), 250 MB per batch. Memory at 1,000,000 cells x 30
    dims, k = 20: the float32 data three times (data, codes' re-ranking copy, a batch of queries:
    ~250 MB), the results in cell order (n x k int64 + float32, 240 MB), then float64 distances: 160 MB.
    """
    n = Y.shape[0]
    k = min(k, n)
    # Queries in the order of their nearest list: consecutive queries probe nearly the same lists,
    # which stay in cache (2.5x faster at 1,000,000 cells); each answer is unchanged (per-query search).
    order = _list_order(index)
    if client is not None:
        idx, dist = _dask_search("faiss", index, Y, k, client, info, order=order)
        return _finish(idx, dist, metric)
    dist, idx = np.empty((n, k), np.float32), np.empty((n, k), np.int64)
    batch = _search_batch(index)
    for s in range(0, n, batch):
        rows = order[s : s + batch]
        dist[rows], idx[rows] = index.search(Y[rows], k)
    return _finish(idx, dist, metric)


def _search_batch(index) -> int:
    """Queries per search call: :data:`SEARCH_BATCH`, fewer in proportion when the calibration raised
    an ivf index's re-ranking factor (the same memory of candidates per call)."""
    k_factor = int(getattr(index, "k_factor", REFINE_K_FACTOR))
    return max(1024, SEARCH_BATCH * REFINE_K_FACTOR // max(k_factor, REFINE_K_FACTOR))


def _list_order(index) -> np.ndarray:
    """The cells of the ivf ``index`` (an ``IndexRefineFlat`` around the ivf) list by list, each list
    in the order its cells were added: the order of their nearest centroid, read from the index
    instead of assigning every cell again (at 10,000,000 cells and 20,000 lists ~10^13 flops)."""
    import faiss

    ivf = faiss.downcast_index(index.base_index)
    lists = ivf.invlists
    ids = [faiss.rev_swig_ptr(lists.get_ids(i), size).copy() for i in range(ivf.nlist) if (size := lists.list_size(i))]
    return np.concatenate(ids).astype(np.int64, copy=False)


def _flat(
    Y: np.ndarray, k: int, metric: str, block: int = 16_384, *, client=None, info: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact neighbours by faiss's brute force (``IndexFlatL2``), ranked by distances recomputed in float64.

    faiss ranks by ``|x|^2 + |y|^2 - 2 x.y`` from float32 BLAS blocks, whose rounding depends on
    how the work is split (threads, blocks); it returns :data:`FLAT_MARGIN` candidates more than
    ``k``, whose distances are recomputed directly (float64, no cancellation error) and the ``k``
    nearest kept by (distance, id): the same neighbours however the search was split (on Dask
    workers too). Measured at 200,000 cells x 30 dims, k = 20: 78 s (scikit-learn's brute force:
    166 s); 99.999 % of the neighbour sets equal. Memory: the data once in the index, results
    ``n x k`` (int64 + float32), one block of candidates, faiss's blocks.
    """
    import faiss

    n, d = Y.shape
    k = min(k, n)
    index = faiss.IndexFlatL2(d)
    index.add(Y)
    if client is not None:
        idx, dist = _dask_search("flat", index, Y, k, client, info)
        return _finish(idx, dist, metric)
    idx, dist = np.empty((n, k), np.int64), np.empty((n, k), np.float32)
    for s in range(0, n, block):
        idx[s : s + block], dist[s : s + block] = _flat_block(index, Y[s : s + block], k)
    return _finish(idx, dist, metric)


#: extra candidates the flat search returns, re-ranked by float64 distances (see :func:`_flat`)
FLAT_MARGIN = 8


def _flat_block(index, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest of each query by float64 distance among faiss's ``k + FLAT_MARGIN`` best."""
    kk = min(k + FLAT_MARGIN, index.ntotal)
    cand = index.search(Q, kk)[1]
    nb = index.reconstruct_batch(cand.ravel()).reshape(*cand.shape, Q.shape[1])
    d = _pair_sqdist(nb, Q)
    o = _row_sort(d, cand)[:, :k]
    return np.take_along_axis(cand, o, axis=1), np.take_along_axis(d, o, axis=1).astype(np.float32)


def _pair_sqdist(neighbours: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Squared distances of each query to its neighbours, in float64 (no cancellation error)."""
    diff = neighbours.astype(np.float64) - queries[:, None, :].astype(np.float64)
    return np.einsum("ijk,ijk->ij", diff, diff)


def _finish(idx: np.ndarray, dist: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by (squared distance, id); squared L2 of the prepared rows -> the metric's distance."""
    srt = _row_sort(dist, idx)  # ascending by distance, ties by cell id
    idx = np.take_along_axis(idx, srt, axis=1)
    dist = np.take_along_axis(dist, srt, axis=1)
    np.maximum(dist, 0, out=dist)
    if metric == "euclidean":
        np.sqrt(dist, out=dist)
    else:  # unit vectors: ||a - b||^2 = 2 (1 - cos), and 1 - cos is the cosine (correlation) distance
        dist /= 2
    return idx, dist.astype(np.float64)


def _exact(X: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric=metric).fit(X)
    dist, idx = nn.kneighbors(X)
    return idx, dist


def _row_sort(dist: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Per-row order by (distance, id)."""
    o = np.argsort(idx, axis=1, kind="stable")
    o2 = np.argsort(np.take_along_axis(dist, o, axis=1), axis=1, kind="stable")
    return np.take_along_axis(o, o2, axis=1)


def _hnsw(
    X: np.ndarray, k: int, metric: str, random_state: int, *, client=None, info: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """hnswlib, built on one thread (reproducible, slow at 1,000,000 cells: 905 s measured)."""
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
        raise ConfigError(
            f"metric {metric!r} is not supported by the hnsw backend; use 'euclidean', 'cosine', 'correlation' or "
            "backend='exact'"
        )
    n, d = Y.shape
    index = hnswlib.Index(space=space, dim=d)
    # M=16, ef_construction=100: recall 0.999 at k=20 on 100k cells x 30 dims (benchmarks/bench_knn.py)
    index.init_index(max_elements=n, ef_construction=100, M=16, random_seed=random_state)
    index.set_num_threads(1)  # build on one thread: insertion order, hence the index, is reproducible
    index.add_items(Y, np.arange(n))
    index.set_ef(max(2 * k, 100))
    # queries are independent of each other, so answering them in parallel changes nothing
    if client is not None:
        idx, dist = _dask_search("hnsw", index, Y, k, client, info)
    else:
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


# ------------------------------------------------------------------------------------------ on Dask
#: the index each worker process searches (deserialized once per search, not once per block)
_WORKER_INDEX: dict[str, object] = {}


def _serialized(kind: str, index) -> tuple[str, str, object]:
    """``(token, kind, payload)`` sent to the workers: faiss indexes as their byte serialization
    (faiss objects do not pickle), hnswlib's by pickle, the exact backend's data as it is."""
    import uuid

    if kind in ("faiss", "flat"):
        import faiss

        payload = faiss.serialize_index(index)
    elif kind == "hnsw":
        import pickle

        payload = pickle.dumps(index, protocol=pickle.HIGHEST_PROTOCOL)
    else:
        payload = index
    return uuid.uuid4().hex, kind, payload


def _worker_index(shared: tuple[str, str, object]):
    """The searcher of ``shared`` in this (worker) process, built on first use."""
    token, kind, payload = shared
    found = _WORKER_INDEX.get(token)
    if found is None:
        if kind in ("faiss", "flat"):
            import faiss

            found = faiss.deserialize_index(payload)
        elif kind == "hnsw":
            import pickle

            found = pickle.loads(payload)
        else:
            from sklearn.neighbors import NearestNeighbors

            X, metric = payload
            found = NearestNeighbors(algorithm="brute", metric=metric).fit(X)
        _WORKER_INDEX.clear()  # one search at a time per worker: the previous index is freed
        _WORKER_INDEX[token] = found
    return kind, found


def _search_block(shared: tuple[str, str, object], Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, distances)`` of the queries ``Q`` (a worker's task): what the local search of
    the same backend returns for these rows (faiss: squared L2 of the prepared rows; flat's
    recomputed in float64; hnsw: hnswlib's; exact: scikit-learn's)."""
    kind, index = _worker_index(shared)
    if kind == "faiss":
        dist, idx = index.search(Q, k)
        return idx, dist
    if kind == "flat":
        return _flat_block(index, Q, k)
    if kind == "hnsw":
        idx, dist = index.knn_query(Q, k=k, num_threads=1)
        return idx, dist
    dist, idx = index.kneighbors(Q, n_neighbors=k)
    return idx, dist


def _dask_search(
    kind: str, index, Y: np.ndarray, k: int, client, info: dict | None, *, order: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Every row of ``Y`` queried on the workers of ``client`` in blocks of :func:`_search_batch`
    rows (in ``order`` when given: ivf's order of nearest lists), assembled in cell order.

    The same neighbours as the local search: every backend answers each query on its own from the
    index built here (ivf and hnsw per query; flat and exact by BLAS products over blocks of
    queries, whose block boundaries, multiples of 4,096 rows, fall where the local search's do).
    Memory here at 10,000,000 cells x 30 dims, k = 20: the serialized index (ivf ~1.4 GB, flat
    1.2 GB) next to the index, the data (1.2 GB) and the results (n x k int64 + float32: 2.4 GB);
    on each worker the index once plus a few blocks (8 MB of queries, 4 MB of answers each)."""
    from .._dask import map_blocks

    n = Y.shape[0]
    k = min(k, n)
    rows = np.arange(n) if order is None else order
    batch = _search_batch(index)
    blocks = [rows[s : s + batch] for s in range(0, n, batch)]
    shared = _serialized(kind, index)
    results = map_blocks(
        _search_block,
        shared,
        lambda i: (np.ascontiguousarray(Y[blocks[i]]), k),
        len(blocks),
        what=f"kNN search ({kind})",
    )
    idx = np.empty((n, k), np.int64)
    dist = np.empty((n, k), results[0][1].dtype if results else np.float32)
    for b, (bi, bd) in zip(blocks, results, strict=True):
        idx[b], dist[b] = bi, bd
    if info is not None:
        workers = client.scheduler_info().get("workers", {})
        info["dask"] = {"workers": len(workers), "blocks": len(blocks), "block_cells": batch}
    return idx, dist
