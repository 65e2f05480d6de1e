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


@pytest.mark.parametrize(("method", "metric"), [("ward", "euclidean"), ("centroid", "euclidean"),
                                                ("median", "euclidean"), ("single", "correlation")])
def test_memory_saving_path_equals_matrix_path(sim, method, metric):
    adata = sim[:1200].copy()
    kw = dict(use_rep="X_pca_harmony", n_pcs=30, method=method, metric=metric, n_clusters=KS)
    vec = scc.tl.hclust(adata, backend="vector", copy=True, **kw)
    mat = scc.tl.hclust(adata, backend="matrix", copy=True, **kw)
    assert vec.uns["hclust"]["backend"] == "vector" and mat.uns["hclust"]["backend"] == "matrix"
    Zv, Zm = vec.uns["hclust"]["linkage"], mat.uns["hclust"]["linkage"]
    np.testing.assert_array_equal(Zv[:, [0, 1, 3]], Zm[:, [0, 1, 3]])
    np.testing.assert_allclose(Zv[:, 2], Zm[:, 2], rtol=1e-10, atol=1e-12)
    for k in KS:
        assert (vec.obs[f"hclust_{k}"] == mat.obs[f"hclust_{k}"]).all()


def test_ward_recovers_true_cell_types(sim):
    # 30 dims as the lab's graph; with all 50 dims Ward's best ARI here is 0.89 (k = 8)
    adata = sim.copy()
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
        with pytest.raises(ConfigError, match=rf"method '{method}' needs metric 'euclidean' \(got 'correlation'\)") as e:
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
    with pytest.raises(ConfigError, match=r"method 'average' needs the n x n distance matrix .* limit 100 cells") as e:
        scc.tl.hclust(a, use_rep="X_pca_harmony", method="average")
    assert _one_line(e)
    with pytest.raises(ConfigError, match="optimal_ordering needs the n x n"):
        scc.tl.hclust(a, use_rep="X_pca_harmony", optimal_ordering=True)
    scc.tl.hclust(a, use_rep="X_pca_harmony", n_clusters=[3])  # ward takes the O(n x dims) path: no limit
    assert a.uns["hclust"]["backend"] == "vector"


def test_ward_on_half_correlation_when_allowed_equals_r_style_scipy(small):
    """The Seurat lab's hclust((1 - cor) / 2, "ward.D2"): scipy's Lance-Williams Ward on those
    dissimilarities, only with the explicit opt-in."""
    adata = small.copy()
    with pytest.raises(ConfigError, match="allow_non_euclidean"):
        scc.tl.hclust(adata, use_rep="X_pca_harmony", n_pcs=30, method="ward", metric="correlation")
    scc.tl.hclust(adata, use_rep="X_pca_harmony", n_pcs=30, method="ward", metric="correlation",
                  allow_non_euclidean=True, n_clusters=KS)
    Z = _scipy_linkage(adata.obsm["X_pca_harmony"][:, :30], "ward", "correlation")
    np.testing.assert_allclose(adata.uns["hclust"]["linkage"][:, 2], Z[:, 2], rtol=1e-9)
    for k in KS:
        assert adjusted_rand_score(sch.fcluster(Z, k, criterion="maxclust"), adata.obs[f"hclust_{k}"]) == 1.0
