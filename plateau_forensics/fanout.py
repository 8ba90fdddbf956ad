"""A long output's pieces rendered on two cores, yielded in order.

A million-row trace's csv or json text is made a chunk at a time by pure-Python string work that one core does
in about three seconds. ``in_order`` forks a helper that renders the last chunks (``HELPER_SHARE``) into a
temporary file while this process renders, and its caller writes, the first ones; then the helper's text
follows. The helper shares the trace with this process (fork, copy on write): nothing is pickled or sent but
the text.

Only where that is safe: Linux (``os.fork``), no other thread in this process, native ones included (a forked
child keeps only the calling thread: a lock another thread held stays locked in it), and enough chunks to be
worth it. The CLI keeps numpy's BLAS from starting a thread pool (``OPENBLAS_NUM_THREADS=1`` unless set). Anywhere else, and if the helper fails for any reason
(or is still running long after this process finished its share: it is then killed), the chunks are rendered
here, in order: the same text, only slower.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

__all__ = ["in_order", "can_fork"]

#: Below this many chunks the helper's start and the copy of its text cost more than they save.
MIN_CHUNKS = 4
#: The helper's share of the chunks, in percent: less than half, since this process also writes its own text
#: and then copies the helper's, and the helper pays for the pages it touches (copy on write).
HELPER_SHARE = 45
#: Seconds the helper may take beyond four times what this process took for its own chunks.
HELPER_GRACE = 30.0
#: The helper's text is read back this many characters at a time.
_READ = 1 << 23


def can_fork() -> bool:
    """Whether a forked helper may render here: Linux, and this thread the only one in the process, counted by
    the kernel (a library's native threads, JAX's or a BLAS pool's, are invisible to ``threading``)."""
    if not (sys.platform.startswith("linux") and hasattr(os, "fork")) or threading.active_count() != 1:
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:  # no /proc: the threads cannot be counted
        return False


def in_order(render: Callable[[int], str], n: int, *, parallel: bool | None = None) -> Iterator[str]:
    """``render(k)`` for ``k`` in ``range(n)``, in order; the last ``HELPER_SHARE`` percent rendered meanwhile by a
    forked helper when ``parallel`` (None: ``can_fork()`` and at least ``MIN_CHUNKS`` chunks)."""
    if parallel is None:
        parallel = n >= MIN_CHUNKS and can_fork()
    if not parallel or n < 2:
        yield from map(render, range(n))
        return
    half = n - n * HELPER_SHARE // 100  # the helper's chunks: the last HELPER_SHARE percent
    with tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as spool:
        pid = _start(render, range(half, n), spool)
        try:
            t0 = time.monotonic()
            yield from map(render, range(half))
            # the helper does less than this process did: one that is far slower is stuck, and is stopped
            ok = pid is not None and _succeeded(pid, HELPER_GRACE + 4 * (time.monotonic() - t0))
            pid = None  # reaped
        finally:
            if pid is not None:  # the caller stopped reading early (or this process failed): no helper is left
                _stop(pid)
        if ok:
            spool.seek(0)
            while piece := spool.read(_READ):
                yield piece
        else:
            yield from map(render, range(half, n))


def _start(render: Callable[[int], str], chunks: range, spool: object) -> int | None:
    """Fork the helper that writes ``render(k)`` for ``chunks`` to ``spool``; its pid (None: no fork)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError:
        return None
    if pid:
        return pid
    code = 1
    try:  # the helper: never returns into the caller's code, whatever happens
        for k in chunks:
            spool.write(render(k))  # type: ignore[attr-defined]
        spool.flush()  # type: ignore[attr-defined]
        code = 0
    finally:
        os._exit(code)


def _succeeded(pid: int, grace: float) -> bool:
    """The helper exited cleanly within ``grace`` seconds; else it is killed (and its chunks rendered here)."""
    deadline = time.monotonic() + grace
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) == 0
        if time.monotonic() > deadline:
            _stop(pid)
            return False
        time.sleep(0.002)


def _stop(pid: int) -> None:
    """Kill the helper and reap it."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
