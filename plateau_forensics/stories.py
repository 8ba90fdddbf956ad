"""Forensics as model selection: which story of how the run was produced explains the evidence best.

A *story* (``Plan``) says how the logged rows were stepped: from a fresh scheduler or from an unknown
state, with which restore at each resume (scheduler and optimizer restored, forgotten, or the lr set by
hand), how many steps per row, which column was fed to ``step()``, whether the lr was logged after the
step. Each story is simulated with the uncertain-evidence replay of ``worlds.py`` and scored by the
evidence it reproduces: the checkpoint's counters, ``last_epoch`` and optimizer lrs, its ``epoch`` field, and
the logged lr row by row. Assumptions cost a little; evidence a story fails to explain costs more. The
story with the lowest score wins; every other story that explains the evidence as well is an
alternative, and then the verdict is "ambiguous", with the input that would decide.

Stories are only proposed where the inputs point at them (a resume where the log restarts or after the
checkpoint's row, ``k`` steps per row where ``last_epoch`` exceeds the rows, another column where the saved
``best`` is not in the monitored one), so that "ambiguous" means the inputs cannot tell, not that an
arbitrary story could be bent to fit.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from plateau_forensics.engine import run
from plateau_forensics.stacks import stack_of
from plateau_forensics.state import PlateauConfig
from plateau_forensics.worlds import (
    Anchor,
    Op,
    Simulation,
    World,
    fresh_world,
    matches_anchor,
    simulate,
    state_world,
    undo_reduction,
    unknown_worlds,
)

if TYPE_CHECKING:
    from plateau_forensics.loader import Checkpoint
    from plateau_forensics.losses import LossLog

__all__ = ["Boundary", "Plan", "Evaluation", "Verdict", "explain", "COSTS", "WARNING_STORIES", "STORY_CODES"]

#: The prior cost of each story component (an assumption a story makes about how the run was produced).
COSTS = {
    "scheduler-not-restored": 1.0, "optimizer-not-restored": 1.0, "weights-only-resume": 1.0,
    "lr-overwritten": 1.5, "resume-skipped-step": 0.5, "log-starts-mid-run": 1.0, "scheduler-started-late": 1.0,
    "steps-per-row": 1.0, "wrong-metric": 1.0, "lr-logged-after-step": 0.5, "logs-out-of-order": 1.0,
    "saved-before-step": 0.25, "duplicate-epochs": 0.0, "external-lr-change": 0.0, "partial-restore": 0.5,
}
#: Story components that mean the run did not do what its author most likely meant.
WARNING_STORIES = frozenset({
    "scheduler-not-restored", "optimizer-not-restored", "lr-overwritten",
    "steps-per-row", "wrong-metric", "external-lr-change", "partial-restore",
})
STORY_CODES = tuple(COSTS)

#: Evidence penalties: what a story fails to reproduce.
UNPLACED, STEPS_MISMATCH, LR_MISMATCH, EXTERNAL, EPOCH_FIELD, RESUME_POINT, IMPOSSIBLE = 6.0, 3.0, 2.0, 2.0, 3.0, 1.0, 1e6
#: How much more a story may assume than the winner and still be named as an alternative that fits as well.
ALTERNATIVE_MARGIN = 1.0
#: A story that starts from an unknown state (the log starts mid-run) predicts no ``last_epoch``.
UNPREDICTED_STEPS = 1.5
#: A resume the log itself does not show.
SILENT_RESUME = 0.75
#: The checkpoint's ``epoch`` one below the row's label: the field counts from 0 where the log counts from 1.
ZERO_BASED_FIELD = 0.75
#: Reading the checkpoint's ``epoch`` as the epoch *after* its state (saved before the step, or "next epoch")
#: rather than the epoch whose step it holds.
BEFORE_STEP = 0.75


@dataclass(frozen=True)
class Boundary:
    """A new process starts at log row ``row``: how it resumed.

    Args:
        row: its first row.
        source: the row after whose step the state it resumed from was saved (the previous process's row
            labelled one epoch earlier), or None when the log does not show it.
        sched: ``carry`` (load_state_dict), ``fresh``, or ``partial`` (only best and last_epoch restored, the
            counters restart at 0: timm's PlateauLRScheduler state).
        opt: ``carry`` (optimizer restored), ``initial`` (a fresh optimizer) or ``logged`` (lr set by hand).
        skip: resumed from a checkpoint saved before ``source``'s step, so that step was never taken.
        structural: the log itself shows the restart (a new file, epochs going back).
        new_run: the epochs restart at the log's first epoch (a new run that loaded only the weights).
    """

    row: int
    source: int | None
    sched: str = "carry"
    opt: str = "carry"
    skip: bool = False
    structural: bool = True
    new_run: bool = False
    #: a resume nothing in the inputs points at but the checkpoint's row (the run may simply have gone on)
    speculative: bool = False
    #: a resume where the checkpoint's last_epoch says its scheduler started (no assumption about where)
    implied: bool = False

    @functools.cached_property
    def components(self) -> frozenset[str]:
        out = set()
        if self.sched == "partial":
            out.add("partial-restore")
        if self.sched == "fresh" and self.opt in ("initial", "carry") and self.new_run:
            # epochs restart: a new run from the saved weights (its lr may equal the one carried)
            out.add("weights-only-resume")
        else:
            if self.sched == "fresh":
                out.add("scheduler-not-restored")
            if self.opt == "initial":
                out.add("optimizer-not-restored")
            if self.opt == "logged":
                out.add("lr-overwritten")
        if self.skip:
            out.add("resume-skipped-step")
        return frozenset(out)


@dataclass(frozen=True)
class Plan:
    """One story: the rows each process stepped and how, and the global conventions of the run.

    Args:
        rows: the log rows in the order the story reads them (a reordering when logs came out of order).
        start_row: the row of the first step (rows before it were not stepped: a warm-up).
        start: ``fresh`` (a new scheduler), ``unknown`` (the log starts mid-run), or ``checkpoint`` /
            ``checkpoint-fresh`` (the log starts right after the checkpoint, restored / not restored).
        start_opt: for a ``checkpoint*`` start, the lr it trained with: ``checkpoint``, ``initial`` or ``logged``.
        boundaries: the resumes, in row order.
        k: steps per logged row.
        column: the column fed to ``step()`` (None: the log's metric column).
        lr_after: the lr column holds the lr after the step, not the lr the epoch trained with.
        lr_at: with ``k`` steps per row, how many of a row's steps came before the next row's lr was logged
            (0: all of them; Lightning's ``interval='step'`` steps once after a validation, logs the next
            epoch's lr, then steps again on the stale value).
        reordered: the logs were given out of order and ``rows`` puts them back.
        superseded: rows of a crashed process that a resumed one logged again.
    """

    rows: tuple[int, ...]
    start_row: int = 0
    start: str = "fresh"
    start_opt: str = "checkpoint"
    boundaries: tuple[Boundary, ...] = ()
    k: int = 1
    column: str | None = None
    lr_after: bool = False
    lr_at: int = 0
    #: with ``k`` steps per row, a row's steps happen during the next epoch (per-batch stepping on the last
    #: validation's value): the next row's lr and the next epoch's checkpoint see them
    stale: bool = False
    reordered: bool = False
    superseded: frozenset[int] = frozenset()
    #: the log's first epoch is not the run's first (the epochs before are not in the log)
    mid_run: bool = False
    #: for a fresh scheduler at the start of a mid-run log: ``not-restored`` (a resume without
    #: load_state_dict). A log starts mid-run where a new process started, so a scheduler created there
    #: anew is that resume's: it is not read as one created late on purpose (``late``)
    fresh_reason: str = "not-restored"
    #: for an unknown start: the resume before the log lost a step (it came from a checkpoint saved before it)
    start_skip: bool = False
    #: for a ``checkpoint*`` start with a fresh optimizer and the lr logged after the step: the first step
    #: reduced the lr it trained with, so the first row shows that lr times ``factor`` (``reduced_start``)
    start_reduced: bool = False

    @functools.cached_property
    def components(self) -> frozenset[str]:
        out: set[str] = set()
        for b in self.boundaries:
            out |= b.components
        resumed_before = self.start == "unknown" or self.start.startswith("checkpoint") or self.fresh_mid_run
        if resumed_before:
            out.add("log-starts-mid-run")
        if self.start == "checkpoint-fresh":
            out.add("scheduler-not-restored")
        if resumed_before and self.start_opt == "initial":
            out.add("optimizer-not-restored")
        if resumed_before and self.start_opt == "logged":
            out.add("lr-overwritten")
        if (self.start == "unknown" or self.start.startswith("checkpoint")) and self.start_skip:
            out.add("resume-skipped-step")
        if self.start.startswith("checkpoint") and self.start_skip:
            out.add("saved-before-step")
        if self.start == "fresh" and self.start_row == 0 and self.mid_run:
            out.add("log-starts-mid-run")
            out.add("scheduler-not-restored" if self.fresh_reason == "not-restored" else "scheduler-started-late")
        if self.start_row > 0 and self.start == "fresh":
            out.add("scheduler-started-late")
            if self.mid_run:
                out.add("log-starts-mid-run")
        if self.k > 1:
            out.add("steps-per-row")
        if self.column is not None:
            out.add("wrong-metric")
        if self.lr_after:
            out.add("lr-logged-after-step")
        if self.reordered:
            out.add("logs-out-of-order")
        if self.superseded:
            out.add("duplicate-epochs")
        return frozenset(out)

    @property
    def reduced_start(self) -> bool:
        """A fresh optimizer after the checkpoint whose lr the first step reduced (``start_reduced``)."""
        return self.start_reduced and self.start_opt == "initial" and self.start.startswith("checkpoint")

    @property
    def fresh_mid_run(self) -> bool:
        """A fresh scheduler from the first row of a log that starts mid-run (a resume that did not restore it)."""
        return self.start == "fresh" and self.start_row == 0 and self.mid_run and self.fresh_reason == "not-restored"

    @functools.cached_property
    def cost(self) -> float:
        c = sum(COSTS[x] for x in self.components)
        # an lr set by hand at a resume the log does not show explains exactly what an external change would:
        # it costs what an unexplained change costs, so the two stay alternatives of each other
        c += sum(EXTERNAL + 0.5 - COSTS["lr-overwritten"] for b in self.boundaries
                 if not b.structural and not b.speculative and b.opt == "logged")
        # a resume the log does not show (no new file, no epoch going back) is an assumption of its own
        # (one right after the checkpoint that changed the lr there is evidenced by that change)
        c += SILENT_RESUME * sum(1 for b in self.boundaries
                                 if not b.structural and not b.implied and not (b.speculative and b.opt != "carry"))
        # two components of one resume each cost; several resumes with the same mistake cost once more each
        c += 0.5 * max(0, sum(1 for b in self.boundaries if b.components) - 1)
        return c


@dataclass
class Evaluation:
    """A story simulated against the evidence, with the checkpoint placed where it fits best."""

    plan: Plan
    ops: list[Op]
    last_epochs: list[int | None]
    lineage: list[int]
    sim: Simulation
    anchor_op: int | None  # op after which the checkpoint was saved; -1: before the first op; None: not placed
    before_step: bool = False
    penalties: dict[str, float] = field(default_factory=dict)
    segment_starts: list[tuple[int, str]] = field(default_factory=list)  # (op, note)
    initial_lrs: tuple[float, ...] | None = None
    initial_source: str = "unknown"
    #: rows before the first step (not stepped by this scheduler) whose logged lr changed: a warm-up or another writer
    pre_external: tuple[int, ...] = ()
    #: the same story with the checkpoint placed elsewhere, as well or nearly as well (another reading)
    other_placements: list[Evaluation] = field(default_factory=list)

    @property
    def external_rows(self) -> list[int]:
        """Log rows where the lr changed with no plateau step to explain it."""
        return sorted({*self.pre_external, *(self.ops[i].row for i in (*self.sim.external,
                                                                          *self.sim.lr_mismatch_out))})

    @property
    def evidence_penalty(self) -> float:
        return sum(self.penalties.values())

    @property
    def components(self) -> frozenset[str]:
        out = set(self.plan.components)
        if self.before_step:
            out.add("saved-before-step")
        if self.sim.external or self.sim.lr_mismatch_out or self.pre_external:
            out.add("external-lr-change")
        return frozenset(out)

    #: Lightning saves before its epoch's step: there the other reading is the one that costs
    lightning: bool = False

    @property
    def fit(self) -> float:
        """The evidence penalty plus the cost of the less usual reading of the checkpoint's epoch field (the epoch
        after its state: saved before the step, or "next epoch"; for Lightning, the epoch of its state)."""
        # a resume that lost a step came from a checkpoint saved before it: the story's run saves so, and a
        # checkpoint of it read as saved after the step assumes a second convention in the same run
        lost = any(b.skip for b in self.plan.boundaries) or (self.plan.start == "unknown" and self.plan.start_skip)
        saves_before = self.lightning or lost
        if self.anchor_op == -1:  # the log starts after the checkpoint: did the resume lose its epoch's step?
            unusual = self.plan.start_skip != saves_before
        else:
            unusual = self.before_step != saves_before and self.anchor_op is not None
        return self.evidence_penalty + (BEFORE_STEP if unusual else 0.0)

    @property
    def score(self) -> float:
        # a hand-set lr at a resume nothing points at is one more unexplained change when the story needs
        # unexplained changes anyway
        extra = 0.0
        if self.sim.external or self.sim.lr_mismatch_out or self.pre_external:
            extra = sum(EXTERNAL - COSTS["lr-overwritten"] for b in self.plan.boundaries
                        if b.speculative and b.opt == "logged")
        return self.fit + self.plan.cost + extra

    @property
    def story(self) -> tuple[str, ...]:
        return tuple(sorted(self.components))


@dataclass(frozen=True)
class Verdict:
    """The winning story, the stories that explain the evidence as well, and what would decide."""

    story: tuple[str, ...]
    alternatives: tuple[tuple[str, ...], ...]
    decide: str
    explained: tuple[str, ...]
    unexplained: tuple[str, ...]
    #: stories that add a resume nothing points at (right after the checkpoint) and fit as well: what the
    #: inputs cannot rule out if the run was resumed there, without making the verdict ambiguous
    unverifiable: tuple[tuple[str, ...], ...] = ()
    evaluation: Evaluation | None = None
    others: tuple[Evaluation, ...] = ()
    evidence: Evidence | None = None
    #: other simulations of the same story that fit as well (another k, timing or placement): where they
    #: disagree on a row's state the inputs do not determine it
    equals: tuple[Evaluation, ...] = ()
    #: readings with the winner's mistakes that put a resume at a row nothing points at instead (``_moved_resume``):
    #: not alternatives, but where they leave another state the inputs do not determine it
    moved: tuple[Evaluation, ...] = ()

    @property
    def ambiguous(self) -> bool:
        """More than one story explains the evidence equally well."""
        return bool(self.alternatives)

    @property
    def confident(self) -> bool:
        """One story explains the evidence better than every other."""
        return not self.alternatives

    def as_dict(self) -> dict[str, Any]:
        """The JSON contract's ``verdict`` object."""
        return {"story": list(self.story), "ambiguous": self.ambiguous,
                "alternatives": [list(a) for a in self.alternatives], "decide": self.decide,
                "explained": list(self.explained), "unexplained": list(self.unexplained)}


# -- the evidence ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Evidence:
    """The inputs, normalised for simulation."""

    config: PlateauConfig
    log: LossLog
    ck: Checkpoint | None
    n_groups: int
    lr_dtypes: tuple[str | None, ...]
    lr_option: tuple[float, ...] | None
    file_starts: tuple[int, ...]
    framework: str = "torch"
    #: the log is a view whose first rows were left out (a stack's own lr code ran there: timm's warm-up), so
    #: a fresh scheduler at its first row may have been created there on purpose, not by a resume
    front_cut: bool = False
    #: evaluations of the stories simulated so far (the search proposes some more than once)
    cache: dict[Plan, Evaluation] = field(default_factory=dict, compare=False, hash=False, repr=False)
    #: ``_inferred_initial`` by the rows a story steps (many stories step the same ones)
    inferred: dict[tuple[tuple[int, ...], int], tuple[float, ...] | None] = field(
        default_factory=dict, compare=False, hash=False, repr=False)
    #: ``metric`` and ``logged_lr`` by row (every story reads the same rows)
    _metrics: dict[tuple[int, str | None], tuple[float, float, float] | None] = field(
        default_factory=dict, compare=False, hash=False, repr=False)
    _lrs: dict[int, tuple[tuple[float, float] | None, ...] | None] = field(
        default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def has_lr(self) -> bool:
        return self.log.lrs is not None

    def label(self, row: int) -> float:
        return self.log.epochs[row]

    def metric(self, row: int, column: str | None) -> tuple[float, float, float] | None:
        """(value, lo, hi) of ``row``'s metric (``column``: another column fed to ``step()``), None if not
        logged."""
        key = (row, column)
        if key not in self._metrics:
            self._metrics[key] = self._metric(row, column)
        return self._metrics[key]

    def _metric(self, row: int, column: str | None) -> tuple[float, float, float] | None:
        if column is None:
            lo, hi = self.log.metric_interval(row)
            return self.log.metrics[row], lo, hi
        v = self.log.columns[column][row]
        if v is None:
            return None
        lo, hi = self.log.column_interval(column, row)  # type: ignore[misc]
        return v, lo, hi

    def logged_lr(self, row: int) -> tuple[tuple[float, float] | None, ...] | None:
        if row not in self._lrs:
            self._lrs[row] = self.log.lr_intervals(row)
        return self._lrs[row]

    @property
    def groups_from_log(self) -> bool:
        """The log has an lr column per param group, so a group without an lr on a row did not exist yet."""
        return self.log.lrs is not None and len(self.log.lr_columns) >= self.n_groups


def _restarts(log: LossLog, rows: Sequence[int], file_starts: Sequence[int]) -> list[Boundary]:
    """The resumes the log itself shows: a new file, or the epoch going back or repeating."""
    out = []
    first_label = log.epochs[rows[0]] if rows else 0
    starts = set(file_starts)
    for pos in range(1, len(rows)):
        r, prev = rows[pos], rows[pos - 1]
        lab, plab = log.epochs[r], log.epochs[prev]
        went_back = log.epoch_column is not None and lab <= plab
        if not (went_back or r in starts):
            continue
        # the resume continued from the latest earlier row labelled one epoch before this process's first row
        source = None
        for q in range(pos - 1, -1, -1):
            if log.epochs[rows[q]] == lab - 1:
                source = q
                break
        new_run = log.epoch_column is not None and lab <= first_label and pos > 0
        if source is None and not went_back:
            source = pos - 1  # a new file that continues the epochs (the last row is the resume point)
        out.append(Boundary(row=pos, source=source, structural=True, new_run=new_run))
    return out


# -- building a story's steps -----------------------------------------------------------------------------
def _initial_lrs(ev: Evidence, plan: Plan) -> tuple[tuple[float, ...] | None, str]:
    """The lrs before the story's first step, and where they come from."""
    lrs, source = _initial_lrs_read(ev, plan)
    if plan.reduced_start and lrs is not None and source == "log":
        # the first row's lr is after its step, which reduced the lr the epoch trained with
        return tuple(v / ev.config.factor for v in lrs), "log"
    return lrs, source


def _initial_lrs_read(ev: Evidence, plan: Plan) -> tuple[tuple[float, ...] | None, str]:
    if ev.lr_option is not None:
        return ev.lr_option, "option"
    if ev.ck is not None and ev.ck.initial_lrs is not None and plan.start == "fresh" and plan.start_row == 0:
        return ev.ck.initial_lrs, "checkpoint-initial_lr"
    if plan.rows:
        # after the first step (lr logged after it) the lr is still the initial one: a first step improves
        # on best = mode_worse, and cannot reduce (unless patience < 0)
        row = plan.rows[plan.start_row]
        logged = ev.log.lrs[row] if ev.log.lrs is not None else None
        if logged is not None and logged[0] is not None:
            values = []
            for v in logged:
                if v is None:
                    break
                values.append(float(v))
            if ev.groups_from_log or len(values) >= ev.n_groups:
                intervals = ev.logged_lr(row) or ()
                if any(iv is not None and iv[0] != iv[1] for iv in intervals):
                    # a rounded or float32 lr column: the exact starting lr is the one that the checkpoint's
                    # lr implies, if it agrees with what was logged
                    inferred = _inferred_initial(ev, plan)
                    if inferred is not None and len(inferred) >= len(values) and all(
                            iv is None or iv[0] <= v <= iv[1] for v, iv in zip(inferred, intervals)):
                        return tuple(inferred[: len(values)]), "log"
                return tuple(values), "log"
            inferred = _inferred_initial(ev, plan)
            if inferred is not None and len(inferred) == ev.n_groups:
                # the log shows fewer groups than the optimizer has (HF: group 0); the others are inferred
                return tuple(values) + inferred[len(values):], "log"
    return None, "unknown"


def _log_start_lrs(ev: Evidence, plan: Plan) -> tuple[float, ...] | None:
    """The lrs at the first row of a log that starts mid-run: as logged, the groups the log does not show
    inferred from the checkpoint through the reductions in the log."""
    if ev.log.lrs is None or not plan.rows:
        return None
    logged = ev.log.lrs[plan.rows[plan.start_row]]
    values = []
    for v in logged or ():
        if v is None:
            break
        values.append(float(v))
    if not values:
        return None
    if ev.groups_from_log or len(values) >= ev.n_groups:
        return tuple(values)
    inferred = _inferred_initial(ev, plan)
    if inferred is None or len(inferred) != ev.n_groups:
        return None
    return tuple(values) + inferred[len(values):]


def _inferred_initial(ev: Evidence, plan: Plan) -> tuple[float, ...] | None:
    """The lrs before the first step, undoing a clean replay's reductions from the checkpoint's optimizer lrs."""
    ck = ev.ck
    if ck is None or ck.lrs is None:
        return None
    key = (plan.rows, plan.start_row)
    if key not in ev.inferred:
        ev.inferred[key] = _inferred_from(ev, plan)
    return ev.inferred[key]


def _inferred_from(ev: Evidence, plan: Plan) -> tuple[float, ...]:
    from plateau_forensics.align import infer_initial_lrs

    ck = ev.ck
    assert ck is not None and ck.lrs is not None
    rows = [plan.rows[p] for p in range(plan.start_row, len(plan.rows))]
    if ck.epoch is not None and ev.log.epoch_column is not None:
        upto = [r for r in rows if ev.label(r) <= ck.epoch]
        rows = upto or rows
    guess, _ = infer_initial_lrs(ev.config, [ev.log.metrics[r] for r in rows], ck.lrs)
    return tuple(guess)


def build(ev: Evidence, plan: Plan) -> tuple[list[Op], list[int | None], list[int], list[tuple[int, str]],
                                             tuple[float, ...] | None, str]:
    """The ops of a story, the scheduler's ``last_epoch`` after each (None: unknown), the ops on the path
    that leads to the end of the run (the trace), the segment starts, and the initial lrs."""
    cfg, n = ev.config, ev.n_groups
    init_lrs, source = _initial_lrs(ev, plan)
    ops: list[Op] = []
    les: list[int | None] = []
    row_ops: dict[int, list[int]] = {}  # position in plan.rows -> op indexes
    starts: list[tuple[int, str]] = []
    bounds = {b.row: b for b in plan.boundaries}
    positions = list(range(plan.start_row, len(plan.rows)))
    prev_op = -1
    dead: set[int] = set()
    for pos in positions:
        row = plan.rows[pos]
        m = ev.metric(row, plan.column)
        if m is None:
            continue
        value, lo, hi = m
        logged = ev.logged_lr(row)
        init: Callable[[list[World]], list[tuple[World, int]]] | None = None
        parent = prev_op
        lr_set = None
        le_start: int | None | str = "continue"
        note = ""
        if not ops:
            init, le_start, note = _start_init(ev, plan, init_lrs, logged, source)
            if plan.start.startswith("checkpoint") and plan.start_opt == "logged" and logged is not None:
                lr_set = _mid(logged)
        elif pos in bounds:
            b = bounds[pos]
            src_pos = b.source
            if src_pos is not None and src_pos < plan.start_row:
                # it resumed from a state saved before this scheduler's first step: a scheduler that had
                # never stepped, so the resumed process starts it afresh
                dead.update(i for idx in row_ops.values() for i in idx)
                parent = -1
                init, le_start = _resume_init(cfg, replace(b, sched="fresh", opt="initial" if b.opt == "carry"
                                                           else b.opt), init_lrs, n)
            else:
                if src_pos is not None and src_pos in row_ops:
                    parent = row_ops[src_pos][-1] if not b.skip else ops[row_ops[src_pos][0]].parent
                    # the ops of the superseded rows between the source and this row are a dead branch
                    dead.update(i for p, idx in row_ops.items() if p > src_pos for i in idx)
                    if b.skip:
                        dead.update(row_ops[src_pos])
                init, le_start = _resume_init(cfg, b, init_lrs, n)
            if b.opt == "logged" and logged is not None:
                lr_set = _mid(logged)
            note = _boundary_note(ev, b, row)
        first_of_row = True
        split = 0 < plan.lr_at < plan.k and not plan.lr_after
        nxt = pos + 1 if pos + 1 < len(plan.rows) and pos + 1 not in bounds else None
        next_logged = ev.logged_lr(plan.rows[nxt]) if (split or plan.stale) and nxt is not None else None
        own = logged if (not split or init is not None) else None
        out_lr = logged
        epoch_after = None
        if plan.stale:
            own = next_logged if init is None or pos > 0 else next_logged
            out_lr = next_logged
            epoch_after = ev.label(plan.rows[nxt]) if nxt is not None else ev.label(row) + 1
        steps_here = plan.k
        if nxt is None and (split or plan.stale):
            # the process ends after this row: the steps that would come during its next epoch never happened
            steps_here = plan.lr_at if split else 0
            if steps_here == 0:
                prev_op = parent
                continue
        for j in range(steps_here):
            idx = len(ops)
            lr_in = own if first_of_row and not plan.lr_after else None
            if split and j == plan.lr_at:
                lr_in = next_logged
            op = Op(row=row, metric=value, lo=lo, hi=hi, parent=parent, label=ev.label(row),
                    init=init if first_of_row else None,
                    lr_in=lr_in,
                    lr_out=out_lr if (j == steps_here - 1 and plan.lr_after) else None,
                    lr_set=lr_set if first_of_row else None, epoch_after=epoch_after)
            ops.append(op)
            if first_of_row and init is not None:
                starts.append((idx, note))
                if le_start == "fresh":
                    les.append(1)
                elif le_start == "unknown":
                    les.append(None)
                elif le_start == "checkpoint":
                    steps = ev.ck.state.steps if ev.ck is not None else None
                    les.append(None if steps is None else int(steps) + 1)
                else:  # carry: continue the parent's count
                    les.append(None if parent < 0 or les[parent] is None else les[parent] + 1)  # type: ignore[operator]
            else:
                les.append(None if parent < 0 or les[parent] is None else les[parent] + 1)  # type: ignore[operator]
            row_ops.setdefault(pos, []).append(idx)
            parent = idx
            first_of_row = False
        prev_op = parent
    lineage = [i for i in range(len(ops)) if i not in dead]
    return ops, les, lineage, starts, init_lrs, source


def _mid(logged: Sequence[tuple[float, float] | None]) -> tuple[float, ...]:
    out = []
    for iv in logged:
        if iv is None:
            break
        out.append(iv[0] if iv[0] == iv[1] else (iv[0] + iv[1]) / 2)
    return tuple(out)


def _start_init(ev: Evidence, plan: Plan, init_lrs: tuple[float, ...] | None,
                logged: tuple[tuple[float, float], ...] | None, init_source: str = "unknown"
                ) -> tuple[Callable[[list[World]], list[tuple[World, int]]], str, str]:
    cfg, n, ck = ev.config, ev.n_groups, ev.ck
    if plan.start == "unknown":
        # the lr at the log's start: as logged (groups the log does not show inferred from the checkpoint)
        lrs = _log_start_lrs(ev, plan)
        if plan.start_opt == "initial" and init_lrs is not None:
            lrs = init_lrs
        worlds = unknown_worlds(cfg, lrs, n)
        if plan.lr_after and (plan.start_opt != "initial" or init_source == "log") and lrs is not None:
            # the first row's lr is after its step: a step that reduced started from the lr before the reduction
            # (a fresh optimizer's too, where its initial lr is read from that row)
            floors = cfg.min_lr if isinstance(cfg.min_lr, tuple) else (float(cfg.min_lr),) * len(lrs)
            before = undo_reduction(lrs, cfg.factor, floors, cfg.eps) if len(floors) == len(lrs) and all(
                d is None for d in ev.lr_dtypes) else None
            if before is not None and before != tuple(lrs):
                worlds += [w for w in unknown_worlds(cfg, before, n)
                           if w.cd == 0 and w.nb == max(cfg.patience, 0)]
        return (lambda _p: [(w, -1) for w in worlds]), "unknown", "the log starts mid-run: the state before it is unknown"
    if plan.start.startswith("checkpoint") and ck is not None:
        lrs = ck.lrs if plan.start_opt == "checkpoint" else (init_lrs if plan.start_opt == "initial" else None)
        if plan.start == "checkpoint":
            w = state_world(ck.state, lrs)
            return (lambda _p: [(w, -1)]), "checkpoint", "resumed from the checkpoint (its state restored)"
        w = fresh_world(cfg, lrs, n)
        return (lambda _p: [(w, -1)]), "fresh", "resumed after the checkpoint with a fresh scheduler"
    w = fresh_world(cfg, init_lrs, n)
    return (lambda _p: [(w, -1)]), "fresh", "a fresh scheduler"


def _resume_init(cfg: PlateauConfig, b: Boundary, init_lrs: tuple[float, ...] | None, n: int
                 ) -> tuple[Callable[[list[World]], list[tuple[World, int]]], str]:
    if b.sched == "partial":
        def partial(p: list[World]) -> list[tuple[World, int]]:
            lrs = (lambda w: init_lrs) if b.opt == "initial" else (lambda w: w.lrs)
            return [(replace(w, nb=0, cd=0, lrs=lrs(w)), j) for j, w in enumerate(p)]

        return partial, "continue"
    if b.sched == "carry":
        if b.opt == "initial":
            return (lambda p: [(replace(w, lrs=init_lrs, n_reduced=0), j) for j, w in enumerate(p)]), "continue"
        return (lambda p: [(w, j) for j, w in enumerate(p)]), "continue"
    if b.opt == "initial":
        w0 = fresh_world(cfg, init_lrs, n)
        return (lambda p: [(w0, -1)]), "fresh"

    def fresh_keeping_lrs(p: list[World]) -> list[tuple[World, int]]:
        out, seen = [], set()
        for j, w in enumerate(p):
            key = (w.lrs, w.n_reduced)
            if key in seen:
                continue
            seen.add(key)
            out.append((replace(fresh_world(cfg, w.lrs, n), n_reduced=w.n_reduced), j))
        return out

    return fresh_keeping_lrs, "fresh"


def _boundary_note(ev: Evidence, b: Boundary, row: int) -> str:
    what = {"carry": "restored", "fresh": "a fresh scheduler", "partial": "best and last_epoch restored"}[b.sched]
    opt = {"carry": "optimizer restored", "initial": "a fresh optimizer", "logged": "lr set by hand"}[b.opt]
    return f"resumed at epoch {ev.label(row)}: scheduler {what}, {opt}" + (", one step lost" if b.skip else "")


# -- evaluating a story ------------------------------------------------------------------------------------
def evaluate(ev: Evidence, plan: Plan) -> Evaluation:
    """Simulate ``plan`` and place the checkpoint where it fits best; record what it fails to explain."""
    done = ev.cache.get(plan)
    if done is None:
        done = ev.cache[plan] = _evaluate(ev, plan)
    return done


def _evaluate(ev: Evidence, plan: Plan) -> Evaluation:
    ops, les, lineage, starts, init_lrs, source = build(ev, plan)
    cfg, ck = ev.config, ev.ck
    base = simulate(cfg, ops, lr_dtypes=ev.lr_dtypes, groups_from_log=ev.groups_from_log)
    if not ops or any(not w for w in base.after):
        e = Evaluation(plan, ops, les, lineage, base, None, penalties={"impossible": IMPOSSIBLE},
                       segment_starts=starts, initial_lrs=init_lrs, initial_source=source)
        return e
    if _vacuous(plan, ops, base, init_lrs):
        return Evaluation(plan, ops, les, lineage, base, None, penalties={"impossible": IMPOSSIBLE},
                          segment_starts=starts, initial_lrs=init_lrs, initial_source=source)
    pre = _pre_start_changes(ev, plan)
    e = Evaluation(plan, ops, les, lineage, base, None, segment_starts=starts, initial_lrs=init_lrs,
                   initial_source=source, pre_external=pre, lightning=stack_of(ev.framework).saves_before_step)
    if ck is None:
        e.penalties = _lr_penalties(base, pre)
        return e
    if plan.start.startswith("checkpoint"):
        if _vacuous_start(ev, plan):
            e.penalties = {"impossible": IMPOSSIBLE}
            return e
        e.anchor_op = -1
        e.penalties = {**_lr_penalties(base, pre), **_epoch_field_penalty(ev, ck.epoch, None, plan, before_log=True)}
        if not _start_steps_agree(ck, plan):
            e.penalties["last_epoch"] = STEPS_MISMATCH
        return e
    anchor_state = ck.state
    # the scheduler's own lr after its last step; the optimizer's is what the run continued with (another
    # writer may have changed it in between: a second scheduler, code)
    seen_lrs = tuple(ck.state.last_lr) if ck.state.last_lr is not None and ck.optimizer_lrs is not None and \
        len(ck.state.last_lr) == len(ck.optimizer_lrs) else ck.lrs
    moved = seen_lrs is not None and ck.lrs is not None and not _close_lrs(seen_lrs, ck.lrs)
    candidates = []
    for i in range(len(ops)):
        a = Anchor(i, anchor_state, seen_lrs, partial=ck.partial, continue_lrs=ck.lrs)
        counters, both = matches_anchor(cfg, base.after[i], a)
        if not counters:
            continue
        le = les[i]
        steps_ok = le is None or le == ck.state.steps
        label = ops[i].epoch_after if ops[i].epoch_after is not None else ops[i].label
        before = False
        field_pen = 0.0
        if ck.epoch is not None and stack_of(ev.framework).epoch_places:
            nxt = _next_labels(ops, i) if ops[i].epoch_after is None else {label + 1}
            if ck.epoch == label:
                before = False
            elif ck.epoch in nxt or (not nxt and ck.epoch == label + 1):
                before = True
            elif ck.epoch == label - 1:
                field_pen = ZERO_BASED_FIELD
            else:
                field_pen = EPOCH_FIELD
        key = ((0 if both else LR_MISMATCH) + (0 if steps_ok else STEPS_MISMATCH) + field_pen, i)
        candidates.append((key, i, before, both, steps_ok, field_pen))
    if not candidates:
        e.penalties = {"checkpoint not placed": UNPLACED, **_lr_penalties(base, pre)}
        return e
    candidates.sort(key=lambda c: c[0])
    best_eval: Evaluation | None = None
    placed: list[Evaluation] = []
    for key, i, before, both, steps_ok, field_pen in candidates[:3]:
        le = les[i]
        sim = simulate(cfg, ops, anchor=Anchor(i, anchor_state, seen_lrs, partial=ck.partial, continue_lrs=ck.lrs),
                       lr_dtypes=ev.lr_dtypes, groups_from_log=ev.groups_from_log, prefix=base)
        pen = _lr_penalties(sim, pre + ((ops[i].row,) if moved else ()))
        if le is None and plan.start == "unknown" and not _unknown_start_steps_agree(
                ev, plan, ops, i, before):
            # a story that starts from an unknown state explains any last_epoch: it predicts none (unless the
            # epochs the log's labels and the checkpoint's global_step count give that last_epoch)
            pen["last_epoch not predicted"] = UNPREDICTED_STEPS
        mismatch = _resume_source_mismatch(plan, ops, i, before)
        if mismatch:
            pen["resume point"] = RESUME_POINT
        if "lr" in sim.anchor_mismatch:
            pen["checkpoint lr"] = LR_MISMATCH
        if not steps_ok:
            pen["last_epoch"] = STEPS_MISMATCH
        if field_pen:
            pen["epoch field"] = field_pen
        cand = Evaluation(plan, ops, les, lineage, sim, i, before, pen, starts, init_lrs, source,
                          pre + ((ops[i].row,) if moved else ()), lightning=stack_of(ev.framework).saves_before_step)
        placed.append(cand)
        if best_eval is None or cand.score < best_eval.score:
            best_eval = cand
    assert best_eval is not None
    best_eval.other_placements = [c for c in placed if c is not best_eval and c.components != best_eval.components]
    return best_eval


def _close_lrs(a: Sequence[float] | None, b: Sequence[float] | None) -> bool:
    return a is not None and b is not None and len(a) == len(b) and all(
        math.isclose(x, y, rel_tol=1e-9) for x, y in zip(a, b))


def _vacuous(plan: Plan, ops: Sequence[Op], sim: Simulation, init_lrs: tuple[float, ...] | None) -> bool:
    """A resume that sets the lr (by hand, or a fresh optimizer's initial lr) to the lr it already had: the
    story names a mistake that changed nothing the evidence can see."""
    firsts = {}
    for i, op in enumerate(ops):
        if op.init is not None and op.row not in firsts:
            firsts[op.row] = i
    for b in plan.boundaries:
        if b.skip and b.sched == "fresh" and b.source is not None:
            # a fresh scheduler inherits nothing from the step that was lost; only a carried lr could show it
            if b.opt != "carry":
                return True
            src = [i for i, op in enumerate(ops) if op.row == plan.rows[b.source]]
            if src and ops[src[0]].parent >= 0:
                before = {w.lrs for w in sim.after[ops[src[0]].parent]}
                after = {w.lrs for w in sim.after[src[-1]]}
                if before == after and len(before) == 1:
                    return True
        if b.opt == "carry" or (b.new_run and b.opt == "initial"):
            continue
        i = firsts.get(plan.rows[b.row])
        if i is None or ops[i].parent < 0:
            continue
        carried = [w.lrs for w in sim.after[ops[i].parent]]
        new = ops[i].lr_set if b.opt == "logged" else init_lrs
        if new is not None and carried and all(
                c is not None and _close_lrs(c[: len(new)], new[: len(c)]) for c in carried):
            return True
    return False


def epochs_trained(ck: Checkpoint) -> int | None:
    """The epochs a checkpoint's run had trained when it was saved, where its ``global_step`` pins them.

    Its ``epoch`` field ``E`` counts them (from 1, or the next epoch from 0) or names the last one from 0
    (``E + 1`` trained). A run with the same number of optimizer steps in every epoch has a ``global_step``
    that is a multiple of the count, so where exactly one of ``E`` and ``E + 1`` divides it, that is the
    count.
    None where neither or both do, or a field is missing, zero or not a whole number (a checkpoint saved
    mid-epoch: HF's fractional ``epoch``)."""
    g, e = ck.global_step, ck.epoch
    if not isinstance(g, int) or isinstance(g, bool) or g <= 0 or not isinstance(e, (int, float)) \
            or isinstance(e, bool) or not math.isfinite(e) or not float(e).is_integer():
        return None
    fits = [t for t in (int(e), int(e) + 1) if t > 0 and g % t == 0]
    return fits[0] if len(fits) == 1 else None


def _start_steps_agree(ck: Checkpoint, plan: Plan) -> bool:
    """The checkpoint's ``last_epoch`` against its ``epoch`` field, for a log that starts after it: a scheduler
    that stepped ``k`` times every epoch holds ``k * epoch`` steps after the epoch's step (``k * (epoch + 1)``
    if the field counts from 0), one epoch's steps fewer if it was saved before them (the resume then lost
    them). Where ``global_step`` pins the epochs trained (``epochs_trained``), only that count is allowed. A
    field or a count that is not a whole number says nothing."""
    steps, epoch = ck.state.steps, ck.epoch
    if not isinstance(steps, (int, float)) or not isinstance(epoch, (int, float)) or isinstance(epoch, bool) \
            or not float(steps).is_integer() or not float(epoch).is_integer():
        return True
    n, k = int(epoch), plan.k
    trained = epochs_trained(ck)
    if trained is not None:
        return int(steps) == k * (trained - (1 if plan.start_skip else 0))
    allowed = (k * (n - 1), k * n) if plan.start_skip else (k * n, k * (n + 1))
    return int(steps) in allowed


def _unknown_start_steps_agree(ev: Evidence, plan: Plan, ops: Sequence[Op], anchor: int,
                               before: bool) -> bool:
    """For a log that starts mid-run (unknown state), the checkpoint placed after op ``anchor``: its
    ``last_epoch`` is what a run that stepped ``k`` times every epoch gives, losing only the steps the story
    says (a resume from before a step, before the log or in it).

    The epochs stepped are counted from the anchor row's label, read from 0 or from 1 (a log that starts
    mid-run does not say which). Where ``global_step`` pins the epochs trained (``epochs_trained``), only a
    count that agrees with it is read: equal, or one less when ``before`` (saved before the next epoch's
    step; outside a stack that saves so, an ``epoch`` field naming the next epoch, equal, counts too).

    False where no reading agrees, the story's steps do not fall one row at a time (stale or split
    stepping), or a later process starts the epochs again (its labels say the log's epochs are not one run's
    count)."""
    ck = ev.ck
    if ck is None or plan.stale or plan.lr_at or any(b.new_run for b in plan.boundaries):
        return False
    steps = ck.state.steps
    if not isinstance(steps, (int, float)) or not float(steps).is_integer():
        return False
    k = plan.k
    chain = set()
    i = anchor
    while i >= 0:
        chain.add(ops[i].row)
        i = ops[i].parent
    lost = (1 if plan.start_skip else 0) + sum(1 for b in plan.boundaries
                                               if b.skip and plan.rows[b.row] in chain)
    label = ops[anchor].label
    if not isinstance(label, (int, float)) or not math.isfinite(label) or not float(label).is_integer():
        return False
    trained = epochs_trained(ck)
    # gaps between the epochs trained and the epochs stepped that the reading allows
    gaps = {0}
    if before:
        gaps = {1} if stack_of(ev.framework).saves_before_step else {0, 1}
    allowed = set()
    for base in (0, 1):
        stepped = int(label) + 1 - base  # epochs up to the anchor row's, counted from the log's labels
        if trained is None or trained - stepped in gaps:
            allowed.add(k * (stepped - lost))
    return int(steps) in allowed


def _vacuous_start(ev: Evidence, plan: Plan) -> bool:
    """A log that starts right after the checkpoint, read as a resume that set the lr (a fresh optimizer, or by
    hand) to the lr the checkpoint already had: a mistake that changed nothing the evidence can see. A fresh
    optimizer below the checkpoint's lr is impossible too: its lr is the initial one, and the plateau scheduler
    only ever lowered the lr from there."""
    ck = ev.ck
    if plan.start_opt not in ("initial", "logged") or ck is None or ck.lrs is None or not plan.rows:
        return False
    logged = ev.logged_lr(plan.rows[plan.start_row])
    if not logged or len(logged) < len(ck.lrs) or any(iv is None for iv in logged[: len(ck.lrs)]):
        return False
    ivs = logged[: len(ck.lrs)]
    if plan.reduced_start:  # the lr the first epoch trained with, before its step reduced it
        ivs = tuple((lo / ev.config.factor, hi / ev.config.factor) for lo, hi in ivs)
    if all(lo <= v <= hi or math.isclose(v, lo, rel_tol=1e-9) or math.isclose(v, hi, rel_tol=1e-9)
           for v, (lo, hi) in zip(ck.lrs, ivs)):
        return True
    return plan.start_opt == "initial" and any(hi < v and not math.isclose(v, hi, rel_tol=1e-9)
                                               for v, (lo, hi) in zip(ck.lrs, ivs))


def _resume_source_mismatch(plan: Plan, ops: Sequence[Op], anchor: int, before_step: bool) -> bool:
    """The checkpoint sits at a resume's source row, but the resume did not continue from its state (it
    skipped a step the checkpoint had taken, or took one it had not)."""
    row = ops[anchor].row
    for b in plan.boundaries:
        if b.source is None:
            continue
        if b.speculative:
            # a resume nothing but the checkpoint points at resumed from the checkpoint's own state: the row
            # after whose step it was saved is the source (the row before it, for a resume that lost a step)
            resumed = b.source - 1 if b.skip else b.source
            if resumed < 0 or plan.rows[resumed] != row:
                return True
            continue
        s_row = plan.rows[b.source]
        prev_row = plan.rows[b.source - 1] if b.source > 0 else None
        if row == s_row and not before_step and b.skip:
            return True
        if row == prev_row and before_step and not b.skip:
            return True
    return False


def _next_labels(ops: Sequence[Op], i: int) -> set[float]:
    """The labels of the rows stepped right after op ``i`` from its state (by the same process, or by a
    process that resumed from it)."""
    return {op.label for op in ops[i + 1:] if op.parent == i and op.row != ops[i].row}


def _lr_penalties(sim: Simulation, pre: Sequence[int] = ()) -> dict[str, float]:
    n = len(sim.external) + len(sim.lr_mismatch_out) + len(pre)
    return {"unexplained lr changes": EXTERNAL * n} if n else {}


def _pre_start_changes(ev: Evidence, plan: Plan) -> tuple[int, ...]:
    """Rows before a late first step whose logged lr differs from the row before (no plateau step made it)."""
    if plan.start_row == 0 or ev.log.lrs is None:
        return ()
    out = []
    for pos in range(1, plan.start_row + 1):
        a, b = ev.log.lrs[plan.rows[pos - 1]], ev.log.lrs[plan.rows[pos]]
        if a is not None and b is not None and None not in a and None not in b and a != b:
            out.append(plan.rows[pos])
    return tuple(out)


def _epoch_field_penalty(ev: Evidence, ck_epoch: float | None, _i: int | None, plan: Plan, *,
                         before_log: bool) -> dict[str, float]:
    if ck_epoch is None or not plan.rows:
        return {}
    first = ev.label(plan.rows[plan.start_row])
    if first in (ck_epoch, ck_epoch + 1):
        return {}
    if first == ck_epoch + 2:
        return {"epoch field": ZERO_BASED_FIELD}
    return {"epoch field": EPOCH_FIELD}


# -- proposing stories -------------------------------------------------------------------------------------
def _k_candidates(ev: Evidence, rows: int) -> list[int]:
    ck = ev.ck
    if ck is None or not isinstance(ck.state.steps, (int, float)) or not float(ck.state.steps).is_integer():
        return [1]
    steps = int(ck.state.steps)
    # k steps per row that the checkpoint's own files point at (its stack's ``steps_per_row``), wherever it sits
    hint = stack_of(ev.framework).steps_per_row
    hinted = [k for k in dict.fromkeys(hint(ck) if hint is not None else ()) if 2 <= k <= 4096 and k <= steps]
    # a checkpoint saved before the log's first row (a log that starts after it): its epoch counter says how
    # many rows the run had then, 0- or 1-based (however few steps that is against the log's rows)
    by_epoch = []
    if ck.epoch is not None and float(ck.epoch).is_integer() and (
            ev.log.epoch_column is None or not ev.log.epochs or ck.epoch < min(ev.log.epochs)):
        for r in (int(ck.epoch) + 1, int(ck.epoch)):
            for k in (steps // r if r > 0 else 0, -(-steps // r) if r > 0 else 0):
                if 2 <= k <= 4096 and k * (r - 1) < steps <= k * r and k not in by_epoch:
                    by_epoch.append(k)
    # a log that starts mid-run: the checkpoint's epoch counts the run's rows before it too (0- or 1-based),
    # whole epochs of k steps each
    if ck.epoch is not None and float(ck.epoch).is_integer() and ev.log.epoch_column is not None \
            and ev.log.epochs and min(ev.log.epochs) > 1:
        for r in (int(ck.epoch) + 1, int(ck.epoch)):
            if r > 0 and steps % r == 0 and 2 <= steps // r <= 4096 and steps // r not in by_epoch:
                by_epoch.append(steps // r)
    # more steps than rows up to the checkpoint's own epoch (or in the whole log): several steps per row
    if rows == 0 or steps <= min(rows, _label_rows(ev, rows)):
        return [1, *by_epoch, *[k for k in hinted if k not in by_epoch]]
    ks = {1}
    for r in range(1, rows + 1):  # the checkpoint after row r, possibly mid-row: k(r-1) < steps <= k r
        for k in (steps // r, -(-steps // r)):
            if 2 <= k <= 4096 and k * (r - 1) < steps <= k * r:
                ks.add(k)
    # keep the few k whose row count is nearest a natural placement (the checkpoint's epoch, the last row)
    ranked = sorted(ks - {1}, key=lambda k: abs(math.ceil(steps / k) - _label_rows(ev, rows)))
    chosen = [*by_epoch, *[k for k in ranked if k not in by_epoch][:3]]
    return [1, *chosen, *[k for k in hinted if k not in chosen]]


def _label_rows(ev: Evidence, rows: int) -> int:
    ck = ev.ck
    if ck is not None and ck.epoch is not None and ev.log.epoch_column is not None:
        try:
            return ev.log.epochs.index(ck.epoch) + 1
        except ValueError:
            pass
    return rows


def _column_candidates(ev: Evidence) -> list[str | None]:
    ck = ev.ck
    if ck is None or not math.isfinite(ck.state.best):
        return [None]
    best = ck.state.best
    log = ev.log
    if any(lo <= best <= hi for lo, hi in (log.metric_interval(i) for i in range(len(log)))):
        return [None]
    out: list[str | None] = [None]
    for col, values in log.columns.items():
        if all(v is not None for v in values) and any(
                lo <= best <= hi for i in range(len(values))
                for lo, hi in [log.column_interval(col, i)]):  # type: ignore[misc]
            out.append(col)
    return out


def _proposals(ev: Evidence) -> list[Plan]:
    """Every story worth simulating for these inputs."""
    log = ev.log
    n = len(log)
    orders: list[tuple[tuple[int, ...], bool]] = [(tuple(range(n)), False)]
    if len(ev.file_starts) > 0 and log.epoch_column is not None:
        files = _files(n, ev.file_starts)
        by_first = sorted(files, key=lambda f: log.epochs[f[0]])
        if by_first != files:
            orders.append((tuple(r for f in by_first for r in f), True))
    plans: list[Plan] = []
    for rows, reordered in orders:
        starts = _file_starts_in(rows, ev.file_starts)
        restarts = _restarts(log, rows, starts)
        base_bounds = tuple(restarts)
        superseded = frozenset(
            rows[q] for b in restarts if b.source is not None and not b.new_run
            for q in range(b.source + 1, b.row))
        mid = log.epoch_column is not None and bool(rows) and log.epochs[rows[0]] > 1
        reason = "late" if ev.front_cut else "not-restored"
        bases = [Plan(rows, boundaries=base_bounds, k=k, column=column, lr_after=lr_after, lr_at=lr_at,
                      reordered=reordered, superseded=superseded, mid_run=mid, fresh_reason=reason)
                 for k in _k_candidates(ev, n) for column in _column_candidates(ev)
                 for lr_after in ((False, True) if ev.has_lr else (False,))
                 for lr_at in ((0, 1) if k > 1 and ev.has_lr and not lr_after else (0,))
                 ] + [Plan(rows, boundaries=base_bounds, k=k, column=None, lr_after=lr_after, stale=True,
                           reordered=reordered, superseded=superseded, mid_run=mid, fresh_reason=reason)
                      for k in _k_candidates(ev, n) if k > 1
                      for lr_after in ((False, True) if ev.has_lr else (False,))]
        # the conventions (k, column, lr after the step) first, on the plain story: only the plain ones and
        # those that explain the evidence best get their variants
        # (a log that starts mid-run, with a checkpoint: judged from the saved state and from an unknown one too)
        def judged(b: Plan) -> float:
            pen = evaluate(ev, b).evidence_penalty
            if b.mid_run and ev.ck is not None:
                pen = min(pen, evaluate(ev, replace(b, start="checkpoint")).evidence_penalty,
                          evaluate(ev, replace(b, start="unknown", start_opt="carry")).evidence_penalty)
            return pen

        scored = [(judged(b), i, b) for i, b in enumerate(bases)]
        least = min(p for p, _, _ in scored)
        for pen, i, b in scored:
            if i == 0 or pen <= least + 1e-9 or (b.k == 1 and b.column is None):
                plans.extend(_variants(ev, b))
            else:
                plans.append(b)
    return plans


def _files(n: int, file_starts: Sequence[int]) -> list[tuple[int, ...]]:
    cuts = [0, *file_starts, n]
    return [tuple(range(a, b)) for a, b in zip(cuts, cuts[1:]) if b > a]


def _file_starts_in(rows: Sequence[int], file_starts: Sequence[int]) -> list[int]:
    """The rows (log row indexes) where a file begins in the order ``rows`` reads them, the first excepted."""
    firsts = {0, *file_starts}
    return [r for p, r in enumerate(rows) if p > 0 and r in firsts]


MODES = (("carry", "carry"), ("fresh", "carry"), ("carry", "initial"), ("fresh", "initial"), ("carry", "logged"))


def _mode_ok(ev: Evidence, base: Plan, pos: int, opt: str) -> bool:
    """Whether a restore mode at row position ``pos`` makes a prediction the evidence could test: a hand-set
    lr needs a logged lr there; a fresh optimizer needs a known initial lr. (Whether it changed anything is
    decided after simulating: ``_vacuous``.)"""
    row = base.rows[pos]
    here = ev.log.lrs[row] if ev.log.lrs is not None else None
    if opt == "logged":
        return here is not None and here[0] is not None
    if opt == "initial":
        return _initial_lrs(ev, base)[0] is not None
    return True


def _variants(ev: Evidence, base: Plan) -> list[Plan]:
    """The base story and its variants: restore modes at each resume, where the first step was, how the log
    begins, and a resume the log does not show (after the checkpoint's row, or where last_epoch says)."""
    out = [base]
    modes = MODES + ((("partial", "carry"),) if ev.ck is not None and ev.ck.partial else ())
    # restore modes at each structural resume, one resume at a time (the others restored correctly)
    for idx, b in enumerate(base.boundaries):
        for sched, opt in modes:
            if not _mode_ok(ev, base, b.row, opt):
                continue
            for skip in (False, True):
                if (sched, opt, skip) == ("carry", "carry", False) or (skip and b.source is None):
                    continue
                nb = replace(b, sched=sched, opt=opt, skip=skip)
                out.append(replace(base, boundaries=base.boundaries[:idx] + (nb,) + base.boundaries[idx + 1:]))
        if len(base.boundaries) > 1:  # the same mistake at every resume (a script that always forgets)
            for sched, opt in MODES[1:]:
                if all(_mode_ok(ev, base, x.row, opt) for x in base.boundaries):
                    out.append(replace(base, boundaries=tuple(replace(x, sched=sched, opt=opt)
                                                              for x in base.boundaries)))
    out.extend(_start_variants(ev, base))
    out.extend(_silent_resumes(ev, base))
    return out


def _start_variants(ev: Evidence, base: Plan) -> list[Plan]:
    out = []
    log, ck = ev.log, ev.ck
    rows = base.rows
    if not rows:
        return out
    first = log.epochs[rows[0]]
    mid_run = log.epoch_column is not None and first > 1
    steps = ck.state.steps if ck is not None else None
    if ck is not None and (mid_run or (steps is not None and steps > base.k * len(rows))):
        unknown = replace(base, start="unknown", start_opt="carry")
        out.append(unknown)
        # what happened at the resume before the log cannot be seen in it: the same simulation, other stories
        # (and they compose: a fresh optimizer, or a hand-set lr, at a resume that lost a step)
        out += [replace(unknown, start_opt=opt, start_skip=skip) for skip in (False, True)
                for opt in ("carry", "initial", "logged") if (opt, skip) != ("carry", False)]
    if base.mid_run and base.start == "fresh" and base.start_row == 0 and base.fresh_reason == "late":
        out.append(replace(base, fresh_reason="not-restored"))
    if base.fresh_mid_run:
        # the unseen resume that did not restore the scheduler: whether it restored the optimizer cannot be
        # seen either (the lr the log starts with is all there is of it)
        out += [replace(base, start_opt="initial"), replace(base, start_opt="logged")]
    if ck is not None and ((ck.epoch is not None and ck.epoch < first) or (ck.epoch is None and mid_run)):
        for start in ("checkpoint", "checkpoint-fresh"):
            for opt in ("checkpoint", "initial", "logged"):
                if start == "checkpoint" or opt != "logged":
                    out.append(replace(base, start=start, start_opt=opt))
                    if opt == "initial" and base.lr_after and ev.has_lr:
                        # the lr column is after each step: the fresh optimizer's lr may be one the first
                        # step reduced (the first row then shows it times factor)
                        out.append(replace(base, start=start, start_opt=opt, start_reduced=True))
                    # the checkpoint held the state before its epoch's step (Lightning saves so): the resume
                    # lost that step (whatever it did to the lr)
                    if start == "checkpoint":
                        out.append(replace(base, start=start, start_opt=opt, start_skip=True))
    # the scheduler that wrote the checkpoint took its first step later than the log's first row
    structural = {b.row for b in base.boundaries if b.structural}
    for b0 in _fresh_start_rows(ev, base):
        if b0 <= 0 or b0 >= len(rows) or b0 in structural or any(
                b.row > b0 and b.source is not None and b.source < b0 for b in base.boundaries):
            # (a fresh scheduler where a new process starts is that resume's story: not restored, a new run; one
            # that a later resume went back past is undone by it, and that resume's fresh scheduler is the story)
            continue
        out.append(replace(base, start_row=b0, boundaries=tuple(b for b in base.boundaries if b.row > b0)))
        if not any(b.row == b0 for b in base.boundaries) and rows[b0] not in base.superseded:
            # a resume there with a fresh scheduler (last_epoch counts from it), the optimizer restored or not
            for opt in ("carry", "initial", "logged"):
                if opt == "carry" or _mode_ok(ev, base, b0, opt):
                    sil = Boundary(row=b0, source=b0 - 1, sched="fresh", opt=opt, structural=False, implied=True)
                    out.append(replace(base, boundaries=tuple(sorted((*base.boundaries, sil), key=lambda b: b.row))))
    return out


def _fresh_start_rows(ev: Evidence, base: Plan) -> list[int]:
    """Rows where a scheduler created fresh would have taken exactly ``last_epoch`` steps by a row that can
    hold the checkpoint (the checkpoint's epoch label, or any row when the log has no epochs)."""
    ck = ev.ck
    if ck is None or ck.partial:
        return []
    steps = ck.state.steps
    if not isinstance(steps, (int, float)) or not float(steps).is_integer() or steps <= 0:
        return []
    per = int(steps) // base.k if int(steps) % base.k == 0 else -(-int(steps) // base.k)
    out = set()
    rows = base.rows
    targets = []
    if ck.epoch is not None:
        targets = [p for p, r in enumerate(rows) if ev.log.epochs[r] in (ck.epoch, ck.epoch - 1)]
    if not targets:
        targets = list(range(len(rows)))
    for end in targets:
        b0 = end - per + 1
        if 0 < b0 <= end:
            out.add(b0)
    return sorted(out)[:4]


def _silent_resumes(ev: Evidence, base: Plan) -> list[Plan]:
    """A resume the log does not show: from the given checkpoint (the row after it; after a checkpoint saved
    before its epoch's step, the row after that epoch, with that step lost), or at the rows before the first
    logged lr a clean replay does not explain."""
    ck = ev.ck
    rows = base.rows
    cands: dict[int, bool] = {}  # position -> the resume skipped the source row's step
    both: set[int] = set()  # positions tried with and without the lost step
    from_checkpoint: set[int] = set()  # positions right after the checkpoint: a hand-set lr is plausible there
    probe = evaluate(ev, base)
    if ck is not None and probe.anchor_op is not None and probe.anchor_op >= 0:
        pos = rows.index(probe.ops[probe.anchor_op].row)
        if pos + 1 < len(rows):
            cands[pos + 1] = False
            from_checkpoint.add(pos + 1)
            both.add(pos + 1)  # the checkpoint may hold the state before this row's step: resumed, it lost one
        if probe.before_step and pos + 2 < len(rows):
            cands[pos + 2] = True
            from_checkpoint.add(pos + 2)
    # the checkpoint took fewer steps than the log has rows up to its epoch: a resume lost one
    lost = ck is not None and isinstance(ck.state.steps, (int, float)) and \
        ck.state.steps < _label_rows(ev, len(rows)) * base.k
    for i in probe.sim.external[:2]:
        pos = rows.index(probe.ops[i].row)
        lo = max(1, pos - (ev.config.patience + ev.config.cooldown + 2))
        for q in range(lo, pos + 1):
            cands.setdefault(q, False)
    extra_skips = {q for q, skip in cands.items() if not skip and q >= 2} if lost else set()
    structural = {b.row for b in base.boundaries}
    out = []
    items = sorted(cands.items()) + [(q, True) for q in sorted(extra_skips | both) if not cands.get(q)]
    for pos, skip in items:
        if pos in structural or pos <= base.start_row or rows[pos] in base.superseded:
            # (a resume inside rows that a later process logged again changes nothing that process did)
            continue
        src = pos - 1
        modes = (MODES if skip else MODES[1:]) + ((("partial", "carry"),) if ck is not None and ck.partial else ())
        for sched, opt in modes:
            if not _mode_ok(ev, base, pos, opt):
                continue
            b = Boundary(row=pos, source=src, sched=sched, opt=opt, skip=skip, structural=False,
                         speculative=pos in from_checkpoint)
            out.append(replace(base, boundaries=tuple(sorted((*base.boundaries, b), key=lambda x: x.row))))
    return out


def without(plan: Plan, component: str) -> Plan | None:
    """The story a user meant to run, for one component of ``plan``: that mistake or convention undone."""
    if component in ("scheduler-not-restored", "optimizer-not-restored", "lr-overwritten", "weights-only-resume",
                     "resume-skipped-step", "partial-restore"):
        bounds = []
        for b in plan.boundaries:
            if component in b.components:
                if not b.structural:
                    continue  # a resume the log does not show: undone, there was none
                if component == "resume-skipped-step":
                    b = replace(b, skip=False)
                elif component == "optimizer-not-restored" or component == "lr-overwritten":
                    b = replace(b, opt="carry")
                elif component in ("scheduler-not-restored", "partial-restore"):
                    b = replace(b, sched="carry")
                else:
                    b = replace(b, sched="carry", opt="carry")
            bounds.append(b)
        start, start_opt, skip = plan.start, plan.start_opt, plan.start_skip
        if plan.start == "checkpoint-fresh" and component == "scheduler-not-restored":
            start = "checkpoint"
        if component == "scheduler-not-restored" and plan.start == "fresh" and plan.mid_run \
                and plan.fresh_reason == "not-restored" and plan.start_row == 0:
            start = "unknown"
            start_opt = "carry"
        if plan.start.startswith("checkpoint") and component in ("optimizer-not-restored", "lr-overwritten"):
            start_opt = "checkpoint"
        if plan.start == "unknown" and component in ("optimizer-not-restored", "lr-overwritten"):
            start_opt = "carry"
        if plan.fresh_mid_run and component in ("optimizer-not-restored", "lr-overwritten"):
            start_opt = "checkpoint"
        if plan.start == "unknown" and component == "resume-skipped-step":
            skip = False
        return replace(plan, boundaries=tuple(bounds), start=start, start_opt=start_opt, start_skip=skip)
    if component == "steps-per-row":
        return replace(plan, k=1, lr_at=0, stale=False)
    if component == "wrong-metric":
        return replace(plan, column=None)
    if component == "lr-logged-after-step":
        return replace(plan, lr_after=False)
    if component == "scheduler-started-late":
        return replace(plan, start_row=0)
    return None


def failures(ev: Evidence, e: Evaluation, limit: int = 3) -> list[str]:
    """What a story fails to explain, in words with the numbers (the evidence against it)."""
    out = []
    ck = ev.ck
    if "checkpoint not placed" in e.penalties and ck is not None:
        out.append(f"no row reproduces the saved state (best={ck.state.best:.6g}, num_bad_epochs="
                   f"{ck.state.num_bad_epochs}, cooldown_counter={ck.state.cooldown_counter})")
    if "last_epoch" in e.penalties and ck is not None and e.anchor_op is not None and e.anchor_op >= 0:
        have = e.last_epochs[e.anchor_op]
        out.append(f"the checkpoint has last_epoch={ck.state.last_epoch}; this story gives {have} at epoch "
                   f"{e.ops[e.anchor_op].label}")
    if "checkpoint lr" in e.penalties and ck is not None and ck.lrs is not None:
        out.append(f"the checkpoint's optimizer lr is {_fmt(ck.lrs)}; this story gives another at epoch "
                   f"{e.ops[e.anchor_op].label if e.anchor_op is not None and e.anchor_op >= 0 else '?'}")
    for i in sorted({*e.sim.external, *e.sim.lr_mismatch_out})[:limit]:
        op = e.ops[i]
        logged = op.lr_in if i in e.sim.external else op.lr_out
        expected = [x for x in e.sim.lr_expected.get(i, ()) if x is not None]
        got = _fmt(_mid(logged)) if logged else "?"
        want = " or ".join(_fmt(x) for x in expected[:2]) if expected else "?"
        out.append(f"at epoch {op.label} the log has lr {got} where this story gives {want}")
    return out


def _fmt(lrs: Sequence[float]) -> str:
    return ", ".join(f"{v:.6g}" for v in lrs) if len(lrs) == 1 else "[" + ", ".join(f"{v:.6g}" for v in lrs) + "]"


# -- the verdict -------------------------------------------------------------------------------------------
def explain(ev: Evidence) -> Verdict:
    """Simulate every proposed story and pick the one that explains the evidence best."""
    evaluations = [x for p in dict.fromkeys(_proposals(ev)) for e in [evaluate(ev, p)]
                   for x in (e, *e.other_placements)]
    evaluations = [e for e in evaluations if _admissible(ev, e, evaluations)]
    evaluations.sort(key=lambda e: (e.score, e.plan.cost, len(e.components)))
    win = evaluations[0]
    alts: dict[tuple[str, ...], Evaluation] = {}
    unverifiable: dict[tuple[str, ...], Evaluation] = {}
    moved: dict[tuple[str, ...], Evaluation] = {}
    win_row = win.ops[win.anchor_op].row if win.anchor_op is not None and win.anchor_op >= 0 else None
    # the same story read another way as well (another resume row, ...); not one that adds resumes nothing
    # shows where the winner needs none (a printed "Resuming from" line places the resume)
    equals = [e for e in evaluations[1:] if e.story == win.story and e is not win
              and abs(e.evidence_penalty - win.evidence_penalty) <= 1e-9 and e.score <= win.score + ALTERNATIVE_MARGIN
              and e.anchor_op is not None and e.anchor_op >= 0 and e.ops[e.anchor_op].row == win_row
              and (silent_resumes(e.plan) <= silent_resumes(win.plan) or not ev.file_starts)]
    for e in evaluations[1:]:
        if e.story == win.story or e.story in alts:
            continue
        # a story that explains more of the evidence is always an alternative (the winner won on priors); one
        # that explains as much, if it does not assume much more, or if it is the winner's twin
        fits_better = e.evidence_penalty < win.evidence_penalty - 1e-9
        fits_as_well = abs(e.evidence_penalty - win.evidence_penalty) <= 1e-9 and (
            e.score <= win.score + ALTERNATIVE_MARGIN or _twins(win, e))
        if (fits_better or fits_as_well) and _distinct(ev, win, e) and not _relabelled_external(win, e):
            if _only_speculative(win.plan, e.plan):
                unverifiable.setdefault(e.story, e)
            elif fits_as_well and _moved_resume(win, e):
                moved.setdefault(e.story, e)
            else:
                alts[e.story] = e
    return Verdict(
        story=win.story, alternatives=tuple(alts), decide=_decide(ev, win, list(alts.values())),
        unverifiable=tuple(s for s in unverifiable if s not in alts),
        explained=tuple(_explained(ev, win)), unexplained=tuple(f"{k}" for k in win.penalties),
        evaluation=win, others=tuple(alts.values()), evidence=ev, equals=tuple(equals[:8]),
        moved=tuple(e for s, e in moved.items() if s not in alts)[:8])


def silent_resumes(plan: Plan) -> int:
    """The resumes ``plan`` assumes that the log does not show (no new file, no restart line, no epoch going
    back)."""
    return sum(1 for b in plan.boundaries if not b.structural and not b.implied
               and not (b.speculative and b.opt != "carry"))


def unpointed_resumes(plan: Plan) -> int:
    """The resumes ``plan`` assumes that nothing in the inputs points at: not shown by the log, and not from
    the checkpoint (a speculative resume resumes from its state)."""
    return sum(1 for b in plan.boundaries if not b.structural and not b.implied and not b.speculative)


def _admissible(ev: Evidence, e: Evaluation, all_evals: Sequence[Evaluation]) -> bool:
    """Conventions (k steps per row, another column, the lr logged after the step) must earn their place: a
    story with one is kept only if it explains the evidence strictly better than every story without it."""
    p = e.plan
    flags = [lambda q: q.k != 1, lambda q: q.column is not None, lambda q: q.lr_after]
    for has in flags:
        if not has(p):
            continue
        without = [o for o in all_evals if not has(o.plan)]
        best_fit = min((o.fit for o in without), default=math.inf)
        best_score = min((o.score for o in without), default=math.inf)
        if not (e.fit < best_fit - 1e-9 or e.score < best_score - 1e-9):
            return False
    return True


def _twins(a: Evaluation, b: Evaluation) -> bool:
    """Stories with the same simulation that the evidence cannot tell apart: a fresh optimizer and an lr set by
    hand to the initial lr at the same resume; what the unseen resume before a log that starts mid-run did to
    the lr (and, from an unknown state, whether it lost a step)."""
    unseen = [p.start == "unknown" or p.fresh_mid_run for p in (a.plan, b.plan)]
    if all(unseen) and replace(a.plan, start_opt="carry", start_skip=False) == \
            replace(b.plan, start_opt="carry", start_skip=False):
        return True
    if len(a.plan.boundaries) != len(b.plan.boundaries) or a.initial_lrs is None:
        return False
    differ = [(x, y) for x, y in zip(a.plan.boundaries, b.plan.boundaries) if x != y]
    if len(differ) != 1:
        return False
    x, y = differ[0]
    if {x.opt, y.opt} != {"initial", "logged"} or replace(x, opt="carry") != replace(y, opt="carry"):
        return False
    logged_op = next((op for op in (a if x.opt == "logged" else b).ops if op.lr_set is not None), None)
    return logged_op is not None and _close_lrs(logged_op.lr_set, a.initial_lrs[: len(logged_op.lr_set)])


def _relabelled_external(win: Evaluation, alt: Evaluation) -> bool:
    """``alt`` is ``win`` with some of its unexplained lr changes put down to an lr set by hand at resumes the
    log does not show, while it still needs unexplained changes elsewhere: a writer of the lr outside the
    scheduler is assumed either way, and the added resumes explain nothing that writer does not."""
    if "external-lr-change" not in win.components or "external-lr-change" not in alt.components:
        return False
    if set(alt.components) ^ set(win.components) != {"lr-overwritten"}:
        return False
    extra = [b for b in alt.plan.boundaries if b not in win.plan.boundaries]
    return bool(extra) and all(not b.structural and b.opt == "logged" for b in extra) and replace(
        alt.plan, boundaries=tuple(b for b in alt.plan.boundaries if b not in extra)) == win.plan


def _only_speculative(win: Plan, alt: Plan) -> bool:
    """``alt`` is ``win`` plus resumes nothing points at (only the checkpoint's row)."""
    extra = [b for b in alt.boundaries if b not in win.boundaries]
    return bool(extra) and all(b.speculative for b in extra) and replace(
        alt, boundaries=tuple(b for b in alt.boundaries if b not in extra)) == win


def _moved_resume(win: Evaluation, alt: Evaluation) -> bool:
    """``alt`` names the winner's mistakes and differs only in how the inputs were produced, by a resume at a row
    nothing points at where the winner's resumes come from the checkpoint or show in the log (a lost step
    somewhere before the checkpoint rather than at it): a reading the inputs cannot rule out, not another
    story a user would act on."""
    return unpointed_resumes(alt.plan) > unpointed_resumes(win.plan) and not (
        (set(win.components) ^ set(alt.components)) & WARNING_STORIES)


def _distinct(ev: Evidence, win: Evaluation, alt: Evaluation) -> bool:
    """An alternative differs from the winner in something a user would act on (not only in an info-level
    convention the evidence cannot see)."""
    return set(win.components) != set(alt.components)


def _decide(ev: Evidence, win: Evaluation, alts: Sequence[Evaluation]) -> str:
    """The input that would tell the winner from its alternatives."""
    if not alts:
        return ""
    differing: set[str] = set()
    for a in alts:
        differing |= set(win.components) ^ set(a.components)
    hints = []
    late = {"scheduler-started-late", "log-starts-mid-run"}
    resume_codes = {"scheduler-not-restored", "optimizer-not-restored", "lr-overwritten", "weights-only-resume"}
    if differing & late:
        start = ev.label(win.plan.rows[win.plan.start_row]) if win.plan.rows else "?"
        first = next((ev.label(win.plan.rows[b.row]) for e in (win, *alts) for b in e.plan.boundaries
                      if not b.structural), start)
        hints.append(f"say whether the run was resumed at epoch {first} (or give the earlier run's log and "
                     "checkpoint)")
    if differing == {"optimizer-not-restored", "lr-overwritten"}:
        hints.append("check whether the resume code loads optimizer.state_dict() or assigns param_group['lr']: "
                     "both leave the same lrs")
    elif differing & resume_codes - late:
        if not ev.has_lr:
            hints.append("log the lr every epoch")
        anchor_row = win.ops[win.anchor_op].row if win.anchor_op is not None and win.anchor_op >= 0 else None
        resumes = [b.row for e in (win, *alts) for b in e.plan.boundaries]
        if anchor_row is not None and resumes and all(win.plan.rows.index(anchor_row) < r for r in resumes):
            hints.append("give a checkpoint saved after the resume")
    if differing & {"steps-per-row", "wrong-metric"}:
        hints.append("log every value passed to scheduler.step()")
    if not ev.log.precision_of(ev.log.metric_column).exact and any(win.sim.undecided):
        hints.append("log the metric with repr() (full precision)")
    return "; ".join(dict.fromkeys(hints)) or "log the lr and every value passed to scheduler.step()"


def _explained(ev: Evidence, e: Evaluation) -> list[str]:
    out = []
    ck = ev.ck
    if ck is not None and e.anchor_op is not None and "checkpoint not placed" not in e.penalties:
        what = "best" if ck.partial else "best, num_bad_epochs, cooldown_counter"
        if "last_epoch" not in e.penalties:
            what += ", last_epoch"
        if "checkpoint lr" not in e.penalties and ck.lrs is not None:
            what += ", the optimizer lr"
        out.append(f"the checkpoint's {what}")
    if ev.has_lr:
        logged = sum(1 for op in e.ops if op.lr_in is not None or op.lr_out is not None)
        bad = len(e.sim.external) + len(e.sim.lr_mismatch_out)
        out.append(f"{logged - bad} of {logged} logged lrs")
    return out


def evidence_for(ck: Checkpoint | None, log: LossLog, config: PlateauConfig, *, lr_option: Sequence[float] | None,
                 n_groups: int | None = None, front_cut: bool = False) -> Evidence:
    """The evidence of a checkpoint (or None) and a log, ready for ``explain``."""
    groups = n_groups
    if groups is None:
        if ck is not None and ck.lrs is not None:
            groups = len(ck.lrs)
        elif lr_option:
            groups = len(lr_option)
        elif log.lrs is not None and log.lrs:
            groups = len(log.lrs[0])
        else:
            groups = 1
    dtypes = tuple(ck.lr_dtypes) if ck is not None and ck.lr_dtypes else (None,) * groups
    return Evidence(config=config, log=log, ck=ck, n_groups=groups, lr_dtypes=dtypes,
                    lr_option=tuple(lr_option) if lr_option else None, file_starts=tuple(log.boundaries),
                    framework=ck.framework if ck is not None else "torch", front_cut=front_cut)


def clean_replay_lrs(config: PlateauConfig, metrics: Sequence[float], lrs: Sequence[float]) -> tuple[float, ...]:
    """The lrs after an exact replay of ``metrics`` (a helper for inferring initial lrs)."""
    t = run(config, metrics, lrs, strict=False)
    return t.lrs
