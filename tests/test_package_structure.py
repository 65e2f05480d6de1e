"""API conventions checked on every public function (scanpy's tests/test_package_structure.py in spirit),
the layering of the package, and that every config option is the function's own declaration."""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path

import pytest

import scclust as scc
from scclust import _params

SRC = Path(scc.__file__).parent
#: first positional parameter names allowed besides ``adata`` (a matrix, a table or a result)
FIRST = {"adata", "data", "result", "hvg", "keys", "path"}


def _public():
    out = []
    for sub in ("pp", "tl", "pl", "datasets"):
        mod = getattr(scc, sub)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.isfunction(obj) or (callable(obj) and hasattr(obj, "__wrapped__")):
                out.append((f"{sub}.{name}", obj))
    return out


PUBLIC = _public()


@pytest.mark.parametrize(("name", "func"), PUBLIC, ids=[n for n, _ in PUBLIC])
def test_signature_conventions(name, func):
    """One positional argument at most (the data), everything else keyword-only; no worker or
    executor arguments; every parameter described in the docstring."""
    params = list(inspect.signature(func).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not name.startswith("datasets."):  # datasets: sizes and paths, as numpy's constructors
        assert len(positional) <= 1, positional
        assert not positional or positional[0].name in FIRST, positional[0].name
    assert not {"worker", "umap_worker", "executor", "wait"} & {p.name for p in params}
    docs = _params.param_docs(func)
    undocumented = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in docs]
    assert not undocumented, undocumented


@pytest.mark.parametrize(
    ("name", "func"),
    [(n, f) for n, f in PUBLIC if n.split(".")[0] in ("pp", "tl", "pl")],
    ids=[n for n, _ in PUBLIC if n.split(".")[0] in ("pp", "tl", "pl")],
)
def test_arguments_are_validated_the_same_way(name, func):
    """Every public pp / tl / pl function checks its arguments through its annotations: a wrong
    type is a one-line ConfigError naming the function and the argument."""
    assert getattr(func, "__scclust_validated__", False), f"{name} is not decorated with scclust._params.validated"


def test_pipeline_functions_take_step_groups():
    for func in (scc.pp.prepare, scc.tl.subcluster):
        n = len(inspect.signature(func).parameters) - 1  # adata
        assert n <= 15, (func.__name__, n)
    groups = {k: typing.get_type_hints(scc.pp.prepare)[k] for k in ("qc", "hvg", "pca", "graph")}
    assert all(issubclass(g, _params.Group) for g in groups.values())
    sub = typing.get_type_hints(scc.tl.subcluster)
    assert issubclass(sub["hvg"], scc.pp.HVG) and issubclass(sub["graph"], scc.pp.Graph) and sub["pca"] is scc.pp.PCA


def test_config_options_are_the_functions_declarations():
    """A stage's options are generated from the function it calls: same defaults, same constraints
    (a bad value fails in both with the same message), descriptions from the docstring."""
    from scclust.config import WorkflowConfig
    from scclust.stages import REGISTRY

    pairs = {
        "neighbors": scc.pp.neighbors,
        "leiden": scc.tl.leiden,
        "kmeans": scc.tl.kmeans,
        "hclust": scc.tl.hclust,
        "stability": scc.tl.stability,
        "prepare": scc.pp.prepare,
        "subcluster": scc.tl.subcluster,
    }
    for stage, func in pairs.items():
        model = REGISTRY[stage].params
        sig = inspect.signature(func).parameters
        docs = _params.param_docs(func)
        shared = [k for k in model.model_fields if k in sig]
        assert len(shared) >= 5, stage
        for key in shared:
            default = sig[key].default
            field = model.model_fields[key]
            if (default is not inspect.Parameter.empty and stage != "subcluster") or key not in ("select",):
                expected = list(default) if isinstance(default, tuple) else default
                if not (stage == "subcluster" and key in ("umap",)):
                    assert field.get_default(call_default_factory=True) == expected, (stage, key)
            assert field.description == _params.plain(docs[key]), (stage, key)
    assert "leiden" in WorkflowConfig.model_fields
    # one constraint, two ways in: the same message from a config and from a call
    from scclust._errors import ConfigError
    from scclust.config import parse_config

    with pytest.raises(ConfigError, match=r"n_neighbors: Input should be greater than or equal to 2"):
        parse_config({"input": "x", "neighbors": {"n_neighbors": 1}})
    adata = scc.datasets.pbmc68k()
    with pytest.raises(ConfigError, match=r"^neighbors\(\): n_neighbors: Input should be greater than or equal to 2"):
        scc.pp.neighbors(adata, n_neighbors=1)


def _imports(path: Path) -> set[str]:
    """Modules a file imports, relative imports resolved against the package (``scclust.config``)."""
    tree = ast.parse(path.read_text())
    pkg = ["scclust", *path.relative_to(SRC).parts[:-1]]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = pkg[: len(pkg) - node.level + 1] if node.level else []
            mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_layers_point_down():
    """The bottom floor (``scclust/_*.py``) imports no module of the floors above (also not inside
    functions); tools (pp, tl) import neither figures nor stages."""
    above = ("scclust.config", "scclust.stages", "scclust.workflow", "scclust.report", "scclust.cli")
    for path in sorted(p for p in SRC.glob("_*.py") if not p.name.startswith("__")):
        bad = [m for m in _imports(path) if m.startswith(above)]
        assert not bad, (path.name, bad)
    for sub in ("pp", "tl"):
        for path in sorted((SRC / sub).glob("*.py")):
            bad = [m for m in _imports(path) if m.startswith((*above, "scclust.pl"))]
            assert not bad, (f"{sub}/{path.name}", bad)


def test_input_spec_is_parsed_in_one_place():
    """Only scclust._input knows the syntax of an input spec (``builtin:``, ``data:``)."""
    for path in SRC.rglob("*.py"):
        if path.name == "_input.py":
            continue
        text = path.read_text()
        for pattern in ('startswith("builtin:', 'startswith("data:', 'removeprefix("builtin:', 'partition("?")'):
            assert pattern not in text, (path.relative_to(SRC), pattern)


def test_warnings_point_at_the_callers_line(recwarn):
    """A warning raised inside a validated tool names the user's file and line, not scclust's."""
    import warnings

    adata = scc.datasets.pbmc68k()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scc.pl.dotplot(adata, groupby="bulk_labels", genes=["CST3", "LYZ", "NOT_A_GENE_X"], dendrogram=False)
    ours = [w for w in caught if issubclass(w.category, scc._errors.ScclustWarning)]
    assert ours and all(Path(w.filename).resolve() == Path(__file__).resolve() for w in ours), [
        (w.filename, w.lineno) for w in ours
    ]
