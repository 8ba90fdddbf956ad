"""The notebook-facing API: ``replay`` a metric sequence, ``trace`` a checkpoint against its loss log.

It composes the loader, the log reader, the alignment, the engine and the findings; it prints nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from plateau_forensics import diagnose
from plateau_forensics.errors import ConfigError
from plateau_forensics.loader import Checkpoint, Loader, load_checkpoint

__all__ = ["load_checkpoint", "replay", "trace"]
from plateau_forensics.engine import Trace, run
from plateau_forensics.state import PlateauConfig, from_state_dict

if TYPE_CHECKING:
    from plateau_forensics.losses import LossLog


def _metrics_and_epochs(metrics: Any) -> tuple[list[float], list[float] | None, Any]:
    if hasattr(metrics, "metrics") and hasattr(metrics, "epochs"):
        return [float(m) for m in metrics.metrics], list(metrics.epochs), metrics
    return [float(m) for m in metrics], None, None


def replay(
    metrics: Sequence[float] | LossLog,
    config: PlateauConfig | None = None,
    *,
    lrs: Sequence[float] | None = None,
    state: Checkpoint | Mapping[str, Any] | None = None,
    with_schedulers: Sequence[Any] = (),
    lr_dtypes: Sequence[str | None] | None = None,
    step_epochs: Sequence[float | None] | None = None,
    events: Sequence[Any] = (),
) -> Trace:
    """Replay ``scheduler.step(m)`` for every metric, from a fresh scheduler or from a saved state.

    Args:
        metrics: the values passed to ``step()`` (a list, or a ``LossLog`` whose epochs label the steps).
        config: hyperparameters for a fresh scheduler; with ``state``, only fills what the state lacks
            (saved values win, as in torch's ``load_state_dict``).
        lrs: each param group's lr before the first step. Defaults: the checkpoint optimizer's lrs, else
            the state's ``_last_lr``; for a fresh scheduler ``[1.0]`` (lrs then read as multipliers).
        state: what ``load_checkpoint`` returns, or a raw ``scheduler.state_dict()`` mapping.
        with_schedulers: other torch schedulers on the same optimizer (``pf.schedules.StepLR(...)``, ...),
            built after the plateau one in list order and stepped after its ``step(metric)`` every epoch, as
            PyTorch's compound tests do (``schedules.replay_composed``; a ``pf.Stepped`` says how the loop
            steps one).
        lr_dtypes: per param group, the dtype of a tensor lr (``"float32"``) or None for a float lr; default
            the checkpoint's. A tensor group's lr is rounded to its dtype first, as ``torch.tensor(lr)`` does.
        step_epochs: per step, the ``epoch`` of the deprecated ``step(metric, epoch)`` (None: no epoch).
        events: ``pf.AddParamGroup(at_step=..., lr=..., min_lr=...)`` param groups added mid-run; torch's
            RuntimeError is reproduced where torch raises (the trace stops, ``trace.error`` says why).

    Returns:
        The ``Trace``; ``trace.steps[i]`` is the state after step ``i`` and why (a ``ComposedTrace``, with
        the writer of every lr change in ``timeline``, when other schedulers, step epochs or events are
        given).

    Example:
        >>> t = replay([1.0, 1.2, 1.3, 1.4], PlateauConfig(patience=1), lrs=[0.1])
        >>> [s.event.value for s in t.steps]
        ['improved', 'bad', 'reduced', 'bad']
    """
    values, epochs, log = _metrics_and_epochs(metrics)
    saved_dtypes = None
    if isinstance(state, Checkpoint):
        cfg, st = state.config, state.state
        lrs = lrs if lrs is not None else state.lrs
        saved_dtypes = state.lr_dtypes
    elif state is not None:
        cfg, st = from_state_dict(state, config)
        lrs = lrs if lrs is not None else st.last_lr
    else:
        cfg, st = config or PlateauConfig(), None
    if lrs is None:
        if st is not None:
            raise ConfigError("the state has no _last_lr and no optimizer lrs: pass lrs=[...]")
        lrs = (1.0,)
    dtypes = lr_dtypes if lr_dtypes is not None else saved_dtypes
    if dtypes:  # a tensor lr holds its dtype's nearest value of the lr given (0.1 in float32: 0.10000000149...)
        from plateau_forensics.engine import rounder

        lrs = [r(float(v)) if (r := rounder(d)) is not None else v
               for v, d in zip(lrs, [*dtypes, *[None] * (len(lrs) - len(dtypes))], strict=False)]
    if with_schedulers or step_epochs is not None or events:
        from plateau_forensics.schedules import replay_composed

        trace: Trace = replay_composed(values, cfg, lrs=lrs, with_schedulers=with_schedulers,
                                       lr_dtypes=dtypes or None, step_epochs=step_epochs, events=events,
                                       epochs=epochs, state=st)
    else:
        trace = run(cfg, values, lrs, state=st, epochs=epochs, lr_dtypes=dtypes or None)
    trace.log = log
    if isinstance(state, Checkpoint):
        trace.checkpoint = state
    return trace


def _read_log(losses: Any, **opts: Any) -> LossLog:
    """One log from a path, frame, mapping, sequence or LossLog; a list of paths/LossLogs is stitched in order."""
    from plateau_forensics.losses import read_losses, stitch

    def one(item: Any) -> LossLog:
        if hasattr(item, "metrics") and hasattr(item, "anomalies"):
            return item
        return read_losses(item, **{k: v for k, v in opts.items() if v is not None})

    if isinstance(losses, (list, tuple)) and losses and all(
            isinstance(x, (str, os.PathLike)) or hasattr(x, "anomalies") for x in losses):
        return stitch([one(x) for x in losses])
    return one(losses)


def _hf_log(ck: Checkpoint, **opts: Any) -> LossLog | None:
    """An HF checkpoint's own log: trainer_state.json's log_history (eval entries, learning_rate)."""
    from dataclasses import replace

    from plateau_forensics.losses import read_losses

    from plateau_forensics.stacks import stack_of

    if not ck.log_history:
        return None
    own = stack_of(ck.framework).own_log  # a stack whose checkpoint carries its log (MMEngine's message hub)
    source, column = own(ck) if own is not None else (f"{ck.path}/trainer_state.json:log_history", None)
    if column is not None and opts.get("metric") is None:
        opts = {**opts, "metric": column}
    log = read_losses(list(ck.log_history), **{k: v for k, v in opts.items() if v is not None})
    return replace(log, source=source)


def trace(
    checkpoint: str | os.PathLike[str] | Checkpoint | None = None,
    losses: Any = None,
    *,
    scheduler: str | None = None,
    metric: str | None = None,
    epoch_column: str | None = None,
    lr_columns: Sequence[str] | None = None,
    lr: Sequence[float] | None = None,
    config: PlateauConfig | None = None,
    loader: Loader = "builtin",
    expect: Mapping[str, Any] | None = None,
    full_search: bool = False,
    run: str | None = None,
) -> Trace:
    """What ``plateau-trace`` runs: place the checkpoint in the log, replay, and collect findings.

    With a checkpoint and a log: a fresh scheduler with the checkpoint's hyperparameters is replayed
    up to the row where it reproduces the saved state, then the replay continues *from the saved
    state* (what a correctly resumed run does) over the remaining rows.

    Args:
        checkpoint: a path, an HF ``checkpoint-N/`` directory, or a loaded ``Checkpoint``; None for teaching mode.
        losses: a log path (CSV / JSON Lines / TensorBoard run or event file), DataFrame, mapping or sequence, or
            a list of log paths written one after another (stitched in order). None: the checkpoint's own log
            (HF trainer_state.json) if it has one, else the checkpoint alone.
        scheduler: key path of the plateau state when the checkpoint holds several.
        metric, epoch_column, lr_columns: override the log's column detection.
        lr: the lrs before the first replayed step when the log has no lr column.
        config: hyperparameters for teaching mode (no checkpoint); ignored with a checkpoint.
        loader: ``"builtin"`` (torch-free) or ``"torch"``.
        expect: hyperparameters you believe are in effect (e.g. ``{"patience": 5}``); saved values that
            differ become ``hyperparameters-overridden`` findings.
        full_search: simulate every story even for a long log (``longlog.LONG_LOG_ROWS`` rows and more, where
            only the plain story is checked by default).
        run: the run (id or name) of an MLflow store given as ``losses`` (``mlflow.db`` or ``mlruns/``).

    Raises:
        ForensicsError: any unusable input (see the error classes).
    """
    ck = checkpoint if isinstance(checkpoint, Checkpoint) or checkpoint is None else load_checkpoint(
        checkpoint, scheduler, loader=loader)
    log = None
    if losses is not None:
        log = _read_log(losses, metric=metric, epoch_column=epoch_column, lr_columns=lr_columns, run=run)
    elif ck is not None and ck.log_history:
        log = _hf_log(ck, metric=metric, epoch_column=epoch_column, lr_columns=lr_columns)
    if ck is None:
        if log is None:
            raise ConfigError("nothing to trace: give a checkpoint, a loss log, or both")
        return _trace_log(log, config, lr, expect, full_search)
    if log is None:
        t = replay([], state=ck)
        if ck.epoch is not None:
            t.label_offset = ck.epoch - ck.state.last_epoch
            t.notes.append(f"forecast epochs count from the checkpoint's epoch field ({ck.epoch}), assuming it "
                           "was saved after that epoch's step; give the loss log to place it exactly")
        t.findings = diagnose.diagnose(t, expect=expect)
        return _with_schedule_findings(ck, None, t)
    return _with_schedule_findings(ck, log, _trace_checkpoint_in_log(ck, log, lr, expect, full_search))


def _with_schedule_findings(ck: Checkpoint, log: LossLog | None, t: Trace) -> Trace:
    """``t`` with the resume findings of the other schedulers ``ck`` saves (``schedule_resume``)."""
    if ck.schedulers:
        from plateau_forensics import schedule_resume

        have = {f.code for f in t.findings}
        t.findings = [*t.findings, *(f for f in schedule_resume.findings(ck, log, t) if f.code not in have)]
    return t


def _surviving(log: LossLog) -> LossLog:
    """The rows to replay: after a crash and an appended resume, the last run's rows for each epoch."""
    if any(a.kind == "duplicate-epochs" for a in log.anomalies):
        return log.surviving_history()[0]
    return log


def _first_logged_lrs(log: LossLog) -> tuple[float, ...] | None:
    if log.lrs and log.lrs[0] is not None and all(v is not None for v in log.lrs[0]):
        return tuple(float(v) for v in log.lrs[0])  # type: ignore[arg-type]
    return None


def _trace_log(log: LossLog, config: PlateauConfig | None, lr: Sequence[float] | None,
               expect: Mapping[str, Any] | None, full_search: bool = False) -> Trace:
    """Teaching mode: the log replayed by a scheduler with ``config`` (torch's defaults when None), the values
    taken as printed; restarts in the log and logged lrs are still explained by the stories."""
    from dataclasses import replace as dc_replace
    from types import MappingProxyType

    from plateau_forensics import history, narrative, stories

    cfg = config or PlateauConfig()
    from plateau_forensics import longlog

    if longlog.is_long(log) and not full_search:
        return _trace_long(None, log, cfg, lr, expect, defaults=config is None)
    exact = dc_replace(log, precision=MappingProxyType({}))
    has_lr = _first_logged_lrs(log) is not None
    lr_option = tuple(lr) if lr else (None if has_lr else (1.0,))
    ev = stories.evidence_for(None, exact, cfg, lr_option=lr_option)
    verdict = stories.explain(ev)
    e = verdict.evaluation
    assert e is not None
    t = history.trace_of(ev, e)
    t.log, t.verdict = log, verdict
    if config is None:
        t.notes.append("no hyperparameters given: torch's defaults are in use (mode=min, factor=0.1, patience=10, "
                       "threshold=1e-4 rel, cooldown=0, min_lr=0, eps=1e-8); pass --patience, --factor, ...")
    if not lr and not has_lr:
        t.notes.append("no lr given and no lr column: lrs are shown relative to 1.0 (use --lr)")
    rounded = [f"'{c}' {p.description}" for c, p in log.precision.items() if not p.exact and not p.assumed]
    if rounded:
        t.notes.append("the log is rounded (" + ", ".join(rounded) + "): replayed as printed")
    t.findings = diagnose.diagnose(t, expect=expect, full_log=log, replayed_log=log,
                                   extra=narrative.story_findings(ev, verdict), column=e.plan.column)
    return t


def _trace_long(ck: Checkpoint | None, log: LossLog, cfg: PlateauConfig, lr: Sequence[float] | None,
                expect: Mapping[str, Any] | None, defaults: bool = False) -> Trace:
    """A long exact log: the plain story on the engine's columns (``longlog.explain_long``)."""
    from plateau_forensics import longlog, narrative
    from plateau_forensics.align import Alignment
    from plateau_forensics.stories import Verdict

    t, found = longlog.explain_long(ck, log, cfg, lr)
    rows = found["unexplained_lrs"]
    explained, unexplained = [], []
    if ck is not None:
        (explained if found["placed"] else unexplained).append("the checkpoint's counters")
    if log.lrs is not None:
        n = sum(1 for row in log.lrs if row is not None and row[0] is not None)
        explained.append(f"{n - len(rows)} of {n} logged lrs")
        if rows:
            unexplained.append(f"{len(rows)} logged lrs")
    t.log, t.checkpoint = log, ck
    checked = ("a fresh scheduler from the first row" + (", the run continued from the saved state" if ck else "")
               + (", the lr column read before and after each step" if log.lrs is not None else ""))
    extra = []
    if found["story"] is None:  # the plain story fails: only the full search can tell which story fits
        candidates = tuple(found["candidates"])
        decide = "rerun with --full-search (full_search=True): it simulates every story, slower on a long log"
        t.verdict = Verdict(story=candidates[0], alternatives=candidates[1:], decide=decide,
                            explained=tuple(explained), unexplained=tuple(unexplained))
        # from the first disagreement on (all of it when the saved state itself is not reproduced)
        first = 0 if ck is not None and not found["placed"] else (rows[0] if rows else 0)
        t.unknown = t.lr_unknown = frozenset(range(first, len(t)))
        what = []
        if rows:
            shown = ", ".join(str(log.epochs[i]) for i in rows[:12]) + (", ..." if len(rows) > 12 else "")
            what.append(f"the logged lr differs from the plain replay's (read before or after each step) at "
                        f"{len(rows)} rows, first at epochs {shown}")
        if ck is not None and not found["placed"]:
            what.append("the saved state is not where the plain replay's last_epoch puts it")
        extra.append(diagnose.Finding(
            "ambiguous", "warning", log.epochs[first] if len(log) else None,
            "; ".join(what) + f": on a long log only the plain story was checked ({checked}); "
            + " or ".join(c[0] for c in candidates) + " could each do that, and the state from epoch "
            + f"{log.epochs[first] if len(log) else '?'} on is shown as unknown",
            {"epochs": [log.epochs[i] for i in rows[:1000]], "rows": len(rows),
             "alternatives": [list(c) for c in candidates]},
            decide))
    else:
        story = tuple(found["story"])
        t.verdict = Verdict(story=story, alternatives=(), decide="", explained=tuple(explained),
                            unexplained=tuple(unexplained))
        if story == ("lr-logged-after-step",):
            extra.append(diagnose.Finding(
                "lr-logged-after-step", "info", None,
                "the lr column holds the lr after each scheduler.step(), not the lr the epoch trained with",
                {}, narrative.FIXES["lr-logged-after-step"]))
    t.notes.append(f"long log ({len(log):,} rows): only the plain story was checked ({checked}); pass "
                   "full_search=True (--full-search) to simulate every story")
    if defaults:
        t.notes.append("no hyperparameters given: torch's defaults are in use (mode=min, factor=0.1, patience=10, "
                       "threshold=1e-4 rel, cooldown=0, min_lr=0, eps=1e-8); pass --patience, --factor, ...")
    if ck is not None:
        a = found["anchor"]
        steps = ck.state.steps
        if a is not None and found["placed"]:
            t.alignment = Alignment(log.epochs[a], a, ck.state.last_epoch, log.epochs[a] - steps,
                                    (log.epochs[a],), 0, tuple(found["initial_lrs"]), "log", None,
                                    ("best", "num_bad_epochs", "cooldown_counter"), "", ck.state.last_epoch_base)
        else:
            t.alignment = Alignment(None, None, ck.state.last_epoch, None, (), 0, tuple(found["initial_lrs"]),
                                    "log", None, ("best",), "the plain story does not reproduce the saved state "
                                    "where its last_epoch falls; --full-search simulates the other stories",
                                    ck.state.last_epoch_base)
            t.notes.append(t.alignment.note)
    t.findings = diagnose.diagnose(t, expect=expect, full_log=log, replayed_log=log, extra=extra)
    return t


def _never_stepped(ck: Checkpoint, log: LossLog, expect: Mapping[str, Any] | None) -> Trace:
    """A scheduler that never stepped although the run logged evaluations: nothing to replay."""
    from plateau_forensics.stories import Verdict

    t = replay([], state=ck)
    t.checkpoint, t.log = ck, log
    t.verdict = Verdict(story=("scheduler-never-stepped",), alternatives=(), decide="", explained=(),
                        unexplained=())
    t.notes.append("the saved scheduler never stepped: no history to replay (the finding says what stepping "
                   "it on this log would have done)")
    t.findings = diagnose.diagnose(t, expect=expect, full_log=log, replayed_log=log)
    return t


def _trace_checkpoint_in_log(
    ck: Checkpoint, full_log: LossLog, lr: Sequence[float] | None, expect: Mapping[str, Any] | None,
    full_search: bool = False,
) -> Trace:
    """Explain the run with the story that fits the checkpoint and the log best (``stories.explain``)."""
    from plateau_forensics import history, narrative, stories

    if not ck.partial and ck.state.steps == 0 and ck.state.best == ck.config.mode_worse and len(full_log):
        return _never_stepped(ck, full_log, expect)
    from plateau_forensics import longlog

    if longlog.is_long(full_log) and not full_search:
        return _trace_long(ck, full_log, ck.config, lr, expect)
    from plateau_forensics.stacks import stack_of

    view = stack_of(ck.framework).plateau_log  # lrs the stack's own code set around the plateau (timm)
    seen_ck, seen_log = view(ck, full_log) if view else (ck, full_log)
    cut = seen_log is not full_log and len(seen_log) < len(full_log) and bool(len(seen_log)) and \
        seen_log.epochs[0] != full_log.epochs[0]
    ev = stories.evidence_for(seen_ck, seen_log, ck.config, lr_option=lr, front_cut=cut)
    verdict = stories.explain(ev)
    e = verdict.evaluation
    assert e is not None
    t = history.trace_of(ev, e, (*verdict.others, *verdict.equals, *verdict.moved))
    t.checkpoint, t.log, t.verdict = ck, full_log, verdict
    t.alignment = _alignment(ev, e, t)
    if t.alignment.note:
        t.notes.append(t.alignment.note)
    if verdict.unverifiable and t.alignment.epoch is not None:
        words = " / ".join(" + ".join(s) for s in verdict.unverifiable)
        t.notes.append(f"if the run was resumed from this checkpoint after epoch {t.alignment.epoch}, the inputs "
                       f"cannot tell whether that resume went wrong ({words} fit the log as well): log the lr, or "
                       "give a checkpoint saved later")
    t.notes.extend(_story_notes(ev, e, t))
    codes = {c for story in (verdict.story, *verdict.alternatives) for c in story}
    if ck.schedulers and "external-lr-change" in codes:  # another saved scheduler may be that writer
        composed = _with_saved_schedulers(ck, full_log, t, expect)
        if composed is not None:
            return composed
    rebuilt = None
    a = t.alignment
    if a.index is not None and 0 <= a.index < len(t) and a.index not in t.unknown:
        rebuilt = t.state_at(a.index)
    t.findings = diagnose.diagnose(t, expect=expect, full_log=full_log, replayed_log=full_log, rebuilt=rebuilt,
                                   extra=narrative.story_findings(ev, verdict), column=e.plan.column)
    return t


def _with_saved_schedulers(ck: Checkpoint, log: LossLog, t: Trace, expect: Mapping[str, Any] | None
                           ) -> Trace | None:
    """The run replayed with the other schedulers the checkpoint saved (``timeline_story``), when they explain
    every logged lr of the whole run; else None (and, when they explain the rows after the checkpoint, a
    note on ``t`` saying so)."""
    from plateau_forensics import narrative, timeline_story
    from plateau_forensics.report import g
    from plateau_forensics.stories import Verdict

    a = t.alignment
    anchor = a.index if a is not None and len(t) == len(log) else None
    fit = timeline_story.explain_with_saved_schedulers(ck, log, anchor)
    if fit is None or not fit.complete:
        return None
    writers = ", ".join(fit.writers)
    made = [c for c in fit.changes]
    shown = "; ".join(f"epoch {g(e)}: {g(b)} -> {g(v)}" for e, _, _, b, v in made[:12]) + ("; ..." if len(made) > 12
                                                                                         else "")
    if not fit.whole_run:
        first = "; ".join(f"epoch {g(e)}: {g(b)} -> {g(v)}" for e, _, _, b, v in made[:4])
        t.notes.append(f"the checkpoint also holds {writers}: restored and stepped after the plateau every epoch, "
                       f"it reproduces all {fit.logged} logged lrs after the checkpoint ({len(made)} changes: "
                       f"{first}{'; ...' if len(made) > 4 else ''}); the rows before it are not checked (its "
                       "saved state does not hold every constructor argument)")
        return None
    c = fit.trace
    c.checkpoint, c.log, c.alignment = ck, log, a
    story = ("lr-logged-after-step",) if fit.lr_after else ("scheduler-stepped-before-optimizer",) \
        if fit.stepped_first else ()
    c.verdict = Verdict(story=story, alternatives=(), decide="",
                        explained=("the checkpoint's counters and its other schedulers' states",
                                   f"{fit.explained} of {fit.logged} logged lrs with {writers}"),
                        unexplained=())
    extra = [diagnose.Finding(
        "another-scheduler", "info", made[0][0] if made else None,
        f"{writers} steps the same optimizer after the plateau scheduler every epoch (rebuilt from its saved state "
        f"and replayed from the first row, it reproduces the checkpoint and all {fit.logged} logged lrs); it made "
        f"the lr changes at {shown or 'no epoch'}",
        {"schedulers": list(fit.writers), "changes": [list(map(_plain_number, ch)) for ch in made[:1000]]},
        "nothing to fix if both schedulers are meant to act; the plateau scheduler's reductions are listed "
        "under reductions")]
    if fit.lr_after:
        both = (f"; or {writers} is stepped at the start of each epoch, before optimizer.step() (torch warns "
                "'Detected call of `lr_scheduler.step()` before `optimizer.step()`' and its first value is never "
                "trained with): with no plateau reduction to tell them apart, both give this log; the loop's "
                "order decides") if fit.also_stepped_first else ""
        extra.append(diagnose.Finding(
            "lr-logged-after-step", "info", None,
            "the lr column holds the lr after each epoch's scheduler steps, not the lr the epoch trained with"
            + both, {"or_stepped_before_optimizer": fit.also_stepped_first}, narrative.FIXES["lr-logged-after-step"]))
    if fit.stepped_first:
        lr0 = fit.trace.timeline.lrs[0]
        extra.append(diagnose.Finding(
            "scheduler-stepped-before-optimizer", "warning", log.epochs[0],
            f"{writers} is stepped at the start of each epoch, before optimizer.step(): replayed that way (one step "
            f"before the first epoch, the plateau's after it), it reproduces the checkpoint and all {fit.logged} "
            f"logged lrs, and no other order does; torch warns 'Detected call of `lr_scheduler.step()` before "
            f"`optimizer.step()`', and the schedule's first value ({', '.join(f'{v:.6g}' for v in lr0)}) was never "
            "trained with: every epoch runs one step ahead of its schedule",
            {"schedulers": list(fit.writers), "skipped_lrs": list(lr0)},
            "call scheduler.step() after optimizer.step(), at the end of the epoch (after the plateau's step)"))
    c.notes.append(f"replayed with {writers} stepped at the start of each epoch (once before the first), the "
                   "plateau scheduler at its end" if fit.stepped_first else
                   f"replayed with {writers} stepping after the plateau scheduler every epoch (as PyTorch's "
                   "compound scheduler tests do)")
    c.findings = diagnose.diagnose(c, expect=expect, full_log=log, replayed_log=log, extra=extra)
    return c


def _plain_number(v: Any) -> Any:
    return float(v) if isinstance(v, float) else v


def _alignment(ev: Any, e: Any, t: Trace) -> Any:
    """Where the story places the checkpoint, in the ``Alignment`` terms of the JSON contract."""
    from plateau_forensics.align import Alignment

    ck = ev.ck
    matched_on = ("best",) if ck.partial else ("best", "num_bad_epochs", "cooldown_counter")
    lineage = [i for i in e.lineage if i < len(e.sim.after)][: len(t)]
    init = tuple(e.initial_lrs) if e.initial_lrs is not None else tuple(t.starts[0].lrs)
    source = {"option": "option", "log": "log", "checkpoint-initial_lr": "checkpoint"}.get(e.initial_source,
                                                                                        "inferred")
    if e.anchor_op is None or e.anchor_op < 0:
        note = ("the log starts after the checkpoint" if e.anchor_op == -1
                else "no row of the log reproduces the saved state under any story")
        return Alignment(None, None, ck.state.last_epoch, None, (), 0, init, source, None, matched_on, note,
                         ck.state.last_epoch_base)
    op = e.ops[e.anchor_op]
    index = lineage.index(e.anchor_op) if e.anchor_op in lineage else None
    first = e.anchor_op  # the first step of the scheduler that wrote the checkpoint
    while e.ops[first].parent >= 0 and not (e.ops[first].init is not None and not _carries(e, first)):
        first = e.ops[first].parent
    start_row = e.ops[first].row
    if e.initial_lrs is None and first in lineage:
        inferred = t.starts[[s.index for s in t.starts].index(lineage.index(first))].lrs \
            if lineage.index(first) in [s.index for s in t.starts] else None
        if inferred is not None and all(v == v for v in inferred):
            init = tuple(inferred)
    steps = ck.state.steps
    offset = op.label - steps if isinstance(op.label, (int, float)) else None
    lr_ok = None if ck.lrs is None else "checkpoint lr" not in e.penalties
    note = ""
    if index is None:
        note = f"the checkpoint holds the state after epoch {op.label} of a process whose later rows a resume replaced"
    return Alignment(op.label, index, ck.state.last_epoch, offset, (op.label,), start_row, init, source, lr_ok,
                     matched_on, note, ck.state.last_epoch_base)


def _carries(e: Any, op_index: int) -> bool:
    from plateau_forensics.history import _carries as carries

    return carries(e, op_index)


def _story_notes(ev: Any, e: Any, t: Trace) -> list[str]:
    notes = []
    log = ev.log
    if e.plan.start_row > 0 and e.plan.rows:
        first, last = log.epochs[e.plan.rows[0]], log.epochs[e.plan.rows[e.plan.start_row - 1]]
        notes.append(f"rows for epochs {first}-{last} precede the first step of the scheduler that wrote this "
                     "checkpoint; they are not replayed")
    rounded = [f"'{c}' {p.description}" for c, p in log.precision.items() if not p.exact and not p.assumed]
    if rounded:
        notes.append("the log is rounded (" + ", ".join(rounded) + "): each value stands for an interval, and "
                     "comparisons it cannot decide are marked")
    if t.unknown:
        notes.append(f"{len(t.unknown)} of {len(t)} steps have a state the inputs cannot determine (shown as ?)")
    if t.lr_unknown:
        notes.append(f"{len(t.lr_unknown)} steps have an lr the inputs cannot determine (shown as ?)")
    if e.initial_source == "unknown" and t.lr_unknown != frozenset(range(len(t))) and ev.ck is not None:
        notes.append("no lr logged and no --lr: lrs before the checkpoint are inferred from its optimizer lr "
                     "through the reductions in between")
    return notes


def _sliced(log: LossLog, start: int) -> LossLog:
    if start == 0:
        return log
    return log.pick_rows(list(range(start, len(log))))


def replay_keras(losses: Any, config: PlateauConfig | None = None, *, lr: Sequence[float] | None = None,
                 min_delta: float | None = None, **log_options: Any) -> Any:
    """Replay a log under Keras 3's ``ReduceLROnPlateau`` callback rules (``--rules keras``).

    Keras keeps no scheduler state, so the replay always starts fresh. ``config`` uses torch's names;
    ``keras_rules.from_torch`` maps them (``threshold`` -> ``min_delta`` only in abs mode, or pass ``min_delta``).

    Returns:
        A ``keras_rules.KerasTrace``.
    """
    from plateau_forensics.keras_rules import from_torch, run_keras

    log = _read_log(losses, **log_options)
    lrs0 = tuple(lr) if lr else _first_logged_lrs(log)
    if lrs0 is not None and len(set(lrs0)) > 1:
        raise ConfigError("Keras has one optimizer lr; this log has several param groups")
    kcfg = from_torch(config or PlateauConfig(), min_delta=min_delta)
    t = run_keras(kcfg, [float(m) for m in log.metrics], (lrs0 or (1.0,))[0], epochs=list(log.epochs))
    t.log = log  # type: ignore[attr-defined]
    return t


def replay_mmengine(losses: Any, config: PlateauConfig | None = None, *, lr: Sequence[float] | None = None,
                    expect: Mapping[str, Any] | None = None, defaults: bool = False, **log_options: Any) -> Trace:
    """Teaching mode under MMEngine's ``ReduceOnPlateauLR`` rules (``--rules mmengine``): torch's names in
    ``config`` (MMEngine copies torch's machine), a fresh scheduler starting from MMEngine's ``best = int(1e9)``.

    Log values are Python floats, which MMEngine compares as torch does; ``mmengine_rules.simulate`` covers
    float32 metrics and the ``begin``/``end`` window.
    """
    from plateau_forensics import mmengine_rules as mm

    log = _read_log(losses, **log_options)
    t = _trace_log(log, mm.torch_config(mm.from_torch(config or PlateauConfig())), lr, expect)
    t.notes.append("MMEngine's rules: best starts at int(1e9), not inf (a metric at or above 1e9*(1-threshold) "
                   "never improves on it); last_epoch is the number of plateau steps (MMEngine's last_step + 1); "
                   "MMEngine's names: rule less/greater = mode, threshold_rule = threshold_mode, min_value = min_lr")
    if defaults:
        t.notes.append("no hyperparameters given: MMEngine's defaults are in use (rule=less, factor=0.1, "
                       "patience=10, threshold=1e-4 rel, cooldown=0, min_value=0, eps=1e-8)")
    return t


def compare_rules(losses: Any, config: PlateauConfig | None = None, *, lr: Sequence[float] | None = None,
                  min_delta: float | None = None, **log_options: Any) -> tuple[Trace, Any]:
    """The same log and hyperparameters replayed under torch's and Keras's rules (``--compare torch,keras``)."""
    log = _read_log(losses, **log_options)
    lrs0 = tuple(lr) if lr else (_first_logged_lrs(log) or (1.0,))
    torch_trace = replay(log, config, lrs=lrs0)
    return torch_trace, replay_keras(log, config, lr=lrs0, min_delta=min_delta)
