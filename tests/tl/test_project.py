"""scclust.tl.project_labels against scikit-learn's kNN classifier, a brute-force weighted vote and
the simulation's ground truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scclust import pp, tl
from scclust._errors import InputError, MissingKeyError
from scclust.datasets import simulate_integrated


@pytest.fixture(scope="module")
def data():
    a = simulate_integrated(8000, seed=3)
    pp.sketch(a, fraction=0.1, method="uniform", use_rep="X_pca_harmony", n_pcs=20, random_state=1)
    return a


def _sketch_with(a, values):
    sk = a[a.obs["sketch"].to_numpy()].copy()
    sk.obs["lab"] = pd.Categorical(values(sk))
    return sk


@pytest.mark.slow
def test_majority_vote_equals_sklearn_knn_classifier(data):
    """majority: a cell outside the sketch gets scikit-learn's KNeighborsClassifier prediction (ties: the
    lower label, as sklearn's mode) and confidence = its predict_proba; sketch cells keep their label."""
    from sklearn.neighbors import KNeighborsClassifier

    a = data.copy()
    rng = np.random.default_rng(0)
    # noisy labels (votes disagree, ties happen); letters: not renumbered by size
    sk = _sketch_with(a, lambda s: np.array(list("abcde"))[rng.integers(0, 5, s.n_obs)])
    tl.project_labels(a, sketch=sk, keys=["lab"], use_rep="X_pca_harmony", n_pcs=20, n_neighbors=7, vote="majority")
    X = a.obsm["X_pca_harmony"][:, :20].astype(np.float64)
    inside = a.obs["sketch"].to_numpy()
    codes = sk.obs["lab"].cat.codes.to_numpy()
    clf = KNeighborsClassifier(n_neighbors=7).fit(X[inside], codes)
    out = a.obs["lab"].cat.codes.to_numpy()
    np.testing.assert_array_equal(out[~inside], clf.predict(X[~inside]))
    np.testing.assert_array_equal(out[inside], codes)
    proba = clf.predict_proba(X[~inside])
    np.testing.assert_allclose(a.obs["lab_confidence"].to_numpy()[~inside], proba.max(axis=1), rtol=1e-6)
    assert list(a.obs["lab"].cat.categories) == list(sk.obs["lab"].cat.categories)


def test_weighted_vote_equals_brute_force(data):
    a = data.copy()
    rng = np.random.default_rng(1)
    sk = _sketch_with(a, lambda s: np.array(list("abcd"))[rng.integers(0, 4, s.n_obs)])
    tl.project_labels(a, sketch=sk, keys=["lab"], use_rep="X_pca_harmony", n_pcs=20, n_neighbors=10)
    X = a.obsm["X_pca_harmony"][:, :20].astype(np.float64)
    S = X[a.obs["sketch"].to_numpy()]
    codes = sk.obs["lab"].cat.codes.to_numpy()
    rows = rng.choice(np.flatnonzero(~a.obs["sketch"].to_numpy()), 300, replace=False)
    D = np.sqrt(((X[rows, None, :] - S[None]) ** 2).sum(-1))
    nn = np.argsort(D, axis=1)[:, :10]
    d = np.take_along_axis(D, nn, axis=1)
    w = np.exp(-((d / d[:, -1:]) ** 2))
    votes = np.zeros((len(rows), 4))
    np.add.at(votes, (np.arange(len(rows))[:, None], codes[nn]), w)
    np.testing.assert_array_equal(a.obs["lab"].cat.codes.to_numpy()[rows], votes.argmax(1))
    np.testing.assert_allclose(a.obs["lab_confidence"].to_numpy()[rows], votes.max(1) / votes.sum(1), rtol=1e-4)


def test_truth_projected_from_a_sketch_is_the_truth(data):
    """The simulated cell types of the sketch's cells, projected: every cell gets its own type (the
    types are separated; a wrong vote would show)."""
    a = data.copy()
    sk = a[a.obs["sketch"].to_numpy()].copy()
    sk.obs["typ"] = sk.obs["cell_type"].astype(str).astype("category")
    table = tl.project_labels(a, sketch=sk, keys=["typ"], use_rep="X_pca_harmony", n_pcs=20)
    acc = (a.obs["typ"].astype(str).to_numpy() == a.obs["cell_type"].astype(str).to_numpy()).mean()
    assert acc > 0.995, acc
    assert set(table.columns) >= {"key", "cluster", "n_sketch", "n_cells", "share_cells", "mean_confidence"}
    assert table["n_cells"].sum() == a.n_obs and table["n_sketch"].sum() == sk.n_obs
    assert table["mean_confidence"].between(0.9, 1).all()


@pytest.mark.slow
def test_clusterings_renumbered_by_size_with_their_colours(data):
    """Labels of the clustering tools ("0" the largest) are renumbered by size among all cells, in the
    sketch too; every cell of the sketch keeps its cluster's colour; .uns records the projection, so
    later stages find the clustering."""
    from scclust.tl._compare import recorded_clusterings

    def colour(ad):
        lut = dict(zip(ad.obs["kmeans6"].cat.categories, ad.uns["kmeans6_colors"], strict=True))
        return pd.Series(ad.obs["kmeans6"].map(lut).astype(str).to_numpy(), index=ad.obs_names)

    a = data.copy()
    inside = a.obs["sketch"].to_numpy() & (a.obs["cell_type"] != a.obs["cell_type"].value_counts().index[0]).to_numpy()
    # a sketch without most of the largest type: its clusters' sizes differ from all cells'
    keep = inside | (a.obs["sketch"].to_numpy() & (np.arange(a.n_obs) % 10 == 0))
    sk = a[keep].copy()
    tl.kmeans(sk, use_rep="X_pca_harmony", n_clusters=6)
    before = colour(sk)
    tl.project_labels(a, sketch=sk, use_rep="X_pca_harmony", n_pcs=20)
    sizes = a.obs["kmeans6"].value_counts()
    assert list(sizes.index) == sorted(sizes.index, key=int), sizes  # "0" the largest of all cells
    assert sizes.is_monotonic_decreasing
    assert list(sk.obs["kmeans6"].value_counts().index) != list(sizes.index)  # the order did change
    pd.testing.assert_series_equal(colour(sk), before)
    assert a.uns["kmeans6_colors"] == sk.uns["kmeans6_colors"]
    assert a.uns["kmeans"]["projected"]["n_sketch"] == sk.n_obs
    assert recorded_clusterings(a) == ["kmeans6"]


@pytest.mark.slow
def test_ivf_index_for_large_searches(data, monkeypatch):
    from scclust.tl import _project

    a = data.copy()
    pp.sketch(a, n_cells=2500, use_rep="X_pca_harmony", n_pcs=20)
    b = a.copy()
    sk = a[a.obs["sketch"].to_numpy()].copy()
    tl.kmeans(sk, use_rep="X_pca_harmony", n_clusters=8)
    t1 = tl.project_labels(a, sketch=sk, use_rep="X_pca_harmony", n_pcs=20)
    monkeypatch.setattr(_project, "EXACT_MAX_PAIRS", 0)
    t2 = tl.project_labels(b, sketch=sk, use_rep="X_pca_harmony", n_pcs=20)
    assert t1.attrs["projected"]["index"] == "flat" and t2.attrs["projected"]["index"] == "ivf"
    assert t2.attrs["projected"]["recall"] >= 0.99
    assert (a.obs["kmeans8"] == b.obs["kmeans8"]).mean() > 0.995


def test_errors(data):
    a = data.copy()
    sk = a[a.obs["sketch"].to_numpy()].copy()
    with pytest.raises(MissingKeyError, match="no clustering recorded"):
        tl.project_labels(a, sketch=sk, use_rep="X_pca_harmony")
    with pytest.raises(MissingKeyError, match=r"keys \['nope'\] not in the sketch"):
        tl.project_labels(a, sketch=sk, keys="nope", use_rep="X_pca_harmony")
    other = sk.copy()
    other.obs_names = [f"x{i}" for i in range(other.n_obs)]
    other.obs["lab"] = pd.Categorical(["a"] * other.n_obs)
    with pytest.raises(InputError, match="not in adata"):
        tl.project_labels(a, sketch=other, keys="lab", use_rep="X_pca_harmony")
