"""Worker processes for scclust's parallel work: fresh interpreters running :func:`_main`.

Not :mod:`multiprocessing`: its ``spawn`` start method re-imports the parent's main module in every
child, which runs an unguarded user script (one without a main guard) a second time, and fails
outright for scripts read from stdin; ``fork`` can deadlock a process that holds threads (BLAS,
numba). A worker here is a fresh interpreter with the parent's ``sys.path`` that only imports
scclust and the functions it is sent; it ignores Ctrl-C (the parent stops it) and exits when the
parent dies.

Protocol: the parent writes pickled ``("module:function", args)`` calls to the child's stdin; the child
runs them in order and writes pickled ``("ok", value)`` or ``("error", "Type: message")`` to its
original stdout. Anything a library prints in the child goes to stderr.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from importlib import import_module
from typing import Any

_PROTOCOL = pickle.HIGHEST_PROTOCOL


class WorkerError(RuntimeError):
    """A call failed in the worker, or the worker died."""


class Worker:
    """One worker process; calls run in the order they are submitted."""

    def __init__(self) -> None:
        # the parent's exact sys.path (as multiprocessing's spawn does); -P keeps the child's own
        # current directory off it, so a user's "umap.py" cannot shadow a dependency in the worker only
        boot = f"import sys; sys.path[:] = {sys.path!r}; from scclust._worker import _main; _main()"
        self.proc = subprocess.Popen([sys.executable, "-P", "-c", boot], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.pending = 0

    def submit(self, target: str, *args: Any) -> None:
        """Queue ``target(*args)`` (``target`` = ``"package.module:function"``)."""
        data = pickle.dumps((target, args), protocol=_PROTOCOL)  # fails here, before the stream is touched
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except OSError as err:
            self.close(kill=True)
            raise WorkerError(f"worker exited ({err})") from err
        except BaseException:  # interrupted mid-message: the stream is unusable
            self.close(kill=True)
            raise
        self.pending += 1

    def result(self) -> Any:
        """The value of the oldest submitted call; :class:`WorkerError` if it failed or the worker died."""
        try:
            status, value = pickle.load(self.proc.stdout)
        except (EOFError, pickle.UnpicklingError, OSError, ValueError) as err:
            raise WorkerError(f"worker exited (status {self.proc.poll()})") from err
        self.pending -= 1
        if status != "ok":
            raise WorkerError(value)
        return value

    def call(self, target: str, *args: Any) -> Any:
        """Submit and wait; only when no other call is outstanding."""
        if self.pending:
            raise WorkerError(f"{self.pending} earlier call(s) still pending")
        self.submit(target, *args)
        return self.result()

    def raise_priority(self) -> None:
        """Give every thread of the worker this process' scheduling priority (a low-priority warm-up
        that a call now waits for must not be starved by the caller's own work). Linux only; where the
        OS refuses (an unprivileged user may not lower a niceness), the threads keep theirs."""
        base = os.getpriority(os.PRIO_PROCESS, 0)
        try:
            tids = os.listdir(f"/proc/{self.proc.pid}/task")
        except OSError:
            return
        for tid in tids:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, int(tid), base)

    def close(self, *, kill: bool = False) -> None:
        """End the worker: kill it at once when asked or when it is idle (every result received: nothing
        of it is left to keep, and its interpreter's teardown, ~1 s with umap-learn loaded, is not
        waited for); otherwise close its input, so that it exits after its queued calls."""
        if kill or self.pending == 0 or self.proc.poll() is not None:
            self.proc.kill()
        else:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                f.close()


def priority_restorable() -> bool:
    """Whether this process may set a thread's niceness back to its own after raising it (root, or an
    ``RLIMIT_NICE`` that allows it): only then is work started at a low priority that a later call may
    have to wait for."""
    if not hasattr(os, "setpriority"):
        return False
    if os.geteuid() == 0:
        return True
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NICE)[0]
    return soft == resource.RLIM_INFINITY or 20 - soft <= os.getpriority(os.PRIO_PROCESS, 0)


def available_cpus() -> int:
    """CPUs this process may use (its affinity mask where the OS has one, e.g. a batch job's allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _exit_with_parent(parent: int) -> None:
    """Daemon thread: a worker whose parent died (killed, no clean-up) stops instead of running on."""
    while True:
        time.sleep(1)
        if os.getppid() != parent:
            os._exit(1)


def _main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops its workers
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
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
            reply = pickle.dumps(("ok", getattr(import_module(module), name)(*args)), protocol=_PROTOCOL)
        except Exception as err:
            reply = pickle.dumps(("error", f"{type(err).__name__}: {err}"), protocol=_PROTOCOL)
        try:
            out.write(reply)
            out.flush()
        except BrokenPipeError:  # the parent is gone
            return
