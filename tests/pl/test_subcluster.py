"""pl.subcluster_overview / pl.subcluster_markers: the lab's 2 x 3 and 2 x 2 grids."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

import scclust as scc
from scclust._errors import MissingKeyError


@pytest.fixture(scope="module")
def pair(sim):
    parent = sim.copy()
    scc.pp.neighbors(parent, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20)
    scc.tl.leiden(parent, resolutions=[0.4], flavor="leidenalg", n_iterations=-1)
    sub, _ = scc.tl.subcluster(
        parent,
        name="tnk",
        groupby="leiden_0.4",
        select={"obs_query": "cell_type in ['CD4 T', 'CD8 T', 'NK']"},
        pca={"regress_out": ["total_counts", "pct_counts_mt"]},
        leiden={"key_added": "tcells"},
    )
    return parent, sub


def test_overview_grid(pair):
    parent, sub = pair
    before = (sub.obs.copy(), parent.obs.copy())
    fig = scc.pl.subcluster_overview(sub, parent=parent)
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 6
    titles = [ax.get_title() for ax in axes]
    assert titles[:3] == ["tnk UMAP: sample", "tnk UMAP: leiden_0.4", "tnk UMAP: tcells_0.6"]
    assert titles[3:] == ["parent UMAP: sample", "parent UMAP: leiden_0.4", "parent UMAP: tcells_0.6"]
    # bottom row: parent cells as grey background, then the subset at its parent coordinates
    bg, fg = axes[3].collections[0], axes[3].collections[1]
    assert len(bg.get_offsets()) == parent.n_obs and len(fg.get_offsets()) == sub.n_obs
    pos = parent.obs_names.get_indexer(sub.obs_names)
    assert np.allclose(np.sort(fg.get_offsets()[:, 0]), np.sort(parent.obsm["X_umap_harmony"][pos, 0]))
    legend = [t.get_text() for t in axes[2].get_legend().get_texts()]
    assert legend == list(sub.obs["tcells_0.6"].cat.categories)
    assert sub.obs.equals(before[0]) and parent.obs.equals(before[1])


def test_overview_shows_the_configured_parent_clustering(pair):
    parent, sub = pair
    sub = sub.copy()
    sub.uns["subcluster"] = {**sub.uns["subcluster"], "plot_parent_key": "cell_type"}
    titles = [ax.get_title() for ax in scc.pl.subcluster_overview(sub, parent=parent).axes if ax.get_visible()]
    assert titles[1] == "tnk UMAP: cell_type" and titles[4] == "parent UMAP: cell_type"


def test_markers_grid(pair):
    _, sub = pair
    fig = scc.pl.subcluster_markers(sub)
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["CD3E", "CD4", "CD8A", "GNLY"]
    # colours come from .raw: the CD3E panel's values equal the raw column
    vals = np.sort(axes[0].collections[0].get_array())
    raw = sub.raw[:, "CD3E"].X
    raw = np.sort(raw.toarray().ravel() if hasattr(raw, "toarray") else np.asarray(raw).ravel())
    assert np.allclose(vals, raw)


def test_errors_say_what_to_run(pair, sim):
    parent, sub = pair
    with pytest.raises(MissingKeyError, match="tl.subcluster"):
        scc.pl.subcluster_overview(sim, parent=parent)
    with pytest.raises(MissingKeyError, match="NOTAGENE"):
        scc.pl.subcluster_markers(sub, genes=["NOTAGENE"])


def test_one_marker_into_given_axes_and_short_basis_names(pair):
    import matplotlib.pyplot as plt

    from scclust._errors import ConfigError

    parent, sub = pair
    fig, ax = plt.subplots()
    try:
        assert scc.pl.subcluster_markers(sub, genes=["CD3E"], basis="umap", ax=ax) is fig
        assert ax.get_title() == "CD3E"
        np.testing.assert_allclose(np.sort(ax.collections[0].get_offsets()[:, 0]), np.sort(sub.obsm["X_umap"][:, 0]))
        with pytest.raises(ConfigError, match="genes= gives 2"):
            scc.pl.subcluster_markers(sub, genes=["CD3E", "CD4"], ax=ax)
    finally:
        plt.close(fig)
    short = scc.pl.subcluster_overview(sub, parent=parent, basis="umap", parent_basis="umap_harmony")
    full = scc.pl.subcluster_overview(sub, parent=parent, basis="X_umap", parent_basis="X_umap_harmony")
    for a, b in zip(short.axes, full.axes, strict=True):
        np.testing.assert_array_equal(a.collections[-1].get_offsets(), b.collections[-1].get_offsets())
