"""``compare``: ARI / NMI between clusterings, contingency tables, clustering trees
(:func:`scclust.tl.compare`, :func:`scclust.tl.comparison_plan`, :func:`scclust.tl.cluster_tree`)."""

from __future__ import annotations

from pydantic import Field

from .._types import KeyList
from ._base import Params, Ref, Stage


class CompareParams(Params):
    """ARI / NMI between clusterings, contingency tables (:func:`scclust.tl.compare`)."""

    keys: KeyList | None = Field(None, description="clusterings to compare; None = all made in this run")
    reference: str | None = Field(None, description="an .obs column of reference labels (e.g. cell_type)")


def run(adata, p: CompareParams, ctx) -> None:
    """ARI / NMI tables and heatmap; contingency tables vs the reference and between consecutive
    clusterings of one series (e.g. leiden_0.4 vs leiden_0.6); a clustering tree per series."""
    from .. import pl, tl

    keys = p.keys if p.keys is not None else (ctx.all_clusterings() or None)
    res = tl.compare(adata, keys=keys, reference=p.reference)
    ctx.save_table(res["ari"], "ari")
    ctx.save_table(res["nmi"], "nmi")
    ctx.save_table(res["summary"], "compare_summary")
    compared = [k for k in res["ari"].index if k != p.reference]
    plan = tl.comparison_plan(compared, series=ctx.clusterings, reference=p.reference)
    tables = {(a, b): tl.contingency(adata, key1=a, key2=b) for a, b in plan.pairs}
    for (a, b), table in tables.items():
        ctx.save_table(table, f"contingency_{a}_vs_{b}")
    ctx.save_figure(pl.compare(adata, keys=compared, reference=p.reference, result=res), "compare")
    for group, members in plan.trees.items():  # a clustering tree per series (resolutions, k, tree cuts)
        tree = tl.cluster_tree(adata, keys=members, tables=tables)
        ctx.save_table(tree, f"clustree_{group}", index=False)
        ctx.save_figure(pl.clustree(adata, keys=members, edges=tree), f"clustree_{group}")


STAGE = Stage(
    name="compare",
    params=CompareParams,
    run=run,
    reads=(Ref("keys", "obs"), Ref("reference", "obs")),
    description="ARI / NMI between clusterings, contingency tables, clustering trees",
    obsm_reads="declared",
)
