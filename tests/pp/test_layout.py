"""The parallel layout optimiser: the same coordinates on every rerun and with any number of threads.

Its agreement with umap-learn (the same start, schedule and constants; the layout's quality) is
tested in ``test_umap.py``, whose process has umap-learn compiled already.
"""

import numba
import numpy as np
import pytest
from scipy import sparse

from scclust import config as C
from scclust import pp
from scclust._errors import ConfigError
from scclust.pp import _layout, _umap


@pytest.fixture(scope="module")
def graph():
    """800 integrated cells and their kNN graph (in seconds: these tests do not import umap-learn)."""
    from scclust.datasets import simulate_integrated

    adata = simulate_integrated(800)
    pp.neighbors(adata, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=15)
    return adata


def _parallel(adata, threads: int, **kwargs):
    """``pp.umap(method="parallel")`` on ``threads`` numba threads (this process' setting restored)."""
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        out = adata.copy()
        pp.umap(out, method="parallel", init="pca", n_epochs=20, **kwargs)
    finally:
        numba.set_num_threads(before)
    return out


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba has one thread here (one core)")
def test_same_coordinates_rerun_and_with_one_or_two_threads(graph):
    one, two, again = _parallel(graph, 1), _parallel(graph, 2), _parallel(graph, 2)
    assert (one.uns["X_umap"]["threads"], two.uns["X_umap"]["threads"]) == (1, 2)
    assert two.obsm["X_umap"].dtype == np.float32 and np.isfinite(two.obsm["X_umap"]).all()
    np.testing.assert_array_equal(one.obsm["X_umap"], two.obsm["X_umap"])
    np.testing.assert_array_equal(again.obsm["X_umap"], two.obsm["X_umap"])
    other = _parallel(graph, 2, random_state=1)  # the seed drives the negative samples
    assert not np.allclose(other.obsm["X_umap"], two.obsm["X_umap"])
    assert other.uns["X_umap"]["params"]["random_state"] == 1  # as scanpy records it
    assert two.uns["X_umap"]["method"] == "parallel" and "given" in two.uns["X_umap"]["method_reason"]


def test_auto_is_parallel_above_the_limit_only(graph, monkeypatch, caplog):
    assert _umap.choose_method(_umap.UMAP_LEARN_MAX_CELLS, "auto")[0] == "umap-learn"
    assert _umap.choose_method(_umap.UMAP_LEARN_MAX_CELLS + 1, "auto")[0] == "parallel"
    assert _umap.choose_method(10, "parallel") == ("parallel", "method 'parallel' given")
    monkeypatch.setattr(_umap, "UMAP_LEARN_MAX_CELLS", 500)
    out = graph.copy()
    with caplog.at_level("INFO", logger="scclust"):
        pp.umap(out, init="pca", n_epochs=20)
    assert out.uns["X_umap"]["method"] == "parallel"
    assert out.uns["X_umap"]["method_reason"] == "method auto: 800 cells > 500, the epochs on every core"
    threads = f"{numba.get_num_threads()} thread{'' if numba.get_num_threads() == 1 else 's'}"
    assert f"X_umap of 800 cells: parallel optimiser on {threads} (method auto: 800 cells > 500" in caplog.text


def test_bad_method_is_a_config_error(graph):
    with pytest.raises(ConfigError, match="method: Input should be 'auto', 'umap-learn' or 'parallel'"):
        pp.umap(graph.copy(), method="fast")
    with pytest.raises(ConfigError, match=r"prepare\.umap\.method.*'fast'"):
        C.parse_config({"input": "x", "prepare": {"umap": {"method": "fast"}}})
    sub = {"tnk": {"groupby": "leiden_0.4", "select": {"clusters": ["1"]}, "umap": {"method": "parallel"}}}
    cfg = C.parse_config({"input": "x", "subcluster": sub})  # one declaration: pp.umap's, for every stage
    assert cfg.subcluster["tnk"].umap.method == "parallel" and cfg.prepare.umap.method == "auto"


def test_schedule_of_a_graph_that_is_not_symmetric():
    """Each vertex samples umap-learn's edge i -> j as its head and j -> i as its tail, with the
    epochs per sample of each direction's own weight; a direction absent from the graph never."""
    w = np.array([[0, 1.0, 0.2, 0], [0.5, 0, 0, 0], [0.2, 0, 0, 0.8], [0, 0, 0, 0]], dtype=np.float32)
    indptr, indices, head, tail = _layout.edge_schedule(sparse.coo_matrix(w), 100)
    rows = np.repeat(np.arange(4), np.diff(indptr))
    assert set(zip(rows.tolist(), indices.tolist(), strict=True)) == {(0, 1), (0, 2), (1, 0), (2, 0), (2, 3), (3, 2)}

    def expected(v):  # umap-learn: n_epochs / (n_epochs * w / max w); -1 where absent
        out = np.full(v.shape, -1.0)
        out[v > 0] = 100 / (100 * (v[v > 0] / w.max()))
        return out

    np.testing.assert_allclose(head, expected(w[rows, indices]), rtol=1e-6)
    np.testing.assert_allclose(tail, expected(w[indices, rows]), rtol=1e-6)
    sym = sparse.coo_matrix(w + w.T)
    assert _layout.edge_schedule(sym, 100)[3] is None  # symmetric: the tail's schedule is the head's
