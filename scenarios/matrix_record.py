"""Record every ``scheduler.step()`` of a live ReduceLROnPlateau, whoever calls it (a loop, Lightning, HF).

The instance's class is swapped for a subclass whose ``step`` calls torch's and then appends one history
entry; nothing is added to the instance's ``__dict__``, so ``state_dict()`` and the saved checkpoints stay
torch's own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

STATE_KEYS = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch")


def lrs_of(optimizer: Any) -> list[float]:
    """Every param group's lr right now, as Python floats."""
    return [float(g["lr"]) for g in optimizer.param_groups]


def plateau_state(scheduler: Any) -> dict[str, Any]:
    """The four decision fields of a live (or saved) plateau state, with torch's names."""
    get = scheduler.get if isinstance(scheduler, dict) else lambda k: getattr(scheduler, k)
    return {
        "best": float(get("best")),
        "num_bad_epochs": int(get("num_bad_epochs")),
        "cooldown_counter": int(get("cooldown_counter")),
        "last_epoch": int(get("last_epoch")),
    }


class StepRecorder:
    """Collects one dict per ``step()`` call of every scheduler attached to it, in time order.

    ``process`` and ``epoch`` are read when a step happens: set them from the loop, or give ``epoch_fn``
    (Lightning: ``trainer.current_epoch``) so the framework's own counter is recorded.
    """

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.process = 0
        self.epoch: Any = None
        self.epoch_fn: Callable[[], Any] | None = None
        self.on_step: Callable[[dict[str, Any]], None] | None = None

    def attach(self, scheduler: Any) -> Any:
        """Make ``scheduler`` (a live ReduceLROnPlateau) record its steps here; returns it."""
        base = type(scheduler)
        while getattr(base, "_recorded", False):
            base = base.__mro__[1]
        recorder = self

        def step(sched: Any, metrics: Any, epoch: Any = None) -> None:
            lr_before = lrs_of(sched.optimizer)
            if epoch is None:
                base.step(sched, metrics)
            else:  # the deprecated form warns in torch; passed through unchanged
                base.step(sched, metrics, epoch)
            recorder.record(sched, float(metrics), lr_before)

        scheduler.__class__ = type(
            base.__name__, (base,), {"step": step, "_recorded": True, "__module__": base.__module__}
        )
        return scheduler

    def record(self, sched: Any, metric: float, lr_before: list[float]) -> None:
        """Append the entry for a step that just happened on ``sched``."""
        entry = {
            "process": self.process,
            "epoch": self.epoch_fn() if self.epoch_fn is not None else self.epoch,
            "metric": metric,
            "lr_before": lr_before,
            "lr_after": lrs_of(sched.optimizer),
            "state_after": plateau_state(sched),
        }
        self.history.append(entry)
        if self.on_step is not None:
            self.on_step(entry)


def json_float(v: Any) -> Any:
    """A JSON-safe copy: floats exact (json writes repr), non-finite floats as "inf" / "-inf" / "nan"."""
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: json_float(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [json_float(x) for x in v]
    return v


def mark_discarded(truth: dict[str, Any]) -> None:
    """Mark rows whose steps a later process threw away by restoring an earlier scheduler state.

    A process that restored the scheduler from a checkpoint continues from that state: the steps its source
    process took after that checkpoint (the step of a checkpoint saved before its epoch's step, epochs a
    crashed process ran past its checkpoint) are not in the surviving history. Such rows get ``"discarded":
    true`` and no ``determinable`` entry (the step check skips them); superseded rows are discarded too.
    """
    hist = truth["history"]
    dead: set[int] = set()
    for p in truth["processes"]:
        s = p.get("resumed_from_history_index")
        if p["scheduler"] != "restored" or s is None:
            continue
        src = hist[s]["process"]
        dead |= {i for i, h in enumerate(hist) if i > s and h["process"] == src}
    for r in truth["rows"]:
        r["discarded"] = bool(r["steps"]) and all(i in dead for i in r["steps"]) or r["superseded"]
        if r["discarded"]:
            r["determinable"] = None
