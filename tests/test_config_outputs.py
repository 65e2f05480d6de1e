"""Config sections of the output stages (relationships, composition, qc, report) match their functions."""

from __future__ import annotations

import inspect

import pytest

from scclust import config as C
from scclust import pl, tl
from scclust.datasets import LAB_MARKERS
from scclust.report import write_report


def _defaults(func):
    return {n: p.default for n, p in inspect.signature(func).parameters.items() if p.kind is p.KEYWORD_ONLY}


@pytest.mark.parametrize(
    ("model", "funcs"),
    [
        (C.RelationshipsParams, [tl.dendrogram, tl.cluster_means, pl.dotplot]),
        (C.CompositionParams, [tl.composition_diagnostics]),
        (C.QCParams, [tl.qc_summary, pl.qc_violin]),
        (C.ReportParams, [write_report]),
    ],
)
def test_fields_shared_with_functions_have_their_defaults(model, funcs):
    stage_level = {"groupby", "by", "genes", "use_raw"}  # which clusterings, columns, genes: chosen by the stage
    covered = set()
    for func in funcs:
        kw = _defaults(func)
        for name, field in model.model_fields.items():
            if name in kw and name not in stage_level and kw[name] is not inspect.Parameter.empty:
                assert field.default == kw[name], (func.__name__, name)
                covered.add(name)
    assert set(model.model_fields) - covered <= stage_level


def test_default_genes_are_the_lab_markers():
    assert C.RelationshipsParams().genes == LAB_MARKERS


def test_sections_and_order():
    cfg = C.parse_config(
        {
            "input": "x",
            "stages": ["report", "qc", "composition", "relationships", "leiden"],
            "relationships": {"groupby": ["leiden_0.6"]},
            "qc": {"keys": ["n_genes"]},
        }
    )
    assert cfg.stages == ["leiden", "relationships", "composition", "qc", "report"]
    assert C.STAGE_ORDER[-1] == "report"
    assert cfg.relationships.groupby == ["leiden_0.6"]
    with pytest.raises(C.ConfigError, match="composition.max_share"):
        C.parse_config({"input": "x", "composition": {"max_share": 1.2}})
    with pytest.raises(C.ConfigError, match="linkage_method"):
        C.parse_config({"input": "x", "relationships": {"linkage_method": "wards"}})
