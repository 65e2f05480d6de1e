"""Preprocessing: neighbour graphs, integration and the (re-)processing chain."""

from ._neighbors import neighbors
from ._prepare import harmony, highly_variable_genes, prepare, qc_metrics, scale_pca, umap

__all__ = ["neighbors", "prepare", "qc_metrics", "highly_variable_genes", "scale_pca", "harmony", "umap"]
