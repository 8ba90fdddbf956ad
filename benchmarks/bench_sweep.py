"""Sweep throughput: ``pf.sweep`` (numpy lanes) against a loop over real torch schedulers, same grid, same run.

Targets (issue 10): 10,000 configurations x 1,000 epochs within 1 s, and at least 100x a loop over torch's
``ReduceLROnPlateau`` (one SGD optimizer and scheduler per configuration, stepped over the same metrics).
The torch loop is timed on a random sample of the configurations and scaled to the whole grid; on that
sample, every torch end state (lr, best, num_bad_epochs, cooldown_counter) and reduction count is checked
against the sweep's. The scalar engine (``engine.run`` per configuration) is timed the same way, for reference.
Run: ``python benchmarks/bench_sweep.py`` (about 15 s).
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_replay import make_metrics  # noqa: E402 - the same synthetic loss as the replay benchmark

import plateau_forensics as pf  # noqa: E402
from plateau_forensics.engine import run  # noqa: E402

TARGET_SECONDS = 1.0
TARGET_RATIO = 100.0
LR0 = 0.1
GRID = {
    "patience": list(range(0, 25)),
    "cooldown": [0, 1, 2, 3],
    "factor": [0.1, 0.2, 0.5, 0.8, 0.9],
    "threshold": [0.0, 1e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.15, 0.2, 0.3, 0.4,
                  0.5, 0.7, 0.9, 1.0],
}


def time_sweep(metrics: list[float], repeats: int) -> tuple[list[float], list[float], pf.Sweep]:
    times, frame_times = [], []
    sw = None
    for _ in range(repeats):
        sw = None
        gc.collect()
        t0 = time.perf_counter()
        sw = pf.sweep(metrics, GRID, lrs=[LR0])
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sw.to_frame()
        frame_times.append(time.perf_counter() - t0)
    assert sw is not None
    return times, frame_times, sw


def time_torch(metrics: list[float], sw: pf.Sweep, sample: list[int]) -> tuple[float, int]:
    """Seconds for the sampled configurations (the loop a user would write: build, then ``step`` each
    metric), and how many end states differed from the sweep's (should be 0)."""
    import torch

    ends = []
    t0 = time.perf_counter()
    for k in sample:
        param = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([param], lr=LR0)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **sw.config(k).to_dict())
        step = sched.step
        for m in metrics:
            step(m)
        ends.append((k, opt.param_groups[0]["lr"], float(sched.best), sched.num_bad_epochs, sched.cooldown_counter))
    dt = time.perf_counter() - t0
    bad = sum(1 for k, lr, best, nb, cd in ends
              if (float(sw.final_lrs[k, 0]), float(sw.final_best[k]), int(sw.final_num_bad_epochs[k]),
                  int(sw.final_cooldown_counter[k])) != (lr, best, nb, cd))
    return dt, bad


def check_reductions(metrics: list[float], sw: pf.Sweep, sample: list[int]) -> int:
    """Untimed: configurations whose reduction epochs under torch differ from the sweep's (should be 0)."""
    import torch

    bad = 0
    for k in sample:
        param = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([param], lr=LR0)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **sw.config(k).to_dict())
        epochs = []
        for i, m in enumerate(metrics):
            before = opt.param_groups[0]["lr"]
            sched.step(m)
            if opt.param_groups[0]["lr"] != before:
                epochs.append(i + 1)
        bad += epochs != sw.reduction_epochs(k)
    return bad


def time_engine(metrics: list[float], sw: pf.Sweep, sample: list[int]) -> float:
    t0 = time.perf_counter()
    for k in sample:
        run(sw.config(k), metrics, [LR0])
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=300, help="configurations timed in the torch loop")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    metrics = make_metrics(args.epochs)
    n = pf.sweep(metrics[:2], GRID).__len__()
    print(f"bench_sweep: {n:,} configurations ({', '.join(f'{k} {len(v)}' for k, v in GRID.items())}) x "
          f"{args.epochs:,} epochs (bench_replay's synthetic loss), lr {LR0}; in process")
    times, frame_times, sw = time_sweep(metrics, args.repeats)
    best = min(times)
    events = int(sw.reduced.sum() + sw.suppressed.sum())
    print(f"  sweep: {best:.3f} s (min of {args.repeats}; median {statistics.median(times):.3f}); "
          f"{int(sw.reduced.sum()):,} reductions and {int(sw.suppressed.sum()):,} suppressed ones recorded "
          f"({events / n:.0f} per configuration)")
    print(f"  to_frame() of all {n:,} rows (lists of reduction epochs and lr spans): {min(frame_times):.3f} s (min)")

    rng = random.Random(0)
    sample = rng.sample(range(n), min(args.sample, n))
    torch_dt, bad = time_torch(metrics, sw, sample)
    bad += check_reductions(metrics, sw, sample[:50])
    torch_total = torch_dt / len(sample) * n
    engine_total = time_engine(metrics, sw, sample) / len(sample) * n
    print(f"  torch loop: {len(sample)} configurations in {torch_dt:.3f} s -> {torch_total:.1f} s for all {n:,} "
          f"(scaled); end states equal to the sweep's for all {len(sample)}, reduction epochs for the first "
          f"50: {'yes' if bad == 0 else f'NO ({bad} differ)'}")
    print(f"  scalar engine loop (reference): {engine_total:.1f} s for all {n:,} (scaled from the same sample)")
    ratio = torch_total / best
    print(f"  target sweep <= {TARGET_SECONDS:g} s: {best:.3f} s -> {'PASS' if best <= TARGET_SECONDS else 'FAIL'}")
    print(f"  target >= {TARGET_RATIO:g}x the torch loop: {ratio:.0f}x -> "
          f"{'PASS' if ratio >= TARGET_RATIO and bad == 0 else 'FAIL'}")


if __name__ == "__main__":
    main()
