"""Pages generated before Sphinx reads the sources, so they cannot drift from the code.

- ``generated/config.md``: the config reference, walked from :func:`scclust.config.json_schema`
  (every section and key, nested step groups included, with type, default, constraint and
  description);
- ``generated/api.md``: the API reference, one autosummary entry per name of the ``__all__`` of
  ``scclust.pp``, ``scclust.tl``, ``scclust.pl`` and ``scclust.datasets``, plus ``run`` /
  ``load_config`` / ``read_marker_sets``;
- ``generated/cli.md``: every command's ``--help``;
- ``generated/outputs_stages.inc``: per stage, every file it writes (from the report's
  :data:`scclust.report.OUTPUTS`: name, what it shows, its columns) and what it writes into the
  AnnData (the ``Returns`` section of the functions it calls);
- ``generated/walkthrough.md``: ``examples/walkthrough.py`` (a jupytext percent script) as a page,
  its markdown cells as text and its code cells as code (not executed here; the test suite
  executes the script as a notebook).

Both files are rewritten only when their text changes (Sphinx then rebuilds only what changed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent


# ---------------------------------------------------------------------------------------------
# config reference
# ---------------------------------------------------------------------------------------------


def _resolve(schema: dict, node: dict) -> dict:
    ref = node.get("$ref")
    if ref:
        return schema["$defs"][ref.rsplit("/", 1)[1]]
    return node


def _group_ref(schema: dict, node: dict) -> str | None:
    """The $defs name of a nested step group (an object model), directly or as ``X | null``."""
    if "$ref" in node:
        return node["$ref"].rsplit("/", 1)[1]
    for alt in node.get("anyOf", []):
        if "$ref" in alt:
            return alt["$ref"].rsplit("/", 1)[1]
    return None


def _type(node: dict) -> str:
    if "enum" in node:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "anyOf" in node:
        return " \\| ".join(dict.fromkeys(_type(a) for a in node["anyOf"]))
    if "$ref" in node:
        return "mapping"
    t = node.get("type")
    if t == "array":
        items = node.get("items")
        return f"list of {_type(items)}" if items else "list"
    if t == "object":
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            return f"mapping of str to {_type(extra)}"
        return "mapping"
    return {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "null"}.get(t, t or "any")


_BOUNDS = (
    ("minimum", ">="),
    ("exclusiveMinimum", ">"),
    ("maximum", "<="),
    ("exclusiveMaximum", "<"),
    ("minItems", "items >="),
    ("maxItems", "items <="),
    ("minLength", "length >="),
    ("maxLength", "length <="),
    ("pattern", "matches"),
)


def _constraint(node: dict) -> str:
    parts = []
    for alt in [node, *node.get("anyOf", []), *([node["items"]] if isinstance(node.get("items"), dict) else [])]:
        for key, op in _BOUNDS:
            if key in alt:
                parts.append(f"{op} {alt[key]}")
    return ", ".join(dict.fromkeys(parts))


def _cell(text: Any) -> str:
    import re

    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", str(text))  # reST roles in model docstrings
    return text.replace("|", "\\|").replace("\n", " ").strip()


def _default(node: dict, group: str | None) -> str:
    if "default" not in node:
        return "required" if group is None else "(see below)"
    if group is not None and isinstance(node["default"], dict):
        return "(see below)"
    return f"`{json.dumps(node['default'])}`"


def _fallback_docs(model: dict, section: str) -> dict[str, str]:
    """Parameter descriptions of the functions a section's model names (``:func:`scclust.pl.embedding```),
    for keys whose model field has no description of its own: the function's numpydoc entry."""
    import importlib
    import re

    from scclust._params import param_docs, plain
    from scclust.stages import REGISTRY

    text = model.get("description", "")
    if section in REGISTRY:  # the stage module's docstring names the functions the stage calls
        text += importlib.import_module(REGISTRY[section].run.__module__).__doc__ or ""
    docs: dict[str, str] = {}
    for target in re.findall(r":func:`~?([\w.]+)`", text):
        mod, _, name = target.rpartition(".")
        if not mod.startswith("scclust"):
            continue
        try:
            func = getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
        for key, text in param_docs(func).items():
            docs.setdefault(key, plain(text))
    return docs


def _table(schema: dict, model: dict, prefix: str, out: list[str], nested: list[tuple[str, dict, str]]) -> None:
    out += ["| key | type | default | constraint | description |", "|---|---|---|---|---|"]
    fallback = _fallback_docs(model, prefix.split(".")[0])
    for name, prop in model.get("properties", {}).items():
        key = f"{prefix}.{name}" if prefix else name
        group = _group_ref(schema, prop)
        typ = _type(prop)
        if group is not None:
            typ = typ.replace("mapping", f"mapping ([{key}](#{_anchor(key)}))", 1)
            nested.append((key, schema["$defs"][group], prop.get("description", "")))
        out.append(
            f"| `{key}` | {typ} | {_cell(_default(prop, group))} | {_cell(_constraint(prop))} "
            f"| {_cell(prop.get('description') or fallback.get(name, ''))} |"
        )
    out.append("")


def _anchor(key: str) -> str:
    return "cfg-" + key.replace(".", "-").replace("_", "-").lower()


def _section(schema: dict, key: str, model: dict, description: str, out: list[str], level: int) -> None:
    out += [f"({_anchor(key)})=", f"{'#' * level} `{key}`", ""]
    text = description or model.get("description", "")
    if text:
        out += [_cell(text), ""]
    if model.get("description") and description and model["description"] != description:
        out += [_cell(model["description"]), ""]
    nested: list[tuple[str, dict, str]] = []
    _table(schema, model, key, out, nested)
    for sub, sub_model, sub_desc in nested:
        _section(schema, sub, sub_model, sub_desc, out, min(level + 1, 4))


def config_reference() -> str:
    from scclust.config import json_schema

    schema = json_schema()
    out = [
        "# Config reference",
        "",
        "```{note}",
        "This page is generated from `scclust.config.json_schema()` when the documentation is built "
        "(the same schema `scclust schema` prints). Every description is the one in the numpydoc "
        "`Parameters` section of the function the key is passed to.",
        "```",
        "",
        "A config is one YAML mapping. Keys of a step group are written nested "
        "(`prepare: {hvg: {min_mean: 0.0125}}`) and addressed with dots on the command line "
        "(`--set prepare.hvg.min_mean=0.02`). Sections marked *mapping or list* take one mapping or a "
        "list of mappings (each entry runs once); `subcluster` takes a mapping of names (your choice, "
        "written `NAME` below) to entries. "
        "Unknown keys are errors that name the allowed ones.",
        "",
        "## Top-level keys",
        "",
    ]
    sections = []
    out += ["| key | type | default | constraint | description |", "|---|---|---|---|---|"]
    for name, prop in schema["properties"].items():
        group = _group_ref(schema, prop)
        extra = prop.get("additionalProperties")
        if group is None and isinstance(extra, dict) and "$ref" in extra:
            group = extra["$ref"].rsplit("/", 1)[1]
        if group is None:
            out.append(
                f"| `{name}` | {_type(prop)} | {_cell(_default(prop, None))} | {_cell(_constraint(prop))} "
                f"| {_cell(prop.get('description', ''))} |"
            )
            continue
        how = "mapping"
        if "anyOf" in prop and any(a.get("type") == "array" for a in prop["anyOf"]):
            how = "mapping or list of mappings"
        elif prop.get("type") == "object" and isinstance(prop.get("additionalProperties"), dict):
            how = "mapping of names to mappings"
        target = f"{name}.NAME" if how.startswith("mapping of names") else name
        about = prop.get("description") or schema["$defs"][group].get("description", "").split("\n\n")[0]
        out.append(f"| `{name}` | {how} ([{target}](#{_anchor(target)})) | | | {_cell(about)} |")
        key = name
        if how.startswith("mapping of names"):
            key = f"{name}.NAME"  # a mapping of names (of your choice) to entries
        sections.append((key, schema["$defs"][group], prop.get("description", "")))
    out.append("")
    out += ["## Sections", ""]
    for name, model, desc in sections:
        _section(schema, name, model, desc, out, 3)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# the walkthrough notebook as a page
# ---------------------------------------------------------------------------------------------


def walkthrough_page() -> str:
    import jupytext

    nb = jupytext.read(ROOT / "examples" / "walkthrough.py")
    note = [
        "```{note}",
        "This page is `examples/walkthrough.py`, a jupytext script: open it as a notebook with "
        "`jupytext --to notebook examples/walkthrough.py`. The code is shown here without its "
        "outputs; the test suite executes it as a notebook (`tests/test_notebook.py`).",
        "```",
        "",
    ]
    out: list[str] = []
    for cell in nb.cells:
        src = cell.source.strip("\n")
        if not src:
            continue
        if cell.cell_type == "markdown":
            out += [src, ""]
        elif cell.cell_type == "code":
            lines = [ln for ln in src.splitlines() if not ln.startswith(("# %matplotlib", "# ruff:"))]
            out += ["```python", *lines, "```", ""]
        if note and out and out[0].startswith("# "):
            out += note
            note = []
    return "\n".join(note + out) + "\n"


# ---------------------------------------------------------------------------------------------
# API reference: every name of each subpackage's __all__
# ---------------------------------------------------------------------------------------------

_API = (
    (
        "pp",
        "Preprocessing: `scclust.pp`",
        "Graphs, integration and the raw-count chain. The step groups (`QC`, `HVG`, `PCA`, `Graph`, `Umap`) "
        "hold the options of one step each and are passed as one mapping "
        '(`pp.prepare(adata, hvg={"n_top_genes": 2000})`), as a config nests them.',
    ),
    (
        "tl",
        "Tools: `scclust.tl`",
        "Clustering and analysis. Functions whose result a figure shows return it (a DataFrame or a result "
        "object), and the `pl` function of the same name draws it.",
    ),
    (
        "pl",
        "Plotting: `scclust.pl`",
        "Figures. Every function returns a `matplotlib.figure.Figure` and never modifies the AnnData; when a "
        "result it needs is missing it raises and names the `tl` call that makes it.",
    ),
    (
        "datasets",
        "Datasets: `scclust.datasets`",
        "Built-in simulated data (no download) and a registry of real datasets fetched with a checksum.",
    ),
)


def api_page() -> str:
    import importlib
    import inspect

    out = [
        "# API reference",
        "",
        "Every public name of `scclust.pp`, `scclust.tl`, `scclust.pl` and `scclust.datasets` (this page "
        "is generated from their `__all__`), and the run API. Import the package as `import scclust as scc`.",
        "",
        "Conventions, as in scanpy: `adata` is the only positional argument, everything else is keyword-only; "
        "tools write labels to `.obs`, graphs to `.obsp` (their key recorded in `.uns[neighbors_key]`), "
        'embeddings to `.obsm`, parameters to `.uns[key]["params"]`, and return `None` unless `copy=True`. '
        "The `Parameters` section of a function is also the description of the config key of the same name "
        "(see the [config reference](config.md)); each function's `Returns` section names every key it writes.",
        "",
        "## Run API",
        "",
        "`scc.load_config(path)` validates a YAML config; `scc.run(cfg)` runs it and returns the AnnData and the "
        "manifest, as `scclust run` does. `scc.read_marker_sets(path)` reads marker sets "
        "(`{cell type: [gene, ...]}`) from a YAML file for `scc.tl.annotate`.",
        "",
        "```{eval-rst}",
        ".. currentmodule:: scclust",
        "",
        ".. autosummary::",
        "   :toctree: api",
        "   :nosignatures:",
        "",
        "   run",
        "   load_config",
        "   read_marker_sets",
        "```",
        "",
    ]
    for name, title, intro in _API:
        mod = importlib.import_module(f"scclust.{name}")
        names = list(mod.__all__)
        funcs = [n for n in names if inspect.isfunction(getattr(mod, n))]
        classes = [n for n in names if inspect.isclass(getattr(mod, n))]
        data = [n for n in names if n not in funcs and n not in classes]
        out += [f"## {title}", "", intro, "", "```{eval-rst}", f".. currentmodule:: scclust.{name}", ""]
        if funcs:
            out += [".. autosummary::", "   :toctree: api", "   :nosignatures:", "", *(f"   {n}" for n in funcs), ""]
        if classes:
            out += [
                ".. rubric:: Classes",
                "",
                ".. autosummary::",
                "   :toctree: api",
                "   :nosignatures:",
                "",
                *(f"   {n}" for n in classes),
                "",
            ]
        if data:
            out += [".. rubric:: Constants", ""]
            for n in data:
                out += [f".. autodata:: {n}", "   :no-value:", ""]
        out += ["```", ""]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# command line: each command's --help
# ---------------------------------------------------------------------------------------------


def cli_page() -> str:
    import argparse
    import os

    from scclust.cli import _parser

    os.environ.setdefault("COLUMNS", "100")
    parser = _parser()
    out = [
        "# Command line",
        "",
        "This page is generated from the command's own `--help`. The command holds no defaults of its own: "
        "every option of a run is a config key ([config reference](config.md)).",
        "",
        "```text",
        parser.format_help().rstrip(),
        "```",
        "",
    ]
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subs.choices.items():
        out += [f"## `scclust {name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    out += [
        "## Exit status",
        "",
        "| status | meaning |",
        "|---|---|",
        "| 0 | success |",
        "| 2 | a problem with the config, the data or the output location (a file where the directory should be, "
        "no write permission, a full disk, an unreachable Dask scheduler), explained on one line |",
        "| 130 | interrupted (Ctrl-C); rerun the same command to resume from the checkpoint |",
        "| 1 | a bug: rerun with `--debug` for the traceback and report it |",
        "",
    ]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# outputs reference: the report's OUTPUTS registry and the tools' Returns sections
# ---------------------------------------------------------------------------------------------

#: the functions whose Returns section says what a stage writes into the AnnData
_STAGE_TOOLS = {
    "prepare": ("scclust.pp.prepare",),
    "neighbors": ("scclust.pp.neighbors",),
    "leiden": ("scclust.tl.leiden",),
    "kmeans": ("scclust.tl.kmeans",),
    "hclust": ("scclust.tl.hclust",),
    "relationships": ("scclust.tl.dendrogram",),
    "subcluster": ("scclust.tl.subcluster", "scclust.tl.transfer_subclusters"),
    "stability": ("scclust.tl.stability",),
}


def readable(pattern: str) -> str:
    """``composition_(?P<g>.+)_by_(?P<b>.+)`` -> ``composition_{g}_by_{b}``."""
    import re

    pattern = re.sub(r"\(\?:_\(\?P<(\w+)>[^()]*\)\)\?", r"[_{\1}]", pattern)
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("(?P<", i):
            name = pattern[i + 4 : pattern.index(">", i)]
            depth, j = 0, i
            while True:
                depth += {"(": 1, ")": -1}.get(pattern[j], 0)
                j += 1
                if depth == 0:
                    break
            out.append("{" + name + "}")
            i = j
        else:
            out.append(pattern[i])
            i += 1
    return "".join(out).replace("\\", "")


def _returns(qualname: str) -> str:
    import importlib
    import inspect
    import re

    mod, _, name = qualname.rpartition(".")
    doc = inspect.getdoc(getattr(importlib.import_module(mod), name)) or ""
    m = re.search(r"^Returns\n-------\n(.*?)(?=^\w[\w ]*\n-{3,}\n|\Z)", doc, re.S | re.M)
    text = m.group(1).strip() if m else ""
    return re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)


def outputs_page() -> str:
    from scclust.report import OUTPUTS, STAGES, docs_link  # noqa: F401

    out: list[str] = []
    for stage, info in STAGES.items():
        entries = [o for o in OUTPUTS if o.stage == stage]
        tools = _STAGE_TOOLS.get(stage, ())
        if not entries and not tools:
            continue
        anchor = "out-" + stage.replace("_", "-")
        name = "cluster labels" if stage == "write_outputs" else f"`{stage}`"
        out += [f"({anchor})=", f"## {info.title} ({name})", "", info.lead, ""]
        for o in entries:
            folder, ext = ("figures", "png") if o.kind == "figure" else ("tables", "csv")
            out += [f"**`{folder}/{readable(o.pattern)}.{ext}`**: *{o.title}.* {o.caption}", ""]
            if o.columns:
                out += ["| column | meaning |", "|---|---|"]
                out += [f"| `{k}` | {v.replace('|', chr(92) + '|')} |" for k, v in o.columns]
                out.append("")
        for tool in tools:
            text = _returns(tool)
            if text:
                out += [f"Written into the AnnData by {{func}}`{tool}`:", "", text, ""]
    return "\n".join(out) + "\n"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def _remove_stale_stubs() -> None:
    """Autosummary stubs of names no longer public (it writes new stubs but never removes old ones)."""
    import importlib

    names = {"scclust.run", "scclust.load_config", "scclust.read_marker_sets"}
    for mod, _, _ in _API:
        names |= {f"scclust.{mod}.{n}" for n in importlib.import_module(f"scclust.{mod}").__all__}
    for stub in (DOCS / "generated" / "api").glob("*.rst"):
        if stub.stem not in names:
            stub.unlink()


def generate(app: Any = None) -> None:
    _write(DOCS / "generated" / "config.md", config_reference())
    _write(DOCS / "generated" / "walkthrough.md", walkthrough_page())
    _write(DOCS / "generated" / "api.md", api_page())
    _remove_stale_stubs()
    _write(DOCS / "generated" / "cli.md", cli_page())
    _write(DOCS / "generated" / "outputs_stages.inc", outputs_page())


def _data_docstring(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """Constants are documented by a ``#:`` comment written as plain text: shown verbatim."""
    if what == "data" and lines:
        text = list(lines)
        lines[:] = ["::", "", *("   " + ln for ln in text), ""]


def strip_annotated(text: str) -> str:
    """``Annotated[int, Field(ge=1)]`` -> ``int`` in a rendered signature (constraints are in the
    config reference; the signature shows the type)."""
    while (start := text.find("Annotated[")) != -1:
        i, depth, first_end = start + len("Annotated["), 1, None
        while depth:
            ch = text[i]
            if ch in "[(":
                depth += 1
            elif ch in "])":
                depth -= 1
            elif ch == "," and depth == 1 and first_end is None:
                first_end = i
            i += 1
        inner = text[start + len("Annotated[") : first_end if first_end is not None else i - 1]
        text = text[:start] + inner.strip() + text[i:]
    return text


def _signature(
    app: Any, what: str, name: str, obj: Any, options: Any, signature: str | None, return_annotation: str | None
) -> tuple[str | None, str | None] | None:
    if signature is None:
        return None
    return strip_annotated(signature), return_annotation


def setup(app: Any) -> dict[str, Any]:
    app.connect("autodoc-process-signature", _signature)
    # before autosummary scans the sources for stubs (it does so at builder-inited)
    app.connect("config-inited", lambda app, config: generate())
    app.connect("autodoc-process-docstring", _data_docstring)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
