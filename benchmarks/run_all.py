"""Run every benchmark in turn, then repeat their PASS/FAIL lines as a summary.

Run: ``python benchmarks/run_all.py`` (about 10 minutes on 2 cores, most of it the fleet scan and the long
log; ``--quick`` leaves those two out). Exits 0 whatever the verdicts. ``confusion.py`` (the story matrix) is
not a speed benchmark and is run on its own.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("bench_start.py", "bench_replay.py", "bench_checkpoint.py", "bench_recorder.py", "bench_sweep.py",
           "bench_fit.py", "bench_logs.py", "bench_longlog.py", "bench_scan.py", "bench_remote.py")
SLOW = ("bench_longlog.py", "bench_scan.py")


def main() -> None:
    verdicts = []
    quick = "--quick" in sys.argv[1:]
    for name in SCRIPTS:
        if quick and name in SLOW:
            continue
        if not (HERE / name).exists():
            continue
        out = subprocess.run([sys.executable, str(HERE / name)], capture_output=True, text=True)
        sys.stdout.write(out.stdout)
        sys.stderr.write(out.stderr)
        if out.returncode != 0:
            verdicts.append(f"{name}: exited {out.returncode}")
        verdicts += [f"{name}: {line.strip()}" for line in out.stdout.splitlines()
                     if line.rstrip().endswith(("PASS", "FAIL"))]
        print()
    print("summary:")
    for line in verdicts:
        print(f"  {line}")


if __name__ == "__main__":
    main()
