"""Long logs at the speed of the engine: the plain story checked on the engine's columns.

Per-step logging (HF ``eval_steps``, Lightning ``interval="step"``) makes logs of a million rows ordinary.
Simulating every story over every uncertain world there would take minutes; for an exact log that long,
``explain_long`` checks the plain story (a fresh scheduler from the first row, the checkpoint where its
``last_epoch`` says, the run continued from the saved state) with the exact engine and compares the logged lr
row by row, read as the lr before each step and as the lr after it. When neither reading explains the log,
or the saved state is not where the plain replay puts it, the verdict is ambiguous between the stories that
could do that, the state from there on is unknown, and ``--full-search`` (``trace(..., full_search=True)``)
is what decides: it runs the whole search.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from plateau_forensics.engine import Trace, extend, run
from plateau_forensics.state import PlateauConfig

if TYPE_CHECKING:
    from plateau_forensics.loader import Checkpoint
    from plateau_forensics.losses import LossLog

__all__ = ["LONG_LOG_ROWS", "is_long", "explain_long"]

#: Above this many rows an exact log gets the plain story only (unless a full search is asked for).
LONG_LOG_ROWS = 5000


def is_long(log: LossLog) -> bool:
    """A log long enough for the fast path: many rows, written exactly, one file, no restarts."""
    return (len(log) > LONG_LOG_ROWS and not log.boundaries and all(p.exact or p.assumed
                                                                    for p in log.precision.values())
            and not any(a.kind in ("duplicate-epochs", "unsorted-epochs") for a in log.anomalies))


def _lr_mismatches(t: Trace, log: LossLog, *, after: bool) -> list[int]:
    """Rows whose logged lr is not the replay's: the lr the row trained with (``after=False``), or the lr
    after its step (``after=True``, the lr logged after ``scheduler.step()``)."""
    lrs = log.lrs
    if lrs is None:
        return []
    cols = t._cols.lrs
    start_at = {s.index: s.lrs for s in t.starts}
    out = []
    n = len(t)
    if len(lrs) == n and n:
        # the common case, decided by one list comparison at C speed: every logged row is the replay's
        replay = list(cols) if after else [cols[-1], *cols[:-1]]
        for i, s in start_at.items():
            if not after and i < n:
                replay[i] = s
        if lrs == replay:
            return []
    for i, row in enumerate(lrs):
        if row is None or i >= n:
            continue
        replay = cols[i] if after else (start_at[i] if i in start_at else cols[i - 1])
        if row == replay:  # the common case, decided without looking at each group
            continue
        for g, v in enumerate(row):
            if v is None or g >= len(replay):
                continue
            r = replay[g]
            if not (v == r or math.isclose(v, r, rel_tol=1e-9)):
                out.append(i)
                break
    return out


#: Stories the fast path does not simulate but that can each make a plain replay disagree with the inputs.
UNCHECKED_LR_STORIES = (("external-lr-change",), ("steps-per-row",), ("wrong-metric",),
                        ("scheduler-not-restored",))
UNCHECKED_CHECKPOINT_STORIES = (("steps-per-row",), ("saved-before-step",), ("resume-skipped-step",),
                                ("scheduler-not-restored",), ("wrong-metric",), ("log-starts-mid-run",))


def _readings(t: Trace, log: LossLog, found: dict[str, Any]) -> None:
    """Which reading of the lr column the plain replay explains: before the step, after it, or neither."""
    before = _lr_mismatches(t, log, after=False)
    if not before:
        return
    after = _lr_mismatches(t, log, after=True)
    if not after:
        found["story"] = ("lr-logged-after-step",)
        return
    found["story"] = None
    found["unexplained_lrs"] = before
    found["candidates"] = UNCHECKED_LR_STORIES


def explain_long(ck: Checkpoint | None, log: LossLog, config: PlateauConfig,
                 lr: Sequence[float] | None) -> tuple[Trace, dict[str, Any]]:
    """The plain story on the engine: a fresh scheduler from the first row; with a checkpoint, the row where
    that scheduler's ``last_epoch`` equals the saved one, and from there the saved state.

    Returns:
        The trace, and what was found: ``story`` codes (None when the plain story fails and only the full
        search could tell which story fits), ``candidates`` (the stories that could, then), ``anchor`` row
        (or None), ``unexplained_lrs`` rows, ``placed`` (the saved state agrees at the anchor),
        ``initial_lrs``.
    """
    metrics = list(log.metrics)
    epochs = list(log.epochs)
    if lr:
        lrs0 = tuple(lr)
    elif log.lrs is not None and log.lrs[0] is not None and all(v is not None for v in log.lrs[0]):
        lrs0 = tuple(float(v) for v in log.lrs[0])  # type: ignore[arg-type]
    elif ck is not None and ck.lrs is not None:
        lrs0 = tuple(ck.lrs)
    else:
        lrs0 = (1.0,)
    cfg = ck.config if ck is not None else config
    found: dict[str, Any] = {"story": (), "anchor": None, "unexplained_lrs": [], "placed": None,
                             "initial_lrs": lrs0, "candidates": ()}
    if ck is None:
        t = run(cfg, metrics, lrs0, epochs=epochs)
        _readings(t, log, found)
        return t, found
    steps = ck.state.steps
    anchor = int(steps) - 1 if isinstance(steps, (int, float)) and float(steps).is_integer() else None
    if anchor is not None and not 0 <= anchor < len(metrics):
        anchor = None
    dtypes = ck.lr_dtypes or None
    if anchor is None:
        t = run(cfg, metrics, lrs0, epochs=epochs, lr_dtypes=dtypes, strict=False)
    else:
        t = run(cfg, metrics[: anchor + 1], lrs0, epochs=epochs[: anchor + 1], lr_dtypes=dtypes, strict=False)
        c = t._cols
        st = ck.state
        same_best = c.best[anchor] == st.best or (math.isnan(c.best[anchor]) and math.isnan(st.best))
        found["placed"] = same_best and (st.partial or (c.num_bad[anchor], c.cooldown[anchor])
                                         == (st.num_bad_epochs, st.cooldown_counter))
        found["anchor"] = anchor
        extend(t, metrics[anchor + 1:], epochs=epochs[anchor + 1:], state=st, lrs=ck.lrs or t.lrs,
               note="continued from the checkpoint's state")
    if not found["placed"]:
        found["story"] = None
        found["candidates"] = UNCHECKED_CHECKPOINT_STORIES
        found["unexplained_lrs"] = _lr_mismatches(t, log, after=False)
        return t, found
    _readings(t, log, found)
    return t, found
