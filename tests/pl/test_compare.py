"""ARI / NMI heatmap figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from matplotlib.figure import Figure

import scclust as scc
from scclust._errors import ConfigError, MissingKeyError


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
