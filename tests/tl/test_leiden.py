"""scclust.tl.leiden vs scanpy's tl.leiden on the same graph, truth recovery, naming, errors."""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from sklearn.metrics import adjusted_rand_score as ari

from scclust import pp, tl
from scclust._errors import ConfigError, MissingKeyError

RES = [0.4, 1.0, 1.4]


@pytest.fixture(scope="module")
def graph(sim):
    ad = sim.copy()
    pp.neighbors(ad, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20)
    return ad


@pytest.mark.parametrize("flavor", ["igraph", "leidenalg"])
def test_matches_scanpy_same_graph(graph, flavor):
    ad = graph.copy()
    n_iter = 2 if flavor == "igraph" else -1
    tl.leiden(ad, resolutions=RES, flavor=flavor, n_iterations=n_iter, random_state=0)
    for r in RES:
        kw = {"directed": False} if flavor == "igraph" else {}
        sc.tl.leiden(ad, resolution=r, flavor=flavor, n_iterations=n_iter, random_state=0, key_added="ref", **kw)
        assert ari(ad.obs["ref"], ad.obs[f"leiden_{r}"]) == 1.0


def test_end_to_end_vs_scanpy(sim):
    ours, ref = sim.copy(), sim.copy()
    pp.neighbors(ours, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20)
    tl.leiden(ours, resolutions=[0.6])
    sc.pp.neighbors(ref, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20)
    sc.tl.leiden(ref, resolution=0.6, flavor="igraph", n_iterations=2, directed=False, random_state=0)
    assert ari(ours.obs["leiden_0.6"], ref.obs["leiden"]) == 1.0


def test_recovers_truth(sim7332):
    ad = sim7332.copy()
    pp.neighbors(ad, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20)
    res = [0.1, 0.2, 0.4, 0.6, 1.0]
    tl.leiden(ad, resolutions=res)
    best = max(ari(ad.obs["cell_type"], ad.obs[f"leiden_{r}"]) for r in res)
    assert best >= 0.9


def test_keys_labels_modularity_reproducible(graph):
    ad = graph.copy()
    tl.leiden(ad, resolutions=[0.4, 1])
    assert {"leiden_0.4", "leiden_1.0"} <= set(ad.obs)
    lab = ad.obs["leiden_1.0"]
    sizes = lab.value_counts().reindex(lab.cat.categories).to_numpy()
    assert list(lab.cat.categories) == [str(i) for i in range(len(sizes))]
    assert (np.diff(sizes) <= 0).all()
    info = ad.uns["leiden"]["clusterings"]
    g = sc._utils.get_igraph_from_adjacency(ad.obsp["connectivities"], directed=False)
    q = g.modularity(ad.obs["leiden_0.4"].cat.codes.to_numpy(), weights="weight", resolution=0.4)
    assert info["leiden_0.4"]["modularity"] == pytest.approx(q, rel=1e-9)
    assert info["leiden_1.0"]["n_clusters"] == len(sizes)
    again = graph.copy()
    tl.leiden(again, resolutions=[0.4, 1])
    assert (again.obs["leiden_1.0"] == lab).all()


def test_louvain_and_unweighted(graph):
    ad = graph.copy()
    tl.leiden(ad, resolutions=[1.0], flavor="louvain", key_added="louvain")
    tl.leiden(ad, resolutions=[1.0], use_weights=False, key_added="uw")
    assert ad.obs["louvain_1.0"].nunique() > 1 and ad.obs["uw_1.0"].nunique() > 1


@pytest.mark.parametrize("res", [[0.0], [-1.0], [1.0, 0]])
def test_bad_resolution(graph, res):
    with pytest.raises(ConfigError, match="resolution"):
        tl.leiden(graph.copy(), resolutions=res)


def test_missing_graph(sim):
    with pytest.raises(MissingKeyError, match="neighbors"):
        tl.leiden(sim.copy(), neighbors_key="nope")


@pytest.mark.parametrize("flavor", ["leidenalg", "louvain"])
def test_parallel_resolutions_give_the_sequential_labels(graph, flavor):
    seq, par = graph.copy(), graph.copy()
    kw = {"resolutions": [0.4, 0.8, 1.0, 1.4], "flavor": flavor, "n_iterations": -1, "random_state": 3}
    tl.leiden(seq, **kw, n_jobs=1)
    tl.leiden(par, **kw, n_jobs=2)
    assert (seq.uns["leiden"]["n_processes"], par.uns["leiden"]["n_processes"]) == (1, 2)
    for key, info in seq.uns["leiden"]["clusterings"].items():
        assert seq.obs[key].equals(par.obs[key]), key
        assert par.uns["leiden"]["clusterings"][key] == info
    with pytest.raises(ConfigError, match="n_jobs"):
        tl.leiden(graph.copy(), resolutions=[1.0], n_jobs=0)


def test_auto_processes_weigh_work_against_start_and_memory(monkeypatch):
    from scclust.tl import _leiden

    monkeypatch.setattr(_leiden, "available_cpus", lambda: 2)  # the machine's size, not the decision
    auto = _leiden.auto_processes
    assert auto(30_000_000, 4, "igraph", 2)[0] == 2  # a 1,000,000-cell graph: ~50 s per resolution
    assert auto(220_000, 4, "leidenalg", -1)[0] == 2  # the lab's leidenalg to convergence
    n, why = auto(60_000, 4, "igraph", 2)  # a demo-sized graph: starting a worker costs more
    assert n == 1 and "less than starting one" in why
    n, why = auto(10**11, 4, "igraph", 2)  # workers that would not fit in memory
    assert n == 1 and "free (the memory available" in why
    # a run's memory_limit is what counts: a 1,000,000-cell graph's worker (~2.7 GB) does not fit in half of 4 GB
    from scclust._memory import memory_limit, process_rss

    with memory_limit(process_rss() + 4 * 10**9):
        n, why = auto(30_000_000, 4, "igraph", 2)
    assert n == 1 and "free (memory_limit" in why, why
    assert auto(30_000_000, 4, "igraph", 2)[0] == 2  # the limit ends with the block
    assert auto(30_000_000, 1, "igraph", 2) == (1, "one resolution")
    monkeypatch.setattr(_leiden, "available_cpus", lambda: 1)
    assert auto(30_000_000, 4, "igraph", 2) == (1, "one core")


def test_auto_is_logged_and_recorded(graph, caplog):
    ad = graph.copy()
    with caplog.at_level(logging.INFO, logger="scclust"):
        tl.leiden(ad, resolutions=[0.4, 1.0])
    n = ad.uns["leiden"]["n_processes"]
    assert n in (1, 2)
    assert re.search(rf"leiden: {n} process(es)? \(n_jobs auto: ", caplog.text)


@pytest.mark.slow
def test_parallel_survives_a_missing_worker_and_long_sweeps(pbmc, monkeypatch):
    from scclust import _worker

    ad = pbmc.copy()
    pp.neighbors(ad, use_rep="X_pca", n_neighbors=10)
    res = [round(0.2 + 0.001 * i, 3) for i in range(1200)]  # one call per worker: no pipe can fill up
    seq, par = ad.copy(), ad.copy()
    tl.leiden(seq, resolutions=res[::100], n_jobs=1)
    tl.leiden(par, resolutions=res, n_jobs=2)
    for key in seq.uns["leiden"]["clusterings"]:
        assert seq.obs[key].equals(par.obs[key]), key

    def no_process(*a, **k):
        raise OSError("cannot start a process")

    monkeypatch.setattr(_worker.Worker, "__init__", no_process)
    fallback = ad.copy()
    tl.leiden(fallback, resolutions=res[::100], n_jobs=3)  # the resolutions run here instead
    for key in seq.uns["leiden"]["clusterings"]:
        assert seq.obs[key].equals(fallback.obs[key]), key


# ------------------------------------------------------------------ scanpy's single-resolution call
@pytest.fixture(scope="module")
def pbmc_graph(pbmc):
    ad = pbmc.copy()
    pp.neighbors(ad, use_rep="X_pca", n_neighbors=10)
    return ad


def test_resolution_and_key_added_write_what_scanpy_writes(pbmc_graph):
    ours, ref = pbmc_graph.copy(), pbmc_graph.copy()
    tl.leiden(ours, resolution=0.6, key_added="my_leiden")
    sc.tl.leiden(
        ref, resolution=0.6, key_added="my_leiden", flavor="igraph", n_iterations=2, directed=False, random_state=0
    )
    new = set(ours.obs.columns) - set(pbmc_graph.obs.columns)
    assert new == {"my_leiden"}  # one column named exactly key_added, no "my_leiden_0.6"
    assert ari(ours.obs["my_leiden"], ref.obs["my_leiden"]) == 1.0
    assert isinstance(ours.obs["my_leiden"].dtype, pd.CategoricalDtype)
    # scanpy's .uns[key_added]["params"], same values
    for name, value in ref.uns["my_leiden"]["params"].items():
        assert ours.uns["my_leiden"]["params"][name] == value, name
    # colours scanpy's plots read: one hex colour per category
    colours = list(ours.uns["my_leiden_colors"])
    assert len(colours) == len(ours.obs["my_leiden"].cat.categories) == len(set(colours))
    assert all(re.fullmatch(r"#[0-9A-Fa-f]{6}", c) for c in colours)


def test_resolution_alone_writes_the_leiden_column(pbmc_graph):
    ad = pbmc_graph.copy()
    tl.leiden(ad, resolution=1.0)
    assert "leiden" in ad.obs and "leiden_1.0" not in ad.obs
    assert ad.uns["leiden"]["params"]["resolution"] == 1.0
    assert len(ad.uns["leiden_colors"]) == ad.obs["leiden"].nunique()
    copy = tl.leiden(pbmc_graph, resolution=1.0, copy=True)  # copy=True: the same, on the copy only
    assert copy.obs["leiden"].equals(ad.obs["leiden"]) and "leiden" not in pbmc_graph.obs


def test_overwriting_a_column_is_logged_not_refused(pbmc_graph, caplog):
    ad = pbmc_graph.copy()
    tl.leiden(ad, resolution=1.0, key_added="my")
    first = ad.obs["my"].copy()
    with caplog.at_level(logging.INFO, logger="scclust"):
        tl.leiden(ad, resolution=0.3, key_added="my")  # a notebook cell rerun with another value
    assert [r.getMessage() for r in caplog.records if "overwriting" in r.getMessage()] == [
        "overwriting the existing .obs['my'] with new cluster labels"
    ]
    assert ad.obs["my"].nunique() < first.nunique()
    assert len(ad.uns["my_colors"]) == ad.obs["my"].nunique()  # the colours follow the new labels
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="scclust"):
        tl.leiden(ad, resolutions=[0.4], key_added="fresh")
    assert not [r for r in caplog.records if "overwriting" in r.getMessage()]


def test_resolutions_keep_the_series_names_and_the_runs_colours(pbmc_graph):
    from scclust.pl._style import tree_colors  # what a run wrote at the end of the leiden stage

    ad = pbmc_graph.copy()
    tl.leiden(ad, resolutions=[0.4, 1.0, 1.4])
    keys = ["leiden_0.4", "leiden_1.0", "leiden_1.4"]
    assert keys == [k for k in ad.obs.columns if k.startswith("leiden")]
    assert "resolutions" in ad.uns["leiden"]["params"] and "resolution" not in ad.uns["leiden"]["params"]
    expected = tree_colors(ad, keys)
    for key in keys:
        assert list(ad.uns[f"{key}_colors"]) == expected[key]
    # matched across the series: of the leiden_1.0 clusters whose cells come mostly from leiden_0.4's
    # cluster "0", the largest keeps its colour
    table = pd.crosstab(ad.obs["leiden_1.0"], ad.obs["leiden_0.4"])
    children = table.index[table.idxmax(axis=1) == "0"]
    largest = table.loc[children].sum(axis=1).idxmax()
    cats = list(ad.obs["leiden_1.0"].cat.categories)
    assert ad.uns["leiden_1.0_colors"][cats.index(largest)] == ad.uns["leiden_0.4_colors"][0]


def test_auto_flavor_is_leidenalg_at_lab_size_and_igraph_above(graph, monkeypatch):
    from scclust.tl import _leiden

    auto, lab = graph.copy(), graph.copy()
    tl.leiden(auto, resolutions=[0.6], flavor="auto", n_iterations=-1, n_jobs=1)
    tl.leiden(lab, resolutions=[0.6], flavor="leidenalg", n_iterations=-1, n_jobs=1)
    assert auto.obs["leiden_0.6"].equals(lab.obs["leiden_0.6"])
    params = auto.uns["leiden"]["params"]
    assert (params["flavor"], params["n_iterations"]) == ("leidenalg", -1) and "scanpy's default" in params["auto"]
    monkeypatch.setattr(_leiden, "AUTO_LEIDENALG_MAX_CELLS", graph.n_obs - 1)  # the same graph, past the limit
    big, fast = graph.copy(), graph.copy()
    tl.leiden(big, resolutions=[0.6], flavor="auto", n_iterations=-1, n_jobs=1)
    tl.leiden(fast, resolutions=[0.6], flavor="igraph", n_iterations=2, n_jobs=1)
    assert big.obs["leiden_0.6"].equals(fast.obs["leiden_0.6"])
    params = big.uns["leiden"]["params"]
    assert (params["flavor"], params["n_iterations"]) == ("igraph", 2) and "2 iterations" in params["auto"]


def _old_edges(adjacency, *, once):
    """The graph's edges as scipy builds them: every stored entry, or the upper triangle (self-loops halved)."""
    from scipy import sparse

    a = sparse.csr_matrix(adjacency, copy=True)
    a.eliminate_zeros()
    a.sort_indices()
    if once:
        a = sparse.csr_matrix(sparse.triu(a, k=1) + sparse.diags(a.diagonal() / 2))
        a.eliminate_zeros()
        a.sort_indices()
    coo = a.tocoo()
    return coo.row, coo.col, coo.data.astype(np.float64)


def test_edges_equal_scipys_and_leave_the_matrix_unchanged(graph):
    from scipy import sparse

    from scclust.tl._leiden import _edges

    A = sparse.csr_matrix(graph.obsp["connectivities"], copy=True)
    A.setdiag(0.5)  # self-loops: halved when each pair is kept once
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    pick = (rows < A.indices) & (np.arange(A.nnz) % 97 == 0)
    key, n = rows * A.shape[0] + A.indices, A.shape[0]
    zeroed = np.isin(key, np.r_[key[pick], A.indices[pick] * n + rows[pick]])
    A.data[zeroed] = 0  # explicit zeros of both entries of some pairs: dropped, still symmetric
    A.has_sorted_indices = False  # as if unsorted: the function must not sort the caller's arrays
    before = (A.indptr.copy(), A.indices.copy(), A.data.copy())
    for once in (False, True):
        n, rows, cols, w = _edges(A, directed=False, once=once)
        ref = _old_edges(A, once=once)
        assert n == A.shape[0]
        for got, want in zip((rows, cols, w), ref, strict=True):
            np.testing.assert_array_equal(got, want)
    assert all(np.array_equal(x, y) for x, y in zip((A.indptr, A.indices, A.data), before, strict=True))
    # not symmetric (one weight changed): every stored entry, as scanpy's graph
    B = sparse.csr_matrix(graph.obsp["connectivities"], copy=True)
    B.data[0] *= 2
    assert _edges(B, directed=False, once=True)[1].size == B.nnz


def test_edge_list_file_builds_the_same_graph_and_labels(graph, tmp_path, monkeypatch):
    """Large graphs reach igraph through a text edge list: the same edges in the same order as the
    Python pairs (ids 0 and the last ids, several digit counts, isolated vertices at the end), so
    the same labels."""
    import igraph as ig

    from scclust.tl import _leiden

    n = 1_005
    rows = np.array([0, 0, 3, 9, 10, 99, 100, 999], dtype=np.int32)
    cols = np.array([1, 999, 4, 10, 100, 100, 999, 999], dtype=np.int32)
    files = _leiden.spill((n, rows, cols, np.linspace(0.1, 1, rows.size)), tmp_path)
    g, w = _leiden._to_igraph(files, directed=False)
    assert g.vcount() == n and g.get_edgelist() == list(zip(rows.tolist(), cols.tolist(), strict=True))
    np.testing.assert_array_equal(w, np.linspace(0.1, 1, rows.size))
    small = tmp_path / "block.txt"
    _leiden.write_edgelist(small, rows, cols, block=3)  # block boundaries inside the list
    assert ig.Graph.Read_Edgelist(str(small), directed=False).get_edgelist() == g.get_edgelist()

    pairs, spilled = graph.copy(), graph.copy()
    kw = {"resolutions": [0.4, 1.0], "flavor": "igraph", "edges": "once"}
    tl.leiden(pairs, **kw, n_jobs=1)
    monkeypatch.setattr(_leiden, "EDGE_FILE_MIN_EDGES", 0)
    tl.leiden(spilled, **kw, n_jobs=2)  # the worker process reads the same file
    assert spilled.uns["leiden"]["n_processes"] == 2
    for key, info in pairs.uns["leiden"]["clusterings"].items():
        assert pairs.obs[key].equals(spilled.obs[key]), key
        assert spilled.uns["leiden"]["clusterings"][key] == info


def test_renumbered_vertices_give_labels_of_the_cells_and_their_modularity(graph):
    """With ``edges="once"`` igraph gets the vertices in a locality order: the labels come back to
    the cells they belong to (their modularity on the cells' own graph is the one recorded, and
    they are the labels of a direct igraph run on the renumbered graph), and the truth is found as
    well as in the cells' order."""
    import igraph as ig
    from scipy import sparse

    from scclust.tl import _leiden

    ad = graph.copy()
    A = sparse.csr_matrix(ad.obsp["connectivities"])
    order = _leiden.locality_order(A)
    assert np.array_equal(np.sort(order), np.arange(A.shape[0]))
    P = _leiden.permuted(A, order)
    np.testing.assert_array_equal(P.toarray(), A.toarray()[np.ix_(order, order)])
    # neighbours closer in the new numbering than in the cells' own
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    prow = np.repeat(np.arange(P.shape[0]), np.diff(P.indptr))
    assert np.median(np.abs(prow - P.indices)) < np.median(np.abs(rows - A.indices)) / 3

    tl.leiden(ad, resolutions=[1.0], flavor="igraph", edges="once", key_added="once")
    labels = ad.obs["once_1.0"].cat.codes.to_numpy()
    up = sparse.triu(A, k=1).tocoo()
    g = ig.Graph(n=A.shape[0], edges=list(zip(up.row.tolist(), up.col.tolist(), strict=True)))
    q = g.modularity(list(labels), weights=up.data.astype(float), resolution=1.0)
    assert ad.uns["once"]["clusterings"]["once_1.0"]["modularity"] == pytest.approx(q, rel=1e-9)
    # the same labels as igraph run by hand on the renumbered graph, mapped back
    n, r, c, w = _leiden._edges(P, directed=False, once=True)
    h = ig.Graph(n=n, edges=list(zip(r.tolist(), c.tolist(), strict=True)))
    with _leiden._igraph_seed(0, fast=True):
        part = h.community_leiden(objective_function="modularity", weights=w, resolution=1.0, n_iterations=2)
    m = np.asarray(part.membership)
    assert ari(m[np.argsort(order)], labels) == 1.0
    tl.leiden(ad, resolutions=[1.0], flavor="igraph", edges="both", key_added="both")
    assert ari(ad.obs["cell_type"], labels) >= 0.95 * ari(ad.obs["cell_type"], ad.obs["both_1.0"])
