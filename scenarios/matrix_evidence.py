"""What a cell's inputs show, and whether its story can be told from them.

``observables`` is the evidence a story predicts (the printed lr column, the given checkpoint's scheduler
state and optimizer lr, the epoch labels), never the metric values themselves (those are the data every story
is run on). ``counterfactuals`` re-runs a real ReduceLROnPlateau over the same fed metrics under the other
stories (scheduler restored instead of fresh, one step per row, val_loss fed, no warm-up, ...); a cell is
written only when every story other than its own (and the ones it is declared ambiguous with) predicts other
evidence. ``determinable`` says which rows after the checkpoint a careful reader of these inputs can know
exactly.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from matrix_record import plateau_state
from matrix_styles import Style, decimals, fmt_lr
from torch.optim.lr_scheduler import ReduceLROnPlateau

MISTAKES = {"fresh": "scheduler-not-restored", "initial": "optimizer-not-restored", "X": "lr-overwritten"}


# --------------------------------------------------------------------------------------------------
# a real scheduler over given metrics (the counterfactual runs)


class SimScheduler:
    """A real ReduceLROnPlateau on a one-parameter SGD, built the way the training scripts build theirs."""

    def __init__(self, cfg: dict, initial_lr: float, lr: float | None = None, state: dict | None = None):
        self.param = torch.nn.Parameter(torch.zeros(1))
        self.opt = torch.optim.SGD([self.param], lr=initial_lr)
        self.sched = ReduceLROnPlateau(self.opt, **cfg)
        if lr is not None:  # optimizer.load_state_dict after the scheduler was constructed
            self.opt.param_groups[0]["lr"] = lr
        if state is not None:
            self.sched.load_state_dict(copy.deepcopy(state))

    @property
    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    def step(self, metric: float) -> None:
        self.sched.step(metric)

    def observe(self) -> tuple:
        """The checkpoint evidence of this moment (decision fields, ``_last_lr``, optimizer lr)."""
        s = plateau_state(self.sched)
        return (
            s["best"],
            s["num_bad_epochs"],
            s["cooldown_counter"],
            s["last_epoch"],
            tuple(self.sched._last_lr),
            (self.lr,),
        )


def snapshot_obs(snap: Any) -> tuple:
    """``SimScheduler.observe`` of a live snapshot."""
    sd = snap.ckpt["scheduler"]
    s = plateau_state(sd)
    return (
        s["best"],
        s["num_bad_epochs"],
        s["cooldown_counter"],
        s["last_epoch"],
        tuple(sd["_last_lr"]),
        tuple(snap.opt_lr),
    )


@dataclass
class SimRun:
    """Per-row lrs and per-snapshot evidence of one counterfactual run."""

    lr_used: dict[tuple[int, int], float]
    lr_end: dict[tuple[int, int], float]
    snaps: dict[tuple[int, int, str], tuple]
    states: dict[tuple[int, int, str], tuple[dict, float]]


@dataclass(frozen=True)
class Counterfactual:
    """Another story for the same run: how it would have stepped over the same fed metrics."""

    stories: frozenset[str]
    fed: Callable[[Any, Any], list[float]]  # (run, row) -> metrics stepped during that row
    during_training: bool = False  # the row's steps happen in the batch loop (before a "before" snapshot)
    b_sched: str | None = None  # fresh | restored (None: what process B really did)
    b_lr: str | None = None  # ckpt | initial | X (None: what process B really did)
    skip: bool = False  # B never steps the checkpoint epoch's metric (resumed from a before-step checkpoint)
    save: str = "after"  # whole-run simulations: which snapshot process B resumes from
    whole_run: bool = False  # False: process A is the live one, only process B is re-run


def live_fed(run: Any, row: Any) -> list[float]:
    """The metrics that were really stepped during ``row``."""
    return [run.history[i]["metric"] for i in row.steps]


def once_val(run: Any, row: Any) -> list[float]:
    """One step per row with that row's val_loss: the textbook loop."""
    return [row.val_loss]


def actual_b(run: Any) -> tuple[str, str]:
    """(scheduler, lr) of process B as the run really resumed."""
    res = run.resume
    lr = "X" if res.lr_set_to is not None else ("initial" if res.optimizer == "fresh" else "ckpt")
    return res.scheduler, lr


def _rows(sim: SimScheduler, run: Any, rows: list[Any], cf: Counterfactual, out: SimRun) -> None:
    for r in rows:
        key = (r.process, r.epoch)
        out.lr_used[key] = sim.lr
        fed = cf.fed(run, r)
        if cf.during_training:
            for m in fed:
                sim.step(m)
        out.snaps[(*key, "before")] = sim.observe()
        keep = r.process == 0 and r.epoch == run.resume_epoch  # the state process B resumes from
        if keep:
            out.states[(*key, "before")] = copy.deepcopy(sim.sched.state_dict()), sim.lr
        if not cf.during_training:
            for m in fed:
                sim.step(m)
        out.snaps[(*key, "after")] = sim.observe()
        if keep:
            out.states[(*key, "after")] = copy.deepcopy(sim.sched.state_dict()), sim.lr
        out.lr_end[key] = sim.lr


def simulate(run: Any, cf: Counterfactual, cfg: dict, initial_lr: float) -> SimRun:
    """Run ``cf`` over ``run``'s rows; process A is taken from the live run unless ``cf.whole_run``."""
    out = SimRun({}, {}, {}, {})
    a_rows = [r for r in run.rows if r.process == 0]
    if cf.whole_run:
        _rows(SimScheduler(cfg, initial_lr), run, a_rows, cf, out)
        if len(run.processes) == 1:
            return out
        state, ckpt_lr = out.states[(0, run.resume_epoch, cf.save)]
        loaded_before, skip = cf.save == "before", cf.save == "before"
    else:
        for r in a_rows:
            out.lr_used[(0, r.epoch)], out.lr_end[(0, r.epoch)] = r.lr_used[0], r.lr_end[0]
        for key, snap in run.snapshots.items():
            if key[0] == 0:
                out.snaps[key] = snapshot_obs(snap)
        key = run.processes[1].resumed_from
        if cf.skip and run.knobs.save == "after":
            # a run that saves after the step, resumed instead from the same epoch's state before its step
            key = (*key[:2], "before")
        snap = run.snapshots[key]
        state, ckpt_lr = snap.ckpt["scheduler"], snap.opt_lr[0]
        loaded_before, skip = run.knobs.save == "before" or cf.skip, cf.skip
    if run.resume.weights_only and cf.b_sched is None:
        sim = SimScheduler(cfg, initial_lr)
    else:
        b_sched, b_lr = actual_b(run)
        b_sched, b_lr = cf.b_sched or b_sched, cf.b_lr or b_lr
        lr = {"ckpt": ckpt_lr, "initial": initial_lr, "X": run.resume.lr_set_to}[b_lr]
        sim = SimScheduler(cfg, initial_lr, lr, state if b_sched == "restored" else None)
        if loaded_before and not skip:
            ck_row = next(r for r in a_rows if r.epoch == run.resume_epoch)
            for m in cf.fed(run, ck_row):  # the checkpoint epoch's step, taken by the resumed process
                sim.step(m)
    _rows(sim, run, [r for r in run.rows if r.process == 1], cf, out)
    return out


def counterfactuals(run: Any, family_stories: frozenset[str]) -> list[Counterfactual]:
    """The other stories this run could be mistaken for, each as a re-run over the same metrics."""
    kn = run.knobs
    during = kn.per_batch
    whole = {
        s
        for s in family_stories
        if s
        in ("saved-before-step", "steps-per-row", "duplicate-epochs", "wrong-metric", "external-lr-change")
    }
    out: list[Counterfactual] = []
    if run.resume is not None and not run.resume.weights_only:
        lrs = ["ckpt", "initial"] + (["X"] if run.resume.lr_set_to is not None else [])
        # a lost step: the resume came from a checkpoint saved before its epoch's step (for a run that saves
        # after the step, one saved before it in the same epoch; one step per row, stepped after the epoch)
        skips = [True, False] if kn.save == "before" or (kn.k == 1 and not kn.per_batch) else [False]
        for sched in ("restored", "fresh"):
            for lr in lrs:
                for skip in skips:
                    stories = set(whole)
                    if sched == "fresh":
                        stories.add(MISTAKES["fresh"])
                    if lr != "ckpt":
                        stories.add(MISTAKES[lr])
                    if skip:
                        stories.add("resume-skipped-step")
                    out.append(Counterfactual(frozenset(stories), live_fed, during, sched, lr, skip))
    if run.resume is not None and run.resume.weights_only:
        # the new run's epochs restart: it may instead have restored the scheduler (and the optimizer) and only
        # restarted its epoch loop (a resume that forgot its start epoch)
        rest = set(whole)
        out.append(Counterfactual(frozenset(rest), live_fed, during, "restored", "ckpt"))
        out.append(Counterfactual(frozenset(rest | {MISTAKES["initial"]}), live_fed, during, "restored", "initial"))
        out.append(Counterfactual(frozenset(rest | {"weights-only-resume"}), live_fed, during, "fresh", "ckpt"))
    if kn.k > 1 or kn.per_batch:
        out.append(Counterfactual(family_stories - {"steps-per-row"}, once_val, whole_run=True, save=kn.save))
    if kn.fed != "val_loss":
        out.append(Counterfactual(family_stories - {"wrong-metric"}, once_val, whole_run=True, save=kn.save))
    if kn.save == "before":
        rest = family_stories - {"saved-before-step", "resume-skipped-step"}
        out.append(Counterfactual(frozenset(rest), live_fed, during, whole_run=True, save="after"))
    if kn.external is not None:
        out.append(
            Counterfactual(
                family_stories - {"external-lr-change"}, live_fed, during, whole_run=True, save=kn.save
            )
        )
    return out


# --------------------------------------------------------------------------------------------------
# the evidence of one cell


def observables(
    given: list[Any],
    style: Style,
    lr_used: Callable[[Any], float],
    lr_end: Callable[[Any], float],
    ckpt_obs: tuple,
) -> tuple:
    """The evidence a story predicts: labels, the printed lr column, the given checkpoint's state and lr.

    Without an lr column nothing in the inputs says what the initial lr was, and every plateau lr is the
    initial lr times a power of the factor: only the ratio of the checkpoint's lrs (``_last_lr`` against the
    optimizer's) is evidence then, not their values.
    """
    labels = tuple((r.process, r.epoch - 1 + style.epoch_base) for r in given)
    if style.lr is None:
        *state, last_lr, opt_lr = ckpt_obs
        return labels, (), (*state, tuple(a / b for a, b in zip(last_lr, opt_lr, strict=True)))
    pick = lr_used if style.lr == "before" else lr_end
    return labels, tuple(fmt_lr(pick(r), style) for r in given), ckpt_obs


def actual_observables(run: Any, given: list[Any], style: Style, ckpt_key: tuple) -> tuple:
    """``observables`` of the live run."""
    return observables(
        given, style, lambda r: r.lr_used[0], lambda r: r.lr_end[0], snapshot_obs(run.snapshots[ckpt_key])
    )


def cf_observables(sim: SimRun, given: list[Any], style: Style, ckpt_key: tuple) -> tuple:
    """``observables`` of a counterfactual run."""
    return observables(
        given,
        style,
        lambda r: sim.lr_used[(r.process, r.epoch)],
        lambda r: sim.lr_end[(r.process, r.epoch)],
        sim.snaps[ckpt_key],
    )


def moved_resume_open(
    run: Any, given: list[Any], style: Style, ckpt_key: tuple, cfg: dict, initial_lr: float
) -> dict[tuple[int, int], tuple[bool, bool]]:
    """Rows whose state (and lr) the inputs leave open because the resume could have happened elsewhere.

    For a resume the given inputs do not show (one file, epochs going on: the caller says), the same resume,
    with the same mistake, moved to another epoch ``m`` (the run going on correctly until then) is re-run with
    a real scheduler over the same fed metrics. Where such a re-run reads the same in every input (labels,
    the printed lr column, the given checkpoint), the rows whose state or lr after their step differs from the
    live run's are not determined by the inputs: ``{(process, epoch): (state open, lr open)}``. Only the
    simple loop is re-run (one step per row on its val_loss, no other lr writer, no crash re-logging).
    """
    res, kn = run.resume, run.knobs
    if res is None or res.weights_only or res.crash_extra or kn.k != 1 or kn.per_batch or kn.external \
            or kn.fed != "val_loss" or len(run.processes) != 2:
        return {}
    rows = sorted((r for r in run.rows if not r.superseded), key=lambda r: r.epoch)
    b_first = run.resume_epoch + 1
    lost = kn.save == "before"  # resumed from a checkpoint saved before its epoch's step: that step is lost
    b_sched, b_lr = actual_b(run)
    actual = actual_observables(run, given, style, ckpt_key)
    live_states = {(r.process, r.epoch): (plateau_state(run.history[r.steps[-1]]["state_after"])
                                          if r.steps else None, r.lr_end[0]) for r in rows}
    out: dict[tuple[int, int], tuple[bool, bool]] = {}
    for m in range(2, rows[-1].epoch + 1):
        if m == b_first:
            continue
        sim = SimScheduler(cfg, initial_lr)
        lr_used, lr_end, snaps, states = {}, {}, {}, {}
        saved: tuple[dict, float] | None = None
        for r in rows:
            if r.epoch == m:  # the moved resume: from the state saved in epoch m - 1
                assert saved is not None
                state, carried = saved
                lr = {"ckpt": carried, "initial": initial_lr, "X": res.lr_set_to}[b_lr]
                sim = SimScheduler(cfg, initial_lr, lr, state if b_sched == "restored" else None)
            lr_used[r.epoch] = sim.lr
            snaps[(r.epoch, "before")] = sim.observe()
            if r.epoch == m - 1 and lost:
                saved = copy.deepcopy(sim.sched.state_dict()), sim.lr
            sim.step(r.val_loss)
            if r.epoch == m - 1 and not lost:
                saved = copy.deepcopy(sim.sched.state_dict()), sim.lr
            snaps[(r.epoch, "after")] = sim.observe()
            states[r.epoch] = plateau_state(sim.sched), sim.lr
            lr_end[r.epoch] = sim.lr
        key = (ckpt_key[1], ckpt_key[2])
        if key not in snaps:
            continue
        seen = observables(given, style, lambda r: lr_used[r.epoch], lambda r: lr_end[r.epoch], snaps[key])
        if seen != actual:
            continue
        for r in rows:
            live, live_lr = live_states[(r.process, r.epoch)]
            st, lr = states[r.epoch]
            fields = ("best", "num_bad_epochs", "cooldown_counter")
            state_open = live is not None and any(st[f] != live[f] for f in fields)
            was = out.get((r.process, r.epoch), (False, False))
            out[(r.process, r.epoch)] = (was[0] or state_open, was[1] or lr != live_lr)
    return {k: v for k, v in out.items() if v[0] or v[1]}


# --------------------------------------------------------------------------------------------------
# which rows after the checkpoint the inputs determine


def _interval(token: str | None, value: float, style: Style, column: str) -> tuple[float, float]:
    """The values a printed token stands for (a point for exact text)."""
    d = decimals(style, column)
    if token is None or d is None:
        return value, value
    v, h = float(token), 0.5 * 10.0 ** (-d)
    return v - h, v + h


def _better(m: tuple[float, float], b: tuple[float, float], cfg: dict) -> bool | None:
    """torch's is_better for mode='min', threshold_mode='rel', decided over intervals (None: undecidable)."""
    assert cfg["mode"] == "min" and cfg["threshold_mode"] == "rel", cfg
    f = 1.0 - cfg["threshold"]
    if math.isinf(b[0]) and b[0] > 0:
        return True
    if m[1] < b[0] * f:
        return True
    if m[0] >= b[1] * f:
        return False
    return None


def determinable(
    run: Any,
    given: list[Any],
    style: Style,
    ckpt_key: tuple,
    cfg: dict,
    fed_column: str,
    tokens: dict[int, dict[str, str]],
    open_rows: dict[tuple[int, int], tuple[bool, bool]] | None = None,
) -> dict[int, dict[str, Any]]:
    """Per given row after the checkpoint (keyed by ``id``): which of its fields the inputs determine.

    The state is determinable while every comparison since the checkpoint is decided by the printed values'
    rounding intervals (a value compared with itself is decided exactly) and every fed value is in the given
    rows; the lr while it follows from a known lr by plateau reductions, or is printed with ``repr`` where it
    came from elsewhere (a fresh optimizer, code that set it), and never without an lr column in a run whose lr
    another writer changes (nothing shows when it acts). ``open_rows`` (``moved_resume_open``): rows a resume
    the inputs do not show leaves open. ``best_logged`` is the printed text of ``best``
    when it is only known to the log's precision.
    """
    snap = run.snapshots[ckpt_key]
    hi = snap.history_index if snap.history_index is not None else -1
    given_ids = {id(r) for r in given}
    by_key = {(r.process, r.epoch): r for r in run.rows if not r.superseded}
    f = 1.0 - cfg["threshold"]
    lr_column_shows_repr = any(_significant(tokens.get(id(r), {}).get("lr")) >= 12 for r in given)
    out: dict[int, dict[str, Any]] = {}
    for proc in run.processes:
        if proc.index == ckpt_key[0]:
            start, expected_lr = snap.ckpt["scheduler"], snap.opt_lr[0]
        elif proc.resumed_from == ckpt_key or proc.scheduler == "fresh":
            restored = proc.scheduler == "restored"
            start = snap.ckpt["scheduler"] if restored else {"best": math.inf}
            expected_lr = (
                snap.opt_lr[0] if proc.optimizer == "restored" and proc.resumed_from == ckpt_key else None
            )
        else:
            continue
        best_exact = float(start["best"])
        best_iv, best_id = (best_exact, best_exact), ("ckpt",)
        ok, lr_known, prev_end = True, True, expected_lr
        first = True
        for r in (r for r in run.rows if r.process == proc.index and not r.superseded):
            if not r.steps or min(r.steps) <= hi:
                prev_end = r.lr_end[0]
                continue
            if first or r.lr_used[0] != prev_end:  # an lr no plateau step made: known if printed
                tok = tokens.get(id(r), {}).get("lr")
                live = r.lr_used[0] if style.lr == "before" else r.lr_end[0]
                # only repr text pins the exact value: "0.0100" or "0.01" stand for an interval of lrs, and so
                # does repr text when no lr text of the given rows shows it is repr (a short "0.00125" reads the
                # same as "%g")
                printed = (
                    tok is not None
                    and style.lr_float == "repr"
                    and lr_column_shows_repr
                    and float(tok) == live
                    and (style.lr == "before" or r.lr_end[0] == r.lr_used[0])
                )
                lr_known = (lr_known and prev_end == r.lr_used[0]) or printed
            first = False
            for i in r.steps:
                m = run.history[i]["metric"]
                exact_better = m < best_exact * f
                src = _source(run, r, m, fed_column, by_key)
                iv, ident = (m, m), ("unknown", i)
                if src is None or (src[0] is not None and id(src[0]) not in given_ids):
                    ok = False
                elif src[0] is None:
                    ident = ("ckpt",)
                else:
                    iv = _interval(tokens[id(src[0])][src[1]], m, style, src[1])
                    ident = ("row", id(src[0]), src[1])
                if ok:
                    dec = False if ident == best_id else _better(iv, best_iv, cfg)
                    if dec is None:
                        ok = False
                    else:
                        assert dec == exact_better, (
                            "interval decision disagrees with the exact one",
                            r.epoch,
                            i,
                        )
                if exact_better:
                    best_exact, best_iv, best_id = m, iv, ident
            # the lr the plateau's own last step left: what the next row trains with unless other code (a second
            # scheduler stepping after it, an epoch-end assignment) changed it, which the next row then checks
            prev_end = run.history[r.steps[-1]]["lr_after"][0] if r.steps else r.lr_end[0]
            # an lr logged after the step that no plateau step made: the inputs cannot tell whether that code
            # ran before this row's step (which then acted on it) or after it, so this row's lr is open
            row_lr_open = style.lr == "after" and r.lr_end[0] != prev_end
            if id(r) in given_ids:
                best_tok = None
                if best_id[0] == "row" and best_iv[0] != best_iv[1]:
                    best_tok = tokens[best_id[1]][best_id[2]]
                # with no lr column, a run whose lr another writer changes (a warm-up, a second scheduler, code)
                # shows nowhere when that writer acts next: no lr after the checkpoint is determined
                unseen_writer = style.lr is None and bool(run.knobs.external)
                state_open, lr_open = (open_rows or {}).get((r.process, r.epoch), (False, False))
                out[id(r)] = {"state": ok and not state_open,
                              "lr": ok and lr_known and not row_lr_open and not unseen_writer and not lr_open,
                              "best_logged": best_tok}
    return out


def _significant(text: str | None) -> int:
    """The significant digits of a printed number (0 for none)."""
    if not text:
        return 0
    mantissa = text.strip().lstrip("+-").lower().split("e")[0].replace(".", "")
    return len(mantissa.lstrip("0")) if mantissa.isdigit() else 0


def _source(run: Any, row: Any, metric: float, fed_column: str, by_key: dict) -> tuple[Any, str] | None:
    """Where the inputs hold a fed metric: (row, column), or (None, column) for the checkpoint's val_loss."""
    if run.knobs.per_batch:
        prev = by_key.get((row.process, row.epoch - 1))
        if prev is not None and _value(prev, fed_column) == metric:
            return prev, fed_column
        return None
    if _value(row, fed_column) == metric:
        return row, fed_column
    return None


def _value(row: Any, column: str) -> float | None:
    return {"val_loss": row.val_loss, "train_loss": row.train_loss, "val_acc": row.val_acc}[column]


# --------------------------------------------------------------------------------------------------
# story checks on a finished truth.json (the framework stacks, whose runs are not matrix_torch.Run objects)


def replay_lineage(
    cfg: dict,
    initial_lr: list[float],
    metrics: list[float],
    state: dict | None = None,
    lr: list[float] | None = None,
) -> list[tuple[dict, list[float]]]:
    """(state after, lrs after) of a real ReduceLROnPlateau stepped over ``metrics`` from ``state``."""
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in initial_lr]
    opt = torch.optim.SGD([{"params": [p], "lr": x} for p, x in zip(params, initial_lr, strict=True)])
    sched = ReduceLROnPlateau(opt, **cfg)
    if lr is not None:
        for g, x in zip(opt.param_groups, lr, strict=True):
            g["lr"] = x
    if state is not None:
        sched.load_state_dict({**sched.state_dict(), **copy.deepcopy(state)})
    out = []
    for m in metrics:
        sched.step(m)
        out.append((plateau_state(sched), [float(g["lr"]) for g in opt.param_groups]))
    return out


def story_shows(
    truth: dict[str, Any],
    lineage: list[int],
    alt_metrics: list[float],
    alt_state: dict | None,
    alt_lr: list[float] | None,
) -> bool:
    """True when another story (``alt_*``: what the scheduler of ``lineage`` would have been fed and started
    from) predicts a different lr in the given rows after the checkpoint, or a different checkpoint state."""
    cfg = {
        k: truth["scheduler"][k]
        for k in ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr", "eps")
    }
    hist = truth["history"]
    alt = replay_lineage(cfg, truth["initial_lr"], alt_metrics, alt_state, alt_lr)
    offset = len(alt_metrics) - len(lineage)  # steps the alternative takes before the lineage's first
    if offset < 0:
        return True
    ck = truth["checkpoint_at"]["history_index"]
    for j, i in enumerate(lineage):
        a_state, a_lr = alt[offset + j]
        if i == ck and any(a_state[k] != hist[i]["state_after"][k] for k in a_state):
            return True
        if a_lr != hist[i]["lr_after"]:
            return True
    return False
