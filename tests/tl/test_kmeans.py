"""k-means: parity with scikit-learn, truth recovery on simulated data, labels, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

import scclust as scc
from scclust._errors import ConfigError, InputError


@pytest.mark.parametrize(("n_init", "n_pcs"), [(5, None), ("auto", 30), (3, 10)])
def test_equals_sklearn(sim, n_init, n_pcs):
    adata = sim.copy()
    scc.tl.kmeans(adata, n_clusters=[4, 8, 12], use_rep="X_pca_harmony", n_pcs=n_pcs, n_init=n_init, random_state=1)
    X = sim.obsm["X_pca_harmony"][:, :n_pcs] if n_pcs else sim.obsm["X_pca_harmony"]
    for k in (4, 8, 12):
        ref = KMeans(n_clusters=k, n_init=n_init, random_state=1).fit(X)
        key = f"kmeans{k}"
        assert adjusted_rand_score(ref.labels_, adata.obs[key]) == 1.0
        info = adata.uns["kmeans"]["clusterings"][key]
        assert info["inertia"] == pytest.approx(float(ref.inertia_), rel=1e-12)
        assert info["n_clusters"] == k and info["n_iter"] == ref.n_iter_
    assert adata.uns["kmeans"]["params"]["n_init"] == n_init


def test_recovers_true_cell_types(sim_flat):
    # 8 simulated types (the flat simulation: with states, k = 8 splits states of big types before small
    # types); k = 8 is in the list, as the Seurat lab's k list (5, 7, 10, 12, ...) has k near the truth
    adata = sim_flat.copy()
    scc.tl.kmeans(adata, n_clusters=[5, 8, 10], use_rep="X_pca_harmony")
    scores = {k: adjusted_rand_score(adata.obs["cell_type"], adata.obs[f"kmeans{k}"]) for k in (5, 8, 10)}
    assert max(scores.values()) >= 0.9, scores
    assert max(scores, key=scores.get) == 8


def test_labels_are_natsorted_and_numbered_by_size(sim):
    adata = scc.tl.kmeans(sim, n_clusters=[12], use_rep="X_pca_harmony", key_added="km", copy=True)
    assert "km12" not in sim.obs  # copy=True leaves the input alone
    lab = adata.obs["km12"]
    assert isinstance(lab.dtype, pd.CategoricalDtype)
    assert list(lab.cat.categories) == [str(i) for i in range(12)]
    sizes = lab.value_counts().reindex(lab.cat.categories).to_numpy()
    assert (np.diff(sizes) <= 0).all()


def test_duplicate_k_dropped(sim):
    adata = scc.tl.kmeans(sim, n_clusters=[5, 5, 3], use_rep="X_pca_harmony", n_init=1, copy=True)
    assert list(adata.uns["kmeans"]["clusterings"]) == ["kmeans5", "kmeans3"]


def _one_line(exc) -> bool:
    return "\n" not in str(exc.value)


def test_errors(sim):
    small = sim[:20].copy()
    with pytest.raises(InputError, match=r"n_clusters=25 is larger than the number of cells \(20\)") as e:
        scc.tl.kmeans(small, n_clusters=[5, 25], use_rep="X_pca_harmony")
    assert _one_line(e)
    with pytest.raises(InputError, match=r"n_pcs=60 is larger") as e:
        scc.tl.kmeans(small, use_rep="X_pca_harmony", n_pcs=60, n_clusters=[2])
    assert _one_line(e)
    bad = small.copy()
    bad.obsm["X_pca_harmony"] = bad.obsm["X_pca_harmony"].copy()
    bad.obsm["X_pca_harmony"][3, 2] = np.nan
    with pytest.raises(InputError, match="NaN") as e:
        scc.tl.kmeans(bad, use_rep="X_pca_harmony", n_clusters=[2])
    assert _one_line(e)
    with pytest.raises(ConfigError, match="n_init"):
        scc.tl.kmeans(small, use_rep="X_pca_harmony", n_clusters=[2], n_init=0)
    with pytest.raises(ConfigError, match=">= 1|greater than or equal to 1"):
        scc.tl.kmeans(small, use_rep="X_pca_harmony", n_clusters=[0])
    assert "kmeans2" not in small.obs


def test_writes_the_runs_colours_for_scanpy(pbmc, caplog):
    import logging

    from scclust.pl._style import tree_colors  # what a run wrote at the end of the kmeans stage

    ad = pbmc.copy()
    scc.tl.kmeans(ad, use_rep="X_pca", n_clusters=[3, 6], n_init=1)
    expected = tree_colors(ad, ["kmeans3", "kmeans6"])
    for key in ("kmeans3", "kmeans6"):
        colours = list(ad.uns[f"{key}_colors"])
        assert colours == expected[key]
        assert len(colours) == len(set(colours)) == len(ad.obs[key].cat.categories)
    with caplog.at_level(logging.INFO, logger="scclust"):
        scc.tl.kmeans(ad, use_rep="X_pca", n_clusters=[3], n_init=1)
    assert any(
        r.getMessage() == "overwriting the existing .obs['kmeans3'] with new cluster labels" for r in caplog.records
    )
