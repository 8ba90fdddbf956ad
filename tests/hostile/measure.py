"""Run a command and print its exit code, wall time and peak RSS as one JSON line.

Linux charges a new process with the peak RSS of the memory map it was exec'ed from, so a child of a big
pytest process reports pytest's peak. Started through this small intermediate, the command's own peak is seen.
Usage: ``python measure.py TIMEOUT CMD ARGS...``; the command's stderr goes to this process's stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time


def main() -> None:
    timeout, argv = float(sys.argv[1]), sys.argv[2:]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    timer = threading.Timer(timeout, proc.kill)  # a hang is reported as a kill, never blocks the caller
    timer.start()
    _, status, usage = os.wait4(proc.pid, 0)
    timer.cancel()
    print(
        json.dumps(
            {
                "exit": os.waitstatus_to_exitcode(status),
                "seconds": time.perf_counter() - t0,
                "maxrss_mb": usage.ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
