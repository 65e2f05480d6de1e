"""``heatmap``: clustered heatmaps: the matrix (:func:`scclust.tl.heatmap_matrix`), its clustering
(:func:`scclust.tl.cluster_heatmap`) and the figure (:func:`scclust.pl.clustered_heatmap`)."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field, model_validator

from .. import pl, tl
from .._errors import ConfigError, InputError, MissingFileError
from .._params import params_model
from ._base import Params, Ref, Stage

logger = logging.getLogger(__name__)


class _Files(Params):
    @model_validator(mode="after")
    def _source(self) -> Any:
        if self.source == "table" and self.table is None:
            raise ValueError("source 'table' needs table: a CSV path or builtin:heatmap_example")
        if self.source != "table" and (self.table or self.table_annotations or self.column_pattern):
            raise ValueError(
                f"table, table_annotations and column_pattern need source 'table' (source is {self.source!r})"
            )
        return self


#: every option of the matrix (:func:`scclust.tl.heatmap_matrix`), its clustering
#: (:func:`scclust.tl.cluster_heatmap`) and the figure (:func:`scclust.pl.clustered_heatmap`), and the
#: files the stage reads for ``source: table``
HeatmapParams = params_model(
    tl.heatmap_matrix,
    tl.cluster_heatmap,
    pl.clustered_heatmap,
    name="HeatmapParams",
    base=_Files,
    exclude=(
        "table",
        "table_annotations",
        "row_annotations",
        "col_annotations",
        "title",
        "show_legend",
        "show_caption",
        "figsize",
        "name",
    ),
    fields={
        "name": (str, Field("heatmap", description="output name: figures/{name}.png, tables/{name}_*.csv")),
        "table": (
            str | None,
            Field(
                None,
                description="source table: a CSV path (rows x columns, row names first) or builtin:heatmap_example",
            ),
        ),
        "table_annotations": (
            str | None,
            Field(
                None, description="CSV of column annotations of the table (one row per table column, its name first)"
            ),
        ),
    },
    doc="A clustered heatmap: the matrix, its clustering and the figure.",
)


def _read_csv(path: str, what: str) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"{what} file not found: {path}")
    try:
        return pd.read_csv(p, index_col=0)
    except Exception as err:
        raise InputError(f"cannot read {what} {path} as CSV: {type(err).__name__}: {err}") from None


def _table(p) -> tuple[pd.DataFrame | None, pd.DataFrame | None, pd.DataFrame | None]:
    """``(table, column annotations, row annotations)`` named by the config (files, or the built-in example)."""
    from .._input import parse_input

    if p.source != "table":
        return None, None, None
    spec = parse_input(p.table)
    row_ann = None
    if spec.is_builtin:
        from ..datasets import heatmap_example

        if spec.name != "heatmap_example":
            raise ConfigError(f"unknown built-in table {p.table!r}; available: 'builtin:heatmap_example'")
        data, col_ann, row_ann = heatmap_example()
    else:
        data, col_ann = _read_csv(p.table, "table"), None
    if p.table_annotations is not None:
        extra = _read_csv(p.table_annotations, "table_annotations")
        extra.index = extra.index.astype(str)
        if col_ann is not None:  # the example's own annotations, then the file's
            extra = col_ann.join(
                extra.reindex([str(c) for c in col_ann.index]).set_axis(col_ann.index), rsuffix="_file"
            )
        col_ann = extra
    return data, col_ann, row_ann


def run(adata, p: HeatmapParams, ctx) -> None:
    """One clustered heatmap: figure ``{name}``; tables ``{name}_matrix`` (scaled, as drawn),
    ``{name}_row_linkage`` / ``{name}_col_linkage``, ``{name}_row_order`` / ``{name}_col_order``
    (leaf orders), ``{name}_row_groups``, ``{name}_stability`` and ``{name}_dropped`` (when any).
    ``groupby`` unset: the first clustering made in this run."""
    kw = p.model_dump(exclude={"table", "table_annotations"})
    if p.source != "table" and kw["groupby"] is None:
        made = ctx.all_clusterings()
        if not made:
            raise ConfigError(f"heatmap {p.name!r}: set groupby (no clustering was made in this run)")
        kw["groupby"] = made[0]
        logger.info("heatmap %s: groupby = %s (the first clustering of this run)", p.name, made[0])

    def args(func) -> dict[str, Any]:
        names = inspect.signature(func).parameters
        return {k: v for k, v in kw.items() if k in names}

    table, col_ann, row_ann = _table(p)
    inp = tl.heatmap_matrix(
        adata if p.source != "table" else None, table=table, table_annotations=col_ann, **args(tl.heatmap_matrix)
    )
    if row_ann is not None:
        inp.row_annotations = row_ann
    res = tl.cluster_heatmap(inp.data, **args(tl.cluster_heatmap))
    fig = pl.clustered_heatmap(
        res,
        row_annotations=inp.row_annotations,
        col_annotations=inp.col_annotations,
        title=p.name,
        **args(pl.clustered_heatmap),
    )
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
    name="heatmap",
    params=HeatmapParams,
    run=run,
    repeat="list",
    reads=(Ref("groupby", "obs"), Ref("annotations", "obs")),
    description="clustered heatmaps with dendrograms and annotation bars",
    obsm_reads="declared",
)
