"""scclust.pl.markers: the dot plot of each cluster's top markers, read from tl.markers' results."""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure

from scclust import pl, tl
from scclust._errors import InputError, MissingKeyError

from ._helpers import assert_unchanged, snapshot


@pytest.fixture(scope="module")
def with_markers(pbmc):
    adata = pbmc.copy()
    tl.markers(adata, groupby="bulk_labels")
    return adata


def _dots(fig):
    return next(ax for ax in fig.axes if ax.get_label() == "dots")


def test_top_markers_in_cluster_order(with_markers):
    adata = with_markers.copy()
    before = snapshot(adata)
    fig = pl.markers(adata, groupby="bulk_labels", n_genes=2)
    assert isinstance(fig, Figure)
    assert_unchanged(adata, before)
    top = tl.top_markers(adata, key="markers_bulk_labels", n_genes=2)
    expected = list(dict.fromkeys(g for c in adata.obs["bulk_labels"].cat.categories for g in top[c]))
    genes = [t.get_text() for t in _dots(fig).get_xticklabels()]
    assert genes == expected
    rows = [t.get_text().split(" (n=")[0] for t in _dots(fig).get_yticklabels()]
    assert rows == list(adata.obs["bulk_labels"].cat.categories)


def test_dendrogram_order_when_one_is_stored(with_markers):
    adata = with_markers.copy()
    tl.dendrogram(adata, groupby="bulk_labels", use_rep="X_pca")
    fig = pl.markers(adata, groupby="bulk_labels", n_genes=1)
    order = [str(c) for c in adata.uns["dendrogram_bulk_labels"]["categories_ordered"]]
    rows = [t.get_text().split(" (n=")[0] for t in _dots(fig).get_yticklabels()]
    assert rows == order
    top = tl.top_markers(adata, key="markers_bulk_labels", n_genes=1)
    assert [t.get_text() for t in _dots(fig).get_xticklabels()] == list(dict.fromkeys(g for c in order for g in top[c]))
    assert len(fig.axes) >= 3  # dots, dendrogram, legend
    fig2 = pl.markers(adata, groupby="bulk_labels", n_genes=1, dendrogram=False)
    assert [t.get_text().split(" (n=")[0] for t in _dots(fig2).get_yticklabels()] == list(
        adata.obs["bulk_labels"].cat.categories
    )


def test_nothing_is_computed_silently(pbmc):
    adata = pbmc.copy()
    with pytest.raises(MissingKeyError, match=r"run scclust.tl.markers \(the 'markers' stage\) first"):
        pl.markers(adata, groupby="bulk_labels")


def test_no_passing_marker_is_an_error_naming_the_way_out(with_markers):
    adata = with_markers.copy()
    adata.uns["markers_bulk_labels"] = dict(adata.uns["markers_bulk_labels"])
    adata.uns["markers_bulk_labels"]["params"] = {**adata.uns["markers_bulk_labels"]["params"], "min_fold_change": 1e9}
    with pytest.raises(InputError, match="passing=False"):
        pl.markers(adata, groupby="bulk_labels")
    assert isinstance(pl.markers(adata, groupby="bulk_labels", passing=False), Figure)
