"""``qc``: QC medians per cluster with flags (:func:`scclust.tl.qc_summary`) and violins
(:func:`scclust.pl.qc_violin`)."""

from __future__ import annotations

from pydantic import Field

from .._types import KeyList
from ._base import Params, Ref, Stage


class QCParams(Params):
    """QC violins per cluster (:func:`scclust.pl.qc_violin`) and medians with flags (:func:`scclust.tl.qc_summary`)."""

    groupby: KeyList | None = Field(None, description="clusterings; None = every clustering made in this run")
    keys: KeyList | None = Field(None, description="QC .obs columns or aliases; None = n_genes_by_counts, total_counts, pct_counts_mt")
    n_mads: float = Field(3.0, gt=0)


def run(adata, p: QCParams, ctx) -> None:
    """Per clustering: QC medians with flags (table) and violins (figure)."""
    from .. import pl, tl

    for g in ctx.groups("qc", p.groupby):
        summary = tl.qc_summary(adata, groupby=g, keys=p.keys, n_mads=p.n_mads)
        ctx.save_table(summary, f"qc_{g}")
        ctx.save_figure(pl.qc_violin(adata, groupby=g, keys=p.keys, n_mads=p.n_mads, summary=summary), f"qc_violin_{g}")


STAGE = Stage(
    name="qc", params=QCParams, run=run,
    reads=(Ref("groupby", "obs"),),
    description="QC metrics per cluster: violins, and clusters that differ in QC metrics flagged",
    obsm_reads="declared",
)
