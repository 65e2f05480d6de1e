"""pp.umap and the run's background process: the same coordinates as sc.tl.umap in this process."""

import logging
import time

import numpy as np
import pytest
import scanpy as sc

from scclust import pp
from scclust.pp import _umap


@pytest.fixture(scope="module")
def graph(sim):
    adata = sim[:800].copy()
    pp.neighbors(adata, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=15)
    return adata


class _Ctx:
    """The part of a run's context that computes layouts: a RunContext with a given executor."""

    def __new__(cls, executor):
        from scclust.stages import RunContext

        return RunContext(cfg=None, outdir=None, executor=executor, stage="test")


def test_background_process_equals_scanpy_in_process(graph, caplog):
    from scclust._background import Background, background

    ref = graph.copy()
    sc.tl.umap(ref, min_dist=0.3, random_state=3, key_added="X_ref")
    params = pp.Umap(min_dist=0.3)
    with background(True, warm_up="scclust.pp._umap:_warm_up") as executor:
        assert isinstance(executor, Background) and executor.worker.proc.poll() is None
        ctx = _Ctx(executor)
        # a waiting call while the process still compiles umap-learn: computed here, not queued behind it
        assert not executor.ready()  # the warm-up takes seconds; this is asked at once
        early = graph.copy()
        with caplog.at_level(logging.INFO, logger="scclust"):
            ctx.umap(early, key_added="X_ref", params=params, random_state=3)
        assert "busy (compiling umap-learn)" in caplog.text and executor.warming
        np.testing.assert_array_equal(early.obsm["X_ref"], ref.obsm["X_ref"])
        deadline = time.monotonic() + 300
        while not executor.ready() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert executor.ready()
        ours = graph.copy()
        ctx.umap(ours, key_added="X_ref", params=params, random_state=3)  # waits
        assert not executor.warming  # the result came from the process, after its warm-up
        np.testing.assert_array_equal(ours.obsm["X_ref"], ref.obsm["X_ref"])
        assert ours.uns["X_ref"]["params"] == pytest.approx(ref.uns["X_ref"]["params"])

        # wait=False: promised while the layout runs; a second one queues behind it; resolve writes it in
        late, other = graph.copy(), graph.copy()
        ctx.umap(late, key_added="X_ref", params=params, random_state=3, wait=False, aliases=("X_alias",))
        ctx2 = _Ctx(executor)
        ctx2.umap(other, key_added="X_ref", params=params, random_state=4, wait=False)
        # a call that waits while those are queued: computed in this process, not behind them; same coordinates
        assert executor.busy()
        here = graph.copy()
        with caplog.at_level(logging.INFO, logger="scclust"):
            _Ctx(executor).umap(here, key_added="X_ref", params=params, random_state=3)
        assert "computed in this process: the background process is busy" in caplog.text
        np.testing.assert_array_equal(here.obsm["X_ref"], ref.obsm["X_ref"])
        assert "X_ref" not in late.obsm and set(ctx.promised) == {"X_ref", "X_alias"}
        ctx.resolve(late)
        np.testing.assert_array_equal(late.obsm["X_ref"], ref.obsm["X_ref"])
        np.testing.assert_array_equal(late.obsm["X_alias"], ref.obsm["X_ref"])
        assert late.uns["X_ref"]["init"] == "spectral" and not ctx.promised
        assert ctx.background[0]["stage"] == "test (background X_ref)" and ctx.background[0]["seconds"] > 0
        ctx2.resolve(other)
        assert not np.array_equal(other.obsm["X_ref"], ref.obsm["X_ref"])  # its own seed, not a stale result
        assert not executor.busy()
        ctx.umap(graph.copy(), key_added="X_ref", params=params, random_state=3, wait=False)
        with pytest.raises(ValueError, match="other cells"):
            ctx.resolve(graph[:50].copy())

        # a process that died must not lose the result: computed here instead, still identical
        executor.worker.proc.kill()
        executor.worker.proc.wait()
        again = graph.copy()
        ctx = _Ctx(executor)
        ctx.umap(again, key_added="X_ref", params=params, random_state=3)
        np.testing.assert_array_equal(again.obsm["X_ref"], ref.obsm["X_ref"])
        dead = graph.copy()  # and not when it was not waited for either
        ctx.umap(dead, key_added="X_ref", params=params, random_state=3, wait=False)
        ctx.resolve(dead)
        np.testing.assert_array_equal(dead.obsm["X_ref"], ref.obsm["X_ref"])
    assert executor.worker.proc.poll() is not None


def test_pca_start_above_the_spectral_limit(graph, monkeypatch):
    """``init='auto'`` is scanpy's spectral start below the limit (same coordinates) and the first two
    dimensions of the representation above it (lowered here by parameter); that layout keeps the
    cell types as separate (silhouette within 0.1 of the spectral layout's)."""
    from sklearn.metrics import silhouette_score

    ref = graph.copy()
    sc.tl.umap(ref, random_state=0)
    auto = graph.copy()
    pp.umap(auto, random_state=0)
    np.testing.assert_array_equal(auto.obsm["X_umap"], ref.obsm["X_umap"])
    assert auto.uns["X_umap"]["init"] == "spectral"
    monkeypatch.setattr(_umap, "SPECTRAL_MAX_CELLS", 100)
    big = graph.copy()
    pp.umap(big, random_state=0)
    assert big.uns["X_umap"]["init"] == "pca"
    assert not np.allclose(big.obsm["X_umap"], ref.obsm["X_umap"])
    types = graph.obs["cell_type"]
    s_ref, s_pca = silhouette_score(ref.obsm["X_umap"], types), silhouette_score(big.obsm["X_umap"], types)
    assert s_pca >= s_ref - 0.1, (s_pca, s_ref)
    with pytest.raises(Exception, match="init: Input should be 'auto', 'spectral' or 'pca'"):
        pp.umap(big, init="tsne")


def test_background_in_process_when_disabled(graph):
    from scclust._background import InProcess, background

    with background(False) as executor:
        assert isinstance(executor, InProcess)
        ours, ref = graph.copy(), graph.copy()
        ctx = _Ctx(executor)
        ctx.umap(ours, key_added="X_umap", params=pp.Umap(), random_state=0, wait=False)
        assert "X_umap" not in ours.obsm  # computed when resolved
        ctx.resolve(ours)
        pp.umap(ref, random_state=0)
        np.testing.assert_array_equal(ours.obsm["X_umap"], ref.obsm["X_umap"])
