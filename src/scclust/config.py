"""Validated configuration: one ``*Params`` model per stage and the :class:`WorkflowConfig`.

A stage's model has the same field names and defaults as its function's keyword arguments, so a
stage runs as ``tl.leiden(adata, **cfg.leiden[0].model_dump())``. ``extra="forbid"`` everywhere:
a misspelt key is an error that names it and lists the valid keys. The JSON schema
(``scclust schema``) is generated from these models.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ._errors import ConfigError, MissingFileError

__all__ = [
    "STAGE_ORDER",
    "CompareParams",
    "CompositionParams",
    "EmbeddingParams",
    "FiguresParams",
    "HclustParams",
    "HeatmapParams",
    "KMeansParams",
    "LeidenParams",
    "NeighborsParams",
    "PrepareParams",
    "QCParams",
    "RelationshipsParams",
    "ReportParams",
    "SubclusterParams",
    "WorkflowConfig",
    "apply_overrides",
    "json_schema",
    "load_config",
    "parse_config",
]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


Metric = Literal["euclidean", "cosine", "correlation", "manhattan"]
#: a number of clusters k (>= 1)
ClusterCount = Annotated[int, Field(ge=1)]


# ---------------------------------------------------------------------------------------- prepare
class PrepareParams(_Params):
    """Raw counts -> integrated AnnData (:func:`scclust.pp.prepare`)."""

    batch_key: str = "sample"
    target_sum: float = Field(1e4, gt=0)
    hvg_flavor: Literal["seurat", "cell_ranger", "seurat_v3"] = "seurat"
    min_mean: float = 0.0125
    max_mean: float = 3.0
    min_disp: float = 0.5
    n_top_genes: int | None = Field(None, ge=2)
    regress_out: list[str] = []
    max_value: float | None = Field(10.0, gt=0)
    n_comps: int = Field(50, ge=2)
    n_neighbors: int = Field(20, ge=2)
    n_pcs: int = Field(30, ge=1)
    umap_min_dist: float = Field(0.5, ge=0)
    random_state: int = 0


# ---------------------------------------------------------------------------------------- graph
class NeighborsParams(_Params):
    """kNN / SNN graph (:func:`scclust.pp.neighbors`)."""

    use_rep: str = "X_pca"
    n_pcs: int | None = Field(None, ge=1)
    n_neighbors: int = Field(15, ge=2)
    metric: Metric = "euclidean"
    method: Literal["umap", "gauss"] = "umap"
    backend: Literal["auto", "exact", "hnsw"] = "auto"
    snn: bool = False
    prune: float = Field(1 / 15, ge=0, lt=1)
    key_added: str = "neighbors"
    random_state: int = 0


# ---------------------------------------------------------------------------------------- clustering
class LeidenParams(_Params):
    """Leiden / Louvain at several resolutions (:func:`scclust.tl.leiden`)."""

    resolutions: list[float] = Field([1.0], min_length=1)
    neighbors_key: str = "neighbors"
    key_added: str = "leiden"
    flavor: Literal["igraph", "leidenalg", "louvain"] = "igraph"
    n_iterations: int = 2
    use_weights: bool = True
    random_state: int = 0
    n_jobs: int = Field(1, ge=-1, description="processes for the resolutions (-1: one per core); labels do not depend on it")

    @field_validator("n_jobs")
    @classmethod
    def _not_zero(cls, v: int) -> int:
        if v == 0:
            raise ValueError("n_jobs must be >= 1, or -1 for one process per core")
        return v

    @field_validator("resolutions")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        bad = [r for r in v if not r > 0]
        if bad:
            raise ValueError(f"every resolution must be > 0; got {bad}")
        return v


class KMeansParams(_Params):
    """k-means at several k (:func:`scclust.tl.kmeans`)."""

    n_clusters: list[ClusterCount] = Field([5, 10, 15], min_length=1)
    use_rep: str = "X_pca"
    n_pcs: int | None = Field(None, ge=1)
    n_init: int | Literal["auto"] = 10
    max_iter: int = Field(300, ge=1)
    random_state: int = 0
    key_added: str = "kmeans"

    @field_validator("n_init")
    @classmethod
    def _n_init(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("n_init must be >= 1 or 'auto'")
        return v


class HclustParams(_Params):
    """Hierarchical clustering: one tree cut at several k / heights (:func:`scclust.tl.hclust`)."""

    use_rep: str = "X_pca"
    n_pcs: int | None = Field(None, ge=1)
    method: Literal["single", "complete", "average", "weighted", "centroid", "median", "ward"] = "ward"
    metric: Literal["euclidean", "correlation", "cosine", "cityblock"] = "euclidean"
    n_clusters: list[ClusterCount] = [5, 10, 15]
    heights: list[float] = []
    optimal_ordering: bool = False
    backend: Literal["auto", "matrix", "vector"] = "auto"
    allow_non_euclidean: bool = False
    key_added: str = "hclust"

    @field_validator("heights")
    @classmethod
    def _h_positive(cls, v: list[float]) -> list[float]:
        bad = [h for h in v if not h >= 0]
        if bad:
            raise ValueError(f"every height must be >= 0; got {bad}")
        return v

    @model_validator(mode="after")
    def _euclidean_methods(self) -> HclustParams:
        if self.method in ("centroid", "median", "ward") and self.metric != "euclidean" and not self.allow_non_euclidean:
            raise ValueError(
                f"method {self.method!r} needs metric 'euclidean' (got {self.metric!r}); "
                "with other metrics use single, complete, average or weighted, or set allow_non_euclidean "
                "to reproduce R's hclust on a non-Euclidean dissimilarity (the Seurat lab's ward.D2 on (1 - r) / 2)"
            )
        if not self.n_clusters and not self.heights:
            raise ValueError("give at least one k in n_clusters or one value in heights")
        return self


class CompareParams(_Params):
    """ARI / NMI between clusterings, contingency tables (:func:`scclust.tl.compare`)."""

    keys: list[str] | None = Field(None, description="clusterings to compare; None = all made in this run")
    reference: str | None = Field(None, description="an .obs column of reference labels (e.g. cell_type)")


# ---------------------------------------------------------------------------------------- outputs
class EmbeddingParams(_Params):
    """Embedding panels (:func:`scclust.pl.embedding`): one figure per clustering stage, plus genes."""

    basis: str = "X_umap"
    groups: list[str] | None = None
    genes: list[str] = []
    use_raw: bool | None = None
    ncols: int = Field(4, ge=1)


class RelationshipsParams(_Params):
    """Cluster dendrogram (:func:`scclust.tl.dendrogram`), marker dot plot ordered by it
    (:func:`scclust.pl.dotplot`) and mean expression per cluster (:func:`scclust.tl.cluster_means`)."""

    groupby: list[str] | None = Field(None, description="clusterings; None = every clustering made in this run")
    use_rep: str = "X_pca"
    n_pcs: int | None = Field(None, ge=1)
    cor_method: Literal["pearson", "kendall", "spearman"] = "pearson"
    linkage_method: Literal["single", "complete", "average", "weighted", "centroid", "median", "ward"] = "complete"
    optimal_ordering: bool = False
    genes: list[str] = Field(
        ["CD3E", "CD4", "CD8A", "GNLY", "NKG7", "MS4A1", "FCGR3A", "CD14", "LYZ", "CST3", "MS4A7", "FCGR1A"],
        description="dot plot and mean-expression genes (default: the lab's 12 markers, datasets.LAB_MARKERS)",
    )
    use_raw: bool | None = Field(None, description="expression from .raw; None = when present")


class CompositionParams(_Params):
    """Composition tables and stacked bars (:func:`scclust.tl.proportions`, :func:`scclust.pl.proportions`)
    and one-sample cluster flags (:func:`scclust.tl.composition_diagnostics`)."""

    groupby: list[str] | None = Field(None, description="clusterings; None = every clustering made in this run")
    by: list[str] = Field(["sample", "type"], min_length=1, description=".obs columns to break clusters down by")
    sample_key: str = "sample"
    max_share: float = Field(0.5, gt=0, lt=1)
    alpha: float = Field(0.01, gt=0, lt=1)


class QCParams(_Params):
    """QC violins per cluster (:func:`scclust.pl.qc_violin`) and medians with flags (:func:`scclust.tl.qc_summary`)."""

    groupby: list[str] | None = Field(None, description="clusterings; None = every clustering made in this run")
    keys: list[str] | None = Field(None, description="QC .obs columns or aliases; None = n_genes_by_counts, total_counts, pct_counts_mt")
    n_mads: float = Field(3.0, gt=0)


class ReportParams(_Params):
    """The HTML report (:func:`scclust.report.write_report`); runs after everything else."""

    title: str = "scclust report"
    max_rows: int = Field(50, ge=1)


class FiguresParams(_Params):
    """How figures are written."""

    formats: list[Literal["png", "pdf", "svg"]] = Field(["png"], min_length=1)
    dpi: int = Field(150, ge=50, le=600)
    graph_block: int = Field(
        0, ge=0, le=5000, description="neighbors stage: draw the first N x N cells of each graph (the Seurat lab's kNN / SNN "
        "heat maps, N = 200) into figures/graph_{key_added}.png; 0 = none",
    )

    @field_validator("graph_block")
    @classmethod
    def _block(cls, v: int) -> int:
        if v == 1:
            raise ValueError("graph_block must be 0 (no figure) or at least 2 cells")
        return v


# ---------------------------------------------------------------------------------------- heatmap
_LINKAGE = Literal["single", "complete", "average", "weighted", "centroid", "median", "ward"]
_DISTANCE = Literal["euclidean", "sqeuclidean", "cityblock", "chebyshev", "minkowski", "seuclidean", "cosine",
                    "correlation", "braycurtis", "canberra"]


class HeatmapParams(_Params):
    """A clustered heatmap: the matrix (:func:`scclust.tl.heatmap_matrix`), its clustering
    (:func:`scclust.tl.cluster_heatmap`) and the figure (:func:`scclust.pl.clustered_heatmap`).

    Each field is a keyword argument of one of those three functions, with the same default.
    """

    name: str = Field("heatmap", description="output name: figures/{name}.png, tables/{name}_*.csv")
    # matrix
    source: Literal["cluster_means", "cells", "table"] = "cluster_means"
    table: str | None = Field(None, description="source table: a CSV path (rows x columns, row names first) or builtin:heatmap_example")
    table_annotations: str | None = Field(None, description="CSV of column annotations of the table (one row per table column)")
    column_pattern: str | None = Field(None, description="regex with named groups on the table's column names, e.g. (?P<condition>ctrl|stim)_.*")
    groupby: str | list[str] | None = Field(None, description=".obs column(s); None = the first clustering made in this run")
    genes: list[str] | None = Field(None, description="rows; None = top markers per group (sc.tl.rank_genes_groups)")
    n_top_genes: int = Field(5, ge=1)
    use_raw: bool | None = None
    max_cells: int = Field(2000, ge=2)
    annotations: list[str] = Field([], description="further .obs columns drawn as column colour bars")
    # clustering
    scale: Literal["zscore", "standard", "none"] = "zscore"
    row_metric: _DISTANCE = "correlation"
    row_method: _LINKAGE = "average"
    col_metric: _DISTANCE = "correlation"
    col_method: _LINKAGE = "average"
    cluster_rows: bool = True
    cluster_cols: bool = True
    optimal_ordering: bool = False
    row_k: int | None = Field(None, ge=1)
    n_boot: int = Field(100, ge=0)
    nonfinite: Literal["raise", "drop"] = "raise"
    random_state: int = 0
    # figure
    annotation_colors: dict[str, dict[str, str]] | None = None
    label_rows: bool | Literal["auto"] | list[str] = "auto"
    label_cols: bool | Literal["auto"] = "auto"
    show_row_dendrogram: bool = True
    show_col_dendrogram: bool = True
    show_groups: bool = True
    show_stability: bool = True
    cmap: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> HeatmapParams:
        for axis in ("row", "col"):
            method, metric = getattr(self, f"{axis}_method"), getattr(self, f"{axis}_metric")
            if method in ("centroid", "median", "ward") and metric != "euclidean":
                raise ValueError(
                    f"{axis}_method {method!r} needs {axis}_metric 'euclidean' (got {metric!r}); "
                    "with other metrics use single, complete, average or weighted, or set allow_non_euclidean "
                "to reproduce R's hclust on a non-Euclidean dissimilarity (the Seurat lab's ward.D2 on (1 - r) / 2)"
                )
        if self.source == "table" and self.table is None:
            raise ValueError("source 'table' needs table: a CSV path or builtin:heatmap_example")
        if self.source != "table" and (self.table or self.table_annotations or self.column_pattern):
            raise ValueError(f"table, table_annotations and column_pattern need source 'table' (source is {self.source!r})")
        return self


# ---------------------------------------------------------------------------------------- subcluster
class SubclusterParams(_Params):
    """One named subclustering (:func:`scclust.tl.subcluster`); the name is the key in ``subcluster``.

    ``markers: null`` means the default T/NK rule ``{T: [CD3E], NK: [GNLY, NKG7]}``.
    """

    groupby: str = "leiden_0.4"
    select: Literal["markers", "clusters", "obs"] = "markers"
    clusters: list[str] | None = None
    markers: dict[str, list[str]] | None = None
    min_score: float = Field(0.5, gt=0, le=1)
    obs_query: str | None = None
    min_cells: int = Field(50, ge=3)
    batch_key: str | None = "sample"
    min_cells_per_batch: int = Field(10, ge=1)
    small_batches: Literal["error", "drop"] = "error"
    hvg_flavor: Literal["seurat", "cell_ranger"] = "seurat"
    min_mean: float = 0.0125
    max_mean: float = 3.0
    min_disp: float = 0.5
    n_top_genes: int | None = Field(None, ge=2)
    hvg_batch_key: str | None = None
    regress_out: list[str] = ["total_counts", "pct_counts_mt"]
    max_value: float | None = Field(10.0, gt=0)
    n_comps: int = Field(50, ge=2)
    svd_solver: str = "arpack"
    n_neighbors: int = Field(10, ge=2)
    n_pcs: int = Field(30, ge=1)
    resolutions: list[float] = Field([0.6], min_length=1)
    leiden_flavor: Literal["leidenalg", "igraph"] = "leidenalg"
    key_added: str = "tcells"
    umap_min_dist: float = Field(0.5, ge=0)
    plot_genes: list[str] = ["CD3E", "CD4", "CD8A", "GNLY"]
    plot_parent_key: str | None = Field(None, description="parent clustering in the overview figure; None = groupby")
    random_state: int = 0


# ---------------------------------------------------------------------------------------- workflow
#: Stages in the order they run. A config lists the ones it wants in ``stages``.
STAGE_ORDER = [
    "prepare",
    "neighbors",
    "leiden",
    "kmeans",
    "hclust",
    "compare",
    "relationships",  # cluster dendrogram + marker dot plot (issue 4)
    "embedding",
    "composition",
    "qc",
    "heatmap",  # clustered heatmaps (issue 6)
    "subcluster",  # named subclusterings (issue 5)
    "report",  # stays last
]


class WorkflowConfig(_Params):
    """A whole run: input, output directory, the stages to run and their parameters.

    Sections that hold a list (``neighbors``, ``leiden``, ...) run once per entry, so several
    graphs or parameter sets fit in one run; a single mapping is taken as a one-entry list.
    """

    input: str = Field(description="Path to an .h5ad file, or builtin:NAME (simulate, pbmc68k)")
    outdir: str = "results"
    stages: list[str] = Field(default_factory=lambda: ["neighbors", "leiden", "embedding"], min_length=1)
    write_h5ad: bool = True
    background_umap: bool = Field(
        True,
        description="When a stage computes a UMAP (prepare, subcluster, a built-in simulated input), import and "
        "compile umap-learn in a spare process from the start of the run (saves ~10 s of numba compilation on a "
        "cold start; identical coordinates); false computes it in this process",
    )
    prepare: PrepareParams = PrepareParams()
    neighbors: list[NeighborsParams] = [NeighborsParams()]
    leiden: list[LeidenParams] = [LeidenParams()]
    kmeans: list[KMeansParams] = [KMeansParams()]
    hclust: list[HclustParams] = [HclustParams()]
    compare: CompareParams = CompareParams()
    relationships: RelationshipsParams = RelationshipsParams()
    embedding: list[EmbeddingParams] = [EmbeddingParams()]
    composition: CompositionParams = CompositionParams()
    qc: QCParams = QCParams()
    report: ReportParams = ReportParams()
    heatmap: list[HeatmapParams] = [HeatmapParams()]
    subcluster: dict[str, SubclusterParams] = {}  # named subclusterings (issue 5)
    figures: FiguresParams = FiguresParams()

    @model_validator(mode="before")
    @classmethod
    def _single_to_list(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for name, field in cls.model_fields.items():
                if typing.get_origin(field.annotation) is list and isinstance(data.get(name), dict):
                    data[name] = [data[name]]
        return data

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, v: list[str]) -> list[str]:
        unknown = [s for s in v if s not in STAGE_ORDER]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; valid: {', '.join(STAGE_ORDER)}")
        if len(set(v)) != len(v):
            raise ValueError(f"a stage is listed twice in {v}; list it once and give its section several entries")
        return sorted(v, key=STAGE_ORDER.index)


# ---------------------------------------------------------------------------------------- loading
def json_schema() -> dict[str, Any]:
    """JSON schema of :class:`WorkflowConfig` (for editors and Snakemake's ``validate``).

    List sections also accept a single mapping (taken as a one-entry list), as the models do.
    """
    schema = WorkflowConfig.model_json_schema()
    for prop in schema["properties"].values():
        items = prop.get("items", {})
        if prop.get("type") == "array" and "$ref" in items:
            array = {"type": "array", "items": items}
            for key in ("type", "items"):
                prop.pop(key)
            prop["anyOf"] = [{"$ref": items["$ref"]}, array]
    return schema


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that holds the key at ``loc`` (for 'valid keys' hints)."""
    model: type[BaseModel] = WorkflowConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return model
        sub = _find_model(field.annotation)
        if sub is None:
            return model
        model = sub
    return model


def _find_model(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        found = _find_model(arg)
        if found is not None:
            return found
    return None


def format_validation_error(err: ValidationError) -> str:
    """One line per problem: ``key.path: message (got value)``, with valid keys for unknown keys."""
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            model = _model_at(loc[:-1])
            valid = list(model.model_fields) if model else []
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            lines.append(f"unknown key {path!r}{hint} valid keys: {', '.join(valid)}")
        elif e["type"] == "missing":
            lines.append(f"missing required key {path!r}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{path}: {msg} (got {e.get('input')!r})")
    return lines[0] + (f" (and {len(lines) - 1} more problem(s): {'; '.join(lines[1:])})" if len(lines) > 1 else "")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (value parsed as YAML; list entries by index:
    ``leiden.0.resolutions=[0.5,1]``; a key of a list section without an index sets every entry)."""
    data = dict(data)
    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep or not path:
            raise ConfigError(f"--set expects key.path=value; got {item!r}")
        value = yaml.safe_load(raw)
        parts = path.split(".")
        _set_path(data, parts, value, item)
    return data


def _set_path(node: Any, parts: list[str], value: Any, item: str) -> None:
    head, rest = parts[0], parts[1:]
    if isinstance(node, list):
        if head.isdigit():
            i = int(head)
            if i >= len(node):
                raise ConfigError(f"--set {item!r}: index {i} out of range (the list has {len(node)} entries)")
            if rest:
                _set_path(node[i], rest, value, item)
            else:
                node[i] = value
        else:
            for entry in node:
                _set_path(entry, parts, value, item)
        return
    if not isinstance(node, dict):
        raise ConfigError(f"--set {item!r}: {head!r} is not inside a section")
    if not rest:
        node[head] = value
        return
    child = node.get(head)
    if child is None:
        field = WorkflowConfig.model_fields.get(head)
        child = [{}] if field is not None and typing.get_origin(field.annotation) is list else {}
        node[head] = child
    elif isinstance(child, dict):
        child = dict(child)
        node[head] = child
    elif isinstance(child, list):
        child = [dict(c) if isinstance(c, dict) else c for c in child]
        node[head] = child
    _set_path(child, rest, value, item)


def parse_config(data: dict[str, Any]) -> WorkflowConfig:
    """Validate a config mapping; raise :class:`ConfigError` with a one-line message."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections; got {type(data).__name__}")
    try:
        return WorkflowConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def load_config(
    path: str | Path, *, overrides: list[str] | None = None, input: str | None = None, outdir: str | None = None
) -> WorkflowConfig:
    """Read a YAML config, apply ``--set`` overrides and ``input`` / ``outdir``, and validate it.

    Relative ``input`` and ``outdir`` in the file are taken relative to the current directory.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections; got {type(data).__name__}")
    data = apply_overrides(data, overrides or [])
    if input is not None:
        data["input"] = input
    if outdir is not None:
        data["outdir"] = outdir
    return parse_config(data)
