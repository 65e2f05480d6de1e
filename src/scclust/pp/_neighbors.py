"""kNN / SNN graph construction, stored the scanpy way (``.obsp`` + ``.uns[key_added]``)."""

from __future__ import annotations

import functools
import logging
from typing import Annotated, Literal

import numpy as np
from anndata import AnnData
from pydantic import Field
from scipy import sparse

from .._checks import get_rep
from .._errors import InputError
from .._params import validated
from .._types import Fraction, KnnBackend, KnnMetric, PositiveInt
from ._knn import knn

logger = logging.getLogger(__name__)


#: Memory of the kNN search besides its arrays (libraries, faiss's search buffers, the recall
#: calibration's blocks): measured 0.1 GB for the exact search at 20,000 cells, 0.7 GB for ivf at 100,000
SEARCH_BASE_BYTES = {"exact": 150e6, "approximate": 750e6}
#: Bytes per cell and neighbour at the peak: the kNN ids and distances (int64 + float32), the fuzzy
#: union's COO entries, its transpose and sum, the CSR connectivities and distances
BYTES_PER_NEIGHBOUR = 48


def graph_memory(n: int, d: int, k: int, backend: str = "auto") -> tuple[tuple[str, float], ...]:
    """The parts of the peak memory :func:`neighbors` adds on ``n`` cells x ``d`` dimensions with ``k``
    neighbours: ``base + 2 x n x d x 4`` (the rows read and the index's copy) ``+ 48 x n x k``, where
    ``base`` is :data:`SEARCH_BASE_BYTES` of the exact search (``backend`` exact, or auto up to
    :data:`scclust.pp._knn.EXACT_MAX_CELLS` cells) or of the approximate one (calibration on the
    benchmarks page, "Memory")."""
    from ._knn import EXACT_MAX_CELLS

    exact = backend == "exact" or (backend == "auto" and n <= EXACT_MAX_CELLS)
    base = SEARCH_BASE_BYTES["exact" if exact else "approximate"]
    return (
        ("libraries and search buffers" + ("" if exact else " (approximate index)"), base),
        (f"rows {n:,} x {d} float32 and the index's copy", 2 * n * d * 4.0),
        (f"kNN {n:,} x {k} ids + distances and the graphs built from them", BYTES_PER_NEIGHBOUR * n * k),
    )


def rep_digest(X: np.ndarray) -> str:
    """A digest of the representation a graph is built on (0.4 s per 250 MB)."""
    import hashlib

    return hashlib.blake2b(np.ascontiguousarray(X).view(np.uint8), digest_size=16).hexdigest()


def options_json(**given) -> str:
    """Every option of :func:`neighbors` (those not given at their defaults) and the digest of the
    data as canonical JSON: two graphs with equal strings are the same graph (recorded as
    ``.uns[key]["options_json"]``)."""
    import inspect
    import json

    params = inspect.signature(inspect.unwrap(neighbors)).parameters
    opts = {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k != "copy"}
    opts.update(given)
    return json.dumps(opts, sort_keys=True, default=str)


# umap-learn constants (umap/umap_.py), reproduced so connectivities equal scanpy's without numba
_SMOOTH_K_TOLERANCE = np.float32(1e-5)
_MIN_K_DIST_SCALE = 1e-3


@validated
def neighbors(
    adata: AnnData,
    *,
    use_rep: str = "X_pca",
    n_pcs: PositiveInt | None = None,
    n_neighbors: Annotated[int, Field(ge=2)] = 15,
    metric: KnnMetric = "euclidean",
    method: Literal["umap", "gauss"] = "umap",
    backend: KnnBackend = "auto",
    min_recall: Fraction = 0.995,
    snn: bool = False,
    prune: Annotated[float, Field(ge=0, lt=1)] = 1 / 15,
    key_added: str = "neighbors",
    random_state: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Compute a k-nearest-neighbour graph (optionally Seurat's shared-nearest-neighbour graph).

    Like :func:`scanpy.pp.neighbors`, ``n_neighbors`` counts the cell itself, and with
    ``method="umap"`` the connectivities are umap's fuzzy simplicial set computed from the same
    neighbours, so Leiden on this graph matches scanpy's. The fuzzy set is computed with
    vectorised NumPy (no numba compilation on a cold process).

    On a Dask cluster (a run's ``dask.address``, or a ``distributed.Client`` active in the
    session), the index is built here once, sent to every worker once, and the cells' queries are
    answered on the workers in blocks: the same neighbours as here (each query is answered on its
    own from the same index), recorded in ``.uns[key_added]["knn"]["dask"]``. The connectivities
    are then computed here.

    Parameters
    ----------
    adata
        Annotated data matrix.
    use_rep
        Key in ``.obsm`` to use (``"X"`` for ``.X``).
    n_pcs
        Use the first ``n_pcs`` dimensions of ``use_rep``; all when ``None``.
    n_neighbors
        Neighbourhood size, the cell itself included (scanpy's convention).
    metric
        Distance between cells.
    method
        Connectivity kernel: ``"umap"`` (scanpy's default) or ``"gauss"``.
    backend
        ``"exact"`` (scikit-learn's brute force, scanpy's call), ``"ivf"`` (approximate, faiss
        inverted file: reproducible with any number of threads, minutes at 1,000,000 cells on 2
        cores), ``"flat"`` (faiss's brute force, exact, 2x faster than scikit-learn's at 200,000
        cells), ``"hnsw"`` (approximate, hnswlib, single-threaded build: slow past a few 100,000
        cells) or ``"auto"``: exact up to :data:`scclust.pp._knn.EXACT_MAX_CELLS` (50,000) cells,
        ivf above unless its calibration needs more than 1/2 of its lists probed per cell for
        ``min_recall`` (then flat). See :mod:`scclust.pp._knn`.
    min_recall
        ivf only: the search is widened until the fraction of the exact neighbours found, measured
        on 1,000 seeded cells against brute force, reaches this value; the recall reached is
        recorded in ``.uns[key_added]["knn"]``. The default 0.995 gives Leiden labels as close to
        the exact graph's as Leiden's own seed allows (see the benchmarks page).
    snn
        Replace the connectivities by Seurat's SNN graph: the Jaccard index of the two cells'
        neighbour sets (self included), edges below ``prune`` removed.
    prune
        SNN pruning threshold (Seurat's ``prune.SNN``, default 1/15).
    key_added
        Name of the graph. ``"neighbors"`` writes ``.obsp["connectivities"]`` and
        ``.obsp["distances"]``; any other name writes ``.obsp[f"{key_added}_connectivities"]`` and
        ``.obsp[f"{key_added}_distances"]``.
    random_state
        Seed of the approximate index (ivf: training subsample and k-means; the recall sample).
    copy
        Return a modified copy instead of writing to ``adata``.

    Returns
    -------
    ``None`` (or the copy), having written

    - ``.obsp[connectivities_key]``: symmetric weighted adjacency (SNN weights when ``snn``);
    - ``.obsp[distances_key]``: distances to the ``n_neighbors - 1`` nearest other cells;
    - ``.uns[key_added]``: ``connectivities_key``, ``distances_key``, ``params`` (``backend`` is the
      backend used, ``"auto"`` resolved) and ``knn``: ``backend``, ``recall`` (fraction of the
      exact neighbours found, measured on ``recall_sample`` cells; 1.0 for exact), for ivf
      ``nlist`` and ``nprobe``, and on a Dask cluster ``dask`` (workers, blocks).
    """
    adata = adata.copy() if copy else adata
    X = get_rep(adata, use_rep, n_pcs)
    digest = rep_digest(X)
    n = X.shape[0]
    if n < 3:
        raise InputError(f"too few cells for a neighbour graph: {n} (need at least 3)")
    if n_neighbors > n:
        raise InputError(f"n_neighbors={n_neighbors} is larger than the number of cells ({n})")

    import time

    from .._dask import cluster_client

    t0 = time.perf_counter()
    info: dict = {}
    idx, dist, used = knn(
        X,
        n_neighbors,
        metric=metric,
        backend=backend,
        random_state=random_state,
        min_recall=min_recall,
        info=info,
        client=cluster_client(),
    )
    t_knn = time.perf_counter() - t0
    distances = _distance_matrix(idx, dist, n)
    if snn:
        conn = snn_graph(idx, prune=prune)
    elif method == "umap":
        conn = umap_connectivities(idx, dist, n_neighbors=n_neighbors)
    else:
        conn = gauss_connectivities(idx, dist)

    conn_key, dist_key = (
        ("connectivities", "distances")
        if key_added == "neighbors"
        else (f"{key_added}_connectivities", f"{key_added}_distances")
    )
    adata.obsp[conn_key] = conn
    adata.obsp[dist_key] = distances
    adata.uns[key_added] = {
        "connectivities_key": conn_key,
        "distances_key": dist_key,
        "params": {
            "n_neighbors": n_neighbors,
            "method": "snn" if snn else method,
            "random_state": random_state,
            "metric": metric,
            "use_rep": use_rep,
            **({"n_pcs": n_pcs} if n_pcs is not None else {}),
            "backend": used,
            **({"min_recall": min_recall} if used == "ivf" else {}),
            **({"prune": prune} if snn else {}),
        },
        "knn": {"backend": used, "requested_backend": backend, **info},
        "options_json": options_json(
            data=digest,
            use_rep=use_rep,
            n_pcs=n_pcs,
            n_neighbors=n_neighbors,
            metric=metric,
            method=method,
            backend=backend,
            min_recall=min_recall,
            snn=snn,
            prune=prune,
            key_added=key_added,
            random_state=random_state,
        ),
    }
    n_comp = sparse.csgraph.connected_components(conn, directed=False)[0]
    extra = f", nlist {info['nlist']}, nprobe {info['nprobe']}" if used == "ivf" else ""
    if "dask" in info:
        extra += f", searched on {info['dask']['workers']} Dask workers"
    logger.info(
        "graph %r: %d cells, k=%d, %s backend (%s), recall %.4f on %d cells%s, kNN %.1f s, %d connected component(s)",
        key_added,
        n,
        n_neighbors,
        used,
        "chosen by size" if backend == "auto" else "requested",
        info["recall"],
        info["recall_sample"],
        extra,
        t_knn,
        n_comp,
    )
    return adata if copy else None


def _distance_matrix(idx: np.ndarray, dist: np.ndarray, n: int) -> sparse.csr_matrix:
    """Distances to the k-1 nearest other cells (self column dropped), as scanpy stores them."""
    k = idx.shape[1] - 1
    indptr = np.arange(0, n * k + 1, k)
    return sparse.csr_matrix((dist[:, 1:].astype(np.float32).ravel(), idx[:, 1:].ravel(), indptr), shape=(n, n))


def _smooth_knn_dist(dist: np.ndarray, k: float, n_iter: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised ``umap.umap_.smooth_knn_dist`` (local_connectivity=1, bandwidth=1) with umap's types:
    float32 distances and rho, the bisection (lo / mid / hi) and the sum in float64 (numba infers
    float64 from umap's literals), sigma stored as float32."""
    n = dist.shape[0]
    target = np.log2(k)
    pos = np.where(dist > 0, dist, np.inf)
    rho = pos.min(axis=1)
    rho[~np.isfinite(rho)] = 0
    rho = rho.astype(np.float32)
    lo = np.zeros(n)
    hi = np.full(n, np.finfo(np.float64).max)
    mid = np.ones(n)
    d = dist[:, 1:] - rho[:, None]  # float32, as in umap
    active = np.ones(n, bool)
    for _ in range(n_iter):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        dr, m = d[rows], mid[rows]
        terms = np.where(dr > 0, np.exp(-(dr / m[:, None])), 1.0)
        psum = np.zeros(rows.size)
        for j in range(terms.shape[1]):  # sequential sum, as umap's loop
            psum += terms[:, j]
        diff = psum - target
        done = np.abs(diff) < _SMOOTH_K_TOLERANCE
        over = (diff > 0) & ~done
        under = ~over & ~done
        r_over, r_under = rows[over], rows[under]
        hi[r_over] = mid[r_over]
        mid[r_over] = (lo[r_over] + hi[r_over]) / 2.0
        lo[r_under] = mid[r_under]
        unbounded = hi[r_under] >= np.finfo(np.float64).max
        mid[r_under[unbounded]] *= 2.0
        rb = r_under[~unbounded]
        mid[rb] = (lo[rb] + hi[rb]) / 2.0
        active[rows[done]] = False
    sigma = mid.astype(np.float32)  # umap's result array is float32
    mean_i = dist.mean(axis=1)
    floor = np.where(rho > 0, _MIN_K_DIST_SCALE * mean_i, _MIN_K_DIST_SCALE * dist.mean())
    sigma = np.where(sigma < floor, floor, sigma).astype(np.float32)
    return sigma, rho


def _expf(x: np.ndarray) -> np.ndarray:
    """``exp`` of float32 values equal to the C library's ``expf`` (what umap's numba code calls), which
    NumPy's float32 ``exp`` (its own SIMD code) is not in about a third of the values. The float64 exp
    rounded to float32 is correctly rounded; ``expf`` (error < 0.51 ulp) can differ from it only where
    the value lies near the middle between two float32 numbers: those few (about 2 %) are computed with
    ``expf`` itself."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # past float32's range: inf, as expf gives
        r = np.exp(x.astype(np.float64))
        f = r.astype(np.float32)
        near = np.abs(r - f) > 0.45 * np.spacing(f).astype(np.float64)
    if near.any():
        expf = _libm_expf()
        if expf is not None:
            f[near] = [expf(float(v)) for v in x[near]]
    return f


@functools.cache
def _libm_expf():
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("m")
    try:
        fn = ctypes.CDLL(name).expf if name else None
    except (OSError, AttributeError):
        fn = None
    if fn is not None:
        fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return fn


def umap_connectivities(idx: np.ndarray, dist: np.ndarray, *, n_neighbors: int) -> sparse.csr_matrix:
    """umap's fuzzy simplicial set (fuzzy union) of a kNN graph whose first column is the cell itself.

    Equals ``umap.umap_.fuzzy_simplicial_set`` as called by scanpy, to float32 rounding.
    """
    n, k = idx.shape
    # a cell's distance to itself is 0 (scanpy stores it so); an exact search in float32 can return
    # ~1e-7 there, which umap would take as the nearest non-zero distance (rho) and so skew the row
    dist = np.where(idx == np.arange(n)[:, None], 0, dist).astype(np.float32)
    sigma, rho = _smooth_knn_dist(dist, float(n_neighbors))
    with np.errstate(over="ignore"):
        vals = _expf(-((dist - rho[:, None]) / sigma[:, None]))  # float32 argument and exp, as in umap
    vals = np.where((dist - rho[:, None] <= 0) | (sigma[:, None] == 0), np.float32(1.0), vals).astype(np.float32)
    vals[idx == np.arange(n)[:, None]] = 0.0
    rows = np.repeat(np.arange(n, dtype=np.int32), k)
    result = sparse.coo_matrix((vals.ravel(), (rows, idx.ravel().astype(np.int32))), shape=(n, n))
    result.eliminate_zeros()
    transpose = result.transpose()
    prod = result.multiply(transpose)
    result = result + transpose - prod
    result.eliminate_zeros()
    return sparse.csr_matrix(result)


def gauss_connectivities(idx: np.ndarray, dist: np.ndarray) -> sparse.csr_matrix:
    """Gaussian kernel of Haghverdi et al. (2016) on the kNN graph, symmetrised like scanpy's
    ``knn=True`` variant: width per cell = median distance to its neighbours."""
    n, k = idx.shape
    d_sq = dist[:, 1:].astype(np.float64) ** 2
    cols = idx[:, 1:]
    sigmas_sq = np.median(d_sq, axis=1)
    sigmas = np.sqrt(sigmas_sq)
    num = 2 * sigmas[:, None] * sigmas[cols]
    den = sigmas_sq[:, None] + sigmas_sq[cols]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.sqrt(num / den) * np.exp(-d_sq / den)
    w = np.nan_to_num(w, nan=1.0)
    rows = np.repeat(np.arange(n), k - 1)
    W = sparse.csr_matrix((w.ravel(), (rows, cols.ravel())), shape=(n, n))
    # an edge present in one direction only gets the same weight in the other
    return W.maximum(W.T).tocsr()


def snn_graph(idx: np.ndarray, *, prune: float = 1 / 15) -> sparse.csr_matrix:
    """Seurat's shared-nearest-neighbour graph: Jaccard index of neighbour sets (self included),
    ``J = s / (2k - s)`` with ``s`` shared neighbours; ``J < prune`` set to 0; no self loops."""
    n, k = idx.shape
    A = sparse.csr_matrix((np.ones(n * k, np.float32), idx.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    S = (A @ A.T).tocoo()
    jac = S.data / (2 * k - S.data)
    keep = (jac >= prune) & (S.row != S.col)
    return sparse.csr_matrix((jac[keep].astype(np.float32), (S.row[keep], S.col[keep])), shape=(n, n))
