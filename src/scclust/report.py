"""The HTML report: one self-contained page with every figure and table of a run.

The page opens from disk without a server: PNG (or SVG) figures are embedded as base64 data URIs,
CSV tables are rendered as HTML (long ones truncated, with a link to the CSV), and the resolved
config, package versions, per-stage timings and the flags raised by the diagnostics are included.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ._io import write_text

logger = logging.getLogger(__name__)

__all__ = ["write_report"]

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#0072B2;color:white;padding:14px 24px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;font-size:13px;opacity:.9}
nav{padding:8px 24px;background:#eef3f8;font-size:13px;border-bottom:1px solid #d0dbe6}nav a{margin-right:12px}
main{padding:8px 24px 40px;max-width:1400px}
section{background:white;border:1px solid #e2e2e2;border-radius:6px;margin:16px 0;padding:8px 16px}
h2{font-size:18px;border-bottom:1px solid #eee;padding-bottom:4px}h3{font-size:14px;margin:18px 0 6px}
figure{margin:10px 0 18px}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#555}
table{border-collapse:collapse;font-size:12px;margin:6px 0}
th,td{border:1px solid #ddd;padding:2px 6px;text-align:right}th{background:#f3f3f3}
tr.flag td{background:#fde2d2}
.tablewrap{overflow-x:auto;max-width:100%}
.note{font-size:12px;color:#666}
.flags{background:#fff4e5;border-color:#E69F00}.ok{background:#eaf6ee;border-color:#009E73}
pre{background:#f6f6f6;padding:8px;font-size:12px;overflow-x:auto}
ul.files{font-size:12px;columns:2}
details{margin:6px 0}summary{cursor:pointer;font-size:13px;color:#0072B2}
.overview{display:flex;flex-wrap:wrap;gap:12px}.overview figure{flex:1 1 560px;margin:4px 0}
"""

#: what a flag means, in plain words (flag column -> sentence)
_FLAG_TEXT = {
    "flag_one_sample": "most of its cells come from one sample (a batch effect or a sample-specific state, not "
                       "necessarily a cell type)",
    "flag_qc": "it differs in QC metrics from the rest",
    "flag_doublet_like": "its cells hold about twice the genes and counts of a typical cell (doublets, or large cells: "
                         "markers of two cell types point to doublets)",
    "flag_no_marker": "no gene passes its marker filters (expressed in most of its cells, few others, fold change "
                      "above the bound): likely an over-split; compare it with its nearest cluster or lower the resolution",
}
#: section titles of stages whose name alone does not say what their section answers
_TITLES = {"markers": "What defines each cluster", "annotate": "Cell types from marker sets"}
#: figures shown first, in this order: file stems that start with these
_OVERVIEW = ("umap", "dotplot_", "compare", "qc_violin_")


def write_report(
    outdir: str | Path,
    manifest: Mapping[str, Any],
    *,
    title: str = "scclust report",
    max_rows: int = 50,
    path: str | Path | None = None,
) -> Path:
    """Write ``report.html`` for a run from its manifest and the files in ``outdir``.

    Parameters
    ----------
    outdir
        The run's output directory (figures and tables are read from it).
    manifest
        The run's manifest (:func:`scclust.workflow.run`): ``config``, ``versions``, ``input``,
        ``stages`` (with each stage's ``outputs``), ``files`` and optionally ``wall_seconds``.
    title
        Page title.
    max_rows
        Tables longer than this are cut to their first ``max_rows`` rows, with a note and a link
        to the full CSV.
    path
        Where to write; default ``outdir / "report.html"``.

    Returns
    -------
    The path written.
    """
    outdir = Path(outdir)
    path = Path(path) if path is not None else outdir / "report.html"
    files = list(manifest.get("files", []))
    stages = list(manifest.get("stages", []))
    placed: set[str] = set()
    flags: list[tuple[str, pd.DataFrame]] = []
    sections = []
    for rec in stages:
        outputs = [f for f in rec.get("outputs", []) if f in files or (outdir / f).is_file()]
        body = _render_files(outdir, outputs, max_rows, flags)
        placed.update(outputs)
        if body:
            sections.append((rec["stage"], body))
    rest = [f for f in files if f not in placed and f != path.name and not f.endswith((".h5ad", ".json"))]
    body = _render_files(outdir, rest, max_rows, flags)
    if body:
        sections.append(("other outputs", body))

    cfg = manifest.get("config", {})
    inp = manifest.get("input", {})
    genes = manifest.get("n_genes", manifest.get("n_vars", "?"))
    in_x = f" ({manifest['n_vars']} in .X)" if manifest.get("n_genes") not in (None, manifest.get("n_vars")) else ""
    sub = (f"input {html.escape(str(inp.get('source', cfg.get('input', '?'))))} &middot; "
           f"{manifest.get('n_obs', '?')} cells &times; {genes} genes{in_x} &middot; "
           f"scclust {html.escape(str(manifest.get('versions', {}).get('scclust', '?')))}")
    made = [f for rec in stages for f in rec.get("outputs", []) if f.startswith("figures/")]  # in the order made
    overview = _overview(outdir, made + [f for f in files if f.startswith("figures/") and f not in made])
    nav = (['<a href="#overview">overview</a>'] if overview else []) + ['<a href="#flags">flags</a>']
    nav += [f'<a href="#s-{_slug(n)}">{html.escape(n)}</a>' for n, _ in sections]
    nav += ['<a href="#files">files</a>', '<a href="#config">config</a>', '<a href="#versions">versions</a>',
            '<a href="#timings">timings</a>']
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{html.escape(title)}</h1><p>{sub}</p></header>",
        f"<nav>{' '.join(nav)}</nav><main>",
        _recommendations(outdir, files),
        overview,
        _flags_section(flags),
    ]
    for name, body in sections:
        title = _TITLES.get(name.split("[")[0], name)
        parts.append(f'<section id="s-{_slug(name)}"><h2>{html.escape(title)}</h2>{body}</section>')
    all_files = sorted(set(files) | {path.name if path.parent == outdir else str(path), "manifest.json"})
    items = "".join(f'<li><a href="{html.escape(f)}">{html.escape(f)}</a></li>' for f in all_files)
    parts.append(f'<section id="files"><h2>Files written by this run ({len(all_files)})</h2><ul class="files">{items}</ul></section>')
    parts.append(f'<section id="config"><h2>Resolved config</h2><pre>{html.escape(yaml.safe_dump(cfg, sort_keys=False))}</pre></section>')
    vers = pd.DataFrame(sorted(manifest.get("versions", {}).items()), columns=["package", "version"])
    parts.append(f'<section id="versions"><h2>Versions</h2>{vers.to_html(index=False, border=0)}'
                 f'<p class="note">input sha256: {html.escape(str(inp.get("sha256", "?")))}</p></section>')
    timing = pd.DataFrame([{k: v for k, v in r.items() if k != "outputs"} for r in stages])
    wall = manifest.get("wall_seconds")
    note = f"<p class='note'>total wall time {wall:.1f} s</p>" if isinstance(wall, int | float) else \
        "<p class='note'>the total wall time and the time of writing this page are in manifest.json</p>"
    parts.append(f'<section id="timings"><h2>Per-stage timings</h2>{timing.to_html(index=False, border=0)}{note}</section>')
    parts.append("</main></body></html>")
    write_text(path, "\n".join(parts) + "\n")
    logger.info("report written to %s", path)
    return path


def _render_files(outdir: Path, files: list[str], max_rows: int, flags: list) -> str:
    """Figures (one per name: PNG preferred, else SVG, else links) and tables, in written order."""
    out = []
    figures: dict[str, list[str]] = {}
    for f in files:
        if f.startswith("figures/"):
            figures.setdefault(f.rsplit(".", 1)[0], []).append(f)
    done: set[str] = set()
    for f in files:
        p = outdir / f
        if f.startswith("figures/"):
            stem = f.rsplit(".", 1)[0]
            if stem in done:
                continue
            done.add(stem)
            out.append(_figure(outdir, figures[stem]))
        elif f.endswith(".csv"):
            out.append(_table(p, f, max_rows, flags))
        elif p.suffix in (".html", ".h5ad", ".json"):
            continue
        else:
            out.append(f'<p><a href="{html.escape(f)}">{html.escape(f)}</a></p>')
    return "\n".join(out)


def _figure(outdir: Path, variants: list[str]) -> str:
    by_ext = {v.rsplit(".", 1)[1]: v for v in variants}
    links = " ".join(f'<a href="{html.escape(v)}">{html.escape(v.rsplit(".", 1)[1])}</a>' for v in variants)
    name = html.escape(Path(variants[0]).stem)
    for ext, mime in (("png", "image/png"), ("svg", "image/svg+xml")):
        if ext in by_ext and (outdir / by_ext[ext]).is_file():
            data = base64.b64encode((outdir / by_ext[ext]).read_bytes()).decode("ascii")
            return (f'<figure><h3>{name}</h3><img alt="{name}" src="data:{mime};base64,{data}">'
                    f"<figcaption>{html.escape(by_ext[ext])} ({links})</figcaption></figure>")
    return f'<figure><h3>{name}</h3><figcaption>not embeddable; open: {links}</figcaption></figure>'


def _table(p: Path, rel: str, max_rows: int, flags: list) -> str:
    name = html.escape(p.stem)
    try:
        df = pd.read_csv(p, index_col=0)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        return f'<h3>{name}</h3><p class="note">could not read {html.escape(rel)}: {html.escape(str(err))}</p>'
    flag_cols = [c for c in df.columns if str(c).startswith("flag") and df[c].dtype == bool]
    flagged = df[flag_cols].any(axis=1) if flag_cols else pd.Series(False, index=df.index)
    if flagged.any():
        flags.append((rel, df.loc[flagged, flag_cols]))
    shown = df.head(max_rows)
    classes = ["flag" if f else "" for f in flagged.head(max_rows)]
    table = shown.to_html(border=0, float_format=lambda v: f"{v:.4g}", na_rep="")
    if flagged.any():  # mark flagged rows (pandas emits one <tr> per row after the header)
        head, _, body = table.partition("<tbody>")
        rows = body.split("<tr>")
        body = rows[0] + "".join(f'<tr class="{c}">' + r if c else "<tr>" + r for c, r in zip(classes, rows[1:], strict=False))
        table = head + "<tbody>" + body
    note = (f'<p class="note">showing the first {max_rows} of {len(df)} rows; full table: '
            f'<a href="{html.escape(rel)}">{html.escape(rel)}</a></p>') if len(df) > max_rows else \
        f'<p class="note"><a href="{html.escape(rel)}">{html.escape(rel)}</a></p>'
    flagged_note = f", {int(flagged.sum())} flagged" if flagged.any() else ""
    return (f'<details{" open" if flagged.any() else ""}><summary>table {name} ({len(df)} rows{flagged_note})</summary>'
            f'<div class="tablewrap">{table}</div>{note}</details>')


def _recommendations(outdir: Path, files: list[str]) -> str:
    """Tables named ``*_recommendation`` (the stability stage's stable resolutions / k with their
    evidence) open the page: what a reader should decide first."""
    tables = [f for f in files if f.endswith("_recommendation.csv") and (outdir / f).is_file()]
    if not tables:
        return ""
    body = []
    for f in tables:
        df = pd.read_csv(outdir / f)
        what = Path(f).stem.removesuffix("_recommendation").replace("_", " ")
        if df.empty:
            body.append(f"<p>{html.escape(what)}: no clustering met the stability criteria; see the stability "
                        "section for the scores.</p>")
        else:
            body.append(f"<h3>{html.escape(what)}</h3>" + df.to_html(index=False, border=0, float_format=lambda v: f"{v:.3g}"))
    return ('<section id="recommendation" class="ok"><h2>Recommended resolutions / k</h2><p>Clusterings that '
            "stay the same under other seeds and subsamples of cells (not applied to the labels; see "
            f"tl.stability).</p>{''.join(body)}</section>")


def _overview(outdir: Path, figures: list[str]) -> str:
    """The figures a reader looks at first (UMAPs, dot plot, agreement, QC), before any table."""
    chosen = []
    for prefix in _OVERVIEW:
        for f in figures:
            stem = Path(f).stem
            if f.endswith(".png") and stem.startswith(prefix) and f not in chosen and len(chosen) < 6:
                chosen.append(f)
    if not chosen:
        return ""
    body = "".join(_figure(outdir, [f]) for f in chosen)
    return f'<section id="overview"><h2>Overview</h2><div class="overview">{body}</div></section>'


def _flags_section(flags: list[tuple[str, pd.DataFrame]]) -> str:
    from .tl._qc import MITO_KEYS

    if not flags:
        return ('<section id="flags" class="ok"><h2>Flags</h2><p>No cluster was flagged by the composition '
                "(one-sample) or QC diagnostics.</p></section>")
    items = []
    for rel, df in flags:
        for idx, row in df.iterrows():
            raised = [str(c) for c, v in row.items() if v]
            words = [_FLAG_TEXT[c] for c in raised if c in _FLAG_TEXT and c != "flag_qc"]
            metrics = [c.removeprefix("flag_") for c in raised if c not in _FLAG_TEXT]
            mito = [m for m in metrics if m in MITO_KEYS]  # above the bound: a quality problem, not a cell size
            size = [m for m in metrics if m not in MITO_KEYS]
            if size:
                words.append(f"its median {', '.join(size)} differs from the rest (beyond the per-cell QC bound): "
                             "a small or large cell type, or low-quality cells if it has no markers of its own")
            if mito:
                words.append(f"its median {', '.join(mito)} is above the per-cell QC bound: most of its cells would fail "
                             "a mitochondrial filter (dying or broken cells)")
            what = "; ".join(words) or ", ".join(c.removeprefix("flag_") for c in raised)
            items.append(f"<li><b>{html.escape(Path(rel).stem)}</b>: cluster {html.escape(str(idx))} &mdash; "
                         f"{html.escape(what)}</li>")
    return (f'<section id="flags" class="flags"><h2>Flags ({len(items)})</h2><p>Clusters that stand out in the '
            f"diagnostics, to look at, not necessarily faults (rules in the docs of tl.composition_diagnostics and "
            f"tl.qc_summary); flagged rows are "
            f"highlighted in the tables below.</p><ul>{''.join(items)}</ul></section>")


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name).strip("-").lower()
