"""Stability of clusterings under other seeds and subsamples of cells; a resolution / k recommendation.

For each clustering key (``leiden_0.4``, ``kmeans10``, ``hclust_15``, a subset's ``tcells_0.6``) the
method that made it is run again with the same parameters: with other seeds on all cells, and on
random subsamples of cells (Leiden on the induced subgraph of the same kNN graph, k-means and
hierarchical clustering on the same embedding rows). Everything is computed from contingency
tables between a run and the reported labels or another run, so memory is O(cells x runs): no
cells x cells co-clustering matrix is ever built.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from pydantic import Field
from scipy import sparse

from .._errors import InputError, MissingKeyError, choices
from .._params import validated
from .._types import KeyList, NJobs
from .._worker import available_cpus

logger = logging.getLogger(__name__)

#: the clustering functions whose keys can be re-run (how ``.uns[group]["params"]`` is recognised)
METHODS = ("leiden", "kmeans", "hclust")


@dataclass
class StabilityResult:
    """What :func:`stability` computed.

    Attributes
    ----------
    summary
        One row per clustering key (index ``key``): ``group``, ``method``, ``param`` (resolution /
        k / height), ``n_clusters`` (the reported labels), ``n_runs``, ``n_seed_runs``,
        ``n_subsample_runs``; ``ari_seeds`` (mean pairwise adjusted Rand index among the reported
        labels and the seed runs), ``ari_seeds_min``, ``ecs_seeds`` (mean pairwise element-centric
        similarity), ``ic`` (scICE's inconsistency coefficient over the same partitions: 1 when
        all agree), ``ari_subsample`` (mean ARI of each subsample run with the reported labels on
        its cells), ``n_clusters_median`` / ``_min`` / ``_max`` over the runs, ``n_clusters_mode_frac``
        (share of runs with the most frequent number of clusters), ``cluster_stability_min`` /
        ``_mean`` (per-cluster best-match Jaccard, cell-weighted mean), ``medoid`` (``"label"`` or
        ``"seed_<s>"``: the partition with the highest mean ARI with the others), ``ari_medoid``
        (ARI of the medoid with the reported labels), ``score`` (``min(ari_seeds,
        ari_subsample)``) and ``stable`` (``score >= min_ari`` and ``cluster_stability_min >=
        min_cluster_stability``).
    clusters
        One row per cluster of each key: ``key``, ``cluster``, ``n_cells``, ``stability`` (mean
        over runs of the best-match Jaccard index), ``stability_seeds``,
        ``stability_subsample``, ``frac_recovered`` (runs with best Jaccard >= 0.5, bluster's
        "recovered" rule of thumb) and ``frac_dissolved`` (runs with best Jaccard < ``0.5``).
    recommendation
        The stable keys with their evidence, one row each: ``key``, ``group``, ``param``,
        ``n_clusters``, ``score``, ``ari_seeds``, ``ari_subsample``, ``ic``,
        ``cluster_stability_min``, ``evidence`` (a sentence). Empty when nothing is stable;
        never applied to the data.
    n_clusters
        Number of clusters of every run (rows keys, columns run names).
    runs
        Per key the cells x runs label matrix (int32; ``-1``: the cell was not in that subsample);
        columns in the order of ``run_info``.
    run_info
        One row per run (index the run name ``seed_<s>`` / ``sub<f>_<j>``): ``kind`` (``seed`` or
        ``subsample``), ``seed``, ``n_cells``.
    pairwise
        Per key the ARI matrix among the reported labels and the seed runs.
    labels
        Per key the reported labels as integer codes (``-1`` missing) and their categories.
    params
        The parameters used.
    """

    summary: pd.DataFrame
    clusters: pd.DataFrame
    recommendation: pd.DataFrame
    n_clusters: pd.DataFrame
    runs: dict[str, np.ndarray] = field(repr=False)
    run_info: dict[str, pd.DataFrame] = field(repr=False)
    pairwise: dict[str, pd.DataFrame] = field(repr=False)
    labels: dict[str, tuple[np.ndarray, list[str]]] = field(repr=False)
    params: dict = field(default_factory=dict)


def _check(args: dict) -> None:
    """Cross-parameter rule (a call's arguments and a config section alike)."""
    n_runs = args["n_seeds"] + args["n_subsamples"] * (len(args["subsample_fractions"]) + len(args["subsample_sizes"]))
    if n_runs == 0:
        raise ValueError("no runs: set n_seeds > 0, or n_subsamples > 0 with subsample_fractions or subsample_sizes")


@validated(check=_check)
def stability(
    adata: AnnData,
    *,
    keys: KeyList | None = None,
    n_seeds: Annotated[int, Field(ge=0)] = 20,
    subsample_fractions: list[Annotated[float, Field(gt=0, lt=1)]] = (0.8,),
    subsample_sizes: list[Annotated[int, Field(ge=10)]] = (),
    n_subsamples: Annotated[int, Field(ge=0)] = 5,
    min_ari: Annotated[float, Field(ge=0, le=1)] = 0.9,
    min_cluster_stability: Annotated[float, Field(ge=0, le=1)] = 0.75,
    medoid_labels: Literal["off", "add", "replace"] = "off",
    n_jobs: NJobs = -1,
    random_state: int = 0,
    key_added: str = "stability",
) -> StabilityResult:
    """How reproducible each clustering is under other seeds and subsamples of cells.

    Each key in ``keys`` must have been made by :func:`scclust.tl.leiden`, :func:`~scclust.tl.kmeans`
    or :func:`~scclust.tl.hclust` (its group's ``.uns[...]["params"]`` says how; a subclustering is
    assessed on the subset AnnData that :func:`~scclust.tl.subcluster` returns). For each key the
    same method with the same parameters is run

    - ``n_seeds`` times on all cells with seeds ``random_state + 1 ...`` (not for hierarchical
      clustering, which has no seed), and
    - ``n_subsamples`` times on a random subset of the cells for each fraction in
      ``subsample_fractions`` and each number of cells in ``subsample_sizes`` (MultiK and chooseR
      take 80 %).

    Per key: the mean pairwise adjusted Rand index (ARI) and element-centric similarity among the
    reported labels and the seed runs, scICE's inconsistency coefficient ``1 / (p' S p)`` over the
    distinct partitions (``p`` their frequencies, ``S`` their pairwise element-centric
    similarity; Kim et al. 2025), the mean ARI of the subsample runs with the reported labels on
    their cells, the distribution of the number of clusters and the medoid partition. Per cluster:
    the mean over runs of the Jaccard index of the cluster with its best-matching cluster of the run
    (bluster's ``bootstrapStability``, chooseR, clusterboot), from contingency tables only.

    A key is *stable* when the runs agree with each other and with the labels,
    ``min(ari_seeds, ari_subsample) >= min_ari``, and every one of its clusters is reproduced,
    ``stability >= min_cluster_stability`` (0.75: clusterboot's "valid, stable cluster"; Hennig 2007).
    The stable keys with their evidence form the recommendation table. Nothing is applied to the labels unless
    ``medoid_labels`` asks for it.

    Leiden runs are shared between this process and worker processes (``n_jobs``); the graph is
    sent to each worker once and converted to igraph once per process. Labels do not depend on
    ``n_jobs``.

    Parameters
    ----------
    adata
        Annotated data matrix with clusterings made by scclust.
    keys
        Label columns to assess; ``None`` takes every clustering recorded in ``.uns`` by leiden,
        kmeans or hclust (others, e.g. transferred subclusterings, are skipped with a message).
    n_seeds
        Runs on all cells with other seeds (>= 0).
    subsample_fractions
        Fractions of cells (each in (0, 1)) for the subsample runs.
    subsample_sizes
        Numbers of cells (each >= 10 and below the number of cells) for more subsample runs.
    n_subsamples
        Subsample runs per fraction / size.
    min_ari
        Threshold on ``min(ari_seeds, ari_subsample)`` for a key to be called stable.
    min_cluster_stability
        Threshold on the least stable cluster of a key for the key to be called stable.
    medoid_labels
        ``"add"`` writes the medoid partition as ``.obs[f"{key}_medoid"]``; ``"replace"`` puts it in
        ``.obs[key]`` (the reported labels move to ``.obs[f"{key}_original"]``); ``"off"`` writes
        neither.
    n_jobs
        Processes for the Leiden runs (-1: one per core).
    random_state
        Seed of the subsamples and base of the run seeds.
    key_added
        Key in ``.uns`` and suffix of the ``.obs`` columns.

    Returns
    -------
    A :class:`StabilityResult`, having written ``.obs[f"{key}_{key_added}"]`` (the stability of
    each cell's cluster) for each key, ``.obs[f"{key}_medoid"]`` (``medoid_labels="add"``) or
    ``.obs[key]`` and ``.obs[f"{key}_original"]`` (``"replace"``), each of these label columns with
    its ``.uns[f"{column}_colors"]`` (a medoid partition's clusters take the colour of the reported
    cluster they share most cells with), and ``.uns[key_added]`` with
    ``params``, ``summary`` (per key, the columns of :attr:`StabilityResult.summary`),
    ``clusters`` (per key, cluster -> stability) and ``recommended`` (the stable keys).
    """
    from ._compare import recorded_clusterings

    bad = [s for s in subsample_sizes if s >= adata.n_obs]
    if bad:
        raise InputError(f"subsample_sizes must be below the number of cells ({adata.n_obs}); got {bad}")
    if keys is None:
        keys = recorded_clusterings(adata)
        if not keys:
            raise MissingKeyError(
                "no clustering recorded in .uns; run a clustering stage (leiden, kmeans, hclust) first or pass keys"
            )
        given = False
    else:
        keys = list(dict.fromkeys(keys))
        given = True
    plans: dict[str, tuple[str, str, dict, dict]] = {}
    for key in keys:
        plan = _plan(adata, key)
        if isinstance(plan, str):
            if given:
                raise InputError(plan)
            logger.info("stability: %s", plan)
            continue
        plans[key] = plan
    if not plans:
        raise InputError(
            f"none of the clusterings {keys} can be re-run (made by leiden, kmeans or hclust on this AnnData)"
        )

    n = adata.n_obs
    sizes = [(f"sub{f:g}", round(f * n)) for f in subsample_fractions] + [(f"sub{s}", int(s)) for s in subsample_sizes]
    seeds = [random_state + 1 + i for i in range(n_seeds)]
    sub_specs = [(name, size, j, _sub_seed(random_state, size, j)) for name, size in sizes for j in range(n_subsamples)]

    # run everything: Leiden tasks pooled over keys (one graph per neighbors_key), the rest here
    runs: dict[str, np.ndarray] = {}
    run_info: dict[str, pd.DataFrame] = {}
    leiden_groups: dict[str, list[str]] = {}
    for key, (_, method, params, _) in plans.items():
        if method == "leiden":
            leiden_groups.setdefault(params["neighbors_key"] + "\0" + repr(_leiden_options(params)), []).append(key)
    for gkeys in leiden_groups.values():
        _, _, params, _ = plans[gkeys[0]]
        _run_leiden(adata, gkeys, plans, params, seeds, sub_specs, n_jobs, runs, run_info)
    for key, (_, method, params, info) in plans.items():
        if method == "kmeans":
            _run_kmeans(adata, key, params, info, seeds, sub_specs, runs, run_info)
        elif method == "hclust":
            _run_hclust(adata, key, params, info, sub_specs, runs, run_info)

    # measure
    rows, cluster_rows, pairwise, labels, ncl = {}, [], {}, {}, {}
    for key, (group, method, _, info) in plans.items():
        codes, cats = _codes(adata, key)
        labels[key] = (codes, cats)
        row, crows, pw = _measure(codes, cats, runs[key], run_info[key])
        row = {"group": group, "method": method, "param": _param(method, info), **row}
        rows[key] = row
        cluster_rows += [{"key": key, **c} for c in crows]
        pairwise[key] = pw
        ncl[key] = pd.Series(
            [_n_clusters(runs[key][:, j]) for j in range(runs[key].shape[1])], index=run_info[key].index
        )
    summary = pd.DataFrame.from_dict(rows, orient="index").rename_axis("key")
    summary["score"] = summary[["ari_seeds", "ari_subsample"]].min(axis=1, skipna=True)
    summary["stable"] = (summary["score"] >= min_ari) & (summary["cluster_stability_min"] >= min_cluster_stability)
    clusters = pd.DataFrame(
        cluster_rows,
        columns=[
            "key",
            "cluster",
            "n_cells",
            "stability",
            "stability_seeds",
            "stability_subsample",
            "frac_recovered",
            "frac_dissolved",
        ],
    )
    recommendation = _recommend(summary, min_ari, min_cluster_stability)
    n_clusters = pd.DataFrame(ncl).T.rename_axis("key")

    # write
    params_used = {
        "keys": list(plans),
        "n_seeds": n_seeds,
        "subsample_fractions": [float(f) for f in subsample_fractions],
        "subsample_sizes": [int(s) for s in subsample_sizes],
        "n_subsamples": n_subsamples,
        "min_ari": min_ari,
        "min_cluster_stability": min_cluster_stability,
        "medoid_labels": medoid_labels,
        "n_jobs": n_jobs,
        "random_state": random_state,
        "key_added": key_added,
    }
    for key in plans:
        codes, cats = labels[key]
        stab = clusters[clusters["key"] == key].set_index("cluster")["stability"]
        per_cell = np.full(n, np.nan)
        ok = codes >= 0
        per_cell[ok] = stab.reindex(cats).to_numpy()[codes[ok]]
        adata.obs[f"{key}_{key_added}"] = per_cell
        if medoid_labels != "off":
            _write_medoid(adata, key, summary.loc[key, "medoid"], runs[key], run_info[key], medoid_labels)
    adata.uns[key_added] = {
        "params": params_used,
        "summary": {k: {c: _plain(v) for c, v in r.items()} for k, r in summary.to_dict(orient="index").items()},
        "clusters": {
            k: {str(c): float(s) for c, s in df[["cluster", "stability"]].itertuples(index=False)}
            for k, df in clusters.groupby("key", sort=False)
        },
        "recommended": list(recommendation["key"]),
    }
    for key, r in summary.iterrows():
        logger.info(
            "%s: %s (ARI seeds %.3f, subsamples %.3f, IC %.4f, %d-%d clusters)",
            key,
            "stable" if r["stable"] else "unstable",
            r["ari_seeds"],
            r["ari_subsample"],
            r["ic"],
            r["n_clusters_min"],
            r["n_clusters_max"],
        )
    return StabilityResult(
        summary=summary,
        clusters=clusters,
        recommendation=recommendation,
        n_clusters=n_clusters,
        runs=runs,
        run_info=run_info,
        pairwise=pairwise,
        labels=labels,
        params=params_used,
    )


# ------------------------------------------------------------------------------------ planning
def _plan(adata: AnnData, key: str):
    """(group, method, group params, key info), or a sentence saying why the key cannot be re-run."""
    if key not in adata.obs.columns:
        return (
            f"clustering {key!r} not in .obs; available: "
            f"{choices(c for c in adata.obs.columns if isinstance(adata.obs[c].dtype, pd.CategoricalDtype))}"
        )
    for group, value in adata.uns.items():
        if not (isinstance(value, dict) and isinstance(value.get("clusterings"), dict) and key in value["clusterings"]):
            continue
        params = dict(value.get("params", {}))
        info = dict(value["clusterings"][key])
        if "resolution" in info and "flavor" in params:
            method = "leiden"
        elif "inertia" in info:
            method = "kmeans"
        elif "linkage" in value and ("k" in info or "height" in info):
            method = "hclust"
        else:
            return f"{key!r} (group {group!r}) was not made by {', '.join(METHODS)}; it cannot be re-run"
        if adata.obs[key].isna().any():
            return (
                f"{key!r} labels only part of the cells; assess it on the AnnData it was computed on (e.g. the "
                "subcluster subset)"
            )
        return group, method, params, info
    from ._subcluster import NOT_IN_SUBSET

    values = adata.obs[key]
    if values.isna().any() or (values.astype(str) == NOT_IN_SUBSET).any():
        return (
            f"{key!r} labels only part of the cells and was not made on this AnnData; assess it on the AnnData "
            "it was computed on (e.g. the subcluster subset)"
        )
    return f"{key!r} is not recorded by a clustering stage in .uns (leiden, kmeans, hclust); it cannot be re-run"


def _param(method: str, info: dict) -> float:
    if method == "leiden":
        return float(info["resolution"])
    if method == "hclust":
        return float(info.get("k", info.get("height")))
    return float(info["n_clusters"])


def _sub_seed(random_state: int, size: int, j: int) -> int:
    digest = hashlib.blake2b(f"{random_state}/{size}/{j}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def _subsample(n: int, size: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def _run_names(seeds: list[int], sub_specs: list) -> pd.DataFrame:
    rows = [(f"seed_{s}", "seed", s) for s in seeds] + [
        (f"{name}_{j}", "subsample", seed) for name, _, j, seed in sub_specs
    ]
    return pd.DataFrame(rows, columns=["run", "kind", "seed"]).set_index("run")


def _leiden_options(params: dict) -> dict:
    return {
        "flavor": params.get("flavor", "igraph"),
        "n_iterations": params.get("n_iterations", 2),
        "use_weights": params.get("use_weights", True),
    }


# ---------------------------------------------------------------------------------------- runs
def _run_leiden(adata, keys, plans, params, seeds, sub_specs, n_jobs, runs, run_info) -> None:
    from ._leiden import get_graph

    adjacency = get_graph(adata, params.get("neighbors_key", "neighbors"))
    options = _leiden_options(params)
    n = adata.n_obs
    tasks = []  # (key index, column, resolution, seed, subsample size, subsample seed)
    for i, key in enumerate(keys):
        r = float(plans[key][3]["resolution"])
        cols = 0
        for s in seeds:
            tasks.append((i, cols, r, s, 0, 0))
            cols += 1
        for _, size, j, sseed in sub_specs:
            tasks.append((i, cols, r, int(params.get("random_state", 0)) + 1000 + j, size, sseed))
            cols += 1
        runs[key] = np.full((n, cols), -1, dtype=np.int32)
        info = _run_names(seeds, sub_specs)
        if sub_specs:
            info.loc[info["kind"] == "subsample", "seed"] = [t[3] for t in tasks[-len(sub_specs) :]]
        info["n_cells"] = [n] * len(seeds) + [size for _, size, _, _ in sub_specs]
        run_info[key] = info
    n_proc = min(len(tasks), available_cpus() if n_jobs == -1 else n_jobs)
    # slowest first (high resolution, all cells), dealt round robin: both processes finish together
    order = sorted(range(len(tasks)), key=lambda t: (-tasks[t][2], tasks[t][4] != 0, t))
    dealt = [[tasks[t] for t in order[p::n_proc]] for p in range(n_proc)]
    results = _map_in_workers(adjacency, dealt, options)
    for part, batch in zip(results, dealt, strict=True):
        for (i, col, _, _, size, sseed), membership in zip(batch, part, strict=True):
            if size:
                runs[keys[i]][_subsample(n, size, sseed), col] = membership
            else:
                runs[keys[i]][:, col] = membership
    logger.info("stability: %d Leiden runs on %d cells in %d process(es)", len(tasks), n, n_proc)


def _map_in_workers(adjacency: sparse.csr_matrix, dealt: list[list], options: dict) -> list[list[np.ndarray]]:
    """:func:`_leiden_runs` on each batch: batch 0 here, the others in worker processes (one call
    each, as :func:`scclust.tl.leiden` does); a worker that fails or cannot start: its batch runs here."""
    from .._worker import Worker, WorkerError

    results: list = [None] * len(dealt)
    workers: list[tuple[Worker, int]] = []
    local = [0]
    ok = False
    try:
        for b in range(1, len(dealt)):
            if not dealt[b]:
                results[b] = []
                continue
            try:
                w = Worker()
                workers.append((w, b))
                w.submit(f"{__name__}:_leiden_runs", adjacency, dealt[b], options)
            except (OSError, WorkerError) as err:
                logger.warning("stability: no worker process (%s); its runs go here", err)
                local.append(b)
                if workers and workers[-1][1] == b:
                    workers.pop()[0].close(kill=True)
        for b in local:
            results[b] = _leiden_runs(adjacency, dealt[b], options)
        for w, b in workers:
            try:
                results[b] = w.result()
            except WorkerError as err:
                logger.warning("stability: a worker process failed (%s); its runs go here", err)
                results[b] = _leiden_runs(adjacency, dealt[b], options)
        ok = True
    finally:
        for w, _ in workers:
            w.close(kill=not ok)
    return results


def _leiden_runs(adjacency: sparse.csr_matrix, tasks: list, options: dict) -> list[np.ndarray]:
    """Memberships (int32) of each task ``(key, column, resolution, seed, size, subsample seed)``;
    the igraph graph is built once per process, a subsample is its induced subgraph."""
    from ._leiden import _find_partition

    g = _run_graph(adjacency, options["flavor"])
    n = adjacency.shape[0]
    fast = options["flavor"] != "leidenalg"
    out = []
    for _, _, r, seed, size, sseed in tasks:
        h = g.induced_subgraph(_subsample(n, size, sseed), implementation="create_from_scratch") if size else g
        part = _find_partition(h, r, options, seed, fast_rng=fast)
        out.append(np.asarray(part.membership, dtype=np.int32))
    return out


def _run_graph(adjacency: sparse.csr_matrix, flavor: str):
    """The graph of the re-runs. leidenalg: the directed graph :func:`scclust.tl.leiden` gives it.
    igraph / louvain: each undirected edge once (upper triangle) instead of once per stored entry:
    every weight and degree halves, which leaves modularity, hence the objective, unchanged, and the
    runs take about 0.6x the time."""
    import igraph as ig

    from ._leiden import _edges, _to_igraph

    if flavor == "leidenalg":
        g, w = _to_igraph(_edges(adjacency, directed=True, once=False), directed=True)
        g.es["weight"] = w
        return g
    up = sparse.triu(adjacency, k=0).tocoo()
    nz = up.data != 0
    g = ig.Graph(n=adjacency.shape[0], edges=np.column_stack([up.row[nz], up.col[nz]]).astype(np.int64), directed=False)
    g.es["weight"] = up.data[nz].astype(np.float64)
    return g


def _run_kmeans(adata, key, params, info, seeds, sub_specs, runs, run_info) -> None:
    from sklearn.cluster import KMeans

    from .._checks import get_rep

    X = get_rep(adata, params.get("use_rep", "X_pca"), params.get("n_pcs"))
    k = int(info["n_clusters"])
    n = adata.n_obs
    kw = {"n_clusters": k, "n_init": params.get("n_init", 10), "max_iter": params.get("max_iter", 300)}
    out = np.full((n, len(seeds) + len(sub_specs)), -1, dtype=np.int32)
    for c, s in enumerate(seeds):
        out[:, c] = KMeans(random_state=s, **kw).fit(X).labels_
    for c, (_, size, j, sseed) in enumerate(sub_specs, start=len(seeds)):
        idx = _subsample(n, size, sseed)
        out[idx, c] = KMeans(random_state=int(params.get("random_state", 0)) + 1000 + j, **kw).fit(X[idx]).labels_
    runs[key] = out
    infodf = _run_names(seeds, sub_specs)
    infodf["n_cells"] = [n] * len(seeds) + [size for _, size, _, _ in sub_specs]
    run_info[key] = infodf


def _run_hclust(adata, key, params, info, sub_specs, runs, run_info) -> None:
    from scipy.cluster.hierarchy import fcluster

    from .._checks import get_rep
    from ._hclust import _linkage

    X = get_rep(adata, params.get("use_rep", "X_pca"), params.get("n_pcs")).astype(np.float64, copy=False)
    vector = (
        adata.uns[next(g for g, v in adata.uns.items() if isinstance(v, dict) and key in v.get("clusterings", {}))].get(
            "backend"
        )
        == "vector"
    )
    n = adata.n_obs
    out = np.full((n, len(sub_specs)), -1, dtype=np.int32)
    for c, (_, size, _, sseed) in enumerate(sub_specs):
        idx = _subsample(n, size, sseed)
        Z, _ = _linkage(X[idx], params["method"], params["metric"], vector=vector, need_matrix=False)
        cut = (
            fcluster(Z, int(info["k"]), criterion="maxclust")
            if "k" in info
            else fcluster(Z, float(info["height"]), criterion="distance")
        )
        out[idx, c] = cut - 1
    runs[key] = out
    infodf = _run_names([], sub_specs)
    infodf["n_cells"] = [size for _, size, _, _ in sub_specs]
    run_info[key] = infodf
    if not sub_specs:
        logger.warning("stability: %s is hierarchical (no seed); without subsamples there is nothing to compare", key)


# ------------------------------------------------------------------------------------- measures
def _codes(adata: AnnData, key: str) -> tuple[np.ndarray, list[str]]:
    values = adata.obs[key]
    cat = values if isinstance(values.dtype, pd.CategoricalDtype) else values.astype("category")
    return np.asarray(cat.cat.codes, dtype=np.int32), [str(c) for c in cat.cat.categories]


def _n_clusters(col: np.ndarray) -> int:
    return int(np.unique(col[col >= 0]).size)


def contingency_table(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense contingency table of two non-negative integer label vectors (rows ``a``, columns ``b``)."""
    na, nb = int(a.max()) + 1, int(b.max()) + 1
    if na * nb <= 50_000_000:
        return np.bincount(a.astype(np.int64) * nb + b, minlength=na * nb).reshape(na, nb)
    table = sparse.coo_matrix((np.ones(a.size, dtype=np.int64), (a, b)), shape=(na, nb))
    return table.toarray()


def ari_from_table(table: np.ndarray) -> float:
    """Adjusted Rand index (Hubert & Arabie) from a contingency table; equals sklearn's."""
    t = table.astype(np.float64)
    n = t.sum()

    def comb(x):
        return x * (x - 1) / 2

    sum_ij = comb(t).sum()
    sum_a, sum_b = comb(t.sum(axis=1)).sum(), comb(t.sum(axis=0)).sum()
    expected = sum_a * sum_b / comb(n) if n > 1 else 0.0
    max_index = (sum_a + sum_b) / 2
    if max_index == expected:  # both trivial (one cluster each, or all singletons)
        return 1.0
    return float((sum_ij - expected) / (max_index - expected))


def ecs_from_table(table: np.ndarray) -> float:
    """Mean element-centric similarity of two partitions (Gates et al. 2019) from their contingency
    table: cell ``i`` in clusters A and B scores ``1 - (n_AB |1/|A| - 1/|B|| + (|A| - n_AB) / |A|
    + (|B| - n_AB) / |B|) / 2``."""
    t = table.astype(np.float64)
    A = t.sum(axis=1)[:, None]
    B = t.sum(axis=0)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = t * np.abs(1 / A - 1 / B) + (A - t) / A + (B - t) / B
        per = np.where(t > 0, t * (1 - dist / 2), 0.0)
    return float(per.sum() / t.sum())


def best_jaccard(table: np.ndarray) -> np.ndarray:
    """Per row cluster: the Jaccard index with its best-matching column cluster."""
    t = table.astype(np.float64)
    union = t.sum(axis=1)[:, None] + t.sum(axis=0)[None, :] - t
    with np.errstate(divide="ignore", invalid="ignore"):
        jac = np.where(union > 0, t / union, 0.0)
    return jac.max(axis=1) if jac.shape[1] else np.zeros(t.shape[0])


def _canonical(labels: np.ndarray) -> bytes:
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int32)
    rank[np.argsort(first)] = np.arange(first.size)
    return rank[inverse.ravel()].tobytes()


def inconsistency(partitions: list[np.ndarray], ecs: np.ndarray) -> float:
    """scICE's inconsistency coefficient ``1 / (p' S p)`` over the distinct partitions among
    ``partitions`` (``p``: their frequencies; ``S``: their element-centric similarity, taken from
    ``ecs``, the pairwise matrix of all partitions)."""
    canon = [_canonical(p) for p in partitions]
    first: dict[bytes, int] = {}
    counts: dict[bytes, int] = {}
    for i, c in enumerate(canon):
        first.setdefault(c, i)
        counts[c] = counts.get(c, 0) + 1
    idx = [first[c] for c in first]
    p = np.array([counts[c] for c in first], dtype=np.float64)
    p /= p.sum()
    S = ecs[np.ix_(idx, idx)]
    return float(1.0 / (p @ S @ p))


def _measure(codes: np.ndarray, cats: list[str], runs: np.ndarray, info: pd.DataFrame):
    seed_cols = np.flatnonzero((info["kind"] == "seed").to_numpy())
    sub_cols = np.flatnonzero((info["kind"] == "subsample").to_numpy())
    k = len(cats)
    # reported labels + seed runs: pairwise ARI / ECS, IC, medoid
    parts = [codes] + [runs[:, c] for c in seed_cols]
    m = len(parts)
    ari = np.eye(m)
    ecs = np.eye(m)
    for i in range(m):
        for j in range(i + 1, m):
            t = contingency_table(parts[i], parts[j])
            ari[i, j] = ari[j, i] = ari_from_table(t)
            ecs[i, j] = ecs[j, i] = ecs_from_table(t)
    names = ["label", *list(info.index[seed_cols])]
    if m > 1:
        off = ~np.eye(m, dtype=bool)
        ari_seeds, ari_seeds_min, ecs_seeds = float(ari[off].mean()), float(ari[off].min()), float(ecs[off].mean())
        ic = inconsistency(parts, ecs)
        medoid = int(np.argmax((ari.sum(axis=1) - 1) / (m - 1)))
    else:
        ari_seeds = ari_seeds_min = ecs_seeds = ic = np.nan
        medoid = 0
    # per-cluster best-match Jaccard in every run; subsample runs vs the labels on their cells
    jac = np.full((k, runs.shape[1]), np.nan)
    sub_ari = []
    for c in range(runs.shape[1]):
        col = runs[:, c]
        ok = col >= 0
        ref = codes[ok]
        t = contingency_table(np.concatenate([ref, [k - 1]]), np.concatenate([col[ok], [0]]))
        t[k - 1, 0] -= 1  # the padding entry only fixes the table's shape
        present = t.sum(axis=1) > 0
        jac[present, c] = best_jaccard(t)[present]
        if c in set(sub_cols):
            sub_ari.append(ari_from_table(t))
    sizes = np.bincount(codes[codes >= 0], minlength=k)
    stab = np.nanmean(jac, axis=1) if jac.shape[1] else np.full(k, np.nan)
    crows = []
    for i, cl in enumerate(cats):
        row = jac[i]
        valid = ~np.isnan(row)
        crows.append(
            {
                "cluster": cl,
                "n_cells": int(sizes[i]),
                "stability": float(stab[i]),
                "stability_seeds": float(np.nanmean(row[seed_cols]))
                if len(seed_cols) and valid[seed_cols].any()
                else np.nan,
                "stability_subsample": float(np.nanmean(row[sub_cols]))
                if len(sub_cols) and valid[sub_cols].any()
                else np.nan,
                "frac_recovered": float((row[valid] >= 0.5).mean()) if valid.any() else np.nan,
                "frac_dissolved": float((row[valid] < 0.5).mean()) if valid.any() else np.nan,
            }
        )
    ncl = np.array([_n_clusters(runs[:, c]) for c in range(runs.shape[1])])
    if ncl.size:
        _vals, cnt = np.unique(ncl, return_counts=True)
        mode_frac = float(cnt.max() / ncl.size)
    else:
        mode_frac = np.nan
    weights = sizes / max(sizes.sum(), 1)
    row = {
        "n_clusters": k,
        "n_runs": int(runs.shape[1]),
        "n_seed_runs": len(seed_cols),
        "n_subsample_runs": len(sub_cols),
        "ari_seeds": ari_seeds,
        "ari_seeds_min": ari_seeds_min,
        "ecs_seeds": ecs_seeds,
        "ic": ic,
        "ari_subsample": float(np.mean(sub_ari)) if sub_ari else np.nan,
        "n_clusters_median": float(np.median(ncl)) if ncl.size else np.nan,
        "n_clusters_min": int(ncl.min()) if ncl.size else k,
        "n_clusters_max": int(ncl.max()) if ncl.size else k,
        "n_clusters_mode_frac": mode_frac,
        "cluster_stability_min": float(np.nanmin(stab)) if k else np.nan,
        "cluster_stability_mean": float(np.nansum(stab * weights)),
        "medoid": names[medoid],
        "ari_medoid": float(ari[0, medoid]),
    }
    pw = pd.DataFrame(ari, index=names, columns=names)
    return row, crows, pw


def _recommend(summary: pd.DataFrame, min_ari: float, min_cluster_stability: float) -> pd.DataFrame:
    cols = [
        "key",
        "group",
        "param",
        "n_clusters",
        "score",
        "ari_seeds",
        "ari_subsample",
        "ic",
        "cluster_stability_min",
        "evidence",
    ]
    rows = []
    for key, r in summary[summary["stable"]].iterrows():
        sub = f", subsamples {r['ari_subsample']:.3f}" if not np.isnan(r["ari_subsample"]) else ""
        same = (
            f"{r['n_clusters_min']}"
            if r["n_clusters_min"] == r["n_clusters_max"]
            else f"{r['n_clusters_min']}-{r['n_clusters_max']}"
        )
        rows.append(
            {
                "key": key,
                "group": r["group"],
                "param": r["param"],
                "n_clusters": r["n_clusters"],
                "score": r["score"],
                "ari_seeds": r["ari_seeds"],
                "ari_subsample": r["ari_subsample"],
                "ic": r["ic"],
                "cluster_stability_min": r["cluster_stability_min"],
                "evidence": (
                    f"{r['n_clusters']} clusters; mean ARI between runs: seeds {r['ari_seeds']:.3f}{sub} (>= "
                    f"{min_ari:g}); "
                    f"IC {r['ic']:.4f}; {same} clusters in {r['n_runs']} runs; least stable cluster: Jaccard "
                    f"{r['cluster_stability_min']:.2f} (>= {min_cluster_stability:g})"
                ),
            }
        )
    rec = pd.DataFrame(rows, columns=cols)
    if rec.empty:
        logger.warning(
            "stability: no clustering reaches min_ari=%g and min_cluster_stability=%g; none is recommended",
            min_ari,
            min_cluster_stability,
        )
    return rec.sort_values(["group", "param"], kind="stable").reset_index(drop=True)


def _write_medoid(adata, key, medoid, runs, info, mode) -> None:
    """The medoid partition as ``.obs[f"{key}_medoid"]`` (``"add"``) or in place of ``key`` (``"replace"``;
    the reported labels kept as ``f"{key}_original"``), each with ``.uns[...colors]``: the copy keeps
    the labels' colours, a new partition takes the colour of the reported cluster it shares most cells with."""
    from .._colors import categories, category_colors, matched_colors
    from ._labels import store_labels

    colours = category_colors(adata, key, len(categories(adata.obs[key])))
    if medoid == "label":  # the reported labels are the medoid: nothing changes
        copy_key = f"{key}_medoid" if mode == "add" else f"{key}_original"
        adata.obs[copy_key] = adata.obs[key].copy()
        adata.uns[f"{copy_key}_colors"] = colours
        return
    labels = runs[:, list(info.index).index(medoid)]
    if mode == "add":
        store_labels(adata, f"{key}_medoid", labels)
        adata.uns[f"{key}_medoid_colors"] = matched_colors(adata, f"{key}_medoid", key)
    else:
        adata.obs[f"{key}_original"] = adata.obs[key].copy()
        adata.uns[f"{key}_original_colors"] = colours
        store_labels(adata, key, labels)
        adata.uns[f"{key}_colors"] = matched_colors(adata, key, f"{key}_original")
        logger.info(
            "stability: %s replaced by its medoid partition (%s); the reported labels are in %s_original",
            key,
            medoid,
            key,
        )


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    return v
