"""pl stability figures: drawn from a tl.stability result, never recomputing; ax= honoured."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

import scclust as scc
from scclust._errors import ConfigError, MissingKeyError


@pytest.fixture(scope="module")
def assessed(sim):
    a = sim.copy()
    scc.pp.neighbors(a, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20)
    scc.tl.leiden(a, resolutions=[0.2, 0.6, 1.2])
    res = scc.tl.stability(a, n_seeds=3, n_subsamples=2, n_jobs=1)
    return a, res


def test_stability_curve(assessed):
    _a, res = assessed
    fig = scc.pl.stability(res)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "resolution"
    # one point per resolution: filled (stable, stable despite a moving boundary) + open (unstable) markers
    n_points = sum(len(c.get_offsets()) for c in ax.collections if c.get_gid() == "key")
    assert n_points == 3
    assert "clusters" in fig.axes[1].get_ylabel()
    # every cluster's stability drawn at its key, the same values as the clusters table
    dots = np.concatenate([c.get_offsets() for c in ax.collections if c.get_gid() == "cluster"])
    assert len(dots) == len(res.clusters)
    np.testing.assert_allclose(np.sort(dots[:, 1]), np.sort(res.clusters["stability"].to_numpy()))
    # the default choice is starred and named
    stars = [c for c in ax.collections if c.get_gid() == "default"]
    assert len(stars) == (1 if res.default else 0)
    if res.default:
        assert stars[0].get_label() == f"default: {res.default['leiden']}"
    # an unstable key says why under its point
    texts = [t.get_text() for t in ax.texts]
    for key, r in res.summary[~res.summary["stable"]].iterrows():
        if r["score"] < 0.9:
            assert any(f"ARI {r['score']:.2f}" in t for t in texts), key
    plain = scc.pl.stability(res, clusters=False).axes[0].collections
    assert not [c for c in plain if c.get_gid() == "cluster"]
    assert sum(len(c.get_offsets()) for c in plain if c.get_gid() == "key") == n_points
    f2 = Figure()
    ax2 = f2.subplots()
    assert scc.pl.stability(res, metric="ic", ax=ax2) is f2
    with pytest.raises(ConfigError, match="metric: Input should be 'ari' or 'ic'"):
        scc.pl.stability(res, metric="nmi")
    with pytest.raises(MissingKeyError, match="kmeans"):
        scc.pl.stability(res, group="kmeans")


def test_stability_embedding_and_runs(assessed):
    a, res = assessed
    fig = scc.pl.stability_embedding(a, key="leiden_1.2", basis="X_umap_harmony")
    sc = fig.axes[0].collections[0]
    np.testing.assert_allclose(np.sort(sc.get_array()), np.sort(a.obs["leiden_1.2_stability"].to_numpy()))
    with pytest.raises(MissingKeyError, match="run tl.stability"):
        scc.pl.stability_embedding(a, key="leiden_0.4", basis="X_umap_harmony")
    fig = scc.pl.stability_runs(res, key="leiden_1.2", max_cells=500)
    im = fig.axes[0].images[0].get_array()
    assert im.shape == (1 + res.runs["leiden_1.2"].shape[1], 500)
    # the top row is the labels; a seed run identical to the labels would repeat it exactly
    labels_row = im[0]
    assert (np.diff(labels_row) >= 0).all()  # cells sorted by cluster
    with pytest.raises(MissingKeyError, match="assessed"):
        scc.pl.stability_runs(res, key="leiden_9")


def test_clustree_coloured_by_stability(assessed):
    a, res = assessed
    keys = ["leiden_0.2", "leiden_0.6", "leiden_1.2"]
    default = scc.pl.clustree(a, keys=keys)
    coloured = scc.pl.clustree(a, keys=keys, stability=res)
    from_uns = scc.pl.clustree(a, keys=keys, stability="stability")
    c0 = default.axes[0].collections[0].get_facecolors()
    c1 = coloured.axes[0].collections[0].get_facecolors()
    c2 = from_uns.axes[0].collections[0].get_facecolors()
    assert c0.shape == c1.shape and not np.allclose(c0, c1)
    np.testing.assert_allclose(c1, c2)
    assert len(default.axes) == 1 and len(coloured.axes) == 2  # colour bar only when coloured
    with pytest.raises(
        MissingKeyError,
        match=r"run scclust\.tl\.stability\(adata, \.\.\.\) first, or pass stability=None "
        "to colour the nodes by row$",
    ):
        scc.pl.clustree(a, keys=keys, stability="nothing")  # both ways out: the call that makes it, drawing without it
