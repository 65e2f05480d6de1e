"""The stage registry: every stage of a run, in the order stages run.

Adding a stage = one module in this package (its ``*Params`` model, run function and ``STAGE``
declaration) + one line here. The config model, the JSON schema, the stage order, the pre-flight
key check and the report's sections are all derived from :data:`REGISTRY`.
"""

from __future__ import annotations

from . import (
    annotate,
    compare,
    composition,
    embedding,
    hclust,
    heatmap,
    kmeans,
    leiden,
    markers,
    neighbors,
    prepare,
    qc,
    relationships,
    report,
    sketch,
    stability,
    subcluster,
)
from ._base import Makes, Params, Ref, RunContext, Stage

__all__ = ["REGISTRY", "Makes", "Params", "Ref", "RunContext", "Stage"]

#: every stage, in run order (``report`` stays last)
REGISTRY: dict[str, Stage] = {
    s.name: s
    for s in (
        prepare.STAGE,
        sketch.STAGE,  # the on_sketch stages that follow run on the sketch; their labels projected after
        neighbors.STAGE,
        leiden.STAGE,
        kmeans.STAGE,
        hclust.STAGE,
        compare.STAGE,
        relationships.STAGE,
        embedding.STAGE,
        composition.STAGE,
        qc.STAGE,
        heatmap.STAGE,
        subcluster.STAGE,
        stability.STAGE,  # after every clustering, subclusterings included
        markers.STAGE,  # after stability: its recommended keys
        annotate.STAGE,
        report.STAGE,
    )
}
