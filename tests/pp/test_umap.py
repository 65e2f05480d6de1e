"""pp.umap: the background worker gives the same coordinates as sc.tl.umap in this process."""

import logging

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


def test_background_worker_equals_scanpy_in_process(graph, monkeypatch, caplog):
    ref = graph.copy()
    sc.tl.umap(ref, min_dist=0.3, random_state=3, key_added="X_ref")

    ours = graph.copy()
    monkeypatch.setattr(_umap, "_needs_warm_up", lambda: True)  # this test process has umap imported already
    with pp.background_umap() as worker:
        assert worker is not None and worker.worker.proc.poll() is None
        pp.umap(ours, min_dist=0.3, random_state=3, key_added="X_ref", worker=worker)
        assert worker.ready  # the result came from the worker, after its warm-up
        np.testing.assert_array_equal(ours.obsm["X_ref"], ref.obsm["X_ref"])
        assert ours.uns["X_ref"]["params"] == pytest.approx(ref.uns["X_ref"]["params"])

        # wait=False: returns while the layout runs; a second call queues behind it; join writes it in
        pending = pp.umap(graph.copy(), min_dist=0.3, random_state=3, key_added="X_ref", worker=worker, wait=False)
        queued = pp.umap(graph.copy(), min_dist=0.3, random_state=4, key_added="X_ref", worker=worker, wait=False)
        # a call that waits while those two are queued: computed in this process, not behind them; same coordinates
        assert worker.busy()
        here = graph.copy()
        with caplog.at_level(logging.INFO, logger=_umap.__name__):
            pp.umap(here, min_dist=0.3, random_state=3, key_added="X_ref", worker=worker)
        assert "computed in this process: the background worker is busy" in caplog.text
        np.testing.assert_array_equal(here.obsm["X_ref"], ref.obsm["X_ref"])
        late = graph.copy()
        assert "X_ref" not in late.obsm and pending is not None
        pending.join(late)
        np.testing.assert_array_equal(late.obsm["X_ref"], ref.obsm["X_ref"])
        assert late.uns["X_ref"]["init"] == "spectral" and pending.seconds > 0
        other = graph.copy()
        queued.join(other)
        assert not np.array_equal(other.obsm["X_ref"], ref.obsm["X_ref"])  # its own seed, not a stale result
        assert not worker.busy()
        with pytest.raises(ValueError, match="other cells"):
            pp.umap(graph.copy(), random_state=3, worker=worker, wait=False).join(graph[:50].copy())

        # a worker that died must not lose the result: computed here instead, still identical
        worker.worker.proc.kill()
        worker.worker.proc.wait()
        again = graph.copy()
        pp.umap(again, min_dist=0.3, random_state=3, key_added="X_ref", worker=worker)
        np.testing.assert_array_equal(again.obsm["X_ref"], ref.obsm["X_ref"])
        dead = graph.copy()  # and not when it was not waited for either
        pp.umap(dead, min_dist=0.3, random_state=3, key_added="X_ref", worker=worker, wait=False).join(dead)
        np.testing.assert_array_equal(dead.obsm["X_ref"], ref.obsm["X_ref"])
    assert worker.worker.proc.poll() is not None


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
    with pytest.raises(Exception, match="init 'tsne' is not one of"):
        pp.umap(big, init="tsne")


def test_background_is_a_no_op_when_umap_is_loaded_or_disabled(graph):
    import umap  # noqa: F401 - as in a notebook that has used UMAP before

    with pp.background_umap() as worker:
        assert worker is None
    with pp.background_umap(enabled=False) as worker:
        assert worker is None


def test_umap_without_graph_names_the_stage(sim):
    adata = sim[:100].copy()
    adata.uns.pop("neighbors", None)
    with pytest.raises(MissingKeyError, match="run the neighbors stage first"):
        pp.umap(adata)




@pytest.mark.slow
def test_unguarded_script_from_stdin_runs_once(tmp_path):
    """Workers are fresh interpreters, not multiprocessing children: a script without a main guard,
    even one read from stdin, is not re-run by them (multiprocessing's spawn would re-import it)."""
    import subprocess
    import sys

    marker = tmp_path / "marker.txt"
    script = f"""
import scclust
from scclust.config import WorkflowConfig
from scclust.pp import _umap
open({str(marker)!r}, "a").write("ran\\n")
made = []
init = _umap.UmapWorker.__init__
_umap.UmapWorker.__init__ = lambda self: (made.append(1), init(self))[1]
cfg = WorkflowConfig(input="builtin:simulate?n_cells=300", outdir={str(tmp_path / "out")!r}, stages=["neighbors", "leiden"])
scclust.run(cfg)
assert made == [1], made
"""
    res = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert marker.read_text() == "ran\n"
    assert (tmp_path / "out" / "clustered.h5ad").exists()
