"""Clustered heatmap figure: artists, order, labels, annotation bars, large matrices, image
comparisons against committed baselines.

Regenerate the baselines (after an intended change of the drawing) with
``SCCLUST_UPDATE_BASELINES=1 pytest tests/pl/test_heatmap.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.testing.compare import compare_images
from scipy.cluster import hierarchy as sch

import scclust as scc
from scclust._errors import ConfigError, InputError, ScclustWarning
from scclust.datasets import heatmap_example

BASELINE = Path(__file__).parent / "baseline"
SEED_COLORS = {"sample_group": {"control": "#888888", "treated": "#9240ff"}}


@pytest.fixture(scope="module")
def example():
    return heatmap_example()


@pytest.fixture(scope="module")
def levels(example):
    return scc.tl.cluster_heatmap(
        example[0],
        scale="none",
        row_metric="euclidean",
        col_metric="euclidean",
        optimal_ordering=True,
        row_k=3,
        n_boot=50,
    )


def _ax(fig: Figure, gid: str):
    axes = [*fig.axes, *(c for ax in fig.axes for c in ax.child_axes)]  # the colour bar is an inset
    found = [ax for ax in axes if ax.get_gid() == gid]
    assert len(found) == 1, (gid, [a.get_gid() for a in fig.axes])
    return found[0]


def test_artists_and_order(example, levels):
    df, col, row = example
    fig = scc.pl.clustered_heatmap(
        levels, row_annotations=row, col_annotations=col, annotation_colors=SEED_COLORS, title="seed"
    )
    assert isinstance(fig, Figure)
    heat = _ax(fig, "heatmap")
    np.testing.assert_array_equal(heat.images[0].get_array(), levels.ordered().to_numpy())
    rows = [t.get_text() for t in heat.get_yticklabels()]
    assert rows == list(df.index[sch.leaves_list(levels.row_linkage)])
    assert [t.get_text() for t in heat.get_xticklabels()] == list(df.columns[levels.col_order])
    # the dendrograms are scipy's, drawn leaf for leaf in the heatmap's order
    rd = _ax(fig, "row_dendrogram")
    assert len(rd.collections[0].get_segments()) + sum(len(c.get_segments()) for c in rd.collections[1:]) == 23
    cd = _ax(fig, "col_dendrogram")
    assert sum(len(c.get_segments()) for c in cd.collections) == 5
    # annotation bars: planted + group on rows, sample_group on columns with the given colours
    rb = _ax(fig, "row_annotations")
    assert [t.get_text() for t in rb.get_xticklabels()] == ["planted", "group"]
    cb = _ax(fig, "col_annotations")
    bar = cb.images[0].get_array()[0]
    treated = np.array([0x92, 0x40, 0xFF, 0xFF]) / 255
    expect = [np.allclose(bar[j], treated) for j in range(6)]
    assert expect == [c in ("sample_4", "sample_5", "sample_6") for c in df.columns[levels.col_order]]
    # group numbers written on the bar, legends with stability, colour bar, caption, title
    assert sorted(t.get_text() for t in rb.texts) == ["1", "2", "3"]
    legends = _ax(fig, "legends")
    titles = [leg.get_title().get_text() for leg in legends.artists]
    assert titles == ["planted", "row group (bootstrap Jaccard)", "sample_group"]
    group_labels = [t.get_text() for t in legends.artists[1].get_texts()]
    assert group_labels[0] == f"1 (n=8, J={levels.stability.loc['1', 'mean_jaccard']:.2f})"
    assert _ax(fig, "colorbar").get_ylabel() == "value"
    caption = [t for t in fig.texts if t.get_gid() == "caption"]
    assert caption and "euclidean distance, average linkage" in caption[0].get_text().replace("\n", " ")
    assert fig._suptitle.get_text() == "seed"


def test_zscore_uses_centred_diverging_map(example):
    res = scc.tl.cluster_heatmap(example[0], row_k=3, n_boot=0)
    fig = scc.pl.clustered_heatmap(res, show_stability=True)
    im = _ax(fig, "heatmap").images[0]
    lo, hi = im.get_clim()
    assert lo == -hi and hi == pytest.approx(np.abs(res.data.to_numpy()).max())
    assert im.get_cmap().name == "RdBu_r"
    assert _ax(fig, "colorbar").get_ylabel() == "row z-score"
    legends = _ax(fig, "legends")  # no bootstrap: the group legend has no Jaccard
    assert legends.artists[0].get_title().get_text() == "row group"


def test_options_hide_parts(levels):
    fig = scc.pl.clustered_heatmap(
        levels,
        show_row_dendrogram=False,
        show_col_dendrogram=False,
        show_groups=False,
        show_legend=False,
        show_caption=False,
        label_cols=False,
    )
    gids = {ax.get_gid() for ax in fig.axes}
    assert gids == {"heatmap"} and not fig.texts
    assert len(_ax(fig, "heatmap").get_xticklabels()) == 0
    unclustered = scc.tl.cluster_heatmap(levels.values, cluster_cols=False, n_boot=0)
    fig = scc.pl.clustered_heatmap(unclustered)
    assert "col_dendrogram" not in {ax.get_gid() for ax in fig.axes}
    assert [t.get_text() for t in _ax(fig, "heatmap").get_xticklabels()] == list(levels.values.columns)


@pytest.mark.slow
def test_many_rows_hide_labels_or_label_chosen():
    rng = np.random.default_rng(0)
    big = pd.DataFrame(
        rng.normal(size=(2000, 8)) + np.repeat(rng.normal(size=(4, 8)) * 2, 500, axis=0),
        index=[f"g{i}" for i in range(2000)],
    )
    res = scc.tl.cluster_heatmap(big, scale="zscore", row_k=4, n_boot=0)
    fig = scc.pl.clustered_heatmap(res)
    heat = _ax(fig, "heatmap")
    assert len(heat.get_yticklabels()) == 0
    assert heat.images[0].get_array().shape == (2000, 8)
    chosen = ["g5", "g1500", "g999"]
    with pytest.warns(ScclustWarning, match="'nope'"):
        fig = scc.pl.clustered_heatmap(res, label_rows=[*chosen, "nope"])
    heat = _ax(fig, "heatmap")
    labels = [t.get_text() for t in heat.get_yticklabels()]
    assert sorted(labels) == sorted(chosen)
    pos = list(res.data.index[res.row_order])
    np.testing.assert_allclose(heat.get_yticks(), sorted(pos.index(c) + 0.5 for c in chosen))
    fig = scc.pl.clustered_heatmap(res, label_rows=True)
    assert len(_ax(fig, "heatmap").get_yticklabels()) == 2000


@pytest.mark.slow
def test_anndata_unchanged_end_to_end(pbmc):
    adata = pbmc.copy()
    obs, uns, X = adata.obs.copy(), set(adata.uns), adata.X.copy()
    inp = scc.tl.heatmap_matrix(adata, groupby="cell_type", n_top_genes=2, annotations=["type"])
    res = scc.tl.cluster_heatmap(inp.data, row_k=4, n_boot=10)
    fig = scc.pl.clustered_heatmap(res, row_annotations=inp.row_annotations, col_annotations=inp.col_annotations)
    pd.testing.assert_frame_equal(adata.obs, obs)
    assert set(adata.uns) == uns and np.array_equal(adata.X, X)
    # one colour per value across bars: a cell type has the same colour as marker_of and cell_type
    rb, cb = _ax(fig, "row_annotations"), _ax(fig, "col_annotations")
    row_rgba = rb.images[0].get_array()[:, 0]
    col_rgba = cb.images[0].get_array()[0]
    first_marker = inp.row_annotations["marker_of"].loc[res.data.index[res.row_order[0]]]
    j = list(res.data.columns[res.col_order]).index(first_marker)
    np.testing.assert_allclose(row_rgba[0], col_rgba[j])


def test_errors(levels):
    with pytest.raises(ConfigError, match=r"^clustered_heatmap\(\): result: .*ClusteredHeatmap"):
        scc.pl.clustered_heatmap(levels.data)
    with pytest.raises(ConfigError, match="label_rows: .*'auto'"):
        scc.pl.clustered_heatmap(levels, label_rows="some")
    with pytest.raises(InputError, match="matches none"):
        scc.pl.clustered_heatmap(levels, col_annotations=pd.DataFrame({"a": [1, 2]}, index=["x", "y"]))


# ------------------------------------------------------------------------------------------ images
def _image_cases(example):
    df, col, row = example
    levels = scc.tl.cluster_heatmap(
        df,
        scale="none",
        row_metric="euclidean",
        col_metric="euclidean",
        row_method="ward",
        col_method="ward",
        optimal_ordering=True,
        row_k=3,
        n_boot=0,
    )
    recipe = scc.tl.cluster_heatmap(df, row_k=3, n_boot=0)
    cells = scc.tl.cluster_heatmap(df, scale="standard", row_metric="cityblock", cluster_cols=False, n_boot=0)
    quiet = {"label_rows": False, "label_cols": False, "show_legend": False, "show_caption": False, "figsize": (4, 5)}
    return {
        "heatmap_seed_levels": lambda: scc.pl.clustered_heatmap(
            levels, row_annotations=row, col_annotations=col, annotation_colors=SEED_COLORS, **quiet
        ),
        "heatmap_seed_recipe": lambda: scc.pl.clustered_heatmap(
            recipe, col_annotations=col, annotation_colors=SEED_COLORS, **quiet
        ),
        "heatmap_standard_rows_only": lambda: scc.pl.clustered_heatmap(cells, **quiet),
    }


@pytest.mark.parametrize("name", ["heatmap_seed_levels", "heatmap_seed_recipe", "heatmap_standard_rows_only"])
def test_image(example, name, tmp_path):
    fig = _image_cases(example)[name]()
    for t in [*fig.texts, *(t for ax in fig.axes for t in ax.texts)]:
        t.set_visible(False)  # no font-dependent pixels: texts and tick labels hidden in the images
    for ax in fig.axes:
        ax.tick_params(labelbottom=False, labelleft=False, labelright=False, labeltop=False)
    baseline = BASELINE / f"{name}.png"
    actual = tmp_path / f"{name}.png"
    fig.savefig(actual, dpi=60, metadata={"Software": None})
    if os.environ.get("SCCLUST_UPDATE_BASELINES"):
        BASELINE.mkdir(exist_ok=True)
        fig.savefig(baseline, dpi=60, metadata={"Software": None})
    assert baseline.is_file(), f"missing baseline {baseline}; run with SCCLUST_UPDATE_BASELINES=1"
    assert compare_images(str(baseline), str(actual), tol=2) is None
