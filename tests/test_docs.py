"""The documentation site: it builds with warnings as errors, documents every config key and every
public function, and the README stays a front door whose commands are the ones CI runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

pytest.importorskip("sphinx", reason="the docs extra is not installed (pip install -e '.[docs]')")
pytest.importorskip("myst_parser", reason="the docs extra is not installed (pip install -e '.[docs]')")
pytest.importorskip("furo", reason="the docs extra is not installed (pip install -e '.[docs]')")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "html"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q", str(DOCS), str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={**_env(), "MPLBACKEND": "agg"},
    )
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    print(f"docs built in {time.perf_counter() - t0:.1f} s")
    return out


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def _text(path: Path) -> str:
    """The visible text of a built page (tags removed, entities of interest decoded)."""
    page = path.read_text()
    return re.sub(r"<[^>]+>", "", page).replace("&quot;", '"').replace("&#39;", "'").replace("&amp;", "&")


def _schema_keys(schema: dict) -> list[str]:
    """Every config key as a dotted path, step groups included (``prepare.hvg.min_mean``); a named
    section's entries as ``subcluster.NAME.<key>``."""
    defs = schema["$defs"]

    def model(node: dict) -> dict | None:
        for alt in [node, *node.get("anyOf", [])]:
            if "$ref" in alt:
                return defs[alt["$ref"].rsplit("/", 1)[1]]
            if alt.get("type") == "array" and "$ref" in alt.get("items", {}):
                return defs[alt["items"]["$ref"].rsplit("/", 1)[1]]
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and "$ref" in extra:
            return {"named": defs[extra["$ref"].rsplit("/", 1)[1]]}
        return None

    keys: list[str] = []

    def walk(props: dict, prefix: str) -> None:
        for name, node in props.items():
            path = f"{prefix}{name}"
            keys.append(path)
            sub = model(node)
            if sub is None:
                continue
            if "named" in sub:
                walk(sub["named"].get("properties", {}), f"{path}.NAME.")
            else:
                walk(sub.get("properties", {}), f"{path}.")

    walk(schema["properties"], "")
    return keys


def test_site_builds_without_warnings(site):
    for page in (
        "index",
        "getting-started",
        "generated/config",
        "generated/api",
        "generated/cli",
        "generated/walkthrough",
        "reference/outputs",
        "benchmarks",
        "changelog",
        *(f"guide/{p.stem}" for p in (DOCS / "guide").glob("*.md")),
    ):
        assert (site / f"{page}.html").is_file(), page


def test_every_config_key_is_in_the_config_reference(site):
    proc = subprocess.run(
        [sys.executable, "-m", "scclust", "schema"], capture_output=True, text=True, env=_env(), check=True
    )
    keys = _schema_keys(json.loads(proc.stdout))
    assert "prepare.hvg.min_mean" in keys and "subcluster.NAME.graph.min_recall" in keys
    assert "subcluster.NAME.select.markers" in keys and "dask.address" in keys
    text = _text(site / "generated" / "config.html")
    missing = [k for k in keys if k not in text]
    assert not missing, f"config keys missing from the config reference: {missing}"
    # every key has a description (the generated page's rows end with a non-empty cell)
    rows = [r for r in (DOCS / "generated" / "config.md").read_text().splitlines() if r.startswith("| `")]
    undescribed = [r.split("|")[1].strip() for r in rows if r.rstrip().endswith("|  |")]
    assert not undescribed, f"config keys without a description: {undescribed}"


def test_every_public_function_is_in_the_api_reference(site):
    import importlib

    api = (site / "generated" / "api.html").read_text()
    for mod in ("pp", "tl", "pl", "datasets"):
        m = importlib.import_module(f"scclust.{mod}")
        for name in m.__all__:
            full = f"scclust.{mod}.{name}"
            assert full in api, f"{full} is not in the API reference"
            obj = getattr(m, name)
            if callable(obj):
                page = site / "generated" / "api" / f"{full}.html"
                assert page.is_file(), f"no page for {full}"
                assert f'id="{full}"' in page.read_text(), f"{full} is not documented on its page"
    for name in ("run", "load_config"):
        assert (site / "generated" / "api" / f"scclust.{name}.html").is_file()


def test_the_report_links_to_existing_sections_of_the_outputs_reference(site):
    from scclust.report import DOCS_URL, OUTPUTS_PAGE, STAGES, docs_link

    page = (site / OUTPUTS_PAGE).read_text()
    for stage in STAGES:
        anchor = docs_link(stage).removeprefix(f"{DOCS_URL}{OUTPUTS_PAGE}#")
        assert f'id="{anchor}"' in page, stage
    text = _text(site / OUTPUTS_PAGE)
    for name in (
        "clustered.h5ad",
        "manifest.json",
        "report.html",
        "subclusters/",
        "tables/cluster_labels.csv",
        "figures/dotplot_{g}.png",
        '.uns["neighbors"]',
        "leiden_0.4_colors",
    ):
        assert name in text, name


def test_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    # the test command is exactly the one CI runs
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert f"```bash\n{ci}\n```" in readme
    assert "scclust run configs/demo.yaml\n```" in readme
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert figures and all((ROOT / f).is_file() and (ROOT / f).stat().st_size < 300_000 for f in figures)
    for link in re.findall(r"\]\(((?:docs|examples)/[^)#]+)", readme):
        assert (ROOT / link).exists(), link
    for stage in (
        "prepare",
        "neighbors",
        "leiden",
        "kmeans",
        "hclust",
        "compare",
        "relationships",
        "embedding",
        "composition",
        "qc",
        "heatmap",
        "subcluster",
        "stability",
        "report",
    ):
        assert f"| `{stage}` |" in readme, stage


def test_no_issue_numbers_in_product_files():
    files = [
        ROOT / "README.md",
        ROOT / "CHANGELOG.md",
        ROOT / "pyproject.toml",
        *(ROOT / "configs").glob("*.yaml"),
        *(
            p
            for p in DOCS.rglob("*")
            if p.is_file()
            and p.suffix in {".md", ".py", ".rst"}
            and "generated" not in p.parts
            and "_build" not in p.parts
        ),
    ]
    hits = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in files
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"issues? \d", line, re.I)
    ]
    assert not hits, hits


def test_every_config_shown_in_the_docs_is_valid():
    from scclust.config import parse_config

    pages = [ROOT / "README.md", *DOCS.rglob("*.md")]
    n = 0
    for page in pages:
        if "generated" in page.parts or "_build" in page.parts:
            continue
        for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S):
            data = yaml.safe_load(block)
            if not isinstance(data, dict) or "stages" not in data:
                continue
            data["input"] = "builtin:simulate"
            parse_config(data)
            n += 1
    assert n >= 5
