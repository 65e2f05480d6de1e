"""``annotate``: cell types of clusters from marker gene sets (:func:`scclust.tl.annotate`), scored on
the statistics of the ``markers`` stage (scaled mean expression per cluster, or AUROC). Per
clustering: ``.obs[f"{key}_annotation"]``, tables ``annotation_{key}`` (per cluster: label, best
set, its score, the runner-up, the margin) and ``annotation_{key}_scores`` (clusters x sets),
figure ``annotation_umap_{key}``."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .. import tl
from .._errors import MissingKeyError
from .._params import params_model
from .._types import KeyList
from ._base import Makes, Ref, Stage

AnnotateParams = params_model(
    tl.annotate,
    name="AnnotateParams",
    exclude=("groupby", "key", "key_added"),
    fields={
        "sets": (
            dict[str, list[str]] | str | None,
            Field(
                None,
                description="marker sets {cell type: [gene, ...]}, or the path of a YAML file of them "
                "(configs/markers_pbmc.yaml: the eight PBMC types); required",
            ),
        ),
        "groupby": (KeyList | None, Field(None, description="clusterings; null: those the markers stage ran on")),
        "basis": (
            str | None,
            Field(None, description="embedding of the annotation figure; null: the first UMAP in .obsm"),
        ),
    },
)


def run(adata, p: Any, ctx: Any) -> None:
    from .. import pl
    from .._io import read_marker_sets
    from .markers import basis_of

    keys = (
        list(p.groupby)
        if p.groupby is not None
        else [
            v["params"]["groupby"]
            for k, v in adata.uns.items()
            if k.startswith("markers_") and isinstance(v, dict) and "names" in v and "params" in v
        ]
    )
    if not keys:
        raise MissingKeyError(
            "annotate: no markers in .uns; add the markers stage before annotate (stages: [..., markers, annotate])"
        )
    basis = basis_of(adata, p.basis)
    sets = read_marker_sets(p.sets) if isinstance(p.sets, str) else p.sets
    for key in keys:
        tl.annotate(adata, groupby=key, sets=sets, **p.model_dump(exclude={"groupby", "basis", "sets"}))
        res = adata.uns[f"{key}_annotation"]
        ctx.save_table(res["assignment"], f"annotation_{key}")
        ctx.save_table(res["scores"], f"annotation_{key}_scores")
        if basis is not None and basis in adata.obsm:
            ctx.save_figure(
                pl.embedding(adata, basis=basis, color=[f"{key}_annotation", key], ncols=2), f"annotation_umap_{key}"
            )


STAGE = Stage(
    name="annotate",
    params=AnnotateParams,
    run=run,
    reads=(Ref("groupby", "obs"), Ref("basis", "basis")),
    makes=lambda p: Makes(obs_other=[f"{k}_annotation" for k in (p.groupby or [])]),
    description="cell types of clusters from marker gene sets (mean AUROC of each set)",
)
