"""The Snakemake fan-out: dry run and a real local run on two small datasets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "workflows" / "Snakefile"

pytestmark = pytest.mark.skipif(
    shutil.which("snakemake", path=str(Path(sys.executable).parent)) is None and shutil.which("snakemake") is None,
    reason="snakemake not installed (pip install -e '.[workflow]')",
)


def _snakemake(workdir: Path, configfile: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(SNAKEFILE),
        "--configfile",
        str(configfile),
        "--directory",
        str(workdir),
        "--profile",
        str(ROOT / "workflows" / "profiles" / "local"),
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)


def _fanout(tmp_path: Path, **extra) -> Path:
    cfg = {
        "outdir": "out",
        "base_config": str(ROOT / "configs" / "demo.yaml"),
        "datasets": {"simA": "builtin:simulate?n_cells=400&n_samples=4&seed=1", "pbmc": "builtin:pbmc68k"},
        "paramsets": {
            "k15": {"neighbors.n_neighbors": 15, "leiden.resolutions": [0.6, 1.0], "embedding.genes": ["CD3E"]}
        },
    }
    cfg.update(extra)
    path = tmp_path / "fanout.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow  # a subprocess: full suite, not the fast lane
def test_dry_run_lists_every_job(tmp_path):
    res = _snakemake(tmp_path, _fanout(tmp_path), "-n")
    assert res.returncode == 0, res.stderr + res.stdout
    assert "cluster        2" in res.stdout


@pytest.mark.slow  # a subprocess: full suite, not the fast lane
def test_bad_paramset_fails_at_parse_time(tmp_path):
    res = _snakemake(tmp_path, _fanout(tmp_path, paramsets={"bad": {"leiden.resolutionz": [1]}}), "-n")
    assert res.returncode != 0
    assert "unknown key 'leiden.resolutionz'" in res.stderr + res.stdout


@pytest.mark.slow  # a subprocess: full suite, not the fast lane
def test_config_that_does_not_fit_a_dataset_fails_the_dry_run(tmp_path):
    """The pre-flight check of `scclust run` runs at parse time on datasets that are cheap to read."""
    res = _snakemake(tmp_path, _fanout(tmp_path, paramsets={"bad": {"composition.by": ["donor"]}}), "-n")
    assert res.returncode != 0
    assert "dataset pbmc with paramset bad" in res.stderr + res.stdout
    assert "composition.by 'donor' not in .obs" in res.stderr + res.stdout


@pytest.mark.slow
def test_real_local_run(sim, tmp_path):
    subs = {
        "tnk": {
            "config": str(ROOT / "configs" / "subcluster_tnk.yaml"),
            "set": {"subcluster.tnk.groupby": "leiden_0.6", "subcluster.tnk.min_cells": 30},
        }
    }
    # one dataset, an integrated .h5ad as users bring (the built-in inputs are test_dry_run_lists_every_job's,
    # with the fan-out over datasets x parameter sets); this one runs every rule for real (clustering,
    # subclustering from its output, logs)
    import numpy as np

    cells = np.sort(np.random.default_rng(1).choice(sim.n_obs, 600, replace=False))
    sim[cells].copy().write_h5ad(tmp_path / "simA.h5ad")  # 600 of the session's simulated, integrated cells
    res = _snakemake(tmp_path, _fanout(tmp_path, datasets={"simA": str(tmp_path / "simA.h5ad")}, subclusterings=subs))
    assert res.returncode == 0, res.stderr[-3000:]
    for ds in ("simA",):
        run_dir = tmp_path / "out" / ds / "k15"
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["config"]["neighbors"][0]["n_neighbors"] == 15
        assert manifest["clusterings"]["leiden"] == ["leiden_0.6", "leiden_1.0"]
        assert (run_dir / "clustered.h5ad").is_file()
        assert (tmp_path / "out" / "logs" / "cluster" / f"{ds}.k15.log").is_file()
        sub = json.loads((run_dir / "sub_tnk" / "manifest.json").read_text())
        assert sub["clusterings"]["subcluster_tnk"] == ["tcells_0.6"]
        assert (run_dir / "sub_tnk" / "subclusters" / "tnk.h5ad").is_file()
