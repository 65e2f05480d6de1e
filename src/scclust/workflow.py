"""Run the stages of a validated :class:`~scclust.config.WorkflowConfig` in one process.

Each config section maps to one stage function in :data:`STAGES`, which calls the public
``pp`` / ``tl`` / ``pl`` function of the same name with the section's parameters and writes its
figures and tables through the :class:`RunContext`. Every file is written atomically; the input is
only read. ``manifest.json`` records the resolved config, package versions, the input
fingerprint, wall time and peak memory per stage and every file written.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from anndata import AnnData

from . import pl, pp, tl
from ._errors import ConfigError
from ._io import atomic_path, package_versions, read_input, write_h5ad, write_text
from .config import STAGE_ORDER, WorkflowConfig

logger = logging.getLogger(__name__)

__all__ = ["run", "RunContext", "STAGES"]


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


def _stage_leiden(adata: AnnData, p, ctx: RunContext) -> None:
    tl.leiden(adata, **p.model_dump())
    info = adata.uns[p.key_added]["clusterings"]
    ctx.add_clusterings(p.key_added, list(info))
    ctx.save_table(pd.DataFrame.from_dict(info, orient="index").rename_axis("key"), f"{p.key_added}_summary")


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


#: config section -> stage function(adata, params, ctx) -> new AnnData or None
STAGES: dict[str, Callable[[AnnData, Any, RunContext], AnnData | None]] = {
    "prepare": _stage_prepare,
    "neighbors": _stage_neighbors,
    "leiden": _stage_leiden,
    "embedding": _stage_embedding,
}


# ------------------------------------------------------------------------------------------ runner
class _PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 20 ms)."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> _PeakRSS:
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

    say(f"reading {cfg.input}")
    with _PeakRSS() as mem:
        t0 = time.perf_counter()
        adata, fingerprint = read_input(cfg.input)
    records = [{"stage": "read", "seconds": round(time.perf_counter() - t0, 3), "peak_rss_mb": round(mem.peak / 2**20, 1)}]
    say(f"input: {adata.n_obs} cells x {adata.n_vars} genes")

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
    manifest["wall_seconds"] = round(time.perf_counter() - t_start, 3)
    write_text(outdir / "manifest.json", json.dumps(manifest, indent=2, default=str) + os.linesep)
    say(f"done in {manifest['wall_seconds']:.1f}s; outputs in {outdir}")
    return adata, manifest
