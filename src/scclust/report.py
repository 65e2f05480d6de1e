"""The HTML report: one self-contained page with every figure and table of a run.

The page opens from disk without a server: PNG (or SVG) figures are embedded as base64 data URIs,
CSV tables are rendered as HTML (long ones truncated, with a link to the CSV), and the resolved
config, package versions, per-stage timings and the flags raised by the diagnostics are included.
"""

from __future__ import annotations

import base64
import html
import logging
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ._io import write_text

logger = logging.getLogger(__name__)

__all__ = ["DOCS_URL", "OUTPUTS", "STAGES", "Output", "describe", "write_report"]

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#0072B2;color:white;padding:14px 24px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;font-size:13px;opacity:.9}
nav{padding:8px 24px;background:#eef3f8;font-size:13px;border-bottom:1px solid #d0dbe6}nav a{margin-right:12px}
main{padding:8px 24px 40px;max-width:1500px}
section{background:white;border:1px solid #e2e2e2;border-radius:6px;margin:16px 0;padding:8px 16px}
h2{font-size:18px;border-bottom:1px solid #eee;padding-bottom:4px}h3{font-size:14px;margin:18px 0 6px}
p.lead{font-size:13px;color:#444;margin:4px 0 10px}a.docs{font-size:12px;font-weight:normal;margin-left:10px}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(620px,1fr));gap:14px}
figure{margin:6px 0 14px}figure.wide{grid-column:1/-1}
figure img{width:100%;max-height:560px;object-fit:contain;object-position:left top;border:1px solid #eee;cursor:zoom-in}
figure img.full{max-height:none;cursor:zoom-out}
figcaption{font-size:12.5px;color:#444;margin-top:4px}figcaption code{font-size:11.5px;color:#777}
table{border-collapse:collapse;font-size:12px;margin:6px 0}
th,td{border:1px solid #ddd;padding:2px 6px;text-align:right}th{background:#f3f3f3}
tr.flag td{background:#fde2d2}
.tablewrap{overflow-x:auto;max-width:100%}
dl.glossary{font-size:12px;margin:6px 0 4px;display:grid;grid-template-columns:max-content 1fr;gap:2px 12px}
dl.glossary dt{font-family:monospace;color:#0072B2}dl.glossary dd{margin:0;color:#444}
.note{font-size:12px;color:#666}
.flags{background:#fff4e5;border-color:#E69F00}.ok{background:#eaf6ee;border-color:#009E73}
pre{background:#f6f6f6;padding:8px;font-size:12px;overflow-x:auto}
ul.files{font-size:12px;columns:2}
details{margin:6px 0}summary{cursor:pointer;font-size:13px;color:#0072B2}
"""

#: the documentation: every section of the report links to its entry in the outputs reference
DOCS_URL = "https://scclust.readthedocs.io/en/latest/"
#: the page of the documentation that describes every output (its anchors: ``out-<stage>``)
OUTPUTS_PAGE = "reference/outputs.html"


@dataclass(frozen=True)
class Stage:
    """How the report presents one stage's section."""

    title: str
    lead: str


@dataclass(frozen=True)
class Output:
    """One kind of file a stage writes: how the report (and the outputs reference) describe it.

    ``pattern`` is a regular expression matched against the whole file stem; its named groups fill
    ``title`` and ``caption``. ``columns`` explains a table's columns (keys are column names or
    regular expressions matched against the whole name).
    """

    stage: str
    kind: str  # "figure" or "table"
    pattern: str
    title: str
    caption: str
    columns: tuple[tuple[str, str], ...] = ()

    def match(self, stem: str) -> dict[str, str] | None:
        m = re.fullmatch(self.pattern, stem)
        return None if m is None else {k: v or "" for k, v in m.groupdict().items()}


#: section titles and one-line introductions, by stage (in run order)
STAGES: dict[str, Stage] = {
    "prepare": Stage(
        "Preparing the raw counts",
        "QC filters, normalization, highly variable genes, PCA, Harmony and the UMAP made from raw counts.",
    ),
    "sketch": Stage(
        "Clustering a sketch of the cells",
        "The clusterings were made on a sketch of the cells and projected to every cell by its nearest sketch "
        "cells: how much of each cluster the sketch held, and how confidently its cells were projected.",
    ),
    "neighbors": Stage("Neighbour graphs", "The kNN (or SNN) graphs the graph-based clusterings run on."),
    "leiden": Stage(
        "Leiden clusterings", "One clustering per resolution: higher resolutions give more, smaller clusters."
    ),
    "kmeans": Stage("k-means clusterings", "One clustering per k, on the embedding."),
    "hclust": Stage("Hierarchical clusterings", "One tree, cut at each k or height."),
    "compare": Stage(
        "How the clusterings agree",
        "Agreement between every pair of clusterings (and the reference labels), and where cells go "
        "from one resolution or k to the next.",
    ),
    "relationships": Stage(
        "Cluster relationships and markers",
        "Which clusters resemble each other, and the marker genes that tell them apart.",
    ),
    "embedding": Stage("Clusterings and genes on the embedding", "Every clustering and the named genes on the UMAP."),
    "composition": Stage("Cluster composition", "Which samples and conditions make up each cluster."),
    "qc": Stage("QC metrics per cluster", "Whether a cluster stands out in genes, counts or mitochondrial share."),
    "heatmap": Stage("Clustered heatmaps", "Rows and columns ordered by their clustering, with bootstrap support."),
    "subcluster": Stage(
        "Subclusterings",
        "Selected cells re-processed and clustered again, and how the new labels map onto the parent's clusters.",
    ),
    "stability": Stage(
        "Stability of the clusterings",
        "Every clustering rerun with other seeds and on subsamples of the cells: how much the labels stay the same.",
    ),
    "markers": Stage(
        "What defines each cluster",
        "Each cluster against the rest of the cells: its best marker genes (Wilcoxon rank-sum, fold change, "
        "fraction of cells expressing inside and outside, AUROC); a cluster with no marker passing the filters is "
        "flagged as a likely over-split.",
    ),
    "annotate": Stage(
        "Cell types from marker sets",
        "Each cluster named after the marker gene set it expresses most specifically, or unassigned.",
    ),
    "write_outputs": Stage(
        "Cluster labels", "Every clustering of the run, one column per clustering, one row per cell."
    ),
}

_ARI = "adjusted Rand index: 1 = identical partitions, 0 = agreement expected by chance"
_CLUSTER = "(first column) the cluster: labels are numbered by decreasing size"

#: every kind of figure and table a stage writes; the first match of a stage (then of any stage) wins
OUTPUTS: tuple[Output, ...] = (
    # prepare
    Output(
        "prepare",
        "figure",
        r"prepare_pca_variance",
        "Variance explained by each principal component",
        "The elbow plot: the dashed line marks graph.n_pcs, the components the graph uses; components past "
        "the elbow carry little beyond noise.",
    ),
    Output(
        "prepare",
        "figure",
        r"prepare_hvg",
        "Highly variable genes",
        "Normalised dispersion against mean expression of every gene; the highlighted genes were selected for PCA.",
    ),
    Output(
        "prepare",
        "table",
        r"prepare_qc_filtered",
        "Cells removed by the QC filters, per batch",
        "One row per batch (or one row 'all').",
        (
            ("batch", "the batch ('all' without a batch column)"),
            ("n_cells", "cells before filtering"),
            ("removed_min_genes", "cells with fewer detected genes than qc.min_genes"),
            ("removed_max_genes", "cells with more detected genes than qc.max_genes"),
            (
                "removed_max_pct_mt",
                "cells with a higher mitochondrial percentage than qc.max_pct_mt (a cell failing "
                "several filters counts under each)",
            ),
            ("removed", "cells removed"),
            ("kept", "cells kept"),
        ),
    ),
    Output(
        "prepare",
        "table",
        r"prepare_hvg",
        "Gene statistics of the highly variable gene selection",
        "One row per gene.",
        (
            ("gene", "the gene"),
            ("means", "mean log-normalized expression"),
            ("dispersions_norm", "dispersion (variance / mean) normalised within bins of mean expression"),
            ("highly_variable", "selected for PCA"),
        ),
    ),
    # sketch
    Output(
        "sketch",
        "table",
        r"sketch_clusters",
        "Clusters of the sketch, projected to every cell",
        "One row per clustering and cluster. A small population survives the sketch when its share of the "
        "cells is close to its share of the sketch and its mean confidence is high.",
        (
            ("key", "the clustering (.obs column)"),
            ("cluster", "the cluster"),
            ("n_sketch", "its cells in the sketch"),
            ("n_cells", "its cells among all cells, after projection"),
            ("share_sketch", "n_sketch / cells in the sketch (its geometric part gives rare populations more)"),
            ("share_cells", "n_cells / all cells"),
            ("mean_confidence", "mean over its cells of the share of the nearest sketch cells' vote its label got"),
            ("low_confidence", "share of its cells whose confidence is below 0.5"),
        ),
    ),
    # neighbors
    Output(
        "neighbors",
        "figure",
        r"graph_(?P<key>.+)",
        "Graph {key}: adjacency of the first cells",
        "The connectivities among the first cells (figures.graph_block), in cluster order; dark squares on "
        "the diagonal are groups of cells connected mostly among themselves.",
    ),
    # clustering summaries
    Output(
        "leiden",
        "table",
        r"(?P<key>.+)_summary",
        "Leiden summary ({key})",
        "One row per resolution.",
        (
            ("key", "the .obs column of the labels"),
            ("resolution", "the resolution"),
            ("n_clusters", "number of clusters"),
            ("modularity", "modularity of the partition on the graph (higher: denser within clusters than expected)"),
        ),
    ),
    Output(
        "kmeans",
        "table",
        r"(?P<key>.+)_summary",
        "k-means summary ({key})",
        "One row per k.",
        (
            ("key", "the .obs column of the labels"),
            ("n_clusters", "number of clusters"),
            (
                "inertia",
                "within-cluster sum of squares of the best start (lower: tighter clusters; always falls with k)",
            ),
            ("n_iter", "iterations of the best start"),
        ),
    ),
    Output(
        "hclust",
        "table",
        r"(?P<key>.+)_summary",
        "Hierarchical clustering summary ({key})",
        "One row per cut.",
        (
            ("key", "the .obs column of the labels"),
            ("n_clusters", "number of clusters obtained"),
            ("k", "the k the tree was cut at"),
            ("height", "the height the tree was cut at"),
        ),
    ),
    # compare
    Output(
        "compare",
        "figure",
        r"compare",
        "Agreement between clusterings",
        "ARI (left) and NMI (right) between every pair of clusterings and the reference: 1 = the same "
        "partition, 0 = no more agreement than chance. Blocks of high values are clusterings that split the "
        "cells alike.",
    ),
    Output(
        "compare",
        "figure",
        r"clustree_(?P<group>.+)",
        "Clustering tree of the {group} series",
        "One row of nodes per resolution or k (node size: cells); an edge shows the cells a cluster passes to "
        "a cluster of the next row (width: cells; opacity: in_prop, the share of the child that comes from that "
        "parent). A child fed by two parents is a sign of over-clustering.",
    ),
    Output(
        "compare",
        "table",
        r"ari",
        "Adjusted Rand index between clusterings",
        "A square, symmetric matrix.",
        (("(every column)", _ARI),),
    ),
    Output(
        "compare",
        "table",
        r"nmi",
        "Normalised mutual information between clusterings",
        "A square, symmetric matrix.",
        (("(every column)", "normalised mutual information: 1 = identical partitions, 0 = independent"),),
    ),
    Output(
        "compare",
        "table",
        r"compare_summary",
        "Clusterings compared",
        "One row per clustering.",
        (
            ("clustering", "the .obs column"),
            ("n_clusters", "number of clusters"),
            ("ari_vs_.+", "ARI with the reference labels (compare.reference)"),
            ("nmi_vs_.+", "NMI with the reference labels"),
        ),
    ),
    Output(
        "compare",
        "table",
        r"contingency_(?P<a>.+)_vs_(?P<b>.+)",
        "Cells shared by {a} and {b}",
        "Rows: clusters of {a}; columns: clusters (or labels) of {b}; each entry counts the cells in both.",
        (("(every column)", "cells in the row's and the column's cluster"),),
    ),
    Output(
        "compare",
        "table",
        r"clustree_(?P<group>.+)",
        "Edges of the clustering tree of the {group} series",
        "One row per edge between clusters of consecutive resolutions or k.",
        (
            ("from_key / to_key", "the parent and child clusterings"),
            ("from_cluster / to_cluster", "the parent and child clusters"),
            ("from_size / to_size", "cells in the parent and in the child"),
            ("n_cells", "cells they share"),
            ("in_prop", "n_cells / to_size: the share of the child from this parent"),
            ("out_prop", "n_cells / from_size: the share of the parent going to this child"),
        ),
    ),
    # relationships
    Output(
        "relationships",
        "figure",
        r"dendrogram_(?P<g>.+)",
        "Cluster dendrogram of {g}",
        "Clusters joined by the correlation of their mean embedding (relationships.use_rep); clusters that "
        "join low are alike.",
    ),
    Output(
        "relationships",
        "figure",
        r"dotplot_(?P<g>.+)",
        "Marker genes per cluster of {g}",
        "Dot size: fraction of the cluster's cells expressing the gene; colour: mean expression in those "
        "cells; clusters in dendrogram order.",
    ),
    Output(
        "relationships",
        "table",
        r"cluster_means_(?P<g>.+)",
        "Mean expression per cluster of {g}",
        "One row per cluster, in dendrogram order; one column per gene.",
        (("(first column)", _CLUSTER), ("(every gene)", "mean expression in the cluster (from .raw when present)")),
    ),
    # embedding
    Output(
        "embedding",
        "figure",
        r"(?P<basis>.+)_genes",
        "Genes on the {basis} embedding",
        "Each panel colours the cells by a gene's expression (from .raw when present); darker = higher.",
    ),
    Output(
        "embedding",
        "figure",
        r"(?P<basis>.+?)_(?P<group>[^_]+|subcluster_.+|selected)",
        "The {group} clusterings on the {basis} embedding",
        "One panel per clustering, labels on the clusters; a cluster that persists from one resolution or k "
        "to the next keeps its colour.",
    ),
    # composition
    Output(
        "composition",
        "figure",
        r"composition_(?P<g>.+)_by_(?P<b>.+)",
        "{g} broken down by {b}",
        "One stacked bar per {g} value: the share of its cells in each {b}.",
    ),
    Output(
        "composition",
        "table",
        r"composition_diagnostics_(?P<g>.+)",
        "Clusters of {g} dominated by one sample",
        "One row per cluster; flagged rows are highlighted.",
        (
            ("(first column)", _CLUSTER),
            ("n_cells", "cells in the cluster"),
            ("n_samples", "samples with at least one cell in it"),
            ("entropy", "evenness of its sample shares: 1 = every sample in equal shares, 0 = one sample"),
            ("top_sample", "the sample with most of its cells"),
            ("top_share", "that sample's share of the cluster"),
            ("expected_share", "that sample's share of all cells"),
            ("enrichment", "top_share / expected_share"),
            ("p_adj", "binomial test of top_share against expected_share, Bonferroni-adjusted"),
            ("flag_one_sample", "top_share above composition.max_share and p_adj below composition.alpha"),
        ),
    ),
    Output(
        "composition",
        "table",
        r"composition_(?P<g>.+)_by_(?P<b>.+)",
        "Cells of {g} per {b}",
        "One row per pair of values (pairs without cells included).",
        (
            ("(first two columns)", "the pair of values"),
            ("count", "cells with both"),
            ("fraction_within_.+", "count divided by the cells of that column's value"),
        ),
    ),
    # qc
    Output(
        "qc",
        "figure",
        r"qc_violin_(?P<g>.+)",
        "QC metrics per cluster of {g}",
        "Violins of each QC metric per cluster; the dashed lines are the per-cell bounds (median +- qc.n_mads "
        "MADs); flagged clusters are marked.",
    ),
    Output(
        "qc",
        "table",
        r"qc_(?P<g>.+)",
        "QC medians per cluster of {g}",
        "One row per cluster; flagged rows are highlighted.",
        (
            ("(first column)", _CLUSTER),
            ("n_cells", "cells in the cluster"),
            ("frac_outside_.+", "fraction of the cluster's cells beyond the per-cell bound of that metric"),
            (
                "flag_doublet_like",
                "median genes and counts both about twice the typical cell's (doublets or large cells)",
            ),
            ("flag_qc", "any flag raised"),
            ("flag_.+", "the cluster's median of that metric is beyond the bound"),
            ("(other columns)", "the cluster's median of that .obs metric"),
        ),
    ),
    # heatmap
    Output(
        "heatmap",
        "figure",
        r"(?P<name>.+)",
        "Clustered heatmap {name}",
        "Rows and columns reordered by their dendrograms; colour: the scaled value (heatmap.scale); side bars "
        "mark row groups (row_k) and annotations; row-group labels carry their bootstrap stability.",
    ),
    Output(
        "heatmap",
        "table",
        r"(?P<name>.+)_matrix",
        "Heatmap {name}: the matrix as drawn",
        "Scaled values, rows and columns in the drawn order.",
        (("(every column)", "the scaled value"),),
    ),
    Output(
        "heatmap",
        "table",
        r"(?P<name>.+)_(?P<axis>row|col)_linkage",
        "Heatmap {name}: {axis} linkage",
        "scipy's linkage matrix, one row per merge.",
        (
            ("left / right", "the two nodes merged (leaves first, then earlier merges)"),
            ("height", "the merge height"),
            ("size", "leaves under the new node"),
        ),
    ),
    Output(
        "heatmap",
        "table",
        r"(?P<name>.+)_(?P<axis>row|col)_order",
        "Heatmap {name}: {axis} order",
        "The leaves in drawn order.",
        (("position", "drawn position"), ("(other columns)", "the leaf")),
    ),
    Output(
        "heatmap",
        "table",
        r"(?P<name>.+)_row_groups",
        "Heatmap {name}: row groups",
        "The group of each row when the row tree is cut at row_k.",
        (("group", "the row's group"),),
    ),
    Output(
        "heatmap",
        "table",
        r"(?P<name>.+)_stability",
        "Heatmap {name}: bootstrap stability of the row groups",
        "Columns resampled n_boot times; per group its best-match Jaccard index over the resamples "
        "(above 0.75: stable, below 0.5: dissolved).",
        (("(every column)", "best-match Jaccard index statistics of the group"),),
    ),
    Output(
        "heatmap",
        "table",
        r"(?P<name>.+)_dropped",
        "Heatmap {name}: rows or columns left out",
        "Rows or columns with non-finite values (nonfinite: drop).",
        (("(every column)", "what was left out and why"),),
    ),
    # subcluster
    Output(
        "subcluster",
        "figure",
        r"subcluster_(?P<name>.+)_markers",
        "Subclustering {name}: genes on its UMAP",
        "The subset's own UMAP coloured by subcluster.plot_genes.",
    ),
    Output(
        "subcluster",
        "figure",
        r"subcluster_(?P<name>.+?)_(?P<key>.+)",
        "Subclustering {name}: overview of {key}",
        "Top: the parent's UMAP with the selected cells, and the parent's clusters; bottom: the subset's own "
        "UMAP coloured by its new clusters ({key}) and by sample.",
    ),
    Output(
        "subcluster",
        "table",
        r"subcluster_(?P<name>.+)_selection",
        "Subclustering {name}: which clusters were selected",
        "One row per parent cluster.",
        (
            ("(first column)", "the parent cluster"),
            ("n_cells", "its cells"),
            ("mean_.+", "mean expression of the marker"),
            ("frac_.+", "fraction of its cells expressing the marker"),
            ("score_.+", "the marker set's score"),
            ("scaled_.+", "the score scaled between the least (0) and the most (1) expressing cluster"),
            ("selected", "taken into the subset"),
            ("selected_by", "the marker set (or rule) that selected it"),
        ),
    ),
    Output(
        "subcluster",
        "table",
        r"subcluster_(?P<name>.+)_cells_per_sample",
        "Subclustering {name}: cells per sample",
        "One row per sample.",
        (
            ("sample", "the batch"),
            ("n_parent", "its cells in the parent"),
            ("n_subset", "its cells in the subset"),
            ("fraction", "n_subset / n_parent"),
        ),
    ),
    Output(
        "subcluster",
        "table",
        r"subcluster_(?P<name>.+)_hvg_overlap",
        "Subclustering {name}: highly variable genes",
        "How many of the subset's HVGs the parent had too.",
        (("set", "parent only, subset only or both"), ("n_genes", "number of genes")),
    ),
    Output(
        "subcluster",
        "table",
        r"subcluster_(?P<name>.+)_hvg_genes",
        "Subclustering {name}: HVGs of parent and subset",
        "One row per gene.",
        (("gene", "the gene"), ("parent / subset", "highly variable in the parent / the subset")),
    ),
    Output(
        "subcluster",
        "table",
        r"subcluster_(?P<name>.+?)_contingency_(?P<key>.+)",
        "Subclustering {name}: parent clusters vs {key}",
        "Rows: the parent's clusters (groupby); columns: the new subclusters; entries: cells in both.",
        (("(every column)", "cells in the row's parent cluster and the column's subcluster"),),
    ),
    # markers
    Output(
        "markers",
        "figure",
        r"markers_dotplot_(?P<key>.+)",
        "Top markers of each cluster of {key}",
        "Dot size: fraction of the cluster's cells expressing the gene; colour: mean log-expression. Genes are each "
        "cluster's best markers passing the filters, clusters in dendrogram order when one was made.",
    ),
    Output(
        "markers",
        "figure",
        r"markers_heatmap_(?P<key>.+)",
        "Clustered heatmap of the top markers of {key}",
        "Mean log-expression per cluster (columns) of each cluster's top markers (rows), z-scored per gene; the "
        "colour bar names the cluster a gene marks.",
    ),
    Output(
        "markers",
        "figure",
        r"markers_umap_(?P<key>.+)",
        "Best marker of each cluster of {key} on the UMAP",
        "One panel per cluster's best marker (titled cluster: gene), log-normalized expression.",
    ),
    Output(
        "markers",
        "table",
        r"markers_(?P<key>.+)_summary",
        "What defines each cluster of {key}",
        "Per cluster: its size, how many genes pass the marker filters and the five best of them.",
        (
            ("n_cells", "cells in the cluster"),
            ("n_markers", "genes passing the filters (fraction inside, fraction outside, log2 fold change)"),
            ("top_markers", "the five best markers passing the filters, by score"),
            ("top_by_score", "the five highest scores, whether they pass the filters or not"),
            ("flag_no_marker", "no gene passes the filters: a likely over-split"),
        ),
    ),
    Output(
        "markers",
        "table",
        r"markers_(?P<key>.+)",
        "Marker genes of every cluster of {key}",
        "Each cluster against the rest of the cells (or a reference cluster), its best genes by score.",
        (
            ("cluster", "the cluster"),
            ("rank", "1 = highest score in the cluster"),
            ("score", "Wilcoxon z-score (tie-corrected) or t statistic"),
            ("logfoldchange", "log2 fold change of the mean expression (scanpy's definition)"),
            ("pval", "two-sided p-value"),
            ("pval_adj", "Benjamini-Hochberg adjusted p-value over all genes"),
            ("auroc", "probability that a cell of the cluster expresses the gene more than a cell outside it"),
            ("pct_in", "fraction of the cluster's cells expressing the gene"),
            ("pct_out", "fraction of the other cells expressing it"),
            ("passes", "passes the marker filters"),
        ),
    ),
    # annotate
    Output(
        "annotate",
        "figure",
        r"annotation_umap_(?P<key>.+)",
        "Cell types of the clusters of {key}",
        "Left: each cluster's label from the marker sets (unassigned when no set wins by the margin); right: the "
        "clusters.",
    ),
    Output(
        "annotate",
        "table",
        r"annotation_(?P<key>.+)_scores",
        "Marker-set scores of each cluster of {key}",
        "Rows: clusters; columns: marker sets; entries: the set's score (scaled mean expression or mean AUROC).",
        (("(every column)", "the cluster's score for that marker set"),),
    ),
    Output(
        "annotate",
        "table",
        r"annotation_(?P<key>.+)",
        "Labels of the clusters of {key} from marker sets",
        "Per cluster: the label given, the best set and its score, the runner-up and the margin between them.",
        (
            ("label", "the best set, or unassigned"),
            ("best", "the best-scoring set"),
            ("score", "its score"),
            ("second", "the runner-up set"),
            ("second_score", "its score"),
            ("margin", "score minus second_score"),
        ),
    ),
    # stability
    Output(
        "stability",
        "figure",
        r"stability(?:_(?P<sub>.+?))?_clustree_(?P<group>.+)",
        "Clustering tree of the {group} series, coloured by stability",
        "As the clustering tree; each node is coloured by its cluster's stability (best-match Jaccard over the "
        "reruns: above 0.75 stable, below 0.5 dissolved).",
    ),
    Output(
        "stability",
        "figure",
        r"stability(?:_(?P<sub>.+?))?_umap_(?P<key>.+)",
        "Stability of each cluster of {key} on the UMAP",
        "Each cell coloured by the stability of its cluster: pale cells belong to clusters that reruns do not "
        "reproduce.",
    ),
    Output(
        "stability",
        "figure",
        r"stability(?:_(?P<sub>.+?))?_runs_(?P<key>.+)",
        "Labels of {key} in every rerun",
        "Cells (rows, sorted by the reported label) x reruns (columns), coloured by the matched label: vertical "
        "stripes of other colours are cells whose cluster changes between runs.",
    ),
    Output(
        "stability",
        "figure",
        r"stability(?:_(?P<sub>.+?))?_(?P<group>[^_]+)",
        "Agreement under reruns: the {group} series",
        "Per resolution or k: mean ARI of the labels with reruns under other seeds and on subsamples (1 = the same "
        "labels every time; the dotted line is stability.min_ari), every cluster's stability (grey dots; red crosses "
        "below stability.min_cluster_stability, labelled), the failed criterion under each unstable key, the default "
        "choice starred, and the number of clusters the reruns found.",
    ),
    Output(
        "stability",
        "table",
        r"stability(?:_(?P<sub>.+?))?_recommendation",
        "Stable clusterings (recommendation)",
        "The clusterings called stable, with the evidence; nothing is applied to the labels.",
        (
            ("key", "the clustering"),
            ("group", "its series"),
            ("param", "resolution, k or height"),
            ("n_clusters", "number of clusters"),
            ("score", "min(ari_seeds, ari_subsample): the stability score"),
            ("ari_seeds", "mean ARI between the labels and reruns with other seeds"),
            ("ari_subsample", "mean ARI between the labels and reruns on subsamples of the cells"),
            ("ic", "inconsistency coefficient of the reruns (scICE): 1 = all identical, higher = less consistent"),
            ("cluster_stability_min", "the least stable cluster's mean best-match Jaccard index"),
            (
                "call",
                "stable, or stable (moving boundary): every cluster reproduced, the score short only "
                "because the boundary between two of them moves between runs",
            ),
            ("rank", "order within its series, the most detailed (most clusters) first"),
            ("default", "the default choice of its series: rank 1"),
            ("evidence", "the same in a sentence"),
            ("choice", "for the default: why it is the one"),
        ),
    ),
    Output(
        "stability",
        "table",
        r"stability(?:_(?P<sub>.+?))?_summary",
        "Stability of every clustering",
        "One row per clustering.",
        (
            ("key / group / method / param", "the clustering, its series, algorithm and resolution / k"),
            ("n_clusters", "clusters of the reported labels"),
            ("n_runs / n_seed_runs / n_subsample_runs", "reruns made (seed runs stop once their agreement is known)"),
            ("run_cells", "cells of each seed rerun (a subsample above stability.max_cells_per_run)"),
            ("ari_seeds / ari_seeds_min", "mean / lowest ARI among the labels and the seed reruns"),
            ("ari_seeds_ci", "half-width of the 95 % bootstrap interval of ari_seeds"),
            ("ecs_seeds", "mean element-centric similarity among them (per-cell agreement)"),
            ("ic", "inconsistency coefficient (scICE): 1 = every rerun identical"),
            ("ari_subsample", "mean ARI of each subsample rerun with the labels on its cells"),
            ("n_clusters_median / _min / _max", "clusters found by the reruns"),
            ("n_clusters_mode_frac", "share of reruns with the most frequent number of clusters"),
            ("cluster_stability_min / _mean", "least / cell-weighted mean per-cluster best-match Jaccard index"),
            (
                "least_stable_cluster / n_unstable_clusters",
                "the cluster with the lowest stability; clusters below stability.min_cluster_stability",
            ),
            ("medoid", "the run that agrees best with all others ('label': the reported labels)"),
            ("ari_medoid", "ARI of the medoid with the reported labels"),
            ("score", "min(ari_seeds, ari_subsample)"),
            (
                "moving_boundary / boundary_share",
                "the two clusters that exchange the most cells between runs ('a|b') "
                "and the share of their cells that change side",
            ),
            ("score_boundary", "the score with those two clusters merged in the labels and in every rerun"),
            (
                "call",
                "stable; stable (moving boundary): score short of stability.min_ari, but every cluster "
                "reproduced and score_boundary reaches it; unstable",
            ),
            ("stable", "call is not unstable"),
            ("reason", "which criterion failed and by how much (or why the key passed)"),
            (
                "rank / default / choice",
                "order of the stable keys within the series (most clusters first); the default choice (rank 1) and why",
            ),
        ),
    ),
    Output(
        "stability",
        "table",
        r"stability(?:_(?P<sub>.+?))?_n_clusters",
        "Number of clusters in every rerun",
        "Rows: clusterings; columns: reruns (seed_<s>: another seed; sub<fraction>_<j>: a subsample).",
        (("(every column)", "clusters found by that rerun"),),
    ),
    Output(
        "stability",
        "table",
        r"stability(?:_(?P<sub>.+?))?_clusters",
        "Stability of every cluster",
        "One row per cluster of each clustering.",
        (
            ("key / cluster", "the clustering and the cluster"),
            ("n_cells", "its cells"),
            ("stability", "mean over reruns of its best-match Jaccard index (>= 0.75 stable, < 0.5 dissolved)"),
            ("stability_seeds / stability_subsample", "the same over seed / subsample reruns"),
            ("frac_recovered", "share of reruns where its best Jaccard is >= 0.5"),
            ("frac_dissolved", "share of reruns where it is < 0.5"),
            ("stable", "stability >= stability.min_cluster_stability"),
        ),
    ),
    # labels
    Output(
        "write_outputs",
        "table",
        r"cluster_labels",
        "Cluster labels of every cell",
        "One row per cell, one column per clustering of the run.",
        (("cell", "the cell (.obs_names)"), ("(every other column)", "its cluster in that clustering")),
    ),
)

#: what a flag means, in plain words (flag column -> sentence)
_FLAG_TEXT = {
    "flag_one_sample": "most of its cells come from one sample (a batch effect or a sample-specific state, not "
    "necessarily a cell type)",
    "flag_qc": "it differs in QC metrics from the rest",
    "flag_doublet_like": "its cells hold about twice the genes and counts of a typical cell (doublets, or large cells: "
    "markers of two cell types point to doublets)",
    "flag_no_marker": "no gene passes its marker filters (expressed in most of its cells, few others, fold change "
    "above the bound): likely an over-split; compare it with its nearest cluster or lower the resolution",
}
#: figures shown first, in this order: the first file whose stem starts with each prefix (and its stage)
_OVERVIEW = {"umap": "embedding", "dotplot_": "relationships", "compare": "compare", "qc_violin_": "qc"}


def describe(stem: str, kind: str, stage: str | None = None) -> tuple[Output | None, dict[str, str]]:
    """The :data:`OUTPUTS` entry describing a file (its stage's entries first) and the pattern's groups."""
    for o in sorted(OUTPUTS, key=lambda o: o.stage != stage):
        if o.kind == kind and (stage is None or o.stage == stage or stage not in STAGES):
            groups = o.match(stem)
            if groups is not None:
                return o, groups
    return None, {}


def docs_link(stage: str) -> str:
    """The address of a stage's entry in the outputs reference."""
    return f"{DOCS_URL}{OUTPUTS_PAGE}#out-{stage.replace('_', '-')}"


def write_report(
    outdir: str | Path,
    manifest: Mapping[str, Any],
    *,
    title: str = "scclust report",
    max_rows: int = 50,
    path: str | Path | None = None,
) -> Path:
    """Write ``report.html`` for a run from its manifest and the files in ``outdir``.

    Parameters
    ----------
    outdir
        The run's output directory (figures and tables are read from it).
    manifest
        The run's manifest (:func:`scclust.workflow.run`): ``config``, ``versions``, ``input``,
        ``stages`` (with each stage's ``outputs``), ``files`` and optionally ``wall_seconds``.
    title
        Page title.
    max_rows
        Tables longer than this are cut to their first ``max_rows`` rows, with a note and a link
        to the full CSV.
    path
        Where to write; default ``outdir / "report.html"``.

    Returns
    -------
    The path written.
    """
    outdir = Path(outdir)
    path = Path(path) if path is not None else outdir / "report.html"
    files = list(manifest.get("files", []))
    stages = list(manifest.get("stages", []))
    placed: set[str] = set()
    flags: list[tuple[str, pd.DataFrame]] = []
    sections = []
    for rec in stages:
        outputs = [f for f in rec.get("outputs", []) if f in files or (outdir / f).is_file()]
        body = _render_files(outdir, outputs, max_rows, flags, stage=_base(rec["stage"]))
        placed.update(outputs)
        if body:
            sections.append((rec["stage"], body))
    rest = [f for f in files if f not in placed and f != path.name and not f.endswith((".h5ad", ".json"))]
    body = _render_files(outdir, rest, max_rows, flags, stage="write_outputs")
    if body:
        sections.append(("write_outputs", body))

    cfg = manifest.get("config", {})
    inp = manifest.get("input", {})
    genes = manifest.get("n_genes", manifest.get("n_vars", "?"))
    in_x = f" ({manifest['n_vars']} in .X)" if manifest.get("n_genes") not in (None, manifest.get("n_vars")) else ""
    sub = (
        f"input {html.escape(str(inp.get('source', cfg.get('input', '?'))))} &middot; "
        f"{manifest.get('n_obs', '?')} cells &times; {genes} genes{in_x} &middot; "
        f"scclust {html.escape(str(manifest.get('versions', {}).get('scclust', '?')))}"
    )
    made = [f for rec in stages for f in rec.get("outputs", []) if f.startswith("figures/")]  # in the order made
    overview = _overview(outdir, made + [f for f in files if f.startswith("figures/") and f not in made])
    nav = (['<a href="#overview">overview</a>'] if overview else []) + ['<a href="#flags">flags</a>']
    nav += [f'<a href="#s-{_slug(n)}">{html.escape(_section_title(n))}</a>' for n, _ in sections]
    nav += [
        '<a href="#files">files</a>',
        '<a href="#config">config</a>',
        '<a href="#versions">versions</a>',
        '<a href="#timings">timings</a>',
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{html.escape(title)}</h1><p>{sub}</p></header>",
        f"<nav>{' '.join(nav)}</nav><main>",
        _recommendations(outdir, files),
        overview,
        _flags_section(flags),
    ]
    for name, body in sections:
        info = STAGES.get(_base(name))
        lead = f'<p class="lead">{html.escape(info.lead)}</p>' if info else ""
        docs = f'<a class="docs" href="{html.escape(docs_link(_base(name)))}">how to read this section</a>'
        parts.append(
            f'<section id="s-{_slug(name)}"><h2>{html.escape(_section_title(name))}{docs}</h2>{lead}{body}</section>'
        )
    all_files = sorted(set(files) | {path.name if path.parent == outdir else str(path), "manifest.json"})
    items = "".join(f'<li><a href="{html.escape(f)}">{html.escape(f)}</a></li>' for f in all_files)
    parts.append(
        f'<section id="files"><h2>Files written by this run ({len(all_files)})</h2>'
        f'<ul class="files">{items}</ul></section>'
    )
    parts.append(
        f'<section id="config"><h2>Resolved config</h2>'
        f"<pre>{html.escape(yaml.safe_dump(cfg, sort_keys=False))}</pre></section>"
    )
    vers = pd.DataFrame(sorted(manifest.get("versions", {}).items()), columns=["package", "version"])
    parts.append(
        f'<section id="versions"><h2>Versions</h2>{vers.to_html(index=False, border=0)}'
        f'<p class="note">input sha256: {html.escape(str(inp.get("sha256", "?")))}</p></section>'
    )
    # the memory estimate as one column next to the measured peak (its breakdown is in manifest.json)
    timing = pd.DataFrame(
        [
            {k: v for k, v in r.items() if k not in ("outputs", "memory_estimate")}
            | ({"estimated_added_mb": r["memory_estimate"]["added_mb"]} if "memory_estimate" in r else {})
            for r in stages
        ]
    )
    wall = manifest.get("wall_seconds")
    note = (
        f"<p class='note'>total wall time {wall:.1f} s</p>"
        if isinstance(wall, int | float)
        else "<p class='note'>the total wall time and the time of writing this page are in manifest.json</p>"
    )
    parts.append(
        f'<section id="timings"><h2>Per-stage timings</h2>{timing.to_html(index=False, border=0)}{note}</section>'
    )
    parts.append("</main></body></html>")
    write_text(path, "\n".join(parts) + "\n")
    logger.info("report written to %s", path)
    return path


def _base(label: str) -> str:
    """The stage of a manifest record's label (``subcluster.tnk`` -> ``subcluster``, ``leiden[1]`` -> ``leiden``)."""
    return re.split(r"[.\[ ]", label, maxsplit=1)[0]


def _section_title(label: str) -> str:
    info = STAGES.get(_base(label))
    if info is None:
        return label
    rest = label[len(_base(label)) :].strip(". ")
    return f"{info.title} ({rest})" if rest else info.title


def _render_files(outdir: Path, files: list[str], max_rows: int, flags: list, *, stage: str | None = None) -> str:
    """Figures (one per name: PNG preferred, else SVG, else links) in a grid, then tables, in written order."""
    figs, tables = [], []
    figures: dict[str, list[str]] = {}
    for f in files:
        if f.startswith("figures/"):
            figures.setdefault(f.rsplit(".", 1)[0], []).append(f)
    done: set[str] = set()
    for f in files:
        p = outdir / f
        if f.startswith("figures/"):
            stem = f.rsplit(".", 1)[0]
            if stem in done:
                continue
            done.add(stem)
            figs.append(_figure(outdir, figures[stem], stage=stage))
        elif f.endswith(".csv"):
            tables.append(_table(p, f, max_rows, flags, stage=stage))
        elif p.suffix in (".html", ".h5ad", ".json"):
            continue
        else:
            tables.append(f'<p><a href="{html.escape(f)}">{html.escape(f)}</a></p>')
    grid = f'<div class="figs">{"".join(figs)}</div>' if figs else ""
    return "\n".join([grid, *tables]) if (grid or tables) else ""


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG from its header ((0, 0) when it cannot be read)."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return 0, 0
    w, h = struct.unpack(">II", head[16:24])
    return w, h


def _is_wide(path: Path) -> bool:
    """Figures of several panels side by side (wide, or many pixels across) take a whole row of the grid."""
    w, h = _png_size(path)
    return h > 0 and (w / h >= 2.0 or w >= 2400)


def _words(stem: str, kind: str, stage: str | None) -> tuple[str, str, Output | None]:
    """A file's title and caption in words (its stem when no :data:`OUTPUTS` entry describes it)."""
    out, groups = describe(stem, kind, stage)
    if out is None:
        return stem, "", None
    return out.title.format(**groups), out.caption.format(**groups), out


def _figure(outdir: Path, variants: list[str], *, stage: str | None = None) -> str:
    by_ext = {v.rsplit(".", 1)[1]: v for v in variants}
    links = " ".join(f'<a href="{html.escape(v)}">{html.escape(v.rsplit(".", 1)[1])}</a>' for v in variants)
    stem = Path(variants[0]).stem
    title, caption, _ = _words(stem, "figure", stage)
    name = html.escape(stem)
    head = f"<h3>{html.escape(title)}</h3>"
    for ext, mime in (("png", "image/png"), ("svg", "image/svg+xml")):
        if ext in by_ext and (outdir / by_ext[ext]).is_file():
            file = outdir / by_ext[ext]
            wide = ext == "png" and _is_wide(file)
            data = base64.b64encode(file.read_bytes()).decode("ascii")
            return (
                f'<figure{" class=wide" if wide else ""}>{head}<img alt="{name}" src="data:{mime};base64,{data}" '
                f'title="click to enlarge" onclick="this.classList.toggle(\'full\')">'
                f"<figcaption>{html.escape(caption)} <code>{html.escape(by_ext[ext])}</code> "
                f"({links})</figcaption></figure>"
            )
    return f"<figure>{head}<figcaption>{html.escape(caption)} not embeddable; open: {links}</figcaption></figure>"


def _applies(key: str, columns: list[str]) -> bool:
    """Whether a glossary entry (``"a / b"``, a regex, ``"_suffix"`` or ``"(description)"``) names a column."""
    if key.startswith("("):
        return True
    for name in (n.strip() for n in key.split(" / ")):
        if name.startswith("_"):
            if any(c.endswith(name) for c in columns):
                return True
        elif any(re.fullmatch(name, c) for c in columns):
            return True
    return False


def _glossary(columns: list[str], out: Output | None, groups: dict[str, str]) -> str:
    """The entries of a table's column glossary that apply to its columns."""
    if out is None or not out.columns:
        return ""
    items = [
        f"<dt>{html.escape(key.format(**groups))}</dt><dd>{html.escape(text.format(**groups))}</dd>"
        for key, text in out.columns
        if _applies(key, columns)
    ]
    return f'<dl class="glossary">{"".join(items)}</dl>' if items else ""


def _table(p: Path, rel: str, max_rows: int, flags: list, *, stage: str | None = None) -> str:
    stem = p.stem
    name = html.escape(stem)
    try:
        df = pd.read_csv(p, index_col=0)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        return f'<h3>{name}</h3><p class="note">could not read {html.escape(rel)}: {html.escape(str(err))}</p>'
    title, caption, out = _words(stem, "table", stage)
    _, groups = describe(stem, "table", stage)
    columns = [str(df.index.name or ""), *map(str, df.columns)]
    flag_cols = [c for c in df.columns if str(c).startswith("flag") and df[c].dtype == bool]
    flagged = df[flag_cols].any(axis=1) if flag_cols else pd.Series(False, index=df.index)
    if flagged.any():
        flags.append((rel, df.loc[flagged, flag_cols]))
    shown = df.head(max_rows)
    classes = ["flag" if f else "" for f in flagged.head(max_rows)]
    table = shown.to_html(border=0, float_format=lambda v: f"{v:.4g}", na_rep="")
    if flagged.any():  # mark flagged rows (pandas emits one <tr> per row after the header)
        head, _, body = table.partition("<tbody>")
        rows = body.split("<tr>")
        body = rows[0] + "".join(
            f'<tr class="{c}">' + r if c else "<tr>" + r for c, r in zip(classes, rows[1:], strict=False)
        )
        table = head + "<tbody>" + body
    note = (
        (
            f'<p class="note">showing the first {max_rows} of {len(df)} rows; full table: '
            f'<a href="{html.escape(rel)}">{html.escape(rel)}</a></p>'
        )
        if len(df) > max_rows
        else f'<p class="note"><a href="{html.escape(rel)}">{html.escape(rel)}</a></p>'
    )
    flagged_note = f", {int(flagged.sum())} flagged" if flagged.any() else ""
    lead = f'<p class="lead">{html.escape(caption)}</p>' if caption else ""
    return (
        f"<details{' open' if flagged.any() else ''}><summary>table: {html.escape(title)} "
        f"({len(df)} rows{flagged_note})</summary>{lead}{_glossary(columns, out, groups)}"
        f'<div class="tablewrap">{table}</div>{note}</details>'
    )


def _recommendations(outdir: Path, files: list[str]) -> str:
    """Tables named ``*_recommendation`` (the stability stage's stable resolutions / k with their
    evidence) open the page: what a reader should decide first."""
    tables = [f for f in files if f.endswith("_recommendation.csv") and (outdir / f).is_file()]
    if not tables:
        return ""
    body = []
    for f in tables:
        df = pd.read_csv(outdir / f)
        what = Path(f).stem.removesuffix("_recommendation").replace("_", " ")
        if df.empty:
            body.append(
                f"<p>{html.escape(what)}: no clustering met the stability criteria; see the stability "
                "section for the scores.</p>"
            )
        else:
            out, groups = describe(Path(f).stem, "table", "stability")
            picks = (
                "".join(
                    f"<p><b>Default choice for {html.escape(str(r['group']))}: {html.escape(str(r['key']))}</b>"
                    f" ({html.escape(str(r['choice']))}).</p>"
                    for _, r in df[df["default"].astype(bool)].iterrows()
                )
                if {"default", "choice"} <= set(df.columns)
                else ""
            )
            body.append(
                f"<h3>{html.escape(what)}</h3>"
                + picks
                + df.to_html(index=False, border=0, float_format=lambda v: f"{v:.3g}")
                + _glossary(list(map(str, df.columns)), out, groups)
            )
    return (
        f'<section id="recommendation" class="ok"><h2>Recommended resolutions / k'
        f'<a class="docs" href="{html.escape(docs_link("stability"))}">how to read this section</a></h2>'
        "<p>Clusterings that "
        "stay the same under other seeds and subsamples of cells (not applied to the labels; see "
        f"tl.stability).</p>{''.join(body)}</section>"
    )


def _overview(outdir: Path, figures: list[str]) -> str:
    """The figures a reader looks at first, one of each kind (the first clusterings on the embedding,
    the marker dot plot, the agreement between clusterings, the QC violins), before any table."""
    chosen: list[tuple[str, str]] = []
    for prefix, stage in _OVERVIEW.items():
        for f in figures:
            if f.endswith(".png") and Path(f).stem.startswith(prefix):
                chosen.append((f, stage))
                break
    if not chosen:
        return ""
    body = "".join(_figure(outdir, [f], stage=stage) for f, stage in chosen)
    return (
        f'<section id="overview"><h2>Overview</h2><p class="lead">The figures to look at first; click a figure '
        "to enlarge it. Each is repeated, with its tables, in its section below.</p>"
        f'<div class="figs">{body}</div></section>'
    )


def _flags_section(flags: list[tuple[str, pd.DataFrame]]) -> str:
    from .tl._qc import MITO_KEYS

    if not flags:
        return (
            '<section id="flags" class="ok"><h2>Flags</h2><p>No cluster was flagged by the composition '
            "(one-sample) or QC diagnostics.</p></section>"
        )
    items = []
    for rel, df in flags:
        for idx, row in df.iterrows():
            raised = [str(c) for c, v in row.items() if v]
            words = [_FLAG_TEXT[c] for c in raised if c in _FLAG_TEXT and c != "flag_qc"]
            metrics = [c.removeprefix("flag_") for c in raised if c not in _FLAG_TEXT]
            mito = [m for m in metrics if m in MITO_KEYS]  # above the bound: a quality problem, not a cell size
            size = [m for m in metrics if m not in MITO_KEYS]
            if size:
                words.append(
                    f"its median {', '.join(size)} differs from the rest (beyond the per-cell QC bound): "
                    "a small or large cell type, or low-quality cells if it has no markers of its own"
                )
            if mito:
                words.append(
                    f"its median {', '.join(mito)} is above the per-cell QC bound: most of its cells would fail "
                    "a mitochondrial filter (dying or broken cells)"
                )
            what = "; ".join(words) or ", ".join(c.removeprefix("flag_") for c in raised)
            items.append(
                f"<li><b>{html.escape(Path(rel).stem)}</b>: cluster {html.escape(str(idx))} &mdash; "
                f"{html.escape(what)}</li>"
            )
    return (
        f'<section id="flags" class="flags"><h2>Flags ({len(items)})</h2><p>Clusters that stand out in the '
        f"diagnostics, to look at, not necessarily faults (rules in the docs of tl.composition_diagnostics and "
        f"tl.qc_summary); flagged rows are "
        f"highlighted in the tables below.</p><ul>{''.join(items)}</ul></section>"
    )


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name).strip("-").lower()
