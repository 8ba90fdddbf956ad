"""Plain-torch cells of the scenario matrix: the inputs a user has, checked against the run, written out.

A cell is one live run (``matrix_torch.Run``), one checkpoint the user gives the tool, one log style and which
of the log files they give (all, in order; only the last process's; the log overwritten at the resume; in the
wrong order). ``check`` refuses a cell whose story does not show in those inputs; ``write`` saves the
checkpoint with ``torch.save``, the log files and ``truth.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import matrix_evidence as ev
import matrix_torch as mt
import torch
from matrix_record import json_float, mark_discarded
from matrix_styles import Style, render, row_tokens

#: Story codes that describe how the inputs were produced, not a mistake in the training: a warning-level
#: finding on a cell whose stories are all in this set is a false alarm.
BENIGN = frozenset(
    {
        "lr-logged-after-step",
        "log-starts-mid-run",
        "logs-out-of-order",
        "duplicate-epochs",
        "weights-only-resume",
        "saved-before-step",
        "resume-skipped-step",
    }
)

LAYOUTS = ("plain", "tutorial", "lr_scheduler", "mixed")


def layout_checkpoint(ck: dict, layout: str, epoch_label: int) -> dict:
    """The checkpoint dict with this layout's key names (the content is the live one)."""
    if layout == "plain":
        return {
            "epoch": epoch_label,
            "model": ck["model"],
            "optimizer": ck["optimizer"],
            "scheduler": ck["scheduler"],
            "val_loss": ck["val_loss"],
        }
    if layout == "tutorial":
        return {
            "epoch": epoch_label,
            "model_state_dict": ck["model"],
            "optimizer_state_dict": ck["optimizer"],
            "scheduler_state_dict": ck["scheduler"],
            "loss": ck["val_loss"],
        }
    if layout == "lr_scheduler":
        return {
            "epoch": epoch_label,
            "global_step": ck["global_step"],
            "model": ck["model"],
            "optimizer": ck["optimizer"],
            "lr_scheduler": ck["scheduler"],
        }
    if layout == "mixed":
        return {
            "epoch": epoch_label,
            "state_dict": ck["model"],
            "optimizer_state_dict": ck["optimizer"],
            "lr_scheduler": ck["scheduler"],
            "val_loss": ck["val_loss"],
        }
    raise ValueError(layout)


@dataclass(frozen=True)
class Family:
    """A story (set of codes) and how the training loop produces it."""

    name: str
    stories: frozenset[str]
    knobs: mt.Knobs
    resume: mt.Resume | None
    description: str
    layout: str = "plain"

    @property
    def positions(self) -> tuple[str, ...]:
        if self.resume is None:
            return ("early", "after-reduction", "in-cooldown", "final")
        return ("early", "after-reduction", "in-cooldown")


@dataclass
class Cell:
    """One matrix cell before it is written."""

    family: Family
    run: mt.Run
    position: str
    choice: str  # at | resume | final
    ckpt_key: tuple[int, int, str]
    style: Style
    given: str = "all"  # all | last | overwritten | reversed
    #: stories with more mistakes that read the same as this one in its inputs (found by ``check``)
    indistinguishable: list[frozenset[str]] = field(default_factory=list, compare=False)
    #: the same, as whole cell-level story sets (they need not share this cell's log-derived codes)
    indistinguishable_cell: list[frozenset[str]] = field(default_factory=list, compare=False)

    @property
    def stories(self) -> frozenset[str]:
        s = set(self.family.stories)
        if self.style.lr == "after":
            s.add("lr-logged-after-step")
        if self.given in ("last", "overwritten"):
            s.add("log-starts-mid-run")
            s.discard("duplicate-epochs")  # the crashed run's rows are not in the given log
        if self.given == "reversed":
            s.add("logs-out-of-order")
        return frozenset(s)

    def cell_level(self, family_stories: frozenset[str]) -> frozenset[str]:
        """A family-level story set as this cell's inputs show it: with the codes the log style and the given
        logs add, without the ones they hide (a story that also crashed and re-ran epochs shows no duplicates
        in a log that holds only the last process's rows, just as the cell's own story does not)."""
        fam = self.family.stories
        return frozenset((family_stories - (fam - self.stories)) | (self.stories - fam))

    @property
    def name(self) -> str:
        extra = "" if self.given == "all" else f".{self.given}"
        return f"{self.position}.{self.choice}.{self.style.name}{extra}"

    def files(self) -> tuple[dict[str, list[mt.Row]], list[str]]:
        """(file name -> its rows, the files given to the tool in order)."""
        ext = self.style.ext
        procs = [p.index for p in self.run.processes]
        by_proc = {p: [r for r in self.run.rows if r.process == p] for p in procs}
        if self.given == "overwritten":
            return {f"log.{ext}": by_proc[procs[-1]]}, [f"log.{ext}"]
        if self.style.files == "one":
            return {f"log.{ext}": list(self.run.rows)}, [f"log.{ext}"]
        files = {f"log_{p}.{ext}": by_proc[p] for p in procs}
        names = list(files)
        if self.given == "last":
            return files, names[-1:]
        if self.given == "reversed":
            return files, names[::-1]
        return files, names

    def given_rows(self) -> list[mt.Row]:
        files, logs = self.files()
        return [r for name in logs for r in files[name]]


def expected_ambiguous(stories: frozenset[str], lr_set_to: float | None) -> list[frozenset[str]]:
    """Stories the inputs cannot tell apart from ``stories`` by construction (not by numeric accident).

    Setting every group's lr to the initial lr by hand is indistinguishable from a fresh optimizer, both ways.
    """
    out = []
    if "optimizer-not-restored" in stories:
        out.append(stories - {"optimizer-not-restored"} | {"lr-overwritten"})
    if "lr-overwritten" in stories and lr_set_to == mt.LR:
        out.append(stories - {"lr-overwritten"} | {"optimizer-not-restored"})
    return out


def silent_resume_twins(cell: Cell) -> list[frozenset[str]]:
    """Stories that read the same as the cell's because its one lr change shows nowhere else in the inputs.

    An lr set by hand at a resume that the log does not show (one file, epochs going on, no crash re-logging
    them) and an lr changed mid-run with no resume at all (a hand edit of ``param_groups``) leave the same log
    and the same checkpoint: the scheduler state goes on in both, and only the lr moves, at the same row.
    """
    fam, run = cell.family, cell.run
    if fam.stories == {"external-lr-change"} and run.knobs.external == "hand-edit":
        return [frozenset({"lr-overwritten"})]
    silent = cell.given == "all" and cell.style.files == "one" and run.resume is not None \
        and not run.resume.weights_only
    if fam.stories == {"lr-overwritten"} and silent:
        return [frozenset({"external-lr-change"})]
    return []


def unseen_resume_twins(cell: Cell) -> list[frozenset[str]]:
    """Stories that differ from the cell's only in what the unseen resume did to the lr.

    The given log starts at the resume (its earlier rows are not given) and the given checkpoint was saved after
    it: nothing in the inputs comes from before the resume. What the resume did to the optimizer (restored it,
    started a fresh one, set the lr by hand) shows only as the lr the log starts with, and a run whose initial lr
    (or hand-set lr) was that lr reads the same in every input the forensics reads (issue 9's evidence list; the
    optimizer's per-parameter step counts are not part of it): the scheduler decisions do not depend on the lr.
    """
    run = cell.run
    if cell.given not in ("last", "overwritten") or run.resume is None or run.resume.weights_only:
        return []
    if cell.ckpt_key[0] == 0:  # the checkpoint is the first process's: it holds the lr before the resume
        return []
    lr_codes = {"optimizer-not-restored", "lr-overwritten"}
    base = cell.stories - lr_codes
    lr_twins = [base, base | {"optimizer-not-restored"}, base | {"lr-overwritten"}]
    if cell.family.layout != "lr_scheduler":
        # Whether the resume lost a step shows only in last_epoch against the epoch labels, and a log that starts
        # mid-run does not say whether it counts epochs from 0 or from 1: read the other way, every label moves
        # by one and a resume that lost a step reads as one that did not (a global_step could pin the count: the
        # layout that saves one is left out)
        lr_twins += [s ^ {"resume-skipped-step"} for s in lr_twins]
    return [s for s in lr_twins if s != cell.stories]


def check(cell: Cell) -> str | None:
    """None when the cell's story shows in its inputs; else why the cell is refused.

    Refused when another story that needs no more assumptions (no more story codes) than the true one predicts
    the same evidence, unless it is declared ambiguous with it; a story with more codes that reads the same is
    no reason to refuse, since the simplest story that explains the evidence is the one to report.
    """
    run, style, given = cell.run, cell.style, cell.given_rows()
    fam = cell.family
    actual = ev.actual_observables(run, given, style, cell.ckpt_key)
    lr_set_to = run.resume.lr_set_to if run.resume else None
    declared = expected_ambiguous(fam.stories, lr_set_to)
    unseen = {s - (cell.stories - fam.stories) for s in unseen_resume_twins(cell)}
    cell.indistinguishable.clear()
    for cf in ev.counterfactuals(run, fam.stories):
        if cf.stories == fam.stories or cf.stories in declared or cf.stories in unseen:
            continue
        sim = _simulated(run, cf)
        key = (*cell.ckpt_key[:2], cf.save) if cf.whole_run else cell.ckpt_key
        if ev.cf_observables(sim, given, style, key) == actual:
            if len(cf.stories) > len(fam.stories):
                # a story with more mistakes that the inputs cannot tell from this one: reporting it as an
                # alternative is honest, not wrong (declared below); the simpler story may also win outright
                cell.indistinguishable.append(cf.stories)
                continue
            return f"reads the same as {sorted(cf.stories) or 'clean'}"
    cell.indistinguishable_cell.clear()
    if run.knobs.per_batch and run.resume is None:
        cell.indistinguishable_cell.extend(_current_row_twins(cell, actual))
    if style.lr == "after":
        before = ev.actual_observables(run, given, replace(style, lr="before"), cell.ckpt_key)
        if before == actual:
            return "no lr change in the given rows: lr read after the step looks like lr read before"
    if cell.given in ("last", "overwritten"):
        first = given[0].epoch - 1 + style.epoch_base
        steps = sum(len(r.steps) for r in given)
        saved = run.snapshots[cell.ckpt_key].ckpt["scheduler"]["last_epoch"]
        if first == style.epoch_base and saved <= steps:
            return "the given log starts like a whole run"
    if cell.given == "reversed":
        files, logs = cell.files()
        ordered = [files[n] for n in reversed(logs)]
        if ordered[1][0].epoch <= ordered[0][-1].epoch:
            return (
                "in order, the per-process logs already go back in epochs: the reversed order reads the same"
            )
    if "weights-only-resume" in fam.stories:
        b = [r for r in given if r.process == 1]
        if b and b[0].epoch != 1:
            return "the new run's epochs do not restart"
    return None


def _current_row_twins(cell: Cell, actual: tuple) -> list[frozenset[str]]:
    """Per-batch stepping on the previous epoch's val loss, read as k steps on the row's own val loss after it.

    Row e's stale steps (taken during epoch e, on epoch e-1's value) are then row e-1's own steps, so the state a
    checkpoint saved at the end of epoch e holds reads as the one saved before epoch e's steps, and the lr logged
    at the end of an epoch as the lr at the start of the next. A re-run of a real scheduler says whether that
    reading leaves every input the same: with the lr read before the steps, and with it read after.
    """
    run, style, given = cell.run, cell.style, cell.given_rows()
    rows = list(run.rows)
    per = {r.epoch: len(r.steps) for r in rows}
    k = max(per.values())

    def own(run_: mt.Run, row: mt.Row) -> list[float]:  # the next row's stale steps, on this row's value
        return [row.val_loss] * per.get(row.epoch + 1, k)

    cf = ev.Counterfactual(frozenset(), own, whole_run=True, save="before")
    sim = _simulated(run, cf)
    key = (cell.ckpt_key[0], cell.ckpt_key[1], "before") if cell.ckpt_key[2] == "after" else None
    if key is None or key not in sim.snaps:
        return []
    base = set(cell.family.stories) | {"saved-before-step"}
    out = []
    readings = [None] if style.lr is None else ["before", "after"]
    for reading in readings:
        st = style if reading is None else replace(style, lr=reading)
        if ev.cf_observables(sim, given, st, key) == actual:
            out.append(frozenset(base | ({"lr-logged-after-step"} if reading == "after" else set())))
    return out


_SIMS: dict[tuple[int, ev.Counterfactual], tuple[mt.Run, ev.SimRun]] = {}


def _simulated(run: mt.Run, cf: ev.Counterfactual) -> ev.SimRun:
    """``ev.simulate`` once per (run, counterfactual): it does not depend on the cell's log style."""
    key = (id(run), cf)
    if key not in _SIMS:
        _SIMS[key] = (
            run,
            ev.simulate(run, cf, run.knobs.sched_cfg, mt.LR),
        )  # the run is kept so its id stays unique
    return _SIMS[key][1]


# --------------------------------------------------------------------------------------------------
# truth.json


def truth(cell: Cell) -> dict[str, Any]:
    """The truth.json object of ``cell`` (epochs as the cell's log prints them)."""
    run, style, fam = cell.run, cell.style, cell.family
    base = style.epoch_base
    lab = lambda e: e - 1 + base  # noqa: E731 - loop epochs count from 1
    files, logs = cell.files()
    given = [(name, r) for name in logs for r in files[name]]
    tokens = {id(r): row_tokens(r, style).tokens for r in run.rows}
    snap = run.snapshots[cell.ckpt_key]
    fed = run.knobs.fed
    given_rows = [r for _, r in given]
    silent = cell.given == "all" and style.files == "one" and run.resume is not None
    open_rows = ev.moved_resume_open(run, given_rows, style, cell.ckpt_key, run.knobs.sched_cfg, mt.LR) \
        if silent else None
    det = ev.determinable(run, given_rows, style, cell.ckpt_key, run.knobs.sched_cfg, fed, tokens, open_rows)
    hi = snap.history_index if snap.history_index is not None else -1
    rows = []
    for name, r in given:
        d = det.get(id(r))
        rows.append(
            {
                "epoch": lab(r.epoch),
                "process": r.process,
                "file": name,
                "lr_used": r.lr_used,
                "lr_end": r.lr_end,
                "val_loss": r.val_loss,
                "train_loss": r.train_loss,
                **({"val_acc": r.val_acc} if r.val_acc is not None else {}),
                "logged": tokens[id(r)],
                "steps": r.steps,
                "superseded": r.superseded,
                "after_checkpoint": bool(r.steps) and not r.superseded and min(r.steps) > hi,
                "determinable": None if d is None else {"state": d["state"], "lr": d["lr"]},
                "best_logged": None if d is None else d["best_logged"],
            }
        )
    ck_name = checkpoint_name(cell)
    resumed_file = None
    if run.resume_epoch is not None:
        resumed_file = f"ckpt_e{lab(run.resume_epoch)}.pt"
    processes = [
        {
            "index": p.index,
            "first_epoch": lab(p.first),
            "last_epoch": lab(p.last),
            "scheduler": p.scheduler,
            "optimizer": p.optimizer,
            "weights": p.weights,
            "resumed_from": resumed_file if p.resumed_from is not None else None,
            "resumed_from_history_index": (
                run.snapshots[p.resumed_from].history_index if p.resumed_from is not None else None
            ),
            "log_files": [n for n, rs in files.items() if any(r.process == p.index for r in rs)],
        }
        for p in run.processes
    ]
    k = 8 if run.knobs.per_batch else (run.knobs.k if run.knobs.k > 1 else None)
    params = {
        "family": fam.name,
        "resume_after_epoch": lab(run.resume_epoch) if run.resume_epoch is not None else None,
        "resume_position": cell.position if run.resume_epoch is not None else None,
        "k": k,
        "stale": run.knobs.per_batch,
        "fed_column": fed,
        "train_loss": run.knobs.train_loss,
        "lr_set_to": run.resume.lr_set_to if run.resume else None,
        "crash_after_epoch": lab(run.processes[0].last) if run.resume and run.resume.crash_extra else None,
        "external": run.knobs.external,
        "external_epochs": sorted({lab(e) for e in run.external_epochs}),
        "checkpoint_order": snap.order,
        "key_layout": fam.layout,
        "given": cell.given,
        "batches_per_epoch": mt.N_TRAIN // run.knobs.batch_size,
    }
    position = "final" if cell.choice == "final" else cell.position
    t = {
        "cell": f"torch/{fam.name}/{cell.name}",
        "stack": "torch",
        "stories": sorted(cell.stories),
        "expected_ambiguous_with": sorted({
            tuple(sorted(cell.cell_level(s)))
            for s in [*expected_ambiguous(fam.stories, params["lr_set_to"]),
                      *silent_resume_twins(cell), *cell.indistinguishable]
        } | {
            tuple(sorted(s)) for s in [*unseen_resume_twins(cell), *cell.indistinguishable_cell]
        }),
        "description": fam.description,
        "params": params,
        "scheduler": run.knobs.sched_cfg,
        "initial_lr": [mt.LR],
        "log_style": {**style.truth(), "given": cell.given},
        "logs": logs,
        "checkpoint": ck_name,
        "checkpoint_position": position,
        "processes": processes,
        "history": [{**h, "epoch": lab(h["epoch"])} for h in run.history],
        "rows": rows,
        "checkpoint_at": {
            "process": snap.process,
            "epoch": lab(snap.epoch),
            "after_step": snap.order == "after",
            "history_index": snap.history_index,
            "optimizer_lr": snap.opt_lr,
        },
        "versions": {"torch": torch.__version__},
    }
    mark_discarded(t)
    return json_float(t)


def checkpoint_name(cell: Cell) -> str:
    """``ckpt_e<epoch>.pt`` (a weights-only resume's new run: ``run2_ckpt_e<epoch>.pt``)."""
    p, e, _ = cell.ckpt_key
    new_run = "run2_" if p and cell.run.resume and cell.run.resume.weights_only else ""
    return f"{new_run}ckpt_e{e - 1 + cell.style.epoch_base}.pt"


def write(cell: Cell, root: Path) -> Path:
    """Write the cell's checkpoint, logs and truth.json under ``root/torch/<family>/<cell>``."""
    folder = root / "torch" / cell.family.name / cell.name
    folder.mkdir(parents=True, exist_ok=True)
    style, run = cell.style, cell.run
    lab = lambda e: e - 1 + style.epoch_base  # noqa: E731
    snap = run.snapshots[cell.ckpt_key]
    torch.save(
        layout_checkpoint(snap.ckpt, cell.family.layout, lab(snap.epoch)), folder / checkpoint_name(cell)
    )
    files, _ = cell.files()
    saves = {cell.ckpt_key[:2]}
    if run.resume_epoch is not None:
        saves.add((0, run.resume_epoch))
    for name, rows in files.items():
        before: dict[int, list[str]] = {}
        after: dict[int, list[str]] = {}
        for i, r in enumerate(rows):
            if i and rows[i - 1].process != r.process or (i == 0 and r.process > 0):
                what = "Loading weights from" if run.resume and run.resume.weights_only else "Resuming from"
                before[i] = [f"{what} ckpt_e{lab(run.resume_epoch)}.pt"]
            if (r.process, r.epoch) in saves:
                after[i] = [f"Saving checkpoint to ckpt_e{lab(r.epoch)}.pt"]
        (folder / name).write_text(render(rows, style, before, after), encoding="utf-8")
    t = truth(cell)
    (folder / "truth.json").write_text(json.dumps(t, indent=1) + "\n", encoding="utf-8")
    return folder
