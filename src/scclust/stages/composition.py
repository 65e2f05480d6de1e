"""``composition``: cluster composition tables and stacked bars (:func:`scclust.tl.composition`,
:func:`scclust.pl.proportions`) and one-sample flags (:func:`scclust.tl.composition_diagnostics`)."""

from __future__ import annotations

import logging

from pydantic import Field

from .. import tl
from .._params import params_model
from .._types import KeyList
from ._base import Ref, Stage

logger = logging.getLogger(__name__)


#: the one-sample flags' options (:func:`scclust.tl.composition_diagnostics`), and what the tables break down
CompositionParams = params_model(
    tl.composition_diagnostics,
    name="CompositionParams",
    exclude=("groupby", "counts"),
    fields={
        "groupby": (
            KeyList | None,
            Field(None, description="clusterings to draw; null: every clustering made in this run"),
        ),
        "by": (
            KeyList,
            Field(
                ["sample", "type"],
                min_length=1,
                description=".obs columns to break the clusters "
                "down by (a table and stacked bars each way); default columns absent from the data "
                "are skipped",
            ),
        ),
    },
    doc="Composition tables and stacked bars, and one-sample cluster flags.",
)


def run(adata, p: CompositionParams, ctx) -> None:
    """Per clustering and ``by`` column: a long table (count, fraction within the cluster,
    fraction within the ``by`` value), stacked bars both ways; per clustering the one-sample
    diagnostics (skipped, with a log line, when there are fewer than two samples). Default ``by``
    columns missing from .obs are skipped with a warning (set explicitly, they are checked before
    the run)."""
    from .. import pl, tl

    by = [b for b in p.by if b in adata.obs.columns]
    for col in [*by, *([p.sample_key] if p.sample_key in adata.obs.columns else [])]:
        n_na = int(adata.obs[col].isna().sum())
        if n_na:
            logger.warning(
                "composition: %d cell(s) have no %r value; they are left out of its tables and bars", n_na, col
            )
    absent = [b for b in p.by if b not in adata.obs.columns]
    if absent:
        logger.warning("composition: default 'by' column(s) %s not in .obs; skipped", ", ".join(absent))
    n_samples = adata.obs[p.sample_key].nunique() if p.sample_key in adata.obs.columns else 0
    if p.sample_key not in adata.obs.columns:
        logger.warning("composition: sample_key %r not in .obs; no one-sample diagnostics", p.sample_key)
    elif n_samples < 2:
        logger.info(
            "composition: %r has %d sample; one-sample diagnostics skipped (they compare samples)",
            p.sample_key,
            n_samples,
        )
    for g in ctx.groups("composition", p.groupby):
        comps = {}
        for b in by:
            comp = comps[b] = tl.composition(adata, groupby=g, by=b)
            ctx.save_table(comp.table(), f"composition_{g}_by_{b}", index=False)
            ctx.save_figure(pl.proportions(adata, groupby=g, by=b, table=comp.proportions()), f"composition_{g}_by_{b}")
            ctx.save_figure(
                pl.proportions(adata, groupby=b, by=g, table=comp.proportions(transpose=True)),
                f"composition_{b}_by_{g}",
            )
        if n_samples >= 2:
            diag = tl.composition_diagnostics(
                adata,
                groupby=g,
                sample_key=p.sample_key,
                max_share=p.max_share,
                alpha=p.alpha,
                counts=comps.get(p.sample_key),
            )
            ctx.save_table(diag, f"composition_diagnostics_{g}")


STAGE = Stage(
    name="composition",
    params=CompositionParams,
    run=run,
    reads=(Ref("groupby", "obs"), Ref("by", "obs", explicit_only=True)),
    description="cluster proportions per sample and condition",
    obsm_reads="declared",
)
