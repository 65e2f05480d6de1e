"""The memory pre-flight check: each stage's estimated peak, against the run's ``memory_limit``.

A stage declares ``memory(params, sizes) -> Estimate`` (:attr:`scclust.stages.Stage.memory`): the
memory its peak adds on top of what the run already holds, from the sizes alone (cells, dimensions,
neighbours), with a breakdown and the options that lower it. Before any stage runs, the runner adds
each stage's estimate to the memory this process holds (and what earlier stages keep: a graph) and
stops with a :class:`~scclust._errors.ResourceError` (exit 2) when a stage would not fit. The
formulas are upper bounds calibrated on measured peaks (:doc:`/guide/large-data`, "Memory").
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Estimate",
    "Sizes",
    "available_memory",
    "check_fits",
    "fmt_bytes",
    "free_memory",
    "high_water_mark",
    "memory_limit",
    "parse_memory_limit",
    "process_rss",
]

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
}
#: the forms ``memory_limit`` takes, for error messages
LIMIT_FORMS = "'auto' (the memory available to this process), a size such as '16GB', '500MB' or '8GiB', or bytes"


def parse_memory_limit(value: Any) -> int | None:
    """Bytes of a ``memory_limit`` value (``None`` for ``"auto"``): ``"16GB"`` (10^9), ``"8GiB"``
    (2^30), ``"500 MB"``, ``2e9`` or ``2000000000``. Raises ``ValueError`` naming the valid forms."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    if isinstance(value, bool):
        raise ValueError(f"must be {LIMIT_FORMS}; got {value!r}")
    if isinstance(value, int | float):
        number, unit = float(value), ""
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
        if m is None or m.group(2).lower() not in _UNITS:
            raise ValueError(f"must be {LIMIT_FORMS}; got {value!r}")
        number, unit = float(m.group(1)), m.group(2).lower()
    out = int(number * _UNITS[unit])
    if out <= 0:
        raise ValueError(f"must be positive: {LIMIT_FORMS}; got {value!r}")
    return out


def fmt_bytes(n: float) -> str:
    """``0.32 GB`` from 1e8 bytes up, else ``45 MB`` (decimal units, as ``memory_limit`` reads them)."""
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def process_rss() -> int:
    """Resident memory of this process now (bytes)."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def high_water_mark() -> int:
    """This process's peak resident memory so far (``VmHWM``, Linux), bytes; 0 where unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


#: the run's ``memory_limit`` in bytes while a run sets one (:func:`memory_limit`), else None
_LIMIT: int | None = None


@contextmanager
def memory_limit(limit: int | None) -> Iterator[None]:
    """Within the block, :func:`available_memory` is at most ``limit`` bytes (``None``: no limit
    beyond the machine's): the run sets its ``memory_limit`` so that every ``auto`` choice that
    weighs memory (Leiden's worker processes) keeps to it."""
    global _LIMIT
    before, _LIMIT = _LIMIT, limit
    try:
        yield
    finally:
        _LIMIT = before


def free_memory() -> tuple[int, str]:
    """``(bytes, what)``: what this process may still allocate, :func:`available_memory` minus what
    it holds now (with its worker processes, the memory a run of ``memory_limit`` may add)."""
    total, what = available_memory()
    return max(0, total - process_rss()), what


def check_fits(what: str, estimate: Estimate) -> None:
    """Raise :class:`~scclust._errors.ResourceError` (one line: the estimate, its breakdown, the memory
    free, the options) when ``estimate`` exceeds what this process may still allocate
    (:func:`free_memory`: within a run, its ``memory_limit``). For a step whose size is known only
    when it starts (a subclustering's selected cells); the stages' sizes known before a run starts
    are checked by the run's pre-flight."""
    from ._errors import ResourceError

    room, where = free_memory()
    if estimate.total > room:
        more = "or raise memory_limit" if _LIMIT is not None else "or run on a machine with more memory"
        raise ResourceError(
            f"{what} would not fit in memory: about {fmt_bytes(estimate.total)} at its peak ({estimate.breakdown()}), "
            f"{fmt_bytes(room)} free ({where}); options: {estimate.options + ', ' if estimate.options else ''}{more}"
        )


def available_memory() -> tuple[int, str]:
    """``(bytes, what)``: the memory this process may use, ``memory_limit: auto``: the machine's
    available memory (MemAvailable) plus what this process holds already, or less when a cgroup
    (a container, a batch job) sets a lower limit (its limit minus its other processes' use), or
    when a run's ``memory_limit`` is lower (:func:`memory_limit`)."""
    import psutil

    rss = process_rss()
    best, what = int(psutil.virtual_memory().available) + rss, "the memory available"
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and limit < 2**60:
            room = limit - (usage or 0) + rss
            if room < best:
                best, what = room, f"the cgroup's limit of {fmt_bytes(limit)}"
            break
    if _LIMIT is not None and best > _LIMIT:
        best, what = _LIMIT, f"memory_limit {fmt_bytes(_LIMIT)}"
    return best, what


@dataclass(frozen=True)
class Estimate:
    """A stage entry's estimated peak memory on top of what the run holds.

    Attributes
    ----------
    parts
        ``(what, bytes)`` adding up to the peak: ``("kNN graph 1,000,000 x 20 (ids + distances)", 2.4e8)``.
    options
        How to lower it (one clause: ``"fewer n_neighbors, or the sketch stage"``).
    kept
        Bytes still held after the stage (a graph), counted under every later stage.
    sketch_cells
        A stage that draws a sketch: the cells the ``on_sketch`` stages after it run on.
    graphs
        Graphs the entry makes: ``{key: stored entries of its connectivities}`` (an upper bound).
    """

    parts: tuple[tuple[str, float], ...]
    options: str = ""
    kept: float = 0.0
    sketch_cells: int | None = None
    graphs: Mapping[str, int] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return float(sum(b for _, b in self.parts))

    def breakdown(self) -> str:
        return "; ".join(f"{what} {fmt_bytes(b)}" for what, b in self.parts)

    def record(self) -> dict[str, Any]:
        """The manifest's ``memory_estimate`` of a stage (MB of 2^20 bytes, as ``peak_rss_mb``)."""
        return {"added_mb": round(self.total / 2**20, 1), "breakdown": self.breakdown()}


@dataclass(frozen=True)
class Sizes:
    """The sizes a stage's estimate reads, known before any stage runs.

    Attributes
    ----------
    n_obs
        Cells the stage entry runs on (a sketch's for the ``on_sketch`` stages after ``sketch``).
    n_all
        Cells of the input.
    dims
        Widths of the input's ``.obsm`` embeddings (an embedding made during the run: 50 assumed).
    n_clusterings
        Clusterings made by the ``on_sketch`` stages (projected to every cell after them).
    graphs
        Stored entries of each graph's connectivities (``{key: entries}``): the input's, and those
        earlier entries make.
    n_vars
        Genes of the input's ``.X``.
    nnz
        Stored values of the input's ``.X`` in memory (all of them when dense); ``None`` when the
        input is read out of core (the counts stay on disk).
    """

    n_obs: int
    n_all: int
    dims: Mapping[str, int] = field(default_factory=dict)
    n_clusterings: int = 0
    graphs: Mapping[str, int] = field(default_factory=dict)
    n_vars: int = 0
    nnz: int | None = None

    def graph_entries(self, key: str) -> int:
        """Stored entries of graph ``key``; one of 15 neighbours (scanpy's default) when unknown."""
        return self.graphs.get(key, 2 * self.n_obs * 14)

    def dim(self, rep: str, n_pcs: int | None = None) -> int:
        """Columns a stage reads from ``rep`` (``n_pcs`` of them when given)."""
        width = self.dims.get(rep, 50)
        return min(width, n_pcs) if n_pcs else width


def cells(n: int) -> str:
    """``1,000,000`` (for breakdowns)."""
    return f"{n:,}"
