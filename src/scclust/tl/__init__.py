"""Clustering and analysis tools."""

from ._annotate import annotate
from ._compare import ComparisonPlan, cluster_tree, compare, comparison_plan, contingency
from ._composition import Composition, composition, composition_diagnostics, proportions
from ._dendrogram import cluster_means, dendrogram
from ._hclust import hclust
from ._heatmap import ClusteredHeatmap, HeatmapInput, cluster_heatmap, heatmap_matrix
from ._kmeans import kmeans
from ._leiden import leiden
from ._markers import marker_expression, marker_table, markers, top_markers
from ._mixing import mixing_entropy
from ._project import project_labels
from ._qc import qc_summary
from ._stability import StabilityResult, stability
from ._subcluster import Selection, SubclusterReport, subcluster, transfer_subclusters

__all__ = [
    "ClusteredHeatmap",
    "ComparisonPlan",
    "Composition",
    "HeatmapInput",
    "Selection",
    "StabilityResult",
    "SubclusterReport",
    "annotate",
    "cluster_heatmap",
    "cluster_means",
    "cluster_tree",
    "compare",
    "comparison_plan",
    "composition",
    "composition_diagnostics",
    "contingency",
    "dendrogram",
    "hclust",
    "heatmap_matrix",
    "kmeans",
    "leiden",
    "marker_expression",
    "marker_table",
    "markers",
    "mixing_entropy",
    "project_labels",
    "proportions",
    "qc_summary",
    "stability",
    "subcluster",
    "top_markers",
    "transfer_subclusters",
]
