"""Other schedulers saved beside the plateau one: which lr changes they made.

torch's SequentialLR and ChainedScheduler refuse a ReduceLROnPlateau, so runs keep a second scheduler (StepLR,
a LinearLR warm-up, ...) on the same optimizer and save both states. The plateau stories can only call such lr
changes ``external-lr-change``; this module checks whether the saved schedulers explain them:

- the **whole run**: each saved scheduler rebuilt fresh from the constructor arguments its state holds
  (``step_size``/``gamma``, ``milestones``, ``T_max``/``eta_min``, ...; the optimizer's first lr is its
  ``base_lrs``), stepped after the plateau every epoch as PyTorch's compound tests do, from the log's first
  row; it must reproduce the checkpoint (the plateau's counters and each scheduler's ``last_epoch`` and
  ``_last_lr`` at the checkpoint's row) and every logged lr;
- else the **rows after the checkpoint**: the saved states restored (``load_state_dict``) and continued.

A scheduler whose state cannot be rebuilt (LambdaLR's function is not saved, OneCycleLR and CyclicLR keep
only part of their arguments) is only continued after the checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plateau_forensics.engine import Trace
    from plateau_forensics.loader import Checkpoint
    from plateau_forensics.losses import LossLog

__all__ = ["TimelineFit", "explain_with_saved_schedulers"]



@dataclass(frozen=True)
class TimelineFit:
    """What the saved schedulers explain.

    Attributes:
        trace: the composed replay (a ``schedules.ComposedTrace``): the whole run, or the rows after the
            checkpoint (``first_row`` onwards).
        writers: the saved schedulers, as ``"StepLR (key steplr)"``.
        whole_run: the replay starts at the log's first row and reproduces the checkpoint.
        first_row: the log row the replay starts at.
        lr_after: the lr column reads as the lr after each epoch's steps.
        logged: logged lrs compared; explained: how many of them the replay reproduces.
        changes: ``(epoch, writer, group, lr_before, lr_after)`` for every lr change a saved scheduler made
            (at the end of that epoch, after the plateau's step).
        stepped_first, also_stepped_first: see the fields.
    """

    trace: Trace
    writers: tuple[str, ...]
    whole_run: bool
    first_row: int
    lr_after: bool
    logged: int
    explained: int
    changes: tuple[tuple[Any, ...], ...]
    #: the schedulers were stepped at the start of each epoch, before ``optimizer.step()``
    stepped_first: bool = False
    #: the lr-after-the-step reading and the stepped-first one give this same log (no plateau reduction in it
    #: tells them apart)
    also_stepped_first: bool = False

    @property
    def complete(self) -> bool:
        """Every logged lr the replay covers is reproduced."""
        return self.logged > 0 and self.explained == self.logged


def _matches(log: LossLog, rows: Sequence[int], predicted: Sequence[tuple[float, ...]]) -> tuple[int, int]:
    """(logged, reproduced): the logged lrs at ``rows`` against ``predicted`` (one lr tuple per row), each
    within the interval its printed precision stands for."""
    logged = explained = 0
    lrs = log.lrs or ()
    for row, pred in zip(rows, predicted, strict=True):
        if row >= len(lrs) or lrs[row] is None:
            continue
        ok, seen = True, False
        for g, v in enumerate(lrs[row]):
            if v is None or g >= len(pred):
                continue
            seen = True
            lo, hi = log.precision_of(log.lr_columns[g]).interval(row, v)
            p = float(pred[g])
            if not (lo <= p <= hi or math.isclose(p, v, rel_tol=1e-12)):
                ok = False
        if seen:
            logged += 1
            explained += ok
    return logged, explained


def _same_state(step: Any, ck: Checkpoint) -> bool:
    st = ck.state
    same_best = step.best == st.best or (math.isnan(step.best) and math.isnan(st.best))
    return same_best and (
        st.partial
        or (step.num_bad_epochs, step.cooldown_counter, step.last_epoch)
        == (st.num_bad_epochs, st.cooldown_counter, st.last_epoch)
    )


def _saved_matches(states: Sequence[dict[str, Any]], found: Sequence[Any]) -> bool:
    from plateau_forensics.schedules.checkpoints import plain

    for now, f in zip(states, found, strict=True):
        saved = plain(f.state)
        if now.get("last_epoch") != saved.get("last_epoch"):
            return False
        a, b = now.get("_last_lr"), saved.get("_last_lr")
        if a is not None and b is not None and [float(x) for x in a] != [float(x) for x in b]:
            return False
    return True


def _changes(t: Any, labels: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Every lr change a saved scheduler made: (epoch whose end it came at, writer, group, before, after)."""
    out = []
    for row, changes in enumerate(t.timeline.changes):
        if row == 0:  # the constructors'
            continue
        for ch in changes:
            if ch.writer == "ReduceLROnPlateau":
                continue
            epoch = labels[row - 1] if row - 1 < len(labels) else None
            out.append((epoch, ch.writer, ch.group, ch.before, ch.after))
    return out


def explain_with_saved_schedulers(ck: Checkpoint, log: LossLog, anchor_row: int | None) -> TimelineFit | None:
    """Replay the plateau scheduler together with the other schedulers ``ck`` holds (see the module
    docstring); None when it holds none, or none can be replayed.

    Args:
        ck: the checkpoint (``ck.schedulers`` are the other states).
        log: the run's log, with an lr column to compare with.
        anchor_row: the log row the checkpoint was saved after, when the stories placed it.
    """
    from plateau_forensics.schedules import TorchRaises, replay_composed
    from plateau_forensics.schedules.checkpoints import plain, rebuild, restore
    from plateau_forensics.schedules.errors import ScheduleConfigError

    found = [
        f for f in ck.schedulers if f.kind != "LambdaLR or MultiplicativeLR"
    ]  # a lambda cannot be replayed
    if not found or log.lrs is None or not len(log):
        return None
    writers = tuple(f"{f.kind} (key {f.key_path or '<root>'})" for f in found)
    metrics, labels = list(log.metrics), list(log.epochs)
    fresh = [rebuild(f.kind, f.state) for f in found]
    if all(s is not None for s in fresh):
        base = plain(found[0].state).get("base_lrs")
        try:
            t = replay_composed(
                metrics, ck.config, lrs=[float(v) for v in base], with_schedulers=fresh, epochs=labels
            )
        except (ScheduleConfigError, TorchRaises, TypeError, ValueError):
            t = None
        if t is not None and len(t) == len(metrics):
            placed = (
                anchor_row is not None
                and anchor_row < len(t)
                and _same_state(t.steps[anchor_row], ck)
                and _saved_matches(t.scheduler_states[anchor_row], found)
            )
            fit = None
            if placed:
                fit = _best_reading(t, log, range(len(metrics)), writers, True, 0, labels)
            if fit is None or not fit.complete or fit.lr_after:
                first_fit = _stepped_first(
                    ck, log, anchor_row, found, fresh, [float(v) for v in base], writers
                )
                if first_fit is not None and first_fit.complete:
                    if fit is not None and fit.complete:  # the lr after the step, or stepped first: same log
                        return replace(fit, also_stepped_first=True)
                    return first_fit
            if fit is not None:
                return fit
    if anchor_row is None or anchor_row + 1 >= len(metrics):
        return None
    try:
        restored = [restore(f.kind, f.state) for f in found]
        first = anchor_row + 1
        t = replay_composed(
            metrics[first:],
            ck.config,
            lrs=list(ck.lrs or ()),
            with_schedulers=restored,
            state=ck.state,
            epochs=labels[first:],
            group_extras=ck.optimizer_groups or None,
        )
    except (ScheduleConfigError, TorchRaises, TypeError, ValueError):
        return None
    return _best_reading(t, log, range(first, len(metrics)), writers, False, first, labels[first:])


def _stepped_first(
    ck: Checkpoint,
    log: LossLog,
    anchor_row: int | None,
    found: Sequence[Any],
    fresh: Sequence[Any],
    base: list[float],
    writers: tuple[str, ...],
) -> TimelineFit | None:
    """The saved schedulers stepped at the start of each epoch, before ``optimizer.step()`` (torch warns, and
    their first value is never trained with): replayed as one step of theirs before the first epoch, then
    after each plateau step; the lr column read as the lr each epoch trained with. The checkpoint, saved after
    the plateau's step, holds their state from the start of that epoch."""
    from plateau_forensics.schedules import TorchRaises, replay_composed
    from plateau_forensics.schedules.errors import ScheduleConfigError

    metrics, labels = list(log.metrics), list(log.epochs)
    n = len(metrics)
    if anchor_row is None or not 1 <= anchor_row < n or not isinstance(labels[0], (int, float)):
        return None
    first_label = labels[0] - 1
    try:
        t = replay_composed(
            [metrics[0], *metrics],
            ck.config,
            lrs=base,
            with_schedulers=list(fresh),
            plateau_epochs=range(1, n + 1),
            epochs=[first_label, *labels],
        )
    except (ScheduleConfigError, TorchRaises, TypeError, ValueError):
        return None
    if len(t) != n or not (
        _same_state(t.steps[anchor_row], ck) and _saved_matches(t.scheduler_states[anchor_row - 1], found)
    ):
        return None
    lrs = t.timeline.lrs
    if len(lrs) < n + 1:
        return None
    logged, explained = _matches(log, list(range(n)), lrs[1 : n + 1])
    return TimelineFit(
        t,
        writers,
        True,
        0,
        False,
        logged,
        explained,
        tuple(_changes(t, [first_label, *labels])),
        stepped_first=True,
    )


def _best_reading(
    t: Any,
    log: LossLog,
    rows: range,
    writers: tuple[str, ...],
    whole: bool,
    first: int,
    labels: Sequence[Any],
) -> TimelineFit | None:
    lrs = t.timeline.lrs
    n = len(rows)
    if len(lrs) < n + 1:
        return None
    best = None
    for after in (False, True):
        predicted = lrs[1 : n + 1] if after else lrs[:n]
        logged, explained = _matches(log, list(rows), predicted)
        fit = TimelineFit(t, writers, whole, first, after, logged, explained, tuple(_changes(t, labels)))
        if best is None or fit.explained > best.explained:
            best = fit
    return best
