"""pl.proportions: stacked bars in both directions."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from scclust import pl

from ._helpers import assert_unchanged, snapshot


def _bars(ax):
    return [p for c in ax.containers for p in c.patches]


def test_cluster_by_sample_bars_sum_to_one(sim):
    before = snapshot(sim)
    fig = pl.proportions(sim, groupby="cell_type", by="sample")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    n_types, n_samples = sim.obs["cell_type"].nunique(), sim.obs["sample"].nunique()
    assert len(ax.containers) == n_samples
    heights = np.array([[p.get_height() for p in c.patches] for c in ax.containers])  # samples x types
    np.testing.assert_allclose(heights.sum(axis=0), 1.0, rtol=1e-9)
    ref = pd.crosstab(sim.obs["cell_type"], sim.obs["sample"], normalize="index")
    np.testing.assert_allclose(heights.T, ref.to_numpy(), rtol=1e-9)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(sim.obs["cell_type"].cat.categories)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(sim.obs["sample"].cat.categories)
    assert len(_bars(ax)) == n_types * n_samples
    assert "fraction" in ax.get_ylabel()
    assert_unchanged(sim, before)


def test_other_direction_and_legend_outside(sim):
    fig = pl.proportions(sim, groupby="sample", by="cell_type")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(sim.obs["sample"].cat.categories)
    fig.canvas.draw()
    legend_box = ax.get_legend().get_window_extent()
    assert legend_box.x0 >= ax.get_window_extent().x1 - 1  # beside, not over, the bars


def test_columns_normalisation_and_horizontal(sim):
    fig = pl.proportions(sim, groupby="cell_type", by="type", normalize="columns", horizontal=True)
    ax = fig.axes[0]
    widths = np.array([[p.get_width() for p in c.patches] for c in ax.containers])  # types(cond) x cell types
    np.testing.assert_allclose(widths.sum(axis=1), 1.0, rtol=1e-9)
