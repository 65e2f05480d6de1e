"""How well a categorical label (e.g. sample) is mixed in an embedding."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .._checks import check_obs, get_rep
from .._errors import InputError
from .._params import validated


@validated
def mixing_entropy(
    adata: AnnData,
    *,
    key: str = "sample",
    use_rep: str = "X_pca_harmony",
    n_pcs: int | None = None,
    n_neighbors: int = 30,
) -> pd.Series:
    """Per-cell normalised Shannon entropy of ``key`` among each cell's ``n_neighbors`` nearest cells.

    1 means the neighbourhood holds every value of ``key`` in equal shares, 0 a single value. The
    mean over cells is a batch-mixing score (a simple relative of iLISI): compare it on an
    embedding before and after integration. Neighbours are exact (scikit-learn).

    Parameters
    ----------
    key
        ``.obs`` column whose mixing is measured (e.g. sample).
    use_rep
        Embedding the neighbours are found in.
    n_pcs
        Use its first ``n_pcs`` dimensions (all when ``None``).
    n_neighbors
        Neighbours per cell.

    Returns
    -------
    A Series indexed like ``.obs`` (nothing is written to ``adata``).
    """
    from sklearn.neighbors import NearestNeighbors

    labels = check_obs(adata, key).astype("category")
    n_cat = labels.cat.categories.size
    if n_cat < 2:
        raise InputError(f"{key!r} has a single value; mixing is undefined")
    if n_neighbors >= adata.n_obs:
        raise InputError(f"n_neighbors={n_neighbors} must be smaller than the number of cells ({adata.n_obs})")
    X = get_rep(adata, use_rep, n_pcs)
    idx = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(X).kneighbors(X, return_distance=False)[:, 1:]
    codes = labels.cat.codes.to_numpy()[idx]
    counts = np.zeros((adata.n_obs, n_cat))
    np.add.at(counts, (np.repeat(np.arange(adata.n_obs), n_neighbors), codes.ravel()), 1)
    p = counts / n_neighbors
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p > 0, p * np.log(p), 0).sum(axis=1) / np.log(n_cat)
    return pd.Series(ent, index=adata.obs_names, name=f"mixing_{key}")
