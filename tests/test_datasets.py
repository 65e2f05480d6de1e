"""Built-in data: tutorial-shaped, truth recoverable, Harmony removes the planted sample effect."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from scclust import datasets
from scclust._errors import ConfigError
from scclust.pp import neighbors
from scclust.tl import leiden, mixing_entropy

LAB_OBS = ["sample", "type", "batch", "n_genes_by_counts", "total_counts", "pct_counts_mt", "pct_counts_ribo", "pct_counts_hb"]


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
