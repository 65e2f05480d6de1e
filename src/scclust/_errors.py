"""Exceptions and warnings raised by scclust.

Every error that a user can fix (a bad config value, a missing key, an unusable input) derives from
:class:`UserError`. They also derive from the builtin a Python user expects (``ValueError``,
``KeyError``, ``FileNotFoundError``), so notebook code can catch them the usual way. The CLI turns a
:class:`UserError` into a one-line message and exit status 2; anything else is a bug (exit 1).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

__all__ = ["ConfigError", "InputError", "MissingFileError", "MissingKeyError", "OutputError", "ScclustWarning", "UserError",
           "choices", "did_you_mean", "near_matches"]


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


def choices(values: Iterable[object], limit: int = 8) -> str:
    """Format valid choices for an error message: ``'a', 'b', ... (N more)`` (at most ``limit`` shown)."""
    vals = [str(v) for v in values]
    if not vals:
        return "(none)"
    shown = ", ".join(repr(v) for v in vals[:limit])
    return shown + (f", ... ({len(vals) - limit} more)" if len(vals) > limit else "")


#: difflib similarity a gene symbol must reach to be suggested: one letter inserted or left out
#: (``CD8`` -> ``CD8A``) passes, one letter changed in a short symbol (``CD3D`` for ``CD3E``, a
#: different gene) does not
GENE_CUTOFF = 0.85


def _fold(name: str) -> str:
    """Case and punctuation folded: ``HLA-DRA``, ``hla.dra`` and ``HLA_DRA`` are one name."""
    return re.sub(r"[-._]", "", name).casefold()


def near_matches(names: Iterable[str], universe: Iterable[str], *, cutoff: float = GENE_CUTOFF,
                 same_numbers: bool = True) -> dict[str, str]:
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


def did_you_mean(names: Iterable[str], universe: Iterable[str], *, limit: int = 8,
                 cutoff: float = GENE_CUTOFF) -> str:
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
    text = "did you mean " + ", ".join(pairs[:limit]) + (f", ... ({len(pairs) - limit} more)" if len(pairs) > limit else "") + "?"
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
