"""pp.umap: the background worker gives the same coordinates as sc.tl.umap in this process."""

import numpy as np
import pytest
import scanpy as sc

from scclust import pp
from scclust._errors import MissingKeyError
from scclust.pp import _umap


@pytest.fixture(scope="module")
def graph(sim):
    adata = sim[:800].copy()
    pp.neighbors(adata, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=15)
    return adata


def test_background_worker_equals_scanpy_in_process(graph, monkeypatch):
    ref = graph.copy()
    sc.tl.umap(ref, min_dist=0.3, random_state=3, key_added="X_ref")

    ours = graph.copy()
    monkeypatch.setattr(_umap, "_needs_warm_up", lambda: True)  # this test process has umap imported already
    with pp.background_umap():
        worker = _umap._worker
        assert worker is not None and worker.proc.is_alive()
        pp.umap(ours, min_dist=0.3, random_state=3, key_added="X_ref")
        assert worker.ready  # the result came from the worker, after its warm-up
        np.testing.assert_array_equal(ours.obsm["X_ref"], ref.obsm["X_ref"])
        assert ours.uns["X_ref"]["params"] == pytest.approx(ref.uns["X_ref"]["params"])

        # a worker that died must not lose the result: computed here instead, still identical
        worker.proc.kill()
        worker.proc.join()
        again = graph.copy()
        pp.umap(again, min_dist=0.3, random_state=3, key_added="X_ref")
        np.testing.assert_array_equal(again.obsm["X_ref"], ref.obsm["X_ref"])
    assert _umap._worker is None and not worker.proc.is_alive()


def test_background_is_a_no_op_when_umap_is_loaded_or_disabled(graph):
    import umap  # noqa: F401 - as in a notebook that has used UMAP before

    with pp.background_umap():
        assert _umap._worker is None
    with pp.background_umap(enabled=False):
        assert _umap._worker is None


def test_umap_without_graph_names_the_stage(sim):
    adata = sim[:100].copy()
    adata.uns.pop("neighbors", None)
    with pytest.raises(MissingKeyError, match="run the neighbors stage first"):
        pp.umap(adata)




def test_no_worker_from_a_daemonic_process(monkeypatch):
    """A daemonic process (a multiprocessing pool's worker) may not start children: run in-process."""
    import multiprocessing
    import sys

    monkeypatch.delitem(sys.modules, "umap", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert _umap._needs_warm_up()
    proc = multiprocessing.current_process()
    monkeypatch.setattr(proc, "_config", {**proc._config, "daemon": True})
    assert not _umap._needs_warm_up()
    with pp.background_umap():
        assert _umap._worker is None
