"""Resume findings for the other schedulers a checkpoint saves beside the plateau one (StepLR, OneCycleLR, ...).

Each finding comes from the saved states, stepped with the scheduler engines (``plateau_forensics.schedules``,
bit-exact with torch), and from the log; none from a name:

- ``scheduler-will-raise``: the saved scheduler, loaded as a resume loads it, raises at its next ``step()``
  (OneCycleLR stepped past ``total_steps`` when a finished run is extended: torch's ``Tried to step N times``).
  A warning when the log goes on after the checkpoint (the resumed run must have hit it, or rebuilt the
  scheduler), else info (resuming this checkpoint to train longer raises).
- ``base-lrs-below-logged-lr``: a scheduler that never sets an lr above its ``base_lrs`` (StepLR, cosine, a
  LinearLR warm-up, ...) has ``base_lrs`` below an lr the log shows before the checkpoint: it was built after
  the lr had been reduced (torch takes ``base_lrs`` from each group's ``initial_lr``, which a group without one
  gets from its current lr), so everything it sets is relative to the reduced lr.
- ``scheduler-steps-per-row``: the scheduler's ``last_epoch`` is a multiple k > 1 of the plateau scheduler's:
  it is stepped k times per plateau step (per batch), and counts its horizon (``T_max``, ``step_size``,
  ``total_iters``, ...) in those steps.
- ``warm-restarts-t-cur-reset``: CosineAnnealingWarmRestarts' ``T_cur``/``T_i`` are not what the ``last_epoch``
  steps it counts give (a fresh one stepped that many times): rebuilt at a resume without ``load_state_dict`` (a
  new one restarts ``T_cur``), or stepped with explicit epochs. Fractional ``T_cur`` (``step(epoch + i / n)``,
  the documented per-batch use) is not judged.
- ``initial-lr-missing``: the saved optimizer's groups have no ``initial_lr`` though a scheduler state is saved
  beside it (every LRScheduler constructor writes one): building that scheduler with ``last_epoch=N`` after
  loading this optimizer raises torch's ``KeyError``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plateau_forensics.diagnose import Finding
    from plateau_forensics.engine import Trace
    from plateau_forensics.loader import Checkpoint
    from plateau_forensics.losses import LossLog

__all__ = ["NEVER_ABOVE_BASE", "findings"]

#: Schedulers whose lr never exceeds ``base_lrs`` (with these arguments at most 1).
NEVER_ABOVE_BASE: Mapping[str, tuple[str, ...]] = {
    "StepLR": ("gamma",),
    "MultiStepLR": ("gamma",),
    "ExponentialLR": ("gamma",),
    "CosineAnnealingLR": (),
    "CosineAnnealingWarmRestarts": (),
    "PolynomialLR": (),
    "ConstantLR": ("factor",),
    "LinearLR": ("start_factor", "end_factor"),
}
#: The argument that counts a scheduler's horizon in its own steps.
HORIZON = {
    "StepLR": "step_size",
    "CosineAnnealingLR": "T_max",
    "CosineAnnealingWarmRestarts": "T_0",
    "LinearLR": "total_iters",
    "ConstantLR": "total_iters",
    "PolynomialLR": "total_iters",
    "OneCycleLR": "total_steps",
    "CyclicLR": "total_size",
}
#: Steps a fresh CosineAnnealingWarmRestarts is run to check T_cur (beyond it: not judged).
MAX_CHECK_STEPS = 200_000


def _name(f: Any) -> str:
    return f"{f.kind} (key {f.key_path or '<root>'})"


def findings(ck: Checkpoint, log: LossLog | None, t: Trace | None) -> list[Finding]:
    """The findings above for ``ck``'s other schedulers (empty when it saves none)."""
    from plateau_forensics.schedules.checkpoints import LAMBDA_KINDS, UNKNOWN, plain

    found = [f for f in ck.schedulers if f.kind not in (LAMBDA_KINDS, UNKNOWN)]
    if not found:
        return []
    out: list[Finding] = []
    anchor = t.alignment.index if t is not None and t.alignment is not None else None
    rows_after = len(log) - 1 - anchor if log is not None and anchor is not None else None
    for f in found:
        saved = plain(f.state)
        if not isinstance(saved, Mapping):
            continue
        out.extend(_will_raise(ck, f, rows_after))
        if log is not None:
            out.extend(_base_below_logged(f, saved, log, anchor))
        out.extend(_per_row(ck, f, saved))
        if f.kind == "CosineAnnealingWarmRestarts":
            out.extend(_t_cur(f, saved))
    out.extend(_initial_lr_missing(ck, found))
    return out


def _finding(
    code: str, severity: str, epoch: Any, message: str, evidence: Mapping[str, Any], fix: str
) -> Finding:
    from plateau_forensics.diagnose import Finding

    return Finding(code, severity, epoch, message, dict(evidence), fix)  # type: ignore[arg-type]


def _will_raise(ck: Checkpoint, f: Any, rows_after: int | None) -> list[Finding]:
    from plateau_forensics.schedules import Optimizer, TorchRaises
    from plateau_forensics.schedules.checkpoints import restore
    from plateau_forensics.schedules.errors import ScheduleConfigError

    lrs = list(ck.lrs or ())
    if not lrs:
        return []
    try:
        opt = Optimizer(lrs, initial_lrs=_initial_lrs(ck))
        for group, extra in zip(opt.param_groups, ck.optimizer_groups, strict=False):
            group.update({k: v for k, v in extra.items() if k not in ("lr", "params")})
        s = restore(f.kind, f.state).bind(opt)
    except (ScheduleConfigError, TorchRaises, TypeError, ValueError, KeyError):
        return []  # not a state the engine can load: nothing to judge
    try:
        opt.step()
        s.step()
    except TorchRaises as exc:
        went_on = rows_after is not None and rows_after > 0
        where = (
            f"the log goes on {rows_after} rows after the checkpoint, so the resumed run hit it or rebuilt the "
            "scheduler"
            if went_on
            else "resuming this checkpoint to train longer raises"
        )
        fix = (
            "a run extended past its schedule needs a schedule for the whole run: after load_state_dict set the "
            "new total (OneCycleLR: scheduler.total_steps), or build a new scheduler for the extra steps"
            if f.kind == "OneCycleLR"
            else "give the scheduler a schedule that covers the resumed steps"
        )
        return [
            _finding(
                "scheduler-will-raise",
                "warning" if went_on else "info",
                None,
                f"{_name(f)} raises at its next step() (torch: {exc.kind}: {exc.detail.split(': ', 1)[-1]}); "
                f"{where}",
                {
                    "scheduler": f.key_path,
                    "kind": f.kind,
                    "raises": exc.kind,
                    "rows_after_checkpoint": rows_after,
                },
                fix,
            )
        ]
    except (ScheduleConfigError, TypeError, ValueError, KeyError):
        return []
    return []


def _initial_lrs(ck: Checkpoint) -> list[float] | None:
    groups = ck.optimizer_groups
    if groups and all(isinstance(g.get("initial_lr"), (int, float)) for g in groups):
        return [float(g["initial_lr"]) for g in groups]
    return None


def _base_below_logged(f: Any, saved: Mapping[str, Any], log: LossLog, anchor: int | None) -> list[Finding]:
    keys = NEVER_ABOVE_BASE.get(f.kind)
    base = saved.get("base_lrs")
    if keys is None or not isinstance(base, (list, tuple)) or log.lrs is None:
        return []
    if any(not isinstance(saved.get(k, 1.0), (int, float)) or saved.get(k, 1.0) > 1 for k in keys):
        return []  # a gamma or factor above 1 may raise the lr above its base
    last = anchor if anchor is not None else len(log) - 1
    for row in range(0, min(last, len(log) - 1) + 1):
        for g, v in enumerate(log.lrs[row] or ()):
            if v is None or g >= len(base) or not isinstance(base[g], (int, float)):
                continue
            lo, _ = log.precision_of(log.lr_columns[g]).interval(row, v)
            if lo > float(base[g]) * (1 + 1e-9):
                return [
                    _finding(
                        "base-lrs-below-logged-lr",
                        "warning",
                        log.epochs[row],
                        f"{_name(f)} computes its lrs from base_lrs {float(base[g]):.6g} (group {g}), but the log shows "
                        f"lr {v:.6g} at epoch {log.epochs[row]}, before the checkpoint: the scheduler was built after the "
                        "lr had been reduced (torch takes base_lrs from each group's initial_lr, and a group without "
                        "one gets its current lr), so every lr it sets is relative to the reduced lr",
                        {
                            "scheduler": f.key_path,
                            "kind": f.kind,
                            "group": g,
                            "base_lr": float(base[g]),
                            "logged_lr": v,
                            "row": row,
                        },
                        "build every scheduler right after the optimizer, before loading any state, then load the "
                        "optimizer's and each scheduler's state_dict",
                    )
                ]
    return []


def _per_row(ck: Checkpoint, f: Any, saved: Mapping[str, Any]) -> list[Finding]:
    mine, plateau = saved.get("last_epoch"), ck.state.last_epoch
    if not isinstance(mine, int) or isinstance(mine, bool) or not isinstance(plateau, int) or plateau <= 0:
        return []
    if mine <= plateau or mine % plateau:
        return []
    k = mine // plateau
    horizon_key = HORIZON.get(f.kind)
    horizon = saved.get(horizon_key) if horizon_key else None
    extra = ""
    if isinstance(horizon, (int, float)) and not isinstance(horizon, bool) and horizon > 0:
        extra = f"; its {horizon_key}={horizon:g} counts those steps: {horizon / k:.3g} plateau steps"
    return [
        _finding(
            "scheduler-steps-per-row",
            "info",
            None,
            f"{_name(f)} has last_epoch={mine}, {k} times the plateau scheduler's {plateau}: it steps {k} "
            f"times per plateau step (per batch){extra}",
            {
                "scheduler": f.key_path,
                "kind": f.kind,
                "k": k,
                "last_epoch": mine,
                "plateau_last_epoch": plateau,
            },
            "nothing to fix if it is meant to step per batch; a per-epoch schedule steps once per epoch, "
            "after the plateau step",
        )
    ]


def _t_cur(f: Any, saved: Mapping[str, Any]) -> list[Finding]:
    from plateau_forensics.schedules import CosineAnnealingWarmRestarts, Optimizer, TorchRaises
    from plateau_forensics.schedules.errors import ScheduleConfigError

    t_cur, t_i, last = saved.get("T_cur"), saved.get("T_i"), saved.get("last_epoch")
    args = {k: saved.get(k) for k in ("T_0", "T_mult", "eta_min")}
    base = saved.get("base_lrs")
    if not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in (t_cur, t_i, last, *args.values())
    ):
        return []
    if not isinstance(base, (list, tuple)) or not base or float(t_cur) != math.floor(float(t_cur)):  # type: ignore[arg-type]
        return []  # fractional T_cur: step(epoch + i / n), not judged
    if not 0 <= int(last) <= MAX_CHECK_STEPS:  # type: ignore[arg-type]
        return []
    try:
        s = CosineAnnealingWarmRestarts(**args).bind(Optimizer([float(v) for v in base]))
        for _ in range(int(last)):  # type: ignore[arg-type]
            s.optimizer.step()
            s.step()
    except (ScheduleConfigError, TorchRaises, TypeError, ValueError):
        return []
    want_cur, want_i = s.T_cur, s.T_i
    if float(want_cur) == float(t_cur) and float(want_i) == float(t_i):  # type: ignore[arg-type]
        return []
    return [
        _finding(
            "warm-restarts-t-cur-reset",
            "warning",
            None,
            f"{_name(f)} has T_cur={t_cur:g}, T_i={t_i:g} after last_epoch={last} steps, but a scheduler "
            f"stepped {last} times has T_cur={want_cur:g}, T_i={want_i:g}: its cycle was restarted (a new "
            "scheduler built at a resume without load_state_dict, or built with last_epoch=N, which sets "
            "T_cur=N), or step() was given epochs",
            {
                "scheduler": f.key_path,
                "T_cur": t_cur,
                "T_i": t_i,
                "last_epoch": last,
                "expected_T_cur": want_cur,
                "expected_T_i": want_i,
            },
            "at a resume build the scheduler with its arguments only and call "
            "scheduler.load_state_dict(checkpoint[...]); step() without an epoch",
        )
    ]


def _initial_lr_missing(ck: Checkpoint, found: Sequence[Any]) -> list[Finding]:
    groups = ck.optimizer_groups
    if not groups or any("initial_lr" in g for g in groups):
        return []
    names = ", ".join(_name(f) for f in found[:3])
    return [
        _finding(
            "initial-lr-missing",
            "info",
            None,
            f"the saved optimizer's param groups have no initial_lr, though {names} is saved beside it "
            "(every LRScheduler constructor writes initial_lr into the groups it runs on): this optimizer "
            "state was saved from another optimizer or before the scheduler was built, and building the "
            "scheduler with last_epoch=N after loading it raises KeyError (param 'initial_lr' is not "
            "specified in param_groups[0] when resuming scheduler with last_epoch >= 0)",
            {"schedulers": [f.key_path for f in found]},
            "build the scheduler with last_epoch=-1 (the default) and call scheduler.load_state_dict",
        )
    ]
