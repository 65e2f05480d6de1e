"""Exceptions and warnings raised by scclust.

Every error that a user can fix (a bad config value, a missing key, an unusable input) derives from
:class:`UserError`. They also derive from the builtin a Python user expects (``ValueError``,
``KeyError``, ``FileNotFoundError``), so notebook code can catch them the usual way. The CLI turns a
:class:`UserError` into a one-line message and exit status 2; anything else is a bug (exit 1).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "ConfigError", "InputError", "MissingFileError", "MissingKeyError", "OutputError", "ScclustWarning", "UserError",
    "choices", "format_validation_error", "warn",
]


class UserError(Exception):
    """A problem with the user's input or configuration (CLI exit status 2)."""


class ConfigError(UserError, ValueError):
    """A config value is invalid."""


class InputError(UserError, ValueError):
    """The data cannot be used as given (NaN in an embedding, too few cells, ...)."""


class MissingKeyError(UserError, KeyError):
    """A key (``.obs`` column, ``.obsm`` entry, gene, ...) is absent."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class MissingFileError(UserError, FileNotFoundError):
    """An input file does not exist."""


class OutputError(UserError, OSError):
    """Outputs cannot be written (outdir is a file, not writable, the disk is full, ...)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ScclustWarning(UserWarning):
    """Warnings issued by scclust (e.g. marker genes absent from the data)."""


def choices(values: Iterable[object], limit: int = 30) -> str:
    """Format valid choices for an error message: ``'a', 'b', ... (N more)``."""
    vals = [str(v) for v in values]
    if not vals:
        return "(none)"
    shown = ", ".join(repr(v) for v in vals[:limit])
    return shown + (f", ... ({len(vals) - limit} more)" if len(vals) > limit else "")


#: frames in these directories are not "the caller" of a warning: scclust itself and pydantic's
#: argument validation (which runs between a user's call and the function)
_INTERNAL = (str(Path(__file__).parent),)


def warn(message: str, category: type[Warning] = ScclustWarning) -> None:
    """Issue a warning that points at the first frame outside scclust and pydantic: the user's
    line, as anndata's and scanpy's warnings do (``skip_file_prefixes``)."""
    import pydantic
    import pydantic_core

    internal = (*_INTERNAL, str(Path(pydantic.__file__).parent), str(Path(pydantic_core.__file__).parent))
    if sys.version_info >= (3, 12):
        warnings.warn(message, category, skip_file_prefixes=internal)
        return
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(internal):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def format_validation_error(err: Any, root: Any = None, *, data: Any = None) -> str:
    """One line for a pydantic ``ValidationError``: ``key.path: message (got value)``.

    ``root``: the model the locations start from (for the valid keys of an unknown key); ``None``:
    a function's arguments. ``data``: what the user wrote; the path is given as written there (a
    section or a value given as a single item, which the model takes as a list of one, has no
    list index in the path).
    """
    import difflib

    lines = []
    for e in err.errors():
        loc = _user_path(e["loc"], data)
        path = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "unexpected_keyword_argument":
            lines.append(f"unknown argument {path!r}")
        elif e["type"] == "extra_forbidden" and root is not None:
            valid = _valid_keys(root, tuple(p for p in loc[:-1] if not isinstance(p, int)))
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            lines.append(f"unknown key {path!r}: {hint}valid keys: {choices(valid, 40)}")
        elif e["type"] == "missing":
            lines.append(f"missing required key {path!r}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = e.get("input")
            lines.append(f"{path}: {msg}" + ("" if isinstance(got, dict) else f" (got {_short(got)})"))
    lines = list(dict.fromkeys(lines))
    return lines[0] + (f" (and {len(lines) - 1} more problem(s): {'; '.join(lines[1:])})" if len(lines) > 1 else "")


def _user_path(loc: tuple, data: Any) -> tuple:
    """pydantic's error location as the user wrote it: without validator / union-member parts,
    and without the list indices of items the user did not write as a list."""
    out: list = []
    node = data
    for part in loc:
        if isinstance(part, str) and (part.startswith("function-") or "[" in part or part in _TYPE_NAMES):
            continue
        if isinstance(part, int):
            if isinstance(node, list | tuple):
                out.append(part)
                node = node[part] if part < len(node) else None
            elif data is None:
                out.append(part)
            continue
        out.append(part)
        node = node.get(part) if isinstance(node, dict) else None
    return tuple(out)


_TYPE_NAMES = {"int", "float", "str", "bool", "list", "dict", "none", "literal", "constrained-int", "constrained-float"}


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + " ...'"


def _valid_keys(root: Any, loc: tuple) -> list[str]:
    """The field names of the model that holds the key at ``loc`` below ``root``."""
    import typing

    from pydantic import BaseModel

    def find(ann: Any) -> Any:
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return ann
        for arg in typing.get_args(ann):
            found = find(arg)
            if found is not None:
                return found
        return None

    model = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        sub = find(field.annotation) if field is not None else None
        if sub is None:
            break
        model = sub
    return list(model.model_fields)
