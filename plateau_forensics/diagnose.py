"""Findings: name the cause of an LR surprise from the evidence in the checkpoint and the log.

Every finding comes from the inputs (the saved state and its key set, the optimizer lrs, the log's
columns and lr column, replays from scratch versus from the saved state), never from a file name.
Codes are stable: tools and CI gates (``--check``) match on them. ``warning`` means the run did not do
what its author most likely meant; ``info`` explains behaviour that is by design.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from plateau_forensics.engine import Trace, run
from plateau_forensics.state import HYPERPARAMETER_KEYS, PlateauConfig, PlateauState

if TYPE_CHECKING:
    from plateau_forensics.losses import LossLog

Severity = Literal["info", "warning"]

#: Metric names that rise when the model gets better (mode should be "max").
RISING_NAME = re.compile(r"(^|[^a-z])(acc|accuracy|auc|auroc|f1|bleu|rouge|iou|map|precision|recall|top1|top5|score|r2)"
                         r"($|[^a-z])")
FALLING_NAME = re.compile(r"(^|[^a-z])(loss|nll|error|err|mse|mae|rmse|perplexity|ppl|wer|cer)($|[^a-z])")


#: Engine event codes (``Trace._cols.events``) of a due reduction: applied, or suppressed.
_REDUCED, _SUPPRESSED = 3, 4


@dataclass(frozen=True)
class Finding:
    """One diagnosis: a stable ``code``, how serious, where, what we saw, and what to change."""

    code: str
    severity: Severity
    epoch: float | None
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The JSON contract's finding object."""
        return {"code": self.code, "severity": self.severity, "epoch": self.epoch, "message": self.message,
                "evidence": dict(self.evidence), "fix": self.fix}


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    """Logged lrs ``a`` equal ``b`` (relative 1e-6); a log may show fewer groups than the optimizer (HF: group 0)."""
    return 0 < len(a) <= len(b) and all(math.isclose(x, y, rel_tol=1e-6, abs_tol=0.0) for x, y in zip(a, b))


def _fmt(lrs: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in lrs) + "]"


def _logged(log: LossLog | None, i: int) -> tuple[float, ...] | None:
    if log is None or log.lrs is None or i >= len(log.lrs):
        return None
    row = log.lrs[i]
    return None if any(v is None for v in row) else tuple(float(v) for v in row)  # type: ignore[arg-type]


# -- the log itself ------------------------------------------------------------------------------
def log_findings(log: LossLog, replayed: LossLog | None = None) -> list[Finding]:
    """Anomalies the loss log shows: duplicated (one finding per restart), unsorted or missing epochs, NaN."""
    out = []
    dups = [a for a in log.anomalies if a.kind == "duplicate-epochs"]
    if dups:
        epochs = [a.epochs[0] for a in dups if a.epochs]
        first_run = [a.rows[0] for a in dups]
        kept = replayed is not None and replayed is not log
        lines = sorted({ln for a in dups for ln in _lines(log, a.rows)})
        out.append(Finding(
            "duplicate-epochs", "info", epochs[0] if epochs else None,
            f"epochs {_span(epochs)} appear more than once (lines {_span(lines)}): a run crashed after writing them "
            "and a resumed run appended its own"
            + ("; the last run's rows are replayed, the earlier run's are dropped" if kept else ""),
            {"epochs": epochs, "earlier_run_rows": first_run, "lines": lines},
            "append to a fresh log per resume, or truncate the log at the checkpoint epoch when resuming"))
    dup_epochs = {e for a in dups for e in a.epochs}
    for a in log.anomalies:
        if a.kind == "non-finite-metric":
            out.append(Finding(
                "nan-metric", "warning", a.epochs[0] if a.epochs else None,
                a.message + "; torch never counts NaN as better, so each one is a bad epoch (or a muted one in cooldown)",
                {"epochs": list(a.epochs)},
                "find why the metric was NaN/inf; skip scheduler.step() on those evaluations if they are not real"))
        elif a.kind == "unsorted-epochs":
            if dups and set(a.epochs) & dup_epochs:  # the epoch went back because a resumed run appended
                continue
            out.append(Finding("unsorted-epochs", "warning", a.epochs[0] if a.epochs else None, a.message,
                               {"epochs": list(a.epochs)}, "check the log's epoch column"))
        elif a.kind != "duplicate-epochs":
            out.append(Finding(a.kind, "info", a.epochs[0] if a.epochs else None, a.message,
                               {"epochs": list(a.epochs)}, ""))
    return out


def _lines(log: LossLog, rows: Sequence[int]) -> list[int]:
    return [log.lines[r] for r in rows if r < len(log.lines)]


def _span(values: Sequence[Any]) -> str:
    """``13, 14, 15, 16`` -> ``13-16``; anything else listed (at most 12)."""
    vals = list(values)
    if len(vals) > 2 and all(isinstance(v, int) for v in vals) and vals == list(range(vals[0], vals[0] + len(vals))):
        return f"{vals[0]}-{vals[-1]}"
    return ", ".join(str(v) for v in vals[:12]) + (", ..." if len(vals) > 12 else "")


# -- the saved state -------------------------------------------------------------------------------
def partial_state_finding(checkpoint: Any, rebuilt: PlateauState | None = None) -> list[Finding]:
    """A saved state without counters: say what a resume from it loses (with the rebuilt values if known)."""
    st = checkpoint.state
    if not st.partial:
        return []
    lost = [k for k in ("num_bad_epochs", "cooldown_counter") if k in st.missing]
    hp = [k for k in HYPERPARAMETER_KEYS if k in st.missing]
    detail = ""
    if rebuilt is not None:
        detail = (f"; the log says they were num_bad_epochs={rebuilt.num_bad_epochs}, "
                  f"cooldown_counter={rebuilt.cooldown_counter} at the checkpoint")
    return [Finding(
        "partial-state", "warning", checkpoint.epoch,
        f"the saved plateau state at {checkpoint.key_path or '<root>'} has only {', '.join(st.keys)}: a resume "
        f"restarts {', '.join(lost)} at 0{detail}" + (f"; hyperparameters not saved: {', '.join(hp)}" if hp else ""),
        {"keys": list(st.keys), "missing": list(st.missing),
         "rebuilt": None if rebuilt is None else {"num_bad_epochs": rebuilt.num_bad_epochs,
                                                   "cooldown_counter": rebuilt.cooldown_counter}},
        "save the wrapped torch scheduler's full state_dict() (timm: scheduler.lr_scheduler.state_dict()), "
        "or load the state written by --write-state")]


def _parse_expect(key: str, value: Any) -> Any:
    if key in ("mode", "threshold_mode"):
        return str(value)
    if key == "min_lr":
        if isinstance(value, str) and "," in value:
            return tuple(float(v) for v in value.split(","))
        return float(value) if not isinstance(value, (list, tuple)) else tuple(float(v) for v in value)
    if key in ("patience", "cooldown"):
        return int(float(value))
    return float(value)


def hyperparameter_findings(checkpoint: Any, expect: Mapping[str, Any] | None) -> list[Finding]:
    """Saved hyperparameters that differ from what the user expects, and torch's exact defaults in effect."""
    cfg: PlateauConfig = checkpoint.config
    out = []
    if expect:
        diffs = {}
        for key, raw in expect.items():
            want = _parse_expect(key, raw)
            have = getattr(cfg, key)
            if isinstance(have, tuple) and not isinstance(want, tuple):
                want = (want,) * len(have)
            if have != want and not (isinstance(have, (int, float)) and isinstance(want, (int, float))
                                     and math.isclose(have, want, rel_tol=1e-12)):
                diffs[key] = {"saved": list(have) if isinstance(have, tuple) else have,
                              "expected": list(want) if isinstance(want, tuple) else want}
        if diffs:
            text = ", ".join(f"{k}={v['saved']} (you expect {v['expected']})" for k, v in diffs.items())
            out.append(Finding(
                "hyperparameters-overridden", "warning", checkpoint.epoch,
                f"load_state_dict imposes the saved {text}: torch restores every saved hyperparameter over the "
                "constructor's arguments",
                {"differences": diffs},
                "after load_state_dict, set the new values on the scheduler (e.g. scheduler.patience = 5), "
                "or delete those keys from the state dict before loading it"))
    if not checkpoint.state.partial and cfg == PlateauConfig(min_lr=cfg.min_lr) and cfg.min_lr in (0, 0.0):
        out.append(Finding(
            "defaults-in-effect", "info", checkpoint.epoch,
            "the saved hyperparameters are exactly torch's defaults (mode=min, factor=0.1, patience=10, "
            "threshold=1e-4 rel, cooldown=0, min_lr=0, eps=1e-8): if you passed others, a wrapper dropped them",
            {"config": cfg.to_dict()},
            "check that your arguments reach ReduceLROnPlateau (e.g. HF lr_scheduler_kwargs, Lightning's "
            "scheduler dict); pass --expect k=v to compare"))
    return out


def min_lrs_findings(checkpoint: Any) -> list[Finding]:
    """``len(min_lrs)`` differs from the optimizer's param groups: the next reduction rebuilds or raises."""
    st = checkpoint.state
    if checkpoint.optimizer_lrs is None or len(st.min_lrs) == len(checkpoint.optimizer_lrs):
        return []
    n, m = len(checkpoint.optimizer_lrs), len(st.min_lrs)
    if st.default_min_lr is None:
        what = ("the next reduction raises RuntimeError (a per-group min_lr list cannot be rebuilt)")
        fix = "append the new group's floor to scheduler.min_lrs after add_param_group()"
    else:
        what = f"the next reduction rebuilds min_lrs as [{st.default_min_lr}] * {n}, dropping per-group floors"
        fix = "set scheduler.min_lrs to one floor per group after add_param_group()"
    return [Finding("min-lrs-mismatch", "warning", checkpoint.epoch,
                    f"{m} min_lrs but {n} optimizer param groups: {what}",
                    {"min_lrs": list(st.min_lrs), "param_groups": n, "default_min_lr": st.default_min_lr}, fix)]


def torch_version_findings(checkpoint: Any) -> list[Finding]:
    """What the key set says about the torch release that wrote the state, where it changes the replay."""
    st, keys = checkpoint.state, set(checkpoint.state.keys)
    notes = []
    if st.last_epoch_base == -1:
        notes.append("torch <= 1.3 key order without _last_lr: last_epoch counts from -1 (n steps -> n-1)")
    if st.best_dtype is not None:
        notes.append(f"best is a {st.best_dtype} tensor (torch 1.0): torch 2.13 compares in {st.best_dtype} until "
                     "the next improvement")
    if "verbose" in keys and st.last_epoch_base == 0:
        notes.append(f"'verbose' key (torch 2.2-2.6, value {st.extras.get('verbose')!r}): load_state_dict carries it "
                     "forward into every later state dict")
    if "default_min_lr" not in keys and not st.partial:
        notes.append("no default_min_lr (torch < 2.6): after load_state_dict a changed group count rebuilds min_lrs "
                     "from the *constructor's* min_lr")
    if not notes:
        return []
    return [Finding("torch-version", "info", checkpoint.epoch, "; ".join(notes), {"keys": list(st.keys)},
                    "nothing to fix unless the notes affect your resume")]


# -- the trace against the log ---------------------------------------------------------------------
def rel_threshold_findings(trace: Trace) -> list[Finding]:
    """``threshold_mode='rel'`` with a best <= 0: slight regressions count as improvements."""
    cfg = trace.config
    if cfg.threshold_mode != "rel":
        return []
    rows = []
    bests = trace._cols.best
    # (``0.0 >= b`` at C speed first: no best <= 0 at all is the common case)
    if (not any(map((0.0).__ge__, bests)) or all(not (math.isfinite(b) and b <= 0) for b in bests)) and not (
            trace.starts and math.isfinite(trace.starts[0].state.best) and trace.starts[0].state.best <= 0):
        return []  # no best <= 0 anywhere: nothing to judge (checked on the columns, without building steps)
    for s in trace.steps:
        if not math.isfinite(s.best_before) or s.best_before > 0:
            continue
        worse = s.metric > s.best_before if cfg.mode == "min" else s.metric < s.best_before
        if s.improved and worse or s.best_before == 0:
            rows.append(s.epoch)
    if not rows:
        if math.isfinite(trace.final.best) and trace.final.best <= 0:
            return [Finding("rel-threshold-nonpositive", "info", None,
                            f"best is {trace.final.best:.4g} <= 0 with threshold_mode='rel': the bar "
                            f"best*(1{'-' if cfg.mode == 'min' else '+'}threshold) lies on the wrong side of best",
                            {"best": trace.final.best}, "use threshold_mode='abs' for metrics that can be <= 0")]
        return []
    return [Finding(
        "rel-threshold-nonpositive", "warning", rows[0],
        f"threshold_mode='rel' with best <= 0: at epochs {', '.join(str(e) for e in rows[:10])} a metric worse "
        "than best (or any metric against best == 0) was judged by a bar on the wrong side of best",
        {"epochs": rows}, "use threshold_mode='abs' (threshold in the metric's units) for metrics that can be <= 0")]


def floor_findings(trace: Trace) -> list[Finding]:
    """Reductions suppressed by ``min_lr`` (by design) or by ``eps`` (usually a surprise)."""
    out = []
    floor_rows, eps_rows, groups = [], [], set()
    cfg, c = trace.config, trace._cols
    acted = {_REDUCED, _SUPPRESSED}
    judged: dict[tuple[tuple[float, ...], tuple[float, ...]], tuple[list[int], bool]] = {}  # by (lrs in, out)
    for i in itertools.compress(range(len(c.events)), map(acted.__contains__, c.events)):
        if i in trace.unknown:  # not determined: no claim about its floor
            continue
        key = (trace.lr_before(i), c.lrs[i])
        if key not in judged:
            lr_in, lr_out = key
            held = [g for g, (a, b) in enumerate(zip(lr_in, lr_out, strict=False)) if a == b]
            min_lrs = trace.min_lrs_for(len(lr_in))
            # held above its floor: the change was no larger than eps (as the step's reason says)
            judged[key] = held, any(lr_in[g] * cfg.factor > (min_lrs[g] if g < len(min_lrs) else math.nan)
                                    for g in held)
        held, by_eps = judged[key]
        if held:
            (eps_rows if by_eps else floor_rows).append(trace.epochs[i])
            groups.update(held)
    if floor_rows:
        which = "the lr" if len(trace.lrs) == 1 else f"group {', '.join(map(str, sorted(groups)))}"
        out.append(Finding("lr-at-floor", "info", floor_rows[0],
                           f"{which} is held at its floor (min_lrs {list(trace.final.min_lrs)}): the reductions due at "
                           f"epochs {', '.join(str(e) for e in floor_rows[:10])} leave it unchanged (cooldown still "
                           "restarts)",
                           {"epochs": floor_rows, "groups": sorted(groups), "min_lrs": list(trace.final.min_lrs)},
                           "lower min_lr, or stop training (early stopping) once the floor is reached"))
    if eps_rows:
        out.append(Finding("lr-at-floor", "warning", eps_rows[0],
                           f"reductions at epochs {', '.join(str(e) for e in eps_rows[:10])} were smaller than "
                           f"eps={trace.config.eps} and were not applied",
                           {"epochs": eps_rows, "eps": trace.config.eps}, "lower eps (it is an absolute lr change)"))
    return out


def mode_findings(trace: Trace, column: str | None = None) -> list[Finding]:
    """mode 'min' on a metric that rises (accuracy-like name or trend), or 'max' on a loss; judged on the
    column that was fed to ``step()`` (``column``, else the log's metric column)."""
    log, cfg = trace.log, trace.config
    name = (column or (log.metric_column if log is not None else "")).lower()
    vals = list(filter(math.isfinite, trace.metrics))
    if len(vals) < 6:
        return []
    q = max(2, len(vals) // 4)
    head, tail = sum(vals[:q]) / q, sum(vals[-q:]) / q
    rising = tail > head
    named_rising = bool(RISING_NAME.search(name)) and not FALLING_NAME.search(name)
    named_falling = bool(FALLING_NAME.search(name))
    suspicious = (cfg.mode == "min" and (named_rising or (rising and not named_falling))
                  or cfg.mode == "max" and (named_falling or (not rising and not named_rising)))
    if not suspicious:
        return []
    # evidence: reductions taken while the metric was at its best in the *other* direction
    other = max if cfg.mode == "min" else min
    hits = []
    extreme = None  # the running best in the other direction, over the finite metrics so far
    events = trace._cols.events
    for i, m in enumerate(trace.metrics):
        if math.isfinite(m):
            extreme = m if extreme is None else other(extreme, m)
        if events[i] in (_REDUCED, _SUPPRESSED) and extreme is not None and m == extreme:
            hits.append(trace.epochs[i])
    shown = column or (log.metric_column if log is not None else "metric")
    why = (f"the column '{shown}' is named like a metric that should be maximised" if named_rising
           else f"the column '{shown}' is named like a loss" if named_falling
           else f"the metric {'rises' if rising else 'falls'} over the log (mean {head:.4g} -> {tail:.4g})")
    sev: Severity = "warning" if (named_rising or named_falling or hits) else "info"
    return [Finding(
        "mode-mismatch", sev, hits[0] if hits else None,
        f"mode='{cfg.mode}' but {why}" + (f"; the lr was reduced at epochs {', '.join(map(str, hits))} while the "
                                          "metric was at its best in the other direction" if hits else ""),
        {"mode": cfg.mode, "column": shown, "head_mean": head, "tail_mean": tail,
         "reductions_at_other_best": hits},
        f"use mode='{'max' if cfg.mode == 'min' else 'min'}' for this metric")]


def epoch_offset_findings(trace: Trace) -> list[Finding]:
    """The log's epoch and the scheduler's last_epoch differ by a constant; say which and where it changed."""
    a = trace.alignment
    if a is None or a.epoch is None or not a.epoch_offset:
        return []
    first_logged = trace.log.epochs[0] if trace.log is not None and len(trace.log) else None
    if trace.epochs and trace.epochs[0] == first_logged and a.epoch_offset == trace.epochs[0] - 1:
        return []  # the log simply numbers its first epoch 0 (or N): the first replayed row is step 1
    if any(isinstance(e, float) and not e.is_integer() for e in trace.epochs):
        why = ("there are several evaluations per epoch (fractional epochs, e.g. HF eval_steps), and the "
               "scheduler counts evaluations, not epochs")
        fix = "read patience in evaluations: with N evaluations per epoch, patience p waits p/N epochs"
    else:
        where = (f"; the scheduler's count starts at epoch {trace.epochs[0]}: the rows before it were not stepped "
                 "by this scheduler" if trace.epochs and trace.epochs[0] != first_logged else "")
        why = (f"epoch - last_epoch = {a.epoch_offset}{where} (warm-up epochs without a step, a restarted "
               "scheduler, 0-based epochs, or step(metric, epoch))")
        fix = "compare reductions by scheduler step (last_epoch), not by loop epoch"
    return [Finding("epoch-offset", "info", a.epoch, f"log epoch {a.epoch} is scheduler step {a.scheduler_step}: {why}",
                    {"epoch": a.epoch, "last_epoch": a.scheduler_step, "offset": a.epoch_offset}, fix)]


def never_stepped_findings(trace: Trace) -> list[Finding]:
    """A saved state that never saw a step although training went on (missing monitor with strict=False)."""
    ck, log = trace.checkpoint, trace.log
    if ck is None or ck.state.partial or ck.state.steps != 0 or ck.state.best != trace.config.mode_worse:
        return []
    progress = [f"epoch {ck.epoch}" if ck.epoch else "", f"global_step {ck.global_step}" if ck.global_step else "",
                f"{len(log)} logged '{log.metric_column}' rows" if log is not None and len(log) else ""]
    progress = [p for p in progress if p]
    if not progress:
        return []
    from plateau_forensics.stacks import stack_of

    stack_note = stack_of(ck.framework).notes.get("scheduler-never-stepped", "")
    reds = []
    if log is not None and len(log):  # what a scheduler stepped on the log would have done
        lrs = ck.lrs or (1.0,)
        reds = [s.epoch for s in run(trace.config, log.metrics, lrs, epochs=log.epochs, strict=False).reductions()]
    return [Finding(
        "scheduler-never-stepped", "warning", ck.epoch,
        f"the scheduler never stepped (last_epoch=0, best={ck.state.best}) although training reached "
        f"{', '.join(progress)}"
        + (f"; a scheduler stepped on the log would have reduced the lr at epochs {_span(reds)}" if reds else "")
        + stack_note,
        {"last_epoch": ck.state.last_epoch, "epoch": ck.epoch, "global_step": ck.global_step,
         "would_reduce_at": reds},
        "log the monitored metric under the exact name the scheduler config monitors (Lightning: "
        "lr_scheduler['monitor']), and keep strict=True so a missing metric fails loudly")]


def diagnose(trace: Trace, *, expect: Mapping[str, Any] | None = None, full_log: LossLog | None = None,
             replayed_log: LossLog | None = None, rebuilt: PlateauState | None = None,
             extra: Sequence[Finding] = (), column: str | None = None) -> list[Finding]:
    """Every finding for a trace, warnings first, each once.

    Args:
        trace: the replay (with ``checkpoint``, ``alignment`` and ``log`` context when there is one).
        expect: hyperparameters the user believes are in effect (``--expect``).
        full_log: the log as read (before dropping an earlier run's duplicated rows).
        replayed_log: the rows the trace replays, aligned with ``trace`` positions.
        rebuilt: the counters a full replay gives at the checkpoint (for partial states).
        extra: findings computed by the caller (the story's, from ``narrative.story_findings``).
        column: the column the story says was fed to ``step()`` (None: the log's metric column).
    """
    ck = trace.checkpoint
    out: list[Finding] = list(extra)
    story = set(trace.verdict.story) if trace.verdict is not None else set()
    if full_log is not None:
        out += [f for f in log_findings(full_log, replayed_log)
                if not (f.code == "unsorted-epochs" and "logs-out-of-order" in story)]
    if ck is not None:
        out += partial_state_finding(ck, rebuilt) + hyperparameter_findings(ck, expect)
        from plateau_forensics.stacks import findings_for, stack_of

        dated = torch_version_findings(ck) if stack_of(ck.framework).torch_state else []  # MMEngine: own class
        out += min_lrs_findings(ck) + dated + sanity_findings(ck)

        out += findings_for(trace)  # what only the checkpoint's training stack can cause
    elif expect:
        fake = _ExpectOnly(trace.config)
        out += hyperparameter_findings(fake, expect)
    if "steps-per-row" not in story:  # k steps per row explains the offset by itself
        out += epoch_offset_findings(trace)
    out += never_stepped_findings(trace)
    out += mode_findings(trace, column) + rel_threshold_findings(trace) + floor_findings(trace)
    if trace.error:
        existing = [f for f in out if f.code == "min-lrs-mismatch"]
        if existing:
            i = out.index(existing[0])
            out[i] = Finding(existing[0].code, existing[0].severity, existing[0].epoch,
                             existing[0].message + f"; the replay stops there: {trace.error}",
                             {**existing[0].evidence, "replay_error": trace.error}, existing[0].fix)
        else:
            out.append(Finding("min-lrs-mismatch", "warning", None, trace.error, {"replay_error": trace.error},
                               "append one floor per new param group to scheduler.min_lrs"))
    seen, unique = set(), []
    for f in sorted(out, key=lambda f: f.severity != "warning"):
        key = (f.code, f.epoch, f.message)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def sanity_findings(checkpoint: Any) -> list[Finding]:
    """Saved values torch accepts but no real run produces (``plateau_forensics.sanity``), when available."""
    from plateau_forensics.sanity import check_checkpoint

    out = []
    for item in check_checkpoint(checkpoint):
        code, severity, message, evidence = item
        out.append(Finding(code, severity, checkpoint.epoch, message, dict(evidence),
                           "check how this state was written; a torch scheduler cannot reach it by stepping"))
    return out


@dataclass(frozen=True)
class _ExpectOnly:
    """Teaching mode has no checkpoint; --expect then compares against the config given."""

    config: PlateauConfig
    epoch: None = None
    state: PlateauState = field(default_factory=lambda: PlateauState(0, math.inf, 0, 0, (0.0,), 0.0, partial=True))


