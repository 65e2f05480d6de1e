"""``embedding``: UMAP panels per clustering series and for genes (:func:`scclust.pl.embedding`)."""

from __future__ import annotations

import logging

from pydantic import Field

from .._types import GeneList, KeyList
from ._base import Params, Ref, Stage

logger = logging.getLogger(__name__)


class EmbeddingParams(Params):
    """Embedding panels (:func:`scclust.pl.embedding`): one figure per clustering series, plus genes."""

    basis: str = Field(
        "X_umap",
        description="the .obsm embedding drawn (first two dimensions), e.g. X_umap_harmony; "
        "scanpy's short names work (umap)",
    )
    groups: KeyList | None = Field(
        None, description="clusterings drawn, one figure per series; null: every clustering made in this run"
    )
    genes: GeneList = Field([], description="genes drawn on the embedding, one panel each (figures/umap_genes)")
    use_raw: bool | None = Field(None, description="gene expression from .raw; null: when present")
    ncols: int = Field(4, ge=1, description="panels per row")


def run(adata, p: EmbeddingParams, ctx) -> None:
    from .. import pl

    basis = p.basis.removeprefix("X_")
    if p.groups is not None:
        panels = {"selected": p.groups}
    else:
        panels = dict(ctx.clusterings)
        if not panels:
            logger.warning("embedding: no clustering made in this run and no 'groups' given")
    for group, keys in panels.items():
        fig = pl.embedding(adata, basis=p.basis, color=keys, ncols=p.ncols, use_raw=p.use_raw)
        ctx.save_figure(fig, f"{basis}_{group}")
    genes = ctx.present_genes(p.genes)
    if genes:
        fig = pl.embedding(adata, basis=p.basis, color=genes, ncols=p.ncols, use_raw=p.use_raw)
        ctx.save_figure(fig, f"{basis}_genes")


STAGE = Stage(
    name="embedding",
    params=EmbeddingParams,
    run=run,
    repeat="list",
    default=True,
    reads=(Ref("basis", "basis"), Ref("groups", "obs"), Ref("genes", "genes")),
    description="UMAP panels of every clustering and of marker genes",
)
