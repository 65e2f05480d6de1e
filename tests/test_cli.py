"""The CLI: exit 0 on success, 2 with one line and no traceback on a user error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scclust.cli import main

ROOT = Path(__file__).resolve().parents[1]

BASE = """\
input: builtin:pbmc68k
stages: [neighbors, leiden]
neighbors: {use_rep: X_pca_harmony, n_pcs: 30, n_neighbors: 15}
leiden: {resolutions: [0.5, 1.0]}
"""


def _cfg(tmp_path: Path, text: str = BASE) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scclust", *args], capture_output=True, text=True, timeout=600)


def _one_line_error(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("scclust: error: ")
    return lines[0]


@pytest.mark.slow  # a subprocess: full suite, not the fast lane
def test_run_success_subprocess(tmp_path):
    out = tmp_path / "out"
    res = _run_cli("run", str(_cfg(tmp_path)), "--outdir", str(out), "-q")
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert "clustered.h5ad" in manifest["files"]
    assert manifest["clusterings"] == {"leiden": ["leiden_0.5", "leiden_1.0"]}


@pytest.mark.parametrize(
    ("text", "args", "expected"),
    [
        (BASE + "neighbours: {}\n", [], "did you mean 'neighbors'"),
        (BASE.replace("n_neighbors: 15", "n_neighbors: lots"), [], "neighbors.n_neighbors"),
        (BASE, ["--input", "/nonexistent/data.h5ad"], "input file not found: /nonexistent/data.h5ad"),
        (
            BASE.replace("X_pca_harmony", "X_pca_scvi"),
            [],
            "neighbors.use_rep 'X_pca_scvi' not in .obsm: did you mean 'X_pca'? (in the input: 'X_pca', ",
        ),
        (
            BASE.replace("X_pca_harmony", "X_pca_harmonyy"),
            [],
            "neighbors.use_rep 'X_pca_harmonyy' not in .obsm: did you mean 'X_pca_harmony'?",
        ),
        (BASE.replace("n_pcs: 30", "n_pcs: 80"), [], "n_pcs=80 is larger than 'X_pca_harmony', which has 50 dims"),
        (BASE, ["--set", "leiden.resolutions=[0]"], "resolutions"),
        (BASE, ["--input", "builtin:pbmc3k"], "unknown built-in dataset 'pbmc3k'; available: 'simulate', 'pbmc68k'"),
    ],
    ids=[
        "misspelt-key",
        "wrong-type",
        "missing-input",
        "missing-use_rep",
        "misspelt-use_rep",
        "n_pcs-too-big",
        "resolution-0",
        "bad-builtin",
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, text, args, expected):
    code = main(["run", str(_cfg(tmp_path, text)), "--outdir", str(tmp_path / "out"), "-q", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in _one_line_error(err)
    assert not (tmp_path / "out" / "clustered.h5ad").exists()


@pytest.mark.slow
def test_user_error_subprocess_no_traceback(tmp_path):
    res = _run_cli("run", str(_cfg(tmp_path, BASE + "leiden_typo: 1\n")))
    assert res.returncode == 2
    assert "unknown key 'leiden_typo'" in _one_line_error(res.stderr)


def test_nan_in_embedding_is_a_user_error(tmp_path, pbmc, capsys):
    a = pbmc.copy()
    a.obsm["X_pca_harmony"][5, 3] = float("nan")
    path = tmp_path / "nan.h5ad"
    a.write_h5ad(path)
    code = main(["run", str(_cfg(tmp_path)), "--input", str(path), "--outdir", str(tmp_path / "o"), "-q"])
    assert code == 2
    assert "NaN or inf values in 1 cell(s)" in _one_line_error(capsys.readouterr().err)


def test_validate_and_schema(tmp_path, capsys):
    assert main(["validate", str(_cfg(tmp_path))]) == 0
    assert "valid" in capsys.readouterr().out
    out = tmp_path / "schema.json"
    assert main(["schema", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["title"] == "WorkflowConfig"


def test_shipped_configs_validate():
    from scclust import read_marker_sets

    for path in sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "benchmarks").glob("*.yaml")):
        if path.name.startswith("markers_"):  # marker sets of the annotate stage, not run configs
            assert read_marker_sets(path), path
            continue
        assert main(["validate", str(path), "--config-only"]) == 0, path


@pytest.mark.slow
def test_import_and_validate_load_no_plotting_or_scanpy():
    """``import scclust`` and ``scclust validate`` stay light: submodules load on first use."""
    code = (
        "import sys, scclust\n"
        "from scclust.cli import main\n"
        "rc = main(['validate', 'configs/tutorial.yaml', '--config-only'])\n"
        "heavy = [m for m in ('scanpy', 'matplotlib', 'umap', 'sklearn') if m in sys.modules]\n"
        "assert rc == 0 and not heavy, (rc, heavy)\n"
        "assert scclust.tl.leiden and scclust.run and scclust.__version__\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.mark.slow
def test_validate_checks_the_configs_own_input(tmp_path, pbmc, capsys):
    """Without --input, validate reads the config's input: a missing file, a wrong key, genes that are
    all absent are exit 2 with one line that leads with the problem; a fitting config is valid."""
    data = tmp_path / "pbmc.h5ad"
    pbmc.write_h5ad(data)
    cases = {
        "missing": (f"input: {tmp_path / 'nope.h5ad'}\n", "input file not found"),
        "key": (
            f"input: {data}\nstages: [neighbors, leiden]\nneighbors: {{use_rep: X_harmony}}\n",
            "neighbors.use_rep 'X_harmony' not in .obsm",
        ),
        "genes": (
            f"input: {data}\nstages: [neighbors, leiden, embedding]\nneighbors: {{use_rep: X_pca}}\n"
            "embedding: {basis: X_umap, genes: [Cd3e, nkg7]}\n",
            "none of the genes",
        ),
    }
    for name, (text, expected) in cases.items():
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(text)
        assert main(["validate", str(cfg)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("scclust: error: ") and expected in err and err.count("\n") == 1, (name, err)
    ok = tmp_path / "ok.yaml"
    ok.write_text(f"input: {data}\nstages: [neighbors, leiden]\nneighbors: {{use_rep: X_pca}}\n")
    assert main(["validate", str(ok)]) == 0
    assert f"fits {data}" in capsys.readouterr().out
