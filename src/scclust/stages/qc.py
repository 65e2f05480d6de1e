"""``qc``: QC medians per cluster with flags (:func:`scclust.tl.qc_summary`) and violins
(:func:`scclust.pl.qc_violin`)."""

from __future__ import annotations

from pydantic import Field

from .. import tl
from .._params import params_model
from .._types import KeyList
from ._base import Ref, Stage

#: the QC summary's options (:func:`scclust.tl.qc_summary`; the violins use the same), and the clusterings
QCParams = params_model(
    tl.qc_summary,
    name="QCParams",
    exclude=("groupby",),
    fields={
        "groupby": (
            KeyList | None,
            Field(None, description="clusterings to draw; null: every clustering made in this run"),
        ),
    },
    doc="QC violins per cluster and medians with flags.",
)


def run(adata, p: QCParams, ctx) -> None:
    """Per clustering: QC medians with flags (table) and violins (figure)."""
    from .. import pl, tl

    for g in ctx.groups("qc", p.groupby):
        summary = tl.qc_summary(adata, groupby=g, keys=p.keys, n_mads=p.n_mads)
        ctx.save_table(summary, f"qc_{g}")
        ctx.save_figure(pl.qc_violin(adata, groupby=g, keys=p.keys, n_mads=p.n_mads, summary=summary), f"qc_violin_{g}")


STAGE = Stage(
    name="qc",
    params=QCParams,
    run=run,
    reads=(Ref("groupby", "obs"),),
    description="QC metrics per cluster: violins, and clusters that differ in QC metrics flagged",
    obsm_reads="declared",
)
