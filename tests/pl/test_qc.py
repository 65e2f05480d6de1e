"""pl.qc_violin: one row per QC key, flagged clusters marked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from scclust import pl
from scclust._errors import MissingKeyError

from ._helpers import assert_unchanged, snapshot


def test_violins_per_key(sim):
    before = snapshot(sim)
    fig = pl.qc_violin(sim, groupby="cell_type")
    assert isinstance(fig, Figure)
    assert [ax.get_ylabel() for ax in fig.axes] == ["n_genes_by_counts", "total_counts", "pct_counts_mt"]
    n = sim.obs["cell_type"].nunique()
    for ax in fig.axes:
        assert len(ax.collections) >= n  # one body per cluster (+ the medians)
    assert [t.get_text() for t in fig.axes[-1].get_xticklabels()] == list(sim.obs["cell_type"].cat.categories)
    assert_unchanged(sim, before)


def test_flagged_cluster_tick_is_highlighted_and_aliases_work(pbmc):
    a = pbmc.copy()
    a.obs = a.obs.drop(columns=["n_genes_by_counts", "total_counts", "pct_counts_mt"])
    labels = a.obs["bulk_labels"].astype(str).to_numpy()
    labels[:40] = "low"
    a.obs["n_genes"] = a.obs["n_genes"].astype(float)
    a.obs.iloc[:40, a.obs.columns.get_loc("n_genes")] = 50.0
    a.obs["planted"] = pd.Categorical(labels)
    fig = pl.qc_violin(a, groupby="planted", keys=["n_genes", "percent_mito"])
    assert [ax.get_ylabel() for ax in fig.axes] == ["n_genes", "percent_mito"]
    ticks = {t.get_text(): t.get_color() for t in fig.axes[-1].get_xticklabels()}
    assert ticks["low"] == "#D55E00"
    assert sum(c == "#D55E00" for c in ticks.values()) == 1
    with pytest.raises(MissingKeyError, match="'doublets'"):
        pl.qc_violin(a, groupby="planted", keys=["doublets"])
    assert np.isfinite(a.obs["n_genes"]).all()
