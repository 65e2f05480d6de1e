"""Cluster labels: one numbering rule for every method."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from anndata import AnnData
from natsort import natsorted

logger = logging.getLogger(__name__)


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber integer cluster ids ``0..K-1`` by decreasing size; ties by first appearance.

    Sizes and first appearances do not depend on the arbitrary ids an algorithm returns, so the
    same partition always gets the same labels, and neighbouring resolutions read alike
    (cluster 0 is the largest).
    """
    labels = np.asarray(labels)
    uniq, first, inverse, counts = np.unique(labels, return_index=True, return_inverse=True, return_counts=True)
    order = np.lexsort((first, -counts))  # by size desc, then first cell
    new_id = np.empty(uniq.size, dtype=np.int64)
    new_id[order] = np.arange(uniq.size)
    return new_id[inverse.ravel()]


def store_labels(adata: AnnData, key: str, labels: np.ndarray) -> int:
    """Write ``labels`` (any ids, relabelled by size) as a natsorted categorical; return the count.

    An existing column ``key`` is overwritten (as scanpy does: notebook cells are rerun), with an
    INFO log line naming it."""
    if key in adata.obs.columns:
        logger.info("overwriting the existing .obs[%r] with new cluster labels", key)
    ids = relabel_by_size(labels).astype(str)
    cats = natsorted(np.unique(ids))
    adata.obs[key] = pd.Categorical(ids, categories=cats)
    return len(cats)
