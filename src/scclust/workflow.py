"""Run the stages of a validated :class:`~scclust.config.WorkflowConfig` in one process.

Each config section maps to one stage function in :data:`STAGES`, which calls the public
``pp`` / ``tl`` / ``pl`` function of the same name with the section's parameters and writes its
figures and tables through the :class:`RunContext`. Every file is written atomically; the input is
only read. ``manifest.json`` records the resolved config, package versions, the input
fingerprint, wall time and peak memory per stage and every file written.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import pandas as pd
from anndata import AnnData

from . import pl, pp, tl
from ._errors import ConfigError, MissingKeyError, choices
from ._io import atomic_path, package_versions, read_input, write_h5ad, write_text
from .config import WorkflowConfig
from .tl._leiden import format_resolution

logger = logging.getLogger(__name__)

__all__ = ["STAGES", "RunContext", "run"]


@dataclass
class RunContext:
    """What a stage needs besides the AnnData: where to write, and what earlier stages made."""

    cfg: WorkflowConfig
    outdir: Path
    #: clustering keys in ``.obs`` made by this run, grouped by the stage entry that made them
    clusterings: dict[str, list[str]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    stage: str = ""

    def save_figure(self, fig, name: str) -> list[Path]:
        """Write ``figures/{name}.{fmt}`` for every configured format; close the figure."""
        paths = []
        for fmt in self.cfg.figures.formats:
            path = self.outdir / "figures" / f"{name}.{fmt}"
            meta = {"Software": None} if fmt == "png" else {"Creator": None, "CreationDate": None} if fmt == "pdf" else {"Date": None}
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=self.cfg.figures.dpi, bbox_inches="tight", metadata=meta)
            paths.append(self._record(path))
        return paths

    def save_table(self, df: pd.DataFrame, name: str, *, index: bool = True) -> Path:
        """Write ``tables/{name}.csv`` (fixed float format, so reruns are byte-identical)."""
        path = self.outdir / "tables" / f"{name}.csv"
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=index, float_format="%.6g")
        return self._record(path)

    def add_clusterings(self, group: str, keys: list[str]) -> None:
        self.clusterings.setdefault(group, []).extend(keys)

    def all_clusterings(self) -> list[str]:
        return [k for keys in self.clusterings.values() for k in keys]

    def _record(self, path: Path) -> Path:
        rel = str(path.relative_to(self.outdir))
        if rel not in self.files:
            self.files.append(rel)
        return path


# ------------------------------------------------------------------------------------------ stages
def _stage_prepare(adata: AnnData, p, ctx: RunContext) -> AnnData:
    return pp.prepare(adata, **p.model_dump())


def _stage_neighbors(adata: AnnData, p, ctx: RunContext) -> None:
    pp.neighbors(adata, **p.model_dump())
    if ctx.cfg.figures.graph_block:
        ctx.save_figure(pl.graph_block(adata, [p.key_added], n_cells=ctx.cfg.figures.graph_block), f"graph_{p.key_added}")


def _clustering_stage(func: Callable[..., AnnData | None]) -> Callable[[AnnData, Any, RunContext], None]:
    """A stage that runs a clustering function, records its label keys and writes its summary table
    (``.uns[key_added]["clusterings"]``: clusters per key, plus modularity / inertia / cut)."""

    def stage(adata: AnnData, p, ctx: RunContext) -> None:
        func(adata, **p.model_dump())
        info = adata.uns[p.key_added]["clusterings"]
        ctx.add_clusterings(p.key_added, list(info))
        ctx.save_table(pd.DataFrame.from_dict(info, orient="index").rename_axis("key"), f"{p.key_added}_summary")

    stage.__name__ = f"_stage_{func.__name__}"
    return stage


_stage_leiden = _clustering_stage(tl.leiden)
_stage_kmeans = _clustering_stage(tl.kmeans)
_stage_hclust = _clustering_stage(tl.hclust)


def _stage_compare(adata: AnnData, p, ctx: RunContext) -> None:
    """ARI / NMI tables and heatmap; contingency tables vs the reference and between consecutive
    clusterings of one stage entry (e.g. leiden_0.4 vs leiden_0.6)."""
    keys = p.keys if p.keys is not None else (ctx.all_clusterings() or None)
    res = tl.compare(adata, keys=keys, reference=p.reference)
    ctx.save_table(res["ari"], "ari")
    ctx.save_table(res["nmi"], "nmi")
    ctx.save_table(res["summary"], "compare_summary")
    compared = [k for k in res["ari"].index if k != p.reference]
    pairs = [(k, p.reference) for k in compared] if p.reference is not None else []
    groups = ctx.clusterings if ctx.clusterings else {"selected": compared}
    trees = {}
    for group, keys in groups.items():
        members = list(dict.fromkeys(k for k in keys if k in compared))  # two entries may share a key_added
        pairs += list(itertools.pairwise(members))
        if len(members) >= 2:
            trees[group] = members
    for a, b in dict.fromkeys(pairs):
        ctx.save_table(tl.contingency(adata, a, b), f"contingency_{a}_vs_{b}")
    ctx.save_figure(pl.compare(adata, keys=compared, reference=p.reference), "compare")
    for group, members in trees.items():  # a clustering tree per series (resolutions, k, tree cuts)
        ctx.save_table(tl.cluster_tree(adata, members), f"clustree_{group}", index=False)
        ctx.save_figure(pl.clustree(adata, members), f"clustree_{group}")


def _stage_embedding(adata: AnnData, p, ctx: RunContext) -> None:
    basis = p.basis.removeprefix("X_")
    if p.groups is not None:
        panels = {"selected": p.groups}
    else:
        panels = dict(ctx.clusterings)
        if not panels:
            logger.warning("embedding: no clustering made in this run and no 'groups' given")
    for group, keys in panels.items():
        fig = pl.embedding(adata, basis=p.basis, color=keys, ncols=p.ncols, use_raw=p.use_raw)
        ctx.save_figure(fig, f"{basis}_{group}")
    if p.genes:
        fig = pl.embedding(adata, basis=p.basis, color=p.genes, ncols=p.ncols, use_raw=p.use_raw)
        ctx.save_figure(fig, f"{basis}_genes")


def _groups(stage: str, groupby: list[str] | None, ctx: RunContext) -> list[str]:
    """The clusterings a per-clustering stage works on: those given, else all made in this run."""
    if groupby is not None:
        return list(groupby)
    keys = ctx.all_clusterings()
    if not keys:
        logger.warning("%s: no clustering made in this run and no 'groupby' given; nothing to do", stage)
    return keys


def _stage_relationships(adata: AnnData, p, ctx: RunContext) -> None:
    """Per clustering: dendrogram (stored in .uns) and its figure, marker dot plot in dendrogram
    order, and the mean expression of the genes per cluster (same order)."""
    from ._checks import check_genes
    from .tl._dendrogram import _use_raw

    for g in _groups("relationships", p.groupby, ctx):
        tl.dendrogram(adata, groupby=g, use_rep=p.use_rep, n_pcs=p.n_pcs, cor_method=p.cor_method,
                      linkage_method=p.linkage_method, optimal_ordering=p.optimal_ordering)
        ctx.save_figure(pl.dendrogram(adata, groupby=g), f"dendrogram_{g}")
        var_names = adata.raw.var_names if _use_raw(adata, p.use_raw) else adata.var_names
        present, missing = check_genes(var_names, p.genes)
        if missing:
            logger.warning("relationships: gene(s) not in the data, left out of the dot plot and table: %s",
                           ", ".join(missing))
        if not present:
            logger.warning("relationships: none of the genes is in the data; no dot plot for %s", g)
            continue
        ctx.save_figure(pl.dotplot(adata, groupby=g, genes=present, use_raw=p.use_raw), f"dotplot_{g}")
        order = [str(c) for c in adata.uns[f"dendrogram_{g}"]["categories_ordered"]]
        means = tl.cluster_means(adata, groupby=g, genes=present, use_raw=p.use_raw)
        means.index = means.index.astype(str)
        ctx.save_table(means.loc[order], f"cluster_means_{g}")


def _stage_composition(adata: AnnData, p, ctx: RunContext) -> None:
    """Per clustering and ``by`` column: a long table (count, fraction within the cluster,
    fraction within the ``by`` value), stacked bars both ways; per clustering the one-sample
    diagnostics. ``by`` columns missing from .obs are skipped with a warning unless set explicitly."""
    from ._errors import MissingKeyError, choices

    by = [b for b in p.by if b in adata.obs.columns]
    absent = [b for b in p.by if b not in adata.obs.columns]
    if absent:
        if "by" in p.model_fields_set:
            raise MissingKeyError(f"composition.by {choices(absent)} not in .obs; available: {choices(adata.obs.columns)}")
        logger.warning("composition: default 'by' column(s) %s not in .obs; skipped", ", ".join(absent))
    for g in _groups("composition", p.groupby, ctx):
        for b in by:
            within_g = tl.proportions(adata, groupby=g, by=b, normalize="index")
            within_b = tl.proportions(adata, groupby=g, by=b, normalize="columns")
            table = within_g.rename(columns={"fraction": f"fraction_within_{g}"})
            table[f"fraction_within_{b}"] = within_b["fraction"].to_numpy()
            ctx.save_table(table, f"composition_{g}_by_{b}", index=False)
            ctx.save_figure(pl.proportions(adata, groupby=g, by=b), f"composition_{g}_by_{b}")
            ctx.save_figure(pl.proportions(adata, groupby=b, by=g), f"composition_{b}_by_{g}")
        if p.sample_key in adata.obs.columns:
            diag = tl.composition_diagnostics(adata, groupby=g, sample_key=p.sample_key, max_share=p.max_share,
                                              alpha=p.alpha)
            ctx.save_table(diag, f"composition_diagnostics_{g}")
        else:
            logger.warning("composition: sample_key %r not in .obs; no one-sample diagnostics", p.sample_key)


def _stage_qc(adata: AnnData, p, ctx: RunContext) -> None:
    """Per clustering: QC medians with flags (table) and violins (figure)."""
    for g in _groups("qc", p.groupby, ctx):
        ctx.save_table(tl.qc_summary(adata, groupby=g, keys=p.keys, n_mads=p.n_mads), f"qc_{g}")
        ctx.save_figure(pl.qc_violin(adata, groupby=g, keys=p.keys, n_mads=p.n_mads), f"qc_violin_{g}")


def _stage_heatmap(adata: AnnData, p, ctx: RunContext) -> None:
    """One clustered heatmap: figure ``{name}``; tables ``{name}_matrix`` (scaled, as drawn),
    ``{name}_row_linkage`` / ``{name}_col_linkage``, ``{name}_row_order`` / ``{name}_col_order``
    (leaf orders), ``{name}_row_groups``, ``{name}_stability`` and ``{name}_dropped`` (when any).
    ``groupby`` unset: the first clustering made in this run."""
    import inspect

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


def _stage_report(adata: AnnData, p, ctx: RunContext) -> None:
    """Reserve ``report.html``; :func:`run` writes it once every other file (clustered.h5ad, the
    label table) exists, just before manifest.json, so the page lists them all."""
    ctx._record(ctx.outdir / "report.html")


def _stage_subcluster(adata: AnnData, params: dict, ctx: RunContext) -> None:
    """Each named subclustering: subset h5ad, figures, tables; labels written back into the parent."""
    if not params:
        logger.warning("subcluster: no subclustering configured (add e.g. subcluster: {tnk: {}})")
        return
    for name, p in params.items():
        # check before the (expensive) re-processing, not after it
        planned = [f"{p.key_added}_{format_resolution(r)}" for r in p.resolutions]
        clash = [k for k in planned if k in ctx.all_clusterings()]
        if clash:
            raise ConfigError(f"subcluster {name!r}: key(s) {clash} were made earlier in this run; set a distinct key_added")
        sub, rep = tl.subcluster(adata, name=name, **p.model_dump())
        keys = tl.transfer_subclusters(adata, subset=sub, name=name)
        ctx.add_clusterings(f"subcluster_{name}", keys)
        path = ctx.outdir / "subclusters" / f"{name}.h5ad"
        write_h5ad(sub, path)
        ctx._record(path)
        for table, df in rep.tables().items():
            ctx.save_table(df, f"subcluster_{name}_{table}")
        for key in keys:
            parent_basis = "X_umap_harmony" if "X_umap_harmony" in adata.obsm else "X_umap"
            fig = pl.subcluster_overview(sub, parent=adata, key=key, parent_basis=parent_basis)
            ctx.save_figure(fig, f"subcluster_{name}_{key}")
        if sub.uns["subcluster"]["plot_genes"]:
            ctx.save_figure(pl.subcluster_markers(sub), f"subcluster_{name}_markers")


#: config section -> stage function(adata, params, ctx) -> new AnnData or None
STAGES: dict[str, Callable[[AnnData, Any, RunContext], AnnData | None]] = {
    "prepare": _stage_prepare,
    "neighbors": _stage_neighbors,
    "leiden": _stage_leiden,
    "kmeans": _stage_kmeans,
    "hclust": _stage_hclust,
    "compare": _stage_compare,
    "relationships": _stage_relationships,
    "embedding": _stage_embedding,
    "composition": _stage_composition,
    "qc": _stage_qc,
    "heatmap": _stage_heatmap,
    "subcluster": _stage_subcluster,
    "report": _stage_report,
}


# ------------------------------------------------------------------------------------------ runner
class _PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 20 ms)."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> Self:
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def run(cfg: WorkflowConfig, *, progress: Callable[[str], None] | None = None) -> tuple[AnnData, dict[str, Any]]:
    """Run every stage listed in ``cfg.stages`` and write the outputs to ``cfg.outdir``.

    Returns the clustered AnnData and the manifest (also written to ``manifest.json``).
    """
    say = progress or logger.info
    t_start = time.perf_counter()
    outdir = Path(cfg.outdir)
    if not cfg.input.startswith("builtin:") and outdir.resolve() == Path(cfg.input).resolve().parent and \
            Path(cfg.input).name == "clustered.h5ad":
        raise ConfigError(f"outdir {cfg.outdir!r} would overwrite the input {cfg.input!r}; choose another outdir")
    outdir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(cfg=cfg, outdir=outdir)

    with pp.background_umap(cfg.background_umap and _computes_umap(cfg)):
        return _run(cfg, ctx, say, t_start)


#: config fields that name ``.obs`` / ``.obsm`` keys, checked before any stage runs: (section, field, kind).
#: "obs": in the input's .obs or made by a clustering stage of this run (or by prepare's QC metrics);
#: "rep": an .obsm key (the input's or prepare's) or "X"; "basis": an .obsm key. Fields in EXPLICIT_ONLY are
#: checked only when set in the config (the stage skips missing defaults with a warning).
INPUT_KEYS = [
    ("prepare", "batch_key", "obs"),
    ("neighbors", "use_rep", "rep"),
    ("kmeans", "use_rep", "rep"),
    ("hclust", "use_rep", "rep"),
    ("relationships", "use_rep", "rep"),
    ("relationships", "groupby", "obs"),
    ("embedding", "basis", "basis"),
    ("embedding", "groups", "obs"),
    ("compare", "keys", "obs"),
    ("compare", "reference", "obs"),
    ("composition", "groupby", "obs"),
    ("composition", "by", "obs"),
    ("qc", "groupby", "obs"),
    ("subcluster", "groupby", "obs"),
    ("subcluster", "batch_key", "obs"),
    ("subcluster", "regress_out", "obs"),
    ("subcluster", "plot_parent_key", "obs"),
]
EXPLICIT_ONLY = {("composition", "by")}


def planned_obs_keys(cfg: WorkflowConfig) -> set[str]:
    """The label columns the clustering stages of ``cfg`` will write (their naming rules)."""
    keys: set[str] = set()
    if "leiden" in cfg.stages:
        keys |= {f"{p.key_added}_{format_resolution(r)}" for p in cfg.leiden for r in p.resolutions}
    if "kmeans" in cfg.stages:
        keys |= {f"{p.key_added}{k}" for p in cfg.kmeans for k in p.n_clusters}
    if "hclust" in cfg.stages:
        keys |= {f"{p.key_added}_{k}" for p in cfg.hclust for k in p.n_clusters}
        keys |= {f"{p.key_added}_h{h:g}" for p in cfg.hclust for h in p.heights}
    if "prepare" in cfg.stages:
        keys |= set(pp.QC_COLUMNS)
    return keys


def check_input_keys(adata: AnnData, cfg: WorkflowConfig) -> None:
    """Before any stage runs: every ``.obs`` / ``.obsm`` key the config names (:data:`INPUT_KEYS`) is
    in the input or made by an earlier stage of the run, so a mismatch fails in a second with all
    problems in one line, not after minutes of clustering."""
    obsm = [*adata.obsm.keys(), *(pp.PREPARE_OBSM if "prepare" in cfg.stages else ())]
    have = {"obs": [*adata.obs.columns, *sorted(planned_obs_keys(cfg) - set(adata.obs.columns))],
            "rep": [*obsm, "X"], "basis": obsm}
    problems = []
    for section, name, kind in INPUT_KEYS:
        if section not in cfg.stages:
            continue
        params = getattr(cfg, section)
        entries = dict(params) if isinstance(params, dict) else dict(enumerate(params if isinstance(params, list) else [params]))
        for label, entry in entries.items():
            if (section, name) in EXPLICIT_ONLY and name not in entry.model_fields_set:
                continue
            value = getattr(entry, name)
            wanted = [] if value is None else [value] if isinstance(value, str) else list(value)
            missing = [k for k in wanted if k not in have[kind]]
            if missing:
                where = f"{section}.{label}.{name}" if len(entries) > 1 or isinstance(params, dict) else f"{section}.{name}"
                slot = ".obs" if kind == "obs" else ".obsm"
                problems.append(f"{where} {', '.join(map(repr, missing))} not in {slot} (available: {choices(have[kind])})")
    if problems:
        raise MissingKeyError("the input lacks keys the config names: " + "; ".join(dict.fromkeys(problems)))


def _computes_umap(cfg: WorkflowConfig) -> bool:
    return cfg.input.startswith("builtin:simulate") or any(s in cfg.stages for s in ("prepare", "subcluster"))


def _run(cfg: WorkflowConfig, ctx: RunContext, say: Callable[[str], None], t_start: float) -> tuple[AnnData, dict[str, Any]]:
    outdir = ctx.outdir
    say(f"reading {cfg.input}")
    with _PeakRSS() as mem:
        t0 = time.perf_counter()
        adata, fingerprint = read_input(cfg.input)
    records = [{"stage": "read", "seconds": round(time.perf_counter() - t0, 3), "peak_rss_mb": round(mem.peak / 2**20, 1)}]
    say(f"input: {adata.n_obs} cells x {adata.n_vars} genes")
    check_input_keys(adata, cfg)

    n = len(cfg.stages)
    for i, name in enumerate(cfg.stages, 1):
        section = getattr(cfg, name)
        entries = section if isinstance(section, list) else [section]
        for j, params in enumerate(entries):
            label = name if len(entries) == 1 else f"{name}[{j}]"
            say(f"[{i}/{n}] {label} ...")
            ctx.stage = label
            n_files = len(ctx.files)
            with _PeakRSS() as mem:
                t0 = time.perf_counter()
                result = STAGES[name](adata, params, ctx)
                seconds = time.perf_counter() - t0
            if result is not None:
                adata = result
            records.append({
                "stage": label, "seconds": round(seconds, 3), "peak_rss_mb": round(mem.peak / 2**20, 1),
                "outputs": ctx.files[n_files:],
            })
            say(f"[{i}/{n}] {label} done in {seconds:.1f}s")

    if ctx.all_clusterings():
        labels = adata.obs[ctx.all_clusterings()]
        ctx.save_table(labels.rename_axis("cell"), "cluster_labels")
    manifest: dict[str, Any] = {
        "scclust_manifest": 1,
        "config": cfg.model_dump(mode="json"),
        "versions": package_versions(),
        "input": fingerprint,
        "n_obs": adata.n_obs,
        "n_vars": adata.n_vars,
        "clusterings": ctx.clusterings,
        "stages": records,
    }
    adata.uns["scclust"] = {"config_json": json.dumps(manifest["config"]), "versions_json": json.dumps(manifest["versions"])}
    if cfg.write_h5ad:
        t0 = time.perf_counter()
        write_h5ad(adata, outdir / "clustered.h5ad")
        ctx._record(outdir / "clustered.h5ad")
        records.append({"stage": "write_h5ad", "seconds": round(time.perf_counter() - t0, 3)})
    manifest["files"] = sorted(ctx.files)
    if "report" in cfg.stages:
        from .report import write_report

        t0 = time.perf_counter()
        write_report(outdir, manifest, **cfg.report.model_dump())
        records.append({"stage": "write_report", "seconds": round(time.perf_counter() - t0, 3)})
    manifest["wall_seconds"] = round(time.perf_counter() - t_start, 3)
    write_text(outdir / "manifest.json", json.dumps(manifest, indent=2, default=str) + os.linesep)
    say(f"done in {manifest['wall_seconds']:.1f}s; outputs in {outdir}")
    return adata, manifest
