"""Config validation: one-line errors naming the key path, the bad value and the valid choices."""

from __future__ import annotations

import json

import pytest

from scclust import config as C
from scclust._errors import ConfigError, MissingFileError


def test_defaults_and_single_mapping_become_lists():
    cfg = C.parse_config({"input": "builtin:simulate", "leiden": {"resolutions": [0.4, 1]}})
    assert isinstance(cfg.leiden, list) and cfg.leiden[0].resolutions == [0.4, 1.0]
    assert cfg.stages == ["neighbors", "leiden", "embedding"]


def test_misspelt_key_names_key_and_suggests():
    with pytest.raises(ConfigError) as e:
        C.parse_config({"input": "x", "neighbours": {}})
    msg = str(e.value)
    assert "'neighbours'" in msg and "did you mean 'neighbors'" in msg and "\n" not in msg


def test_misspelt_nested_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        C.parse_config({"input": "x", "leiden": {"resolution": [1]}})
    msg = str(e.value)
    assert "leiden.resolution" in msg and "resolutions" in msg and "neighbors_key" in msg


def test_wrong_type_and_bad_literal():
    with pytest.raises(ConfigError, match=r"neighbors\.n_neighbors.*'many'"):
        C.parse_config({"input": "x", "neighbors": {"n_neighbors": "many"}})
    with pytest.raises(ConfigError, match=r"metric.*'euclidean'.*'chebyshev'"):
        C.parse_config({"input": "x", "neighbors": {"metric": "chebyshev"}})


def test_bad_values():
    with pytest.raises(ConfigError, match=r"resolutions.*> 0"):
        C.parse_config({"input": "x", "leiden": {"resolutions": [0.5, 0]}})
    with pytest.raises(ConfigError, match="unknown stage"):
        C.parse_config({"input": "x", "stages": ["neighbors", "clustering"]})
    with pytest.raises(ConfigError, match="missing required key 'input'"):
        C.parse_config({})


def test_stages_are_run_in_canonical_order():
    cfg = C.parse_config({"input": "x", "stages": ["embedding", "leiden", "neighbors"]})
    assert cfg.stages == ["neighbors", "leiden", "embedding"]


def test_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("input: builtin:simulate\nleiden: [{resolutions: [1.0]}, {key_added: b}]\n")
    cfg = C.load_config(
        path, overrides=["leiden.0.resolutions=[0.2, 0.3]", "neighbors.n_neighbors=7", "leiden.random_state=3"]
    )
    assert cfg.leiden[0].resolutions == [0.2, 0.3]
    assert cfg.neighbors[0].n_neighbors == 7
    assert [p.random_state for p in cfg.leiden] == [3, 3]
    with pytest.raises(ConfigError, match="index 5 out of range"):
        C.load_config(path, overrides=["leiden.5.key_added=c"])
    with pytest.raises(ConfigError, match="key.path=value"):
        C.load_config(path, overrides=["leiden"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(MissingFileError):
        C.load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        C.load_config(bad)


def test_schema_is_generated_from_models():
    schema = C.json_schema()
    json.dumps(schema)
    assert "input" in schema["required"]
    for stage in C.STAGE_ORDER:
        assert stage in schema["properties"], stage


def test_every_stage_has_a_function_and_a_section():
    from scclust.stages import REGISTRY

    assert list(REGISTRY) == C.STAGE_ORDER
    for stage in C.STAGE_ORDER:
        assert stage in C.WorkflowConfig.model_fields
        assert callable(REGISTRY[stage].run)
