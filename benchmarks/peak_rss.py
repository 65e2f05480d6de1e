"""Run a command; print its wall time and the peak of the summed RSS of its whole process tree.

    python benchmarks/peak_rss.py scclust run configs/atlas.yaml --input integrated_1000000.h5ad --no-resume

``ru_maxrss`` sees one process at a time; a run with worker processes (Leiden resolutions, the UMAP
worker, Dask workers) needs the sum. The tree (the command and every descendant) is read from
``/proc`` every 0.5 s (Linux). With ``--timeline FILE`` each sample is written as ``seconds GB``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def tree_rss(pid: int) -> int:
    """Summed resident set size (bytes) of ``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
        stack += children.get(p, [])
    return total


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
    peak = 0
    while proc.poll() is None:
        rss = tree_rss(proc.pid)
        peak = max(peak, rss)
        if timeline:
            print(f"{time.time() - t0:.1f} {rss / 1e9:.2f}", file=timeline, flush=True)
        time.sleep(0.5)
    print(f"peak_rss: exit {proc.returncode}, wall {time.time() - t0:.1f} s, peak RSS of the process tree "
          f"{peak / 1e9:.2f} GB", file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
