# Helpers: validate the fan-out config and every per-run scclust config before anything runs.
import json
import shlex
from pathlib import Path

import jsonschema
import yaml
from snakemake.utils import validate

from scclust.config import apply_overrides, json_schema, parse_config

validate(config, "../schemas/fanout.schema.yaml")

OUTDIR = config.get("outdir", "results/snakemake")
DATASETS = config["datasets"]
PARAMSETS = config.get("paramsets") or {"default": {}}
SUBCLUSTERINGS = config.get("subclusterings") or {}
SCHEMA = json_schema()


def _set_args(overrides):
    return [f"{k}={json.dumps(v)}" for k, v in (overrides or {}).items()]


def _check(config_path, overrides, what):
    """Validate the scclust config + overrides now, so a bad value fails the dry run, not job 37."""
    data = yaml.safe_load(Path(config_path).read_text()) or {}
    data = apply_overrides(data, _set_args(overrides))
    data.setdefault("input", "placeholder")
    try:
        cfg = parse_config(data)  # scclust's models: one-line errors naming the key and the valid values
    except ValueError as err:
        raise ValueError(f"{what} ({config_path}): {err}") from None
    # and the JSON schema generated from the same models (what editors and other tools see)
    jsonschema.Draft202012Validator(SCHEMA).validate(data)
    return cfg


def _fits(cfg, spec, what):
    """The pre-flight check of `scclust run` (keys, genes, clashes) against a dataset that can be read
    cheaply now (an existing .h5ad, read without its matrix, or builtin:pbmc68k); simulated built-ins
    are built by their job and skipped here."""
    from scclust._io import read_input_summary
    from scclust.workflow import check_names, preflight

    spec = str(spec)
    if spec.startswith(("builtin:simulate", "builtin:counts")) or not (spec.startswith("builtin:") or Path(spec).is_file()):
        return
    try:
        preflight(check_names(read_input_summary(spec)), cfg)
    except ValueError as err:  # scclust's user errors are ValueError / KeyError subclasses
        raise ValueError(f"{what}: {err}") from None
    except KeyError as err:
        raise ValueError(f"{what}: {err}") from None


for _name, _ps in PARAMSETS.items():
    _cfg = _check(config["base_config"], _ps, f"paramset {_name}")
    for _ds, _spec in DATASETS.items():
        _fits(_cfg, _spec, f"dataset {_ds} with paramset {_name}")
for _name, _sc in SUBCLUSTERINGS.items():
    _check(_sc["config"], _sc.get("set"), f"subclustering {_name}")


def set_flags(overrides):
    return " ".join(f"--set {shlex.quote(a)}" for a in _set_args(overrides))


def all_targets():
    out = expand(f"{OUTDIR}/{{dataset}}/{{paramset}}/manifest.json", dataset=DATASETS, paramset=PARAMSETS)
    out += expand(
        f"{OUTDIR}/{{dataset}}/{{paramset}}/sub_{{sub}}/manifest.json",
        dataset=DATASETS, paramset=PARAMSETS, sub=SUBCLUSTERINGS,
    )
    return out
