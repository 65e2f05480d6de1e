"""Shared checks for plot tests: a plot must not modify the AnnData."""

from __future__ import annotations

import hashlib

import numpy as np
from scipy import sparse


def snapshot(adata) -> tuple:
    X = adata.X.data if sparse.issparse(adata.X) else np.asarray(adata.X)
    return (
        adata.obs.copy(),
        sorted(adata.uns),
        sorted(adata.obsm),
        sorted(adata.obsp),
        adata.shape,
        hashlib.sha256(np.ascontiguousarray(X).tobytes()).hexdigest(),
    )


def assert_unchanged(adata, before: tuple) -> None:
    after = snapshot(adata)
    assert after[0].equals(before[0]) and list(after[0].columns) == list(before[0].columns)
    assert after[0].dtypes.equals(before[0].dtypes)
    assert after[1:] == before[1:]
