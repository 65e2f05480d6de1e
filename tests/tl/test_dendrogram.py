"""tl.dendrogram against scanpy's, and cluster_means against pandas."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

from scclust import tl
from scclust._errors import InputError, MissingKeyError
from scclust.tl._dendrogram import get_dendrogram


@pytest.fixture(scope="module")
def clustered(sim):
    a = sim.copy()
    tl.leiden(a, resolutions=[1.0, 2.0])
    return a


@pytest.mark.parametrize(
    ("groupby", "kwargs"),
    [
        ("leiden_1.0", {}),
        (
            "leiden_2.0",
            {"use_rep": "X_pca_harmony", "n_pcs": 10, "cor_method": "spearman", "linkage_method": "average"},
        ),
        ("cell_type", {"linkage_method": "single", "optimal_ordering": True}),
        ("leiden_2.0", {"cor_method": "kendall", "linkage_method": "weighted", "optimal_ordering": True}),
    ],
)
def test_same_tree_as_scanpy(clustered, groupby, kwargs):
    ours, theirs = clustered.copy(), clustered.copy()
    tl.dendrogram(ours, groupby=groupby, **kwargs)
    sc_kwargs = dict(kwargs)
    sc_kwargs.setdefault("use_rep", "X_pca")
    sc.tl.dendrogram(theirs, groupby, **sc_kwargs)
    a, b = ours.uns[f"dendrogram_{groupby}"], theirs.uns[f"dendrogram_{groupby}"]
    assert a["categories_ordered"] == [str(c) for c in b["categories_ordered"]]
    assert a["categories_idx_ordered"] == list(b["categories_idx_ordered"])
    np.testing.assert_allclose(a["linkage"], b["linkage"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a["correlation_matrix"], b["correlation_matrix"], rtol=1e-10, atol=1e-12)
    assert a["groupby"] == b["groupby"] == [groupby]


def test_scanpy_dotplot_uses_it_without_recomputing(clustered):
    a = clustered.copy()
    tl.dendrogram(a, groupby="leiden_1.0", linkage_method="average")  # not scanpy's default linkage
    stored = a.uns["dendrogram_leiden_1.0"]
    dp = sc.pl.dotplot(a, ["CD3E", "LYZ"], groupby="leiden_1.0", dendrogram=True, return_fig=True, show=False)
    assert a.uns["dendrogram_leiden_1.0"] is stored  # not replaced by a recomputation
    assert dp.categories_order == stored["categories_ordered"]


def test_round_trips_through_h5ad(clustered, tmp_path):
    a = clustered.copy()
    tl.dendrogram(a, groupby="leiden_1.0")
    a.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    d = get_dendrogram(back, "leiden_1.0")
    assert list(d["categories_ordered"]) == a.uns["dendrogram_leiden_1.0"]["categories_ordered"]


def test_errors(clustered):
    a = clustered.copy()
    with pytest.raises(MissingKeyError, match="groupby 'leiden_9' not in .obs"):
        tl.dendrogram(a, groupby="leiden_9")
    a.obs["one"] = pd.Categorical(["x"] * a.n_obs)
    with pytest.raises(InputError, match="at least 2"):
        tl.dendrogram(a, groupby="one")
    with pytest.raises(ValueError, match="linkage_method 'wards' not valid"):
        tl.dendrogram(a, groupby="leiden_1.0", linkage_method="wards")
    with pytest.raises(MissingKeyError, match="run scclust.tl.dendrogram"):
        get_dendrogram(a, "leiden_2.0")
    tl.dendrogram(a, groupby="leiden_1.0")
    a.obs["leiden_1.0"] = a.obs["leiden_2.0"]  # labels changed after the tree was made
    with pytest.raises(InputError, match="re-run"):
        get_dendrogram(a, "leiden_1.0")


def test_cluster_means_equal_pandas(clustered):
    a = clustered.copy()
    genes = ["CD3E", "LYZ", "MS4A1"]
    got = tl.cluster_means(a, groupby="leiden_1.0", genes=genes)
    X = a.raw[:, genes].X
    X = X.toarray() if hasattr(X, "toarray") else X
    ref = pd.DataFrame(X, columns=genes, index=a.obs["leiden_1.0"]).groupby(level=0, observed=True).mean()
    np.testing.assert_allclose(got.to_numpy(), ref.to_numpy(), rtol=1e-6)
    assert list(got.index) == list(ref.index)
    # use_raw=False reads .X (scaled HVGs), where the markers are not all present
    hv = [g for g in genes if g in a.var_names]
    got_x = tl.cluster_means(a, groupby="leiden_1.0", genes=hv, use_raw=False)
    ref_x = pd.DataFrame(a[:, hv].X, columns=hv, index=a.obs["leiden_1.0"]).groupby(level=0, observed=True).mean()
    np.testing.assert_allclose(got_x.to_numpy(), ref_x.to_numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(MissingKeyError, match="'NOPE'"):
        tl.cluster_means(a, groupby="leiden_1.0", genes=["CD3E", "NOPE"])


def test_cluster_means_suggests_the_data_s_gene_names(pbmc):
    # pbmc68k has no CD14 (nothing near it either); CD3E it has
    with pytest.raises(
        MissingKeyError,
        match=r"gene\(s\) 'CD14', 'Cd3e' not found in .raw.var_names; "
        r"did you mean 'CD3E' for 'Cd3e'\?$",
    ):
        tl.cluster_means(pbmc, groupby="bulk_labels", genes=["CD14", "Cd3e"])
