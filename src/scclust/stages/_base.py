"""What a stage is: one :class:`Stage` declaration, and the :class:`RunContext` it runs in.

A stage module holds its ``*Params`` model (generated from the signature and docstring of the
function it calls: :func:`scclust._params.params_model`; stage-only keys are declared there too),
its run function and one ``STAGE = Stage(...)`` object. Everything the runner, the config, the
pre-flight check, the JSON schema and the report need to know about a stage is read from that
object; nothing else in the package names a stage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._params import Params

if TYPE_CHECKING:
    import pandas as pd

    from .._memory import Estimate, Sizes
    from ..config import WorkflowConfig

__all__ = ["Makes", "Params", "Ref", "RunContext", "Stage", "moved_keys"]


def moved_keys(moved: dict[str, str]) -> type[Params]:
    """A :class:`Params` base that refuses keys of an older layout, naming their new place
    (``prepare: key 'min_mean' has moved: write it as hvg.min_mean``)."""
    from pydantic import model_validator

    class Moved(Params):
        @model_validator(mode="before")
        @classmethod
        def _moved(cls, data: Any) -> Any:
            if isinstance(data, dict):
                old = [k for k in data if k in moved]
                if old:
                    raise ValueError("; ".join(f"key {k!r} has moved: write it as {moved[k]}" for k in old))
            return data

    return Moved


#: kinds of keys a stage reads. "obs": an .obs column (the input's or made earlier in the run);
#: "batch": an .obs column that must have no missing values; "rep": an .obsm key or "X";
#: "basis": an .obsm key; "graph": a graph name in .uns; "genes": gene names (in .raw when present, else .var)
RefKind = Literal["obs", "batch", "rep", "basis", "graph", "genes"]


@dataclass(frozen=True)
class Ref:
    """A parameter of a stage that names input keys, checked before any stage runs.

    ``explicit_only``: checked only when the user set it (the stage skips a missing default).
    """

    field: str
    kind: RefKind
    explicit_only: bool = False


@dataclass
class Makes:
    """Keys a stage entry writes: label columns (``obs``, each a clustering), other ``.obs``
    columns (``obs_other``), ``.obsm`` embeddings and graph names (``.uns[key]`` + ``.obsp``)."""

    obs: list[str] = field(default_factory=list)
    obs_other: list[str] = field(default_factory=list)
    obsm: list[str] = field(default_factory=list)
    graphs: list[str] = field(default_factory=list)
    #: graphs made for the stage's own use (prepare's UMAP graph); a later stage may replace them
    intermediate_graphs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Stage:
    """One stage: its config section, parameters, run function and the keys it reads and makes.

    Attributes
    ----------
    name
        The config section and the name in ``stages:``.
    params
        Its pydantic model; fields are keyword arguments of the functions it calls.
    run
        ``run(adata, params, ctx) -> AnnData | None`` (a new AnnData replaces the current one).
    repeat
        ``"single"``: one mapping; ``"list"``: a list of mappings, run once each (a single mapping
        is a one-entry list); ``"named"``: a mapping of names to mappings.
    reads
        Parameters that name input keys (checked before any stage runs).
    makes
        ``makes(params) -> Makes`` (``makes(params, name)`` for a named stage's entries): the keys
        an entry writes, from the same naming functions the tools use (so the pre-flight check
        cannot drift from the tools). A key computed in the background is promised for it
        (:meth:`RunContext.promise`) and resolved before a later stage that reads it.
    computes_umap
        The stage computes a UMAP (the runner then warms umap-learn up in its background process); a
        callable ``computes_umap(params) -> bool`` when that depends on the parameters.
    rebuilds_data
        The stage replaces the AnnData with one it builds from raw counts (its embeddings are the
        ones later stages use; genes are those of the input).
    finish
        ``finish(outdir, manifest, params)``: runs after every other output (h5ad, label table)
        exists, just before ``manifest.json`` (the report).
    default
        Listed in a config's default ``stages``.
    record
        ``record(adata, params) -> dict``: what the stage chose at run time (a backend picked by
        size, a measured recall), written into the stage's entry of ``manifest.json``.
    lazy_input
        ``lazy_input(params, input_spec) -> str | None``: a reason when the stage reads the run's input
        out of core (the runner then reads it lazily: ``.X`` a Dask array, nothing loaded), else None.
    on_sketch
        The stage clusters (or reruns clusterings on) the cells it is given: when a run draws a
        sketch (the ``sketch`` stage), it runs on the sketch's AnnData (:attr:`RunContext.sketch`),
        and after the last such stage in a row the clusterings it made are projected to every cell
        (:meth:`scclust.stages.sketch.SketchRun.project`).
    obsm_reads
        ``"any"`` (the safe default): before the stage runs, the runner resolves every key still
        being computed in the background (:meth:`RunContext.promise`). ``"declared"``: the stage
        reads no ``.obsm`` key besides those its ``rep`` / ``basis`` refs name (the runner resolves
        those only) and those it resolves itself (:meth:`RunContext.resolve`).
    memory
        ``memory(params, sizes) -> Estimate`` (:class:`scclust._memory.Sizes`,
        :class:`scclust._memory.Estimate`): the memory the entry's peak adds on top of what the run
        holds, from the sizes alone, with its breakdown and the options that lower it. Checked
        against ``memory_limit`` before any stage runs; a stage without it is assumed small.
    description
        One line for the stage list (``scclust stages``) and the docs.
    """

    name: str
    params: type[Params]
    run: Callable[..., Any]
    repeat: Literal["single", "list", "named"] = "single"
    reads: tuple[Ref, ...] = ()
    makes: Callable[..., Makes] | None = None
    computes_umap: bool | Callable[[Any], bool] = False
    rebuilds_data: bool = False
    finish: Callable[..., Any] | None = None
    default: bool = False
    record: Callable[[Any, Any], dict] | None = None
    lazy_input: Callable[[Any, str], str | None] | None = None
    on_sketch: bool = False
    obsm_reads: Literal["any", "declared"] = "any"
    memory: Callable[[Any, Sizes], Estimate] | None = None
    description: str = ""

    def umap_needed(self, section: Any) -> bool:
        """Whether any entry of this stage's config section computes a UMAP."""
        if not callable(self.computes_umap):
            return bool(self.computes_umap)
        return any(self.computes_umap(p) for p in self.entries(section).values())

    def default_section(self) -> Any:
        return {"single": self.params, "list": lambda: [self.params()], "named": dict}[self.repeat]()

    def entries(self, section: Any) -> dict[str, Any]:
        """``{label: params}`` of a config section (labels: ``leiden``, ``leiden[1]``, ``subcluster.tnk``)."""
        if self.repeat == "single":
            return {self.name: section}
        if self.repeat == "named":
            return {f"{self.name}.{k}": v for k, v in section.items()}
        return {self.name if len(section) == 1 else f"{self.name}[{i}]": p for i, p in enumerate(section)}


@dataclass
class RunContext:
    """What a stage needs besides the AnnData: where to write, and what earlier stages made."""

    cfg: WorkflowConfig
    outdir: Path
    #: clustering keys in ``.obs`` made by this run, grouped by the stage entry that made them
    clusterings: dict[str, list[str]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    stage: str = ""
    #: the name of the current entry of a named stage (``tnk`` of ``subcluster.tnk``)
    entry: str = ""
    #: the run's background executor (:func:`scclust._background.background`), owned by the runner
    executor: Any = None
    #: gene names the pre-flight check found absent (left out by every stage that takes genes)
    missing_genes: frozenset[str] = frozenset()
    #: every gene the config names (the out-of-core prepare keeps them in ``.raw``)
    named_genes: tuple[str, ...] = ()
    #: keys still being computed in the background: ``{obsm key: (entry, Job)}``
    promised: dict[str, tuple[str, Any]] = field(default_factory=dict)
    #: manifest records of the background jobs resolved so far
    background: list[dict] = field(default_factory=list)
    #: ``{graph key: options_json}`` of the graphs built by this run's stages so far (a graph read
    #: with the input may come from other code, so only these are reused)
    built_graphs: dict[str, str] = field(default_factory=dict)
    #: the sketch the ``on_sketch`` stages run on, when the run draws one
    #: (:class:`scclust.stages.sketch.SketchRun`: its AnnData, what was projected)
    sketch: Any = None

    def umap(
        self, adata, *, key_added: str, params: Any, random_state: int, wait: bool = True, aliases: tuple[str, ...] = ()
    ) -> None:
        """The UMAP of ``adata``'s graph with the options of a :data:`scclust.pp.Umap` group, computed
        in the run's background process: written into ``adata`` now (``wait``), or promised for
        ``key_added`` (the runner writes it in before a later stage that reads it); ``aliases`` are
        further ``.obsm`` keys given the same coordinates. A waiting call while that process is busy
        (with a promised layout, or still compiling umap-learn) is computed here: same coordinates,
        never later than the compilation in this process (~5 s) would make it."""
        from ..pp._umap import graph_only, umap_kwargs

        kwargs = umap_kwargs(
            adata, neighbors_key="neighbors", key_added=key_added, random_state=random_state, **params.model_dump()
        )
        if wait and not self.executor.ready():
            import logging

            logging.getLogger(__name__).info(
                "UMAP of %d cells computed in this process: the background process is busy (%s)",
                adata.n_obs,
                "another layout" if self.executor.busy() else "compiling umap-learn",
            )
            from ..pp._umap import umap_job, write_umap

            write_umap(adata, *umap_job(graph_only(adata, "neighbors"), kwargs))
            for alias in aliases:
                adata.obsm[alias] = adata.obsm[key_added]
            return
        job = self.executor.submit("scclust.pp._umap:umap_job", graph_only(adata, "neighbors"), kwargs)
        self.promise((key_added, *aliases), job, adata.obs_names)
        if wait:
            self.resolve(adata, [key_added])

    def promise(self, keys: tuple[str, ...], job: Any, obs_names: Any) -> None:
        """Register ``.obsm[keys]`` as computed in the background by ``job`` (for these cells): the
        job's first key, and the others as copies of it."""
        job.obs_names, job.keys = obs_names, keys
        for key in keys:
            self.promised[key] = (self.stage, job)

    def resolve(self, adata, keys: Iterable[str] | None = None) -> None:
        """Wait for the promised keys ``keys`` (default: all) and write them into ``adata``."""
        import logging
        import time

        from ..pp._umap import write_umap

        for key in list(self.promised if keys is None else keys):
            if key not in self.promised:
                continue
            entry, job = self.promised[key]
            for k in job.keys:
                self.promised.pop(k, None)
            if not adata.obs_names.equals(job.obs_names):
                raise ValueError(f"the background {key!r} was computed for other cells")
            t0 = time.perf_counter()
            write_umap(adata, *job.result())
            for alias in job.keys[1:]:
                adata.obsm[alias] = adata.obsm[job.keys[0]]
            waited = time.perf_counter() - t0
            if waited > 1:
                logging.getLogger(__name__).info(
                    "%s: waited %.1f s for the background %s", self.stage or "outputs", waited, key
                )
            self.background.append(
                {
                    "stage": f"{entry} (background {key})",
                    "seconds": round(job.seconds or 0.0, 3),
                    "waited_seconds": round(waited, 3),
                    "waited_in": self.stage or "outputs",
                }
            )

    def save_figure(self, fig, name: str) -> list[Path]:
        """Write ``figures/{name}.{fmt}`` for every configured format; close the figure."""
        from .._io import atomic_path

        paths = []
        for fmt in self.cfg.figures.formats:
            path = self.outdir / "figures" / f"{name}.{fmt}"
            meta = (
                {"Software": None}
                if fmt == "png"
                else {"Creator": None, "CreationDate": None}
                if fmt == "pdf"
                else {"Date": None}
            )
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=self.cfg.figures.dpi, bbox_inches="tight", metadata=meta)
            paths.append(self.record(path))
        return paths

    def save_table(self, df: pd.DataFrame, name: str, *, index: bool = True) -> Path:
        """Write ``tables/{name}.csv`` (fixed float format, so reruns are byte-identical)."""
        from .._io import atomic_path

        path = self.outdir / "tables" / f"{name}.csv"
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=index, float_format="%.6g")
        return self.record(path)

    def add_clusterings(self, group: str, keys: Iterable[str]) -> None:
        self.clusterings.setdefault(group, []).extend(keys)

    def all_clusterings(self) -> list[str]:
        return [k for keys in self.clusterings.values() for k in keys]

    def groups(self, stage: str, groupby: list[str] | None) -> list[str]:
        """The clusterings a per-clustering stage works on: those given, else all made in this run."""
        import logging

        if groupby is not None:
            return list(groupby)
        keys = self.all_clusterings()
        if not keys:
            logging.getLogger(__name__).warning(
                "%s: no clustering made in this run and no 'groupby' given; nothing to do", stage
            )
        return keys

    def present_genes(self, genes: Iterable[str]) -> list[str]:
        """``genes`` without those the pre-flight check reported absent."""
        return [g for g in genes if g not in self.missing_genes]

    def record(self, path: Path) -> Path:
        rel = str(path.relative_to(self.outdir))
        if rel not in self.files:
            self.files.append(rel)
        return path
