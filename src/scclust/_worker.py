"""Worker processes for scclust's parallel work, started as ``python -m scclust._worker``.

Not :mod:`multiprocessing`: its ``spawn`` start method re-imports the parent's main module in every
child, which runs an unguarded user script (no ``if __name__ == "__main__":``) a second time, and
fails outright for scripts read from stdin; ``fork`` can deadlock a process that holds threads (BLAS,
numba). A worker here is a fresh interpreter that only imports scclust and the functions it is sent.

Protocol: the parent writes pickled ``("module:function", args)`` calls to the child's stdin; the child
runs them in order and writes pickled ``("ok", value)`` or ``("error", "Type: message")`` to its
original stdout. Anything a library prints in the child goes to stderr.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from importlib import import_module
from pathlib import Path
from typing import Any

_PROTOCOL = pickle.HIGHEST_PROTOCOL


class WorkerError(RuntimeError):
    """A call failed in the worker, or the worker died."""


class Worker:
    """One worker process; calls run in the order they are submitted."""

    def __init__(self) -> None:
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[1])  # scclust importable as in this process
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            # -P: the current directory is not put on sys.path, so a local "scclust.py" cannot shadow the package
            [sys.executable, "-P", "-m", "scclust._worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )
        self.pending = 0

    def submit(self, target: str, *args: Any) -> None:
        """Queue ``target(*args)`` (``target`` = ``"package.module:function"``)."""
        try:
            pickle.dump((target, args), self.proc.stdin, protocol=_PROTOCOL)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as err:
            raise WorkerError(f"worker exited ({err})") from err
        self.pending += 1

    def result(self) -> Any:
        """The value of the oldest submitted call; :class:`WorkerError` if it failed or the worker died."""
        try:
            status, value = pickle.load(self.proc.stdout)
        except (EOFError, pickle.UnpicklingError, OSError) as err:
            raise WorkerError(f"worker exited (status {self.proc.poll()})") from err
        self.pending -= 1
        if status != "ok":
            raise WorkerError(value)
        return value

    def call(self, target: str, *args: Any) -> Any:
        """Submit and wait (after the calls already queued)."""
        self.submit(target, *args)
        while self.pending > 1:
            self.result()
        return self.result()

    def close(self, *, kill: bool = False) -> None:
        """End the worker: close its input (it exits when idle), or kill it at once."""
        if kill or self.proc.poll() is not None:
            self.proc.kill()
        else:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


def _main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops its workers
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # prints from libraries must not corrupt the protocol
    inp = sys.stdin.buffer
    while True:
        try:
            target, args = pickle.load(inp)
        except EOFError:
            return
        module, _, name = target.partition(":")
        try:
            reply = ("ok", getattr(import_module(module), name)(*args))
        except Exception as err:  # noqa: BLE001 - reported to the parent, which decides
            reply = ("error", f"{type(err).__name__}: {err}")
        pickle.dump(reply, out, protocol=_PROTOCOL)
        out.flush()


if __name__ == "__main__":
    _main()
