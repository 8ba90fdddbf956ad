"""A real ``ReduceLROnPlateau`` run on a chosen metric sequence, for tests that need a checkpoint and a log
written the way a training script writes them (``torch.save``, a CSV with the lr per epoch).

The metrics are chosen, not trained (falling, then plateaus with full-precision values as a real loss prints
with ``repr``), so the run is the same on every CPU; what a test asserts is what the tool reads from it.
Import after ``pytest.importorskip("torch")``.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import torch

EPOCHS, LR = 30, 0.1
METRICS = [1.0 / (1 + e) for e in range(8)]
METRICS += [0.11 + 0.004 * random.Random(e).random() for e in range(8, EPOCHS)]


def objects() -> tuple[Any, Any]:
    """A fresh optimizer and plateau scheduler."""
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    return opt, torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2, cooldown=1)


def state(opt: Any, sched: Any) -> dict[str, Any]:
    return {"scheduler": sched.state_dict(), "optimizer": opt.state_dict()}


def resumed(saved: dict[str, Any], *, optimizer: bool = True) -> tuple[Any, Any]:
    """A new process's objects with the saved scheduler (and, unless ``optimizer`` is False, optimizer)
    state loaded."""
    opt, sched = objects()
    sched.load_state_dict(saved["scheduler"])
    if optimizer:
        opt.load_state_dict(saved["optimizer"])
    return opt, sched


def train(opt: Any, sched: Any, epochs: range, *, k: int = 1, log: Path | None = None,
          lr_after: bool = False) -> None:
    """Step ``k`` times per epoch on its metric; with ``log``, write ``epoch,val_loss,lr`` rows (the lr the
    epoch trained with, or the lr after its steps)."""
    rows = []
    for e in epochs:
        before = opt.param_groups[0]["lr"]
        for _ in range(k):
            sched.step(METRICS[e])
        rows.append([e, repr(METRICS[e]), repr(opt.param_groups[0]["lr"] if lr_after else before)])
    if log is not None:
        with log.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["epoch", "val_loss", "lr"])
            w.writerows(rows)
