"""The notebook-facing API: ``replay`` a metric sequence, ``trace`` a checkpoint against its loss log.

It composes the loader, the log reader, the alignment, the engine and the findings; it prints nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from plateau_forensics import diagnose
from plateau_forensics.align import align
from plateau_forensics.errors import ConfigError
from plateau_forensics.loader import Checkpoint, Loader, load_checkpoint

__all__ = ["load_checkpoint", "replay", "trace"]
from plateau_forensics.engine import Trace, extend, run
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
) -> Trace:
    """Replay ``scheduler.step(m)`` for every metric, from a fresh scheduler or from a saved state.

    Args:
        metrics: the values passed to ``step()`` (a list, or a ``LossLog`` whose epochs label the steps).
        config: hyperparameters for a fresh scheduler; with ``state``, only fills what the state lacks
            (saved values win, as in torch's ``load_state_dict``).
        lrs: each param group's lr before the first step. Defaults: the checkpoint optimizer's lrs, else
            the state's ``_last_lr``; for a fresh scheduler ``[1.0]`` (lrs then read as multipliers).
        state: what ``load_checkpoint`` returns, or a raw ``scheduler.state_dict()`` mapping.

    Returns:
        The ``Trace``; ``trace.steps[i]`` is the state after step ``i`` and why.

    Example:
        >>> t = replay([1.0, 1.2, 1.3, 1.4], PlateauConfig(patience=1), lrs=[0.1])
        >>> [s.event.value for s in t.steps]
        ['improved', 'bad', 'reduced', 'bad']
    """
    values, epochs, log = _metrics_and_epochs(metrics)
    lr_dtypes = None
    if isinstance(state, Checkpoint):
        cfg, st = state.config, state.state
        lrs = lrs if lrs is not None else state.lrs
        lr_dtypes = state.lr_dtypes
    elif state is not None:
        cfg, st = from_state_dict(state, config)
        lrs = lrs if lrs is not None else st.last_lr
    else:
        cfg, st = config or PlateauConfig(), None
    if lrs is None:
        if st is not None:
            raise ConfigError("the state has no _last_lr and no optimizer lrs: pass lrs=[...]")
        lrs = (1.0,)
    trace = run(cfg, values, lrs, state=st, epochs=epochs, lr_dtypes=lr_dtypes)
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

    if not ck.log_history:
        return None
    log = read_losses(list(ck.log_history), **{k: v for k, v in opts.items() if v is not None})
    return replace(log, source=f"{ck.path}/trainer_state.json:log_history")


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

    Raises:
        ForensicsError: any unusable input (see the error classes).
    """
    ck = checkpoint if isinstance(checkpoint, Checkpoint) or checkpoint is None else load_checkpoint(
        checkpoint, scheduler, loader=loader)
    log = None
    if losses is not None:
        log = _read_log(losses, metric=metric, epoch_column=epoch_column, lr_columns=lr_columns)
    elif ck is not None and ck.log_history:
        log = _hf_log(ck, metric=metric, epoch_column=epoch_column, lr_columns=lr_columns)
    if ck is None:
        if log is None:
            raise ConfigError("nothing to trace: give a checkpoint, a loss log, or both")
        replayed = _surviving(log)
        lrs0 = _first_logged_lrs(replayed) if lr is None else tuple(lr)
        t = replay(replayed, config, lrs=lrs0 or (1.0,))
        if lr is None and lrs0 is None:
            t.notes.append("no lr given and no lr column: lrs are shown relative to 1.0 (use --lr)")
        t.findings = diagnose.diagnose(t, expect=expect, full_log=log, replayed_log=replayed)
        return t
    if log is None:
        t = replay([], state=ck)
        if ck.epoch is not None:
            t.label_offset = ck.epoch - ck.state.last_epoch
            t.notes.append(f"forecast epochs count from the checkpoint's epoch field ({ck.epoch}), assuming it "
                           "was saved after that epoch's step; give the loss log to place it exactly")
        t.findings = diagnose.diagnose(t, expect=expect)
        return t
    return _trace_checkpoint_in_log(ck, log, lr, expect)


def _surviving(log: LossLog) -> LossLog:
    """The rows to replay: after a crash and an appended resume, the last run's rows for each epoch."""
    if any(a.kind == "duplicate-epochs" for a in log.anomalies):
        return log.surviving_history()[0]
    return log


def _first_logged_lrs(log: LossLog) -> tuple[float, ...] | None:
    if log.lrs and log.lrs[0] is not None and all(v is not None for v in log.lrs[0]):
        return tuple(float(v) for v in log.lrs[0])  # type: ignore[arg-type]
    return None


def _trace_checkpoint_in_log(
    ck: Checkpoint, full_log: LossLog, lr: Sequence[float] | None, expect: Mapping[str, Any] | None
) -> Trace:
    log = _surviving(full_log)
    log, a, extra = _place(ck, log, lr)
    metrics = [float(m) for m in log.metrics]
    epochs = list(log.epochs)
    resume_at = a.index
    note = ""
    if resume_at is None and ck.epoch is not None and ck.epoch in epochs:
        resume_at = epochs.index(ck.epoch)
        note = f"no row reproduces the saved state; placed at the checkpoint's own epoch field ({ck.epoch})"
    start = a.start_index if a.index is not None else 0
    if resume_at is None:
        t = run(ck.config, metrics, a.initial_lrs, epochs=epochs, lr_dtypes=ck.lr_dtypes, strict=False)
        t.notes.append(a.note + "; the whole log is replayed by a fresh scheduler with the saved hyperparameters")
    else:
        t = run(ck.config, metrics[start : resume_at + 1], a.initial_lrs, epochs=epochs[start : resume_at + 1],
                lr_dtypes=ck.lr_dtypes, strict=False)
        extend(t, metrics[resume_at + 1 :], epochs=epochs[resume_at + 1 :], state=ck.state,
               lrs=ck.lrs or t.lrs, note="resumed from the checkpoint")
        if note:
            t.notes.append(note)
        elif a.note:
            t.notes.append(a.note)
    if start > 0:
        t.notes.append(
            f"rows for epochs {epochs[0]}-{epochs[start - 1]} precede the scheduler that wrote this checkpoint "
            f"(it took its first step at epoch {epochs[start]}); they are not replayed"
        )
    if a.initial_lrs_source == "inferred":
        t.notes.append(f"initial lr {list(a.initial_lrs)} inferred from the checkpoint's lr and the replayed reductions")
    if t.error and len(t) < len(epochs) - start:
        t.error = f"epoch {epochs[start + len(t)]}: {t.error}"
    t.checkpoint, t.alignment, t.log = ck, a, log
    rebuilt = t.state_at(a.index - start) if a.index is not None and a.index - start < len(t) else None
    t.findings = diagnose.diagnose(t, expect=expect, full_log=full_log, replayed_log=_sliced(log, start),
                                   rebuilt=rebuilt, extra=extra)
    return t


def _align(ck: Checkpoint, log: LossLog, lr: Sequence[float] | None) -> Any:
    return align(ck.config, ck.state, [float(m) for m in log.metrics], list(log.epochs), saved_lrs=ck.lrs,
                 log_lrs=log.lrs, lr_option=lr, checkpoint_epoch=ck.epoch)


def _place(ck: Checkpoint, log: LossLog, lr: Sequence[float] | None) -> tuple[LossLog, Any, list[diagnose.Finding]]:
    """Place the checkpoint in the log, trying the explanations a plain replay misses, in order:
    a resume that never stepped the resume row (Lightning), and k steps per logged row. The first one
    whose step count equals the saved ``last_epoch`` wins; otherwise the plain alignment stands."""
    from plateau_forensics.losses import without_rows

    a = _align(ck, log, lr)
    if ck.partial or ck.state.steps == 0:
        return log, a, []
    best = (log, a, [])
    best_score = _score(ck, log, a)
    if best_score == (True, 1.0):
        return best
    for b in log.boundaries:  # the last row of an earlier log is the resume checkpoint's epoch
        variant = without_rows(log, [b - 1])
        alt = _align(ck, variant, lr)
        score = _score(ck, variant, alt)
        if alt.steps_match and score > best_score:
            best, best_score = (variant, alt, [diagnose.skipped_step_finding(ck, log.epochs[b - 1], log, b)]), score
    if not best_score[0]:
        found = _steps_per_row(ck, log, lr)
        if found is not None:
            expanded, k_align, k = found
            return expanded, k_align, [diagnose.steps_per_row_finding(
                None, k, {"k": k, "epoch": k_align.epoch, "last_epoch": ck.state.last_epoch, "rows": len(log)})]
    return best


def _score(ck: Checkpoint, log: LossLog, a: Any) -> tuple[bool, float]:
    """How well a placement explains the evidence: its step count, then the share of logged lrs up to the
    checkpoint that a replay from the alignment's start reproduces (1.0 when the log has no lr column)."""
    if a.index is None:
        return (False, 0.0)
    if log.lrs is None:
        return (a.steps_match, 1.0)
    t = run(ck.config, [float(m) for m in log.metrics[a.start_index : a.index + 1]], a.initial_lrs, strict=False)
    lr_in = [a.initial_lrs, *t._cols.lrs[:-1]]
    hits = total = 0
    for row, expected in zip(log.lrs[a.start_index : a.index + 1], lr_in):
        if row is None or any(v is None for v in row) or not 0 < len(row) <= len(expected):
            continue
        total += 1
        hits += all(math.isclose(x, y, rel_tol=1e-6) for x, y in zip(row, expected))  # type: ignore[arg-type]
    return (a.steps_match, hits / total if total else 1.0)


def _steps_per_row(ck: Checkpoint, log: LossLog, lr: Sequence[float] | None, max_k: int = 8) -> Any:
    """Try k = 2..max_k steps per logged row; return the expanded log and alignment for the first k that fits."""
    from dataclasses import replace

    for k in range(2, max_k + 1):
        metrics = [float(m) for m in log.metrics for _ in range(k)]
        epochs = [e for e in log.epochs for _ in range(k)]
        lrs = None
        if log.lrs is not None:  # the lr used during an epoch is the lr before its first step
            lrs = tuple(row if j == 0 else tuple(None for _ in row) for row in log.lrs for j in range(k))
        a = align(ck.config, ck.state, metrics, epochs, saved_lrs=ck.lrs, log_lrs=lrs, lr_option=lr,
                  checkpoint_epoch=ck.epoch)
        if a.steps_match:  # the checkpoint may sit after any of a row's k steps (Lightning saves mid-row)
            expanded = replace(log, metrics=tuple(metrics), epochs=tuple(epochs), lrs=lrs,
                               lines=tuple(n for n in log.lines for _ in range(k)), boundaries=())
            return expanded, a, k
    return None


def _sliced(log: LossLog, start: int) -> LossLog:
    from dataclasses import replace

    if start == 0:
        return log
    return replace(log, epochs=log.epochs[start:], metrics=log.metrics[start:],
                   lrs=log.lrs[start:] if log.lrs is not None else None, lines=log.lines[start:])


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


def compare_rules(losses: Any, config: PlateauConfig | None = None, *, lr: Sequence[float] | None = None,
                  min_delta: float | None = None, **log_options: Any) -> tuple[Trace, Any]:
    """The same log and hyperparameters replayed under torch's and Keras's rules (``--compare torch,keras``)."""
    log = _read_log(losses, **log_options)
    lrs0 = tuple(lr) if lr else (_first_logged_lrs(log) or (1.0,))
    torch_trace = replay(log, config, lrs=lrs0)
    return torch_trace, replay_keras(log, config, lr=lrs0, min_delta=min_delta)
