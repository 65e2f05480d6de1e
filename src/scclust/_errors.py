"""Exceptions and warnings raised by scclust.

Every error that a user can fix (a bad config value, a missing key, an unusable input) derives from
:class:`UserError`. They also derive from the builtin a Python user expects (``ValueError``,
``KeyError``, ``FileNotFoundError``), so notebook code can catch them the usual way. The CLI turns a
:class:`UserError` into a one-line message and exit status 2; anything else is a bug (exit 1).
"""

from __future__ import annotations

import difflib
import re
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "ConfigError",
    "InputError",
    "MissingFileError",
    "MissingKeyError",
    "OutputError",
    "ResourceError",
    "ScclustWarning",
    "UserError",
    "choices",
    "did_you_mean",
    "format_validation_error",
    "near_matches",
    "warn",
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


class ResourceError(UserError, MemoryError):
    """A stage would not fit in the memory the run may use (``memory_limit``); raised before it starts,
    with the estimate and the options that lower it."""


class ScclustWarning(UserWarning):
    """Warnings issued by scclust (e.g. marker genes absent from the data)."""


def choices(values: Iterable[object], limit: int = 8) -> str:
    """Format valid choices for an error message: ``'a', 'b', ... (N more)`` (at most ``limit`` shown)."""
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
    frame, level = sys._getframe(1), 2  # stacklevel 2: the caller of warn()
    while frame is not None and frame.f_code.co_filename.startswith(internal):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def format_validation_error(err: Any, root: Any = None, *, data: Any = None, argnames: Any = ()) -> str:
    """One line for a pydantic ``ValidationError``: ``key.path: message (got value)``.

    ``root``: the model the locations start from (for the valid keys of an unknown key); ``None``:
    a function's arguments. ``data``: what the user wrote; the path is given as written there (a
    section or a value given as a single item, which the model takes as a list of one, has no
    list index in the path). ``argnames``: a function's parameter names (a positional argument's
    error is named by its parameter).
    """
    lines = []
    for e in err.errors():
        raw = tuple(e["loc"])
        if raw and isinstance(raw[0], int) and raw[0] < len(argnames):
            raw = (argnames[raw[0]], *raw[1:])
        loc = _user_path(raw, data)
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
            said = isinstance(got, dict) or "got " in msg  # the message names the bad value itself
            lines.append(f"{path}: {msg}" + ("" if said else f" (got {_short(got)})"))
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


def model_in(ann: Any) -> Any:
    """The pydantic model a field's annotation holds (``Group | None``, ``dict[str, Group]``), or None."""
    import typing

    from pydantic import BaseModel

    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        found = model_in(arg)
        if found is not None:
            return found
    return None


def _valid_keys(root: Any, loc: tuple) -> list[str]:
    """The field names of the model that holds the key at ``loc`` below ``root``."""
    model = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        sub = model_in(field.annotation) if field is not None else None
        if sub is None:
            break
        model = sub
    return list(model.model_fields)


#: difflib similarity a gene symbol must reach to be suggested: one letter inserted or left out
#: (``CD8`` -> ``CD8A``) passes, one letter changed in a short symbol (``CD3D`` for ``CD3E``, a
#: different gene) does not
GENE_CUTOFF = 0.85


def _fold(name: str) -> str:
    """Case and punctuation folded: ``HLA-DRA``, ``hla.dra`` and ``HLA_DRA`` are one name."""
    return re.sub(r"[-._]", "", name).casefold()


def near_matches(
    names: Iterable[str], universe: Iterable[str], *, cutoff: float = GENE_CUTOFF, same_numbers: bool = True
) -> dict[str, str]:
    """The closest name in ``universe`` for each of ``names`` that has one.

    A name that differs only in case or in ``-`` / ``.`` / ``_`` (``Cd3e`` -> ``CD3E``) is matched
    first; otherwise the best :func:`difflib.get_close_matches` candidate of similar length at
    ``cutoff`` or above with the same numbers (``CD8`` -> ``CD8A``, but not ``CD4`` for ``CD14``:
    numbers tell members of a gene family apart). Names in ``universe`` already, and names with no
    candidate, are left out. For keys (``.obs`` columns, embeddings) rather than genes, pass
    ``cutoff=0.6, same_numbers=False`` (difflib's default; ``leiden_0.6`` for ``leiden_0.4``).

    Returns
    -------
    ``{name: suggestion}`` in the order of ``names``.
    """
    names = [str(n) for n in names]
    pool = [str(u) for u in universe]
    have = set(pool)
    folded: dict[str, str] = {}
    for u in pool:
        folded.setdefault(_fold(u), u)
    by_length: dict[int, list[str]] = {}
    out: dict[str, str] = {}
    for name in names:
        if name in have or name in out:
            continue
        exact = folded.get(_fold(name))
        if exact is not None:
            out[name] = exact
            continue
        if not by_length:
            for u in pool:
                by_length.setdefault(len(u), []).append(u)
        # difflib over 30,000 genes takes ~0.1 s a name: in a large universe, candidates within 2
        # letters of the length only
        digits = re.findall(r"\d+", name)
        near = [u for d in range(-2, 3) for u in by_length.get(len(name) + d, ())] if len(pool) > 1000 else pool
        cands = [u for u in near if not same_numbers or re.findall(r"\d+", u) == digits]
        close = difflib.get_close_matches(name, cands, n=1, cutoff=cutoff)
        if close:
            out[name] = close[0]
    return out


def _case_style(name: str) -> str | None:
    """``"human"`` for an upper-case symbol (``CD3E``), ``"mouse"`` for a capitalized one (``Cd3e``)."""
    letters = [c for c in name if c.isalpha()]
    if not letters:
        return None
    if all(c.isupper() for c in letters):
        return "human"
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return "mouse"
    return None


def did_you_mean(names: Iterable[str], universe: Iterable[str], *, limit: int = 8, cutoff: float = GENE_CUTOFF) -> str:
    """A message fragment suggesting, for names absent from ``universe``, the names meant.

    ``"did you mean 'CD3E' for 'Cd3e', 'CD8A' for 'cd8a'?"`` from :func:`near_matches` (case-
    insensitive matches first, then close spellings), at most ``limit`` suggestions then
    ``... (N more)``. When most of the absent names match only up to case, and they are written as
    mouse symbols (``Cd3e``) while the data's are human (``CD3E``) or the reverse, that is said first:
    ``"gene names look like mouse symbols (Cd3e) while the data's are human (CD3E); did you mean ...?"``.

    Returns
    -------
    The fragment, or ``""`` when there is nothing to suggest.
    """
    universe = list(universe)
    have = set(map(str, universe))
    absent = list(dict.fromkeys(str(n) for n in names if str(n) not in have))
    found = near_matches(absent, universe, cutoff=cutoff)
    if not found:
        return ""
    pairs = [f"{s!r} for {n!r}" for n, s in found.items()]
    text = (
        "did you mean "
        + ", ".join(pairs[:limit])
        + (f", ... ({len(pairs) - limit} more)" if len(pairs) > limit else "")
        + "?"
    )
    case_only = [(n, s) for n, s in found.items() if _fold(n) == _fold(s)]
    if len(case_only) * 2 > len(absent):
        given = [_case_style(n) for n, _ in case_only]
        theirs = [_case_style(s) for _, s in case_only]
        for ours, other in (("mouse", "human"), ("human", "mouse")):
            if given.count(ours) * 2 > len(given) and theirs.count(other) * 2 > len(theirs):
                n, s = next((n, s) for n, s in case_only if _case_style(n) == ours and _case_style(s) == other)
                return f"gene names look like {ours} symbols ({n}) while the data's are {other} ({s}); {text}"
        n, s = case_only[0]
        return f"gene names differ from the data's in case only ({n} vs {s}); {text}"
    return text
