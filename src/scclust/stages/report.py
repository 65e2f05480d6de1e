"""``report``: one self-contained HTML page (:func:`scclust.report.write_report`), written last."""

from __future__ import annotations

from pydantic import Field

from ._base import Params, Stage


class ReportParams(Params):
    """The HTML report (:func:`scclust.report.write_report`); written after every other output."""

    title: str = Field("scclust report", description="the report's title")
    max_rows: int = Field(50, ge=1, description="rows shown per table (the CSV files hold all of them)")


def run(adata, p: ReportParams, ctx) -> None:
    """Reserve ``report.html``; the runner writes it once every other file (clustered.h5ad, the
    label table) exists, just before manifest.json, so the page lists them all."""
    ctx.record(ctx.outdir / "report.html")


def write(outdir, manifest, p: ReportParams) -> None:
    from ..report import write_report

    write_report(outdir, manifest, **p.model_dump())


STAGE = Stage(name="report", params=ReportParams, run=run, finish=write, description="the HTML report (always last)")
