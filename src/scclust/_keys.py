"""Names of the ``.obs`` columns the clustering tools write: one function per tool, used by the
tool itself and by the pre-flight check of a run (so the two cannot drift apart)."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["PREPARE_OBSM", "QC_COLUMNS", "format_resolution", "hclust_keys", "kmeans_keys", "leiden_keys"]


def format_resolution(r: float) -> str:
    """``0.4 -> "0.4"``, ``1 -> "1.0"``: the lab's key names (``leiden_1.0``)."""
    return repr(float(r))


def leiden_keys(key_added: str, resolutions: Iterable[float]) -> list[str]:
    """``leiden_0.4``, ... (also the subclusterings: ``tcells_0.6``)."""
    return [f"{key_added}_{format_resolution(r)}" for r in resolutions]


def kmeans_keys(key_added: str, n_clusters: Iterable[int]) -> list[str]:
    """``kmeans5``, ``kmeans10``, ... (the lab's names)."""
    return [f"{key_added}{k}" for k in n_clusters]


def hclust_keys(key_added: str, n_clusters: Iterable[int] = (), heights: Iterable[float] = ()) -> list[str]:
    """``hclust_5`` per k and ``hclust_h2.5`` per height."""
    return [f"{key_added}_{k}" for k in n_clusters] + [f"{key_added}_h{h:g}" for h in heights]


#: ``.obs`` columns written by :func:`scclust.pp.qc_metrics` (and so by :func:`scclust.pp.prepare`)
QC_COLUMNS = (
    "n_genes_by_counts",
    "total_counts",
    *(f"{m}_{v}" for m in ("total_counts", "pct_counts") for v in ("mt", "ribo", "hb")),
)
#: ``.obsm`` keys written by :func:`scclust.pp.prepare`
PREPARE_OBSM = ("X_pca", "X_pca_harmony", "X_umap_harmony")
