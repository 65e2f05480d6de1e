"""``stability``: which clusterings and clusters are stable under other seeds and subsamples
(:func:`scclust.tl.stability`, :func:`scclust.pl.stability`).

``StabilityParams`` is generated from :func:`scclust.tl.stability`'s signature and docstring
(plus the stage's ``series``), so the stage runs ``tl.stability(adata, **p.model_dump())``.
:func:`run_stability` takes the clusterings this run made from ``ctx.clusterings`` when ``keys``
is not given, assesses subclusterings on their saved subset, and writes tables and figures.
Nothing is applied to the labels unless ``medoid_labels`` says so.

Outputs (``ctx.save_table`` / ``ctx.save_figure`` names):

- tables ``stability_recommendation`` (the stable keys and their evidence: the report's opening),
  ``stability_summary`` (one row per key), ``stability_clusters`` (one row per cluster),
  ``stability_n_clusters`` (clusters of every run); per subclustering the same with a
  ``stability_<name>_`` prefix;
- figures ``stability_<group>`` (agreement vs resolution / k with the number of clusters),
  ``stability_clustree_<group>`` (cluster tree, nodes coloured by stability; groups with two keys
  or more), ``stability_umap_<key>`` (per-cluster stability on the embedding, each recommended
  key, or the best-scoring one when none is), ``stability_runs_<key>`` (cells x runs, same keys).

With ``dask.address`` set in the config (and ``scheduler`` not ``processes``) the runs go to that
Dask cluster's workers.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from pydantic import Field

from .. import tl
from .._params import params_model
from .._types import KeyList
from ._base import Ref, Stage

logger = logging.getLogger(__name__)

StabilityParams = params_model(
    tl.stability,
    name="StabilityParams",
    fields={
        "series": (
            KeyList | None,
            Field(
                None,
                description="with keys null: only these series of this run (their "
                "key_added, e.g. leiden), whatever their resolutions / k; null: every series",
            ),
        ),
    },
)


def run(adata, p: StabilityParams, ctx: Any) -> None:
    """The stage: assess, write tables and figures (see the module docstring)."""
    import anndata as ad

    from .._io import write_h5ad

    params = p.model_dump(exclude={"series"})
    subsets: dict[str, list[str]] = {}
    if p.keys is None:
        keys = []
        for group, gkeys in ctx.clusterings.items():
            if p.series is not None and group not in p.series and group.removeprefix("subcluster_") not in p.series:
                continue
            if group.startswith("subcluster_"):
                subsets[group.removeprefix("subcluster_")] = gkeys
            else:
                keys += gkeys
        params["keys"] = keys or None
    with contextlib.ExitStack() as stack:
        dask_cfg = getattr(getattr(ctx, "cfg", None), "dask", None)
        if getattr(dask_cfg, "address", None) and p.scheduler != "processes":
            from .._dask import dask_client

            stack.enter_context(dask_client(**dask_cfg.model_dump()))  # runs go to that cluster's workers
        if params["keys"] is not None or not subsets:
            res = tl.stability(adata, **params)
            _outputs(adata, res, ctx, prefix="stability", basis=_basis(adata, ctx))
        for name in subsets:
            path = ctx.outdir / "subclusters" / f"{name}.h5ad"
            if not path.is_file():
                logger.warning("stability: subclustering %r has no saved subset (%s); skipped", name, path)
                continue
            sub = ad.read_h5ad(path)
            res = tl.stability(sub, **{**params, "keys": list(sub.uns["subcluster"]["keys"])})
            _outputs(sub, res, ctx, prefix=f"stability_{name}", basis=_basis(sub, ctx))
            write_h5ad(sub, path)  # the subset keeps its stability columns


def _basis(adata, ctx) -> str | None:
    embedding = getattr(ctx.cfg, "embedding", None) or [None]
    cfg_basis = getattr(embedding[0], "basis", None)
    if cfg_basis in adata.obsm:
        return cfg_basis
    umaps = [k for k in adata.obsm if "umap" in k.lower()]
    return umaps[0] if umaps else None


def _outputs(adata, res, ctx, *, prefix: str, basis: str | None) -> None:
    from .. import pl

    ctx.save_table(res.recommendation, f"{prefix}_recommendation", index=False)
    ctx.save_table(res.summary, f"{prefix}_summary")
    ctx.save_table(res.clusters, f"{prefix}_clusters", index=False)
    ctx.save_table(res.n_clusters, f"{prefix}_n_clusters")
    s = res.summary
    for group in dict.fromkeys(s["group"]):
        ctx.save_figure(pl.stability(res, group=group), f"{prefix}_{group}")
        gkeys = list(s[s["group"] == group].sort_values("param").index)
        if len(gkeys) >= 2:
            ctx.save_figure(pl.clustree(adata, keys=gkeys, stability=res), f"{prefix}_clustree_{group}")
    # the UMAP and runs figures: the recommended keys, the default first (the best-scoring key when none is)
    rec = res.recommendation.sort_values(["default", "rank"], ascending=[False, True], kind="stable")
    shown = list(rec["key"]) or [s["score"].idxmax()]
    for key in shown:
        if basis is not None:
            ctx.save_figure(
                pl.stability_embedding(adata, key=key, basis=basis, key_added=res.params.get("key_added", "stability")),
                f"{prefix}_umap_{key}",
            )
        ctx.save_figure(pl.stability_runs(res, key=key), f"{prefix}_runs_{key}")


def memory(p, sizes):
    """Peak of the largest run, on ``m = min(n, max_cells_per_run)`` cells with ``k`` neighbours
    (from the largest graph): its kNN graph rebuilt for a subsample (as :mod:`~scclust.stages.neighbors`
    estimates it), Leiden on it (``80 B`` per edge), and, with worker processes (``n_jobs``,
    ``scheduler: processes``), ``300 MB`` plus the graphs sent (``24 x m x k``) each. Measured
    at 20,000 cells (k = 20, 2 workers): 68 MiB added in this process (estimate 0.20 GB here, plus
    0.62 GB for the workers, whose memory the manifest does not measure)."""
    from .._memory import Estimate, cells
    from .._worker import available_cpus
    from ..pp._knn import EXACT_MAX_CELLS
    from ..pp._neighbors import BYTES_PER_NEIGHBOUR, SEARCH_BASE_BYTES

    n = sizes.n_obs
    m = min(n, p.max_cells_per_run)
    k = max(2, round(max(sizes.graphs.values(), default=2 * n * 14) / (2 * max(n, 1))) + 1)
    d = max(sizes.dims.values(), default=50)
    workers = 0 if p.scheduler == "dask" else (available_cpus() if p.n_jobs == -1 else p.n_jobs)
    parts = [
        ("libraries and search buffers", SEARCH_BASE_BYTES["exact" if m <= EXACT_MAX_CELLS else "approximate"]),
        (f"a run's kNN graph of {cells(m)} cells x {k}", 2 * m * d * 4.0 + BYTES_PER_NEIGHBOUR * m * k),
        ("Leiden on it", 80.0 * 2 * m * k),
    ]
    if workers > 1:
        parts.append((f"{workers} worker process(es), 300 MB + the graphs each", workers * (300e6 + 24.0 * m * k)))
    return Estimate(
        parts=tuple(parts),
        options="a lower max_cells_per_run" + (", n_jobs: 1" if workers > 1 else ""),
    )


STAGE = Stage(
    name="stability",
    params=StabilityParams,
    run=run,
    reads=(Ref("keys", "obs"),),
    on_sketch=True,
    memory=memory,
    description="stability of every clustering under other seeds and subsamples; stable resolutions / k recommended",
)
