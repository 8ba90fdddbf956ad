"""Reading long loss logs: ``read_losses`` on 1,000,000 rows against a plain Python reader of the same file.

Targets (issues 10 and 14): 1,000,000 rows of ``epoch,val_loss,lr`` (values written with ``repr``) read as CSV
in at most the time of a plain reader measured in the same run (``csv.reader``, then ``float()`` of every cell
into lists: the least a Python reader does), within 500 MB peak RSS for the whole process. As JSON Lines, and
as a CSV printed with ``.4f``/``.6f`` (every column rounded, so the precision of each is computed from its
texts), within 1.5x of the same kind of plain reader (``json.loads`` per line for JSON Lines: the same C
scanner runs per line in both; ours keeps each object's pairs to see a key named twice, and the texts) and
the same 500 MB.

Each reader runs as its own process (``python -c``), interleaved over ``--repeats`` rounds after a warm-up;
the verdict uses medians of the in-process read time (which includes importing numpy and pandas: the plain
readers import nothing) and the largest peak RSS seen. Before timing, the script checks that ``read_losses``
and the plain reader give the same floats, bit for bit. Run: ``python benchmarks/bench_logs.py [--rows N]
[--repeats N] [--keep]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

WORK = Path(__file__).resolve().parent / "_work"  # gitignored
TARGET_RATIO = {"csv": 1.0, "jsonl": 1.5, "csv .4f": 1.5}
TARGET_RSS_MB = 500.0

# Each process reports its own peak RSS (VmHWM): a child's ru_maxrss would also count the peak of the
# process it was started from (this script, after check_same read every log).
HWM = """
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

OURS = (
    HWM
    + """
import json, sys, time
t0 = time.perf_counter()
from plateau_forensics.losses import read_losses
t1 = time.perf_counter()
log = read_losses(sys.argv[1])
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "read": t2 - t1, "rows": len(log), "hwm": hwm()}))
"""
)

BASE_CSV = (
    HWM
    + """
import csv, json, sys, time
t0 = time.perf_counter()
t1 = time.perf_counter()
with open(sys.argv[1], newline="") as f:
    rows = csv.reader(f)
    header = next(rows)
    cols = [[] for _ in header]
    for row in rows:
        for col, cell in zip(cols, row):
            col.append(float(cell))
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "read": t2 - t1, "rows": len(cols[0]), "hwm": hwm()}))
"""
)

BASE_JSONL = (
    HWM
    + """
import json, sys, time
t0 = time.perf_counter()
t1 = time.perf_counter()
cols = {}
with open(sys.argv[1]) as f:
    for line in f:
        for key, value in json.loads(line).items():
            cols.setdefault(key, []).append(float(value))
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "read": t2 - t1, "rows": len(next(iter(cols.values()))), "hwm": hwm()}))
"""
)


def write_logs(rows: int) -> dict[str, Path]:
    """The three logs, seeded: the same losses and lrs in each (the lr halves every 10% of the rows)."""
    WORK.mkdir(exist_ok=True)
    paths = {
        "csv": WORK / f"log_{rows}.csv",
        "jsonl": WORK / f"log_{rows}.jsonl",
        "csv .4f": WORK / f"log_{rows}_4f.csv",
    }
    if all(p.exists() for p in paths.values()):
        return paths
    rng = random.Random(10)
    losses = [rng.random() for _ in range(rows)]
    lrs = [0.1 * 0.5 ** (10 * i // rows) for i in range(rows)]
    with open(paths["csv"], "w") as f:
        f.write("epoch,val_loss,lr\n")
        f.writelines(f"{i},{v!r},{lr!r}\n" for i, (v, lr) in enumerate(zip(losses, lrs, strict=False)))
    with open(paths["jsonl"], "w") as f:
        f.writelines(
            json.dumps({"epoch": i, "val_loss": v, "lr": lr}) + "\n"
            for i, (v, lr) in enumerate(zip(losses, lrs, strict=False))
        )
    with open(paths["csv .4f"], "w") as f:
        f.write("epoch,val_loss,lr\n")
        f.writelines(f"{i},{v:.4f},{lr:.6f}\n" for i, (v, lr) in enumerate(zip(losses, lrs, strict=False)))
    os.sync()
    return paths


def run(code: str, path: Path) -> tuple[dict[str, float], float]:
    """What the process printed, and its peak RSS in MB."""
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"reader failed on {path}: {out.stderr[-500:]}")
    report = json.loads(out.stdout)
    return report, report["hwm"]


def check_same(paths: dict[str, Path]) -> str:
    """read_losses and the plain reader give the same floats, bit for bit, and the expected precision."""
    from plateau_forensics.losses import read_losses

    bits = struct.Struct("<d").pack
    for kind, path in paths.items():
        log = read_losses(path)
        if kind == "jsonl":
            with open(path) as f:
                rows = [json.loads(line) for line in f]
            want = [float(r["val_loss"]) for r in rows], [float(r["lr"]) for r in rows]
        else:
            lines = path.read_text().split("\n")[1:-1]
            cells = [line.split(",") for line in lines]
            want = [float(c[1]) for c in cells], [float(c[2]) for c in cells]
        got = log.metrics, [r[0] for r in log.lrs or ()]
        for a, b in zip(want, got, strict=False):
            if len(a) != len(b) or any(bits(x) != bits(y) for x, y in zip(a, b, strict=False)):
                raise SystemExit(f"{path.name}: read_losses and the plain reader disagree")
    rounded = read_losses(paths["csv .4f"]).precision_of("val_loss").description
    return f"same floats bit for bit in all three; the .4f log reads as '{rounded}'"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help=f"keep the logs in {WORK} (reused next run)")
    args = parser.parse_args()
    print(
        f"bench_logs: {args.rows:,} rows, {args.repeats} interleaved runs each after 1 warm-up; "
        f"python {sys.version.split()[0]}"
    )
    t0 = time.perf_counter()
    paths = write_logs(args.rows)
    try:
        print(
            "  logs: "
            + ", ".join(f"{k} {p.stat().st_size / 1e6:.1f} MB" for k, p in paths.items())
            + f" (written in {time.perf_counter() - t0:.1f} s)"
        )
        print(f"  {check_same(paths)}")
        cmds = {}
        for kind, path in paths.items():
            cmds[f"read_losses {kind}"] = (OURS, path)
            cmds[f"plain reader {kind}"] = (BASE_JSONL if kind == "jsonl" else BASE_CSV, path)
        for code, path in cmds.values():
            run(code, path)  # warm-up: page cache, .pyc files
        reads: dict[str, list[float]] = {k: [] for k in cmds}
        imports: dict[str, list[float]] = {k: [] for k in cmds}
        rss: dict[str, float] = {k: 0.0 for k in cmds}
        for _ in range(args.repeats):
            for key, (code, path) in cmds.items():
                out, peak = run(code, path)
                reads[key].append(out["read"])
                imports[key].append(out["import"])
                rss[key] = max(rss[key], peak)
        for key in cmds:
            print(
                f"  {key:26s} read median {statistics.median(reads[key]):6.2f} s"
                f"  min {min(reads[key]):6.2f} s"
                f"  (+ import {statistics.median(imports[key]):4.2f} s)  peak RSS {rss[key]:5.0f} MB"
            )
        for kind in paths:
            ours, base = f"read_losses {kind}", f"plain reader {kind}"
            ratio = statistics.median(reads[ours]) / statistics.median(reads[base])
            ok = ratio <= TARGET_RATIO[kind] and rss[ours] <= TARGET_RSS_MB
            print(
                f"  {kind}: read time {ratio:.2f}x the plain reader's (target <= {TARGET_RATIO[kind]:g}x), "
                f"peak RSS "
                f"{rss[ours]:.0f} MB = {rss[ours] / rss[base]:.2f}x (target <= {TARGET_RSS_MB:.0f} MB): "
                f"{'PASS' if ok else 'FAIL'}"
            )
    finally:
        if not args.keep:
            for path in paths.values():
                path.unlink(missing_ok=True)
            print(f"  deleted the logs in {WORK} (pass --keep to keep them)")


if __name__ == "__main__":
    main()
