"""scclust._worker: fresh-interpreter workers with pickled calls over pipes."""

from __future__ import annotations

import pickle

import pytest

from scclust._worker import Worker, WorkerError


def test_calls_in_order_errors_and_death(tmp_path, monkeypatch):
    (tmp_path / "scclust.py").write_text("raise SystemExit('a local file must not shadow the package')\n")
    monkeypatch.chdir(tmp_path)
    w = Worker()
    try:
        w.submit("math:sqrt", 16.0)
        w.submit("operator:add", 2, 3)
        assert (w.result(), w.result()) == (4.0, 5)
        assert w.call("builtins:print", "library chatter goes to stderr, not into the protocol") is None
        with pytest.raises(WorkerError, match="ValueError: math domain error"):
            w.call("math:sqrt", -1.0)
        assert w.call("operator:mul", 6, 7) == 42  # still usable after a failed call
        with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
            w.call("operator:add", "x", lambda: 0)  # cannot be sent: nothing reaches the worker
        assert w.call("operator:add", "hello", "hello") == "hellohello"  # the stream is intact
        w.proc.kill()
        w.proc.wait()
        with pytest.raises(WorkerError, match="worker exited"):
            w.call("math:sqrt", 4.0)
    finally:
        w.close(kill=True)
    assert w.proc.poll() is not None


def test_raise_priority_gives_the_worker_threads_the_callers_niceness():
    """A low-priority warm-up that a call waits for is raised back to the caller's priority (else the
    call waits on work the caller's own processes starve)."""
    import os

    from scclust._worker import priority_restorable

    if not (hasattr(os, "setpriority") and os.path.isdir("/proc/self/task")):
        pytest.skip("per-thread priorities are a Linux feature")
    w = Worker()
    try:
        base = os.getpriority(os.PRIO_PROCESS, 0)
        assert w.call("os:nice", 7) == min(base + 7, 19)  # the worker's main thread lowers itself
        w.raise_priority()
        now = w.call("os:nice", 0)
        if priority_restorable():
            assert now == base
        else:  # the OS refuses; _warm_up then never lowers its priority in the first place
            assert now == min(base + 7, 19)
    finally:
        w.close()
