"""Inverse-fit time: ``pf.fit`` on logs a real torch scheduler wrote, against brute force over the same grid.

The issue sets no speed target for the fit; this script keeps its cost visible. Logs of 100, 1,000 and
10,000 epochs of bench_replay's synthetic loss, stepped by a real ``ReduceLROnPlateau`` (patience 5,
cooldown 2, factor 0.5, threshold 1e-4 rel), written with ``repr`` and with 4 decimals. Baseline from the same
run: a loop of torch schedulers over the grid the fit searched (its timing part), timed on a sample of that
grid and scaled, which answers only "which settings fit" for an exact log, without threshold edges or
rounding. Every fit must contain the true settings. Run: ``python benchmarks/bench_fit.py`` (about 1 minute).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_replay import make_metrics  # noqa: E402

TRUTH = {"patience": 5, "cooldown": 2, "factor": 0.5, "threshold": 1e-4}
LR0 = 0.1


def torch_log(metrics: list[float], kwargs: dict) -> list[float]:
    import torch

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=LR0)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
    lrs = []
    for m in metrics:
        lrs.append(opt.param_groups[0]["lr"])
        sched.step(m)
    return lrs


def write(path: Path, metrics: list[float], lrs: list[float], fmt: str) -> Path:
    cell = repr if fmt == "repr" else (lambda v: format(v, fmt))
    path.write_text("epoch,val_loss,lr\n" + "".join(f"{i + 1},{cell(m)},{cell(v)}\n"
                                                  for i, (m, v) in enumerate(zip(metrics, lrs, strict=True))))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--sample", type=int, default=100, help="grid settings timed in the torch loop")
    args = parser.parse_args()

    import plateau_forensics as pf
    from plateau_forensics.fit import _bounds, _changes, _evidence, _grid

    print(f"bench_fit: true settings {TRUTH}, lr {LR0}; fit in process (first call warms imports)")
    pf.fit(pf.read_losses({"epoch": ["1", "2"], "val_loss": ["1.0", "0.9"], "lr": ["0.1", "0.1"]}))
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            metrics = make_metrics(n, seed=n)
            lrs = torch_log(metrics, TRUTH)
            for fmt in ("repr", ".4f"):
                path = write(Path(tmp) / f"log{n}{fmt}.csv", metrics, lrs, fmt)
                t0 = time.perf_counter()
                f = pf.fit(path)
                dt = time.perf_counter() - t0
                fam = [x for x in f.families if (x.mode, x.threshold_mode, x.patience, x.cooldown)
                       == ("min", "rel", TRUTH["patience"], TRUTH["cooldown"])]
                ok = bool(fam) and any(lo <= TRUTH["threshold"] <= hi for lo, hi in fam[0].thresholds) and (
                    f.factor.lo <= TRUTH["factor"] <= f.factor.hi)
                line = (f"  {n:>6,} epochs, {fmt:>4} log: fit {dt:6.2f} s; {len(f.families)} families, "
                        f"patience {f.values('patience')}, truth inside: {'yes' if ok else 'NO'}")
                if fmt == "repr":
                    log = pf.read_losses(path)
                    ev = _evidence(log, None)
                    changes = _changes(ev, "during")
                    p_hi, c_hi, pair, _ = _bounds(ev, changes, 100, 50)
                    rows = _grid(ev, p_hi, c_hi, pair, {})
                    rng = random.Random(0)
                    sample = rng.sample(rows, min(args.sample, len(rows)))
                    t0 = time.perf_counter()
                    for m, tm, thr, p, c in sample:
                        torch_log(metrics, {"mode": m, "threshold_mode": tm, "threshold": thr, "patience": p,
                                            "cooldown": c, "factor": 0.5})
                    brute = (time.perf_counter() - t0) / len(sample) * len(rows)
                    line += f"; torch loop over its {len(rows):,} settings: {brute:.1f} s (scaled) = {brute / dt:.1f}x"
                print(line)


if __name__ == "__main__":
    main()
