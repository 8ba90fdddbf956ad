"""Fleet scan throughput: ``plateau-trace scan DIR`` over 1,000 runs the size of ``seed000``, whole process.

Target (issue 10): 1,000 runs within 30 s on 2 cores (two worker processes). The fleet is built in
``benchmarks/_work/fleet``: 1,000 folders, each a copy of one committed plain-torch sample (checkpoint + CSV
log, 40-50 rows each: ``seed000`` and the ``resumes/`` runs in turn). Baselines from the same run: the same
scan with one worker (``--jobs 1``), and what a shell loop does, one ``plateau-trace CKPT LOG --format json``
process per run, timed on a sample and scaled. Run: ``python benchmarks/bench_scan.py`` (about 2 minutes;
``--runs N`` for a smaller fleet, ``--keep`` to leave the fleet for the next run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sysconfig
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SAMPLES = ROOT / "sample_checkpoints"
TARGET_SECONDS = 30.0
TARGET_RUNS = 1000


def sources() -> list[tuple[Path, Path]]:
    """(checkpoint, log) pairs of the committed plain-torch samples the size of seed000."""
    out = [(SAMPLES / "seed000.pt", SAMPLES / "seed000.csv")]
    for d in sorted((SAMPLES / "resumes").iterdir()):
        if (d / "ckpt.pt").is_file() and (d / "log.csv").is_file():
            out.append((d / "ckpt.pt", d / "log.csv"))
    return out


def build(fleet: Path, n: int) -> None:
    if fleet.exists() and len(list(fleet.iterdir())) == n:
        return
    shutil.rmtree(fleet, ignore_errors=True)
    pairs = sources()
    for i in range(n):
        ckpt, log = pairs[i % len(pairs)]
        d = fleet / f"run{i:04d}"
        d.mkdir(parents=True)
        shutil.copy2(ckpt, d / ckpt.name)
        shutil.copy2(log, d / log.name)
    os.sync()


def tool() -> str:
    return str(Path(sysconfig.get_path("scripts")) / "plateau-trace")


def timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if out.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(cmd)} exited {out.returncode}: {out.stderr.strip()}")
    return dt, out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=TARGET_RUNS)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--loop-sample", type=int, default=20, help="runs timed as one process each")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    fleet = HERE / "_work" / "fleet"
    build(fleet, args.runs)
    print(f"bench_scan: {args.runs:,} runs in {fleet} (copies of {len(sources())} committed samples, "
          f"{sum(f.stat().st_size for f in fleet.rglob('*') if f.is_file()) / 1e6:.1f} MB); "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    timed([tool(), "scan", str(fleet / "run0000"), "--format", "json"])  # warm the page cache and pyc files
    dt, out = timed([tool(), "scan", str(fleet), "--format", "json", "--jobs", str(args.jobs)])
    obj = json.loads(out)
    summary = obj["summary"]
    print(f"  scan --jobs {args.jobs}: {dt:.1f} s for {summary['runs']:,} runs ({dt / summary['runs'] * 1000:.0f} ms "
          f"per run of wall time); {summary['errors']} not analysed, {summary['with_warnings']} with warnings")
    dt1, _ = timed([tool(), "scan", str(fleet), "--format", "json", "--jobs", "1"])
    print(f"  scan --jobs 1 (baseline): {dt1:.1f} s -> the pool is {dt1 / dt:.2f}x faster")
    sample = sorted(fleet.iterdir())[: args.loop_sample]
    t_loop = 0.0
    for d in sample:
        ckpt = next(p for p in d.iterdir() if p.suffix == ".pt")
        log = next(p for p in d.iterdir() if p.suffix == ".csv")
        t_loop += timed([tool(), str(ckpt), str(log), "--format", "json"])[0]
    loop_total = t_loop / len(sample) * args.runs
    print(f"  shell loop, one plateau-trace process per run (baseline): {t_loop / len(sample):.2f} s per run -> "
          f"{loop_total:.0f} s for {args.runs:,} (scaled from {len(sample)}) -> the scan is {loop_total / dt:.1f}x "
          "faster")
    target = TARGET_SECONDS * args.runs / TARGET_RUNS
    print(f"  target {args.runs:,} runs within {target:g} s: {dt:.1f} s -> {'PASS' if dt <= target else 'FAIL'}")
    if not args.keep:
        shutil.rmtree(fleet, ignore_errors=True)


if __name__ == "__main__":
    main()
