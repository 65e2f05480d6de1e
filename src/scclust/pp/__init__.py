"""Preprocessing: neighbour graphs, integration and the (re-)processing chain, with its step groups."""

from .._keys import PREPARE_OBSM, QC_COLUMNS
from ._lazy import is_lazy, read_counts, read_counts_lazy
from ._neighbors import neighbors
from ._prepare import (
    HVG,
    PCA,
    QC,
    Graph,
    Umap,
    filter_cells_genes,
    harmony,
    highly_variable_genes,
    normalize,
    prepare,
    qc_metrics,
    reprocess,
    scale_pca,
)
from ._sketch import sketch
from ._umap import umap

__all__ = [
    "HVG",
    "PCA",
    "PREPARE_OBSM",
    "QC",
    "QC_COLUMNS",
    "Graph",
    "Umap",
    "filter_cells_genes",
    "harmony",
    "highly_variable_genes",
    "is_lazy",
    "neighbors",
    "normalize",
    "prepare",
    "qc_metrics",
    "read_counts",
    "read_counts_lazy",
    "reprocess",
    "scale_pca",
    "sketch",
    "umap",
]
