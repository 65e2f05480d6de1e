"""Built-in data: tutorial-shaped, truth recoverable, Harmony removes the planted sample effect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from scclust import datasets
from scclust._errors import ConfigError
from scclust.pp import neighbors
from scclust.tl import leiden, mixing_entropy

LAB_OBS = [
    "sample",
    "type",
    "batch",
    "n_genes_by_counts",
    "total_counts",
    "pct_counts_mt",
    "pct_counts_ribo",
    "pct_counts_hb",
]


def test_simulate_is_tutorial_shaped(sim):
    assert set(LAB_OBS) <= set(sim.obs.columns)
    assert {"X_pca", "X_pca_harmony", "X_umap_harmony"} <= set(sim.obsm)
    assert sim.obsm["X_pca_harmony"].shape == (sim.n_obs, 50)
    assert sim.raw is not None and set(datasets.LAB_MARKERS) <= set(sim.raw.var_names)
    assert sim.var["highly_variable"].all()
    assert list(sim.obs["sample"].cat.categories) == datasets.SAMPLES
    assert set(sim.obs["type"]) == {"Covid", "Ctrl"}
    assert set(sim.obs["cell_type"].cat.categories) == set(datasets.CELL_TYPES)
    assert (sim.obs["pct_counts_mt"] > 0).all()
    # .raw is log-normalized: expm1 rows sum to the target
    row = np.expm1(sim.raw.X[:5].toarray()).sum(axis=1)
    np.testing.assert_allclose(row, 1e4, rtol=1e-3)


def test_simulate_is_deterministic():
    a = datasets.simulate_counts(300, seed=3)
    b = datasets.simulate_counts(300, seed=3)
    c = datasets.simulate_counts(300, seed=4)
    assert (a.X != b.X).nnz == 0
    assert (a.X != c.X).nnz > 0


def test_markers_mark_their_cell_type(sim):
    """Each lab marker is highest in a cell type that carries it in the simulation's design."""
    raw = sim.raw.to_adata()
    for gene in ["CD3E", "CD8A", "GNLY", "MS4A1", "CD14", "FCGR3A"]:
        x = raw[:, gene].X.toarray().ravel()
        means = {t: x[(sim.obs["cell_type"] == t).to_numpy()].mean() for t in datasets.CELL_TYPES}
        top = max(means, key=means.get)
        assert gene in datasets.CELL_TYPES[top][1], (gene, top)


def test_truth_recoverable_by_leiden_at_lab_size(sim7332):
    a = sim7332.copy()
    neighbors(a, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20)
    leiden(a, resolutions=[0.2, 0.4, 0.6, 1.0])
    aris = {k: adjusted_rand_score(a.obs["cell_type"], a.obs[k]) for k in a.uns["leiden"]["clusterings"]}
    assert max(aris.values()) >= 0.9, aris


@pytest.mark.slow
def test_harmony_removes_sample_effect(sim_flat):
    # the flat simulation: with states, part of each type's neighbourhood is its own state, which
    # lowers the sample mixing before integration less than the planted batch shifts do (0.38, not < 0.3)
    before = mixing_entropy(sim_flat, key="sample", use_rep="X_pca", n_pcs=30).mean()
    after = mixing_entropy(sim_flat, key="sample", use_rep="X_pca_harmony", n_pcs=30).mean()
    # planted batch shifts separate samples before integration; Harmony mixes them
    assert before < 0.3
    assert after > 0.7
    # ... but keeps cell types apart: mixing of cell types stays low after integration
    assert mixing_entropy(sim_flat, key="cell_type", use_rep="X_pca_harmony", n_pcs=30).mean() < 0.2


def test_pbmc68k_adapted(pbmc):
    assert {"X_pca_harmony", "X_umap_harmony"} <= set(pbmc.obsm)
    assert {"sample", "type", "n_genes_by_counts", "total_counts", "pct_counts_mt", "cell_type"} <= set(pbmc.obs)
    assert pbmc.obs["pct_counts_mt"].max() > 1  # percent, not fraction


def test_load_builtin_parameters_and_errors():
    with pytest.raises(ConfigError, match="unknown built-in dataset 'foo'"):
        datasets.load_builtin("foo")
    with pytest.raises(ConfigError, match="unknown parameter 'cells'"):
        datasets.load_builtin("simulate?cells=10")
    with pytest.raises(ConfigError, match="n_cells must be >= 100"):
        datasets.simulate_counts(10)


def test_simulate_integrated_is_tutorial_shaped_and_reproducible():
    a = datasets.simulate_integrated(5000, n_dims=30, seed=3)
    assert set(LAB_OBS) <= set(a.obs.columns) and "cell_type" in a.obs
    assert {"X_pca", "X_pca_harmony", "X_umap_harmony"} <= set(a.obsm)
    assert a.obsm["X_pca_harmony"].shape == (5000, 30) and a.obsm["X_pca_harmony"].dtype == np.float32
    assert a.obsm["X_umap_harmony"].shape == (5000, 2)
    assert list(a.var_names) == datasets.LAB_MARKERS and a.raw is not None
    assert list(a.obs["sample"].cat.categories) == datasets.SAMPLES
    assert set(a.obs["type"]) == {"Covid", "Ctrl"}
    assert (a.obs["sample"].astype(str).str.startswith("covid") == (a.obs["type"] == "Covid")).all()
    assert a.obs_names.is_unique
    # markers: LYZ is high in CD14 monocytes and absent-ish in T cells
    lyz = np.asarray(a[:, "LYZ"].X.todense()).ravel()
    ct = a.obs["cell_type"].to_numpy()
    assert lyz[ct == "CD14 Mono"].mean() > 5 * lyz[ct == "CD4 T"].mean()
    # the hierarchy is recoverable (types) but not trivial (k-means at 8 does not find it exactly)
    from sklearn.cluster import KMeans

    lab = KMeans(8, n_init=1, random_state=0).fit_predict(a.obsm["X_pca_harmony"])
    assert 0.5 < adjusted_rand_score(ct, lab) < 0.99
    # same seed, same data; any size is generated in the same blocks
    b = datasets.simulate_integrated(5000, n_dims=30, seed=3)
    np.testing.assert_array_equal(a.obsm["X_pca_harmony"], b.obsm["X_pca_harmony"])
    c = datasets.simulate_integrated(5000, n_dims=30, seed=4)
    assert not np.array_equal(a.obsm["X_pca_harmony"], c.obsm["X_pca_harmony"])


def test_load_builtin_integrated(tmp_path):
    a = datasets.load_builtin("integrated?n_cells=300&n_dims=12&seed=2")
    assert a.n_obs == 300 and a.obsm["X_pca_harmony"].shape[1] == 12
    with pytest.raises(ConfigError, match="unknown parameter 'n_genes' for builtin:integrated"):
        datasets.load_builtin("integrated?n_genes=10")
    with pytest.raises(ConfigError, match="not a number"):
        datasets.load_builtin("integrated?n_cells=many")
    with pytest.raises(ConfigError, match="n_dims must be >= 10"):
        datasets.simulate_integrated(300, n_dims=3)
    assert datasets.simulate_integrated(300, path=str(tmp_path / "x.h5ad")) is None
    import anndata as ad

    back = ad.read_h5ad(tmp_path / "x.h5ad")
    assert back.n_obs == 300 and back.raw is not None


def _assert_same_adata(a, b):
    import pandas as pd

    pd.testing.assert_frame_equal(a.obs, b.obs, check_exact=True)  # every column, categories, names
    for col in ("sample", "batch", "type", "cell_type", "cell_state"):
        assert isinstance(b.obs[col].dtype, pd.CategoricalDtype)
    pd.testing.assert_frame_equal(a.var, b.var)
    pd.testing.assert_frame_equal(a.raw.var, b.raw.var)
    assert set(a.obsm) == set(b.obsm) == {"X_pca_harmony", "X_pca", "X_umap_harmony"}
    for key in a.obsm:
        assert a.obsm[key].dtype == b.obsm[key].dtype == np.float32
        np.testing.assert_array_equal(a.obsm[key], b.obsm[key])
    for x, y in ((a.X, b.X), (a.raw.X, b.raw.X)):
        assert x.format == y.format == "csr" and x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x.indptr, y.indptr)
        np.testing.assert_array_equal(x.indices, y.indices)
        np.testing.assert_array_equal(x.data, y.data)
    assert a.uns["scclust_dataset"] == b.uns["scclust_dataset"]


def test_simulate_integrated_written_in_blocks_equals_in_memory(tmp_path, monkeypatch):
    """The ``path`` form (appended block by block) reads back equal to the returned AnnData, over
    several blocks and a partial last one; nothing but the result is left in the directory."""
    import anndata as ad

    monkeypatch.setattr(datasets, "_BLOCK", 1_000)
    kw = {"n_dims": 12, "n_samples": 5, "n_states": 2, "seed": 2}
    mem = datasets.simulate_integrated(3_500, **kw)
    assert datasets.simulate_integrated(3_500, **kw, path=str(tmp_path / "sim.h5ad")) is None
    assert [p.name for p in tmp_path.iterdir()] == ["sim.h5ad"]
    back = ad.read_h5ad(tmp_path / "sim.h5ad")
    _assert_same_adata(mem, back)
    assert back.n_obs == 3_500 and back.X.nnz > 3_500


def test_simulate_integrated_written_with_default_blocks(tmp_path):
    import anndata as ad

    path = tmp_path / "sim.h5ad"
    datasets.simulate_integrated(150_000, n_dims=10, seed=7, path=str(path))
    _assert_same_adata(datasets.simulate_integrated(150_000, n_dims=10, seed=7), ad.read_h5ad(path))


def test_simulate_integrated_write_failure_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_BLOCK", 1_000)
    block = datasets._integrated_block

    def failing(p, b, start):
        if b == 2:
            raise RuntimeError("stop")
        return block(p, b, start)

    monkeypatch.setattr(datasets, "_integrated_block", failing)
    with pytest.raises(RuntimeError, match="stop"):
        datasets.simulate_integrated(5_000, path=str(tmp_path / "sim.h5ad"))
    assert list(tmp_path.iterdir()) == []


def test_simulate_integrated_written_memory_does_not_grow_with_cells(tmp_path, monkeypatch):
    """Peak traced allocations of the ``path`` form at 8x the cells stay those of one block."""
    import tracemalloc

    monkeypatch.setattr(datasets, "_BLOCK", 2_000)
    peaks = {}
    for n in (5_000, 40_000):
        datasets.simulate_integrated(n, path=str(tmp_path / f"warm{n}.h5ad"))  # imports, caches
        tracemalloc.start()
        datasets.simulate_integrated(n, path=str(tmp_path / f"sim{n}.h5ad"))
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # in memory, 40,000 cells x 50 dims would be 16 MB of obsm alone
    assert peaks[40_000] < 1.3 * peaks[5_000] + 1e6, peaks


# ---------------------------------------------------------------------------------- fetch (real data)
@pytest.fixture
def kang_cache(tmp_path, kang_path):
    """A cache folder holding a copy of the shared Kang file (skipped when ../shared/data is absent)."""
    import shutil

    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(kang_path, cache / datasets.REMOTE["kang_pbmc_stim_2000"].filename)
    return cache


@pytest.mark.shared
def test_fetch_uses_a_verified_cached_copy_without_network(kang_cache, monkeypatch):
    import urllib.request

    def no_network(*args, **kwargs):
        raise AssertionError("fetch went to the network for a cached file")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    path = datasets.fetch("kang_pbmc_stim_2000", cache_dir=kang_cache)
    assert path == kang_cache / "kang_pbmc_stim_2000.h5ad"
    monkeypatch.setenv("SCCLUST_DATA", str(kang_cache))  # the folder given by the environment
    assert datasets.fetch("kang_pbmc_stim_2000") == path


@pytest.mark.shared
def test_fetch_rejects_a_corrupted_copy(kang_cache):
    from scclust._errors import InputError

    path = kang_cache / "kang_pbmc_stim_2000.h5ad"
    path.chmod(0o644)
    with open(path, "r+b") as fh:  # one byte changed in the middle of the file
        fh.seek(path.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(InputError, match=r"sha256 [0-9a-f]{16}\.\.\. is not the registry's c64d3b09913ff964") as err:
        datasets.fetch("kang_pbmc_stim_2000", cache_dir=kang_cache)
    assert "\n" not in str(err.value) and "delete it" in str(err.value)


@pytest.mark.shared
def test_data_input_spec_reads_the_fetched_file(kang_cache, monkeypatch):
    from scclust._io import read_input, read_input_summary

    monkeypatch.setenv("SCCLUST_DATA", str(kang_cache))
    adata, fp = read_input("data:kang_pbmc_stim_2000")
    assert adata.shape == (2000, 9015) and set(adata.obs["condition"]) == {"ctrl", "stim"}
    assert fp["sha256"] == datasets.REMOTE["kang_pbmc_stim_2000"].sha256
    assert read_input_summary("data:kang_pbmc_stim_2000").n_obs == 2000


def test_fetch_without_a_copy_or_a_download_is_one_line(tmp_path, monkeypatch):
    from scclust._errors import MissingFileError

    monkeypatch.delenv("SCCLUST_DATA", raising=False)
    with pytest.raises(MissingFileError) as err:
        datasets.fetch("kang_pbmc_stim_2000", cache_dir=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"place kang_pbmc_stim_2000.h5ad (sha256 c64d3b09913ff964...) in {tmp_path} by hand" in msg
    assert "SCCLUST_DATA" in msg and "immunogenomics/harmony" in msg
    with pytest.raises(ConfigError, match="unknown dataset 'kang'; available: 'kang_pbmc_stim_2000'"):
        datasets.fetch("kang", cache_dir=tmp_path)


def _fake_entry(tmp_path, urls):
    import hashlib

    src = tmp_path / "src" / "tiny.bin"
    src.parent.mkdir()
    src.write_bytes(b"scclust test payload\n" * 100)
    return src, datasets.RemoteDataset(
        filename="tiny.bin",
        sha256=hashlib.sha256(src.read_bytes()).hexdigest(),
        size=src.stat().st_size,
        urls=tuple(urls(src)),
        origin=(),
        description="test",
        citation="",
        how="",
    )


def test_fetch_downloads_verifies_and_caches(tmp_path, monkeypatch):
    src, entry = _fake_entry(tmp_path, lambda src: [src.as_uri()])
    monkeypatch.setitem(datasets.REMOTE, "tiny", entry)
    cache = tmp_path / "cache"
    path = datasets.fetch("tiny", cache_dir=cache)
    assert path.read_bytes() == src.read_bytes()
    src.unlink()  # the source is gone: the cached copy is used
    assert datasets.fetch("tiny", cache_dir=cache) == path
    assert sorted(p.name for p in cache.iterdir()) == ["tiny.bin"]  # no partial file left


def test_fetch_download_errors_name_the_url_and_the_way_by_hand(tmp_path, monkeypatch):
    from scclust._errors import InputError, MissingFileError

    url = "http://127.0.0.1:9/tiny.bin"  # the discard port: connection refused, no network needed
    _, entry = _fake_entry(tmp_path, lambda src: [url])
    monkeypatch.setitem(datasets.REMOTE, "tiny", entry)
    cache = tmp_path / "cache"
    with pytest.raises(MissingFileError) as err:
        datasets.fetch("tiny", cache_dir=cache)
    msg = str(err.value)
    assert "\n" not in msg and f"cannot download dataset 'tiny' from {url}" in msg
    assert f"place tiny.bin (sha256 {entry.sha256[:16]}...) in {cache} by hand" in msg
    # a download whose checksum differs is not kept
    bad = tmp_path / "src" / "other.bin"
    bad.write_bytes(b"something else")
    monkeypatch.setitem(datasets.REMOTE, "tiny", datasets.RemoteDataset(**{**entry.__dict__, "urls": (bad.as_uri(),)}))
    with pytest.raises(InputError, match="is not the registry's"):
        datasets.fetch("tiny", cache_dir=cache)
    assert not list(cache.iterdir())


def _shipped_configs():
    root = Path(__file__).resolve().parents[1]
    return sorted(
        [
            *(root / "configs").glob("*.yaml"),
            *(root / "benchmarks").glob("*.yaml"),
            *(root / "workflows" / "config").glob("*.yaml"),
        ]
    )


def _named_data(node):
    """Every string in a config that names data: an input spec, a dataset of the fan-out, a table."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("input", "table") and isinstance(value, str):
                yield value
            elif key == "datasets" and isinstance(value, dict):
                yield from (v for v in value.values() if isinstance(v, str))
            else:
                yield from _named_data(value)
    elif isinstance(node, list):
        for value in node:
            yield from _named_data(value)


def test_every_dataset_a_shipped_config_names_can_be_obtained():
    """Built-in, registered for fetch (data:NAME), or the output of another shipped config."""
    import yaml

    configs = _shipped_configs()
    assert len(configs) >= 8
    outputs = set()
    for config in configs:
        cfg = yaml.safe_load(config.read_text()) or {}
        if isinstance(cfg.get("outdir"), str):
            outputs.add(str(Path(cfg["outdir"]) / "clustered.h5ad"))
    unobtainable = []
    for config in configs:
        for spec in _named_data(yaml.safe_load(config.read_text()) or {}):
            if spec.startswith("builtin:"):
                name = spec.removeprefix("builtin:").partition("?")[0]
                ok = name in datasets.BUILTIN or name == "heatmap_example"
            elif spec.startswith("data:"):
                ok = spec.removeprefix("data:") in datasets.REMOTE
            else:
                ok = spec in outputs  # e.g. subcluster_tnk.yaml runs on tutorial.yaml's result
            if not ok:
                unobtainable.append(f"{config.name}: {spec}")
    assert not unobtainable, unobtainable


def test_registry_entries_are_complete():
    for name, entry in datasets.REMOTE.items():
        assert len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0, name
        assert entry.urls or (entry.origin and entry.how), f"{name}: no download and no documented way to make it"
        assert all(url.startswith("https://") and len(sha) == 64 for url, sha, _ in entry.origin), name
        assert entry.citation and entry.description, name


def test_plant_rare_moves_the_chosen_cells_only_and_is_seeded():
    """The planted cells form their own population: nearer each other than any unplanted cell is to
    their centre; the others are untouched; the same seed plants the same cells the same way."""
    from scclust.datasets import plant_rare, simulate_integrated

    base = simulate_integrated(2000, seed=1)
    a = plant_rare(base.copy(), 20, distance=8.0, seed=3)
    b = plant_rare(base.copy(), 20, distance=8.0, seed=3)
    rare = a.obs["rare"].to_numpy()
    assert rare.sum() == 20 and (b.obs["rare"].to_numpy() == rare).all()
    np.testing.assert_array_equal(a.obsm["X_pca_harmony"], b.obsm["X_pca_harmony"])
    np.testing.assert_array_equal(a.obsm["X_pca_harmony"][~rare], base.obsm["X_pca_harmony"][~rare])
    X = a.obsm["X_pca_harmony"]
    centre = X[rare].mean(0)
    d_in = np.linalg.norm(X[rare] - centre, axis=1).max()
    d_out = np.linalg.norm(X[~rare] - centre, axis=1).min()
    assert d_out > d_in, (d_in, d_out)
    with pytest.raises(ConfigError, match="n_cells must be between 1 and 2000"):
        plant_rare(base.copy(), 0)
