"""``fanout.in_order``: a long output's chunks rendered on two cores come out as the serial rendering does.

Under pytest-xdist the worker runs threads, so ``can_fork`` is False there and the CLI renders serially; the
forked path is exercised in a fresh interpreter (one thread), as the CLI runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from plateau_forensics import fanout

ROOT = Path(__file__).resolve().parent.parent


def render(k: int) -> str:
    return f"chunk {k}: " + "x" * (k * 1000) + "\n"


def test_serial_is_every_chunk_in_order() -> None:
    assert "".join(fanout.in_order(render, 9, parallel=False)) == "".join(map(render, range(9)))
    assert list(fanout.in_order(render, 0, parallel=False)) == []


def test_no_fork_while_a_native_thread_runs() -> None:
    """A thread ``threading`` does not know about (numpy's BLAS pool, JAX's) is counted by the kernel."""
    code = ("import numpy, os\nfrom plateau_forensics import fanout\n"
            "print(len(os.listdir('/proc/self/task')), fanout.can_fork())")
    if not sys.platform.startswith("linux"):
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "2"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    threads, forks = p.stdout.split()
    assert int(threads) > 1 and forks == "False", p.stdout + p.stderr


def test_no_fork_while_another_thread_runs() -> None:
    stop = threading.Event()
    th = threading.Thread(target=stop.wait)
    th.start()
    try:
        assert not fanout.can_fork()
    finally:
        stop.set()
        th.join()


SCRIPT = textwrap.dedent(
    """
    import json, math, os, sys
    import plateau_forensics as pf
    from plateau_forensics import fanout, report

    assert fanout.can_fork(), "one thread on Linux: the forked path must be taken"
    parent = os.getpid()

    def render(k):
        return f"chunk {k} " + str(k * k) * 100 + "\\n"

    def failing(k):  # the helper dies on its first chunk; this process must render its chunks instead
        if os.getpid() != parent:
            raise RuntimeError("helper failure")
        return render(k)

    def stuck(k):  # the helper never finishes; after the grace it is killed and its chunks rendered here
        if os.getpid() != parent:
            import time
            time.sleep(3600)
        return render(k)

    n = 11
    serial = "".join(map(render, range(n)))
    out = {
        "forked": "".join(fanout.in_order(render, n, parallel=True)) == serial,
        "helper failed": "".join(fanout.in_order(failing, n, parallel=True)) == serial,
    }
    fanout.HELPER_GRACE = 0.5
    out["helper stuck"] = "".join(fanout.in_order(stuck, n, parallel=True)) == serial

    def has_child():  # a child, running or not yet reaped
        try:
            os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        return True

    pieces = fanout.in_order(stuck, n, parallel=True)
    first = next(pieces)
    had_helper = has_child()
    pieces.close()  # the caller stops reading early: the helper is killed and reaped, not left behind
    out["early stop"] = first == render(0) and had_helper and not has_child()
    metrics = [1.0 - (i % 17) * 1e-3 if i % 31 else math.nan for i in range(report.EXPLAIN_ROWS + 333)]
    t = pf.replay(metrics, pf.PlateauConfig(patience=3, factor=0.5, min_lr=1e-4), lrs=[0.1, 0.05])
    report._CHUNK = 1000
    texts, in_order = {}, fanout.in_order
    for parallel in (True, False):
        fanout.in_order = lambda render, n, p=parallel: in_order(render, n, parallel=p)
        texts[parallel] = (report.to_csv(t), report.to_json(t))
    out["trace"] = texts[True] == texts[False]
    out["pid"] = os.getpid() == parent
    print(json.dumps(out))
    """
)


def test_forked_rendering_matches_serial() -> None:
    if not sys.platform.startswith("linux"):
        return  # no fork: in_order renders serially (the test above)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}  # as the CLI sets it
    p = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    import json

    assert json.loads(p.stdout.strip().splitlines()[-1]) == {
        "forked": True, "helper failed": True, "helper stuck": True, "early stop": True, "trace": True,
        "pid": True}
