"""Other schedulers stepping the same optimizer as a ReduceLROnPlateau, in the order the training loop calls
them: the plateau engine steps once per epoch (``engine.run`` on one metric, its hot loop untouched), then
every other scheduler steps (``schedules``' engines), each on the lrs the previous one left; param groups may
be added between epochs. PyTorch's ``test_compound_reduce_lr_on_plateau*`` setups are this loop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from plateau_forensics.engine import Start, Trace, _Columns, run
from plateau_forensics.schedules.base import LRScheduler
from plateau_forensics.schedules.errors import ScheduleConfigError, TorchRaises
from plateau_forensics.schedules.optimizer import Optimizer
from plateau_forensics.schedules.timeline import PLATEAU, Change, Timeline, changes_between
from plateau_forensics.schedules.values import TensorLR, filled
from plateau_forensics.state import PlateauConfig, PlateauState

if TYPE_CHECKING:
    from plateau_forensics.losses import LossLog


@dataclass(frozen=True)
class AddParamGroup:
    """``optimizer.add_param_group({"params": [...], "lr": lr})`` between epochs: before the plateau's step
    number ``at_step + 1`` (after ``at_step`` epochs), as PyTorch's ``test_add_param_group_*`` cases do at
    epoch 8.

    Attributes:
        at_step: the 0-based epoch before whose training the group is added.
        lr: the new group's lr.
        min_lr: appended to the plateau scheduler's ``min_lrs`` (``scheduler.min_lrs.append(min_lr)``); None
            leaves ``min_lrs`` as it is: a scalar ``min_lr`` is rebuilt for the new count at the next
            reduction, a list one makes that reduction raise torch's RuntimeError.
        lr_dtype: a tensor dtype (``"float32"``) for a tensor lr, or None.
    """

    at_step: int
    lr: float
    min_lr: float | None = None
    lr_dtype: str | None = None


@dataclass(frozen=True)
class Stepped:
    """How the loop steps a scheduler other than the plateau one.

    Attributes:
        scheduler: the (unbound) scheduler.
        per_epoch: ``step()`` calls per epoch: 1, or the batches per epoch of a per-batch scheduler (they step
            after each batch, before the plateau's end-of-epoch step).
        epochs: the 0-based epochs in which it steps (None: all), e.g. ``range(5)`` for a warm-up.
        before_plateau: a per-epoch scheduler stepped before ``plateau.step(metric)`` instead of after it.
    """

    scheduler: LRScheduler
    per_epoch: int = 1
    epochs: Collection[int] | None = None
    before_plateau: bool = False


@dataclass
class ComposedTrace(Trace):
    """A plateau ``Trace`` whose optimizer other schedulers stepped too.

    The ``Trace`` part is the plateau's view (one record per ``step(metric)``; ``lr_ins`` the lrs each epoch
    trained with when another writer set them). ``timeline`` is the optimizer's whole lr timeline with the
    writer of every change; ``schedulers`` the other schedulers as they ended; ``plateau_states[i]`` the
    plateau state after step ``i``; ``scheduler_states[i]`` every other scheduler's ``state_dict()`` at the
    end of that epoch.
    """

    timeline: Timeline | None = None
    schedulers: tuple[LRScheduler, ...] = ()
    plateau_states: tuple[PlateauState, ...] = ()
    scheduler_states: tuple[tuple[dict[str, Any], ...], ...] = ()
    optimizer: Optimizer | None = None
    events: tuple[AddParamGroup, ...] = field(default_factory=tuple)


def _metrics_epochs(metrics: Any, epochs: Sequence[float] | None) -> tuple[list[float], list[float]]:
    if hasattr(metrics, "metrics") and hasattr(metrics, "epochs"):
        values, labels = [float(m) for m in metrics.metrics], list(metrics.epochs)
    else:
        values, labels = [float(m) for m in metrics], None
    if epochs is not None:
        labels = list(epochs)
    if labels is None:
        labels = [i + 1 for i in range(len(values))]
    if len(labels) != len(values):
        raise ScheduleConfigError(f"{len(values)} metrics but {len(labels)} epoch labels")
    return values, labels


def replay_composed(
    metrics: Sequence[float] | LossLog,
    config: PlateauConfig | None = None,
    *,
    lrs: Sequence[float] | None = None,
    with_schedulers: Sequence[LRScheduler | Stepped] = (),
    lr_dtypes: Sequence[str | None] | None = None,
    step_epochs: Sequence[float | None] | None = None,
    events: Sequence[AddParamGroup] = (),
    epochs: Sequence[float] | None = None,
    state: PlateauState | None = None,
    plateau_epochs: Collection[int] | None = None,
    momentum: float = 0.0,
    betas: tuple[float, float] | None = None,
    group_extras: Sequence[Mapping[str, Any]] | None = None,
) -> ComposedTrace:
    """Replay a ReduceLROnPlateau and other schedulers on one optimizer, as a training loop runs them.

    Order, as in PyTorch's compound tests: the plateau scheduler is built first, then ``with_schedulers`` in
    list order (their constructors may change the lrs); every epoch, after ``optimizer.step()``, the plateau
    steps on the epoch's metric, then each other scheduler steps, in list order.

    Args:
        metrics: the value passed to ``plateau.step()`` each epoch (a list or a ``LossLog``).
        config: the plateau's hyperparameters (torch's defaults when None).
        lrs: each param group's lr when the optimizer is built (``[1.0]`` when None).
        with_schedulers: schedulers built after the plateau one; a ``Stepped`` says how the loop steps one.
        lr_dtypes: per group, a tensor dtype (``"float32"``) for a tensor lr (torch >= 2.10), or None.
        step_epochs: per epoch, the ``epoch`` of the deprecated ``plateau.step(metric, epoch)`` (None: no
            epoch), which sets ``last_epoch`` to it.
        events: ``AddParamGroup`` events (param groups added between epochs).
        epochs: the label of each epoch (the log's epochs when ``metrics`` is a ``LossLog``; else 1..n).
        state: the plateau state to continue from (a resumed run); a fresh scheduler's when None.
        plateau_epochs: the 0-based epochs in which the plateau steps (None: all), e.g. ``range(5, n)`` after
            a warm-up that stepped alone.
        momentum, betas: the optimizer's (betas: an Adam-like optimizer).
        group_extras: per param group, other keys a resumed optimizer's groups hold (``initial_lr``,
            ``max_lr``, ``min_lr``, ``momentum``, ...: what schedulers wrote there before the save), set on the
            groups before the schedulers are built.

    Returns:
        A ``ComposedTrace``; when torch raises, it holds the epochs before and ``error`` says what torch
        raises.

    Raises:
        ScheduleConfigError: an argument torch's constructors reject, or inputs of different lengths.
        TorchRaises: torch raises while the schedulers are built.

    Example:
        >>> from plateau_forensics.schedules import StepLR
        >>> t = replay_composed([10 - 0.0167 * i for i in range(6)], PlateauConfig(patience=5), lrs=[0.5],
        ...                     with_schedulers=[StepLR(step_size=3)])
        >>> [round(v, 6) for v in t.timeline.lrs[-1]]
        [0.05]
    """
    cfg = config or PlateauConfig()
    values, labels = _metrics_epochs(metrics, epochs)
    if step_epochs is not None and len(step_epochs) != len(values):
        raise ScheduleConfigError(f"{len(values)} metrics but {len(step_epochs)} step_epochs")
    lrs0 = list(lrs) if lrs is not None else [1.0]
    opt = Optimizer(lrs0, lr_dtypes=lr_dtypes, momentum=momentum, betas=betas)
    for group, extra in zip(opt.param_groups, group_extras or (), strict=False):
        group.update({k: v for k, v in extra.items() if k not in ("lr", "params")})
    plateau = state if state is not None else PlateauState.fresh(cfg, opt.lrs)
    plans = [s if isinstance(s, Stepped) else Stepped(s) for s in with_schedulers]
    for p in plans:
        if not isinstance(p.scheduler, LRScheduler):
            raise ScheduleConfigError(f"with_schedulers takes schedules' schedulers, got {p.scheduler!r}")
        if p.per_epoch < 1:
            raise ScheduleConfigError(f"per_epoch must be >= 1, got {p.per_epoch}")
    by_step: dict[int, list[AddParamGroup]] = {}
    for ev in events:
        if not isinstance(ev, AddParamGroup):
            raise ScheduleConfigError(f"events takes AddParamGroup events, got {ev!r}")
        by_step.setdefault(ev.at_step, []).append(ev)

    tl = Timeline(writers=(PLATEAU, *(p.scheduler.label for p in plans)))
    before = opt.lrs
    bound: list[LRScheduler] = []
    names: list[str] = []  # the labels, computed once (inspect.signature is slow)
    changes: list[Change] = []
    for p in plans:
        b = p.scheduler.bind(opt)
        bound.append(b)
        names.append(b.label)
        changes += changes_between(names[-1], before, opt.lrs)
        before = opt.lrs
    batches = max([p.per_epoch for p in plans], default=1)

    cols = _Columns()
    out_epochs: list[float] = []
    out_metrics: list[float] = []
    lr_ins: list[tuple[float, ...] | None] = []
    last_epochs: list[float] = []
    plateau_states: list[PlateauState] = []
    scheduler_states: list[tuple[dict[str, Any], ...]] = []
    first: tuple[PlateauState, tuple[float, ...]] | None = None
    prev_out: tuple[float, ...] | None = None
    error = None

    def step_some(ks: list[int], e: int) -> None:
        nonlocal before
        for k in ks:
            when = plans[k].epochs
            if when is None or e in when:
                bound[k].step()
                changes.extend(changes_between(names[k], before, opt.lrs))
                before = opt.lrs

    batch_ks = [k for k, p in enumerate(plans) if p.per_epoch > 1]
    early_ks = [k for k, p in enumerate(plans) if p.per_epoch == 1 and p.before_plateau]
    late_ks = [k for k, p in enumerate(plans) if p.per_epoch == 1 and not p.before_plateau]
    for e, (metric, label) in enumerate(zip(values, labels, strict=True)):
        for ev in by_step.get(e, ()):
            opt.add_param_group(lr=ev.lr, lr_dtype=ev.lr_dtype)
            if ev.min_lr is not None:
                plateau = replace(plateau, min_lrs=(*plateau.min_lrs, float(ev.min_lr)))
            changes.extend(changes_between("add_param_group", before, opt.lrs))
            before = opt.lrs
        stepping = plateau_epochs is None or e in plateau_epochs
        try:
            for batch in range(batches):
                tl.add(label if batches == 1 else label + batch / batches, before, changes)
                changes = []
                opt.step()
                step_some([k for k in batch_ks if batch < plans[k].per_epoch], e)
            step_some(early_ks, e)
            if stepping:
                lr_in = opt.lrs
                one = run(cfg, [metric], lr_in, state=plateau, lr_dtypes=opt.lr_dtypes, strict=False)
                if one.error is not None:
                    error = f"{one.error} (epoch {label})"
                    break
                if first is None:
                    first = (plateau, lr_in)
                event = one._cols.events[0]
                plateau = one.final
                epoch_given = step_epochs[e] if step_epochs is not None else None
                if epoch_given is not None:
                    plateau = replace(plateau, last_epoch=epoch_given)
                for g, (old, new) in enumerate(zip(lr_in, one.lrs, strict=True)):
                    if new != old or math.copysign(1.0, new) != math.copysign(1.0, old):
                        opt.param_groups[g]["lr"] = filled(opt.param_groups[g]["lr"], new)
                changes.extend(changes_between(PLATEAU, before, opt.lrs))
                before = opt.lrs
                lr_ins.append(lr_in if prev_out is not None and lr_in != prev_out else None)
                prev_out = one.lrs
                cols.best.append(one.final.best)
                cols.num_bad.append(one.final.num_bad_epochs)
                cols.cooldown.append(one.final.cooldown_counter)
                cols.lrs.append(one.lrs)
                cols.events.append(event)
                out_epochs.append(label)
                out_metrics.append(metric)
                last_epochs.append(plateau.last_epoch)
                plateau_states.append(plateau)
            step_some(late_ks, e)
            if stepping:
                scheduler_states.append(tuple(b.state_dict() for b in bound))
        except TorchRaises as exc:
            error = f"{exc} (epoch {label})"
            break
    if error is None and labels:  # the last epoch's steps set the lrs of the epoch after the log
        tl.add(labels[-1] + 1, before, changes)
    tl.error = error
    tl.warnings = list(opt.warnings)
    start_state, start_lrs = first if first is not None else (plateau, before)
    trace = ComposedTrace(
        config=cfg,
        epochs=tuple(out_epochs),
        metrics=tuple(out_metrics),
        starts=(Start(0, start_state, tuple(start_lrs)),),
        final=plateau,
        error=error,
        lr_dtypes=tuple(opt.lr_dtypes),
        timeline=tl,
        schedulers=tuple(bound),
        plateau_states=tuple(plateau_states),
        scheduler_states=tuple(scheduler_states),
        optimizer=opt,
        events=tuple(events),
    )
    trace._cols = cols
    if any(v is not None for v in lr_ins):
        trace.lr_ins = tuple(lr_ins)
    trace.last_epochs = tuple(last_epochs)
    return trace


def scheduler_writes(t: ComposedTrace) -> list[tuple[float, str, tuple[float, ...], tuple[float, ...]]]:
    """Every lr change of a composed run with its writer: ``(epoch, writer, lrs before, lrs after)``."""
    out: list[tuple[float, str, tuple[float, ...], tuple[float, ...]]] = []
    tl = t.timeline
    if tl is None:
        return out
    for epoch, ch in zip(tl.epochs, tl.changes, strict=True):
        for w in dict.fromkeys(c.writer for c in ch):
            mine = [c for c in ch if c.writer == w]
            out.append(
                (
                    epoch,
                    w,
                    tuple(c.before if c.before is not None else math.nan for c in mine),
                    tuple(c.after for c in mine),
                )
            )
    return out


__all__ = ["AddParamGroup", "ComposedTrace", "Stepped", "TensorLR", "replay_composed", "scheduler_writes"]
