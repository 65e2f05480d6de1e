"""``heatmap``: clustered heatmaps: the matrix (:func:`scclust.tl.heatmap_matrix`), its clustering
(:func:`scclust.tl.cluster_heatmap`) and the figure (:func:`scclust.pl.clustered_heatmap`)."""

from __future__ import annotations

import inspect
import logging
from typing import Any, Literal

from pydantic import Field, model_validator

from .._errors import ConfigError
from .._types import Distance, Linkage, check_linkage_metric
from ._base import Params, Ref, Stage

logger = logging.getLogger(__name__)


class HeatmapParams(Params):
    """A clustered heatmap: the matrix (:func:`scclust.tl.heatmap_matrix`), its clustering
    (:func:`scclust.tl.cluster_heatmap`) and the figure (:func:`scclust.pl.clustered_heatmap`).

    Each field is a keyword argument of one of those three functions, with the same default.
    """

    name: str = Field("heatmap", description="output name: figures/{name}.png, tables/{name}_*.csv")
    # matrix
    source: Literal["cluster_means", "cells", "table"] = "cluster_means"
    table: str | None = Field(None, description="source table: a CSV path (rows x columns, row names first) or builtin:heatmap_example")
    table_annotations: str | None = Field(None, description="CSV of column annotations of the table (one row per table column)")
    column_pattern: str | None = Field(None, description="regex with named groups on the table's column names, e.g. (?P<condition>ctrl|stim)_.*")
    groupby: str | list[str] | None = Field(None, description=".obs column(s); None = the first clustering made in this run")
    genes: list[str] | None = Field(None, description="rows; None = top markers per group (sc.tl.rank_genes_groups)")
    n_top_genes: int = Field(5, ge=1)
    use_raw: bool | None = None
    max_cells: int = Field(2000, ge=2)
    annotations: list[str] = Field([], description="further .obs columns drawn as column colour bars")
    # clustering
    scale: Literal["zscore", "standard", "none"] = "zscore"
    row_metric: Distance = "correlation"
    row_method: Linkage = "average"
    col_metric: Distance = "correlation"
    col_method: Linkage = "average"
    cluster_rows: bool = True
    cluster_cols: bool = True
    optimal_ordering: bool = False
    row_k: int | None = Field(None, ge=1)
    n_boot: int = Field(100, ge=0)
    nonfinite: Literal["raise", "drop"] = "raise"
    random_state: int = 0
    # figure
    annotation_colors: dict[str, dict[str, str]] | None = None
    label_rows: bool | Literal["auto"] | list[str] = "auto"
    label_cols: bool | Literal["auto"] = "auto"
    show_row_dendrogram: bool = True
    show_col_dendrogram: bool = True
    show_groups: bool = True
    show_stability: bool = True
    cmap: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> HeatmapParams:
        for axis in ("row", "col"):
            check_linkage_metric(getattr(self, f"{axis}_method"), getattr(self, f"{axis}_metric"),
                                 allow_non_euclidean=None, prefix=f"{axis}_")
        if self.source == "table" and self.table is None:
            raise ValueError("source 'table' needs table: a CSV path or builtin:heatmap_example")
        if self.source != "table" and (self.table or self.table_annotations or self.column_pattern):
            raise ValueError(f"table, table_annotations and column_pattern need source 'table' (source is {self.source!r})")
        return self



def run(adata, p: HeatmapParams, ctx) -> None:
    """One clustered heatmap: figure ``{name}``; tables ``{name}_matrix`` (scaled, as drawn),
    ``{name}_row_linkage`` / ``{name}_col_linkage``, ``{name}_row_order`` / ``{name}_col_order``
    (leaf orders), ``{name}_row_groups``, ``{name}_stability`` and ``{name}_dropped`` (when any).
    ``groupby`` unset: the first clustering made in this run."""
    from .. import pl, tl

    kw = p.model_dump()
    if p.source != "table" and kw["groupby"] is None:
        made = ctx.all_clusterings()
        if not made:
            raise ConfigError(f"heatmap {p.name!r}: set groupby (no clustering was made in this run)")
        kw["groupby"] = made[0]
        logger.info("heatmap %s: groupby = %s (the first clustering of this run)", p.name, made[0])

    def args(func) -> dict[str, Any]:
        names = inspect.signature(func).parameters
        return {k: v for k, v in kw.items() if k in names}

    inp = tl.heatmap_matrix(adata if p.source != "table" else None, **args(tl.heatmap_matrix))
    res = tl.cluster_heatmap(inp.data, **args(tl.cluster_heatmap))
    fig = pl.clustered_heatmap(res, row_annotations=inp.row_annotations, col_annotations=inp.col_annotations,
                               title=p.name, **args(pl.clustered_heatmap))
    ctx.save_figure(fig, p.name)
    ctx.save_table(res.ordered(), f"{p.name}_matrix")
    for axis, short in (("rows", "row"), ("columns", "col")):
        if (res.row_linkage if short == "row" else res.col_linkage) is not None:
            ctx.save_table(res.linkage_table(axis), f"{p.name}_{short}_linkage")
        ctx.save_table(res.leaf_order_table(axis), f"{p.name}_{short}_order")
    if res.row_groups is not None:
        ctx.save_table(res.row_groups.rename_axis("row").to_frame(), f"{p.name}_row_groups")
    if res.stability is not None:
        ctx.save_table(res.stability, f"{p.name}_stability")
    if len(res.dropped):
        ctx.save_table(res.dropped, f"{p.name}_dropped", index=False)


STAGE = Stage(
    name="heatmap", params=HeatmapParams, run=run, repeat="list",
    reads=(Ref("groupby", "obs"), Ref("annotations", "obs")),
    description="clustered heatmaps with dendrograms and annotation bars",
    obsm_reads="declared",
)
