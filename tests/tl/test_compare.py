"""Comparing clusterings: ARI / NMI against scikit-learn, reference column, missing labels,
contingency tables against pandas, errors, and the workflow stage's tables."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

import scclust as scc
from scclust._errors import InputError, MissingKeyError


@pytest.fixture(scope="module")
def clustered(sim):
    adata = sim.copy()
    scc.tl.kmeans(adata, n_clusters=[4, 8], use_rep="X_pca_harmony", n_init=2)
    scc.tl.hclust(adata, use_rep="X_pca_harmony", n_pcs=30, n_clusters=[6, 8])
    return adata


def test_matrices_equal_sklearn(clustered):
    before = clustered.obs.copy()
    res = scc.tl.compare(clustered, reference="cell_type")
    keys = ["kmeans4", "kmeans8", "hclust_6", "hclust_8"]
    assert list(res["ari"].index) == [*keys, "cell_type"]  # None -> clusterings recorded in .uns
    for a in [*keys, "cell_type"]:
        for b in [*keys, "cell_type"]:
            la, lb = clustered.obs[a], clustered.obs[b]
            assert res["ari"].loc[a, b] == pytest.approx(adjusted_rand_score(la, lb), abs=1e-12)
            assert res["nmi"].loc[a, b] == pytest.approx(normalized_mutual_info_score(la, lb), abs=1e-12)
    np.testing.assert_array_equal(res["ari"].to_numpy(), res["ari"].to_numpy().T)
    assert res["summary"].loc["hclust_8", "n_clusters"] == 8
    assert res["summary"]["ari_vs_cell_type"].to_dict() == res["ari"].loc[keys, "cell_type"].to_dict()
    pd.testing.assert_frame_equal(clustered.obs, before)  # pure


def _obs(**columns) -> AnnData:
    obs = pd.DataFrame({k: pd.Categorical(v) for k, v in columns.items()})
    obs.index = obs.index.astype(str)
    return AnnData(obs=obs)


@pytest.mark.parametrize(
    "case",
    ["random", "one_cluster_one_side", "one_cluster_both", "identical", "permuted", "unused_categories", "two_cells"],
)
def test_scores_from_the_contingency_table_equal_sklearns_on_edge_cases(case):
    """The scores are computed from one contingency table per pair; each equals scikit-learn's on
    the labels (to rounding), including its special cases (a single cluster, full agreement)."""
    rng = np.random.default_rng(7)
    n = 2 if case == "two_cells" else 5000
    a = rng.integers(0, 9, n)
    b = {
        "random": rng.integers(0, 5, n),
        "one_cluster_one_side": np.zeros(n, int),
        "one_cluster_both": np.zeros(n, int),
        "identical": a,
        "permuted": (a * 7 + 3) % 9,
        "unused_categories": a // 2,
        "two_cells": np.array([0, 1]),
    }[case]
    if case == "one_cluster_both":
        a = np.zeros(n, int)
    la, lb = pd.Categorical(a), pd.Categorical(b)
    if case == "unused_categories":
        la = la.add_categories([99, 100])  # categories no cell has
    res = scc.tl.compare(_obs(a=la, b=lb), keys=["a", "b"])
    assert res["ari"].loc["a", "b"] == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)
    assert res["nmi"].loc["a", "b"] == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-12)


def test_missing_labels_are_left_out(clustered):
    adata = clustered.copy()
    sub = adata.obs["kmeans8"].astype(object)
    sub[: adata.n_obs // 3] = np.nan  # e.g. a subclustering of two thirds of the cells
    adata.obs["sub"] = pd.Categorical(sub)
    res = scc.tl.compare(adata, keys=["sub", "hclust_8"])
    ok = adata.obs["sub"].notna().to_numpy()
    ref = adjusted_rand_score(adata.obs["sub"][ok], adata.obs["hclust_8"][ok])
    assert res["ari"].loc["sub", "hclust_8"] == pytest.approx(ref, abs=1e-12)
    assert res["summary"].loc["sub", "n_clusters"] == adata.obs["sub"].nunique()


def test_contingency_equals_crosstab(clustered):
    t = scc.tl.contingency(clustered, key1="kmeans8", key2="cell_type")
    ref = pd.crosstab(clustered.obs["kmeans8"], clustered.obs["cell_type"])
    assert list(t.index) == [str(i) for i in range(8)]
    assert list(t.columns) == list(clustered.obs["cell_type"].cat.categories)
    np.testing.assert_array_equal(t.to_numpy(), ref.reindex(index=t.index, columns=t.columns).to_numpy())
    assert t.dtypes.eq(np.int64).all()
    assert t.index.name == "kmeans8" and t.columns.name == "cell_type"
    assert t.to_numpy().sum() == clustered.n_obs


def test_errors(clustered):
    with pytest.raises(MissingKeyError, match="clustering 'leiden_9' not in .obs"):
        scc.tl.compare(clustered, keys=["kmeans4", "leiden_9"])
    with pytest.raises(MissingKeyError, match="reference 'truth' not in .obs"):
        scc.tl.compare(clustered, keys=["kmeans4"], reference="truth")
    with pytest.raises(InputError, match="at least two"):
        scc.tl.compare(clustered, keys=["kmeans4"])
    with pytest.raises(MissingKeyError, match="run a clustering stage"):
        scc.tl.compare(AnnData(obs=clustered.obs[["cell_type"]].copy()))


@pytest.mark.slow
def test_compare_stage_writes_tables_and_figure(tmp_path):
    cfg = scc.config.parse_config(
        {
            "input": "builtin:pbmc68k",
            "outdir": str(tmp_path),
            "write_h5ad": False,
            "stages": ["neighbors", "leiden", "kmeans", "hclust", "compare"],
            "neighbors": {"use_rep": "X_pca"},
            "leiden": {"resolutions": [0.5, 1.0]},
            "kmeans": {"n_clusters": [5, 10]},
            "hclust": {"n_clusters": [5, 10], "method": "average", "metric": "correlation"},
            "compare": {"reference": "cell_type"},
        }
    )
    adata, manifest = scc.run(cfg)
    keys = ["leiden_0.5", "leiden_1.0", "kmeans5", "kmeans10", "hclust_5", "hclust_10"]
    assert manifest["clusterings"] == {"leiden": keys[:2], "kmeans": keys[2:4], "hclust": keys[4:]}
    ari = pd.read_csv(tmp_path / "tables" / "ari.csv", index_col=0)
    assert list(ari.index) == [*keys, "cell_type"]
    assert ari.loc["kmeans5", "cell_type"] == pytest.approx(
        adjusted_rand_score(adata.obs["kmeans5"], adata.obs["cell_type"]), abs=1e-6
    )
    assert (tmp_path / "tables" / "nmi.csv").is_file()
    tables = {p.name for p in (tmp_path / "tables").iterdir()}
    for k in keys:
        assert f"contingency_{k}_vs_cell_type.csv" in tables
    for a, b in [("leiden_0.5", "leiden_1.0"), ("kmeans5", "kmeans10"), ("hclust_5", "hclust_10")]:
        assert f"contingency_{a}_vs_{b}.csv" in tables
    assert "contingency_leiden_1.0_vs_kmeans5.csv" not in tables  # consecutive within a stage only
    assert (tmp_path / "figures" / "compare.png").is_file()
    assert "hclust_summary.csv" in tables and "kmeans_summary.csv" in tables


def test_cluster_tree_is_the_stacked_crosstabs(pbmc):
    adata = pbmc.copy()
    scc.tl.kmeans(adata, n_clusters=[3, 5, 8], use_rep="X_pca", n_init=1)
    keys = ["kmeans3", "kmeans5", "kmeans8"]
    edges = scc.tl.cluster_tree(adata, keys=keys)
    assert list(edges["from_key"].unique()) == keys[:2] and list(edges["to_key"].unique()) == keys[1:]
    for a, b in itertools.pairwise(keys):
        ref = pd.crosstab(adata.obs[a].astype(str), adata.obs[b].astype(str)).stack()
        ref = ref[ref > 0]
        sub = edges[edges["from_key"] == a].set_index(["from_cluster", "to_cluster"])["n_cells"]
        assert sub.sort_index().to_dict() == ref.sort_index().to_dict()
        part = edges[edges["from_key"] == a]
        assert part["n_cells"].sum() == adata.n_obs
        np.testing.assert_allclose(part.groupby("to_cluster")["in_prop"].sum(), 1)
        np.testing.assert_allclose(part.groupby("from_cluster")["out_prop"].sum(), 1)
    with pytest.raises(InputError, match="at least two"):
        scc.tl.cluster_tree(adata, keys=["kmeans3"])
