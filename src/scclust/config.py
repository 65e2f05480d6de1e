"""Validated configuration: the :class:`WorkflowConfig`, derived from the stage registry.

Each stage's ``*Params`` model lives in its module in :mod:`scclust.stages` (re-exported here);
its field names and defaults equal its function's keyword arguments and both use the shared
types of :mod:`scclust._types`, so a stage runs as ``tl.leiden(adata, **cfg.leiden[0].model_dump())``.
``extra="forbid"`` everywhere: a misspelt key is an error that names it and lists the valid keys.
The JSON schema (``scclust schema``) is generated from these models.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from ._errors import ConfigError, MissingFileError, format_validation_error, model_in
from .stages import REGISTRY, Params, Stage
from .stages.compare import CompareParams
from .stages.composition import CompositionParams
from .stages.embedding import EmbeddingParams
from .stages.hclust import HclustParams
from .stages.heatmap import HeatmapParams
from .stages.kmeans import KMeansParams
from .stages.leiden import LeidenParams
from .stages.neighbors import NeighborsParams
from .stages.prepare import PrepareParams
from .stages.qc import QCParams
from .stages.relationships import RelationshipsParams
from .stages.report import ReportParams
from .stages.sketch import SketchParams
from .stages.subcluster import SubclusterParams

__all__ = [
    "STAGE_ORDER",
    "CompareParams",
    "CompositionParams",
    "DaskParams",
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
    "SketchParams",
    "SubclusterParams",
    "WorkflowConfig",
    "apply_overrides",
    "json_schema",
    "load_config",
    "parse_config",
    "template",
]


class FiguresParams(Params):
    """How figures are written."""

    formats: list[Literal["png", "pdf", "svg"]] = Field(
        ["png"], min_length=1, description="file formats of every figure (figures/{name}.{format})"
    )
    dpi: int = Field(150, ge=50, le=600, description="resolution of raster figures (png), dots per inch")
    graph_block: int = Field(
        0,
        ge=0,
        le=5000,
        description="neighbors stage: draw the first N x N cells of each graph (the Seurat lab's kNN / SNN "
        "heat maps, N = 200) into figures/graph_{key_added}.png; 0 = none",
    )

    @field_validator("graph_block")
    @classmethod
    def _block(cls, v: int) -> int:
        if v == 1:
            raise ValueError("graph_block must be 0 (no figure) or at least 2 cells")
        return v


class DaskParams(Params):
    """The Dask cluster of out-of-core steps (``prepare.backend: dask``, subclustering from a counts store)."""

    address: str | None = Field(
        None,
        description="scheduler address (tcp://host:8786) of an existing cluster, e.g. "
        "dask-jobqueue's SLURMCluster; empty: a local cluster on this machine (--dask-address)",
    )
    n_workers: int | None = Field(None, ge=1, description="local cluster: worker processes (default: one per core)")
    memory_limit: str | None = Field(
        None, description="local cluster: memory per worker, e.g. '6GB' (default: 70% of RAM shared by the workers)"
    )


#: Stages in the order they run (from the registry). A config lists the ones it wants in ``stages``.
STAGE_ORDER = list(REGISTRY)


class _WorkflowBase(Params):
    """A whole run: input, output directory, the stages to run and their parameters.

    Sections that hold a list (``neighbors``, ``leiden``, ...) run once per entry, so several
    graphs or parameter sets fit in one run; a single mapping is taken as a one-entry list.
    """

    input: str = Field(
        description="the data: an .h5ad file (integrated, or raw counts with the prepare stage), a "
        ".zarr / 10x .h5 counts store, builtin:NAME (simulate, pbmc68k, counts, integrated, "
        "counts_store) or data:NAME (a registered dataset, fetched and verified)"
    )
    outdir: str = Field(
        "results",
        description="output directory: figures/, tables/, clustered.h5ad, manifest.json, "
        "report.html (created; reruns reuse finished stages)",
    )
    stages: list[str] = Field(
        default_factory=lambda: [n for n, s in REGISTRY.items() if s.default],
        min_length=1,
        description="the stages to run (they run in the canonical order whatever the order "
        "given); each has a section of the same name",
    )
    write_h5ad: bool = Field(True, description="write the clustered AnnData (clustered.h5ad)")
    resume: bool = Field(
        True,
        description="reuse the checkpoint of finished stages in outdir when the input and "
        "their config are unchanged (--no-resume: run every stage)",
    )
    background_umap: bool = Field(
        True,
        description="When a stage computes a UMAP (prepare, subcluster, a built-in simulated input), import and "
        "compile umap-learn in a spare process from the start of the run (saves ~10 s of numba compilation on a "
        "cold start; identical coordinates); false computes it in this process",
    )
    memory_limit: str | int = Field(
        "auto",
        description="memory the run may use: before any stage runs, each stage's peak is estimated from the "
        "sizes and a stage that would not fit stops the run (exit 2, with the estimate and the options); 'auto': "
        "the memory available to this process (the machine's, or its cgroup's limit), or a size such as '16GB', "
        "'500MB', '8GiB', or bytes",
    )
    figures: FiguresParams = Field(FiguresParams(), description="how figures are written")
    dask: DaskParams = Field(
        DaskParams(),
        description="the Dask cluster of out-of-core steps (a local one, or an existing scheduler's address)",
    )

    @model_validator(mode="before")
    @classmethod
    def _single_to_list(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for name, stage in REGISTRY.items():
                if stage.repeat == "list" and isinstance(data.get(name), dict):
                    data[name] = [data[name]]
        return data

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _memory_limit(cls, v: Any) -> Any:
        from ._memory import parse_memory_limit

        parse_memory_limit(v)  # raises, naming the valid forms
        return v

    @field_validator("stages", mode="before")
    @classmethod
    def _stages_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, v: list[str]) -> list[str]:
        unknown = [s for s in v if s not in STAGE_ORDER]
        if unknown:
            close = [m for u in unknown for m in difflib.get_close_matches(u, STAGE_ORDER, n=1)]
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"unknown stage(s) {unknown}{hint} valid: {', '.join(STAGE_ORDER)}")
        if len(set(v)) != len(v):
            raise ValueError(f"a stage is listed twice in {v}; list it once and give its section several entries")
        return sorted(v, key=STAGE_ORDER.index)

    def entries(self, stage: str) -> dict[str, Any]:
        """``{label: params}`` of one stage's section (see :meth:`scclust.stages.Stage.entries`)."""
        return REGISTRY[stage].entries(getattr(self, stage))


def _section_type(stage: Stage) -> Any:
    return {"single": stage.params, "list": list[stage.params], "named": dict[str, stage.params]}[stage.repeat]


#: The model of a whole config: the base fields plus one section per registered stage.
WorkflowConfig = create_model(
    "WorkflowConfig",
    __base__=_WorkflowBase,
    __module__=__name__,
    **{
        name: (_section_type(st), Field(default_factory=st.default_section, description=st.description))
        for name, st in REGISTRY.items()
    },
)
WorkflowConfig.__doc__ = _WorkflowBase.__doc__


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


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (value parsed as YAML; list entries by index:
    ``leiden.0.resolutions=[0.5,1]``; a key of a list section without an index sets every entry)."""
    data = dict(data)
    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep or not path:
            raise ConfigError(f"--set expects key.path=value; got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(
                f"--set {item!r}: the value is not valid YAML ({getattr(err, 'problem', err)}); "
                "quote strings, write lists as [a, b]"
            ) from None
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
        stage = REGISTRY.get(head)
        child = [{}] if stage is not None and stage.repeat == "list" else {}
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
        raise ConfigError(format_validation_error(err, WorkflowConfig, data=data)) from None


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
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path} is not a UTF-8 text file (byte {err.start}); save the config as UTF-8 YAML"
        ) from None
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
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


# ---------------------------------------------------------------------------------------- templates
#: the stages a template lists, by the kind of input
_INTEGRATED_STAGES = [
    "neighbors",
    "leiden",
    "kmeans",
    "hclust",
    "compare",
    "relationships",
    "embedding",
    "composition",
    "qc",
    "subcluster",
    "report",
]
TEMPLATE_STAGES = {"integrated": _INTEGRATED_STAGES, "counts": ["prepare", *_INTEGRATED_STAGES]}
#: batch / sample columns looked for in an input, in this order
BATCH_COLUMNS = ("sample", "batch", "donor", "orig.ident", "library", "patient", "sample_id")


def template(
    kind: Literal["integrated", "counts"] = "integrated", adata: Any = None, input: str = "my_data.h5ad"
) -> str:
    """A commented config for ``kind`` of input (``scclust init``): every key of the stages it lists with
    its default and its description (from the functions' docstrings, as the schema). With ``adata``
    (the user's input, read without its matrix), the keys it names are the input's own: its batch
    column, embedding, layout, marker genes present, breakdown columns."""
    from ._keys import leiden_keys

    obs = list(adata.obs.columns) if adata is not None else []
    obsm = list(adata.obsm.keys()) if adata is not None else []
    genes = set(
        adata.raw.var_names
        if adata is not None and adata.raw is not None
        else adata.var_names
        if adata is not None
        else []
    )
    batch = next((c for c in BATCH_COLUMNS if c in obs), None) if adata is not None else "sample"
    rep = (
        "X_pca_harmony"
        if kind == "counts"
        else next(
            (k for k in ("X_pca_harmony", "X_scVI", "X_scvi", "X_harmony", "X_pca") if k in obsm), "X_pca_harmony"
        )
    )
    basis = (
        ("X_umap_harmony" if batch else "X_umap")
        if kind == "counts"
        else next((k for k in ("X_umap_harmony", "X_umap") if k in obsm), "X_umap")
    )
    from .datasets import LAB_MARKERS

    markers = [g for g in LAB_MARKERS if adata is None or g in genes]
    leiden = [0.4, 0.6, 1.0, 1.4]
    values: dict[str, dict[str, Any]] = {
        "prepare": {"batch_key": batch},
        "neighbors": {"use_rep": rep, "n_pcs": 30, "n_neighbors": 20},
        "leiden": {"resolutions": leiden},
        "kmeans": {"use_rep": rep},
        "hclust": {"use_rep": rep},
        "relationships": {"genes": markers, "use_rep": rep},
        "embedding": {"basis": basis, "genes": markers[:4]},
        "composition": {
            "groupby": [leiden_keys("leiden", [0.6])[0]],
            "by": [c for c in (batch, "condition", "type") if c and (adata is None or c in obs)],
        },
        "qc": {"groupby": [leiden_keys("leiden", [0.6])[0]]},
        "subcluster": {
            "tnk": {
                "groupby": leiden_keys("leiden", [0.4])[0],
                "batch_key": batch,
                "select": {"markers": {"T": ["CD3E"], "NK": ["GNLY", "NKG7"]}},
            }
        },
    }
    stages = TEMPLATE_STAGES[kind]
    if not values["composition"]["by"]:  # one sample, nothing to break the clusters down by
        stages = [s for s in stages if s != "composition"]
    if adata is not None and kind == "integrated" and not {"n_genes_by_counts", "total_counts"} & set(obs):
        stages = [s for s in stages if s != "qc"]
    lines = [
        f"# scclust config for {'raw counts' if kind == 'counts' else 'an integrated AnnData'} (scclust init).",
        "# Each key: its default and what it does. Check it against the data: scclust validate THIS_FILE",
        f"input: {input}",
        "outdir: results",
        f"stages: [{', '.join(stages)}]",
        "",
    ]
    for name in stages:
        stage = REGISTRY[name]
        given = values.get(name, {})
        lines.append(f"# {stage.description}")
        if stage.repeat == "named":
            lines.append(f"{name}:")
            for entry, entry_values in given.items():
                lines.append(f"  {entry}:")
                lines += _model_lines(stage.params, entry_values, indent=4)
        else:
            lines.append(f"{name}:")
            lines += _model_lines(stage.params, given, indent=2)
        lines.append("")
    return "\n".join(lines)


def _model_lines(model: Any, given: dict[str, Any], indent: int) -> list[str]:
    import textwrap

    from pydantic import BaseModel

    pad = " " * indent
    out = []
    for key, field in model.model_fields.items():
        desc = field.description or ""
        out += [f"{pad}# {line}" for line in textwrap.wrap(desc, 100 - indent - 2)]
        value = given.get(key, field.get_default(call_default_factory=True))
        sub = model_in(field.annotation)
        if sub is not None and (isinstance(value, BaseModel | dict)):
            out.append(f"{pad}{key}:")
            values = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
            out += _model_lines(sub, values, indent + 2)
            continue
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
        out.append(f"{pad}{key}: {text.removesuffix(chr(10) + '...').removesuffix('...').strip()}")
    return out
