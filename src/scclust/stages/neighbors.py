"""``neighbors``: kNN / SNN graphs (:func:`scclust.pp.neighbors`), optional graph heat maps."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .._types import KnnMetric
from ._base import Makes, Params, Ref, Stage


class NeighborsParams(Params):
    """kNN / SNN graph (:func:`scclust.pp.neighbors`)."""

    use_rep: str = "X_pca"
    n_pcs: int | None = Field(None, ge=1)
    n_neighbors: int = Field(15, ge=2)
    metric: KnnMetric = "euclidean"
    method: Literal["umap", "gauss"] = "umap"
    backend: Literal["auto", "exact", "ivf", "flat", "hnsw"] = Field(
        "auto", description="auto: exact up to 50,000 cells, ivf (faiss IVF-Flat, reproducible) above, "
                            "flat (faiss brute force) where ivf would probe more than 1/2 of its lists")
    min_recall: float = Field(0.995, gt=0, le=1, description="ivf: widen the search until the recall on 1,000 cells reaches this")
    snn: bool = False
    prune: float = Field(1 / 15, ge=0, lt=1)
    key_added: str = "neighbors"
    random_state: int = 0


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
    waits_for_background=False,
)
