"""What a stage is: one :class:`Stage` declaration, and the :class:`RunContext` it runs in.

A stage module holds its ``*Params`` model, its run function and one ``STAGE = Stage(...)``
object. Everything the runner, the config, the pre-flight check, the JSON schema and the report
need to know about a stage is read from that object; nothing else in the package names a stage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import pandas as pd

    from ..config import WorkflowConfig

__all__ = ["Makes", "Params", "Ref", "RunContext", "Stage"]


class Params(BaseModel):
    """Base of every stage's parameters: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
        ``makes(params) -> Makes``: the keys an entry writes, from the same naming functions the
        tools use (so the pre-flight check cannot drift from the tools).
    computes_umap
        The stage computes a UMAP (the runner then warms umap-learn up in a spare process); a
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
    waits_for_background
        True (the safe default): the runner first waits for every embedding still being computed in
        the background (:meth:`RunContext.defer`). False: the stage reads no ``.obsm`` key besides
        those its ``rep`` / ``basis`` refs name (the runner waits for those only), or it waits
        itself where it needs them (:meth:`RunContext.wait_background`).
    """

    name: str
    params: type[Params]
    run: Callable[..., Any]
    repeat: Literal["single", "list", "named"] = "single"
    reads: tuple[Ref, ...] = ()
    makes: Callable[[Any], Makes] | None = None
    computes_umap: bool | Callable[[Any], bool] = False
    rebuilds_data: bool = False
    finish: Callable[..., Any] | None = None
    default: bool = False
    record: Callable[[Any, Any], dict] | None = None
    lazy_input: Callable[[Any, str], str | None] | None = None
    waits_for_background: bool = True
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
    #: the run's background UMAP worker (or None: compute in this process)
    umap_worker: Any = None
    #: gene names the pre-flight check found absent (left out by every stage that takes genes)
    missing_genes: frozenset[str] = frozenset()
    #: every gene the config names (the out-of-core prepare keeps them in ``.raw``)
    named_genes: tuple[str, ...] = ()
    #: embeddings still being computed in the background: ``{obsm key: (entry, PendingUmap)}``
    pending: dict[str, tuple[str, Any]] = field(default_factory=dict)
    #: manifest records of the background jobs joined so far
    background: list[dict] = field(default_factory=list)

    def defer(self, pending: Any) -> None:
        """Register an embedding computed in the background (``pp.umap(..., wait=False)``); it is
        written into the AnnData by :meth:`wait_background`, which the runner calls before a stage
        that may read it, before a checkpoint and before the outputs are written."""
        self.pending[pending.key] = (self.stage, pending)

    def wait_background(self, adata, keys: Iterable[str] | None = None) -> None:
        """Wait for the background embeddings ``keys`` (default: all) and write them into ``adata``."""
        import logging

        for key in list(self.pending if keys is None else keys):
            if key not in self.pending:
                continue
            entry, job = self.pending.pop(key)
            waited = job.join(adata)
            if waited > 1:
                logging.getLogger(__name__).info("%s: waited %.1f s for the background %s", self.stage or "outputs",
                                                 waited, key)
            self.background.append({"stage": f"{entry} (background {key})", "seconds": round(job.seconds or 0.0, 3),
                                    "waited_seconds": round(waited, 3), "waited_in": self.stage or "outputs"})

    def save_figure(self, fig, name: str) -> list[Path]:
        """Write ``figures/{name}.{fmt}`` for every configured format; close the figure."""
        from .._io import atomic_path

        paths = []
        for fmt in self.cfg.figures.formats:
            path = self.outdir / "figures" / f"{name}.{fmt}"
            meta = {"Software": None} if fmt == "png" else {"Creator": None, "CreationDate": None} if fmt == "pdf" else {"Date": None}
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
                "%s: no clustering made in this run and no 'groupby' given; nothing to do", stage)
        return keys

    def present_genes(self, genes: Iterable[str]) -> list[str]:
        """``genes`` without those the pre-flight check reported absent."""
        return [g for g in genes if g not in self.missing_genes]

    def record(self, path: Path) -> Path:
        rel = str(path.relative_to(self.outdir))
        if rel not in self.files:
            self.files.append(rel)
        return path

    _record = record  # older name
