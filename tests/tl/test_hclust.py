"""Hierarchical clustering: every method x metric against scipy, Ward against scikit-learn,
height cuts, optimal leaf order, the memory-saving path, truth recovery, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.cluster import hierarchy as sch
from scipy.spatial.distance import pdist
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import adjusted_rand_score

import scclust as scc
from scclust._errors import ConfigError, InputError
from scclust.tl import _hclust

METHODS = ["single", "complete", "average", "weighted", "centroid", "median", "ward"]
CASES = [(m, "euclidean") for m in METHODS] + [
    (m, d) for m in ("single", "complete", "average", "weighted") for d in ("correlation", "cosine", "cityblock")
]
KS = (3, 5, 8, 12)


@pytest.fixture(scope="module")
def small(sim):
    idx = np.random.default_rng(0).choice(sim.n_obs, 500, replace=False)
    return sim[np.sort(idx)].copy()


def _scipy_linkage(X, method, metric):
    X = X.astype(np.float64)
    if metric == "correlation":  # the Seurat lab's (1 - r) / 2
        return sch.linkage(pdist(X, "correlation") / 2, method=method)
    return sch.linkage(X, method=method, metric=metric)


@pytest.mark.parametrize(("method", "metric"), CASES)
def test_cuts_equal_scipy(small, method, metric):
    adata = small.copy()
    X = adata.obsm["X_pca_harmony"][:, :20]
    Zs = _scipy_linkage(X, method, metric)
    # heights strictly between two merges (no tie with a merge height)
    hs = sorted({float(Zs[-4, 2] + Zs[-3, 2]) / 2, float(Zs[-10, 2] + Zs[-9, 2]) / 2})
    scc.tl.hclust(adata, use_rep="X_pca_harmony", n_pcs=20, method=method, metric=metric, n_clusters=KS, heights=hs)
    Z = adata.uns["hclust"]["linkage"]
    assert Z.shape == (499, 4)
    np.testing.assert_allclose(Z[:, 2], Zs[:, 2], rtol=1e-9, atol=1e-12)
    for k in KS:
        ref = sch.fcluster(Zs, k, criterion="maxclust")
        assert adjusted_rand_score(ref, adata.obs[f"hclust_{k}"]) == 1.0, k
        assert adata.uns["hclust"]["clusterings"][f"hclust_{k}"]["n_clusters"] == np.unique(ref).size
    for h in hs:
        ref = sch.fcluster(Zs, h, criterion="distance")
        assert adjusted_rand_score(ref, adata.obs[f"hclust_h{h:g}"]) == 1.0, h
        assert adata.obs[f"hclust_h{h:g}"].cat.categories.size == np.unique(ref).size


@pytest.mark.parametrize("method", ["single", "complete", "average", "weighted"])
def test_half_correlation_keeps_tree_and_halves_heights(small, method):
    X = small.obsm["X_pca_harmony"][:, :20].astype(np.float64)
    full = sch.linkage(pdist(X, "correlation"), method=method)  # scipy's 1 - r
    adata = small.copy()
    scc.tl.hclust(adata, use_rep="X_pca_harmony", n_pcs=20, method=method, metric="correlation", n_clusters=[4])
    Z = adata.uns["hclust"]["linkage"]
    np.testing.assert_array_equal(Z[:, [0, 1, 3]], full[:, [0, 1, 3]])
    np.testing.assert_allclose(Z[:, 2], full[:, 2] / 2, rtol=1e-12, atol=1e-15)


def test_ward_equals_agglomerative_clustering(sim):
    adata = sim[:1500].copy()
    scc.tl.hclust(adata, use_rep="X_pca_harmony", n_clusters=[5, 10, 15])
    X = adata.obsm["X_pca_harmony"]
    for k in (5, 10, 15):
        ref = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(X)
        assert adjusted_rand_score(ref, adata.obs[f"hclust_{k}"]) == 1.0, k


@pytest.mark.parametrize(("method", "metric"), [("ward", "euclidean"), ("average", "correlation")])
def test_optimal_ordering_leaves_equal_scipy(small, method, metric):
    adata = small.copy()
    scc.tl.hclust(adata, use_rep="X_pca_harmony", n_pcs=20, method=method, metric=metric, optimal_ordering=True)
    X = adata.obsm["X_pca_harmony"][:, :20].astype(np.float64)
    y = pdist(X, metric) / (2 if metric == "correlation" else 1)
    ref = sch.optimal_leaf_ordering(sch.linkage(y, method=method), y)
    np.testing.assert_array_equal(adata.uns["hclust"]["leaves"], sch.leaves_list(ref))
    plain = scc.tl.hclust(small, use_rep="X_pca_harmony", n_pcs=20, method=method, metric=metric, copy=True)
    assert not np.array_equal(plain.uns["hclust"]["leaves"], adata.uns["hclust"]["leaves"])
    for k in (5, 10, 15):  # the order changes, the clusters do not
        assert adjusted_rand_score(plain.obs[f"hclust_{k}"], adata.obs[f"hclust_{k}"]) == 1.0


@pytest.mark.parametrize(
    ("method", "metric"),
    [("ward", "euclidean"), ("centroid", "euclidean"), ("median", "euclidean"), ("single", "correlation")],
)
def test_memory_saving_path_equals_matrix_path(sim, method, metric):
    adata = sim[:1200].copy()
    kw = {"use_rep": "X_pca_harmony", "n_pcs": 30, "method": method, "metric": metric, "n_clusters": KS}
    vec = scc.tl.hclust(adata, backend="vector", copy=True, **kw)
    mat = scc.tl.hclust(adata, backend="matrix", copy=True, **kw)
    assert vec.uns["hclust"]["backend"] == "vector" and mat.uns["hclust"]["backend"] == "matrix"
    Zv, Zm = vec.uns["hclust"]["linkage"], mat.uns["hclust"]["linkage"]
    np.testing.assert_array_equal(Zv[:, [0, 1, 3]], Zm[:, [0, 1, 3]])
    np.testing.assert_allclose(Zv[:, 2], Zm[:, 2], rtol=1e-10, atol=1e-12)
    for k in KS:
        assert (vec.obs[f"hclust_{k}"] == mat.obs[f"hclust_{k}"]).all()


def test_ward_recovers_true_cell_types(sim_flat):
    # the flat simulation (types only: with states, k = 8 splits states of big types before small
    # types); 30 dims as the lab's graph; with all 50 dims Ward's best ARI here is 0.89 (k = 8)
    adata = sim_flat.copy()
    scc.tl.hclust(adata, use_rep="X_pca_harmony", n_pcs=30, n_clusters=[5, 8, 10])
    scores = {k: adjusted_rand_score(adata.obs["cell_type"], adata.obs[f"hclust_{k}"]) for k in (5, 8, 10)}
    assert max(scores.values()) >= 0.9, scores


def test_outputs(small):
    adata = small.copy()
    scc.tl.hclust(adata, use_rep="X_pca_harmony", n_clusters=[7], heights=[30.0], key_added="hc")
    uns = adata.uns["hc"]
    assert sorted(uns["leaves"]) == list(range(500))
    assert uns["monotonic"] and uns["params"]["method"] == "ward"
    assert set(uns["clusterings"]) == {"hc_7", "hc_h30"}
    lab = adata.obs["hc_7"]
    assert isinstance(lab.dtype, pd.CategoricalDtype) and list(lab.cat.categories) == [str(i) for i in range(7)]
    assert (np.diff(lab.value_counts().reindex(lab.cat.categories).to_numpy()) <= 0).all()


def _one_line(exc) -> bool:
    return "\n" not in str(exc.value)


def test_errors(small, monkeypatch):
    a = small.copy()
    for method in ("ward", "centroid", "median"):
        with pytest.raises(
            ConfigError, match=rf"method '{method}' needs metric 'euclidean' \(got 'correlation'\)"
        ) as e:
            scc.tl.hclust(a, use_rep="X_pca_harmony", method=method, metric="correlation")
        assert _one_line(e)
    with pytest.raises(ConfigError, match=r"method: Input should be 'single'.*\(got 'upgma'\)"):
        scc.tl.hclust(a, use_rep="X_pca_harmony", method="upgma")
    with pytest.raises(InputError, match=r"n_clusters=501 is larger than the number of cells \(500\)") as e:
        scc.tl.hclust(a, use_rep="X_pca_harmony", n_clusters=[5, 501])
    assert _one_line(e)
    with pytest.raises(InputError, match="n_pcs=51 is larger"):
        scc.tl.hclust(a, use_rep="X_pca_harmony", n_pcs=51)
    bad = a.copy()
    bad.obsm["X_pca_harmony"] = bad.obsm["X_pca_harmony"].copy()
    bad.obsm["X_pca_harmony"][7] = np.nan
    with pytest.raises(InputError, match="NaN") as e:
        scc.tl.hclust(bad, use_rep="X_pca_harmony")
    assert _one_line(e)
    bad.obsm["X_pca_harmony"][7] = 0.0
    with pytest.raises(InputError, match="all-zero"):
        scc.tl.hclust(bad, use_rep="X_pca_harmony", method="average", metric="cosine")
    with pytest.raises(ConfigError, match="backend 'vector' supports"):
        scc.tl.hclust(a, use_rep="X_pca_harmony", method="complete", backend="vector")
    with pytest.raises(ConfigError, match="at least one k"):
        scc.tl.hclust(a, use_rep="X_pca_harmony", n_clusters=[], heights=[])
    monkeypatch.setattr(_hclust, "MATRIX_MAX_CELLS", 100)
    with pytest.raises(ConfigError, match=r"backend 'matrix' needs the n x n distance matrix .* limit 100 cells") as e:
        scc.tl.hclust(a, use_rep="X_pca_harmony", method="average", backend="matrix")
    assert _one_line(e)
    with pytest.raises(ConfigError, match="optimal_ordering needs the n x n"):
        scc.tl.hclust(a, use_rep="X_pca_harmony", optimal_ordering=True, backend="vector")
    scc.tl.hclust(a, use_rep="X_pca_harmony", method="average", n_micro_clusters=100)  # auto: past the limit
    assert a.uns["hclust"]["backend"] == "micro"
    scc.tl.hclust(a, use_rep="X_pca_harmony", n_clusters=[3])  # ward takes the O(n x dims) path: no limit
    assert a.uns["hclust"]["backend"] == "vector"


def test_ward_on_half_correlation_when_allowed_equals_r_style_scipy(small):
    """The Seurat lab's hclust((1 - cor) / 2, "ward.D2"): scipy's Lance-Williams Ward on those
    dissimilarities, only with the explicit opt-in."""
    adata = small.copy()
    with pytest.raises(ConfigError, match="allow_non_euclidean"):
        scc.tl.hclust(adata, use_rep="X_pca_harmony", n_pcs=30, method="ward", metric="correlation")
    scc.tl.hclust(
        adata,
        use_rep="X_pca_harmony",
        n_pcs=30,
        method="ward",
        metric="correlation",
        allow_non_euclidean=True,
        n_clusters=KS,
    )
    Z = _scipy_linkage(adata.obsm["X_pca_harmony"][:, :30], "ward", "correlation")
    np.testing.assert_allclose(adata.uns["hclust"]["linkage"][:, 2], Z[:, 2], rtol=1e-9)
    for k in KS:
        assert adjusted_rand_score(sch.fcluster(Z, k, criterion="maxclust"), adata.obs[f"hclust_{k}"]) == 1.0


# --- the scalable path ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_weighted_linkage_with_unit_sizes_equals_scipy(method):
    """The micro path's Lance-Williams engine, started from single cells, is scipy's algorithm."""
    from scipy.spatial.distance import squareform

    X = np.random.default_rng(1).normal(size=(250, 6))
    ref = sch.linkage(X, method=method)
    y = pdist(X)
    D = squareform(y**2 if method in ("ward", "centroid", "median") else y)
    Z = _hclust.weighted_linkage(D, np.ones(250), method)
    np.testing.assert_allclose(Z[:, 2], ref[:, 2], rtol=1e-9)
    np.testing.assert_array_equal(Z[:, [0, 1, 3]], ref[:, [0, 1, 3]])


@pytest.mark.parametrize("method", ["ward", "centroid", "average", "single", "complete"])
def test_micro_tree_with_sizes_is_exact_on_duplicated_cells(method):
    """Micro-clusters of identical cells: the size-weighted tree cuts like the exact tree of all
    cells (scipy), so the weights are right (Ward's 2 n_a n_b / (n_a + n_b), UPGMA's means)."""
    rng = np.random.default_rng(2)
    points = rng.normal(size=(60, 4)) * rng.uniform(0.5, 3, 4)
    reps = rng.integers(1, 6, 60)
    labels = np.repeat(np.arange(60), reps)
    cells = points[labels]
    Zm, _, sizes = _hclust._micro_linkage(cells, labels, method, "euclidean")
    np.testing.assert_array_equal(sizes, reps)
    Zc = _hclust.expand_linkage(Zm, labels)
    assert sch.is_valid_linkage(Zc) and Zc.shape == (cells.shape[0] - 1, 4)
    ref = sch.linkage(cells, method=method)
    for k in (2, 4, 7, 12, 25):
        exact = sch.fcluster(ref, k, criterion="maxclust")
        assert adjusted_rand_score(exact, sch.fcluster(Zm, k, criterion="maxclust")[labels]) == 1.0, k
        assert adjusted_rand_score(exact, sch.fcluster(Zc, k, criterion="maxclust")) == 1.0, k


def test_micro_path_agrees_with_exact_ward_and_is_per_cell():
    """Against the exact Ward tree (fastcluster) on a type -> state hierarchy: the upper cuts agree;
    the deeper ones split overlapping states, where even the exact tree is fragile (measured on
    seeds 0 / 1 / 2 at k=15: ARI 0.94 / 0.89 / 0.75), so only k=5 and 10 are held to 0.9."""
    from scclust.datasets import simulate_integrated

    adata = simulate_integrated(4000, n_dims=30, seed=0)
    scc.tl.hclust(adata, use_rep="X_pca_harmony", n_clusters=[5, 10, 15], backend="vector", key_added="exact")
    scc.tl.hclust(adata, use_rep="X_pca_harmony", n_clusters=[5, 10, 15], backend="micro", n_micro_clusters=400)
    uns = adata.uns["hclust"]
    assert uns["backend"] == "micro" and uns["micro"]["n_micro_clusters"] == 400
    assert uns["micro"]["sizes"].sum() == adata.n_obs
    assert uns["linkage"].shape == (adata.n_obs - 1, 4) and sorted(uns["leaves"]) == list(range(adata.n_obs))
    for k in (5, 10, 15):
        assert adata.obs[f"hclust_{k}"].nunique() == k
    scores = {k: adjusted_rand_score(adata.obs[f"exact_{k}"], adata.obs[f"hclust_{k}"]) for k in (5, 10, 15)}
    assert scores[5] >= 0.99 and scores[10] >= 0.9 and scores[15] >= 0.8, scores
    again = scc.tl.hclust(
        adata, use_rep="X_pca_harmony", n_clusters=[5, 10, 15], backend="micro", n_micro_clusters=400, copy=True
    )
    for k in (5, 10, 15):
        assert (again.obs[f"hclust_{k}"] == adata.obs[f"hclust_{k}"]).all()


@pytest.mark.parametrize(
    ("method", "metric"), [("average", "correlation"), ("complete", "cosine"), ("median", "euclidean")]
)
def test_micro_path_every_method(small, method, metric):
    a = scc.tl.hclust(
        small,
        use_rep="X_pca_harmony",
        method=method,
        metric=metric,
        n_clusters=[4, 8],
        heights=[0.05],
        backend="micro",
        n_micro_clusters=60,
        copy=True,
    )
    assert a.uns["hclust"]["backend"] == "micro"
    assert a.obs["hclust_4"].nunique() <= 4 and a.obs["hclust_8"].nunique() <= 8
    # micro == exact when every cell is its own micro-cluster
    b = scc.tl.hclust(
        small,
        use_rep="X_pca_harmony",
        method=method,
        metric=metric,
        n_clusters=[4, 8],
        backend="micro",
        n_micro_clusters=small.n_obs,
        copy=True,
    )
    c = scc.tl.hclust(small, use_rep="X_pca_harmony", method=method, metric=metric, n_clusters=[4, 8], copy=True)
    for k in (4, 8):
        assert adjusted_rand_score(b.obs[f"hclust_{k}"], c.obs[f"hclust_{k}"]) == 1.0


def test_exact_time_estimate_refusal_and_auto_switch(small, caplog):
    import logging

    est = _hclust.estimate_exact_seconds(1_000_000, 50, vector=True)
    assert est > 3600  # hours at atlas scale: never started silently
    assert _hclust.estimate_exact_seconds(2_000_000, 50, vector=True) == pytest.approx(4 * est)
    with pytest.raises(
        ConfigError,
        match=r"exact ward tree on 500 cells x 50 dims \(backend 'vector'\) would take about .*"
        r"max_exact_seconds=1e-06.*'micro'",
    ) as e:
        scc.tl.hclust(small, use_rep="X_pca_harmony", backend="vector", max_exact_seconds=1e-6)
    assert _one_line(e)
    with caplog.at_level(logging.INFO, logger="scclust.tl._hclust"):
        a = scc.tl.hclust(small, use_rep="X_pca_harmony", max_exact_seconds=1e-6, n_micro_clusters=50, copy=True)
    assert a.uns["hclust"]["backend"] == "micro"
    assert "using the micro-cluster approximation" in caplog.text and "would take about" in caplog.text
    with pytest.raises(ConfigError, match="n_clusters=15 is more than n_micro_clusters=10"):
        scc.tl.hclust(small, use_rep="X_pca_harmony", backend="micro", n_micro_clusters=10)
    with pytest.raises(ConfigError, match="n_micro_clusters must be an integer >= 2"):
        scc.tl.hclust(small, use_rep="X_pca_harmony", backend="micro", n_micro_clusters=1)
    with pytest.raises(ConfigError, match="max_exact_seconds must be > 0"):
        scc.tl.hclust(small, use_rep="X_pca_harmony", max_exact_seconds=0)


@pytest.mark.slow
def test_exact_time_estimate_is_the_right_order_of_magnitude():
    """The estimate against a real exact Ward tree: the same order of magnitude (a factor of 10
    either way: machines and their load differ; 22 s measured for 4.3 s estimated at a load of 7
    on 2 cores)."""
    import time

    X = np.random.default_rng(0).normal(size=(12_000, 30))
    import fastcluster

    t = time.perf_counter()
    fastcluster.linkage_vector(X, method="ward")
    took = time.perf_counter() - t
    est = _hclust.estimate_exact_seconds(12_000, 30, vector=True)
    assert est / 10 < took < est * 10, (took, est)


def test_writes_the_runs_colours_for_scanpy(pbmc):
    from scclust.pl._style import tree_colors  # what a run wrote at the end of the hclust stage

    ad = pbmc.copy()
    scc.tl.hclust(ad, use_rep="X_pca", n_clusters=[4, 9], heights=[60.0])
    keys = ["hclust_4", "hclust_9", "hclust_h60"]
    expected = tree_colors(ad, keys)
    for key in keys:
        colours = list(ad.uns[f"{key}_colors"])
        assert colours == expected[key]
        assert len(colours) == len(set(colours)) == len(ad.obs[key].cat.categories)
    # nested cuts of one tree: each cluster of hclust_4 keeps its colour in its largest piece at k = 9
    table = pd.crosstab(ad.obs["hclust_9"], ad.obs["hclust_4"])
    c4, c9 = list(ad.obs["hclust_4"].cat.categories), list(ad.obs["hclust_9"].cat.categories)
    for parent in table.columns:
        largest = table[parent].idxmax()
        assert ad.uns["hclust_9_colors"][c9.index(largest)] == ad.uns["hclust_4_colors"][c4.index(parent)]
