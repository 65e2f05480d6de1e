"""``relationships``: cluster dendrogram (:func:`scclust.tl.dendrogram`), marker dot plot in its
order (:func:`scclust.pl.dotplot`) and mean expression per cluster (:func:`scclust.tl.cluster_means`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .._types import GeneList, KeyList, Linkage
from ._base import Params, Ref, Stage


class RelationshipsParams(Params):
    """Cluster dendrogram, marker dot plot ordered by it and mean expression per cluster."""

    groupby: KeyList | None = Field(None, description="clusterings; None = every clustering made in this run")
    use_rep: str = "X_pca"
    n_pcs: int | None = Field(None, ge=1)
    cor_method: Literal["pearson", "kendall", "spearman"] = "pearson"
    linkage_method: Linkage = "complete"
    optimal_ordering: bool = False
    genes: GeneList = Field(
        ["CD3E", "CD4", "CD8A", "GNLY", "NKG7", "MS4A1", "FCGR3A", "CD14", "LYZ", "CST3", "MS4A7", "FCGR1A"],
        description="dot plot and mean-expression genes (default: the lab's 12 markers, datasets.LAB_MARKERS)",
    )
    use_raw: bool | None = Field(None, description="expression from .raw; None = when present")


def run(adata, p: RelationshipsParams, ctx) -> None:
    """Per clustering: dendrogram (stored in .uns) and its figure, marker dot plot in dendrogram
    order, and the mean expression of the genes per cluster (same order)."""
    from .. import pl, tl

    genes = ctx.present_genes(p.genes)
    for g in ctx.groups("relationships", p.groupby):
        tl.dendrogram(adata, groupby=g, use_rep=p.use_rep, n_pcs=p.n_pcs, cor_method=p.cor_method,
                      linkage_method=p.linkage_method, optimal_ordering=p.optimal_ordering)
        ctx.save_figure(pl.dendrogram(adata, groupby=g), f"dendrogram_{g}")
        means = tl.cluster_means(adata, groupby=g, genes=genes, use_raw=p.use_raw)
        ctx.save_figure(pl.dotplot(adata, groupby=g, genes=genes, use_raw=p.use_raw), f"dotplot_{g}")
        order = [str(c) for c in adata.uns[f"dendrogram_{g}"]["categories_ordered"]]
        means.index = means.index.astype(str)
        ctx.save_table(means.loc[order], f"cluster_means_{g}")


STAGE = Stage(
    name="relationships", params=RelationshipsParams, run=run,
    reads=(Ref("groupby", "obs"), Ref("use_rep", "rep"), Ref("genes", "genes")),
    description="cluster dendrogram, marker dot plot, mean expression per cluster",
    obsm_reads="declared",
)
