"""Input checks shared by the stages: each raises a :mod:`scclust._errors` error that names the
problem and the valid choices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from ._errors import InputError, MissingKeyError, choices, near_matches


def get_rep(adata: AnnData, use_rep: str, n_pcs: int | None = None) -> np.ndarray:
    """Return ``adata.obsm[use_rep][:, :n_pcs]`` as a C-contiguous float array, checked.

    ``use_rep="X"`` takes ``adata.X``. Raises when the key is absent, ``n_pcs`` exceeds the number
    of dimensions, or the values are not finite.
    """
    if use_rep == "X":
        X = adata.X
        X = X.toarray() if sparse.issparse(X) else np.asarray(X)
    else:
        if use_rep not in adata.obsm:
            close = near_matches([use_rep], adata.obsm.keys(), cutoff=0.6, same_numbers=False).get(use_rep)
            hint = f": did you mean {close!r}?" if close else ""
            raise MissingKeyError(
                f"use_rep {use_rep!r} not in .obsm{hint} (available: {choices(adata.obsm.keys())}, or X: the "
                "expression matrix)"
            )
        X = adata.obsm[use_rep]
        X = X.to_numpy() if isinstance(X, pd.DataFrame) else np.asarray(X)
    if X.ndim != 2:
        raise InputError(f"{use_rep!r} must be a 2-D cells x dims matrix; got shape {X.shape}")
    if n_pcs is not None:
        if n_pcs < 1:
            raise InputError(f"n_pcs must be >= 1; got {n_pcs}")
        if n_pcs > X.shape[1]:
            raise InputError(f"n_pcs={n_pcs} is larger than {use_rep!r}, which has {X.shape[1]} dims")
        X = X[:, :n_pcs]
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    bad = ~np.isfinite(X)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise InputError(
            f"{use_rep!r} has NaN or inf values in {rows.size} cell(s) (first: {adata.obs_names[rows[0]]!r}); "
            "remove or fix those cells first"
        )
    return np.ascontiguousarray(X)


def check_obs(adata: AnnData, key: str, *, what: str = "key") -> pd.Series:
    """Return ``adata.obs[key]`` or raise naming the available columns."""
    if key not in adata.obs.columns:
        close = near_matches([key], adata.obs.columns, cutoff=0.6, same_numbers=False).get(key)
        hint = f": did you mean {close!r}?" if close else ""
        raise MissingKeyError(f"{what} {key!r} not in .obs{hint} (available: {choices(adata.obs.columns)})")
    return adata.obs[key]


def check_n_obs(adata: AnnData, minimum: int, *, what: str = "this step") -> None:
    """Raise when there are fewer than ``minimum`` cells."""
    if adata.n_obs < minimum:
        raise InputError(f"too few cells for {what}: {adata.n_obs} (need at least {minimum})")


def check_genes(var_names: Sequence[str] | pd.Index, genes: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``genes`` into (present, missing) with respect to ``var_names``, keeping order."""
    idx = pd.Index(var_names)
    present = [g for g in genes if g in idx]
    missing = [g for g in genes if g not in idx]
    return present, missing


def distinct_rows(X: np.ndarray) -> int:
    """Number of distinct rows of ``X`` (through a fixed random projection: O(n) memory, one sort)."""
    if X.shape[0] == 0:
        return 0
    proj = np.random.default_rng(0).standard_normal(X.shape[1])
    return int(np.unique(np.asarray(X, dtype=np.float64) @ proj).size)


def use_raw_for(adata: AnnData, use_raw: bool | None) -> bool:
    """Whether genes are read from ``.raw``: ``use_raw``, or (``None``) when ``.raw`` is set."""
    if use_raw and adata.raw is None:
        raise InputError("use_raw=True but adata.raw is not set; use use_raw=False or None")
    return adata.raw is not None if use_raw is None else bool(use_raw)


def gene_source(adata: AnnData, use_raw: bool | None) -> str:
    """Where genes are read from, for messages."""
    return ".raw.var_names" if use_raw_for(adata, use_raw) else ".var_names"


def check_groupby(adata: AnnData, groupby: str) -> pd.Series:
    """``adata.obs[groupby]`` as a categorical (a clustering); raise for a missing or float column."""
    values = check_obs(adata, groupby, what="groupby")
    if not isinstance(values.dtype, pd.CategoricalDtype):
        if pd.api.types.is_float_dtype(values):
            raise InputError(f"groupby {groupby!r} is a numeric column; give a categorical clustering")
        values = values.astype("category")
    return values
