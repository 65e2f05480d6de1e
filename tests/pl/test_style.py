"""The notebook conventions every plot function shares (pl/_style.py's new_axes / new_figure /
finish_figure / one_panel / basis_key): ``show=`` as scanpy's, ``ax=`` on every function that can
draw one panel, scanpy's short basis names."""

from __future__ import annotations

import inspect

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

import scclust as scc
from scclust._errors import ConfigError, MissingKeyError

#: figures of several axes on one grid: ``ax=`` cannot hold them (``show=`` only)
NO_AX = {"clustered_heatmap", "subcluster_overview"}


@pytest.fixture(scope="module")
def nb(pbmc):
    """pbmc68k with a graph, a Leiden series, a dendrogram and a stability result."""
    ad = pbmc.copy()
    scc.pp.neighbors(ad, use_rep="X_pca", n_neighbors=10)
    scc.tl.leiden(ad, resolutions=[0.4, 1.0])
    scc.tl.dendrogram(ad, groupby="louvain")
    res = scc.tl.stability(ad, keys=["leiden_0.4", "leiden_1.0"], n_seeds=2, n_subsamples=1, n_jobs=1)
    heat = scc.tl.cluster_heatmap(
        scc.tl.cluster_means(ad, groupby="louvain", genes=list(ad.var_names[:12])).T, n_boot=0
    )
    return ad, res, heat


#: one single-panel call per function (the arguments that make one panel)
CALLS = {
    "embedding": lambda ad, res, heat: ({"adata": ad, "basis": "umap", "color": "louvain"}),
    "graph_block": lambda ad, res, heat: ({"adata": ad, "neighbors_keys": ["neighbors"], "n_cells": 50}),
    "pca_variance": lambda ad, res, heat: ({"adata": ad}),
    "highly_variable_genes": lambda ad, res, heat: ({"hvg": ad}),
    "dendrogram": lambda ad, res, heat: ({"adata": ad, "groupby": "louvain"}),
    "dotplot": lambda ad, res, heat: ({"adata": ad, "groupby": "louvain", "genes": list(ad.var_names[:4])}),
    "compare": lambda ad, res, heat: ({"adata": ad, "keys": ["leiden_0.4", "louvain"], "metrics": ["ari"]}),
    "clustree": lambda ad, res, heat: ({"adata": ad, "keys": ["leiden_0.4", "leiden_1.0"]}),
    "proportions": lambda ad, res, heat: ({"adata": ad, "groupby": "louvain", "by": "sample"}),
    "qc_violin": lambda ad, res, heat: ({"adata": ad, "groupby": "louvain", "keys": ["total_counts"]}),
    "stability": lambda ad, res, heat: ({"result": res}),
    "stability_embedding": lambda ad, res, heat: ({"adata": ad, "key": "leiden_1.0", "basis": "umap"}),
    "stability_runs": lambda ad, res, heat: ({"result": res, "key": "leiden_1.0"}),
    "clustered_heatmap": lambda ad, res, heat: ({"result": heat}),
}


def _call(name, nb, **kw):
    args = CALLS[name](*nb)
    first = next(iter(args))
    return getattr(scc.pl, name)(args.pop(first), **args, **kw)


def test_every_plot_function_has_scanpys_show_and_ax():
    for name in scc.pl.__all__:
        params = inspect.signature(getattr(scc.pl, name)).parameters
        assert "show" in params and params["show"].default is None, name
        assert params["show"].kind is inspect.Parameter.KEYWORD_ONLY, name
        if name not in NO_AX:
            assert "ax" in params and params["ax"].default is None, name


@pytest.mark.parametrize("name", [n for n in sorted(CALLS) if n not in NO_AX])
def test_ax_draws_into_the_given_axes_and_returns_its_figure(nb, name):
    fig, (left, right) = plt.subplots(1, 2)
    try:
        got = _call(name, nb, ax=right)
        assert got is fig
        if name != "dotplot":  # dotplot replaces the axes by its panels, in the axes' grid cell
            assert right in fig.axes and right.has_data()
        else:
            assert right not in fig.axes and any(a.get_label() == "dots" for a in fig.axes)
        assert not left.has_data()  # nothing drawn elsewhere
    finally:
        plt.close(fig)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CALLS))
def test_show_true_shows_and_returns_none(nb, name, monkeypatch):
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(list(plt.get_fignums())))
    before = set(plt.get_fignums())
    try:
        assert _call(name, nb, show=True) is None
        assert len(shown) == 1 and set(shown[0]) - before  # a pyplot figure (one pyplot can show) was made
        after = set(plt.get_fignums())
        assert isinstance(_call(name, nb), Figure)  # the default: a Figure, nothing shown, not left in pyplot
        assert isinstance(_call(name, nb, show=False), Figure)
        assert len(shown) == 1 and set(plt.get_fignums()) == after
    finally:
        for num in set(plt.get_fignums()) - before:
            plt.close(num)


def test_show_with_ax_shows_the_figure_of_ax(nb, monkeypatch):
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(True))
    fig, ax = plt.subplots()
    try:
        assert scc.pl.embedding(nb[0], basis="umap", color="louvain", ax=ax, show=True) is None
        assert shown == [True] and ax.collections
    finally:
        plt.close(fig)


@pytest.mark.parametrize(
    ("name", "kw", "param"),
    [
        ("embedding", {"basis": "umap", "color": ["louvain", "sample"]}, "color"),
        ("compare", {"keys": ["leiden_0.4", "louvain"], "metrics": ["ari", "nmi"]}, "metrics"),
        ("qc_violin", {"groupby": "louvain", "keys": ["total_counts", "n_genes_by_counts"]}, "keys"),
        ("qc_violin", {"groupby": "louvain"}, "keys"),  # the default: three metrics
        ("graph_block", {"neighbors_keys": ["neighbors", "neighbors"]}, "neighbors_keys"),
    ],
)
def test_ax_with_several_panels_is_a_one_line_config_error(nb, name, kw, param):
    fig, ax = plt.subplots()
    try:
        with pytest.raises(
            ConfigError,
            match=rf"^ax= draws one panel, but {param}= gives \d \(\d panels\); pass a single "
            r"value per call .* or leave ax=None",
        ) as err:
            getattr(scc.pl, name)(nb[0], **kw, ax=ax)
        assert "\n" not in str(err.value)
        assert not ax.has_data()
    finally:
        plt.close(fig)


def test_basis_takes_scanpys_short_names(nb):
    ad = nb[0]
    for basis, key in [("umap", "X_umap"), ("pca", "X_pca"), ("umap_harmony", "X_umap_harmony"), ("X_umap", "X_umap")]:
        fig = scc.pl.embedding(ad, basis=basis, color="louvain")
        offsets = fig.axes[0].collections[0].get_offsets()
        np.testing.assert_allclose(np.sort(offsets[:, 0]), np.sort(np.asarray(ad.obsm[key])[:, 0]))
        assert fig.axes[0].get_xlabel() == key.removeprefix("X_").split("_")[0].upper() + "1"
    fig = scc.pl.stability_embedding(ad, key="leiden_1.0", basis="pca")
    np.testing.assert_allclose(np.sort(fig.axes[0].collections[0].get_offsets()[:, 1]), np.sort(ad.obsm["X_pca"][:, 1]))
    for call in (
        lambda: scc.pl.embedding(ad, basis="tsne"),
        lambda: scc.pl.stability_embedding(ad, key="leiden_1.0", basis="tsne"),
    ):
        with pytest.raises(
            MissingKeyError, match=r"basis 'tsne' not in \.obsm \(nor 'X_tsne'\); available: 'X_pca', 'X_umap'"
        ):
            call()
