"""Hierarchical (agglomerative) clustering of cells: one tree, cut at several k and heights."""

from __future__ import annotations

import logging
import typing
from collections.abc import Sequence
from typing import Annotated, Literal

import numpy as np
from anndata import AnnData
from pydantic import Field

from .._checks import get_rep
from .._colors import write_colors
from .._errors import ConfigError, InputError, choices
from .._keys import hclust_keys
from .._params import validated
from .._types import (
    EUCLIDEAN_LINKAGES,
    ClusterCounts,
    HclustMetric,
    Heights,
    Linkage,
    PositiveInt,
    check_linkage_metric,
)
from ._kmeans import _check_ks
from ._labels import store_labels

logger = logging.getLogger(__name__)

METHODS = typing.get_args(Linkage)
METRICS = typing.get_args(HclustMetric)
#: Methods whose distance updates assume Euclidean geometry (scipy: "correct only for Euclidean").
EUCLIDEAN_ONLY = EUCLIDEAN_LINKAGES
#: Largest number of cells for the n x n path (its condensed distance matrix: 3.6 GB at 30,000).
MATRIX_MAX_CELLS = 30_000

Method = Linkage


def _check(args: dict) -> None:
    """Cross-parameter rules (a call's arguments and a config section alike)."""
    check_linkage_metric(args["method"], args["metric"], allow_non_euclidean=args["allow_non_euclidean"])
    if not args["n_clusters"] and not args["heights"]:
        raise ValueError("give at least one k in n_clusters or one value in heights")


@validated(check=_check)
def hclust(
    adata: AnnData,
    *,
    use_rep: str = "X_pca",
    n_pcs: PositiveInt | None = None,
    method: Linkage = "ward",
    metric: HclustMetric = "euclidean",
    n_clusters: ClusterCounts = (5, 10, 15),
    heights: Heights = (),
    optimal_ordering: bool = False,
    backend: Literal["auto", "matrix", "vector", "micro"] = "auto",
    allow_non_euclidean: bool = False,
    n_micro_clusters: Annotated[int, Field(ge=2)] = 1000,
    max_exact_seconds: Annotated[float, Field(gt=0)] = 120.0,
    random_state: int = 0,
    key_added: str = "hclust",
    copy: bool = False,
) -> AnnData | None:
    """Hierarchical clustering of cells on an embedding: one tree, cut at several k and heights.

    The tree is built once and cut at every ``n_clusters`` and ``heights``; the cuts are those of
    :func:`scipy.cluster.hierarchy.fcluster` on scipy's linkage of the same data (``maxclust`` at k,
    ``distance`` at a height), and a Ward cut at k equals
    ``AgglomerativeClustering(n_clusters=k, linkage="ward")``.

    Distances are those of :func:`scipy.spatial.distance.pdist`, except ``"correlation"``, which is
    ``(1 - r) / 2`` (the Seurat lab's ``as.dist((1 - cor) / 2)``): the same tree as scipy's
    ``1 - r``, with every merge height halved. ``centroid``, ``median`` and ``ward`` need Euclidean
    distances unless ``allow_non_euclidean=True`` (R's ``hclust`` behaviour: the Lance-Williams
    update applied to any dissimilarity, no longer a variance criterion). Centroid and median trees
    can have inversions, where a cut at k gives fewer than k clusters; the number obtained is
    recorded.

    Backends:

    - ``"matrix"``: the condensed n x n distance matrix (O(n^2) memory; at most
      :data:`MATRIX_MAX_CELLS` cells).
    - ``"vector"``: fastcluster's memory-saving path, O(n x dims) memory (ward, centroid and median
      on Euclidean distances, single linkage on any metric); the same merges as ``"matrix"``.
    - ``"micro"``: the exact agglomeration of ``n_micro_clusters`` k-means micro-clusters weighted
      by their sizes (every method; for ward and centroid the exact tree from that partition); each
      cell gets its micro-cluster's cluster. An approximation of the exact tree, for data too large
      for it; with at most ``n_micro_clusters`` cells it is the exact tree.
    - ``"auto"``: ``"vector"`` when the method allows it, else ``"matrix"``; ``"micro"`` when the
      exact tree's estimated time (:func:`estimate_exact_seconds`) exceeds ``max_exact_seconds`` or
      the matrix would exceed :data:`MATRIX_MAX_CELLS` cells (logged).

    Measured speed, memory and agreement of the backends: :doc:`/benchmarks` (hierarchical
    clustering).

    Parameters
    ----------
    adata
        Annotated data matrix.
    use_rep
        Key in ``.obsm`` (``"X"`` for ``.X``).
    n_pcs
        Use the first ``n_pcs`` dimensions of ``use_rep``; all when ``None``.
    method
        Linkage: ``single``, ``complete``, ``average``, ``weighted`` (WPGMA, R's ``mcquitty``),
        ``centroid``, ``median``, ``ward`` (R's ``ward.D2``).
    metric
        Distance between cells (``"correlation"`` is ``(1 - r) / 2``).
    n_clusters
        Cut the tree into (at most) k clusters for each k.
    heights
        Cut the tree at each height (in the units of the metric; ``(1 - r) / 2`` for correlation).
    optimal_ordering
        Reorder the tree's leaves so that neighbouring leaves are as similar as possible
        (:func:`scipy.cluster.hierarchy.optimal_leaf_ordering`; needs the n x n matrix, so at most
        :data:`MATRIX_MAX_CELLS` cells). Changes the drawing order only, not the clusters.
    backend
        How the tree is built: ``"matrix"`` (the n x n distances), ``"vector"`` (fastcluster's
        memory-saving path, same merges), ``"micro"`` (exact linkage of k-means micro-clusters, an
        approximation for large data) or ``"auto"`` (chosen from the method, the size and
        ``max_exact_seconds``).
    allow_non_euclidean
        Let ``centroid`` / ``median`` / ``ward`` run on a non-Euclidean metric (R's behaviour).
    n_micro_clusters
        Micro-clusters of the ``"micro"`` path (its m x m matrix takes 8 MB at 1,000); at least
        ``max(n_clusters)``.
    max_exact_seconds
        Longest estimated time an exact tree may take: above it ``"auto"`` takes ``"micro"`` and an
        explicit ``"matrix"`` / ``"vector"`` raises an error with the estimate.
    random_state
        Seed of the micro-clusters (the exact paths are deterministic).
    key_added
        Prefix: ``f"{key_added}_{k}"`` (the lab's ``hclust_5``) and ``f"{key_added}_h{height:g}"``.
    copy
        Return a modified copy.

    Returns
    -------
    ``None`` (or the copy), having written ``.obs[f"{key_added}_{k}"]`` for each k and
    ``.obs[f"{key_added}_h{height:g}"]`` for each height (categorical labels ``"0"``, ``"1"``, ...
    numbered by decreasing cluster size, natsorted categories; an existing column is overwritten,
    named in an INFO log line), ``.uns[f"{key}_colors"]`` for each of these columns (one hex colour
    per category, the colours of scclust's figures; they follow the clustering tree across the
    cuts, k first, then heights) and ``.uns[key_added]`` with
    ``params``, ``linkage`` (the (n - 1) x 4 scipy linkage matrix, heights in the metric's units,
    for dendrograms), ``leaves`` (leaf order of the tree), ``monotonic`` (no inversions),
    ``backend`` (the one used: ``"matrix"``, ``"vector"`` or ``"micro"``), ``estimated_exact_seconds``
    and ``clusterings``: per label key ``n_clusters`` and the ``k`` or ``height`` it was cut at.
    With ``"micro"`` also ``micro``: ``n_micro_clusters`` (non-empty), ``linkage`` (the micro
    tree), ``sizes``; the cell-level ``linkage`` then joins each micro-cluster's cells at height 0
    below the micro tree.

    Raises
    ------
    ConfigError
        An invalid argument or combination: a method that needs Euclidean distances on another
        metric, ``backend="vector"`` with a method it does not support, an exact backend or
        ``optimal_ordering`` beyond :data:`MATRIX_MAX_CELLS` cells or ``max_exact_seconds``, more
        clusters asked than micro-clusters, a negative or non-finite height.
    InputError
        Fewer than two cells, or data the metric is undefined on (all-zero rows for cosine,
        constant rows for correlation).
    """
    from scipy.cluster.hierarchy import fcluster, is_monotonic, leaves_list

    vector_ok = method == "single" or (method in EUCLIDEAN_ONLY and metric == "euclidean")
    if backend == "vector" and not vector_ok:
        raise ConfigError(
            "backend 'vector' supports ward, centroid and median with 'euclidean' and single with "
            "any metric; "
            f"got method {method!r}, metric {metric!r}"
        )
    ks = _check_ks(n_clusters, adata.n_obs, what="n_clusters")
    hs = _check_heights(heights)
    if adata.n_obs < 2:
        raise InputError(f"hierarchical clustering needs at least 2 cells; got {adata.n_obs}")
    n = adata.n_obs
    X = get_rep(adata, use_rep, n_pcs)
    dims = X.shape[1]
    use_vector = backend == "vector" or (backend == "auto" and vector_ok)
    estimate = estimate_exact_seconds(n, dims, vector=use_vector and not optimal_ordering)
    use_micro = backend == "micro"
    if backend == "auto":
        too_big = (not use_vector or optimal_ordering) and n > MATRIX_MAX_CELLS
        if too_big or estimate > max_exact_seconds:
            use_micro = True
            why = (
                f"the n x n matrix ({n * (n - 1) / 2 * 8 / 1e9:.0f} GB) is over the limit of {MATRIX_MAX_CELLS} cells"
                if too_big
                else f"the exact tree would take about {_fmt_seconds(estimate)} "
                f"(max_exact_seconds={max_exact_seconds:g})"
            )
            logger.info(
                "hclust: %s on %d cells x %d dims: %s; using the micro-cluster approximation "
                "(exact %s linkage on %d k-means micro-clusters weighted by size)",
                method,
                n,
                dims,
                why,
                method,
                min(n_micro_clusters, n),
            )
    elif not use_micro:
        if (not use_vector or optimal_ordering) and n > MATRIX_MAX_CELLS:
            gb = n * (n - 1) / 2 * 8 / 1e9
            why = "optimal_ordering" if use_vector else f"backend {backend!r}"
            raise ConfigError(
                f"{why} needs the n x n distance matrix ({gb:.0f} GB for {n} cells; "
                f"limit {MATRIX_MAX_CELLS} cells): "
                "use backend 'micro' or 'auto' (micro-cluster approximation), "
                "ward/centroid/median with 'euclidean' or single linkage (O(n x dims) memory), "
                "optimal_ordering=False, or cluster a subset"
            )
        if estimate > max_exact_seconds:
            raise ConfigError(
                f"hclust: the exact {method} tree on {n} cells x {dims} dims (backend {backend!r}) would take "
                f"about {_fmt_seconds(estimate)} (estimated; max_exact_seconds={max_exact_seconds:g}): use backend "
                "'micro' or 'auto' (micro-cluster approximation, seconds to minutes), cluster a subset, or raise "
                "max_exact_seconds to run it anyway"
            )
    if use_micro and ks and max(ks) > min(n_micro_clusters, n):
        raise ConfigError(
            f"n_clusters={max(ks)} is more than n_micro_clusters={n_micro_clusters} of the micro-cluster "
            "approximation; raise n_micro_clusters or lower n_clusters"
        )

    X = X.astype(np.float64, copy=False)
    _check_metric_input(X, metric, adata, use_rep)
    micro_info = None
    if use_micro:
        import time

        t0 = time.perf_counter()
        Xm = _metric_space(X, metric)
        cells_micro = micro_clusters(Xm, min(n_micro_clusters, n), random_state=random_state)
        t1 = time.perf_counter()
        Zm, ym, sizes = _micro_linkage(X, cells_micro, method, metric)
        if optimal_ordering:
            from scipy.cluster.hierarchy import optimal_leaf_ordering

            Zm = optimal_leaf_ordering(Zm, ym)
        del ym
        Z = expand_linkage(Zm, cells_micro)
        logger.info(
            "hclust: %d micro-clusters in %.1f s, %s tree on them in %.1f s",
            Zm.shape[0] + 1,
            t1 - t0,
            method,
            time.perf_counter() - t1,
        )
        micro_info = {"n_micro_clusters": int(Zm.shape[0] + 1), "linkage": Zm, "sizes": sizes.astype(np.int64)}
    else:
        Z, y = _linkage(X, method, metric, vector=use_vector, need_matrix=optimal_ordering)
        if optimal_ordering:
            from scipy.cluster.hierarchy import optimal_leaf_ordering

            Z = optimal_leaf_ordering(Z, y)
        del y

    adata = adata.copy() if copy else adata
    summary = {}

    def cut(t: float, criterion: str) -> np.ndarray:
        if micro_info is None:
            return fcluster(Z, t, criterion=criterion)
        return fcluster(micro_info["linkage"], t, criterion=criterion)[cells_micro]

    for k in ks:
        key = hclust_keys(key_added, n_clusters=[k])[0]
        found = store_labels(adata, key, cut(k, "maxclust"))
        if found != k:
            logger.warning("%s: the %s tree gives %d clusters at k=%d (inversions or ties)", key, method, found, k)
        summary[key] = {"n_clusters": found, "k": k}
    for h in hs:
        key = hclust_keys(key_added, heights=[h])[0]
        found = store_labels(adata, key, cut(h, "distance"))
        summary[key] = {"n_clusters": found, "height": h}
    for key, info in summary.items():
        logger.info("%s: %d clusters", key, info["n_clusters"])
    adata.uns[key_added] = {
        "params": {
            "use_rep": use_rep,
            "n_pcs": n_pcs,
            "method": method,
            "metric": metric,
            "n_clusters": ks,
            "heights": hs,
            "optimal_ordering": optimal_ordering,
            "backend": backend,
            "allow_non_euclidean": allow_non_euclidean,
            "n_micro_clusters": n_micro_clusters,
            "max_exact_seconds": max_exact_seconds,
            "random_state": random_state,
        },
        "linkage": Z,
        "leaves": leaves_list(Z).astype(np.int64),
        "monotonic": bool(is_monotonic(Z)),
        "backend": "micro" if use_micro else "vector" if use_vector else "matrix",
        "estimated_exact_seconds": round(float(estimate), 1),
        "clusterings": summary,
        **({"micro": micro_info} if micro_info is not None else {}),
    }
    write_colors(adata, list(summary))
    return adata if copy else None


def _linkage(X: np.ndarray, method: str, metric: str, *, vector: bool, need_matrix: bool):
    """(linkage matrix, condensed distances or None); correlation distances are (1 - r) / 2."""
    import fastcluster
    from scipy.spatial.distance import pdist

    y = None
    if not vector or need_matrix:
        y = pdist(X, metric=metric)
        if metric == "correlation":
            y *= 0.5
    if vector:
        Z = fastcluster.linkage_vector(X, method=method, metric=metric)
        if metric == "correlation":
            Z[:, 2] *= 0.5
    else:
        Z = fastcluster.linkage(y if not need_matrix else y.copy(), method=method, preserve_input=False)
    return np.ascontiguousarray(Z, dtype=np.float64), y


def _metric_space(X: np.ndarray, metric: str) -> np.ndarray:
    """Rows on which Euclidean k-means makes micro-clusters compact in ``metric``."""
    if metric == "correlation":
        X = X - X.mean(axis=1, keepdims=True)
    if metric in ("correlation", "cosine"):
        return X / np.linalg.norm(X, axis=1, keepdims=True)
    return X


def _check_metric_input(X: np.ndarray, metric: str, adata: AnnData, use_rep: str) -> None:
    """Cosine needs non-zero cells and correlation non-constant ones (else the distance is NaN)."""
    if metric == "cosine":
        bad = ~(np.abs(X).max(axis=1) > 0)
        what = "all-zero"
    elif metric == "correlation":
        bad = ~(X.max(axis=1) > X.min(axis=1))
        what = "constant"
    else:
        return
    if bad.any():
        first = adata.obs_names[np.flatnonzero(bad)[0]]
        raise InputError(
            f"{int(bad.sum())} cell(s) have {what} values in {use_rep!r} (first: {first!r}), so their "
            f"{metric} distance is undefined; remove them or use metric 'euclidean'"
        )


def _check_heights(values: Sequence[float]) -> list[float]:
    if isinstance(values, int | float):
        values = [values]
    hs: list[float] = []
    for h in values:
        h = float(h)
        if not np.isfinite(h) or h < 0:
            raise ConfigError(f"heights must be finite and >= 0; got {h}")
        if h not in hs:
            hs.append(h)
    return hs


# --- scalable path: exact linkage on k-means micro-clusters ---------------------------------------

#: Seconds per n^2 x dims of fastcluster's memory-saving path (ward / centroid / median / single);
#: measured on this 2-core machine: Ward on 100,000 x 50 took MEASURED_VECTOR s.
SECONDS_PER_N2D_VECTOR = 1.0e-9
#: Seconds per n^2 x (dims + 25) of the matrix path (pdist, then the O(n^2) linkage).
SECONDS_PER_N2D_MATRIX = 1.0e-9


def estimate_exact_seconds(n: int, dims: int, *, vector: bool) -> float:
    """Estimated wall time of the exact tree on ``n`` cells x ``dims`` (both paths are O(n^2)).

    Calibrated on a 2-core machine (see :data:`SECONDS_PER_N2D_VECTOR`); an order-of-magnitude
    guide for refusing hours-long computations, not a promise.
    """
    if vector:
        return SECONDS_PER_N2D_VECTOR * float(n) ** 2 * dims
    return SECONDS_PER_N2D_MATRIX * float(n) ** 2 * (dims + 25)


def _fmt_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def micro_clusters(X: np.ndarray, m: int, *, random_state: int = 0) -> np.ndarray:
    """Assign each row of ``X`` to one of (at most) ``m`` k-means micro-clusters; ids ``0..m'-1``.

    faiss k-means (10 Lloyd iterations, seeded, on a seeded subsample of at most 64 rows per
    centroid), then every row to its nearest centroid. Each row's assignment is computed on its
    own, so the result does not depend on the number of threads. Empty clusters are dropped.
    Memory: a float32 copy of ``X`` and ``n`` int64 labels.
    """
    import faiss

    Y = np.ascontiguousarray(X, dtype=np.float32)
    n, d = Y.shape
    if m >= n:
        return np.arange(n)
    rng = np.random.default_rng([random_state, 5])
    n_train = min(n, 64 * m)
    train = Y[np.sort(rng.choice(n, n_train, replace=False))] if n_train < n else Y
    km = faiss.Kmeans(
        d, m, niter=10, seed=int(random_state), max_points_per_centroid=64, min_points_per_centroid=1, verbose=False
    )
    km.train(train)
    labels = km.index.search(Y, 1)[1].ravel()
    _, labels = np.unique(labels, return_inverse=True)  # drop empty clusters, keep the order
    return labels.astype(np.int64)


def weighted_linkage(D: np.ndarray, sizes: np.ndarray, method: str) -> np.ndarray:
    """Lance-Williams agglomeration from a starting partition of clusters of the given sizes.

    ``D`` is the m x m dissimilarity between the starting clusters (for ``ward``, ``centroid`` and
    ``median``: *squared* Euclidean-type values, as the updates need; overwritten). Returns the
    scipy linkage matrix of the m leaves (heights: square roots for those three methods; column 3:
    leaves in the cluster, as scipy requires). With all sizes 1 this is the textbook algorithm scipy and fastcluster
    implement, so the merges equal theirs (tested); with sizes it continues exactly from the
    starting partition (Ward: each merge the least increase of the within-cluster sum of squares).
    Time O(m^2) per pass of nearest-neighbour bookkeeping, memory the m x m matrix.
    """
    m = D.shape[0]
    size = sizes.astype(np.float64).copy()
    np.fill_diagonal(D, np.inf)
    node = np.arange(m)  # scipy id of the cluster held in each slot
    leaves = np.ones(m)
    active = np.ones(m, bool)
    nn_idx = np.argmin(D, axis=1)
    nn_dist = D[np.arange(m), nn_idx]
    Z = np.empty((m - 1, 4))
    squared = method in ("ward", "centroid", "median")
    for step in range(m - 1):
        i = int(np.argmin(nn_dist))
        j = int(nn_idx[i])
        dij = D[i, j]
        di, dj = D[i], D[j]
        ni, nj = size[i], size[j]
        if method == "single":
            new = np.minimum(di, dj)
        elif method == "complete":
            new = np.maximum(di, dj)
        elif method == "average":
            new = (ni * di + nj * dj) / (ni + nj)
        elif method == "weighted":
            new = (di + dj) / 2
        elif method == "ward":
            nk = size
            new = ((ni + nk) * di + (nj + nk) * dj - nk * dij) / (ni + nj + nk)
        elif method == "centroid":
            new = (ni * di + nj * dj) / (ni + nj) - ni * nj * dij / (ni + nj) ** 2
        elif method == "median":
            new = di / 2 + dj / 2 - dij / 4
        else:  # pragma: no cover - checked by the caller
            raise ConfigError(f"method {method!r} is not one of {choices(METHODS)}")
        a, b = sorted((node[i], node[j]))
        Z[step] = (a, b, np.sqrt(max(dij, 0.0)) if squared else dij, leaves[i] + leaves[j])
        leaves[i] += leaves[j]
        # slot i holds the merged cluster, slot j is retired
        active[j] = False
        new[~active] = np.inf
        new[i] = np.inf
        D[i, :] = new
        D[:, i] = new
        D[j, :] = np.inf
        D[:, j] = np.inf
        size[i] = ni + nj
        node[i] = m + step
        nn_dist[j] = np.inf
        # rows whose nearest was i or j (or i itself) look again; others may now be nearest to i
        redo = np.flatnonzero(active & ((nn_idx == i) | (nn_idx == j)))
        redo = np.union1d(redo, [i])
        closer = active & (new < nn_dist)
        nn_idx[closer] = i
        nn_dist[closer] = new[closer]
        if redo.size:
            sub = D[redo]
            nn_idx[redo] = np.argmin(sub, axis=1)
            nn_dist[redo] = sub[np.arange(redo.size), nn_idx[redo]]
    return Z


def _micro_linkage(X: np.ndarray, labels: np.ndarray, method: str, metric: str):
    """(micro-tree linkage, condensed centroid dissimilarities in the metric's units, sizes)."""
    from scipy.spatial.distance import pdist, squareform

    m = int(labels.max()) + 1
    sizes = np.bincount(labels, minlength=m).astype(np.float64)
    # exact means of the micro-clusters (float64, in cell order: no dependence on threads)
    from scipy import sparse

    member = sparse.csr_matrix((np.ones(labels.size), (labels, np.arange(labels.size))), shape=(m, labels.size))
    cent = (member @ X) / sizes[:, None]
    y = pdist(cent, metric=metric)
    if metric == "correlation":
        y *= 0.5
    D = squareform(y)
    if method == "ward":
        # Ward's dissimilarity of two clusters: 2 n_a n_b / (n_a + n_b) ||c_a - c_b||^2
        D = D**2 * (2 * np.outer(sizes, sizes) / (sizes[:, None] + sizes[None, :]))
    elif method in ("centroid", "median"):
        D = D**2
    Z = weighted_linkage(D, sizes, method)
    return Z, y, sizes


def expand_linkage(Zm: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cell-level (n - 1) x 4 linkage: the cells of each micro-cluster joined at height 0, then the
    micro tree. Cutting it anywhere above 0 gives the micro tree's cut mapped to the cells."""
    n = labels.size
    m = Zm.shape[0] + 1
    order = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels, minlength=m)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    n_within = n - m
    Z = np.zeros((n - 1, 4))
    # block of micro-cluster p: rows off[p] .. off[p] + sizes[p] - 2
    off = starts - np.arange(m)  # cumulative (size - 1)
    pos = np.arange(n)  # position in `order`
    p_of = labels[order]
    t = pos - starts[p_of]  # rank of the cell within its micro-cluster
    chain = t >= 1  # every cell but the first of its micro-cluster closes one chain row
    row = off[p_of[chain]] + t[chain] - 1
    first = np.where(t[chain] == 1, order[pos[chain] - 1], n + row - 1)
    Z[row, 0] = first
    Z[row, 1] = order[pos[chain]]
    Z[row, 3] = t[chain] + 1
    rep = np.where(sizes >= 2, n + off + sizes - 2, order[starts])  # id of each whole micro-cluster
    ids = np.concatenate([rep, n + n_within + np.arange(m - 1)])
    top = Zm.copy()
    top[:, 0] = ids[Zm[:, 0].astype(np.int64)]
    top[:, 1] = ids[Zm[:, 1].astype(np.int64)]
    top[:, :2].sort(axis=1)
    Z[n_within:] = top
    return Z
