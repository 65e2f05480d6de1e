"""Cluster colours (scclust/_colors.py): one home below the tools and the figures."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "scclust"


def _scclust_imports(path: Path) -> set[str]:
    """The scclust modules ``path`` imports (relative imports resolved), at any depth of the file."""
    package = path.relative_to(SRC.parent).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            found |= {mod} if node.module else {f"{mod}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m == "scclust" or m.startswith("scclust.")}


@pytest.mark.slow
def test_colours_live_in_the_bottom_floor_and_tools_do_not_import_figures():
    assert _scclust_imports(SRC / "_colors.py") == set()  # imports nothing of scclust
    for sub in ("tl", "pp"):
        for path in sorted((SRC / sub).glob("*.py")):
            above = {
                m for m in _scclust_imports(path) if m.startswith(("scclust.pl", "scclust.stages", "scclust.workflow"))
            }
            assert not above, (path.name, above)
    # at run time too: clustering in a fresh process loads no plotting module of scclust
    code = (
        "import sys, scclust as scc\n"
        "ad = scc.datasets.pbmc68k()\n"
        "scc.pp.neighbors(ad, use_rep='X_pca', n_neighbors=10)\n"
        "scc.tl.leiden(ad, resolution=1.0)\n"
        "scc.tl.kmeans(ad, use_rep='X_pca', n_clusters=[3], n_init=1)\n"
        "scc.tl.hclust(ad, use_rep='X_pca', n_clusters=[3])\n"
        "assert {'leiden_colors', 'kmeans3_colors', 'hclust_3_colors'} <= set(ad.uns), sorted(ad.uns)\n"
        "print(sorted(m for m in sys.modules if m.startswith('scclust.pl')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_figures_use_the_same_functions():
    from scclust import _colors
    from scclust.pl import _style

    for name in ("palette", "category_colors", "tree_colors", "categories", "OKABE_ITO", "KELLY", "ANNOTATION_PALETTE"):
        assert getattr(_style, name) is getattr(_colors, name), name


def test_matched_colours_follow_a_reference_clustering():
    from anndata import AnnData

    from scclust._colors import matched_colors

    obs = pd.DataFrame(
        {
            "ref": pd.Categorical(["0"] * 6 + ["1"] * 4),
            "new": pd.Categorical(["1"] * 5 + ["0"] * 1 + ["0"] * 4),  # "1" takes most of ref 0, "0" most of ref 1
        },
        index=[f"c{i}" for i in range(10)],
    )
    ad = AnnData(obs=obs)
    ad.uns["ref_colors"] = ["#111111", "#222222"]
    assert matched_colors(ad, "new", "ref") == ["#222222", "#111111"]
    ad.obs["split"] = pd.Categorical(["0"] * 3 + ["1"] * 3 + ["2"] * 4)  # ref 0 split in two: one piece keeps it
    got = matched_colors(ad, "split", "ref")
    assert got[0] == "#111111" and got[2] == "#222222" and got[1] not in {"#111111", "#222222"}
