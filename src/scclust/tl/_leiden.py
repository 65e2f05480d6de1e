"""Leiden (and Louvain) community detection at several resolutions in one call."""

from __future__ import annotations

import logging
import random
from contextlib import contextmanager
from typing import Literal

import numpy as np
from anndata import AnnData
from scipy import sparse

from .._errors import ConfigError, MissingKeyError, choices
from .._keys import leiden_keys
from .._types import NJobs, Resolutions, validated
from .._worker import available_cpus
from ._labels import store_labels

logger = logging.getLogger(__name__)


@validated
def leiden(
    adata: AnnData,
    *,
    resolutions: Resolutions = (1.0,),
    neighbors_key: str = "neighbors",
    key_added: str = "leiden",
    flavor: Literal["igraph", "leidenalg", "louvain"] = "igraph",
    n_iterations: int = 2,
    use_weights: bool = True,
    random_state: int = 0,
    n_jobs: NJobs = 1,
    copy: bool = False,
    resolution: float | None = None,
) -> AnnData | None:
    """Leiden clustering of a neighbour graph at several resolutions.

    The graph is converted to igraph once and reused for every resolution. ``flavor="igraph"`` is
    igraph's C implementation (fast; equals ``sc.tl.leiden(flavor="igraph", directed=False)``),
    ``"leidenalg"`` is the leidenalg package (the lab's default; equals ``sc.tl.leiden()``;
    ``n_iterations=-1`` runs to convergence as scanpy does), ``"louvain"`` is igraph's multilevel
    Louvain (``n_iterations`` ignored).

    Parameters
    ----------
    adata
        Annotated data matrix with a graph from :func:`scclust.pp.neighbors` (or scanpy's).
    resolutions
        One clustering per resolution (each > 0).
    neighbors_key
        Name of the graph in ``.uns``.
    key_added
        Prefix of the label columns: ``f"{key_added}_{resolution}"`` (e.g. ``leiden_0.4``).
    flavor
        Implementation, see above.
    n_iterations
        Leiden iterations; negative runs until the partition no longer improves.
    use_weights
        Use edge weights (connectivities) or treat the graph as unweighted.
    random_state
        Seed.
    n_jobs
        Processes running resolutions side by side (-1: one per core; at most one per resolution).
        Each resolution uses the same seed in any process, so the labels do not depend on ``n_jobs``.
        Worth it for leidenalg (seconds to minutes per resolution, and it holds the GIL); each
        process holds a copy of the graph.
    copy
        Return a modified copy.
    resolution
        scanpy's name: one resolution (same as ``resolutions=[resolution]``; give one of the two).

    Returns
    -------
    ``None`` (or the copy), having written ``.obs[f"{key_added}_{r}"]`` (categorical labels
    ``"0"``, ``"1"``, ... numbered by decreasing cluster size) for each resolution ``r`` and
    ``.uns[key_added]`` with ``params`` and per-resolution ``n_clusters`` and ``modularity``.
    """
    if resolution is not None:
        if list(resolutions) != [1.0]:
            raise ConfigError("give either resolution (one value, scanpy's name) or resolutions, not both")
        if not resolution > 0:
            raise ConfigError(f"resolution must be > 0; got {resolution}")
        resolutions = [resolution]
    res = [float(r) for r in dict.fromkeys(resolutions)]
    adata = adata.copy() if copy else adata
    adjacency = get_graph(adata, neighbors_key)
    options = {"flavor": flavor, "n_iterations": n_iterations, "use_weights": use_weights, "random_state": random_state}
    n_proc = min(len(res), available_cpus() if n_jobs == -1 else n_jobs)
    results = _partitions_in_workers(adjacency, res, options, n_proc) if n_proc > 1 else _partitions(adjacency, res, options)
    summary = {}
    for r, key, (membership, modularity) in zip(res, leiden_keys(key_added, res), results, strict=True):
        n_clusters = store_labels(adata, key, membership)
        summary[key] = {"resolution": r, "n_clusters": n_clusters, "modularity": modularity}
        logger.info("%s: %d clusters (modularity %.3f)", key, n_clusters, modularity)
    adata.uns[key_added] = {
        "params": {
            "resolutions": res, "neighbors_key": neighbors_key, "flavor": flavor,
            "n_iterations": n_iterations, "use_weights": use_weights, "random_state": random_state,
            "n_jobs": n_jobs,
        },
        "clusterings": summary,
    }
    return adata if copy else None


def _partitions_in_workers(adjacency: sparse.csr_matrix, res: list[float], options: dict, n_proc: int) -> list:
    """:func:`_partitions` for every resolution, shared between this process and ``n_proc - 1`` worker
    processes (highest, slowest resolutions dealt first, round robin; one call per worker, so no pipe
    can fill up). A worker that fails or cannot start: its resolutions are computed here."""
    from .._worker import Worker, WorkerError

    dealt: list[list[int]] = [[] for _ in range(n_proc)]  # slot 0: this process
    for j, i in enumerate(sorted(range(len(res)), key=lambda i: -res[i])):
        dealt[j % n_proc].append(i)
    results: list = [None] * len(res)
    workers: list[tuple[Worker, list[int]]] = []
    ok = False
    try:
        for indices in dealt[1:]:
            try:
                w = Worker()
                workers.append((w, indices))
                w.submit(f"{__name__}:_partitions", adjacency, [res[i] for i in indices], options)
            except (OSError, WorkerError) as err:
                logger.warning("leiden: no worker process (%s); its resolutions run here", err)
                dealt[0] += indices
                if workers and workers[-1][1] is indices:
                    workers.pop()[0].close(kill=True)
        for i, part in zip(dealt[0], _partitions(adjacency, [res[i] for i in dealt[0]], options), strict=True):
            results[i] = part
        for w, indices in workers:
            try:
                parts = w.result()
            except WorkerError as err:
                logger.warning("leiden: a worker process failed (%s); its resolutions run here", err)
                parts = _partitions(adjacency, [res[i] for i in indices], options)
            for i, part in zip(indices, parts, strict=True):
                results[i] = part
        ok = True
    finally:  # an error or Ctrl-C here: no worker outlives the call
        for w, _ in workers:
            w.close(kill=not ok)
    return results


def _partitions(adjacency: sparse.csr_matrix, res: list[float], options: dict) -> list[tuple[np.ndarray, float]]:
    """(membership, modularity) at each resolution; the igraph graph is built once (in any process)."""
    flavor, use_weights, random_state = options["flavor"], options["use_weights"], options["random_state"]
    g = _to_igraph(adjacency, directed=flavor == "leidenalg")
    weights = "weight" if use_weights else None
    la_weights = np.asarray(g.es["weight"], dtype=np.float64) if use_weights else None
    out = []
    for r in res:
        part = _find_partition(g, r, options, random_state, la_weights=la_weights)
        if flavor == "leidenalg":
            modularity = float(_undirected_modularity(adjacency, part.membership, use_weights))
        else:
            modularity = float(g.modularity(part.membership, weights=weights, resolution=r))
        out.append((np.asarray(part.membership), modularity))
    return out


def _find_partition(g, r: float, options: dict, seed: int, *, la_weights: np.ndarray | None = None, fast_rng: bool = False):
    """One partition of igraph graph ``g`` at resolution ``r`` with ``seed`` (``options``: flavor,
    n_iterations, use_weights); shared by :func:`leiden` and the stability runs. ``fast_rng``:
    igraph draws from :class:`random.Random` (C, ~1.4x faster) instead of scanpy's numpy wrapper
    (other numbers for the same seed, so only where scanpy parity does not matter)."""
    flavor, use_weights = options["flavor"], options["use_weights"]
    if flavor == "leidenalg":
        import leidenalg

        if use_weights and la_weights is None:
            la_weights = np.asarray(g.es["weight"], dtype=np.float64)
        return leidenalg.find_partition(
            g, leidenalg.RBConfigurationVertexPartition, weights=la_weights if use_weights else None,
            n_iterations=options["n_iterations"], seed=seed, resolution_parameter=r,
        )
    weights = "weight" if use_weights else None
    with _igraph_seed(seed, fast=fast_rng):
        if flavor == "igraph":
            return g.community_leiden(objective_function="modularity", weights=weights, resolution=r, n_iterations=options["n_iterations"])
        return g.community_multilevel(weights=weights, resolution=r)


def get_graph(adata: AnnData, neighbors_key: str) -> sparse.csr_matrix:
    """The connectivities of graph ``neighbors_key``, or an error saying what to run first."""
    if neighbors_key not in adata.uns or "connectivities_key" not in adata.uns[neighbors_key]:
        graphs = [k for k, v in adata.uns.items() if isinstance(v, dict) and "connectivities_key" in v]
        raise MissingKeyError(
            f"graph {neighbors_key!r} not found in .uns; run the neighbors stage first "
            f"(graphs available: {choices(graphs)})"
        )
    key = adata.uns[neighbors_key]["connectivities_key"]
    if key not in adata.obsp:
        raise MissingKeyError(f".obsp[{key!r}] (graph {neighbors_key!r}) is missing; re-run the neighbors stage")
    return sparse.csr_matrix(adata.obsp[key])


def _to_igraph(adjacency: sparse.csr_matrix, *, directed: bool):
    """The graph scanpy builds (``_utils.get_igraph_from_adjacency``): one edge per stored entry."""
    import igraph as ig

    coo = adjacency.tocoo()
    order = np.lexsort((coo.col, coo.row))  # row-major, as csr .nonzero()
    rows, cols, w = coo.row[order], coo.col[order], coo.data[order]
    nz = w != 0
    g = ig.Graph(n=adjacency.shape[0], edges=np.column_stack([rows[nz], cols[nz]]).tolist(), directed=directed)
    g.es["weight"] = w[nz].astype(np.float64)
    return g


def _undirected_modularity(adjacency: sparse.csr_matrix, membership, use_weights: bool) -> float:
    import igraph as ig

    up = sparse.triu(adjacency, k=1).tocoo()
    g = ig.Graph(n=adjacency.shape[0], edges=np.column_stack([up.row, up.col]).tolist())
    return g.modularity(list(membership), weights=up.data.tolist() if use_weights else None)


class _RNG:
    """igraph random generator from a seed (the wrapper scanpy uses, so results match)."""

    def __init__(self, random_state: int) -> None:
        self._rng = np.random.RandomState(random_state)

    def getrandbits(self, k: int) -> int:
        return self._rng.tomaxint() & ((1 << k) - 1)

    def randint(self, a: int, b: int) -> int:
        return self._rng.randint(a, b + 1)

    def __getattr__(self, attr: str):
        return getattr(self._rng, "normal" if attr == "gauss" else attr)


@contextmanager
def _igraph_seed(random_state: int, *, fast: bool = False):
    import igraph

    igraph.set_random_number_generator(random.Random(random_state) if fast else _RNG(random_state))
    try:
        yield
    finally:
        igraph.set_random_number_generator(random)
