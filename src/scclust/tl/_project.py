"""Labels of a sketch projected to every cell by its nearest sketch cells (:func:`project_labels`)."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from pydantic import Field

from .._checks import get_rep
from .._errors import InputError, MissingKeyError, choices
from .._params import validated
from .._types import KeyList, PositiveInt

logger = logging.getLogger(__name__)

__all__ = ["project_labels"]

#: queries per block (local and on Dask workers): ~10 MB of rows at 30 dims, answers ~8 MB
PROJECT_BATCH = 65_536
#: the sketch is searched exactly (faiss brute force) up to this many query x sketch pairs, by a
#: calibrated ivf index above (1,000,000 cells on a 50,000-cell sketch: 5e10 pairs)
EXACT_MAX_PAIRS = 2.5e9
#: recall of the ivf index on the sketch (measured on 1,000 sketch cells against brute force)
PROJECT_MIN_RECALL = 0.99
#: a cell whose winning label has less than this share of the vote counts as uncertain
LOW_CONFIDENCE = 0.5


@validated
def project_labels(
    adata: AnnData,
    *,
    sketch: AnnData,
    keys: KeyList | None = None,
    use_rep: str = "X_pca",
    n_pcs: PositiveInt | None = None,
    n_neighbors: Annotated[int, Field(ge=1, le=100)] = 15,
    vote: Literal["weighted", "majority"] = "weighted",
    random_state: int = 0,
) -> pd.DataFrame:
    """Give every cell the labels of its nearest sketch cells (a sketch from :func:`scclust.pp.sketch`).

    Each cell's ``n_neighbors`` nearest cells of the sketch (Euclidean, in ``use_rep``) vote for
    their label; the label with the largest vote wins (ties: the first category, for the clustering tools' labels the
    sketch's larger cluster)
    and its share of the vote is the cell's confidence. A cell of the sketch keeps its own label
    (its confidence is still its neighbours' vote for it). Cells are searched in blocks of
    :data:`PROJECT_BATCH`, against an exact index of the sketch (faiss brute force) up to
    :data:`EXACT_MAX_PAIRS` query x sketch pairs, else a calibrated ivf index
    (recall :data:`PROJECT_MIN_RECALL`). With a Dask cluster active (a run's ``dask.address``), the
    index is built here, sent to every worker once, and each block is searched and voted on a
    worker (:func:`scclust._dask.map_blocks`): the same labels.

    Memory at 10,000,000 cells, 30 dims, 11 clusterings: the float32 rows of ``use_rep`` (1.2 GB);
    the sketch's index (500,000 cells: 60 MB flat, about 70 MB ivf); the answers, one int32 label
    and one float32 confidence per cell and clustering (0.9 GB), stored as categorical codes and
    float32 columns; per block (here or on a worker) 65,536 x ``n_neighbors`` ids and weights.
    Nothing of size cells x neighbours is held whole.

    Parameters
    ----------
    adata
        All cells; the sketch's cells are among them (by name).
    sketch
        The clustered sketch (``adata[adata.obs["sketch"]].copy()`` after clustering it).
    keys
        Label columns of ``sketch`` to project; ``None``: every clustering recorded in its ``.uns``
        (by :func:`leiden`, :func:`kmeans`, :func:`hclust`).
    use_rep
        Key in ``.obsm`` of the space the nearest sketch cells are found in (``"X"`` for ``.X``).
    n_pcs
        Use the first ``n_pcs`` dimensions of ``use_rep``; all when ``None``.
    n_neighbors
        Sketch cells voting for each cell's label.
    vote
        ``"weighted"``: each neighbour's vote is ``exp(-(d / d_k)^2)``, ``d`` its distance and
        ``d_k`` the distance to the farthest of the ``n_neighbors`` (nearer cells count more);
        ``"majority"``: one vote each.
    random_state
        Seed of the ivf index (training subsample, recall sample).

    Returns
    -------
    The per-cluster table: ``key``, ``cluster``, ``n_sketch`` (its cells in the sketch),
    ``n_cells`` (all cells, after projection), ``share_sketch``, ``share_cells``,
    ``mean_confidence``, ``low_confidence`` (share of its cells whose confidence is below
    :data:`LOW_CONFIDENCE`). Written into ``adata``: ``.obs[key]`` for every key (categorical, the
    sketch's categories; the clustering tools' labels ``"0"``, ``"1"``, ... renumbered by decreasing
    size among all cells, in the sketch too, each cluster keeping its colour),
    ``.obs[f"{key}_confidence"]`` (float32), the sketch's
    ``.uns[f"{key}_colors"]`` and ``.uns`` entry that records the key (``.uns["leiden"]``, ...) with
    ``projected`` added (``n_sketch``, ``n_neighbors``, ``vote``, ``index``, ``recall``).
    """
    from .._dask import cluster_client
    from ._compare import recorded_clusterings

    if keys is None:
        keys = recorded_clusterings(sketch)
        if not keys:
            raise MissingKeyError("the sketch has no clustering recorded in .uns; cluster it first or pass keys")
    missing = [k for k in keys if k not in sketch.obs.columns]
    if missing:
        raise MissingKeyError(f"keys {missing} not in the sketch's .obs; available: {choices(sketch.obs.columns)}")
    pos = adata.obs_names.get_indexer(sketch.obs_names)
    if (pos < 0).any():
        first = sketch.obs_names[pos < 0][0]
        raise InputError(
            f"{int((pos < 0).sum())} sketch cell(s) are not in adata (first: {first!r}); "
            "the sketch must be a subset of the cells"
        )
    X = get_rep(adata, use_rep, n_pcs)
    n, n_s = X.shape[0], sketch.n_obs
    k = min(n_neighbors, n_s)
    t0 = time.perf_counter()
    cats = []
    codes = np.empty((n_s, len(keys)), np.int32)
    for j, key in enumerate(keys):
        col = sketch.obs[key]
        if not isinstance(col.dtype, pd.CategoricalDtype):
            col = col.astype("category")
        if col.isna().any():
            raise InputError(f"sketch .obs[{key!r}] has cells without a label; project a complete clustering")
        cats.append(col.cat.categories)
        codes[:, j] = col.cat.codes.to_numpy()
    n_cats = np.array([len(c) for c in cats], np.int64)
    from ..pp._knn import _prepared

    Ys = _prepared(X[pos], "euclidean")
    info: dict = {}
    kind, index = _sketch_index(Ys, k, n, random_state, info)
    del Ys
    sketch_pos = np.full(n, -1, np.int32)
    sketch_pos[pos] = np.arange(n_s, dtype=np.int32)
    starts = list(range(0, n, PROJECT_BATCH))

    def block(i: int) -> tuple:
        s = starts[i]
        return np.ascontiguousarray(X[s : s + PROJECT_BATCH], dtype=np.float32), sketch_pos[s : s + PROJECT_BATCH]

    client = cluster_client()
    if client is not None:
        from .._dask import map_blocks
        from ..pp._knn import _serialized

        shared = (_serialized("faiss" if kind == "ivf" else "flat", index), kind, codes, n_cats, k, vote)
        results = map_blocks(_project_block, shared, block, len(starts), what="label projection")
        info["dask"] = {"workers": len(client.scheduler_info().get("workers", {})), "blocks": len(starts)}
    else:
        shared = (index, kind, codes, n_cats, k, vote)
        results = [_project_block(shared, *block(i)) for i in range(len(starts))]
    labels = np.empty((n, len(keys)), np.int32)
    conf = np.empty((n, len(keys)), np.float32)
    for s, (lab, cf) in zip(starts, results, strict=True):
        labels[s : s + lab.shape[0]], conf[s : s + lab.shape[0]] = lab, cf
    del results
    seconds = time.perf_counter() - t0
    projected = {
        "n_sketch": int(n_s),
        "n_obs": int(n),
        "n_neighbors": int(k),
        "vote": vote,
        "use_rep": use_rep,
        **({"n_pcs": n_pcs} if n_pcs is not None else {}),
        "index": kind,
        **{key: info[key] for key in ("recall", "nlist", "nprobe", "dask") if key in info},
    }
    rows = []
    for j, key in enumerate(keys):
        n_all = np.bincount(labels[:, j], minlength=n_cats[j])
        renumber = _by_size(cats[j], n_all)
        if renumber is not None:  # "0" the largest of all cells, as every clustering is numbered
            labels[:, j], codes[:, j] = renumber[labels[:, j]], renumber[codes[:, j]]
            n_all = np.bincount(labels[:, j], minlength=n_cats[j])
            colors = sketch.uns.get(f"{key}_colors")
            sketch.obs[key] = pd.Categorical.from_codes(codes[:, j], categories=cats[j])
            if colors is not None and len(colors) == n_cats[j]:
                moved = np.empty(n_cats[j], object)
                moved[renumber] = list(colors)
                sketch.uns[f"{key}_colors"] = list(moved)
        adata.obs[key] = pd.Categorical.from_codes(labels[:, j], categories=cats[j])
        adata.obs[f"{key}_confidence"] = conf[:, j]
        colors = sketch.uns.get(f"{key}_colors")
        if colors is not None:
            adata.uns[f"{key}_colors"] = list(colors)
        n_sk = np.bincount(codes[:, j], minlength=n_cats[j])
        conf_sum = np.bincount(labels[:, j], weights=conf[:, j], minlength=n_cats[j])
        low = np.bincount(labels[:, j], weights=conf[:, j] < LOW_CONFIDENCE, minlength=n_cats[j])
        for c, name in enumerate(cats[j]):
            rows.append(
                {
                    "key": key,
                    "cluster": str(name),
                    "n_sketch": int(n_sk[c]),
                    "n_cells": int(n_all[c]),
                    "share_sketch": n_sk[c] / n_s,
                    "share_cells": n_all[c] / n,
                    "mean_confidence": conf_sum[c] / max(n_all[c], 1),
                    "low_confidence": low[c] / max(n_all[c], 1),
                }
            )
        logger.info(
            "%s: projected from %d sketch cells to %d cells (mean confidence %.3f; %.2f %% of cells below %.1f)",
            key,
            n_s,
            n,
            float(conf[:, j].mean()),
            100 * float((conf[:, j] < LOW_CONFIDENCE).mean()),
            LOW_CONFIDENCE,
        )
    for name, value in sketch.uns.items():  # the entries that record the keys (params, summaries)
        recorded = value.get("clusterings") if isinstance(value, dict) else None
        if isinstance(recorded, dict) and any(key in recorded for key in keys):
            adata.uns[name] = {**value, "projected": projected}
    logger.info("labels of %d clustering(s) projected in %.1f s (%s index of the sketch)", len(keys), seconds, kind)
    table = pd.DataFrame(
        rows,
        columns=[
            "key",
            "cluster",
            "n_sketch",
            "n_cells",
            "share_sketch",
            "share_cells",
            "mean_confidence",
            "low_confidence",
        ],
    )
    table.attrs["projected"] = projected
    return table


def _by_size(categories: pd.Index, counts: np.ndarray) -> np.ndarray | None:
    """New code of each old code so that labels ``"0"``, ``"1"``, ... go by decreasing size among all
    cells (ties: the sketch's order); ``None`` when the order holds already or the labels are not the
    clustering tools' numbers."""
    if [str(c) for c in categories] != [str(i) for i in range(len(categories))]:
        return None
    order = np.argsort(-counts, kind="stable")  # old codes, largest first
    if (order == np.arange(len(order))).all():
        return None
    new = np.empty(len(order), np.int32)
    new[order] = np.arange(len(order), dtype=np.int32)
    return new


def _sketch_index(Ys: np.ndarray, k: int, n_query: int, random_state: int, info: dict):
    """``("flat", IndexFlatL2)`` for a small search, else ``("ivf", calibrated index)``."""
    import faiss

    from ..pp._knn import _ivf_calibrate

    if Ys.shape[0] * n_query <= EXACT_MAX_PAIRS or Ys.shape[0] < 1000:
        index = faiss.IndexFlatL2(Ys.shape[1])
        index.add(Ys)
        info.update(recall=1.0)
        return "flat", index
    index, _ = _ivf_calibrate(Ys, k, random_state, PROJECT_MIN_RECALL, info)
    return "ivf", index


def _project_block(shared: tuple, Q: np.ndarray, sketch_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and confidences of the cells ``Q`` (one block; here or on a worker): their nearest
    sketch cells' vote (see :func:`project_labels`); ``sketch_pos`` >= 0 marks sketch cells, which
    keep their own label."""
    from ..pp._knn import _flat_block, _worker_index

    index, kind, codes, n_cats, k, vote = shared
    if isinstance(index, tuple):  # on a worker: the serialized index, deserialized once per worker
        index = _worker_index(index)[1]
    if kind == "flat":
        ids, sq = _flat_block(index, Q, k)
    else:
        sq, ids = index.search(Q, k)
    missing = ids < 0  # fewer than k found in the probed lists (not seen at the calibrated recall)
    ids = np.where(missing, 0, ids)
    b = Q.shape[0]
    if vote == "majority":
        w = np.ones(ids.shape, np.float64)
    else:
        d = np.sqrt(np.maximum(sq.astype(np.float64), 0))
        scale = d[:, -1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(scale > 0, np.exp(-((d / scale) ** 2)), 1.0)
    w[missing] = 0
    total = np.maximum(w.sum(axis=1), 1e-300)
    own = sketch_pos >= 0
    labels = np.empty((b, codes.shape[1]), np.int32)
    conf = np.empty((b, codes.shape[1]), np.float32)
    rows = np.repeat(np.arange(b), ids.shape[1])
    for j in range(codes.shape[1]):
        c = int(n_cats[j])
        lab = codes[ids, j]
        votes = np.bincount((rows * c + lab.ravel()), weights=w.ravel(), minlength=b * c).reshape(b, c)
        win = votes.argmax(axis=1)
        win[own] = codes[sketch_pos[own], j]
        labels[:, j] = win
        conf[:, j] = votes[np.arange(b), win] / total
    return labels, conf
