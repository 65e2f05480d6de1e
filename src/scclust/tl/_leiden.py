"""Leiden (and Louvain) community detection at several resolutions in one call."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Literal

import numpy as np
from anndata import AnnData
from scipy import sparse

from .._errors import ConfigError, MissingKeyError, choices
from ._labels import store_labels

logger = logging.getLogger(__name__)


def leiden(
    adata: AnnData,
    *,
    resolutions: Sequence[float] = (1.0,),
    neighbors_key: str = "neighbors",
    key_added: str = "leiden",
    flavor: Literal["igraph", "leidenalg", "louvain"] = "igraph",
    n_iterations: int = 2,
    use_weights: bool = True,
    random_state: int = 0,
    copy: bool = False,
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
    copy
        Return a modified copy.

    Returns
    -------
    ``None`` (or the copy), having written ``.obs[f"{key_added}_{r}"]`` (categorical labels
    ``"0"``, ``"1"``, ... numbered by decreasing cluster size) for each resolution ``r`` and
    ``.uns[key_added]`` with ``params`` and per-resolution ``n_clusters`` and ``modularity``.
    """
    res = [float(r) for r in resolutions]
    if not res:
        raise ConfigError("resolutions must list at least one value")
    bad = [r for r in res if not r > 0]
    if bad:
        raise ConfigError(f"resolutions must be > 0; got {bad}")
    if flavor not in ("igraph", "leidenalg", "louvain"):
        raise ConfigError(f"flavor {flavor!r} is not one of 'igraph', 'leidenalg', 'louvain'")
    adata = adata.copy() if copy else adata
    adjacency = get_graph(adata, neighbors_key)
    g = _to_igraph(adjacency, directed=flavor == "leidenalg")
    weights = np.asarray(g.es["weight"], dtype=np.float64) if use_weights else None
    summary = {}
    for r in res:
        if flavor == "leidenalg":
            import leidenalg

            part = leidenalg.find_partition(
                g, leidenalg.RBConfigurationVertexPartition, weights=weights,
                n_iterations=n_iterations, seed=random_state, resolution_parameter=r,
            )
            modularity = float(_undirected_modularity(adjacency, part.membership, use_weights))
        else:
            with _igraph_seed(random_state):
                if flavor == "igraph":
                    part = g.community_leiden(
                        objective_function="modularity", weights="weight" if use_weights else None,
                        resolution=r, n_iterations=n_iterations,
                    )
                else:
                    part = g.community_multilevel(weights="weight" if use_weights else None, resolution=r)
            modularity = float(g.modularity(part.membership, weights="weight" if use_weights else None, resolution=r))
        key = f"{key_added}_{format_resolution(r)}"
        n_clusters = store_labels(adata, key, np.asarray(part.membership))
        summary[key] = {"resolution": r, "n_clusters": n_clusters, "modularity": modularity}
        logger.info("%s: %d clusters (modularity %.3f)", key, n_clusters, modularity)
    adata.uns[key_added] = {
        "params": {
            "resolutions": res, "neighbors_key": neighbors_key, "flavor": flavor,
            "n_iterations": n_iterations, "use_weights": use_weights, "random_state": random_state,
        },
        "clusterings": summary,
    }
    return adata if copy else None


def format_resolution(r: float) -> str:
    """``0.4 -> "0.4"``, ``1 -> "1.0"``: the lab's key names (``leiden_1.0``)."""
    return repr(float(r))


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
def _igraph_seed(random_state: int):
    import igraph

    igraph.set_random_number_generator(_RNG(random_state))
    try:
        yield
    finally:
        igraph.set_random_number_generator(random)
