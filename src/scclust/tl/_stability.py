"""Stability of clusterings under other seeds and subsamples of cells; a resolution / k recommendation.

For each clustering key (``leiden_0.4``, ``kmeans10``, ``hclust_15``, a subset's ``tcells_0.6``) the
method that made it is run again with the same parameters: with other seeds, and on random
subsamples of cells. Everything is computed from contingency tables between a run and the reported
labels or another run, so memory is O(cells x runs): no cells x cells co-clustering matrix is ever
built.

Cost does not grow with cells x runs: no run clusters more than ``max_cells_per_run`` cells. Up to
that size the seed runs cluster every cell and a subsample run keeps a fraction of them, Leiden on
the induced subgraph of the run's own kNN graph. Above it, every run clusters a random subsample of
``max_cells_per_run`` cells (of a fraction of that for the subsample runs), on the induced subgraph
when the subsample holds at least half of the cells and otherwise on a kNN graph rebuilt on its cells
with the graph's own parameters (an induced subgraph of a tenth of the cells keeps ~3 of ~30
neighbours per cell and falls apart into hundreds of pieces). Seed runs are added four at a time
until the bootstrap confidence interval of their mean agreement is narrow (``ci_halfwidth``) or no
longer straddles ``min_ari``. Runs are spread over worker processes (or the workers of an active
Dask client) and scheduled one batch at a time, with a progress line per batch group.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sys
import time
from collections import OrderedDict, deque
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
#: seed runs per key added in each round (the first round and every later one)
SEED_BATCH = 4
#: a Leiden run on a subsample uses the induced subgraph of the kNN graph when the subsample holds at
#: least this fraction of the cells; below, a kNN graph rebuilt on the subsample
INDUCED_MIN_FRACTION = 0.5
#: exact hierarchical clustering (O(n^2) time) reruns on at most this many cells
HCLUST_EXACT_MAX_CELLS = 10_000
#: bootstrap resamples of the confidence interval of the mean ARI among seed runs
N_BOOTSTRAP = 200


@dataclass
class StabilityResult:
    """What :func:`stability` computed.

    Attributes
    ----------
    summary
        One row per clustering key (index ``key``): ``group``, ``method``, ``param`` (resolution /
        k / height), ``n_clusters`` (the reported labels), ``n_runs``, ``n_seed_runs``,
        ``n_subsample_runs``, ``run_cells`` (cells of each seed run, else of the largest subsample
        run: all cells up to ``max_cells_per_run``); ``ari_seeds`` (mean pairwise adjusted Rand index among the reported
        labels and the seed runs, on the seed runs' cells), ``ari_seeds_ci`` (half-width of its 95 %
        bootstrap confidence interval), ``ari_seeds_min``, ``ecs_seeds`` (mean pairwise
        element-centric similarity), ``ic`` (scICE's inconsistency coefficient over the same
        partitions: 1 when all agree), ``ari_subsample`` (mean ARI of each subsample run with the
        reported labels on its cells), ``n_clusters_median`` / ``_min`` / ``_max`` over the runs,
        ``n_clusters_mode_frac`` (share of runs with the most frequent number of clusters),
        ``cluster_stability_min`` / ``_mean`` (per-cluster best-match Jaccard, cell-weighted
        mean), ``least_stable_cluster``, ``medoid`` (``"label"`` or ``"seed_<s>"``: the partition
        with the highest mean ARI with the others), ``ari_medoid`` (ARI of the medoid with the
        reported labels), ``score`` (``min(ari_seeds, ari_subsample)``), ``moving_boundary`` (the
        pair of clusters ``"a|b"`` whose shared boundary moves most between runs, when every cluster is
        individually stable), ``score_boundary`` (the score with those clusters merged in every
        partition), ``call`` (``"stable"``, ``"stable (moving boundary)"`` or ``"unstable"``),
        ``stable``, ``reason`` (which criterion failed and by how much, or why the key passed),
        ``rank`` (1 = the default choice of its group among the stable keys) and ``default``.
    clusters
        One row per cluster of each key: ``key``, ``cluster``, ``n_cells``, ``stability`` (mean
        over runs of the best-match Jaccard index), ``stability_seeds``,
        ``stability_subsample``, ``frac_recovered`` (runs with best Jaccard >= 0.5, bluster's
        "recovered" rule of thumb), ``frac_dissolved`` (runs with best Jaccard < ``0.5``) and
        ``stable`` (``stability >= min_cluster_stability``).
    recommendation
        The stable keys with their evidence, one row each, ranked within each group: ``key``,
        ``group``, ``param``, ``n_clusters``, ``score``, ``ari_seeds``, ``ari_subsample``, ``ic``,
        ``cluster_stability_min``, ``call``, ``rank``, ``default``, ``evidence`` (a sentence) and
        ``choice`` (for the default: why it is the one). Empty when nothing is stable; never
        applied to the data.
    n_clusters
        Number of clusters of every run (rows keys, columns run names).
    runs
        Per key the cells x runs label matrix (int32; ``-1``: the cell was not in that run);
        columns in the order of ``run_info``.
    run_info
        One row per run (index the run name ``seed_<s>`` / ``sub<f>_<j>``): ``kind`` (``seed`` or
        ``subsample``), ``seed``, ``n_cells``, ``graph`` (Leiden: ``"full"``, ``"induced"`` or
        ``"rebuilt"``; other methods ``"embedding"``).
    pairwise
        Per key the ARI matrix among the reported labels and the seed runs.
    labels
        Per key the reported labels as integer codes (``-1`` missing) and their categories.
    default
        Per group the key named as the default choice (groups without a stable key are absent).
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
    default: dict[str, str] = field(default_factory=dict)
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
    ci_halfwidth: Annotated[float, Field(ge=0, le=1)] = 0.02,
    subsample_fractions: list[Annotated[float, Field(gt=0, lt=1)]] = (0.8,),
    subsample_sizes: list[Annotated[int, Field(ge=10)]] = (),
    n_subsamples: Annotated[int, Field(ge=0)] = 5,
    max_cells_per_run: Annotated[int, Field(ge=1000)] = 100_000,
    min_ari: Annotated[float, Field(ge=0, le=1)] = 0.9,
    min_cluster_stability: Annotated[float, Field(ge=0, le=1)] = 0.75,
    max_moving_boundaries: Annotated[int, Field(ge=0)] = 1,
    medoid_labels: Literal["off", "add", "replace"] = "off",
    n_jobs: NJobs = -1,
    scheduler: Literal["auto", "processes", "dask"] = "auto",
    random_state: int = 0,
    key_added: str = "stability",
) -> StabilityResult:
    """How reproducible each clustering is under other seeds and subsamples of cells.

    Each key in ``keys`` must have been made by :func:`scclust.tl.leiden`, :func:`~scclust.tl.kmeans`
    or :func:`~scclust.tl.hclust` (its group's ``.uns[...]["params"]`` says how; a subclustering is
    assessed on the subset AnnData that :func:`~scclust.tl.subcluster` returns). For each key the
    same method with the same parameters is run

    - with seeds ``random_state + 1, + 2, ...`` (not for hierarchical clustering, which has no
      seed): four at first, then four more at a time up to ``n_seeds`` while the 95 % bootstrap
      confidence interval of the mean ARI among them is wider than ``± ci_halfwidth`` and contains
      ``min_ari``, or is wider than ``± 2 ci_halfwidth`` (so that the reported mean is known to
      that precision even when the call is settled), or that of the least stable cluster's
      stability (over all runs so far) is wider and contains ``min_cluster_stability``
      (``ci_halfwidth=0``: always ``n_seeds``), and
    - ``n_subsamples`` times on a random subset of the cells for each fraction in
      ``subsample_fractions`` and each number of cells in ``subsample_sizes`` (MultiK and chooseR
      take 80 %).

    **Cost.** No run clusters more than ``max_cells_per_run`` cells. Up to that many cells, seed runs
    cluster all of them and a subsample run ``fraction x`` the cells. Above it, the seed runs share
    one random subsample of ``max_cells_per_run`` cells and each subsample run takes ``fraction x
    max_cells_per_run`` cells; the agreement with the reported labels is measured on the run's cells.
    Leiden runs on a subsample use the induced subgraph of the kNN graph when the subsample holds at
    least half of the cells (the same objective: modularity's expected terms scale alike), else a
    kNN graph rebuilt on the subsample's rows of the graph's embedding with the graph's
    parameters (the kNN backend ``auto`` picks at that size). k-means reruns cluster the run's
    rows; hierarchical clustering reruns its backend on each subsample (the micro-cluster
    approximation with another seed, or the exact tree on at most :data:`HCLUST_EXACT_MAX_CELLS`
    cells: O(n^2) time).

    Per key: the mean pairwise adjusted Rand index (ARI) and element-centric similarity among the
    reported labels and the seed runs, scICE's inconsistency coefficient ``1 / (p' S p)`` over the
    distinct partitions (``p`` their frequencies, ``S`` their pairwise element-centric
    similarity; Kim et al. 2025), the mean ARI of the subsample runs with the reported labels on
    their cells, the distribution of the number of clusters and the medoid partition. Per cluster:
    the mean over runs of the Jaccard index of the cluster with its best-matching cluster of the run
    (bluster's ``bootstrapStability``, chooseR, clusterboot), from contingency tables only.

    **The call.** A key is *stable* when the runs agree with each other and with the labels,
    ``score = min(ari_seeds, ari_subsample) >= min_ari``, and every one of its clusters is
    reproduced, ``stability >= min_cluster_stability`` (0.75: clusterboot's "valid, stable
    cluster"; Hennig 2007). A key whose every cluster is reproduced but whose score falls short is
    still called stable, ``"stable (moving boundary)"``, when merging the pair of clusters that
    exchange the most cells across runs (at most ``max_moving_boundaries`` pairs, taken in that
    order) in the labels and in every run brings the score to ``min_ari``: two individually
    reproducible clusters whose shared boundary moves (a gradient between them) do not veto the
    resolution, and ``reason`` names them. The ``reason`` column says for every key which
    criterion failed and by how much (``"ari_seeds 0.826 < 0.9"``, ``"cluster 3: Jaccard 0.57 <
    0.75"``). Within each group the stable keys are ranked, the finest first (most clusters; ties:
    higher score, then the smaller parameter), and the first is named the default choice: the most
    detailed clustering the data reproduces. Nothing is applied to the labels unless
    ``medoid_labels`` asks for it.

    Runs are spread over ``n_jobs`` worker processes (each sent the graphs once; this process deals
    out the batches), or over the workers of an active Dask client (``scheduler``); each run's labels depend only on its
    seed and cells, so the tables do not depend on ``n_jobs`` or the scheduler. A log line per batch
    group reports runs done, of the total, and the time left.

    Parameters
    ----------
    adata
        Annotated data matrix with clusterings made by scclust.
    keys
        Label columns to assess; ``None`` takes every clustering recorded in ``.uns`` by leiden,
        kmeans or hclust (others, e.g. transferred subclusterings, are skipped with a message).
    n_seeds
        Most runs with other seeds per key (>= 0; fewer when the agreement is known precisely).
    ci_halfwidth
        Stop adding seed runs once the 95 % bootstrap confidence intervals of the mean ARI among the
        labels and the seed runs, and of the least stable cluster's stability, are each at most this
        far on either side or lie wholly on one side of their threshold (the ARI's then at most twice
        this far); 0 runs all ``n_seeds``.
    subsample_fractions
        Fractions (each in (0, 1)) of the cells, or of ``max_cells_per_run`` above that many, for the
        subsample runs.
    subsample_sizes
        Numbers of cells (each >= 10 and below the number of cells) for more subsample runs.
    n_subsamples
        Subsample runs per fraction / size.
    max_cells_per_run
        Most cells one run clusters (>= 1000): above it, runs cluster random subsamples of this
        size (see Cost above).
    min_ari
        Threshold on ``min(ari_seeds, ari_subsample)`` for a key to be called stable.
    min_cluster_stability
        Threshold on the least stable cluster of a key for the key to be called stable.
    max_moving_boundaries
        Pairs of individually stable clusters whose moving boundary may be merged away to reach
        ``min_ari`` (0: the score alone decides).
    medoid_labels
        ``"add"`` writes the medoid partition as ``.obs[f"{key}_medoid"]``; ``"replace"`` puts it in
        ``.obs[key]`` (the reported labels move to ``.obs[f"{key}_original"]``); ``"off"`` writes
        neither. Only with seed runs on all cells (at most ``max_cells_per_run``).
    n_jobs
        Processes for the runs (-1: one per core).
    scheduler
        ``"processes"``: ``n_jobs`` worker processes (one job: this process); ``"dask"``: the workers of the
        active Dask client (:func:`distributed.get_client`; a run's config connects to
        ``dask.address``); ``"auto"``: Dask when a client is active, else processes.
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
    ``clusters`` (per key, cluster -> stability), ``recommended`` (the stable keys, ranked) and
    ``default`` (per group, the default key).
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
    cap = min(n, max_cells_per_run)
    seed_cells = None if n <= max_cells_per_run else _subsample(n, cap, _sub_seed(random_state, cap, -1))
    if medoid_labels != "off" and seed_cells is not None:
        raise InputError(
            f"medoid_labels={medoid_labels!r} needs seed runs on all cells: {n} cells is above "
            f"max_cells_per_run={max_cells_per_run}; raise it or set medoid_labels='off'"
        )
    sizes = [(f"sub{f:g}", round(f * cap)) for f in subsample_fractions] + [
        (f"sub{s}", int(s)) for s in subsample_sizes
    ]
    sub_specs = [(name, size, j, _sub_seed(random_state, size, j)) for name, size in sizes for j in range(n_subsamples)]
    all_seeds = [random_state + 1 + i for i in range(n_seeds)]

    t0 = time.perf_counter()
    plan_runs = _Plan(adata, plans, seed_cells, sub_specs)
    runner = _Runner(plan_runs.state, n_jobs=n_jobs, scheduler=scheduler)
    try:
        # round 1: every subsample run and the first seeds; then more seeds where the agreement is imprecise
        done_seeds: dict[str, list[int]] = {key: [] for key in plans}
        open_keys = [k for k in plans if plans[k][1] != "hclust"]
        batches = plan_runs.subsample_batches()
        round_no = 0
        while True:
            want = {}
            for key in open_keys:
                nxt = all_seeds[len(done_seeds[key]) : len(done_seeds[key]) + SEED_BATCH]
                if nxt:
                    want[key] = nxt
            batches += plan_runs.seed_batches(want)
            if not batches:
                break
            round_no += 1
            results = runner.map(batches, what=f"round {round_no}")
            plan_runs.store(batches, results)
            for key, seeds in want.items():
                done_seeds[key] += seeds
            batches = []
            if ci_halfwidth == 0:
                open_keys = [k for k in open_keys if len(done_seeds[k]) < n_seeds]
                continue
            still = []
            for key in open_keys:
                if len(done_seeds[key]) >= n_seeds:
                    continue
                mean, half = plan_runs.seed_ci(key, random_state)
                jac, jac_half = plan_runs.cluster_ci(key, random_state)
                # the call is not settled yet, or the reported mean is not known to +- 2 ci_halfwidth
                if (half > ci_halfwidth and mean - half < min_ari <= mean + half) or half > 2 * ci_halfwidth or (
                    jac_half > ci_halfwidth and jac - jac_half < min_cluster_stability <= jac + jac_half
                ):
                    still.append(key)
            open_keys = still
    finally:
        runner.close()
    runs, run_info = plan_runs.matrices()
    logger.info(
        "stability: %d runs of %d clusterings in %.1f s (%s)",
        sum(r.shape[1] for r in runs.values()),
        len(plans),
        time.perf_counter() - t0,
        runner.where,
    )

    # measure
    rows, cluster_rows, pairwise, labels, ncl = {}, [], {}, {}, {}
    for key, (group, method, _, info) in plans.items():
        codes, cats = _codes(adata, key)
        labels[key] = (codes, cats)
        row, crows, pw = _measure(
            codes, cats, runs[key], run_info[key], min_cluster_stability, max_moving_boundaries, random_state
        )
        row = {"group": group, "method": method, "param": _param(method, info), **row}
        rows[key] = row
        cluster_rows += [{"key": key, **c} for c in crows]
        pairwise[key] = pw
        ncl[key] = pd.Series(
            [_n_clusters(runs[key][:, j]) for j in range(runs[key].shape[1])], index=run_info[key].index
        )
    summary = pd.DataFrame.from_dict(rows, orient="index").rename_axis("key")
    _call(summary, min_ari, min_cluster_stability)
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
    clusters["stable"] = clusters["stability"] >= min_cluster_stability
    default = _rank(summary)
    recommendation = _recommend(summary, min_ari, min_cluster_stability)
    n_clusters = pd.DataFrame(ncl).T.rename_axis("key")

    # write
    params_used = {
        "keys": list(plans),
        "n_seeds": n_seeds,
        "ci_halfwidth": ci_halfwidth,
        "subsample_fractions": [float(f) for f in subsample_fractions],
        "subsample_sizes": [int(s) for s in subsample_sizes],
        "n_subsamples": n_subsamples,
        "max_cells_per_run": max_cells_per_run,
        "min_ari": min_ari,
        "min_cluster_stability": min_cluster_stability,
        "max_moving_boundaries": max_moving_boundaries,
        "medoid_labels": medoid_labels,
        "n_jobs": n_jobs,
        "scheduler": scheduler,
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
        "default": dict(default),
    }
    for key, r in summary.iterrows():
        logger.info("%s: %s (%s)", key, r["call"], r["reason"])
    for group, key in default.items():
        logger.info("stability: %s: default %s (%s)", group, key, summary.loc[key, "choice"])
    return StabilityResult(
        summary=summary,
        clusters=clusters,
        recommendation=recommendation,
        n_clusters=n_clusters,
        runs=runs,
        run_info=run_info,
        pairwise=pairwise,
        labels=labels,
        default=default,
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


# ---------------------------------------------------------------------------------------- runs
class _Plan:
    """Which runs each key gets, the data they need (graphs and embedding rows per cell set, in
    ``state``: sent to each worker once), and the labels that came back."""

    def __init__(self, adata: AnnData, plans: dict, seed_cells: np.ndarray | None, sub_specs: list) -> None:
        from .._checks import get_rep

        self.n = n = adata.n_obs
        self.plans = plans
        self.sub_specs = sub_specs
        self.sets: dict[str, np.ndarray | None] = {"seeds": seed_cells}
        for name, size, j, sseed in sub_specs:
            self.sets[f"{name}_{j}"] = _subsample(n, size, sseed)
        self.state: dict = {"_token": hashlib.blake2b(repr(time.time_ns()).encode(), digest_size=8).hexdigest()}
        self.kind: dict[tuple[str, str], str] = {}  # (key, set) -> graph kind
        self.cells: dict[tuple[str, str], np.ndarray | None] = {}  # (key, set) -> cells of the run
        self.source: dict[tuple[str, str], str] = {}  # (key, set) -> state id
        self.results: dict[str, dict[str, tuple[np.ndarray | None, np.ndarray]]] = {k: {} for k in plans}
        self.seeds: dict[str, list[int]] = {k: [] for k in plans}
        self.codes = {k: _codes(adata, k)[0] for k in plans}
        #: hclust group -> the backend its tree was built with
        self.backends = {g: adata.uns[g].get("backend", "vector") for g, m, _, _ in plans.values() if m == "hclust"}
        reps: dict[tuple, np.ndarray] = {}
        for key, (group, method, params, _) in plans.items():
            for set_name, idx in self.sets.items():
                if method == "hclust" and set_name == "seeds":
                    continue
                if method == "leiden":
                    sid = f"graph|{params.get('neighbors_key', 'neighbors')}|{set_name}"
                    if sid not in self.state:
                        self.state[sid], self.kind[("g", sid)] = _run_adjacency(
                            adata, params.get("neighbors_key", "neighbors"), idx
                        )
                    self.kind[(key, set_name)] = self.kind[("g", sid)]
                    self.cells[(key, set_name)] = idx
                else:
                    rep = (params.get("use_rep", "X_pca"), params.get("n_pcs"))
                    if rep not in reps:
                        reps[rep] = get_rep(adata, rep[0], rep[1])
                    cells = idx
                    if method == "hclust" and adata.uns[group].get("backend") != "micro":
                        m = n if idx is None else idx.size
                        if m > HCLUST_EXACT_MAX_CELLS:
                            base = np.arange(n) if idx is None else idx
                            cells = base[_subsample(m, HCLUST_EXACT_MAX_CELLS, _sub_seed(m, HCLUST_EXACT_MAX_CELLS, 7))]
                    sid = f"rows|{rep[0]}|{rep[1]}|{set_name}|{0 if cells is None else cells.size}|{method == 'hclust'}"
                    if sid not in self.state:
                        X = reps[rep] if cells is None else reps[rep][cells]
                        self.state[sid] = X.astype(np.float64, copy=False) if method == "hclust" else X
                    self.kind[(key, set_name)] = "embedding"
                    self.cells[(key, set_name)] = cells
                self.source[(key, set_name)] = sid

    # batches: ("leiden", source, options, [(key, run, resolution, seed)]) / ("kmeans", source, [(key, run, k,
    # seed, kw)]) / ("hclust", source, options, [(key, run, cut)])
    def subsample_batches(self) -> list:
        out = []
        for name, _size, j, _ in self.sub_specs:
            set_name = f"{name}_{j}"
            out += self._batches(
                set_name, {key: [None] for key in self.plans}, run_name=lambda _s, set_name=set_name: set_name, j=j
            )
        return out

    def seed_batches(self, want: dict[str, list[int]]) -> list:
        if not want:
            return []
        return self._batches("seeds", want, run_name=lambda s: f"seed_{s}", j=None)

    def _batches(self, set_name: str, want: dict, *, run_name, j) -> list:
        leiden: dict[tuple, list] = {}
        hclust: dict[tuple, list] = {}
        out = []
        for key, seeds in want.items():
            group, method, params, info = self.plans[key]
            if (key, set_name) not in self.source:
                continue
            src = self.source[(key, set_name)]
            base = int(params.get("random_state", 0)) + 1000 + (j or 0)
            if method == "leiden":
                opts = _leiden_options(params)
                for s in seeds:
                    leiden.setdefault((src, repr(opts)), []).append(
                        (key, run_name(s), float(info["resolution"]), base if s is None else s)
                    )
            elif method == "kmeans":
                kw = {
                    "n_clusters": int(info["n_clusters"]),
                    "n_init": params.get("n_init", 10),
                    "max_iter": params.get("max_iter", 300),
                }
                out.append(("kmeans", src, None, [(key, run_name(s), base if s is None else s, kw) for s in seeds]))
            else:
                micro = self._hclust_options(group, params, base)
                cut = ("k", int(info["k"])) if "k" in info else ("height", float(info["height"]))
                hclust.setdefault((src, repr(micro)), [micro]).append((key, run_name(None), cut))
        for (src, _), runs in leiden.items():
            opts = _leiden_options(self.plans[runs[0][0]][2])
            for i in range(0, len(runs), SEED_BATCH):
                out.append(("leiden", src, opts, runs[i : i + SEED_BATCH]))
        for (src, _), (opts, *runs) in hclust.items():
            out.append(("hclust", src, opts, runs))
        return out

    def _hclust_options(self, group: str, params: dict, seed: int) -> dict:
        backend = self.backends.get(group, "vector")
        return {
            "method": params["method"],
            "metric": params["metric"],
            "backend": backend,
            "n_micro_clusters": int(params.get("n_micro_clusters", 1000)),
            "random_state": seed,
        }

    def store(self, batches: list, results: list) -> None:
        for batch, labels in zip(batches, results, strict=True):
            for run, lab in zip(batch[3], labels, strict=True):
                key, name = run[0], run[1]
                set_name = "seeds" if name.startswith("seed_") else name
                self.results[key][name] = (self.cells[(key, set_name)], np.asarray(lab, dtype=np.int32))
                if name.startswith("seed_"):
                    self.seeds[key].append(int(name.removeprefix("seed_")))

    def seed_ci(self, key: str, random_state: int) -> tuple[float, float]:
        """Mean pairwise ARI among the labels and the seed runs so far, and the half-width of its 95 %
        bootstrap interval (partitions resampled)."""
        cells = self.sets["seeds"]
        codes = self.codes[key] if cells is None else self.codes[key][cells]
        parts = [codes] + [self.results[key][f"seed_{s}"][1] for s in self.seeds[key]]
        ari = _pairwise(parts)[0]
        return _bootstrap_ci(ari, random_state)

    def cluster_ci(self, key: str, random_state: int) -> tuple[float, float]:
        """Stability of the least stable cluster over the runs so far (mean best-match Jaccard), and the
        half-width of its 95 % bootstrap interval (runs resampled)."""
        codes = self.codes[key]
        k = int(codes.max()) + 1
        jac = []
        for cells, lab in self.results[key].values():
            ref = codes if cells is None else codes[cells]
            t = contingency_table(np.concatenate([ref, [k - 1]]), np.concatenate([lab, [0]]))
            t[k - 1, 0] -= 1
            jac.append(np.where(t.sum(axis=1) > 0, best_jaccard(t), np.nan))
        if not jac:
            return float("nan"), float("inf")
        J = np.array(jac).T  # clusters x runs
        least = int(np.nanargmin(np.nanmean(J, axis=1)))
        row = J[least][~np.isnan(J[least])]
        if row.size < 3:
            return float(row.mean()) if row.size else float("nan"), float("inf")
        rng = np.random.default_rng([random_state, row.size, 29])
        boots = rng.choice(row, (N_BOOTSTRAP, row.size)).mean(axis=1)
        lo, hi = np.percentile(boots, [2.5, 97.5])
        mean = float(row.mean())
        return mean, float(max(mean - lo, hi - mean))

    def matrices(self) -> tuple[dict[str, np.ndarray], dict[str, pd.DataFrame]]:
        runs, info = {}, {}
        for key in self.plans:
            names = [f"seed_{s}" for s in self.seeds[key]] + [
                f"{name}_{j}" for name, _, j, _ in self.sub_specs if f"{name}_{j}" in self.results[key]
            ]
            mat = np.full((self.n, len(names)), -1, dtype=np.int32)
            rows = []
            base = int(self.plans[key][2].get("random_state", 0)) + 1000
            for c, name in enumerate(names):
                cells, lab = self.results[key][name]
                if cells is None:
                    mat[:, c] = lab
                else:
                    mat[cells, c] = lab
                set_name = "seeds" if name.startswith("seed_") else name
                if name.startswith("seed_"):
                    kind, seed = "seed", int(name.removeprefix("seed_"))
                else:
                    kind, seed = "subsample", base + int(name.rsplit("_", 1)[1])
                rows.append(
                    (name, kind, seed, self.n if cells is None else int(cells.size), self.kind[(key, set_name)])
                )
            runs[key] = mat
            info[key] = pd.DataFrame(rows, columns=["run", "kind", "seed", "n_cells", "graph"]).set_index("run")
            if self.plans[key][1] == "hclust" and not names:
                logger.warning(
                    "stability: %s is hierarchical (no seed); without subsamples there is nothing to compare", key
                )
        return runs, info


def _run_adjacency(adata: AnnData, neighbors_key: str, cells: np.ndarray | None) -> tuple[sparse.csr_matrix, str]:
    """The graph a Leiden run on ``cells`` clusters, and how it was made (``"full"``, ``"induced"``,
    ``"rebuilt"``)."""
    from ._leiden import get_graph

    adjacency = get_graph(adata, neighbors_key)
    n = adjacency.shape[0]
    if cells is None:
        return adjacency, "full"
    if cells.size >= INDUCED_MIN_FRACTION * n:
        return sparse.csr_matrix(adjacency[cells][:, cells]), "induced"
    rebuilt = _rebuilt_graph(adata, neighbors_key, cells)
    if rebuilt is None:
        logger.warning(
            "stability: graph %r records no embedding to rebuild it from; runs on %d of %d cells use its "
            "induced subgraph (sparser than the graph)",
            neighbors_key,
            cells.size,
            n,
        )
        return sparse.csr_matrix(adjacency[cells][:, cells]), "induced"
    return rebuilt, "rebuilt"


def _rebuilt_graph(adata: AnnData, neighbors_key: str, cells: np.ndarray) -> sparse.csr_matrix | None:
    """The kNN graph of ``cells`` rebuilt with the parameters recorded for ``neighbors_key`` (the backend
    ``auto`` picks at that size)."""
    from .._checks import get_rep
    from .._errors import UserError
    from ..pp._neighbors import neighbors

    p = dict(adata.uns[neighbors_key].get("params", {}))
    rep = p.get("use_rep", "X_pca")
    if "n_neighbors" not in p or (rep != "X" and rep not in adata.obsm):
        return None
    X = get_rep(adata, rep, p.get("n_pcs"))[cells]
    sub = AnnData(obs=pd.DataFrame(index=pd.RangeIndex(cells.size).astype(str)), obsm={"rep": X})
    method = p.get("method", "umap")
    kw = {
        "use_rep": "rep",
        "n_neighbors": int(p["n_neighbors"]),
        "metric": p.get("metric", "euclidean"),
        "method": "umap" if method == "snn" else method,
        "snn": method == "snn",
        "random_state": int(p.get("random_state", 0)),
        **({"prune": p["prune"]} if "prune" in p else {}),
        **({"min_recall": p["min_recall"]} if "min_recall" in p else {}),
    }
    quiet = logging.getLogger("scclust.pp")
    level = quiet.level
    quiet.setLevel(max(level, logging.WARNING))
    try:
        # the backend pp.neighbors chooses at the subsample's size (exact up to 50,000 cells, then ivf
        # with the recall the graph was built for): what a reanalysis of these cells would get
        try:
            neighbors(sub, backend="auto", **kw)
        except UserError:
            neighbors(sub, backend="exact", **kw)
    finally:
        quiet.setLevel(level)
    return sparse.csr_matrix(sub.obsp["connectivities"])


def _leiden_options(params: dict) -> dict:
    return {
        "flavor": params.get("flavor", "igraph"),
        "n_iterations": params.get("n_iterations", 2),
        "use_weights": params.get("use_weights", True),
    }


#: igraph graphs of the runs, built once per process and graph: (token, source, flavor) -> graph
_GRAPHS: OrderedDict = OrderedDict()
#: the state a worker process was sent (:func:`_set_state`)
_STATE: dict = {}


def _set_state(state: dict) -> None:
    """Worker side: keep the graphs and rows of a stability call for its batches."""
    _STATE.clear()
    _STATE.update(state)
    _GRAPHS.clear()


def _worker_batch(batch: tuple) -> list[np.ndarray]:
    return _run_batch(batch, _STATE)


def _run_batch(batch: tuple, state: dict) -> list[np.ndarray]:
    """Labels (int32) of each run of one batch (see :meth:`_Plan._batches`)."""
    kind, src, options, runs = batch
    if kind == "leiden":
        from ._leiden import _find_partition

        cache = (state["_token"], src, options["flavor"])
        if cache not in _GRAPHS:
            while len(_GRAPHS) >= 2:
                _GRAPHS.popitem(last=False)
            _GRAPHS[cache] = _run_graph(state[src], options["flavor"])
        g = _GRAPHS[cache]
        _GRAPHS.move_to_end(cache)
        fast = options["flavor"] != "leidenalg"
        return [
            np.asarray(_find_partition(g, r, options, seed, fast_rng=fast).membership, dtype=np.int32)
            for _, _, r, seed in runs
        ]
    X = state[src]
    if kind == "kmeans":
        from sklearn.cluster import KMeans

        return [KMeans(random_state=seed, **kw).fit(X).labels_.astype(np.int32) for _, _, seed, kw in runs]
    return _hclust_cuts(X, options, [cut for _, _, cut in runs])


def _hclust_cuts(X: np.ndarray, options: dict, cuts: list) -> list[np.ndarray]:
    """One tree on the rows (the run's backend), cut at each ``("k", k)`` / ``("height", h)``."""
    from scipy.cluster.hierarchy import fcluster

    from ._hclust import _linkage, _metric_space, _micro_linkage, micro_clusters

    method, metric = options["method"], options["metric"]
    if options["backend"] == "micro":
        cells_micro = micro_clusters(
            _metric_space(X, metric), min(options["n_micro_clusters"], X.shape[0]), random_state=options["random_state"]
        )
        Z, _, _ = _micro_linkage(X, cells_micro, method, metric)
    else:
        Z, _ = _linkage(X, method, metric, vector=options["backend"] == "vector", need_matrix=False)
        cells_micro = None
    out = []
    for what, value in cuts:
        cut = fcluster(Z, value, criterion="maxclust" if what == "k" else "distance") - 1
        out.append((cut if cells_micro is None else cut[cells_micro]).astype(np.int32))
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


class _Runner:
    """Batches run in ``n_jobs`` worker processes (each sent ``state`` once), handed out one at a time
    as workers become free, this process only dealing them out (with one job: here); or on the
    workers of a Dask client. Results come back in batch order, whatever ran where."""

    def __init__(self, state: dict, *, n_jobs: int, scheduler: str) -> None:
        self.state = state
        self.client = None
        # a Dask client can only be active when distributed was imported (no import for nothing)
        if scheduler == "dask" or (scheduler == "auto" and "distributed" in sys.modules):
            from .._dask import _client

            self.client = _client()
            if self.client is None and scheduler == "dask":
                raise InputError(
                    "scheduler='dask' needs an active Dask client (distributed.Client(...)); none is; "
                    "use scheduler='processes' or connect first"
                )
        self.n_proc = 1 if self.client is not None else (available_cpus() if n_jobs == -1 else n_jobs)
        self.workers: list = []
        self.started = False
        self.scattered = None
        if self.client is not None:
            n = len(self.client.scheduler_info().get("workers", {}))
            self.where = f"{n} Dask workers"
        else:
            self.where = "this process" if self.n_proc == 1 else f"{self.n_proc} worker processes"

    def _start(self) -> None:
        from .._worker import Worker, WorkerError

        self.started = True
        for _ in range(self.n_proc):
            try:
                w = Worker()
                w.submit(f"{__name__}:_set_state", self.state)
                w.setup = True
                self.workers.append(w)
            except (OSError, WorkerError) as err:
                logger.warning("stability: no worker process (%s); its runs go here", err)

    def map(self, batches: list, *, what: str) -> list:
        if self.client is not None:
            return self._map_dask(batches, what)
        if not self.started and self.n_proc > 1 and len(batches) > 1:
            self._start()
        import select

        from .._worker import WorkerError

        results: list = [None] * len(batches)
        # graphs / row sets largest first, the batches of one graph together (each process builds a graph
        # once), within it the costliest batches first: all processes finish together
        size = {b[1]: _batch_cost(("", b[1], None, [(None, None, 0.0)]), self.state) for b in batches}
        order = sorted(
            range(len(batches)),
            key=lambda i: (-size[batches[i][1]], batches[i][1], -_batch_cost(batches[i], self.state), i),
        )
        queue = deque(order)
        busy: dict = {}
        progress = _Progress(sum(len(b[3]) for b in batches), what, self.where)

        def collect(w) -> None:
            i = busy.pop(w)
            try:
                results[i] = w.result()
            except WorkerError as err:
                logger.warning("stability: a worker process failed (%s); its runs go here", err)
                self.workers.remove(w)
                w.close(kill=True)
                results[i] = _run_batch(batches[i], self.state)
            progress.add(len(batches[i][3]))

        while queue or busy:
            for w in self.workers:
                if w not in busy and queue:
                    i = queue.popleft()
                    try:
                        w.submit(f"{__name__}:_worker_batch", batches[i])
                        busy[w] = i
                    except WorkerError:
                        queue.appendleft(i)
                        self.workers.remove(w)
                        break
            if busy:  # this process only deals out batches: no worker waits for it
                for w in self._ready(busy, timeout=None, select=select):
                    collect(w)
            elif queue:  # no worker (one process, or none could start): here
                i = queue.popleft()
                results[i] = _run_batch(batches[i], self.state)
                progress.add(len(batches[i][3]))
        return results

    def _ready(self, busy: dict, *, timeout, select) -> list:
        """Workers whose batch result is ready (the reply to the state they were sent read first)."""
        while busy:
            streams = {w.proc.stdout: w for w in busy}
            ready, _, _ = select.select(list(streams), [], [], timeout)
            out = []
            for s in ready:
                w = streams[s]
                if getattr(w, "setup", False):
                    w.setup = False
                    with contextlib.suppress(Exception):  # a failed set-up shows in the batch's reply
                        w.result()
                    continue
                out.append(w)
            if out or timeout == 0:
                return out
        return []

    def _map_dask(self, batches: list, what: str) -> list:
        from distributed import as_completed

        if self.scattered is None:
            self.scattered = self.client.scatter(self.state, broadcast=True, hash=False)
        progress = _Progress(sum(len(b[3]) for b in batches), what, self.where)
        futures = [self.client.submit(_run_batch, b, self.scattered, pure=False) for b in batches]
        where = {f.key: i for i, f in enumerate(futures)}
        results: list = [None] * len(batches)
        for future, value in as_completed(futures, with_results=True):
            i = where[future.key]
            results[i] = value
            progress.add(len(batches[i][3]))
        return results

    def close(self) -> None:
        for w in self.workers:
            w.close()
        self.workers = []
        _GRAPHS.clear()


def _batch_cost(batch: tuple, state: dict) -> float:
    src = state[batch[1]]
    size = src.nnz if sparse.issparse(src) else src.shape[0] * 50
    per = [run[2] if batch[0] == "leiden" else 1.0 for run in batch[3]]
    return float(size) * sum(0.5 + p for p in per)


class _Progress:
    """A log line per batch group (about every 10 % of the runs or 30 s): runs done, total, time left."""

    def __init__(self, total: int, what: str, where: str) -> None:
        self.total, self.done, self.what, self.where = total, 0, what, where
        self.t0 = self.last = time.perf_counter()
        self.step = max(1, total // 10)
        self.next = self.step
        logger.info("stability: %s: %d runs in %s", what, total, where)

    def add(self, k: int) -> None:
        self.done += k
        now = time.perf_counter()
        elapsed = now - self.t0
        due = (self.done >= self.next and elapsed >= 5) or now - self.last >= 30
        if due or (self.done == self.total and elapsed >= 5):
            self.next = self.done + self.step
            self.last = now
            left = elapsed / self.done * (self.total - self.done)
            logger.info(
                "stability: %s: %d of %d runs done, %s elapsed, about %s left",
                self.what,
                self.done,
                self.total,
                _fmt(elapsed),
                _fmt(left),
            )


def _fmt(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


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


def _pairwise(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, dict]:
    """Pairwise ARI and element-centric similarity of partitions of the same cells, and their tables."""
    m = len(parts)
    ari, ecs = np.eye(m), np.eye(m)
    tables = {}
    for i in range(m):
        for j in range(i + 1, m):
            t = contingency_table(parts[i], parts[j])
            tables[(i, j)] = t
            ari[i, j] = ari[j, i] = ari_from_table(t)
            ecs[i, j] = ecs[j, i] = ecs_from_table(t)
    return ari, ecs, tables


def _bootstrap_ci(ari: np.ndarray, random_state: int) -> tuple[float, float]:
    """Mean off-diagonal ARI and the half-width of its 95 % percentile bootstrap interval, partitions
    resampled with replacement (pairs of a partition with itself left out)."""
    m = ari.shape[0]
    if m < 2:
        return float("nan"), float("inf")
    off = ~np.eye(m, dtype=bool)
    mean = float(ari[off].mean())
    if m < 3:
        return mean, float("inf")
    rng = np.random.default_rng([random_state, m, 17])
    boots = []
    for _ in range(N_BOOTSTRAP):
        pick = rng.integers(0, m, m)
        sub = ari[np.ix_(pick, pick)]
        keep = pick[:, None] != pick[None, :]
        if keep.any():
            boots.append(sub[keep].mean())
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return mean, float(max(mean - lo, hi - mean))


def _merged_ari(table: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> float:
    """ARI of a contingency table after merging its rows by ``rows`` and its columns by ``cols`` (group ids)."""
    r = np.zeros((int(rows.max()) + 1, table.shape[1]))
    np.add.at(r, rows, table)
    t = np.zeros((r.shape[0], int(cols.max()) + 1))
    np.add.at(t.T, cols, r.T)
    return ari_from_table(t)


def _measure(
    codes: np.ndarray,
    cats: list[str],
    runs: np.ndarray,
    info: pd.DataFrame,
    min_cluster_stability: float,
    max_moving_boundaries: int,
    random_state: int,
):
    seed_cols = np.flatnonzero((info["kind"] == "seed").to_numpy())
    sub_cols = np.flatnonzero((info["kind"] == "subsample").to_numpy())
    k = len(cats)
    # reported labels + seed runs (on the seed runs' cells): pairwise ARI / ECS, IC, medoid
    mask = runs[:, seed_cols[0]] >= 0 if len(seed_cols) else np.ones(codes.size, dtype=bool)
    parts = [codes[mask]] + [runs[mask, c] for c in seed_cols]
    m = len(parts)
    ari, ecs, tables = _pairwise(parts)
    names = ["label", *list(info.index[seed_cols])]
    if m > 1:
        off = ~np.eye(m, dtype=bool)
        ari_seeds, ari_seeds_min, ecs_seeds = float(ari[off].mean()), float(ari[off].min()), float(ecs[off].mean())
        ari_ci = _bootstrap_ci(ari, random_state)[1]
        ic = inconsistency(parts, ecs)
        medoid = int(np.argmax((ari.sum(axis=1) - 1) / (m - 1)))
    else:
        ari_seeds = ari_seeds_min = ecs_seeds = ic = ari_ci = np.nan
        medoid = 0
    # per-cluster best-match Jaccard in every run; subsample runs vs the labels on their cells; where cells go
    jac = np.full((k, runs.shape[1]), np.nan)
    sub_ari = []
    run_tables = []
    moved = np.zeros((k, k))
    seen = np.zeros(k)
    sub_set = set(sub_cols)
    for c in range(runs.shape[1]):
        col = runs[:, c]
        ok = col >= 0
        ref = codes[ok]
        t = contingency_table(np.concatenate([ref, [k - 1]]), np.concatenate([col[ok], [0]]))
        t[k - 1, 0] -= 1  # the padding entry only fixes the table's shape
        run_tables.append(t)
        present = t.sum(axis=1) > 0
        jac[present, c] = best_jaccard(t)[present]
        if c in sub_set:
            sub_ari.append(ari_from_table(t))
        to = np.argmax(t, axis=0)  # each run cluster -> the reported cluster it shares most cells with
        np.add.at(moved.T, to, t.T)
        seen += t.sum(axis=1)
    np.fill_diagonal(moved, 0)
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
    ari_sub = float(np.mean(sub_ari)) if sub_ari else np.nan
    score = float(np.nanmin([ari_seeds, ari_sub])) if not (np.isnan(ari_seeds) and np.isnan(ari_sub)) else np.nan
    least = int(np.nanargmin(stab)) if k and np.isfinite(stab).any() else 0

    # moving boundaries: the pairs of reported clusters that exchange the most cells across runs, merged
    pair_share = (moved + moved.T) / np.maximum(seen[:, None] + seen[None, :], 1)
    iu = np.triu_indices(k, 1)
    order = np.argsort(-pair_share[iu], kind="stable")
    pairs = [(int(iu[0][o]), int(iu[1][o])) for o in order[:max_moving_boundaries] if pair_share[iu][o] > 0]
    score_b = np.nan
    if pairs:
        group = np.arange(k)
        for a, b in pairs:
            group[group == group[b]] = group[a]
    if pairs and np.unique(group).size < 2:  # merging away every boundary leaves nothing to assess
        pairs = []
    if pairs:
        # a run's cluster joins the group of the reported cluster it shares most cells with
        run_groups = [group[np.argmax(t, axis=0)] for t in run_tables]
        part_groups = [group] + [run_groups[c] for c in seed_cols]
        merged = [
            _merged_ari(
                tables[(i, j)], part_groups[i][: tables[(i, j)].shape[0]], part_groups[j][: tables[(i, j)].shape[1]]
            )
            for i in range(m)
            for j in range(i + 1, m)
        ]
        sub_merged = [_merged_ari(run_tables[c], group, run_groups[c]) for c in sub_cols]
        vals = [float(np.mean(v)) for v in (merged, sub_merged) if len(v)]
        score_b = min(vals) if vals else np.nan
    row = {
        "n_clusters": k,
        "n_runs": int(runs.shape[1]),
        "n_seed_runs": len(seed_cols),
        "n_subsample_runs": len(sub_cols),
        "run_cells": int(mask.sum()) if len(seed_cols) else int(info["n_cells"].max()) if len(info) else 0,
        "ari_seeds": ari_seeds,
        "ari_seeds_ci": ari_ci,
        "ari_seeds_min": ari_seeds_min,
        "ecs_seeds": ecs_seeds,
        "ic": ic,
        "ari_subsample": ari_sub,
        "n_clusters_median": float(np.median(ncl)) if ncl.size else np.nan,
        "n_clusters_min": int(ncl.min()) if ncl.size else k,
        "n_clusters_max": int(ncl.max()) if ncl.size else k,
        "n_clusters_mode_frac": mode_frac,
        "cluster_stability_min": float(np.nanmin(stab)) if k and np.isfinite(stab).any() else np.nan,
        "cluster_stability_mean": float(np.nansum(stab * weights)),
        "least_stable_cluster": cats[least] if k else "",
        "n_unstable_clusters": int((stab < min_cluster_stability).sum()),
        "medoid": names[medoid],
        "ari_medoid": float(ari[0, medoid]),
        "score": score,
        "moving_boundary": "; ".join(f"{cats[a]}|{cats[b]}" for a, b in pairs),
        "boundary_share": float(pair_share[pairs[0]]) if pairs else np.nan,
        "score_boundary": score_b,
    }
    pw = pd.DataFrame(ari, index=names, columns=names)
    return row, crows, pw


def _call(summary: pd.DataFrame, min_ari: float, min_cluster_stability: float) -> None:
    """The call per key (``call``, ``stable``) and its ``reason``, in place."""
    calls, reasons = [], []
    for _key, r in summary.iterrows():
        score = r["score"]
        ari_ok = bool(score >= min_ari)
        cl_ok = bool(r["cluster_stability_min"] >= min_cluster_stability)
        boundary = (not ari_ok) and cl_ok and bool(r["score_boundary"] >= min_ari)
        failing = [
            (name, r[name])
            for name in ("ari_seeds", "ari_subsample")
            if not np.isnan(r[name]) and not r[name] >= min_ari
        ]
        least = f"{r['least_stable_cluster']} Jaccard {_shown(r['cluster_stability_min'], min_cluster_stability, 2)}"
        if ari_ok and cl_ok:
            calls.append("stable")
            reasons.append(
                f"ARI between runs {score:.3f} >= {min_ari:g}; every cluster reproduced (least stable: cluster {least} "
                f">= {min_cluster_stability:g})"
            )
        elif boundary:
            a, b = r["moving_boundary"].split("; ")[0].split("|")
            fails = " and ".join(f"{name} {_shown(v, min_ari, 3)}" for name, v in failing)
            reasons.append(
                f"{fails} < {min_ari:g} only from the moving boundary between clusters {a} and {b} "
                f"({r['boundary_share']:.0%} of their cells change side; ARI {r['score_boundary']:.3f} with "
                f"{'them' if ';' not in r['moving_boundary'] else 'the pairs ' + r['moving_boundary']} merged); every "
                f"cluster reproduced (least stable: cluster {least} >= {min_cluster_stability:g})"
            )
            calls.append("stable (moving boundary)")
        else:
            parts = [f"{name} {_shown(v, min_ari, 3)} < {min_ari:g}" for name, v in failing]
            if not cl_ok and not np.isnan(r["cluster_stability_min"]):
                more = int(r["n_unstable_clusters"]) - 1
                parts.append(
                    f"cluster {least} < {min_cluster_stability:g}"
                    + (f" (and {more} more clusters)" if more > 0 else "")
                )
            elif failing and r["moving_boundary"] and not np.isnan(r["score_boundary"]):
                parts.append(f"merging clusters {r['moving_boundary']} still gives ARI {r['score_boundary']:.3f}")
            calls.append("unstable")
            reasons.append("; ".join(parts) or "no runs to compare")
    summary["call"] = calls
    summary["stable"] = summary["call"] != "unstable"
    summary["reason"] = reasons


def _shown(value: float, threshold: float, digits: int) -> str:
    """``value`` with ``digits`` decimals, one more when rounding would hide which side of the threshold it is on."""
    text = f"{value:.{digits}f}"
    while (value < threshold) != (float(text) < threshold) and digits < 6:
        digits += 1
        text = f"{value:.{digits}f}"
    return text


def _rank(summary: pd.DataFrame) -> dict[str, str]:
    """Rank the stable keys of each group (1 = the default: the most clusters; ties: higher score,
    then the smaller parameter), in place (``rank``, ``default``, ``choice``); return group -> default."""
    summary["rank"] = np.nan
    summary["default"] = False
    summary["choice"] = ""
    default = {}
    what = {"leiden": "resolution", "kmeans": "k", "hclust": "cut"}
    for group, d in summary[summary["stable"]].groupby("group", sort=False):
        d = d.assign(_neg_n=-d["n_clusters"], _neg_score=-d["score"].fillna(0))
        ordered = d.sort_values(["_neg_n", "_neg_score", "param"], kind="stable").index
        summary.loc[ordered, "rank"] = np.arange(1, len(ordered) + 1)
        best = ordered[0]
        r = summary.loc[best]
        summary.loc[best, "default"] = True
        others = list(ordered[1:])
        note = (
            "; the boundary between clusters "
            + r["moving_boundary"].split("; ")[0].replace("|", " and ")
            + " moves between runs (each cluster reproduced)"
        )
        summary.loc[best, "choice"] = (
            f"the most detailed {group} clustering the runs reproduce: {int(r['n_clusters'])} clusters at "
            f"{what.get(r['method'], 'parameter')} {r['param']:g}"
            + (note if r["call"] != "stable" else "")
            + (f"; coarser stable choices: {', '.join(others)}" if others else "; the only stable one")
        )
        default[group] = best
    summary["rank"] = summary["rank"].astype("Int64")
    return default


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
        "call",
        "rank",
        "default",
        "evidence",
        "choice",
    ]
    rows = []
    for key, r in summary[summary["stable"]].iterrows():
        sub = f", subsamples {r['ari_subsample']:.3f}" if not np.isnan(r["ari_subsample"]) else ""
        seeds = f"seeds {r['ari_seeds']:.3f}" if not np.isnan(r["ari_seeds"]) else "no seed runs"
        ic = f"IC {r['ic']:.4f}; " if not np.isnan(r["ic"]) else ""
        same = (
            f"{r['n_clusters_min']}"
            if r["n_clusters_min"] == r["n_clusters_max"]
            else f"{r['n_clusters_min']}-{r['n_clusters_max']}"
        )
        boundary = (
            f"; moving boundary between clusters {r['moving_boundary'].replace('|', ' and ')} "
            f"(ARI {r['score_boundary']:.3f} with them merged)"
            if r["call"] != "stable"
            else ""
        )
        rows.append(
            {
                **{c: r[c] for c in ("group", "param", "n_clusters", "score", "ari_seeds", "ari_subsample", "ic")},
                "key": key,
                "cluster_stability_min": r["cluster_stability_min"],
                "call": r["call"],
                "rank": r["rank"],
                "default": bool(r["default"]),
                "evidence": (
                    f"{r['n_clusters']} clusters; mean ARI between runs: {seeds}{sub} (>= {min_ari:g}); "
                    f"{ic}{same} clusters in {r['n_runs']} runs; least stable cluster: Jaccard "
                    f"{r['cluster_stability_min']:.2f} (>= {min_cluster_stability:g}){boundary}"
                ),
                "choice": r["choice"],
            }
        )
    rec = pd.DataFrame(rows, columns=cols)
    if rec.empty:
        logger.warning(
            "stability: no clustering reaches min_ari=%g and min_cluster_stability=%g; none is recommended",
            min_ari,
            min_cluster_stability,
        )
    return rec.sort_values(["group", "rank"], kind="stable").reset_index(drop=True)


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
