"""``neighbors``: kNN / SNN graphs (:func:`scclust.pp.neighbors`), optional graph heat maps."""

from __future__ import annotations

import logging

from .. import pp
from .._params import params_model
from ._base import Makes, Ref, Stage

logger = logging.getLogger(__name__)

NeighborsParams = params_model(pp.neighbors, name="NeighborsParams")


def cluster(ctx):
    """A client of the cluster at ``dask.address`` while the block runs (its workers then answer
    the in-memory searches: :func:`scclust._dask.cluster_client`); without an address nothing."""
    import contextlib

    from .._dask import dask_client

    address = ctx.cfg.dask.address
    return dask_client(address=address) if address else contextlib.nullcontext()


def run(adata, p, ctx) -> None:
    from .. import pl
    from .._checks import get_rep
    from ..pp._neighbors import options_json, rep_digest

    made = adata.uns.get(p.key_added, {})
    built = ctx.built_graphs.get(p.key_added)
    if (
        built is not None
        and made.get("options_json") == built
        and built == options_json(data=rep_digest(get_rep(adata, p.use_rep, p.n_pcs)), **p.model_dump())
    ):  # built by an earlier stage of this run (prepare's, for its UMAP): the same graph, not built twice
        logger.info("neighbors: reusing the graph %r already built on the same data with the same options", p.key_added)
    else:
        if made:
            logger.info(
                "neighbors: the graph %r (%s) %s is replaced by one built with this stage's options%s",
                p.key_added,
                ", ".join(f"{k}={v}" for k, v in made.get("params", {}).items() if k in ("n_neighbors", "use_rep")),
                "built by prepare" if built is not None else "read with the input",
                "; prepare's UMAP was computed on the earlier one (its options: prepare.graph)" if built else "",
            )
        with cluster(ctx):  # dask.address: the search's query blocks answered on that cluster's workers
            pp.neighbors(adata, **p.model_dump())
    if ctx.cfg.figures.graph_block:
        ctx.save_figure(
            pl.graph_block(adata, neighbors_keys=[p.key_added], n_cells=ctx.cfg.figures.graph_block),
            f"graph_{p.key_added}",
        )


def memory(p, sizes):
    """Peak of one graph: :func:`scclust.pp._neighbors.graph_memory`. Kept after the stage: the graph, ``24 x n x k``
    (connectivities ``2 n k`` and distances ``n k`` entries of float32 + int32). Measured (k = 20, 30
    dims): exact, 20,000 cells 102 MiB added (estimate 166 MiB), 50,000 cells 138 MiB (200 MiB); ivf,
    100,000 cells 778 MiB (829 MiB), 1,000,000 cells 1,492 MiB (1,860 MiB).
    """
    from .._memory import Estimate
    from ..pp._neighbors import graph_memory

    n, k, d = sizes.n_obs, p.n_neighbors, sizes.dim(p.use_rep, p.n_pcs)
    return Estimate(
        parts=graph_memory(n, d, k, p.backend),
        options="fewer n_neighbors or n_pcs, or cluster a sketch (add the sketch stage)",
        kept=24.0 * n * k,
        graphs={p.key_added: 2 * n * (k - 1)},
    )


STAGE = Stage(
    name="neighbors",
    params=NeighborsParams,
    run=run,
    repeat="list",
    default=True,
    reads=(Ref("use_rep", "rep"),),
    makes=lambda p: Makes(graphs=[p.key_added]),
    record=lambda adata, p: {"knn": adata.uns[p.key_added].get("knn")},  # backend chosen, measured recall
    on_sketch=True,
    memory=memory,
    description="kNN / SNN graph on an embedding",
    obsm_reads="declared",
)
