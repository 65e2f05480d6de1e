"""pl.embedding: panels, legends, labels on the data, colour bars, errors, read-only."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from scclust import pl
from scclust._errors import ConfigError, InputError, MissingKeyError
from scclust.pl._embedding import LABEL_ON_DATA_MIN

from ._helpers import assert_unchanged, snapshot


def test_grid_of_categorical_and_gene_panels(sim):
    before = snapshot(sim)
    fig = pl.embedding(sim, basis="X_umap_harmony", color=["cell_type", "sample", "CD3E"], ncols=2)
    assert isinstance(fig, Figure)
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in visible] == ["cell_type", "sample", "CD3E"]
    assert len([ax for ax in fig.axes if not ax.get_visible()]) == 1  # 3 panels in a 2 x 2 grid
    legend = visible[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == list(sim.obs["cell_type"].cat.categories)
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)  # the gene panel
    assert visible[0].get_xlabel() == "UMAP1"  # the method, not the key (Harmony may have been skipped)
    assert_unchanged(sim, before)


def test_gene_values_from_raw_highest_on_top(sim):
    fig = pl.embedding(sim, basis="X_umap_harmony", color=["LYZ"])
    pc = fig.axes[0].collections[0]
    vals = np.asarray(pc.get_array())
    X = sim.raw[:, "LYZ"].X
    ref = np.sort((X.toarray() if hasattr(X, "toarray") else X).ravel())
    np.testing.assert_allclose(vals, ref, rtol=1e-6)  # drawn in increasing order


def test_labels_on_data_only_when_many_groups(sim):
    a = sim.copy()
    rng = np.random.default_rng(0)
    a.obs["many"] = pd.Categorical(rng.integers(0, LABEL_ON_DATA_MIN + 2, a.n_obs).astype(str))
    fig = pl.embedding(a, basis="X_umap_harmony", color=["many", "cell_type"])
    ax_many, ax_few = fig.axes[0], fig.axes[1]
    assert len(ax_many.texts) == LABEL_ON_DATA_MIN + 2
    assert len(ax_few.texts) == 0


def test_errors(sim):
    with pytest.raises(MissingKeyError, match="basis 'X_tsne' not in .obsm"):
        pl.embedding(sim, basis="X_tsne", color=["cell_type"])
    with pytest.raises(MissingKeyError, match="'NOPE' is neither an .obs column nor a gene"):
        pl.embedding(sim, basis="X_umap_harmony", color=["NOPE"])
    a = sim.copy()
    a.obsm["X_bad"] = np.full((a.n_obs, 2), np.nan)
    with pytest.raises(InputError, match="NaN"):
        pl.embedding(a, basis="X_bad")


def test_string_and_bool_columns_are_categorical(sim):
    a = sim.copy()
    a.obs["s"] = a.obs["sample"].astype(str).astype("string")
    a.obs["b"] = (a.obs["type"] == "Covid").to_numpy()
    fig = pl.embedding(a, basis="X_umap_harmony", color=["s", "b"])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == sorted(a.obs["s"].unique())
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["False", "True"]
    assert not any(ax.get_label() == "<colorbar>" for ax in fig.axes)


def test_on_top_keeps_the_last_point_of_every_bin():
    from scclust.pl._style import on_top

    rng = np.random.default_rng(3)
    xy = rng.normal(size=(20_000, 2))
    order = rng.permutation(len(xy))
    kept = on_top(xy, order, bins=50)
    pos = {int(c): i for i, c in enumerate(order)}
    assert all(pos[int(a)] < pos[int(b)] for a, b in itertools.pairwise(kept))  # drawing order kept
    lo, span = xy.min(axis=0), np.ptp(xy, axis=0)
    cell = [tuple(v) for v in np.minimum(((xy - lo) / span * 50).astype(int), 49)]
    last = {}
    for c in order:  # the point drawn last in each bin, found independently
        last[cell[c]] = int(c)
    assert sorted(kept.tolist()) == sorted(last.values())


def test_many_points_draw_the_same_image(sim, monkeypatch, tmp_path):
    """Above ON_TOP_MIN_POINTS only the visible points are drawn: the image stays the same."""
    from matplotlib.testing.compare import compare_images

    from scclust.pl import _style

    big = sim[np.repeat(np.arange(sim.n_obs), 4)].copy()  # 12,000 cells, many overlapping
    big.obs_names_make_unique()
    big.obsm["X_umap_harmony"] = big.obsm["X_umap_harmony"] + np.random.default_rng(0).normal(0, 0.05, (big.n_obs, 2))
    paths = []
    for name, limit in (("all", 10**9), ("on_top", 0)):
        monkeypatch.setattr(_style, "ON_TOP_MIN_POINTS", limit)
        fig = pl.embedding(big, basis="X_umap_harmony", color=["cell_type", "LYZ"])
        n_drawn = len(fig.axes[0].collections[0].get_offsets())
        fig.savefig(tmp_path / f"{name}.png", dpi=150)
        paths.append(tmp_path / f"{name}.png")
        if limit == 0:
            assert n_drawn < big.n_obs  # fewer points ...
    assert compare_images(str(paths[0]), str(paths[1]), tol=3) is None  # ... the same picture


def test_one_panel_into_given_axes_with_the_stored_colours(pbmc):
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    a = pbmc.copy()
    before = snapshot(a)
    fig, (left, right) = plt.subplots(1, 2)
    try:
        got = pl.embedding(a, basis="umap", color="louvain", ax=right, title="my title")
        assert got is fig and len(fig.axes) == 2  # nothing added: the panel is the given axes
        assert right.get_title() == "my title" and fig.get_suptitle() == "" and not left.has_data()
        np.testing.assert_allclose(np.sort(right.collections[0].get_offsets()[:, 0]), np.sort(a.obsm["X_umap"][:, 0]))
        drawn = {tuple(c) for c in right.collections[0].get_facecolors()}
        assert drawn == {to_rgba(c) for c in a.uns["louvain_colors"]}  # scanpy's colours of the column
        assert pl.embedding(a, basis="umap", color="CD3E", ax=left) is fig  # a gene: its colour bar joins the figure
        assert len(fig.axes) == 3
        with pytest.raises(ConfigError, match=r"^ax= draws one panel, but color= gives 2 \(2 panels\)"):
            pl.embedding(a, basis="umap", color=["louvain", "CD3E"], ax=left)
    finally:
        plt.close(fig)
    assert_unchanged(a, before)
