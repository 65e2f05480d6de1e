"""Exceptions and warnings raised by scclust.

Every error that a user can fix (a bad config value, a missing key, an unusable input) derives from
:class:`UserError`. They also derive from the builtin a Python user expects (``ValueError``,
``KeyError``, ``FileNotFoundError``), so notebook code can catch them the usual way. The CLI turns a
:class:`UserError` into a one-line message and exit status 2; anything else is a bug (exit 1).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ConfigError", "InputError", "MissingFileError", "MissingKeyError", "OutputError", "ScclustWarning", "UserError"]


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
