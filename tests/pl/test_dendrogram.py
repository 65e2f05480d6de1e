"""pl.dendrogram and pl.dotplot: figures, order, missing genes, nothing computed or modified."""

from __future__ import annotations

import matplotlib.collections as mcoll
import numpy as np
import pytest
from matplotlib.figure import Figure

from scclust import pl, tl
from scclust._errors import ConfigError, InputError, MissingKeyError, ScclustWarning
from scclust.datasets import LAB_MARKERS

from ._helpers import assert_unchanged, snapshot


@pytest.fixture(scope="module")
def with_tree(sim):
    a = sim.copy()
    tl.leiden(a, resolutions=[1.4])
    tl.dendrogram(a, groupby="leiden_1.4")
    tl.dendrogram(a, groupby="cell_type", optimal_ordering=True)
    return a


def _dots(fig):
    return next(ax for ax in fig.axes if ax.get_label() == "dots")


@pytest.mark.parametrize("groupby", ["leiden_1.4", "cell_type"])
def test_dotplot_rows_follow_the_dendrogram_leaves(with_tree, groupby):
    before = snapshot(with_tree)
    fig = pl.dotplot(with_tree, groupby=groupby, genes=LAB_MARKERS)
    assert isinstance(fig, Figure)
    ax = _dots(fig)
    rows = [t.get_text().split(" (n=")[0] for t in ax.get_yticklabels()]
    # y axis is inverted: tick order is top to bottom
    assert rows == with_tree.uns[f"dendrogram_{groupby}"]["categories_ordered"]
    assert [t.get_text() for t in ax.get_xticklabels()] == LAB_MARKERS
    dots = next(c for c in ax.collections if isinstance(c, mcoll.PathCollection))
    assert len(dots.get_offsets()) == len(rows) * len(LAB_MARKERS)
    assert_unchanged(with_tree, before)


def test_dot_sizes_and_colours_are_the_group_stats(with_tree):
    fig = pl.dotplot(with_tree, groupby="cell_type", genes=["CD3E", "LYZ"], dendrogram=False)
    ax = _dots(fig)
    dots = next(c for c in ax.collections if isinstance(c, mcoll.PathCollection))
    means = tl.cluster_means(with_tree, groupby="cell_type", genes=["CD3E", "LYZ"])
    np.testing.assert_allclose(np.asarray(dots.get_array()), means.to_numpy().ravel(), rtol=1e-6)
    rows = [t.get_text().split(" (n=")[0] for t in ax.get_yticklabels()]
    assert rows == list(with_tree.obs["cell_type"].cat.categories)  # category order without dendrogram
    # CD3E dots: T cells large, monocytes small
    sizes = np.asarray(dots.get_sizes()).reshape(len(rows), 2)
    assert sizes[rows.index("CD4 T"), 0] > 3 * sizes[rows.index("CD14 Mono"), 0]


def test_missing_genes_warn_and_plot_the_rest(with_tree):
    with pytest.warns(ScclustWarning, match="left out: NOT_A_GENE, ALSO_NOT"):
        fig = pl.dotplot(with_tree, groupby="leiden_1.4", genes=["CD3E", "NOT_A_GENE", "LYZ", "ALSO_NOT"])
    assert [t.get_text() for t in _dots(fig).get_xticklabels()] == ["CD3E", "LYZ"]
    with pytest.raises(MissingKeyError, match="none of the genes"):
        pl.dotplot(with_tree, groupby="leiden_1.4", genes=["NOT_A_GENE"])


def test_nothing_is_computed_silently(with_tree):
    a = with_tree.copy()
    a.obs["other"] = a.obs["cell_type"]
    before = snapshot(a)
    with pytest.raises(MissingKeyError, match="run scclust.tl.dendrogram.*'relationships' stage"):
        pl.dotplot(a, groupby="other", genes=["CD3E"])
    with pytest.raises(MissingKeyError, match="no dendrogram for 'other'"):
        pl.dendrogram(a, groupby="other")
    assert_unchanged(a, before)


def test_dendrogram_figure(with_tree):
    before = snapshot(with_tree)
    fig = pl.dendrogram(with_tree, groupby="leiden_1.4")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    leaves = [t.get_text().split(" (n=")[0] for t in ax.get_xticklabels()]
    assert leaves == with_tree.uns["dendrogram_leiden_1.4"]["categories_ordered"]
    assert "correlation" in ax.get_ylabel()
    sizes = with_tree.obs["leiden_1.4"].value_counts()
    first = ax.get_xticklabels()[0].get_text()
    assert first.endswith(f"(n={sizes[leaves[0]]})")
    assert_unchanged(with_tree, before)


def test_missing_dendrogram_names_both_ways_out(pbmc):
    a = pbmc.copy()
    before = snapshot(a)
    with pytest.raises(MissingKeyError) as err:
        pl.dotplot(a, groupby="louvain", genes=["CD3E", "LYZ"])
    msg = str(err.value)
    assert "scclust.tl.dendrogram(adata, groupby='louvain')" in msg  # the call that makes it
    assert "dendrogram=False" in msg  # the option that draws without it
    assert "\n" not in msg
    assert_unchanged(a, before)
    fig = pl.dotplot(a, groupby="louvain", genes=["CD3E", "LYZ"], dendrogram=False)  # the way out works
    rows = [t.get_text().split(" (n=")[0] for t in _dots(fig).get_yticklabels()]
    assert rows == list(a.obs["louvain"].cat.categories)
    # a dendrogram made for other groups: the same two ways out
    tl.dendrogram(a, groupby="louvain", use_rep="X_pca")
    a.obs["louvain"] = a.obs["louvain"].cat.rename_categories(lambda c: f"{c}_renamed")
    with pytest.raises(
        InputError, match=r"re-run scclust\.tl\.dendrogram\(adata, groupby='louvain'\), or pass dendrogram=False"
    ):
        pl.dotplot(a, groupby="louvain", genes=["CD3E"])
    # pl.dendrogram has no way to draw without one: it names the call only
    with pytest.raises(MissingKeyError, match=r"no dendrogram for 'sample'.*first$"):
        pl.dendrogram(a, groupby="sample")


def test_dotplot_into_given_axes_as_scanpy(pbmc):
    import matplotlib.pyplot as plt

    a = pbmc.copy()
    tl.dendrogram(a, groupby="louvain", use_rep="X_pca")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    try:
        got = pl.dotplot(a, groupby="louvain", genes=["CD3E", "LYZ", "MS4A1"], ax=right)
        assert got is fig
        dots = _dots(fig)
        # the dots, the dendrogram and the legend share the cell of the given axes, left of it is untouched
        x0 = left.get_position().x1
        assert right not in fig.axes and len(fig.axes) >= 4
        assert all(ax.get_position().x0 >= x0 for ax in fig.axes if ax is not left)
        leaves = [t.get_text().split(" (n=")[0] for t in dots.get_yticklabels()]
        assert leaves == list(a.uns["dendrogram_louvain"]["categories_ordered"])
        with pytest.raises(ConfigError, match="needs axes on a grid"):
            pl.dotplot(a, groupby="louvain", genes=["CD3E"], ax=fig.add_axes((0, 0, 0.1, 0.1)))
    finally:
        plt.close(fig)
