"""The input spec of a run, parsed once: ``builtin:NAME?key=value&...`` (made by
:mod:`scclust.datasets`), ``data:NAME`` (a registered real dataset, fetched and verified by
:func:`scclust.datasets.fetch`), an ``.h5ad`` file, or a counts store (``.zarr`` directory, 10x ``.h5``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = ["InputSpec", "parse_input"]

BUILTIN_PREFIX = "builtin:"
DATA_PREFIX = "data:"


@dataclass(frozen=True)
class InputSpec:
    """What a run reads: ``kind`` says how (``builtin``: made by :mod:`scclust.datasets`; ``data``: a
    registered dataset's file in the cache; ``file``: an ``.h5ad``; ``store``: a ``.zarr`` store or
    10x ``.h5``, readable out of core)."""

    text: str
    kind: Literal["builtin", "data", "file", "store"]
    name: str = ""
    params: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    @property
    def is_builtin(self) -> bool:
        return self.kind == "builtin"

    def __str__(self) -> str:
        return self.text


def parse_input(text: str | InputSpec) -> InputSpec:
    """Parse an input spec (the one place that knows its syntax); an :class:`InputSpec` is returned as is."""
    if isinstance(text, InputSpec):
        return text
    if text.startswith(BUILTIN_PREFIX):
        name, _, query = text.removeprefix(BUILTIN_PREFIX).partition("?")
        params = dict(part.partition("=")[::2] for part in query.split("&") if part) if query else {}
        return InputSpec(text, "builtin", name=name, params=params)
    if text.startswith(DATA_PREFIX):
        return InputSpec(text, "data", name=text.removeprefix(DATA_PREFIX))
    path = Path(text)
    is_store = path.suffix.lower() in (".zarr", ".h5") or (
        path.is_dir() and any((path / m).exists() for m in ("zarr.json", ".zgroup"))
    )
    return InputSpec(text, "store" if is_store else "file", path=path)
