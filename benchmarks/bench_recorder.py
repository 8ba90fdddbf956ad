"""Recorder overhead: ``scheduler.step(m)`` with ``pf.record`` attached against a bare ``scheduler.step(m)``.

Target (issue 12): the recorder adds under 50 µs per step, and imports no torch module the loop did not
import. Both loops run in this process over the same metrics, interleaved round by round (``--rounds``), each
on a fresh scheduler, one param group, ``patience=5, cooldown=2, factor=0.5, min_lr=1e-6``, lr 0.1, the
synthetic plateau loss of ``bench_replay.py`` (so improvements, bad epochs, cooldowns and reductions all
occur). The verdict uses the median per-step difference; min and ratio are printed next to it, with the
``explain=True`` and no-file variants for information. Run: ``python benchmarks/bench_recorder.py``.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

TARGET_US = 50.0
HPARAMS = {"patience": 5, "cooldown": 2, "factor": 0.5, "min_lr": 1e-6}
LR0 = 0.1


def make_metrics(n: int, seed: int = 0) -> list[float]:
    """Improving stretches and plateaus of 3-30 steps with up to 0.3% noise (as in bench_replay.py)."""
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


def fresh():  # type: ignore[no-untyped-def]
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR0)
    return opt, torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **HPARAMS)


def loop(metrics: list[float], folder: Path | None, **record_kwargs: object) -> tuple[float, int]:
    """Seconds for one pass of ``step`` over ``metrics`` (recorded when ``folder`` is given); last_epoch."""
    import plateau_forensics as pf

    opt, sched = fresh()
    rec = None
    if folder is not None:
        path = record_kwargs.pop("path", folder / "plateau.jsonl")
        rec = pf.record(sched, opt, path, **record_kwargs)  # type: ignore[arg-type]
    step = sched.step
    t0 = time.perf_counter()
    for m in metrics:
        step(m)
    elapsed = time.perf_counter() - t0
    if rec is not None:
        rec.close()
    return elapsed, sched.last_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    metrics = make_metrics(args.steps)

    import torch  # the training loop's own import

    opt, sched = fresh()  # the loop's own objects: torch.optim loads more of torch on first use
    sched.step(1.0)
    before = set(sys.modules)
    import plateau_forensics as pf

    logging.getLogger("test.quiet").addHandler(logging.NullHandler())
    quiet = logging.getLogger("test.quiet")
    quiet.propagate = False

    bare, rec, nofile, explain = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        loop(metrics[:500], folder, logger=quiet)  # warm-up: imports, first file
        for r in range(args.rounds):
            bare.append(loop(metrics, None)[0])
            rec.append(loop(metrics, folder / str(r), logger=quiet)[0])
            nofile.append(loop(metrics, folder / f"n{r}", path=None, logger=quiet)[0])
            if r < 2:
                explain.append(loop(metrics, folder / f"e{r}", explain=True, logger=quiet)[0])
        check = pf.read_recording(folder / "0" / "plateau.jsonl")
        problems = check.verify()
        reductions = sum(1 for s in check.steps if s.lr != s.lr_in)
    new_torch = sorted(m for m in set(sys.modules) - before if m == "torch" or m.startswith("torch."))

    n = args.steps
    runs = (("bare", bare), ("record", rec), ("record, path=None", nofile), ("record, explain=True", explain))
    per = {name: [t / n * 1e6 for t in ts] for name, ts in runs}
    diffs = [r - b for r, b in zip(per["record"], per["bare"], strict=True)]
    print(f"torch {torch.__version__}, {n:,} steps x {args.rounds} rounds, {reductions} reductions in the "
          "run")
    for name, us in per.items():
        print(f"  {name:22s} median {statistics.median(us):7.2f} µs/step   min {min(us):7.2f}")
    med = statistics.median(diffs)
    ratio = statistics.median(per["record"]) / statistics.median(per["bare"])
    print(f"  recorder overhead: median {med:.2f} µs/step (min {min(diffs):.2f}), {ratio:.2f}x a bare step")
    print(f"  recording verified by replay: {'yes' if not problems else problems[:3]}")
    print(f"  torch modules imported by plateau_forensics beyond the loop's: {new_torch or 'none'}")
    verdict = "PASS" if med < TARGET_US and not new_torch and not problems else "FAIL"
    print(f"overhead {med:.2f} µs/step < {TARGET_US:.0f} µs and no extra torch import: {verdict}")


if __name__ == "__main__":
    main()
