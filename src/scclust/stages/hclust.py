"""``hclust``: one hierarchical tree cut at several k / heights (:func:`scclust.tl.hclust`)."""

from __future__ import annotations

from .. import tl
from .._keys import hclust_keys
from .._params import params_model
from ._base import Makes, Ref, Stage
from ._clustering import clustering_run

HclustParams = params_model(tl.hclust, name="HclustParams")


def memory(p, sizes):
    """Peak by the backend :func:`scclust.tl.hclust` takes (``auto`` resolved from the sizes as it does):
    ``matrix``: the condensed distances ``n (n - 1) / 2 x 8`` twice (scipy's and the linkage's copy);
    ``vector``: ``n x dims x 8`` twice (fastcluster's float64 rows); ``micro``: ``n x dims x 4 + 8 n``
    (faiss k-means' rows and the labels) and the micro-clusters' matrix; plus 50 MB of libraries.
    Measured (50 dims): 20,000 cells, vector, 1 MiB added (estimate 78 MiB); 50,000 cells, micro,
    49 MiB (65 MiB)."""
    from .._memory import Estimate, cells
    from ..tl._hclust import EUCLIDEAN_ONLY, MATRIX_MAX_CELLS, estimate_exact_seconds

    n, d = sizes.n_obs, sizes.dim(p.use_rep, p.n_pcs)
    vector_ok = p.method == "single" or (p.method in EUCLIDEAN_ONLY and p.metric == "euclidean")
    vector = (p.backend == "vector" or (p.backend == "auto" and vector_ok)) and not p.optimal_ordering
    backend = p.backend
    if backend == "auto":
        slow = estimate_exact_seconds(n, d, vector=vector) > p.max_exact_seconds
        backend = "micro" if slow or (not vector and n > MATRIX_MAX_CELLS) else "vector" if vector else "matrix"
    if backend == "micro":
        m = min(p.n_micro_clusters, n)
        main = [
            (f"micro-clusters: rows {cells(n)} x {d} float32 and labels", n * d * 4.0 + 8.0 * n),
            (f"{m} x {m} distances", 8.0 * m * m),
        ]
    elif backend == "vector":
        main = [(f"rows {cells(n)} x {d} float64, twice", 2 * n * d * 8.0)]
    else:
        main = [(f"condensed distances {cells(n)}^2 / 2 x 8 B, twice", 2 * n * (n - 1) / 2 * 8.0)]
    return Estimate(
        parts=(("scipy / fastcluster", 50e6), *main),
        options="backend: micro (the micro-cluster approximation), or ward / centroid / median with euclidean "
        "(backend: vector, no n x n matrix)",
    )


STAGE = Stage(
    name="hclust",
    params=HclustParams,
    run=clustering_run("hclust"),
    repeat="list",
    reads=(Ref("use_rep", "rep"),),
    makes=lambda p: Makes(obs=hclust_keys(p.key_added, p.n_clusters, p.heights)),
    record=lambda adata, p: {k: adata.uns[p.key_added].get(k) for k in ("backend", "estimated_exact_seconds")},
    on_sketch=True,
    memory=memory,
    description="hierarchical clustering (every scipy linkage), one tree cut at several k",
    obsm_reads="declared",
)
