"""Preprocessing: neighbour graphs, integration and the (re-)processing chain."""

from .._keys import PREPARE_OBSM, QC_COLUMNS
from ._lazy import is_lazy, read_counts, read_counts_lazy
from ._neighbors import neighbors
from ._prepare import filter_cells_genes, harmony, highly_variable_genes, prepare, qc_metrics, scale_pca
from ._umap import background_umap, umap

__all__ = ["PREPARE_OBSM", "QC_COLUMNS", "background_umap", "filter_cells_genes", "harmony", "highly_variable_genes", "is_lazy", "neighbors", "prepare", "qc_metrics", "read_counts", "read_counts_lazy", "scale_pca", "umap"]
