"""``markers``: what makes each cluster a cluster (:func:`scclust.tl.markers`, :func:`scclust.pl.markers`).

``MarkersParams`` is generated from :func:`scclust.tl.markers`' signature and docstring (its
``groupby`` becomes a list of clusterings), plus the stage's output options. Per clustering:

- tables ``markers_{key}`` (every cluster, its ``n_genes`` best genes with all statistics) and
  ``markers_{key}_summary`` (per cluster: cells, markers passing the filters, the top 5, and
  ``flag_no_marker`` when none passes: a likely over-split, listed in the report's flags);
- figures ``markers_dotplot_{key}`` (top markers per cluster, dendrogram order when the
  ``relationships`` stage made one), ``markers_heatmap_{key}`` (clustered heatmap of their mean
  expression per cluster: :func:`scclust.tl.cluster_heatmap`, :func:`scclust.pl.clustered_heatmap`)
  and ``markers_umap_{key}`` (the best marker of each cluster on the embedding).
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from pydantic import Field

from .. import tl
from .._params import params_model
from .._types import KeyList
from ._base import Ref, Stage

logger = logging.getLogger(__name__)

MarkersParams = params_model(
    tl.markers,
    name="MarkersParams",
    exclude=("groupby", "key_added"),
    fields={
        "groupby": (
            KeyList | None,
            Field(
                None,
                description="clusterings; null: the stability stage's recommended keys "
                "when it ran, else the Leiden keys of this run, else every clustering of this run",
            ),
        ),
        "n_genes": (int, Field(25, ge=1, description="genes per cluster in the marker table")),
        "n_plot": (int, Field(3, ge=1, description="markers per cluster in the dot plot and the heatmap")),
        "basis": (str | None, Field(None, description="embedding of the marker panels; null: the first UMAP in .obsm")),
    },
)


def groups(adata, p: Any, ctx: Any) -> list[str]:
    """The clusterings the stage works on (see ``groupby``)."""
    if p.groupby is not None:
        return list(p.groupby)
    cfg = ctx.cfg
    if "stability" in cfg.stages:
        rec = adata.uns.get(getattr(cfg.stability, "key_added", "stability"), {}).get("recommended")
        if rec is not None and len(rec):
            return [str(k) for k in rec]
    if "leiden" in cfg.stages:
        keys = [k for entry in cfg.entries("leiden").values() for k in ctx.clusterings.get(entry.key_added, [])]
        if keys:
            return keys
    return ctx.groups("markers", None)


def basis_of(adata, basis: str | None) -> str | None:
    if basis is not None:
        return basis
    umaps = [k for k in adata.obsm if "umap" in k.lower()]
    return umaps[0] if umaps else None


def run(adata, p: Any, ctx: Any) -> None:
    from .. import pl

    opts = p.model_dump(exclude={"groupby", "n_genes", "n_plot", "basis"})
    basis = basis_of(adata, p.basis)
    for key in groups(adata, p, ctx):
        tl.markers(adata, groupby=key, **opts)
        mk = tl._markers.markers_key(key)
        table = tl.marker_table(adata, key=mk, n_genes=p.n_genes)
        ctx.save_table(table, f"markers_{key}", index=False)
        ctx.save_table(summary(adata, key), f"markers_{key}_summary")
        top = tl.top_markers(adata, key=mk, n_genes=p.n_plot, passing=True)
        genes = list(dict.fromkeys(g for gs in top.values() for g in gs))
        if not genes:
            logger.warning("markers %s: no cluster has a marker passing the filters; no marker figures", key)
            continue
        best = list(dict.fromkeys(gs[0] for gs in top.values() if gs))
        res = adata.uns[mk]
        small = adata if res["params"]["source"] in (".raw", ".X") else tl.marker_expression(adata, key=mk, genes=genes)
        use_raw = res["params"]["source"] == ".raw" if small is adata else False
        ctx.save_figure(
            pl.markers(small, groupby=key, key=mk, n_genes=p.n_plot, use_raw=use_raw), f"markers_dotplot_{key}"
        )
        means = res["means"].loc[genes]
        if means.shape[0] >= 2 and means.shape[1] >= 2:
            hm = tl.cluster_heatmap(means, scale="zscore", n_boot=0, name=f"markers_{key}")
            marker_of = pd.DataFrame(
                {"marker of": [next(c for c, gs in top.items() if g in gs) for g in genes]}, index=genes
            )
            ctx.save_figure(
                pl.clustered_heatmap(hm, row_annotations=marker_of, title=f"Top markers of {key}"),
                f"markers_heatmap_{key}",
            )
        if basis is not None and basis in adata.obsm:
            fig = pl.embedding(
                small, basis=basis, color=best, use_raw=use_raw, title=f"Best marker of each cluster of {key}"
            )
            for ax in fig.axes:  # each panel names the cluster(s) its gene marks best
                if ax.get_title() in best:
                    gene = ax.get_title()
                    ax.set_title(f"{', '.join(c for c, gs in top.items() if gs and gs[0] == gene)}: {gene}")
            ctx.save_figure(fig, f"markers_umap_{key}")


def summary(adata, key: str, *, top: int = 5) -> pd.DataFrame:
    """Per cluster: cells, markers passing the filters, the ``top`` best of them and ``flag_no_marker``."""
    mk = tl._markers.markers_key(key)
    table = tl.marker_table(adata, key=mk)
    sizes = adata.obs[key].astype(str).value_counts()
    rows = []
    for c, df in table.groupby("cluster", observed=True, sort=False):
        ok = df[df["passes"]]
        rows.append(
            {
                "cluster": str(c),
                "n_cells": int(sizes.get(str(c), 0)),
                "n_markers": len(ok),
                "top_markers": ", ".join(ok["gene"].head(top)),
                "top_by_score": ", ".join(df["gene"].head(top)),
                "flag_no_marker": ok.empty,
            }
        )
    return pd.DataFrame(rows).set_index("cluster")


STAGE = Stage(
    name="markers",
    params=MarkersParams,
    run=run,
    reads=(Ref("groupby", "obs"), Ref("basis", "basis")),
    description="marker genes of every cluster (Wilcoxon / t-test, AUROC, fractions): tables, dot plot, heatmap, UMAP",
)
