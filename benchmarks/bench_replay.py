"""Replay throughput: ``plateau_forensics.engine.run`` against torch's own ``ReduceLROnPlateau.step`` loop.

Target (issue): at least 1,000,000 steps/s for our engine (one param group, patience=5, cooldown=2,
factor=0.5, min_lr=1e-6). Timed in-process, min of ``--repeats`` runs. ``run`` keeps only the columns
(best, num_bad_epochs, cooldown_counter, lr, event) every reason is derived from; reasons are built when
read, so their cost is timed separately on a sample. Run: ``python benchmarks/bench_replay.py``.
"""

from __future__ import annotations

import argparse
import collections
import gc
import math
import random
import statistics
import time

from plateau_forensics.state import PlateauConfig

from plateau_forensics import engine as replay_mod

TARGET = 1_000_000
HPARAMS = {"patience": 5, "cooldown": 2, "factor": 0.5, "min_lr": 1e-6}
LR0 = 0.1


def make_metrics(n: int, seed: int = 0) -> list[float]:
    """A loss that alternates improving stretches (the level falls) with plateaus (level flat), 3-30 steps
    each, plus up to 0.3% noise; so improvements, bad epochs, cooldowns and reductions all occur."""
    rng = random.Random(seed)
    out: list[float] = []
    log_level = 0.0
    while len(out) < n:
        improving = rng.random() < 0.5
        for _ in range(rng.randint(3, 30)):
            if improving:
                log_level -= rng.uniform(0, 5e-4)
            out.append(math.exp(log_level) * (1 + rng.uniform(0, 3e-3)))
    return out[:n]


def time_ours(metrics: list[float], repeats: int) -> tuple[list[float], replay_mod.Trace]:
    cfg = PlateauConfig(**HPARAMS)
    times = []
    for _ in range(repeats):
        # free the previous trace outside the timed region: its deallocation is not this run's cost
        trace = None
        gc.collect()
        t0 = time.perf_counter()
        trace = replay_mod.run(cfg, metrics, [LR0])
        times.append(time.perf_counter() - t0)
    assert trace is not None
    return times, trace


def time_torch(metrics: list[float], repeats: int) -> tuple[list[float], dict[str, float]] | None:
    try:
        import torch
    except ImportError:
        return None
    times = []
    for _ in range(repeats):
        param = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([param], lr=LR0)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **HPARAMS)
        step = sched.step
        gc.collect()
        t0 = time.perf_counter()
        for m in metrics:
            step(m)
        times.append(time.perf_counter() - t0)
    end = {"lr": opt.param_groups[0]["lr"], "best": sched.best, "num_bad_epochs": sched.num_bad_epochs,
           "cooldown_counter": sched.cooldown_counter}
    return times, end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2_000_000)
    parser.add_argument("--torch-steps", type=int, default=200_000)
    parser.add_argument("--reasons", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    metrics = make_metrics(args.steps)
    print(f"bench_replay: {args.steps:,} metrics (seed 0), {HPARAMS}, lr {LR0}, 1 group; "
          f"in-process, min of {args.repeats}")

    times, trace = time_ours(metrics, args.repeats)
    ours = args.steps / min(times)
    events = collections.Counter(replay_mod._EVENTS[e].value for e in trace._cols.events)
    print("  events: " + ", ".join(f"{k} {v:,}" for k, v in events.most_common()))
    print(f"  ours  replay.run: {args.steps:,} steps in {min(times):.3f} s (min; median "
          f"{statistics.median(times):.3f}, all {' '.join(f'{t:.3f}' for t in times)}) = {ours:,.0f} steps/s")
    print("        (run stores per-step columns best/num_bad_epochs/cooldown_counter/lr/event, from which")
    print("         every Step and its reason are derived on access; the reasons are timed below)")

    base = time_torch(metrics[: args.torch_steps], args.repeats)
    if base is None:
        print("  torch not installed: baseline skipped")
    else:
        ttimes, end = base
        theirs = args.torch_steps / min(ttimes)
        print(f"  torch ReduceLROnPlateau.step loop: {args.torch_steps:,} steps in {min(ttimes):.3f} s (min) "
              f"= {theirs:,.0f} steps/s")
        print(f"  ratio ours / torch = {ours / theirs:.2f}x")
        check = replay_mod.run(PlateauConfig(**HPARAMS), metrics[: args.torch_steps], [LR0])
        mine = {"lr": check.lrs[0], "best": check.final.best, "num_bad_epochs": check.final.num_bad_epochs,
                "cooldown_counter": check.final.cooldown_counter}
        print(f"  cross-check after {args.torch_steps:,} steps: "
              + ("identical end state " + str(end) if mine == end else f"MISMATCH ours {mine} torch {end}"))

    verdict = "PASS" if ours >= TARGET else "FAIL"
    print(f"  target >= {TARGET:,} steps/s: {ours:,.0f} steps/s -> {verdict}")

    rng = random.Random(1)
    sample = [rng.randrange(len(trace)) for _ in range(args.reasons)]
    steps = trace.steps
    t0 = time.perf_counter()
    reasons = [steps[i].reason for i in sample]
    dt = time.perf_counter() - t0
    kinds = collections.Counter(steps[i].event.value for i in sample)
    print(f"  reasons: {args.reasons:,} random steps' trace.steps[i].reason in {dt:.3f} s = "
          f"{dt / args.reasons * 1e6:.1f} us per reason (sample: "
          + ", ".join(f"{k} {v}" for k, v in kinds.most_common()) + ")")
    longest = max(reasons, key=len)
    print(f"  e.g. step {sample[reasons.index(longest)]}: {longest}")


if __name__ == "__main__":
    main()
