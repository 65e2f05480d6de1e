"""``subcluster``: named subclusterings (:func:`scclust.tl.subcluster`): select cells by rule,
re-process them, cluster again, map the labels back (:func:`scclust.tl.transfer_subclusters`)."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import Field, model_validator

from .. import tl
from .._keys import leiden_keys
from .._params import params_model
from .._types import GeneList
from ._base import Makes, Ref, Stage, moved_keys

logger = logging.getLogger(__name__)

#: keys of the flat layout and where they live now
MOVED = {
    "hvg_flavor": "hvg.flavor",
    "hvg_batch_key": "hvg.batch_key",
    **{k: f"hvg.{k}" for k in ("min_mean", "max_mean", "min_disp", "n_top_genes")},
    **{k: f"pca.{k}" for k in ("regress_out", "max_value", "n_comps", "svd_solver")},
    "n_neighbors": "graph.n_neighbors",
    "n_pcs": "graph.n_pcs",
    "knn_backend": "graph.backend",
    "knn_min_recall": "graph.min_recall",
    "resolutions": "leiden.resolutions",
    "leiden_flavor": "leiden.flavor",
    "key_added": "leiden.key_added",
    "umap_min_dist": "umap.min_dist",
    "umap_n_epochs": "umap.n_epochs",
    "umap_init": "umap.init",
    "markers": "select.markers",
    "clusters": "select.clusters",
    "obs_query": "select.obs_query",
    "min_score": "select.min_score",
}


class _Base(moved_keys(MOVED)):
    @model_validator(mode="before")
    @classmethod
    def _select_string(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("select"), str):
            raise ValueError(
                "select is a rule now: select: {markers: {T: [CD3E], NK: [GNLY, NKG7]}}, "
                "select: {clusters: [1, 3]} or select: {obs_query: \"cell_type == 'NK'\"}"
            )
        return data


SubclusterParams = params_model(
    tl.subcluster,
    name="SubclusterParams",
    exclude=("name",),
    base=_Base,
    fields={
        "plot_genes": (
            GeneList,
            Field(
                ["CD3E", "CD4", "CD8A", "GNLY"],
                description="genes drawn on the subset's UMAP (figures/subcluster_{name}_markers)",
            ),
        ),
        "plot_parent_key": (
            str | None,
            Field(
                None, description="parent clustering drawn beside the subclusters in the overview figure; null: groupby"
            ),
        ),
    },
)


def run(adata, p, ctx) -> None:
    """One named subclustering (``ctx.entry``): subset h5ad, figures, tables; labels written back into the parent."""
    import contextlib

    from .. import pl
    from .._dask import dask_client
    from .._io import write_h5ad
    from ..tl._subcluster import _from_store

    name = ctx.entry
    with contextlib.ExitStack() as stack:
        if _from_store(adata):  # the subset's counts are read from the store on the Dask cluster
            stack.enter_context(dask_client(**ctx.cfg.dask.model_dump()))
        # the layout is computed in the run's background process (warm), not in tl.subcluster
        sub, rep = tl.subcluster(
            adata, name=name, **p.model_dump(exclude={"plot_genes", "plot_parent_key", "umap"}), umap=None
        )
    if p.umap is not None:
        ctx.umap(sub, key_added="X_umap", params=p.umap, random_state=p.random_state)
    keys = tl.transfer_subclusters(adata, subset=sub, name=name)
    ctx.add_clusterings(f"subcluster_{name}", keys)
    path = ctx.outdir / "subclusters" / f"{name}.h5ad"
    write_h5ad(sub, path)
    ctx.record(path)
    for table, df in rep.tables().items():
        ctx.save_table(df, f"subcluster_{name}_{table}")
    ctx.resolve(adata)  # the overview draws the parent's embedding, which may still be computed in the background
    for key in keys:  # figure options are the figures' business, not the tool's
        fig = pl.subcluster_overview(sub, parent=adata, key=key, parent_key=p.plot_parent_key or p.groupby)
        ctx.save_figure(fig, f"subcluster_{name}_{key}")
    genes = [g for g in ctx.present_genes(p.plot_genes) if g in sub.raw.var_names]
    if genes:
        ctx.save_figure(pl.subcluster_markers(sub, genes=genes), f"subcluster_{name}_markers")


def _makes(p, name: str) -> Makes:
    return Makes(obs=leiden_keys(p.leiden.key_added or name, p.leiden.resolutions))


STAGE = Stage(
    name="subcluster",
    params=SubclusterParams,
    run=run,
    repeat="named",
    reads=(
        Ref("groupby", "obs"),
        Ref("batch_key", "batch", explicit_only=True),
        Ref("pca.regress_out", "obs"),
        Ref("plot_parent_key", "obs"),
        Ref("select.markers", "genes"),
        Ref("plot_genes", "genes"),
    ),
    makes=_makes,
    computes_umap=lambda p: p.umap is not None,
    description="select cells by rule, re-process, cluster again, map labels back",
    obsm_reads="declared",
)
