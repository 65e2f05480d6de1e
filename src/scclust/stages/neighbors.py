"""``neighbors``: kNN / SNN graphs (:func:`scclust.pp.neighbors`), optional graph heat maps."""

from __future__ import annotations

from .. import pp
from .._params import params_model
from ._base import Makes, Ref, Stage

NeighborsParams = params_model(pp.neighbors, name="NeighborsParams")


def run(adata, p: NeighborsParams, ctx) -> None:
    from .. import pl, pp

    pp.neighbors(adata, **p.model_dump())
    if ctx.cfg.figures.graph_block:
        ctx.save_figure(pl.graph_block(adata, [p.key_added], n_cells=ctx.cfg.figures.graph_block), f"graph_{p.key_added}")


STAGE = Stage(
    name="neighbors", params=NeighborsParams, run=run, repeat="list", default=True,
    reads=(Ref("use_rep", "rep"),),
    makes=lambda p: Makes(graphs=[p.key_added]),
    record=lambda adata, p: {"knn": adata.uns[p.key_added].get("knn")},  # backend chosen, measured recall
    description="kNN / SNN graph on an embedding",
    obsm_reads="declared",
)
