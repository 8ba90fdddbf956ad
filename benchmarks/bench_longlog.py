"""Long logs end to end (issue 10): a 1,000,000-row CSV through ``plateau-trace --format json`` and ``--format csv``.

The log is ``epoch,val_loss,lr`` written with ``repr``: a seeded synthetic loss (30% of the steps improve by
0.05%, noise of 0.3%), the lr column as a real torch ``ReduceLROnPlateau(patience=5)`` gives it before each step
(written by the engine, which is checked bit for bit against torch on the first 100,000 steps here). Timed,
whole process, median of ``--rounds`` (default 3) after one warm-up:

  (a) ``plateau-trace big.csv --lr 0.1 --patience 5 --format json > out.json``
  (b) the same with ``--format csv``
  (c) baseline: ``pandas.read_csv(big.csv, float_precision="round_trip")`` then ``to_json(orient="records",
      lines=True)``: reading and writing the same rows with a C parser and writer, no analysis.

Peak RSS of each process comes from ``os.wait4``. Targets: (a) and (b) within 5 s and 500 MB on 2 cores; the
ratio to (c) is printed so that a loaded machine can be told from a slow tool. Run:
``python benchmarks/bench_longlog.py [--rows N] [--rounds R] [--keep]``. Exits 0 whatever the verdicts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"
TARGET_S, TARGET_MB = 5.0, 500


def make_log(path: Path, rows: int) -> None:
    """The seeded log; the lr column from the engine, checked against torch on a prefix."""
    from plateau_forensics.engine import run
    from plateau_forensics.state import PlateauConfig

    rng = random.Random(0)
    m, metrics = 1.0, []
    for _ in range(rows):
        if rng.random() < 0.3:
            m *= 0.9995
        metrics.append(m * (1 + rng.uniform(-3e-3, 3e-3)))
    t = run(PlateauConfig(patience=5), metrics, (0.1,))
    lrs = [0.1] + [lr[0] for lr in t._cols.lrs[:-1]]
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=5)
    for i in range(min(rows, 100_000)):
        assert opt.param_groups[0]["lr"] == lrs[i], f"engine and torch differ at step {i}"
        sched.step(metrics[i])
    with open(path, "w") as f:
        f.write("epoch,val_loss,lr\n")
        f.writelines(f"{i},{metrics[i]!r},{lrs[i]!r}\n" for i in range(rows))


def timed(cmd: list[str], out: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (MB) of one process writing its stdout to ``out``."""
    with open(out, "w") as f:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.PIPE)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {p.stderr.read().decode()[-2000:] if p.stderr else ''}")
    return wall, ru.ru_maxrss // 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="leave the log in benchmarks/_work/ for the next run")
    args = ap.parse_args()
    WORK.mkdir(exist_ok=True)
    log = WORK / f"long_{args.rows}.csv"
    if not log.exists():
        t0 = time.perf_counter()
        make_log(log, args.rows)
        print(f"wrote {log} ({log.stat().st_size / 2**20:.0f} MB) in {time.perf_counter() - t0:.1f} s")
    tool = str(Path(sysconfig.get_path("scripts")) / "plateau-trace")
    if not Path(tool).exists():
        tool = shutil.which("plateau-trace") or "plateau-trace"
    base = [tool, str(log), "--lr", "0.1", "--patience", "5"]
    cmds = {
        "json": [*base, "--format", "json"],
        "csv": [*base, "--format", "csv"],
        "pandas": [sys.executable, "-c", "import sys, pandas as pd; pd.read_csv(sys.argv[1], "
                   "float_precision='round_trip').to_json(sys.stdout, orient='records', lines=True)", str(log)],
    }
    results: dict[str, list[tuple[float, int]]] = {k: [] for k in cmds}
    for k, cmd in cmds.items():  # warm-up: page cache, .pyc files
        timed(cmd, WORK / f"out.{k}")
    for _ in range(args.rounds):
        for k, cmd in cmds.items():
            results[k].append(timed(cmd, WORK / f"out.{k}"))
    doc = json.loads((WORK / "out.json").read_text())
    assert len(doc["steps"]) == args.rows and doc["verdict"]["story"] == [], "the trace is not the clean story"
    with open(WORK / "out.csv") as f:
        assert sum(1 for line in f if line.strip()) == args.rows + 1
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {args.rows:,} rows, "
          f"median of {args.rounds}")
    base_s = statistics.median(w for w, _ in results["pandas"])
    print(f"  baseline pandas read+write: {base_s:.2f} s, {max(m for _, m in results['pandas'])} MB")
    for k in ("json", "csv"):
        wall = statistics.median(w for w, _ in results[k])
        mb = max(m for _, m in results[k])
        ok = wall <= TARGET_S and mb <= TARGET_MB
        print(f"  --format {k}: {wall:.2f} s (min {min(w for w, _ in results[k]):.2f}), {mb} MB peak, "
              f"{wall / base_s:.2f}x the baseline; target <= {TARGET_S:g} s and <= {TARGET_MB} MB: "
              f"{'PASS' if ok else 'FAIL'}")
    for k in cmds:
        (WORK / f"out.{k}").unlink(missing_ok=True)
    if not args.keep:
        log.unlink()


if __name__ == "__main__":
    main()
