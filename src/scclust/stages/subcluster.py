"""``subcluster``: named subclusterings (:func:`scclust.tl.subcluster`): select cells by rule,
re-process them, cluster again, map the labels back (:func:`scclust.tl.transfer_subclusters`)."""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field

from .._keys import leiden_keys
from .._types import GeneList, KeyList, Resolutions
from ._base import Makes, Params, Ref, Stage

logger = logging.getLogger(__name__)


class SubclusterParams(Params):
    """One named subclustering (:func:`scclust.tl.subcluster`); the name is the key in ``subcluster``.

    ``markers: null`` means the default T/NK rule ``{T: [CD3E], NK: [GNLY, NKG7]}``.
    """

    groupby: str = "leiden_0.4"
    select: Literal["markers", "clusters", "obs"] = "markers"
    clusters: KeyList | None = None
    markers: dict[str, list[str]] | None = None
    min_score: float = Field(0.5, gt=0, le=1)
    obs_query: str | None = None
    min_cells: int = Field(50, ge=3)
    batch_key: str | None = "sample"
    min_cells_per_batch: int = Field(10, ge=1)
    small_batches: Literal["error", "drop"] = "error"
    hvg_flavor: Literal["seurat", "cell_ranger"] = "seurat"
    min_mean: float = 0.0125
    max_mean: float = 3.0
    min_disp: float = 0.5
    n_top_genes: int | None = Field(None, ge=2)
    hvg_batch_key: str | None = None
    regress_out: KeyList = ["total_counts", "pct_counts_mt"]
    max_value: float | None = Field(10.0, gt=0)
    n_comps: int = Field(50, ge=2)
    svd_solver: str = "arpack"
    n_neighbors: int = Field(10, ge=2)
    n_pcs: int = Field(30, ge=1)
    knn_backend: Literal["auto", "exact", "ivf", "flat", "hnsw"] = Field(
        "auto", description="the subset's kNN graph, as prepare.knn_backend (auto: exact up to 50,000 cells)")
    knn_min_recall: float = Field(0.995, gt=0, le=1, description="as prepare.knn_min_recall")
    resolutions: Resolutions = [0.6]
    leiden_flavor: Literal["leidenalg", "igraph"] = "leidenalg"
    key_added: str = "tcells"
    umap_min_dist: float = Field(0.5, ge=0)
    umap_n_epochs: int | None = Field(None, ge=1, description="as prepare.umap_n_epochs (null: umap-learn's default)")
    umap_init: Literal["auto", "spectral", "pca"] = Field("auto", description="as prepare.umap_init")
    plot_genes: GeneList = ["CD3E", "CD4", "CD8A", "GNLY"]
    plot_parent_key: str | None = Field(None, description="parent clustering in the overview figure; None = groupby")
    random_state: int = 0



def run(adata, p: SubclusterParams, ctx) -> None:
    """One named subclustering (``ctx.entry``): subset h5ad, figures, tables; labels written back into the parent."""
    import contextlib

    from .. import pl, tl
    from .._dask import dask_client
    from .._io import write_h5ad
    from ..tl._subcluster import _from_store

    name = ctx.entry
    with contextlib.ExitStack() as stack:
        if _from_store(adata):  # the subset's counts are read from the store on the Dask cluster
            stack.enter_context(dask_client(**ctx.cfg.dask.model_dump()))
        sub, rep = tl.subcluster(adata, name=name, umap_worker=ctx.umap_worker,
                                 **p.model_dump(exclude={"plot_genes", "plot_parent_key"}))
    keys = tl.transfer_subclusters(adata, subset=sub, name=name)
    ctx.add_clusterings(f"subcluster_{name}", keys)
    path = ctx.outdir / "subclusters" / f"{name}.h5ad"
    write_h5ad(sub, path)
    ctx.record(path)
    for table, df in rep.tables().items():
        ctx.save_table(df, f"subcluster_{name}_{table}")
    ctx.wait_background(adata)  # the overview draws the parent's embedding, maybe still being computed
    for key in keys:  # figure options are the figures' business, not the tool's
        fig = pl.subcluster_overview(sub, parent=adata, key=key, parent_key=p.plot_parent_key or p.groupby)
        ctx.save_figure(fig, f"subcluster_{name}_{key}")
    genes = [g for g in ctx.present_genes(p.plot_genes) if g in sub.raw.var_names]
    if genes:
        ctx.save_figure(pl.subcluster_markers(sub, genes=genes), f"subcluster_{name}_markers")


def _makes(params: SubclusterParams) -> Makes:
    return Makes(obs=leiden_keys(params.key_added, params.resolutions))


STAGE = Stage(
    name="subcluster", params=SubclusterParams, run=run, repeat="named",
    reads=(Ref("groupby", "obs"), Ref("batch_key", "batch"), Ref("regress_out", "obs"),
           Ref("plot_parent_key", "obs"), Ref("markers", "genes"), Ref("plot_genes", "genes")),
    makes=_makes, computes_umap=True,
    description="select cells by rule, re-process, cluster again, map labels back",
    waits_for_background=False,
)
