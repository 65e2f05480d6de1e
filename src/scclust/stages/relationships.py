"""``relationships``: cluster dendrogram (:func:`scclust.tl.dendrogram`), marker dot plot in its
order (:func:`scclust.pl.dotplot`) and mean expression per cluster (:func:`scclust.tl.cluster_means`)."""

from __future__ import annotations

from pydantic import Field

from .. import tl
from .._params import params_model
from .._types import KeyList
from ..datasets import LAB_MARKERS
from ._base import Ref, Stage

#: the dendrogram's options (:func:`scclust.tl.dendrogram`), the genes of the dot plot and mean table
#: (:func:`scclust.tl.cluster_means`), and the clusterings drawn
RelationshipsParams = params_model(
    tl.dendrogram,
    tl.cluster_means,
    name="RelationshipsParams",
    exclude=("groupby", "key_added"),
    defaults={"genes": list(LAB_MARKERS)},
    fields={
        "groupby": (
            KeyList | None,
            Field(None, description="clusterings to draw; null: every clustering made in this run"),
        ),
    },
    doc="Cluster dendrogram, marker dot plot ordered by it and mean expression per cluster.",
)


def run(adata, p: RelationshipsParams, ctx) -> None:
    """Per clustering: dendrogram (stored in .uns) and its figure, marker dot plot in dendrogram
    order, and the mean expression of the genes per cluster (same order)."""
    from .. import pl, tl

    genes = ctx.present_genes(p.genes)
    for g in ctx.groups("relationships", p.groupby):
        tl.dendrogram(
            adata,
            groupby=g,
            use_rep=p.use_rep,
            n_pcs=p.n_pcs,
            cor_method=p.cor_method,
            linkage_method=p.linkage_method,
            optimal_ordering=p.optimal_ordering,
        )
        ctx.save_figure(pl.dendrogram(adata, groupby=g), f"dendrogram_{g}")
        means = tl.cluster_means(adata, groupby=g, genes=genes, use_raw=p.use_raw)
        ctx.save_figure(pl.dotplot(adata, groupby=g, genes=genes, use_raw=p.use_raw), f"dotplot_{g}")
        order = [str(c) for c in adata.uns[f"dendrogram_{g}"]["categories_ordered"]]
        means.index = means.index.astype(str)
        ctx.save_table(means.loc[order], f"cluster_means_{g}")


STAGE = Stage(
    name="relationships",
    params=RelationshipsParams,
    run=run,
    reads=(Ref("groupby", "obs"), Ref("use_rep", "rep"), Ref("genes", "genes")),
    description="cluster dendrogram, marker dot plot, mean expression per cluster",
    obsm_reads="declared",
)
