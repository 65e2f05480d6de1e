"""ARI / NMI heatmap figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from matplotlib.figure import Figure

import scclust as scc
from scclust._errors import ConfigError, InputError, MissingKeyError


@pytest.fixture(scope="module")
def clustered(pbmc):
    adata = pbmc.copy()
    scc.tl.kmeans(adata, n_clusters=[3, 6], use_rep="X_pca", n_init=1)
    scc.tl.hclust(adata, use_rep="X_pca", n_clusters=[3, 6])
    return adata


def test_heatmaps(clustered):
    before = clustered.obs.copy()
    fig = scc.pl.compare(clustered, reference="cell_type")
    assert isinstance(fig, Figure)
    heat = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in heat] == ["Adjusted Rand index", "Normalized mutual information"]
    labels = ["kmeans3", "kmeans6", "hclust_3", "hclust_6", "cell_type"]
    res = scc.tl.compare(clustered, reference="cell_type")
    for ax, metric in zip(heat, ["ari", "nmi"], strict=True):
        assert [t.get_text() for t in ax.get_xticklabels()] == labels
        assert [t.get_text() for t in ax.get_yticklabels()] == labels
        np.testing.assert_allclose(ax.images[0].get_array(), res[metric].to_numpy())
        texts = [t.get_text() for t in ax.texts]
        assert len(texts) == 25 and texts[0] == "1.00"
        assert texts[1] == f"{res[metric].iloc[0, 1]:.2f}"
    assert len(fig.axes) == 3  # two heatmaps + a shared colour bar
    pd.testing.assert_frame_equal(clustered.obs, before)


def test_one_metric_no_annotation(clustered):
    fig = scc.pl.compare(clustered, keys=["kmeans3", "hclust_3"], metrics=["nmi"], annotate=False)
    heat = [ax for ax in fig.axes if ax.get_title()]
    assert len(heat) == 1 and not heat[0].texts


def test_errors(clustered):
    with pytest.raises(ConfigError, match="'rand'"):
        scc.pl.compare(clustered, metrics=["rand"])
    with pytest.raises(MissingKeyError, match="run a clustering stage"):
        scc.pl.compare(AnnData(obs=clustered.obs[["cell_type"]].copy()))


def test_clustree_draws_every_cluster_and_the_kept_edges(clustered):
    before = clustered.obs.copy()
    keys = ["hclust_3", "hclust_6", "kmeans6"]
    fig = scc.pl.clustree(clustered, keys=keys, min_in_prop=0.2)
    ax = fig.axes[0]
    n_clusters = sum(clustered.obs[k].nunique() for k in keys)
    assert len(ax.collections[0].get_offsets()) == n_clusters
    assert sorted(t.get_text() for t in ax.texts[:n_clusters]) == sorted(
        str(c) for k in keys for c in clustered.obs[k].unique()
    )
    edges = scc.tl.cluster_tree(clustered, keys=keys)
    assert len(ax.lines) == int((edges["in_prop"] >= 0.2).sum())
    assert [t.get_text() for t in ax.get_yticklabels()] == keys
    # rows top to bottom in the given order: every node of a key sits on its row
    rows = -np.asarray(ax.collections[0].get_offsets())[:, 1]
    assert list(np.repeat(np.arange(3), [clustered.obs[k].nunique() for k in keys])) == list(rows)
    # hclust cuts of one tree nest: every hclust_6 cluster has a single parent with in_prop 1
    nested = edges[edges["to_key"] == "hclust_6"]
    assert (nested["in_prop"] == 1).all() and nested["to_cluster"].is_unique
    pd.testing.assert_frame_equal(clustered.obs, before)
    with pytest.raises(ConfigError, match="min_in_prop"):
        scc.pl.clustree(clustered, keys=keys, min_in_prop=2)


def test_graph_block_shows_the_graph_weights(pbmc):
    adata = pbmc.copy()
    scc.pp.neighbors(adata, use_rep="X_pca", n_neighbors=10, key_added="knn")
    scc.pp.neighbors(adata, use_rep="X_pca", n_neighbors=10, snn=True, key_added="snn")
    fig = scc.pl.graph_block(adata, neighbors_keys=["knn", "snn"], n_cells=150)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2
    for ax, key in zip(panels, ["knn", "snn"], strict=True):
        block = adata.obsp[adata.uns[key]["connectivities_key"]][:150, :150].toarray()
        np.testing.assert_array_equal(ax.images[0].get_array(), block)
        n_edges = np.count_nonzero(np.triu(block + block.T, k=1))  # undirected edges, each once
        assert ax.get_title().startswith(f"{key}: {n_edges} edges among the first 150 cells")
    with pytest.raises(MissingKeyError, match="not found"):
        scc.pl.graph_block(adata, neighbors_keys=["nope"])


def test_clustree_with_a_subset_clustering_and_bad_keys(clustered):
    adata = clustered.copy()
    sub = adata.obs["kmeans6"].astype(str).where(adata.obs["hclust_3"] == adata.obs["hclust_3"].cat.categories[0])
    adata.obs["sub"] = pd.Categorical(sub)  # labels on one hclust_3 cluster only, NaN elsewhere
    fig = scc.pl.clustree(adata, keys=["hclust_3", "sub"])
    sizes = adata.obs["hclust_3"].value_counts()
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert all(str(c) in texts for c in sizes.index)  # every parent cluster drawn, not only those with subclusters
    assert len(fig.axes[0].collections[0].get_offsets()) == adata.obs["hclust_3"].nunique() + adata.obs["sub"].nunique()
    adata.obs["none"] = pd.Categorical([np.nan] * adata.n_obs, categories=["a"])
    with pytest.raises(InputError, match="no labelled cell"):
        scc.pl.clustree(adata, keys=["hclust_3", "none"])
    with pytest.raises(InputError, match="distinct"):
        scc.pl.clustree(adata, keys=["hclust_3", "hclust_3"])


def test_clustree_without_stability_names_both_ways_out(clustered):
    keys = ["hclust_3", "hclust_6"]
    with pytest.raises(MissingKeyError) as err:
        scc.pl.clustree(clustered, keys=keys, stability="stability")
    msg = str(err.value)
    assert "run scclust.tl.stability(adata, ...) first" in msg and "stability=None" in msg and "\n" not in msg
    assert scc.pl.clustree(clustered, keys=keys, stability=None).axes  # the way out draws


def test_compare_and_graph_block_into_given_axes(clustered):
    import matplotlib.pyplot as plt

    adata = clustered.copy()
    scc.pp.neighbors(adata, use_rep="X_pca", n_neighbors=10)
    fig, (a1, a2) = plt.subplots(1, 2)
    try:
        res = scc.tl.compare(adata, keys=["kmeans3", "hclust_3"])
        assert scc.pl.compare(adata, keys=["kmeans3", "hclust_3"], metrics=["nmi"], ax=a1) is fig
        np.testing.assert_allclose(a1.images[0].get_array(), res["nmi"].to_numpy())
        assert scc.pl.graph_block(adata, neighbors_keys=["neighbors"], n_cells=40, ax=a2) is fig
        block = adata.obsp["connectivities"][:40, :40].toarray()
        np.testing.assert_array_equal(a2.images[0].get_array(), block)
        with pytest.raises(ConfigError, match="metrics= gives 2"):
            scc.pl.compare(adata, keys=["kmeans3", "hclust_3"], ax=a1)
    finally:
        plt.close(fig)
