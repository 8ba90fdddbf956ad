"""The winning story in words: one finding per component, with the evidence that a simpler story misses.

For each component the story *without* it (what the author meant to run: the scheduler restored, one step
per row, the validation metric) is simulated too, and what it fails to explain is the evidence quoted.
When several stories explain the inputs equally well the components they share are reported as usual, and
one ``ambiguous`` finding names the others and the input that would decide between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from plateau_forensics.diagnose import Finding
from plateau_forensics.stacks import stack_of
from plateau_forensics.stories import (
    WARNING_STORIES,
    Boundary,
    Evaluation,
    Evidence,
    Verdict,
    evaluate,
    failures,
    without,
)

__all__ = ["story_findings"]

FIXES = {
    "scheduler-not-restored": "call scheduler.load_state_dict(checkpoint[{key}]) when resuming",
    "optimizer-not-restored": "load optimizer.state_dict() from the checkpoint when resuming (ReduceLROnPlateau "
                              "keeps the lr only in the optimizer)",
    "lr-overwritten": "remove the code that assigns param_group['lr'] after loading the optimizer, or assign it "
                      "before loading",
    "weights-only-resume": "resume with the optimizer and scheduler states too (Lightning: trainer.fit(model, "
                           "ckpt_path=...), not load_from_checkpoint and a new fit)",
    "resume-skipped-step": "save the checkpoint after scheduler.step(), or, resuming from one saved before it, "
                           "step the scheduler once with that epoch's metric",
    "saved-before-step": "on resume, make sure epoch {epoch}'s metric is stepped exactly once",
    "steps-per-row": "call scheduler.step(metric) once per evaluation (not per batch or per process; "
                     "Lightning: interval='epoch')",
    "wrong-metric": "pass the validation metric to scheduler.step() (rerun with --metric {column} to replay what "
                    "happened)",
    "lr-logged-after-step": "nothing to fix: the lr column is read as the lr after each step; log the lr before "
                            "scheduler.step() to log the lr each epoch trained with",
    "log-starts-mid-run": "give the earlier runs' logs too (in order), to replay the whole history",
    "scheduler-started-late": "nothing to fix if the scheduler really started then (e.g. after a warm-up)",
    "logs-out-of-order": "give the logs in the order they were written",
    "partial-restore": "save and load the wrapped torch scheduler's full state_dict() (timm: "
                       "scheduler.lr_scheduler.state_dict()), or load the state written by --write-state",
    "external-lr-change": "another writer sets the lr (a warm-up, a second scheduler, lr noise, manual code): make "
                          "it the only one, or expect the plateau scheduler to act on top of it",
}


def _label(ev: Evidence, plan_rows: Sequence[int], pos: int) -> float:
    return ev.label(plan_rows[pos])


def _boundary(e: Evaluation, code: str) -> Boundary | None:
    return next((b for b in e.plan.boundaries if code in b.components), None)


def _against(ev: Evidence, e: Evaluation, code: str) -> tuple[list[str], float | None]:
    """What the story without ``code`` fails to explain, and the first epoch where it does."""
    plan = without(e.plan, code)
    if plan is None or plan == e.plan:
        return [], None
    simpler = evaluate(ev, plan)
    rows = simpler.external_rows
    first = ev.label(rows[0]) if rows else (simpler.ops[simpler.anchor_op].label if simpler.anchor_op is not None
                                            and simpler.anchor_op >= 0 else None)
    return failures(ev, simpler), first


def _message(ev: Evidence, e: Evaluation, code: str) -> tuple[str, float | None, dict[str, Any]]:
    plan, ck = e.plan, ev.ck
    b = _boundary(e, code)
    where = _label(ev, plan.rows, b.row) if b is not None else None
    ev_dict: dict[str, Any] = {}
    if b is not None:
        ev_dict["resume_epoch"] = where
        if b.source is not None:
            ev_dict["resumed_from_epoch"] = _label(ev, plan.rows, b.source)
    if code in ("optimizer-not-restored", "lr-overwritten"):
        ev_dict.update(_lr_evidence(ev, e, b))
    if code == "scheduler-not-restored":
        if plan.start == "checkpoint-fresh":
            where = _label(ev, plan.rows, plan.start_row)
        text = (f"the run resumed at epoch {where} with a fresh scheduler (best={ev.config.mode_worse}, counters 0, "
                "last_epoch restarted), not the saved state")
    elif code == "optimizer-not-restored":
        if b is None:
            where = _label(ev, plan.rows, plan.start_row)
        text = (f"the run resumed at epoch {where} with a fresh optimizer: it trained with the initial lr "
                f"{_lrs(e.initial_lrs)}, not the {_lrs(ev_dict.get('checkpoint_lr'))} it had reached, and the "
                "reductions made before were lost")
    elif code == "lr-overwritten":
        if b is None:
            where = _label(ev, plan.rows, plan.start_row)
        row = plan.rows[b.row] if b is not None else plan.rows[plan.start_row]
        logged = ev.log.lrs[row] if ev.log.lrs is not None else None
        text = (f"at the resume at epoch {where} code set the lr by hand to {_lrs(logged)} after loading (the restored "
                f"optimizer had {_lrs(ev_dict.get('checkpoint_lr'))}, the initial lr was {_lrs(e.initial_lrs)})")
    elif code == "weights-only-resume":
        text = (f"at epoch {where} a new run started from scratch with the saved weights only (epochs restart, fresh "
                "optimizer and scheduler): the earlier run's rows are its own history, not this one's")
    elif code == "resume-skipped-step":
        src = ev_dict.get("resumed_from_epoch")
        ev_dict.update({"skipped_epoch": src, "next_log_starts_at": where})
        where, src = src, src
        text = (f"epoch {src}'s metric was never passed to the resumed scheduler: it resumed at epoch "
                f"{ev_dict['next_log_starts_at']} from a "
                f"checkpoint saved before epoch {src}'s step, and every later last_epoch is one lower than an "
                "uninterrupted run's" + stack_of(ev.framework).notes.get("resume-skipped-step", ""))
    elif code == "saved-before-step":
        where = ck.epoch if ck is not None else None
        after = e.ops[e.anchor_op].label if e.anchor_op is not None and e.anchor_op >= 0 else None
        text = (f"the checkpoint says epoch {where} but holds the state after epoch {after}'s step: it was saved "
                f"before epoch {where}'s scheduler.step()"
                + stack_of(ev.framework).notes.get("saved-before-step", ", or its 'epoch' is the next epoch to run"))
        ev_dict.update({"checkpoint_epoch": where, "state_after_epoch": after})
    elif code == "steps-per-row":
        where = e.ops[e.anchor_op].label if e.anchor_op is not None and e.anchor_op >= 0 else None
        text = (f"the scheduler was stepped {plan.k} times per logged row: that reproduces the saved last_epoch="
                f"{ck.state.last_epoch if ck else '?'}; and a repeated value is not better than itself, so improving "
                "rows still add bad epochs")
        ev_dict["k"] = plan.k
    elif code == "wrong-metric":
        matches = _column_matches(ev, plan.column) if ck else []
        at = e.ops[e.anchor_op].label if e.anchor_op is not None and e.anchor_op >= 0 else None
        text = (f"step() was fed '{plan.column}', not '{ev.log.metric_column}': the saved best {ck.state.best!r} is "
                f"'{plan.column}' at epoch {matches[0]['epoch'] if matches else '?'}, and replaying '{plan.column}' "
                f"reproduces the saved state after epoch {at}" if ck else f"step() was fed '{plan.column}'")
        ev_dict.update({"column": plan.column, "monitored": ev.log.metric_column, "matches": matches})
    elif code == "lr-logged-after-step":
        text = "the lr column holds the lr after each scheduler.step(), not the lr the epoch trained with"
    elif code == "log-starts-mid-run":
        where = _label(ev, plan.rows, plan.start_row)
        if plan.start.startswith("checkpoint"):
            text = f"the log starts at epoch {where}, right after the checkpoint: the run before it is not in the log"
        else:
            text = (f"the log starts at epoch {where}, mid-run: the scheduler's state before it is unknown, and the "
                    "rows before the first determined state are shown as unknown")
    elif code == "scheduler-started-late":
        where = _label(ev, plan.rows, plan.start_row)
        text = (f"the scheduler that wrote this checkpoint took its first step at epoch {where}: the rows before "
                "were not stepped by it")
    elif code == "partial-restore":
        text = (f"the resume at epoch {where} restored only best and last_epoch (what timm's PlateauLRScheduler "
                "saves): num_bad_epochs and cooldown_counter restarted at 0")
    elif code == "logs-out-of-order":
        text = "the logs were given out of order: they are read in the order of their epochs"
    elif code == "external-lr-change":
        epochs = [ev.label(r) for r in e.external_rows]
        where = epochs[0] if epochs else None
        ev_dict["rows"] = [_change(ev, e, r) for r in e.external_rows[:50]]
        kept = [c["epoch"] for c in ev_dict["rows"] if c["from"] == c["to"]]
        if kept:  # the log shows no change there: the scheduler's own change is what is missing
            ev_dict["unchanged_where_the_scheduler_changes"] = kept
        changed = [c["epoch"] for c in ev_dict["rows"] if c["from"] != c["to"]]
        kept = ev_dict.get("unchanged_where_the_scheduler_changes", [])
        parts = []
        if changed:
            parts.append(f"the logged lr changes where no plateau step explains it, at epoch"
                         f"{'s' if len(changed) > 1 else ''} {_span(changed)}")
        if kept:
            parts.append(f"the logged lr stays the same where the plateau scheduler changes it, at epoch"
                         f"{'s' if len(kept) > 1 else ''} {_span(kept)}")
        text = "; ".join(parts) or "the logged lr differs from the plateau scheduler's"
        ev_dict["epochs"] = epochs
    else:
        text = code
    return text, where, ev_dict


def _lr_evidence(ev: Evidence, e: Evaluation, b: Boundary | None) -> dict[str, Any]:
    """The lr the first resumed row trained with, the lr a restored optimizer had, and the initial lr."""
    plan = e.plan
    pos = b.row if b is not None else plan.start_row
    row = plan.rows[pos]
    logged = ev.log.lrs[row] if ev.log.lrs is not None else None
    carried = None
    if b is not None:
        first = next((i for i, op in enumerate(e.ops) if op.row == row and op.init is not None), None)
        if first is not None and e.ops[first].parent >= 0:
            lrs = {w.lrs for w in e.sim.alive(e.ops[first].parent) or e.sim.after[e.ops[first].parent]}
            carried = lrs.pop() if len(lrs) == 1 else None
    elif ev.ck is not None:
        carried = ev.ck.lrs
    return {"logged_lr": list(logged) if logged is not None else None,
            "checkpoint_lr": list(carried) if carried is not None else None,
            "initial_lr": list(e.initial_lrs) if e.initial_lrs is not None else None}


def _column_matches(ev: Evidence, column: str | None) -> list[dict[str, Any]]:
    ck = ev.ck
    if ck is None or column is None:
        return []
    out = []
    for i in range(len(ev.log)):
        iv = ev.log.column_interval(column, i)
        if iv is not None and iv[0] <= ck.state.best <= iv[1]:
            out.append({"column": column, "epoch": ev.label(i)})
    return out


def _change(ev: Evidence, e: Evaluation, row: int) -> dict[str, Any]:
    """The logged lr at ``row`` and at the row before it, and what the story's scheduler gave there."""
    lrs = ev.log.lrs
    prev = next((lrs[r] for r in range(row - 1, -1, -1) if lrs is not None and lrs[r] is not None), None)
    expected = next((e.sim.lr_expected.get(i) for i, op in enumerate(e.ops) if op.row == row
                     and i in e.sim.lr_expected), None)
    return {"epoch": ev.label(row), "from": list(prev) if prev is not None else None,
            "to": list(lrs[row]) if lrs is not None and lrs[row] is not None else None,
            "scheduler_gives": [list(x) for x in expected if x is not None] if expected else None}


def _span(values: Sequence[Any]) -> str:
    vals = list(values)
    if len(vals) > 2 and all(isinstance(v, int) for v in vals) and vals == list(range(vals[0], vals[0] + len(vals))):
        return f"{vals[0]}-{vals[-1]}"
    return ", ".join(str(v) for v in vals[:12]) + (", ..." if len(vals) > 12 else "")


def _lrs(values: Sequence[float | None] | None) -> str:
    if not values:
        return "?"
    shown = [f"{v:.6g}" if v is not None else "?" for v in values]
    return shown[0] if len(shown) == 1 else "[" + ", ".join(shown) + "]"


def story_findings(ev: Evidence, verdict: Verdict) -> list[Finding]:
    """One finding per component of the winning story (``duplicate-epochs`` is the log's own finding), then
    ``ambiguous`` when other stories explain the evidence as well."""
    e = verdict.evaluation
    if e is None:
        return []
    shared = set(verdict.story)
    for alt in verdict.alternatives:
        shared &= set(alt)
    out = []
    for code in verdict.story:
        if code == "duplicate-epochs" or code not in shared:
            continue
        text, epoch, evidence = _message(ev, e, code)
        against, first = _against(ev, e, code)
        if against:
            text += "; without it: " + "; ".join(against)
            evidence["against_simpler_story"] = against
            evidence["first_divergence_epoch"] = first
        key = repr(ev.ck.key_path) if ev.ck is not None and ev.ck.key_path else "'scheduler'"
        fix = FIXES.get(code, "").format(key=key, epoch=ev.ck.epoch if ev.ck else "?", column=e.plan.column)
        out.append(Finding(code, "warning" if code in WARNING_STORIES else "info", epoch, text, evidence, fix))
    if verdict.ambiguous:
        options = [verdict.story, *verdict.alternatives]
        words = [" + ".join(s) if s else "a clean run" for s in options]
        unique = [c for s in options for c in s if c not in shared]
        text = ("ambiguous: the inputs fit " + " or ".join(words) + " equally well"
                + (f"; to decide: {verdict.decide}" if verdict.decide else ""))
        # a warning only when every story that fits names a mistake the others do not all share
        severity = "warning" if all((set(o) - shared) & WARNING_STORIES for o in options) else "info"
        details: dict[str, Any] = {}
        for code in verdict.story:
            if code not in shared and code != "duplicate-epochs":
                msg, _, evidence = _message(ev, e, code)
                details[code] = {"message": msg, **evidence}
        if details:
            text += "; the first story: " + "; ".join(d["message"] for d in details.values())
        out.append(Finding("ambiguous", severity, None, text,
                           {"stories": [list(s) for s in options], "undecided": sorted(set(unique)),
                            "decide": verdict.decide, "components": details}, verdict.decide))
    return out
