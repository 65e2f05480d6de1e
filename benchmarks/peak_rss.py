"""Run a command; print its wall time and the peak of the summed RSS of its whole process tree.

    python benchmarks/peak_rss.py scclust run configs/atlas.yaml --input integrated_1000000.h5ad --no-resume

``ru_maxrss`` sees one process at a time; a run with worker processes (Leiden resolutions, the UMAP
worker, Dask workers) needs the sum. The tree (the command and every descendant) is read from
``/proc`` every 0.5 s (Linux). With ``--timeline FILE`` each sample is written as
``seconds GB role=GB ...``: the total, then each process's RSS over 50 MB named by its role (``main``
for the command itself, ``worker`` for a multiprocessing child such as a local Dask cluster's worker,
``scclust-worker`` for scclust's UMAP / Leiden workers, else the program's name; numbered when
repeated), so a peak can be attributed. At exit the peak is printed with its breakdown.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def _role(pid: int, root: int) -> str:
    if pid == root:
        return "main"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    if "scclust._worker" in cmd:  # scclust's own workers (the background UMAP, parallel Leiden)
        return "scclust-worker"
    if "multiprocessing" in cmd:  # spawned by multiprocessing: a local Dask cluster's workers
        return "worker"
    return os.path.basename(cmd.split(" ", 1)[0]) or "?"


def tree_rss(pid: int) -> dict[int, int]:
    """Resident set size (bytes) of ``pid`` and each of its descendants, by pid."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, stack = {}, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        out[p] = int(line.split()[1]) * 1024
        except OSError:
            pass
        stack += children.get(p, [])
    return out


def main() -> int:
    args = sys.argv[1:]
    timeline = None
    if args[:1] == ["--timeline"]:
        timeline, args = open(args[1], "w"), args[2:]  # noqa: SIM115
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    t0 = time.time()
    proc = subprocess.Popen(args)
    peak, at_peak, roles = 0, "", {}
    while proc.poll() is None:
        by_pid = tree_rss(proc.pid)
        rss = sum(by_pid.values())
        if timeline or rss > peak:
            parts = []
            for p, v in sorted(by_pid.items()):
                if p not in roles:
                    role = _role(p, proc.pid)
                    roles[p] = f"{role}{sum(r.startswith(role) for r in roles.values()) or ''}"
                if v > 50e6:
                    parts.append(f"{roles[p]}={v / 1e9:.2f}")
            line = f"{time.time() - t0:.1f} {rss / 1e9:.2f} {' '.join(parts)}"
            if timeline:
                print(line, file=timeline, flush=True)
            if rss > peak:
                peak, at_peak = rss, line
        time.sleep(0.5)
    print(
        f"peak_rss: exit {proc.returncode}, wall {time.time() - t0:.1f} s, peak RSS of the process tree "
        f"{peak / 1e9:.2f} GB (at {at_peak.split(' ', 2)[0]} s: {at_peak.split(' ', 2)[-1]})",
        file=sys.stderr,
    )
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
