"""``sketch``: cluster a sketch of the cells, project every clustering to all cells
(:func:`scclust.pp.sketch`, :func:`scclust.tl.project_labels`).

The stage draws the sketch (``.obs["sketch"]`` marks its cells) and hands the run a
:class:`SketchRun`: the stages declared ``on_sketch`` (neighbors, leiden, kmeans, hclust,
stability) then run on the sketch's AnnData, and after the last of them in a row the runner calls
:meth:`SketchRun.project`, which gives every cell each clustering they made, under its usual key
(``.obs["leiden_0.4"]``, with ``.obs["leiden_0.4_confidence"]``), so every later stage (compare,
embedding, composition, qc, markers, report, ...) reads all cells as without a sketch. Outputs:
table ``sketch_clusters`` (per clustering and cluster: its share of the sketch and of all cells, the
mean confidence); ``manifest.json`` gets ``sketch`` (its size, the keys projected).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .. import pp, tl
from .._params import params_model
from ._base import Makes, Ref, Stage

logger = logging.getLogger(__name__)

#: the options of the projection the config takes (the rest are the selection's or set by the run)
_PROJECT = ("n_neighbors", "vote")

SketchParams = params_model(
    pp.sketch,
    tl.project_labels,
    name="SketchParams",
    exclude=("sketch", "keys"),
    doc="Cluster a sketch of the cells (a seeded, geometry-preserving subset) and project every clustering to all "
    "cells.",
)


@dataclass
class SketchRun:
    """The sketch of a run: the AnnData the ``on_sketch`` stages work on, and what was projected."""

    adata: Any
    #: the stage's options (a plain mapping: pickled with the checkpoint)
    params: dict
    n_obs: int
    seconds: float
    projected: list[str] = field(default_factory=list)
    table: Any = None

    def pending(self, ctx: Any) -> list[str]:
        """Clusterings made on the sketch and not yet projected."""
        return [k for k in ctx.all_clusterings() if k in self.adata.obs.columns and k not in self.projected]

    def project(self, adata: Any, ctx: Any) -> dict | None:
        """Project the pending clusterings to every cell of ``adata``, and carry over what the
        stages made on the sketch besides (:meth:`carry_over`); the manifest record, or None."""
        import pandas as pd

        from .neighbors import cluster

        keys = self.pending(ctx)
        if not keys:
            self.carry_over(adata)
            return None
        p = self.params
        t0 = time.perf_counter()
        with cluster(ctx):  # dask.address: blocks searched and voted on the workers
            table = tl.project_labels(
                adata,
                sketch=self.adata,
                keys=keys,
                use_rep=p["use_rep"],
                n_pcs=p["n_pcs"],
                random_state=p["random_state"],
                **{k: p[k] for k in _PROJECT},
            )
        self.projected += keys
        self.carry_over(adata)
        projected = table.attrs.get("projected", {})
        self.table = table if self.table is None else pd.concat([self.table, table], ignore_index=True)
        path = ctx.save_table(self.table, "sketch_clusters", index=False)
        adata.uns[p["key_added"]] = {**adata.uns.get(p["key_added"], {}), "projected": list(self.projected)}
        rare = table[(table["share_cells"] < 0.01) & (table["mean_confidence"] < 0.5)]
        for row in rare.itertuples():
            logger.warning(
                "%s cluster %s: %d cells (%.3f %%) projected with mean confidence %.2f: a small population the "
                "sketch resolves poorly; a larger sketch (sketch.fraction) or method 'geometric' keeps more of it",
                row.key,
                row.cluster,
                row.n_cells,
                100 * row.share_cells,
                row.mean_confidence,
            )
        return {
            "stage": "sketch projection",
            "seconds": round(time.perf_counter() - t0, 3),
            "keys": keys,
            "n_sketch": self.adata.n_obs,
            **{k: v for k, v in projected.items() if k in ("index", "recall", "dask")},
            "outputs": [str(path.relative_to(ctx.outdir))],
        }

    def carry_over(self, adata: Any) -> None:
        """What the ``on_sketch`` stages wrote besides labels, where it holds for all cells: ``.uns``
        entries that are not graphs (e.g. ``.uns["stability"]``: per key and cluster) and per-cluster
        ``.obs`` columns of a projected clustering (``leiden_0.6_stability``: the same value for every
        cell of a cluster), given to every cell by its projected cluster. Per-cell values of the sketch's
        cells alone (none of the stages writes one) are left in the sketch."""
        import pandas as pd

        sk = self.adata
        for name, value in sk.uns.items():
            if name in adata.uns or (isinstance(value, dict) and "connectivities_key" in value):
                continue
            adata.uns[name] = value
        for col in sk.obs.columns:
            if col in adata.obs.columns or not pd.api.types.is_numeric_dtype(sk.obs[col]):
                continue
            key = next((k for k in self.projected if col.startswith(f"{k}_")), None)
            if key is None:
                continue
            per = sk.obs.groupby(key, observed=True)[col]
            if (per.nunique(dropna=False) > 1).any():
                logger.info("sketch: .obs[%r] varies within clusters of %s; left in the sketch", col, key)
                continue
            adata.obs[col] = adata.obs[key].map(per.first()).astype(sk.obs[col].dtype)

    def summary(self) -> dict:
        """What ``manifest.json`` records under ``sketch``."""
        p = self.params
        return {
            "n_cells": int(self.adata.n_obs),
            "n_obs": int(self.n_obs),
            **{k: p[k] for k in ("method", "use_rep", "n_pcs", "random_state", "n_neighbors", "vote")},
            "projected": list(self.projected),
            "seconds": round(self.seconds, 3),
        }


def run(adata, p, ctx) -> None:
    """Draw the sketch; the ``on_sketch`` stages that follow run on it (see the module docstring)."""
    import numpy as np

    t0 = time.perf_counter()
    pp.sketch(adata, **p.model_dump(exclude=set(_PROJECT)))
    sub = adata[np.asarray(adata.obs[p.key_added], bool)].copy()
    ctx.sketch = SketchRun(adata=sub, params=p.model_dump(), n_obs=adata.n_obs, seconds=time.perf_counter() - t0)


def memory(p, sizes):
    """Peak of the larger of its two steps, on ``n`` cells and ``d`` dims:

    - the selection: two float32 copies of the rows, ``2 x n x d x 4``;
    - the projection (after the last ``on_sketch`` stage): the rows ``n x d x 4``, the sketch's
      index (``2 x s x d x 4``, ``s`` sketch cells) and, per clustering projected, an int32 label
      and a float32 confidence per cell (``8 x n``).

    The ``on_sketch`` stages after it are estimated on the sketch's ``s`` cells.
    """
    from .._memory import Estimate, cells

    n, d = sizes.n_all, sizes.dim(p.use_rep, p.n_pcs)
    s = p.n_cells if p.n_cells is not None else round(p.fraction * n)
    s = min(s, n)
    selection = (("libraries", 50e6), (f"selection: rows {cells(n)} x {d} float32, twice", 2 * n * d * 4.0))
    projection = (
        ("libraries", 50e6),
        (f"projection: rows {cells(n)} x {d} float32", n * d * 4.0),
        (f"the sketch's index ({cells(s)} cells)", 2 * s * d * 4.0),
        (f"labels + confidences of {sizes.n_clusterings} clustering(s)", 8.0 * n * sizes.n_clusterings),
    )
    parts = max(selection, projection, key=lambda ps: sum(b for _, b in ps))
    return Estimate(parts=parts, options="fewer dims (n_pcs)", sketch_cells=s)


STAGE = Stage(
    name="sketch",
    params=SketchParams,
    run=run,
    reads=(Ref("use_rep", "rep"),),
    makes=lambda p: Makes(obs_other=[p.key_added]),
    record=lambda adata, p: {
        k: adata.uns[p.key_added].get(k) for k in ("n_cells", "n_obs", "boxes") if k in adata.uns[p.key_added]
    },
    memory=memory,
    description="cluster a sketch of the cells (10M-100M cells), project every clustering to all cells",
    obsm_reads="declared",
)
