"""Run every benchmark in turn, then repeat their PASS/FAIL lines as a summary.

Run: ``python benchmarks/run_all.py`` (about 1 minute on 2 cores). Exits 0 whatever the verdicts.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("bench_start.py", "bench_replay.py", "bench_checkpoint.py")


def main() -> None:
    verdicts = []
    for name in SCRIPTS:
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
