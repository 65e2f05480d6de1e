"""The memory pre-flight check: ``memory_limit``, the stages' estimates, exit 2 before a stage that cannot fit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from scclust._errors import ConfigError, ResourceError
from scclust._memory import Sizes, fmt_bytes, parse_memory_limit
from scclust.config import load_config, parse_config
from scclust.stages import REGISTRY
from scclust.workflow import _check_memory

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("16GB", 16e9), ("8GiB", 8 * 2**30), ("500 MB", 500e6), ("2e9", 2e9), (2_000_000_000, 2e9), ("auto", None)],
)
def test_parse_memory_limit(value, expected):
    assert parse_memory_limit(value) == expected


@pytest.mark.parametrize("value", ["lots", "-1GB", "16 GBs", True, 0])
def test_bad_memory_limit_is_a_one_line_config_error(value):
    with pytest.raises(ConfigError) as err:
        parse_config({"input": "builtin:pbmc68k", "memory_limit": value})
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("memory_limit: must be")
    assert "'auto'" in msg and "'16GB'" in msg


def _fake(n_obs: int, dims: dict[str, int]) -> SimpleNamespace:
    """What the check reads of an AnnData: its cells, its embeddings' widths, its graphs (none)."""
    return SimpleNamespace(
        n_obs=n_obs, obsm={k: SimpleNamespace(shape=(n_obs, d)) for k, d in dims.items()}, uns={}, obsp={}
    )


def _entries(cfg) -> list[tuple[str, str, object]]:
    return [(name, label, p) for name in cfg.stages for label, p in cfg.entries(name).items()]


def test_shipped_configs_fit_by_default_on_small_data():
    """``memory_limit: auto`` never blocks a shipped config on 2,000 cells (and every heavy stage is estimated)."""
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        if path.name.startswith("markers_"):  # marker sets of the annotate stage, not run configs
            continue
        cfg = load_config(path)
        assert cfg.memory_limit == "auto"
        estimates = _check_memory(_fake(2000, {"X_pca_harmony": 50, "X_pca": 50}), cfg, _entries(cfg))
        for label, est in estimates.items():
            assert 0 < est.total < 2e9, (path.name, label, fmt_bytes(est.total))


def test_a_stage_that_cannot_fit_is_refused_with_the_estimate_and_options():
    cfg = parse_config({**load_config(ROOT / "configs" / "atlas.yaml").model_dump(mode="json"), "memory_limit": "8GB"})
    with pytest.raises(ResourceError) as err:
        _check_memory(_fake(20_000_000, {"X_pca_harmony": 50}), cfg, _entries(cfg))
    msg = str(err.value)
    assert msg.startswith("neighbors would not fit in memory: about ")
    assert "kNN 20,000,000 x 20" in msg and "limit of 8.00 GB" in msg
    assert "options: fewer n_neighbors" in msg and "sketch" in msg and "--set memory_limit=" in msg
    # the same stages on a 5 % sketch of those cells fit: the clustering stages see the sketch's cells
    sk = load_config(ROOT / "configs" / "atlas_sketch.yaml").model_dump(mode="json")
    cfg = parse_config({**sk, "memory_limit": "8GB", "sketch": {**sk["sketch"], "fraction": 0.05}})
    estimates = _check_memory(_fake(20_000_000, {"X_pca_harmony": 50}), cfg, _entries(cfg))
    expected = REGISTRY["neighbors"].memory(cfg.neighbors[0], Sizes(n_obs=1_000_000, n_all=20_000_000))
    assert estimates["neighbors"].total == pytest.approx(expected.total)
    assert estimates["sketch"].total > estimates["neighbors"].total  # rows of all cells


def test_leiden_counts_worker_copies_and_names_n_jobs():
    p = REGISTRY["leiden"].params(resolutions=[0.4, 0.6, 1.0, 1.4], flavor="igraph", n_jobs=2)
    sizes = Sizes(n_obs=1_000_000, n_all=1_000_000, graphs={"neighbors": 2 * 1_000_000 * 19})
    two = REGISTRY["leiden"].memory(p, sizes)
    one = REGISTRY["leiden"].memory(p.model_copy(update={"n_jobs": 1}), sizes)
    assert two.total > one.total + 1e9  # one worker: 300 MB + 19M edges x 80 B
    assert "n_jobs: 1" in two.options and "n_jobs: 1" not in one.options


def test_hclust_estimate_follows_the_backend():
    p = REGISTRY["hclust"].params(method="average", backend="matrix")
    sizes = Sizes(n_obs=20_000, n_all=20_000)
    matrix = REGISTRY["hclust"].memory(p, sizes)
    micro = REGISTRY["hclust"].memory(p.model_copy(update={"backend": "micro"}), sizes)
    assert matrix.total > 3e9 > micro.total  # 20,000^2 / 2 x 8 B, twice
    assert "backend: micro" in matrix.options


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scclust", *args], capture_output=True, text=True, timeout=900)


@pytest.mark.slow  # a subprocess
def test_lowered_limit_exits_2_before_the_stage(tmp_path):
    out = tmp_path / "out"
    res = _cli(
        "run",
        str(ROOT / "configs" / "atlas.yaml"),
        "--input",
        "builtin:integrated?n_cells=3000",
        "--outdir",
        str(out),
        "--no-resume",
        "-q",
        "--set",
        "memory_limit=50MB",
    )
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    line = lines[0]
    assert line.startswith("scclust: error: neighbors would not fit in memory: about ")
    assert "limit of 50 MB (memory_limit 50MB)" in line
    assert "options: fewer n_neighbors" in line and "raise memory_limit" in line
    assert not out.exists() or not any(out.iterdir())  # no output, no checkpoint, no lock left behind


@pytest.mark.slow  # the clustering stages on 20,000 cells
def test_estimates_bound_the_measured_peaks(tmp_path):
    """Each estimate is at least the peak the stage added (RSS at its peak minus at its start) and, past
    the libraries it counts (which an earlier stage or test may have imported), not 10x more."""
    from scclust.workflow import run

    cfg = parse_config(
        {
            "input": "builtin:integrated?n_cells=20000",
            "outdir": str(tmp_path / "o"),
            "stages": ["neighbors", "leiden", "kmeans", "hclust"],
            "neighbors": {"use_rep": "X_pca_harmony", "n_pcs": 30, "n_neighbors": 20},
            "leiden": {"resolutions": [0.4, 1.0], "flavor": "igraph"},
            "kmeans": {"use_rep": "X_pca_harmony", "n_clusters": [5, 10], "n_init": "auto"},
            "hclust": {"use_rep": "X_pca_harmony", "n_clusters": [5, 10], "backend": "micro"},
            "write_h5ad": False,
            "background_umap": False,
        }
    )
    _, manifest = run(cfg)
    records = {r["stage"]: r for r in manifest["stages"]}
    for stage in ("neighbors", "leiden", "kmeans", "hclust"):
        r = records[stage]
        added = r["peak_rss_mb"] - r["start_rss_mb"]
        estimate = r["memory_estimate"]["added_mb"]
        assert estimate >= added, (stage, estimate, added)
        assert estimate <= max(10 * added, added + 250), (stage, estimate, added)
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["stages"][1]["memory_estimate"]["breakdown"]


def test_prepare_in_memory_counts_its_copies_and_points_out_of_core():
    p = REGISTRY["prepare"].params()
    big = Sizes(n_obs=1_000_000, n_all=1_000_000, n_vars=20_000, nnz=1_000_000_000)
    in_memory = REGISTRY["prepare"].memory(p, big)
    out_of_core = REGISTRY["prepare"].memory(p, Sizes(n_obs=1_000_000, n_all=1_000_000, n_vars=20_000))
    assert in_memory.total > 24e9 > out_of_core.total  # 3 copies of 1e9 values: 24 GB alone
    assert "backend: dask" in in_memory.options and "backend: dask" not in out_of_core.options


def test_the_runs_limit_bounds_the_auto_choices(tmp_path, monkeypatch):
    """Within a run, the memory that auto choices weigh (Leiden's worker processes) is the run's
    memory_limit when it is lower than the machine's; outside a run, the machine's again."""
    from scclust import _memory
    from scclust.tl import _leiden
    from scclust.workflow import run

    seen = []
    real = _leiden.auto_processes

    def spy(*args, **kw):
        seen.append(_memory.available_memory())
        return real(*args, **kw)

    monkeypatch.setattr(_leiden, "auto_processes", spy)
    cfg = parse_config(
        {
            "input": "builtin:pbmc68k",
            "outdir": str(tmp_path / "out"),
            "stages": ["neighbors", "leiden"],
            "neighbors": {"use_rep": "X_pca_harmony"},
            "leiden": {"resolutions": [0.4, 1.0]},
            "memory_limit": "3GB",
        }
    )
    run(cfg)
    assert seen and set(seen) == {(3 * 10**9, "memory_limit 3.00 GB")}
    assert _memory.available_memory()[1] != "memory_limit 3.00 GB"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="the kernel's high-water mark is Linux's")
def test_recorded_peak_sees_memory_taken_and_freed_while_the_gil_is_held():
    """A stage's peak_rss_mb counts 300 MB made and freed inside one C call (the GIL held
    throughout, so no sampling thread runs meanwhile): the process's high-water mark, which the
    block raised. In a fresh interpreter, whose high-water mark is its current size."""
    code = (
        "from scclust.workflow import _PeakRSS\n"
        "with _PeakRSS() as mem:\n"
        "    block = b'x' * 300_000_000\n"
        "    del block\n"
        "with _PeakRSS() as later:\n"  # a block that sets no new peak: its own sampled peak
        "    pass\n"
        "print(mem.peak - mem.start, later.peak - later.start)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    first, later = map(int, res.stdout.split())
    assert first >= 250e6, first
    assert later < 50e6, later
