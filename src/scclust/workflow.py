"""Run the stages of a validated :class:`~scclust.config.WorkflowConfig` in one process.

The runner knows no stage by name: it reads each stage's declaration from
:data:`scclust.stages.REGISTRY` (parameters, run function, keys read and made). Before any stage
runs, :func:`preflight` checks every key and gene the config names against the input and the keys
earlier stages will make, and that no two stage entries make the same key; then each stage's
estimated peak memory against ``memory_limit`` (:func:`_check_memory`). Finished stages are
checkpointed in the output directory, so a failed or interrupted run resumes where it stopped.
Every file is written atomically; the input is only read. ``manifest.json`` records the resolved
config, package versions, the input fingerprint, wall time and peak memory per stage and every file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pandas as pd
from anndata import AnnData

from ._errors import ConfigError, InputError, MissingKeyError, OutputError, ResourceError, choices
from ._input import parse_input
from ._io import output_errors, package_versions, read_input, write_h5ad, write_text
from ._memory import high_water_mark
from .config import WorkflowConfig
from .stages import REGISTRY, Makes, RunContext

logger = logging.getLogger(__name__)

__all__ = ["RunContext", "preflight", "run"]

CHECKPOINT_DIR = ".scclust_checkpoint"
#: temporary files of :func:`scclust._io.atomic_path` (``.{name}.{random}.tmp{suffix}``)
_TMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")


# ------------------------------------------------------------------------------------------ pre-flight
@dataclass(frozen=True)
class Preflight:
    """What :func:`preflight` found: genes absent from the data (left out by every stage)."""

    missing_genes: frozenset[str]
    made: dict[str, str]
    #: every gene the config names (the out-of-core prepare keeps them in ``.raw``)
    named_genes: tuple[str, ...] = ()


def _values(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [g for genes in value.values() for g in genes]
    return list(value)


def _field(params: Any, path: str) -> Any:
    """The value of a (dotted: ``hvg.batch_key``) field of a stage entry."""
    for part in path.split("."):
        params = getattr(params, part) if params is not None else None
    return params


def _makes(name: str, label: str, params: Any) -> Makes:
    """The keys a stage entry makes (a named stage's entries get their name)."""
    stage = REGISTRY[name]
    if stage.makes is None:
        return Makes()
    return stage.makes(params, label.partition(".")[2]) if stage.repeat == "named" else stage.makes(params)


def _embedding_refs(name: str, params: Any) -> list[str]:
    """The ``.obsm`` keys a stage entry names in its ``rep`` / ``basis`` refs."""
    return [
        k for ref in REGISTRY[name].reads if ref.kind in ("rep", "basis") for k in _values(_field(params, ref.field))
    ]


def _graphs(adata: AnnData) -> list[str]:
    return [k for k, v in adata.uns.items() if isinstance(v, dict) and "connectivities_key" in v]


def preflight(adata: AnnData, cfg: WorkflowConfig) -> Preflight:
    """Check, before any stage runs, everything the config names (a second, not after minutes).

    - every ``.obs`` / ``.obsm`` key and graph a stage reads exists in the input or is made by an
      earlier stage of this run (``available`` lists the input's keys and the run's separately);
    - batch columns have no missing values;
    - no two stage entries make the same key (a later one would silently replace the earlier);
    - genes: those absent from the data are left out by every stage, with one warning; a stage
      entry none of whose genes is present is an error; both suggest the names meant
      (:func:`scclust._errors.did_you_mean`: ``CD3E`` for ``Cd3e``);
    - every embedding a stage computes on has finite values and enough distinct points.

    All problems are reported in one line (:class:`~scclust._errors.MissingKeyError` or
    :class:`~scclust._errors.InputError`), the most actionable first, each with its fix before the
    lists of available keys (cut at 8). An input without embeddings whose config lacks the stage
    that makes them from raw counts (``prepare``) is told so first, followed by what would still be
    wrong with that stage added.
    """
    found = _find_problems(adata, cfg, list(cfg.stages))
    if found.problems:
        rebuild = next((n for n, st in REGISTRY.items() if st.rebuilds_data), None)
        if (
            rebuild is not None
            and found.wants_embedding
            and not found.rebuilds
            and not any(n != "X" for n in adata.obsm)
        ):
            stages = [rebuild, *cfg.stages]
            then = _find_problems(adata, cfg, stages).messages()
            raise MissingKeyError(
                f"the input has no embeddings in .obsm: raw counts need the {rebuild!r} stage first (add {rebuild} "
                "to stages)" + (f"; then: {'; '.join(then)}" if then else "")
            )
        raise MissingKeyError("the config does not fit the input: " + "; ".join(found.messages()))
    for (rep, n_pcs), where in found.reps.items():
        _check_embedding(adata, rep, n_pcs, where)
    missing = found.missing
    if missing:
        from ._errors import did_you_mean

        absent = [g for gs in missing.values() for g in gs]
        hint = did_you_mean(absent, found.genes)
        left_out = "; ".join(f"{w}: {', '.join(g)}" for w, g in missing.items())
        if hint:  # the fix first
            logger.warning("genes not in the data: %s; left out: %s", hint, left_out)
        else:
            logger.warning("genes not in the data, left out: %s", left_out)
    return Preflight(
        missing_genes=frozenset(g for gs in missing.values() for g in gs),
        made=found.made,
        named_genes=tuple(found.named),
    )


#: order of problems in the message, the most actionable first (a rename, a key_added, a fix in the
#: data), then keys with no near match
_CLASH, _NEAR, _DATA, _GENES, _ABSENT = range(5)


@dataclass
class _Found:
    """What :func:`_find_problems` found for one list of stages."""

    problems: list[tuple[int, str]]
    missing: dict[str, list[str]]
    named: list[str]
    reps: dict[tuple[str, int | None], str]
    made: dict[str, str]
    genes: pd.Index
    #: a ``rep`` / ``basis`` key is missing; a stage rebuilds the data from raw counts
    wants_embedding: bool = False
    rebuilds: bool = False

    def messages(self) -> list[str]:
        return list(dict.fromkeys(text for _, text in sorted(self.problems, key=lambda p: p[0])))


def _near_key(key: str, keys: list[str]) -> str | None:
    """``Sample`` -> ``sample`` (case) first, else the closest spelling (difflib)."""
    from ._errors import near_matches

    return near_matches([key], keys, cutoff=0.6, same_numbers=False).get(key)


def _find_problems(adata: AnnData, cfg: WorkflowConfig, stages: list[str]) -> _Found:
    """Every key, gene and clash problem of ``stages`` (config sections from ``cfg``) on ``adata``."""
    from ._errors import did_you_mean

    obs_in, obsm_in, graphs_in = list(adata.obs.columns), list(adata.obsm.keys()), _graphs(adata)
    genes_all = pd.Index(adata.raw.var_names if adata.raw is not None else adata.var_names)
    genes_x = pd.Index(adata.var_names)
    made: dict[str, str] = {}  # key -> the entry that makes it
    made_obs: list[str] = []  # clusterings
    made_other: list[str] = []  # other .obs columns (QC metrics)
    made_obsm: list[str] = []
    made_graphs: list[str] = []
    absent_keys: dict[tuple[str, str, str], list[str]] = {}  # (keys, slot, tail) -> the fields naming them
    found = _Found(problems=[], missing={}, named=[], reps={}, made=made, genes=genes_all)
    prepare = found.rebuilds = any(REGISTRY[s].rebuilds_data for s in stages)
    for name in stages:
        stage = REGISTRY[name]
        for label, p in cfg.entries(name).items():
            mk = _makes(name, label, p)
            for ref in stage.reads:
                wanted = _values(_field(p, ref.field))
                if ref.explicit_only and ref.field not in p.model_fields_set:  # a default the stage may skip
                    wanted = [k for k in wanted if k in obs_in]
                where = f"{label.replace('[', '.').rstrip(']')}.{ref.field}"  # the --set path
                if ref.kind == "genes":
                    found.named += [g for g in wanted if g not in found.named]
                    universe = genes_x if getattr(p, "use_raw", None) is False and not prepare else genes_all
                    absent = [g for g in wanted if g not in universe]
                    if absent and len(absent) == len(wanted):
                        hint = did_you_mean(absent, universe)
                        found.problems.append(
                            (
                                _NEAR if hint else _GENES,
                                f"{where}: none of the genes {choices(absent)} is in "
                                "the data"
                                + (
                                    f"; {hint}"
                                    if hint
                                    else f" (its {len(universe)} genes are named like {choices(universe[:3])})"
                                ),
                            )
                        )
                    elif absent:
                        found.missing[where] = absent
                    continue
                if ref.kind in ("obs", "batch"):
                    # clusterings first: the columns a user names most
                    sets = ((obs_in, "in the input"), (made_obs + made_other + mk.obs_other, "made by this run"))
                    slot = ".obs"
                elif ref.kind == "graph":
                    sets = ((graphs_in, "in the input"), (made_graphs, "made by this run"))
                    slot = "graphs (.uns)"
                else:
                    sets = ((obsm_in, "in the input"), (made_obsm, "made by this run"))
                    slot = ".obsm"
                have = {k for keys, _ in sets for k in keys} | ({"X"} if ref.kind == "rep" else set())
                absent = [k for k in wanted if k not in have]
                if absent:
                    found.wants_embedding |= ref.kind in ("rep", "basis")
                    close = _near_key(absent[0], sorted(have))
                    fix = f": did you mean {close!r}?" if close else ""
                    if ref.kind == "batch" and not close and _allows_none(p, ref.field):
                        fix = f": name a batch column, or set {where}=null for data of one sample"
                        sets = sets[:1]  # the columns this run makes are no batches
                    # the input's keys, then (at most 4) the run's: short enough to read in one line
                    avail = "; ".join(
                        f"{what}: {choices(keys, 8 if i == 0 else 4) if keys else 'none'}"
                        for i, (keys, what) in enumerate(sets)
                        if keys or i == 0
                    )
                    if ref.kind == "rep":
                        avail += "; or X, the expression matrix"
                    rank = _NEAR if close else _ABSENT
                    key = (", ".join(map(repr, absent)), slot, f"{fix} ({avail})")
                    if key not in absent_keys:
                        absent_keys[key] = []
                        found.problems.append((rank, key))  # the text is made below, once all fields are known
                    absent_keys[key].append(where)
                if ref.kind == "batch":
                    for k in wanted:
                        if k in obs_in and adata.obs[k].isna().any():
                            n = int(adata.obs[k].isna().sum())
                            first = adata.obs_names[adata.obs[k].isna().to_numpy()][0]
                            found.problems.append(
                                (
                                    _DATA,
                                    (
                                        f"{where} {k!r} has no value for {n} cell(s): fill them in "
                                        f"or remove those cells (first: {first!r})"
                                    ),
                                )
                            )
                if ref.kind == "rep" and not prepare:
                    for k in wanted:
                        if k in obsm_in:
                            found.reps.setdefault((k, getattr(p, "n_pcs", None)), where)
            for kind, keys in (("obs", mk.obs), ("obsm", mk.obsm), ("graph", mk.graphs)):
                for k in keys:
                    if k in made and made[k] != label:
                        found.problems.append(
                            (
                                _CLASH,
                                (
                                    f"{made[k]} and {label} both make {kind} key {k!r}; set a "
                                    "distinct key_added (the later would replace the earlier)"
                                ),
                            )
                        )
                    made[k] = label
            made_obs += [k for k in mk.obs if k not in made_obs]
            made_other += [k for k in mk.obs_other if k not in made_other]
            made_obsm += [k for k in mk.obsm if k not in made_obsm]
            made_graphs += [k for k in mk.graphs + mk.intermediate_graphs if k not in made_graphs]
    found.problems = [
        (rank, f"{', '.join(absent_keys[text])} {text[0]} not in {text[1]}{text[2]}")
        if isinstance(text, tuple)
        else (rank, text)
        for rank, text in found.problems
    ]
    return found


def _allows_none(p: Any, field: str) -> bool:
    """Whether a stage parameter may be null (e.g. ``prepare.batch_key``: one sample, no integration)."""
    import typing

    *parents, name = field.split(".")
    for part in parents:
        p = getattr(p, part)
    return type(None) in typing.get_args(type(p).model_fields[name].annotation)


def _check_embedding(adata: AnnData, rep: str, n_pcs: int | None, where: str) -> None:
    """Finite values (:func:`get_rep`) and at least half as many distinct points as cells."""
    from ._checks import distinct_rows, get_rep

    X = get_rep(adata, rep, n_pcs)
    n = distinct_rows(X)
    if n == 1:
        raise InputError(
            f"{where} {rep!r}: all {X.shape[0]} cells have the same coordinates; "
            "the embedding is degenerate (check how it was made)"
        )
    if n < X.shape[0] / 2:
        raise InputError(
            f"{where} {rep!r}: only {n} distinct points among {X.shape[0]} cells "
            "(duplicated cells or a collapsed embedding); remove duplicates or recompute it"
        )


def check_names(adata: AnnData) -> AnnData:
    """Duplicate cell names are an error; duplicate gene names are made unique (logged)."""
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()]
        raise InputError(
            f"{dup.size} duplicate cell name(s) in .obs_names (first: {dup[0]!r}); labels are keyed "
            "by cell: make them unique first (adata.obs_names_make_unique())"
        )
    for where, var in (("", adata), (".raw", adata.raw)):
        if var is not None and not var.var_names.is_unique:
            dup = var.var_names[var.var_names.duplicated()]
            logger.warning(
                "%d duplicate gene name(s) in %s.var_names (first: %r); made unique by appending "
                "-1, -2, ... as anndata's var_names_make_unique does",
                dup.size,
                where or "",
                dup[0],
            )
            if where:
                raw = adata.raw.to_adata()
                raw.var_names_make_unique()
                adata.raw = raw
            else:
                adata.var_names_make_unique()
    return adata


def _check_memory(adata: AnnData, cfg: WorkflowConfig, entries: list[tuple[str, str, Any]], done: int = 0) -> dict:
    """Each stage entry's estimated peak (its ``memory`` declaration) against ``cfg.memory_limit``,
    before any stage runs: what this process holds now, plus what earlier stages keep (a graph),
    plus the entry's peak. Entries of a ``sketch`` run's ``on_sketch`` stages are estimated on the
    sketch's cells; the first ``done`` entries (reused from a checkpoint) are not checked.

    Returns ``{label: Estimate}``; raises :class:`~scclust._errors.ResourceError` (one line: the
    stage, its estimate and breakdown, the limit, the options) for the first entry that would not fit.
    """
    from ._memory import Sizes, available_memory, fmt_bytes, memory_limit, parse_memory_limit, process_rss

    limit = configured = parse_memory_limit(cfg.memory_limit)
    if limit is None:
        limit, what = available_memory()
        what = f"memory_limit auto: {what}"
    else:
        what = f"memory_limit {cfg.memory_limit}"
    held = process_rss()
    dims = {k: int(v.shape[1]) for k, v in adata.obsm.items() if len(getattr(v, "shape", ())) == 2}
    n_all = n = adata.n_obs
    graphs = {}
    for key in _graphs(adata):
        conn = adata.obsp.get(adata.uns[key]["connectivities_key"])
        if conn is not None and hasattr(conn, "nnz"):
            graphs[key] = int(conn.nnz)
    n_clusterings = sum(len(_makes(name, label, p).obs) for name, label, p in entries if REGISTRY[name].on_sketch)
    X = getattr(adata, "X", None)
    in_memory = X is not None and type(X).__module__.partition(".")[0] != "dask"
    nnz = (int(X.nnz) if hasattr(X, "nnz") else int(X.size)) if in_memory else None
    n_vars = int(getattr(adata, "n_vars", 0))
    kept, out, worst = 0.0, {}, None
    for i, (name, label, p) in enumerate(entries):
        stage = REGISTRY[name]
        if stage.memory is None:
            continue
        sizes = Sizes(
            n_obs=n if stage.on_sketch else n_all,
            n_all=n_all,
            dims=dims,
            n_clusterings=n_clusterings,
            graphs=dict(graphs),
            n_vars=n_vars,
            nnz=nnz,
        )
        with memory_limit(configured):  # the auto choices an estimate predicts keep to it, as in the run
            est = stage.memory(p, sizes)
        out[label] = est
        need = held + kept + est.total
        if i >= done and need > limit:
            more = (
                "or run on a machine with more memory"
                if cfg.memory_limit == "auto"
                else f"or raise memory_limit (e.g. --set memory_limit={-(-need * 1.2 // 1e9):.0f}GB)"
            )
            raise ResourceError(
                f"{label} would not fit in memory: about {fmt_bytes(est.total)} at its peak ({est.breakdown()}) "
                f"on top of {fmt_bytes(held + kept)} the run holds = {fmt_bytes(need)}, over the limit of "
                f"{fmt_bytes(limit)} ({what}); options: {est.options + ', ' if est.options else ''}{more}"
            )
        if i >= done and (worst is None or need > worst[1]):
            worst = (label, need)
        kept += est.kept
        graphs.update(est.graphs)
        if est.sketch_cells is not None:
            n = est.sketch_cells
        if stage.rebuilds_data:
            dims, graphs = {}, {}
    if worst is not None:
        logger.info(
            "memory: the largest estimated peak is %s's, %s of the %s limit (%s)",
            worst[0],
            fmt_bytes(worst[1]),
            fmt_bytes(limit),
            what,
        )
    return out


# ------------------------------------------------------------------------------------------ runner
class _PeakRSS:
    """Peak resident memory of this process while the block runs, sampled every 20 ms; on Linux,
    when the block raises the process's high-water mark (``VmHWM``, the peak the run's own
    ``getrusage`` / ``/usr/bin/time`` report), that mark: it also counts memory taken and freed while
    a C extension holds the GIL (building an igraph graph), which no sampling thread sees."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.peak = self.start = 0
        self._stop = threading.Event()
        self._hwm = 0

    def __enter__(self) -> Self:
        self.peak = self.start = self._proc.memory_info().rss
        self._hwm = high_water_mark()
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
        if (hwm := high_water_mark()) > self._hwm:  # a new peak of the process, set within the block
            self.peak = max(self.peak, hwm)


@contextlib.contextmanager
def _claim_outdir(cfg: WorkflowConfig) -> Iterator[Path]:
    """Create / check the output directory, hold its lock, and remove temporary files that an
    interrupted run left behind."""
    import fcntl

    outdir = Path(cfg.outdir)
    spec = parse_input(cfg.input)
    if not spec.is_builtin and outdir.resolve() == spec.path.resolve().parent and spec.path.name == "clustered.h5ad":
        raise ConfigError(f"outdir {cfg.outdir!r} would overwrite the input {cfg.input!r}; choose another outdir")
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"outdir {str(outdir)!r} is a file, not a directory; choose another outdir (--outdir)")
    with output_errors(outdir):
        outdir.mkdir(parents=True, exist_ok=True)
        if not os.access(outdir, os.W_OK | os.X_OK):
            raise OutputError(f"outdir {str(outdir)!r} is not writable; choose another outdir (--outdir)")
        lock = open(outdir / ".scclust.lock", "w")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise OutputError(
                f"another scclust run is writing to {str(outdir)!r}; wait for it or choose another outdir"
            ) from None
        stale = [p for p in outdir.rglob(".*") if p.is_file() and _TMP.match(p.name)]
        for p in stale:
            p.unlink()
        if stale:
            logger.info("removed %d temporary file(s) left by an interrupted run", len(stale))
        yield outdir
    finally:
        Path(lock.name).unlink(missing_ok=True)
        lock.close()


def run(cfg: WorkflowConfig, *, progress: Callable[[str], None] | None = None) -> tuple[AnnData, dict[str, Any]]:
    """Run every stage listed in ``cfg.stages`` and write the outputs to ``cfg.outdir``.

    Finished stages are checkpointed in ``outdir/.scclust_checkpoint`` (keyed by the input's
    fingerprint and the config of the stages so far); with ``cfg.resume`` a rerun after a failure
    reuses them and gives the same outputs as an uninterrupted run. The checkpoint is removed when
    the run completes.

    Returns the clustered AnnData and the manifest (also written to ``manifest.json``).
    """
    from ._background import background
    from ._memory import memory_limit, parse_memory_limit

    say = progress or logger.info
    t_start = time.perf_counter()
    with _claim_outdir(cfg) as outdir:
        # the background process warms umap-learn up when a stage will compute a layout and this
        # process has not imported it already (a notebook, a test session)
        computes_umap = any(REGISTRY[s].umap_needed(getattr(cfg, s)) for s in cfg.stages)
        warm = cfg.background_umap and computes_umap and not _umap_imported()
        with (
            background(warm, warm_up="scclust.pp._umap:_warm_up") as executor,
            memory_limit(parse_memory_limit(cfg.memory_limit)),  # auto choices keep to it too
        ):
            ctx = RunContext(cfg=cfg, outdir=outdir, executor=executor)
            return _run(cfg, ctx, say, t_start)


def _umap_imported() -> bool:
    """umap-learn is imported in this process already (compiled: no gain from a warm-up elsewhere)."""
    import sys

    return "umap" in sys.modules


def _lazy_input(cfg: WorkflowConfig) -> tuple[str, str, int | None] | None:
    """``(stage, reason, chunk_cells)`` when the first stage reads the input out of core (a stage's
    ``lazy_input`` declaration), else None: the input is then read into memory."""
    for name in cfg.stages[:1]:
        stage = REGISTRY[name]
        if stage.lazy_input is not None:
            for label, p in cfg.entries(name).items():
                reason = stage.lazy_input(p, parse_input(cfg.input))
                if reason is not None:
                    return label, reason, getattr(p, "chunk_cells", None)
    return None


def _entry_keys(cfg: WorkflowConfig, fingerprint: dict[str, Any]) -> list[tuple[str, str, Any, str]]:
    """``(stage, label, params, key)`` per stage entry; ``key`` hashes the input, the scclust
    version, the versions of the packages whose objects a checkpoint pickles, the settings that
    shape outputs and the config of this entry and all before it."""
    import sys
    from importlib.metadata import version

    import numpy as np
    import scipy

    from . import __version__

    h = hashlib.sha256(
        json.dumps(
            {
                "input": fingerprint.get("sha256"),
                "scclust": __version__,
                "pickled": [sys.version, np.__version__, scipy.__version__, pd.__version__, version("anndata")],
                "figures": cfg.figures.model_dump(mode="json"),
            },
            sort_keys=True,
        ).encode()
    )
    out = []
    for name in cfg.stages:
        for label, p in cfg.entries(name).items():
            h.update(json.dumps([label, p.model_dump(mode="json")], sort_keys=True).encode())
            out.append((name, label, p, h.copy().hexdigest()))
    return out


#: a checkpoint is written when the work a rerun would otherwise redo is at least this many times
#: the time writing it takes (so it costs at most a tenth of the work it saves) ...
CHECKPOINT_RATIO = 10
#: ... and, away from the hand-over from clustering to output stages, at least this many seconds:
#: redoing less costs a rerun less than checkpointing costs every run
CHECKPOINT_MIN_SECONDS = 30.0
#: the first write's time is estimated from the data's size at this rate (bytes per second)
_CHECKPOINT_RATE = 250e6


def _load_checkpoint(outdir: Path, keys: list[str]) -> tuple[int, dict, AnnData] | None:
    import anndata as ad

    from ._io import read_pickle

    state = outdir / CHECKPOINT_DIR / "state.json"
    if not state.is_file():
        return None
    try:
        info = json.loads(state.read_text())
        done = int(info["done"])
        if done < 1 or done > len(keys) or keys[done - 1] != info["key"]:
            return None
        if any(not (outdir / f).is_file() for f in info["files"]):
            return None
        if info.get("sketch") and not (outdir / CHECKPOINT_DIR / info["sketch"]).is_file():
            return None
        data = outdir / CHECKPOINT_DIR / info.get("data", "state.h5ad")
        if data.suffix == ".pkl":
            adata = read_pickle(data)
            if not isinstance(adata, AnnData):
                raise TypeError(f"{data.name} holds a {type(adata).__name__}, not an AnnData")
            return done, info, adata
        return done, info, ad.read_h5ad(data)
    except Exception as err:
        logger.info("checkpoint not used (%s: %s)", type(err).__name__, err)
        return None


def _in_memory(adata: AnnData) -> bool:
    """Every array of ``adata`` is in memory (no Dask array, no backed file, not a view): then the
    checkpoint pickles it (the exact state; 2.5x faster to write than .h5ad, 2-6x to read); else .h5ad."""
    if adata.is_view or adata.isbacked:
        return False
    arrays = [
        adata.X,
        *adata.layers.values(),
        *adata.obsm.values(),
        *adata.obsp.values(),
        *adata.varm.values(),
        *adata.varp.values(),
        adata.raw.X if adata.raw is not None else None,
    ]
    return not any(type(a).__module__.partition(".")[0] == "dask" for a in arrays if a is not None)


def _nbytes(adata: AnnData) -> int:
    """Approximate in-memory size of ``adata``'s arrays (for the first checkpoint's estimated cost)."""

    def size(a: Any) -> int:
        if a is None:
            return 0
        if hasattr(a, "data") and hasattr(a, "indices"):  # sparse
            return a.data.nbytes + a.indices.nbytes
        return int(getattr(a, "nbytes", 0) or 0)

    arrays = [
        adata.X,
        *adata.layers.values(),
        *adata.obsm.values(),
        *adata.obsp.values(),
        adata.raw.X if adata.raw is not None else None,
    ]
    return sum(size(a) for a in arrays)


def _save_checkpoint(outdir: Path, adata: AnnData, done: int, key: str, ctx: RunContext, records: list) -> None:
    from ._io import write_pickle

    ck = outdir / CHECKPOINT_DIR
    (ck / "state.json").unlink(missing_ok=True)  # the old state must never point at the new data
    if _in_memory(adata):
        data = ck / "state.pkl"
        write_pickle(adata, data)
    else:
        data = ck / "state.h5ad"
        write_h5ad(adata, data)
    for old in ("state.pkl", "state.h5ad"):
        if old != data.name:
            (ck / old).unlink(missing_ok=True)
    if ctx.sketch is not None:  # the sketch's AnnData (its graph, its labels) and what was projected
        write_pickle(ctx.sketch, ck / "sketch.pkl")
    else:
        (ck / "sketch.pkl").unlink(missing_ok=True)
    write_text(
        ck / "state.json",
        json.dumps(
            {
                "done": done,
                "key": key,
                "data": data.name,
                "sketch": "sketch.pkl" if ctx.sketch is not None else None,
                "clusterings": ctx.clusterings,
                "files": ctx.files,
                "records": records,
            },
            default=str,
        ),
    )


def _run(
    cfg: WorkflowConfig, ctx: RunContext, say: Callable[[str], None], t_start: float
) -> tuple[AnnData, dict[str, Any]]:
    outdir = ctx.outdir
    lazy = _lazy_input(cfg)
    say(f"reading {cfg.input}" + (f" lazily ({lazy[0]}: {lazy[1]})" if lazy else ""))
    with _PeakRSS() as mem:
        t0 = time.perf_counter()
        adata, fingerprint = read_input(
            cfg.input, progress=say, lazy=lazy is not None, chunk_cells=lazy[2] if lazy else None
        )
    records: list[dict[str, Any]] = [
        {"stage": "read", "seconds": round(time.perf_counter() - t0, 3), "peak_rss_mb": round(mem.peak / 2**20, 1)}
    ]
    say(f"input: {adata.n_obs} cells x {adata.n_vars} genes")
    adata = check_names(adata)
    checked = preflight(adata, cfg)
    ctx.missing_genes = checked.missing_genes
    ctx.named_genes = checked.named_genes

    entries = _entry_keys(cfg, fingerprint)
    for name in cfg.stages:
        if not cfg.entries(name):
            logger.warning(
                "%s: listed in stages but its section has no entry (e.g. %s: {tnk: {}}); nothing to do", name, name
            )
    start = 0
    found = _load_checkpoint(outdir, [k for *_, k in entries]) if cfg.resume else None
    if found is not None:
        start, info, adata = found
        ctx.clusterings, ctx.files = info["clusterings"], info["files"]
        if info.get("sketch"):
            from ._io import read_pickle

            ctx.sketch = read_pickle(outdir / CHECKPOINT_DIR / info["sketch"])
        records += [{**r, "reused": True} for r in info["records"] if r.get("stage") != "read"]
        say(f"reusing {', '.join(dict.fromkeys(label for _, label, _, _ in entries[:start]))} from checkpoint")
    elif (outdir / CHECKPOINT_DIR).exists():
        shutil.rmtree(outdir / CHECKPOINT_DIR, ignore_errors=True)

    estimates = _check_memory(adata, cfg, [(name, label, p) for name, label, p, _ in entries], start)
    n = len(entries)
    since_checkpoint, last_write = 0.0, None
    for i, (name, label, params, key) in enumerate(entries[start:], start + 1):
        say(f"[{i}/{n}] {label} ...")
        ctx.stage, ctx.entry = label, label.partition(".")[2]
        if ctx.promised:
            ctx.resolve(adata, None if REGISTRY[name].obsm_reads == "any" else _embedding_refs(name, params))
        n_files = len(ctx.files)
        # with a sketch, the stages that cluster run on the sketch's AnnData
        on_sketch = ctx.sketch is not None and REGISTRY[name].on_sketch
        target = ctx.sketch.adata if on_sketch else adata
        with _PeakRSS() as mem:
            t0 = time.perf_counter()
            result = REGISTRY[name].run(target, params, ctx)
            seconds = time.perf_counter() - t0
        if result is not None:
            if on_sketch:
                ctx.sketch.adata = target = result
            else:
                adata = target = result
        mk = _makes(name, label, params)
        for k in mk.graphs + mk.intermediate_graphs:
            if isinstance(target.uns.get(k), dict) and "options_json" in target.uns[k]:
                ctx.built_graphs[k] = target.uns[k]["options_json"]
        records.append(
            {
                "stage": label,
                "seconds": round(seconds, 3),
                "peak_rss_mb": round(mem.peak / 2**20, 1),
                "start_rss_mb": round(mem.start / 2**20, 1),
                **({"memory_estimate": estimates[label].record()} if label in estimates else {}),
                **({"on_sketch": ctx.sketch.adata.n_obs} if on_sketch else {}),
                **(REGISTRY[name].record(target, params) if REGISTRY[name].record else {}),
                "outputs": ctx.files[n_files:],
            }
        )
        say(f"[{i}/{n}] {label} done in {seconds:.1f}s")
        if on_sketch and (i == n or not REGISTRY[entries[i][0]].on_sketch):
            # every clustering made on the sketch, projected to all cells before a stage reads them
            with _PeakRSS() as mem:
                projected = ctx.sketch.project(adata, ctx)
            if projected is not None:
                records.append({**projected, "peak_rss_mb": round(mem.peak / 2**20, 1)})
                say(
                    f"[{i}/{n}] labels of {len(projected['keys'])} clustering(s) projected from the sketch to "
                    f"{adata.n_obs} cells in {projected['seconds']:.1f}s"
                )
        since_checkpoint += seconds
        # checkpoint when the work since the last one (what a rerun would redo) is at least
        # CHECKPOINT_RATIO times the cost of writing it: where the stages that make keys (graphs,
        # clusterings) hand over to output stages, and elsewhere once it is CHECKPOINT_MIN_SECONDS
        handover = REGISTRY[name].makes is not None and i < n and REGISTRY[entries[i][0]].makes is None
        if ctx.promised and all(job.done() for _, job in ctx.promised.values()):
            ctx.resolve(adata)  # finished: no wait
        # a checkpoint is the complete state: not while a key is still being computed
        if cfg.resume and i < n and not ctx.promised:
            write = last_write if last_write is not None else _nbytes(adata) / _CHECKPOINT_RATE
            if since_checkpoint >= CHECKPOINT_RATIO * write and (
                handover or since_checkpoint >= CHECKPOINT_MIN_SECONDS
            ):
                t0 = time.perf_counter()
                _save_checkpoint(outdir, adata, i, key, ctx, records)
                last_write, since_checkpoint = time.perf_counter() - t0, 0.0
                logger.debug("checkpoint after %s written in %.2f s", label, last_write)

    ctx.stage = ""
    ctx.resolve(adata)
    records += ctx.background
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
        "n_genes": adata.raw.n_vars if adata.raw is not None else adata.n_vars,
        "clusterings": ctx.clusterings,
        **({"sketch": ctx.sketch.summary()} if ctx.sketch is not None else {}),
        "stages": records,
    }
    adata.uns["scclust"] = {
        "config_json": json.dumps(manifest["config"]),
        "versions_json": json.dumps(manifest["versions"]),
    }
    if cfg.write_h5ad:
        t0 = time.perf_counter()
        write_h5ad(adata, outdir / "clustered.h5ad")
        ctx.record(outdir / "clustered.h5ad")
        records.append({"stage": "write_h5ad", "seconds": round(time.perf_counter() - t0, 3)})
    manifest["files"] = sorted(ctx.files)
    for name in cfg.stages:  # the report: once every other file exists
        if REGISTRY[name].finish is not None:
            t0 = time.perf_counter()
            REGISTRY[name].finish(outdir, manifest, getattr(cfg, name))
            records.append({"stage": f"write_{name}", "seconds": round(time.perf_counter() - t0, 3)})
    manifest["wall_seconds"] = round(time.perf_counter() - t_start, 3)
    write_text(outdir / "manifest.json", json.dumps(manifest, indent=2, default=str) + os.linesep)
    shutil.rmtree(outdir / CHECKPOINT_DIR, ignore_errors=True)
    say(f"done in {manifest['wall_seconds']:.1f}s; outputs in {outdir}")
    return adata, manifest
