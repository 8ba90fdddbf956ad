"""Replay over uncertain evidence: the set of scheduler states ("worlds") the inputs allow after each step.

The exact engine (``engine.py``) steps one known state with exact metrics. Real evidence is less certain:
a log printed with 4 decimals gives each metric as an interval, a log that starts mid-run gives no state to
start from. Here every step maps each world to the one or two worlds torch could have reached (a
comparison the interval cannot decide branches), worlds that reach the same counters merge, and evidence
(a logged lr, the checkpoint's counters) removes the worlds it contradicts. A backward pass then keeps only
the worlds on a path to the end, so a step's state is *determined* when every surviving world agrees.

With exact metrics and a known start there is one world per step, and it is bit for bit the engine's state:
the comparison, cooldown, patience and ``_reduce_lr`` arithmetic are torch 2.13's, in torch's order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from plateau_forensics.engine import rounder
from plateau_forensics.state import PlateauConfig, PlateauState

__all__ = ["World", "Op", "Anchor", "Simulation", "simulate", "fresh_world", "unknown_worlds", "state_world",
           "lrs_match", "undo_reduction", "IMPROVED", "BAD", "COOLDOWN", "REDUCED", "SUPPRESSED"]

IMPROVED, BAD, COOLDOWN, REDUCED, SUPPRESSED = range(5)  # engine.Event order
#: ``World.best_row`` values that are not log rows.
BEST_START, BEST_UNKNOWN = -1, -2
#: Above this many worlds per step, worlds that differ only in which row set ``best`` are merged.
MAX_WORLDS = 256


@dataclass(frozen=True, slots=True)
class World:
    """One scheduler state the evidence allows.

    ``best`` lies in ``[best_lo, best_hi]`` (equal bounds: known exactly); ``best_val`` is the value shown
    for it (the logged metric of ``best_row``, or the exact value). ``lrs`` is None when the lrs are unknown
    (the counters do not depend on them); ``n_reduced`` then counts the reductions since they were known.
    """

    best_lo: float
    best_hi: float
    best_val: float
    best_row: int
    nb: int
    cd: int
    lrs: tuple[float, ...] | None
    min_lrs: tuple[float, ...]
    best_dtype: str | None = None
    n_reduced: int = 0
    #: the lrs were taken from a rounded log (another writer set them): known only to the log's precision
    lr_approx: bool = False

    @property
    def key(self) -> tuple[object, ...]:
        return (self.best_row, self.nb, self.cd, self.lrs, self.min_lrs, self.best_dtype,
                self.n_reduced if self.lrs is None else 0, self.lr_approx)

    @property
    def best_known(self) -> bool:
        return self.best_row != BEST_UNKNOWN and (self.best_lo == self.best_hi or self.best_lo != self.best_lo)


def fresh_world(config: PlateauConfig, lrs: Sequence[float] | None, n_groups: int) -> World:
    """A newly constructed scheduler (``best = mode_worse``, counters 0)."""
    min_lrs = config.min_lr if isinstance(config.min_lr, tuple) else (float(config.min_lr),) * n_groups
    worse = config.mode_worse
    return World(worse, worse, worse, BEST_START, 0, 0, None if lrs is None else tuple(lrs), min_lrs)


def state_world(state: PlateauState, lrs: Sequence[float] | None) -> World:
    """The exact state a checkpoint saved (with the optimizer's lrs, when known)."""
    return World(state.best, state.best, state.best, BEST_START, state.num_bad_epochs, state.cooldown_counter,
                 None if lrs is None else tuple(lrs), tuple(state.min_lrs), state.best_dtype)


def unknown_worlds(config: PlateauConfig, lrs: Sequence[float] | None, n_groups: int) -> list[World]:
    """Every state a scheduler could be in when nothing is known about its past (a log that starts mid-run)."""
    min_lrs = config.min_lr if isinstance(config.min_lr, tuple) else (float(config.min_lr),) * n_groups
    out = []
    for cd in range(max(config.cooldown, 0) + 1):
        for nb in range(max(config.patience, 0) + 1):
            if cd > 0 and nb > 0:  # cooldown zeroes num_bad_epochs at every step it lasts
                continue
            out.append(World(-math.inf, math.inf, math.nan, BEST_UNKNOWN, nb, cd,
                             None if lrs is None else tuple(lrs), min_lrs))
    return out


@dataclass(frozen=True)
class Op:
    """One ``scheduler.step(metric)`` in the story being simulated.

    Args:
        row: the log row whose metric is stepped.
        metric: the logged value (shown in reports).
        lo, hi: the interval the true metric lies in (equal for an exact log).
        parent: the op whose resulting worlds this step starts from (-1: none, ``init`` builds them).
        init: builds the starting worlds of a segment from the parent's worlds, each with the index of the
            parent world it depends on (-1: none, e.g. a fresh scheduler with a fresh optimizer); None:
            continue the parent's worlds.
        lr_in: the lr the log says this step's epoch trained with, as (lo, hi) per logged group, or None.
        lr_out: the lr the log says the scheduler left after this step, or None.
        lr_set: the lr code set before this step (a hand-set lr at a resume), per group.
        label: the log's epoch label of the row.
    """

    row: int
    metric: float
    lo: float
    hi: float
    parent: int
    label: float = 0
    init: Callable[[list[World]], list[tuple[World, int]]] | None = None
    lr_in: tuple[tuple[float, float], ...] | None = None
    lr_out: tuple[tuple[float, float], ...] | None = None
    lr_set: tuple[float, ...] | None = None
    absorb: bool = True
    #: the epoch at whose end the state after this op is what a checkpoint holds (None: ``label``)
    epoch_after: float | None = None


@dataclass(frozen=True)
class Anchor:
    """The checkpoint: after op ``op`` the scheduler's state was ``state`` and the optimizer's lrs ``lrs``."""

    op: int
    state: PlateauState
    lrs: tuple[float, ...] | None
    partial: bool = False
    #: the lrs the run continued with (the optimizer's), when they differ from the scheduler's own ``lrs``
    continue_lrs: tuple[float, ...] | None = None


@dataclass
class Simulation:
    """What a story's steps imply, step by step.

    ``before[i]``/``after[i]`` are the worlds before and after op ``i``; ``after_src[i][j]`` lists which
    ``before[i]`` worlds lead to ``after[i][j]``; ``before_src[i][j]`` which ``after[parent]`` world (or -1)
    ``before[i][j]`` came from. ``alive_after[i]`` marks the worlds on a path to the end.
    """

    ops: Sequence[Op]
    before: list[list[World]] = field(default_factory=list)
    before_src: list[list[int]] = field(default_factory=list)
    after: list[list[World]] = field(default_factory=list)
    after_src: list[list[tuple[int, ...]]] = field(default_factory=list)
    events: list[list[int]] = field(default_factory=list)
    undecided: list[bool] = field(default_factory=list)
    external: list[int] = field(default_factory=list)  # ops before which the lr changed with no story for it
    lr_mismatch_out: list[int] = field(default_factory=list)
    #: per op in ``external``/``lr_mismatch_out``: the lrs the story predicted there
    lr_expected: dict[int, tuple[tuple[float, ...] | None, ...]] = field(default_factory=dict)
    anchor_mismatch: tuple[str, ...] = ()
    anchored: bool = False
    errors: dict[int, str] = field(default_factory=dict)
    #: ``alive_after``, once something asked for it (many simulated stories are only scored, never read)
    _alive: list[list[bool]] | None = field(default=None, repr=False, compare=False)

    @property
    def alive_after(self) -> list[list[bool]]:
        """Per op, which worlds after it lie on a path to a terminal op (computed on first use)."""
        if self._alive is None:
            self._alive = _backward(self)
        return self._alive

    def determined(self, i: int) -> World | None:
        """The state after op ``i`` when every surviving world agrees on it, else None."""
        alive = [w for w, a in zip(self.after[i], self.alive_after[i]) if a]
        if not alive:
            return None
        first = alive[0]
        for w in alive[1:]:
            if (w.nb, w.cd, w.lrs, w.best_row) != (first.nb, first.cd, first.lrs, first.best_row):
                return None
            if not (w.best_lo == first.best_lo and w.best_hi == first.best_hi):
                return None
        if first.best_row == BEST_UNKNOWN:
            return None
        return first

    def alive(self, i: int) -> list[World]:
        """The worlds after op ``i`` that lie on a path to the end of the simulation."""
        return [w for w, a in zip(self.after[i], self.alive_after[i]) if a]

    def event(self, i: int) -> int | None:
        """The event of op ``i`` when every surviving world agrees, else None."""
        evs = {e for e, a in zip(self.events[i], self.alive_after[i]) if a}
        return evs.pop() if len(evs) == 1 else None


def lrs_match(lrs: Sequence[float] | None, logged: Sequence[tuple[float, float] | None] | None,
              approx: bool = False) -> bool:
    """The world's lrs lie in the logged intervals, for the groups both have (a log may show fewer groups than
    the optimizer has; a group added later has no lr before it exists). Approximate lrs (read from a rounded
    log) match an interval they overlap after the reductions since: within one interval width."""
    if lrs is None or logged is None:
        return True
    for v, iv in zip(lrs, logged):
        if iv is None:
            continue
        lo, hi = iv
        if approx and lo != hi:
            width = hi - lo
            if not lo - width <= v <= hi + width:
                return False
            continue
        if lo == hi:
            if not math.isclose(v, lo, rel_tol=1e-9, abs_tol=0.0):
                return False
        elif not lo <= v <= hi:
            return False
    return True


def undo_reduction(after: Sequence[float], factor: float, min_lrs: Sequence[float], eps: float
                   ) -> tuple[float, ...] | None:
    """The lrs before a reduction step that left ``after``: for each group the one float ``x`` with
    ``max(x * factor, min_lr) == after`` that torch would have reduced (``x - after > eps``), or ``after``
    itself when a reduction from it would have been under ``eps`` (torch keeps the lr); None when that is not
    one value: both readings fit, the lr sat at its floor (any ``x`` down to it gives the floor), or no float
    gives ``after``."""
    out = []
    for v, floor in zip(after, min_lrs, strict=True):
        if v <= floor:
            return None  # floored: every x with x * factor <= floor gives it
        x0 = v / factor
        cands = set()
        x = x0
        for _ in range(4):
            x = math.nextafter(x, -math.inf)
        for _ in range(9):
            if x * factor == v and x - v > eps:
                cands.add(x)
            x = math.nextafter(x, math.inf)
        # torch skips a reduction smaller than eps: an lr of ``v`` then stays ``v``, the same step's other reading
        stays = v - max(v * factor, floor) <= eps
        if len(cands) + stays != 1:
            return None
        out.append(cands.pop() if cands else v)
    return tuple(out)


def _bars(cfg: PlateauConfig, w: World) -> tuple[float, float]:
    a, b = cfg.bar(w.best_lo), cfg.bar(w.best_hi)
    return (a, b) if not b < a else (b, a)


def _outcomes(cfg: PlateauConfig, w: World, lo: float, hi: float) -> tuple[bool, bool]:
    """(can it be an improvement, can it be a bad epoch) for a metric in ``[lo, hi]``; NaN is never better."""
    if w.best_dtype is not None:  # a torch 1.0 tensor best compares in its dtype (exact metrics only)
        better = _tensor_better(cfg, w, lo)
        if lo == hi:
            return better, not better
    if lo == hi and w.best_lo == w.best_hi:  # exact: the very comparison torch makes
        better = cfg.is_better(lo, w.best_lo)
        return better, not better
    bar_lo, bar_hi = _bars(cfg, w)
    if bar_lo != bar_lo or bar_hi != bar_hi:  # a NaN bar (inf * 0): torch's comparison is False
        return False, True
    if cfg.mode == "min":
        return lo < bar_hi, not (hi < bar_lo)
    return hi > bar_lo, not (lo > bar_hi)


def _tensor_better(cfg: PlateauConfig, w: World, current: float) -> bool:
    tb = rounder(w.best_dtype)
    assert tb is not None
    best, threshold = w.best_lo, cfg.threshold
    if cfg.threshold_mode == "rel":
        factor = tb(1.0 - threshold) if cfg.mode == "min" else tb(threshold + 1.0)
        bar = tb(best * factor)
    else:
        bar = tb(best - tb(threshold)) if cfg.mode == "min" else tb(best + tb(threshold))
    return tb(current) < bar if cfg.mode == "min" else tb(current) > bar


def _step(cfg: PlateauConfig, w: World, op: Op, rounders: Sequence[Callable[[float], float] | None]
          ) -> list[tuple[World, int, str | None]]:
    """The worlds one ``step()`` can lead to from ``w`` (torch 2.13's ``step`` and ``_reduce_lr``)."""
    if w.best_row == op.row and (op.lo > 0 or op.hi < 0) and (w.best_lo, w.best_hi) == (op.lo, op.hi):
        # best is this very row's value (k steps per row): the same number against itself, whatever it is
        # within its interval; the outcome depends only on its sign, which the interval fixes
        better = cfg.is_better(op.metric, op.metric)
        can_better, can_worse = better, not better
    else:
        can_better, can_worse = _outcomes(cfg, w, op.lo, op.hi)
    out = []
    for better in (True, False):
        if not (can_better if better else can_worse):
            continue
        if better:
            if op.lo == op.hi:
                blo = bhi = bval = op.lo
            else:
                blo, bhi, bval = op.lo, op.hi, op.metric
            brow, nb, ev, bdt = op.row, 0, IMPROVED, None
        else:
            blo, bhi, bval, brow, nb, ev, bdt = w.best_lo, w.best_hi, w.best_val, w.best_row, w.nb + 1, BAD, w.best_dtype
            if brow == BEST_UNKNOWN:
                # not an improvement over an unknown best: best is at most this metric (min mode), so the
                # interval narrows, and the next improvement makes it known
                if cfg.mode == "min":
                    bhi = min(bhi, op.hi) if op.hi == op.hi else bhi
                else:
                    blo = max(blo, op.lo) if op.lo == op.lo else blo
        cd = w.cd
        if cd > 0:
            cd -= 1
            nb = 0
            if not better:
                ev = COOLDOWN
        lrs, min_lrs, n_red, error = w.lrs, w.min_lrs, w.n_reduced, None
        if nb > cfg.patience:
            if lrs is None:
                n_red += 1
                ev = REDUCED
            else:
                if len(lrs) != len(min_lrs):
                    if cfg.default_min_lr is None:
                        error = (f"torch raises RuntimeError here: {len(lrs)} param groups but {len(min_lrs)} "
                                 "min_lrs and no default_min_lr to rebuild them from")
                    else:
                        min_lrs = (cfg.default_min_lr,) * len(lrs)
                if error is None:
                    new = list(lrs)
                    changed = False
                    for g, old in enumerate(lrs):
                        new_lr = max(old * cfg.factor, min_lrs[g])
                        if old - new_lr > cfg.eps:
                            r = rounders[g] if g < len(rounders) else None
                            new[g] = r(new_lr) if r is not None else new_lr
                            changed = True
                    if changed:
                        lrs = tuple(new)
                        ev = REDUCED
                    else:
                        ev = SUPPRESSED
            if error is None:
                cd = cfg.cooldown
                nb = 0
        out.append((World(blo, bhi, bval, brow, nb, cd, lrs, min_lrs, bdt, n_red, w.lr_approx), ev, error))
    return out


def _merge(worlds: list[tuple[World, int, tuple[int, ...]]]) -> tuple[list[World], list[int], list[tuple[int, ...]]]:
    if len(worlds) == 1:  # the common case: one state, nothing to merge
        w, ev, src = worlds[0]
        return [w], [ev], [src]
    index: dict[tuple[object, ...], int] = {}
    ws: list[World] = []
    evs: list[int] = []
    srcs: list[set[int]] = []
    for w, ev, src in worlds:
        k = (w.key, ev)
        j = index.get(k)
        if j is None:
            index[k] = len(ws)
            ws.append(w)
            evs.append(ev)
            srcs.append(set(src))
        else:
            old = ws[j]
            if (old.best_lo, old.best_hi) != (w.best_lo, w.best_hi):
                ws[j] = replace(old, best_lo=min(old.best_lo, w.best_lo), best_hi=max(old.best_hi, w.best_hi))
            srcs[j].update(src)
    if len(ws) > MAX_WORLDS:  # forget which row set best; keep the interval it lies in
        coarse: list[tuple[World, int, tuple[int, ...]]] = []
        for w, ev, src in zip(ws, evs, srcs):
            coarse.append((replace(w, best_row=BEST_UNKNOWN if w.best_lo != w.best_hi else w.best_row,
                                   best_val=math.nan if w.best_lo != w.best_hi else w.best_val),
                           ev, tuple(src)))
        index.clear()
        ws, evs, srcs = [], [], []
        for w, ev, src in coarse:
            k = ((w.nb, w.cd, w.lrs, w.min_lrs, w.n_reduced), ev)
            j = index.get(k)
            if j is None:
                index[k] = len(ws)
                ws.append(w)
                evs.append(ev)
                srcs.append(set(src))
            else:
                old = ws[j]
                ws[j] = replace(old, best_lo=min(old.best_lo, w.best_lo), best_hi=max(old.best_hi, w.best_hi),
                                best_row=BEST_UNKNOWN, best_val=math.nan)
                srcs[j].update(src)
    return ws, evs, [tuple(sorted(s)) for s in srcs]


def _matches_anchor(cfg: PlateauConfig, w: World, a: Anchor) -> tuple[bool, bool]:
    """(counters and best agree, lrs agree) between a world and the checkpoint."""
    st = a.state
    if w.best_row == BEST_UNKNOWN:
        best_ok = w.best_lo <= st.best <= w.best_hi or (math.isinf(st.best) and math.isinf(w.best_hi))
    elif w.best_lo == w.best_hi:
        best_ok = w.best_lo == st.best or (w.best_lo != w.best_lo and st.best != st.best)
    else:
        best_ok = w.best_lo <= st.best <= w.best_hi
    counters_ok = best_ok and (a.partial or (w.nb == st.num_bad_epochs and w.cd == st.cooldown_counter))
    tol = 1e-2 if w.lr_approx else 1e-9  # lrs read from a rounded log are known to its precision only
    lr_ok = a.lrs is None or w.lrs is None or (
        len(w.lrs) == len(a.lrs) and all(math.isclose(x, y, rel_tol=tol) for x, y in zip(w.lrs, a.lrs)))
    return counters_ok, lr_ok


def matches_anchor(cfg: PlateauConfig, worlds: Sequence[World], a: Anchor) -> tuple[bool, bool]:
    """Whether any of ``worlds`` agrees with the checkpoint: (on counters and best, on those and the lrs)."""
    counters = both = False
    for w in worlds:
        c, lr = _matches_anchor(cfg, w, a)
        counters = counters or c
        both = both or (c and lr)
    return counters, both


def _anchor_world(a: Anchor, matched: list[World]) -> World:
    st = a.state
    rows = {w.best_row for w in matched}
    brow = rows.pop() if len(rows) == 1 else BEST_START
    if brow == BEST_UNKNOWN:  # the saved best is exact now, whichever row set it
        brow = BEST_START
    lrs = a.continue_lrs if a.continue_lrs is not None else a.lrs
    if lrs is None:
        lrs = matched[0].lrs if matched else None
    if a.partial and matched:
        w = matched[0]
        nb, cd = w.nb, w.cd
        if len({(m.nb, m.cd) for m in matched}) > 1:
            return World(st.best, st.best, st.best, brow, w.nb, w.cd, lrs, tuple(st.min_lrs), st.best_dtype)
        return World(st.best, st.best, st.best, brow, nb, cd, lrs, tuple(st.min_lrs), st.best_dtype)
    return World(st.best, st.best, st.best, brow, st.num_bad_epochs, st.cooldown_counter, lrs,
                 tuple(st.min_lrs), st.best_dtype)


def _known_prefix(logged: Sequence[tuple[float, float] | None]) -> tuple[float, ...]:
    out = []
    for iv in logged:
        if iv is None:
            break
        out.append(iv[0] if iv[0] == iv[1] else (iv[0] + iv[1]) / 2)
    return tuple(out)


def _adopt(ws: list[World], logged: Sequence[tuple[float, float] | None] | None) -> list[World]:
    """Take the lrs the log shows where a world does not know them yet: unknown lrs, or groups that the
    optimizer gained since (``add_param_group``), which a log of every group shows as new columns."""
    if logged is None or not ws or all(w.lrs is not None and len(w.lrs) >= len(logged) for w in ws):
        return ws  # every world knows every group the log shows: the usual case
    prefix = _known_prefix(logged)
    n = len(prefix)
    if not n or all(w.lrs is not None and len(w.lrs) >= n for w in ws):  # every world knows them: the usual
        return ws
    approx = any(iv is not None and iv[0] != iv[1] for iv in logged)
    out = []
    for w in ws:
        if w.lrs is None:
            w = replace(w, lrs=prefix, n_reduced=0, lr_approx=approx)
        elif n > len(w.lrs):
            w = replace(w, lrs=w.lrs + prefix[len(w.lrs):])
        out.append(w)
    return out


def simulate(cfg: PlateauConfig, ops: Sequence[Op], *, anchor: Anchor | None = None,
             lr_dtypes: Sequence[str | None] = (), groups_from_log: bool = False,
             prefix: Simulation | None = None) -> Simulation:
    """Run ``ops`` forward over every world the evidence allows, then keep the worlds on a path to the end.

    Evidence handling: worlds whose lr contradicts a logged ``lr_in`` are dropped; when none is left the lr
    was changed by something the story does not model, and every world takes the logged lr (the op is
    recorded in ``external``). At the ``anchor`` op the worlds that agree with the checkpoint are kept and
    replaced by its exact state (the run continued from what was saved); disagreement is recorded in
    ``anchor_mismatch`` and the saved state is taken all the same.

    ``prefix``: a simulation of the same ops without the anchor; the ops before the anchor are taken from it
    (they do not depend on the checkpoint), and only the rest is run again.
    """
    sim = Simulation(ops)
    rounders = [rounder(d) for d in lr_dtypes]
    start = 0
    if prefix is not None and anchor is not None and prefix.ops is ops:
        start = anchor.op
        sim.before, sim.before_src = prefix.before[:start], prefix.before_src[:start]
        sim.after, sim.after_src = prefix.after[:start], prefix.after_src[:start]
        sim.events, sim.undecided = prefix.events[:start], prefix.undecided[:start]
        sim.external = [i for i in prefix.external if i < start]
        sim.lr_mismatch_out = [i for i in prefix.lr_mismatch_out if i < start]
        sim.lr_expected = {i: v for i, v in prefix.lr_expected.items() if i < start}
        sim.errors = {i: v for i, v in prefix.errors.items() if i < start}
    for i in range(start, len(ops)):
        op = ops[i]
        parent = sim.after[op.parent] if op.parent >= 0 else []
        if op.init is not None:
            pairs = op.init(parent)
            before, src = [w for w, _ in pairs], [j for _, j in pairs]
        else:
            before = list(parent)
            src = list(range(len(parent)))
        if op.lr_set is not None:
            before = [replace(w, lrs=_set_lrs(w.lrs, op.lr_set), n_reduced=0) for w in before]
        if groups_from_log and op.lr_in is not None:
            before = _adopt(before, op.lr_in)
        if op.lr_in is not None and before:
            keep = [j for j, w in enumerate(before) if lrs_match(w.lrs, op.lr_in, w.lr_approx)]
            if keep:
                before, src = [before[j] for j in keep], [src[j] for j in keep]
            elif op.absorb:
                sim.external.append(i)
                sim.lr_expected[i] = tuple(dict.fromkeys(w.lrs for w in before))
                approx = any(iv is not None and iv[0] != iv[1] for iv in op.lr_in)
                before = [replace(w, lrs=_set_logged(w.lrs, op.lr_in), n_reduced=0, lr_approx=approx) for w in before]
        results: list[tuple[World, int, tuple[int, ...]]] = []
        undecided = False
        for j, w in enumerate(before):
            outs = _step(cfg, w, op, rounders)
            if len(outs) > 1:
                undecided = True
            for nw, ev, err in outs:
                if err is not None and i not in sim.errors:
                    sim.errors[i] = err
                results.append((nw, ev, (j,)))
        after, evs, asrc = _merge(results)
        if groups_from_log and op.lr_out is not None:
            after = _adopt(after, op.lr_out)
        if op.lr_out is not None and after:
            keep = [j for j, w in enumerate(after) if lrs_match(w.lrs, op.lr_out, w.lr_approx)]
            if keep:
                after, evs, asrc = [after[j] for j in keep], [evs[j] for j in keep], [asrc[j] for j in keep]
            else:
                sim.lr_mismatch_out.append(i)
                sim.lr_expected[i] = tuple(dict.fromkeys(w.lrs for w in after))
                approx = any(iv is not None and iv[0] != iv[1] for iv in op.lr_out)
                after = [replace(w, lrs=_set_logged(w.lrs, op.lr_out), n_reduced=0, lr_approx=approx) for w in after]
        if anchor is not None and anchor.op == i:
            matched = [w for w in after if all(_matches_anchor(cfg, w, anchor))]
            mismatch: list[str] = []
            if not matched:
                counters_only = [w for w in after if _matches_anchor(cfg, w, anchor)[0]]
                if counters_only:
                    mismatch.append("lr")
                    matched = counters_only
                else:
                    mismatch.append("counters")
            sim.anchor_mismatch = tuple(mismatch)
            sim.anchored = True
            keep_idx = [j for j, w in enumerate(after) if w in matched] if matched else list(range(len(after)))
            chosen = [after[j] for j in keep_idx]
            src_union = tuple(sorted({s for j in keep_idx for s in asrc[j]}))
            ev_set = {evs[j] for j in keep_idx}
            after = [_anchor_world(anchor, chosen)]
            evs = [ev_set.pop() if len(ev_set) == 1 else evs[keep_idx[0]]]
            asrc = [src_union]
        sim.before.append(before)
        sim.before_src.append(src)
        sim.after.append(after)
        sim.after_src.append(asrc)
        sim.events.append(evs)
        sim.undecided.append(undecided)
    return sim


def _set_logged(lrs: tuple[float, ...] | None, logged: Sequence[tuple[float, float] | None]) -> tuple[float, ...] | None:
    """The lrs after another writer set them to what the log shows (groups the log does not show keep theirs)."""
    if lrs is None:
        prefix = _known_prefix(logged)
        return prefix or None
    out = list(lrs)
    for g, iv in enumerate(logged):
        if iv is not None and g < len(out):
            out[g] = iv[0] if iv[0] == iv[1] else (iv[0] + iv[1]) / 2
    return tuple(out)


def _set_lrs(lrs: tuple[float, ...] | None, new: Sequence[float]) -> tuple[float, ...]:
    if lrs is None or len(new) >= len(lrs):
        return tuple(new)
    return tuple(new) + lrs[len(new):]


def _backward(sim: Simulation) -> list[list[bool]]:
    """Mark the worlds on a path to a terminal op (one whose worlds no later op continues from)."""
    n = len(sim.ops)
    children: list[list[int]] = [[] for _ in range(n)]
    for i, op in enumerate(sim.ops):
        if op.parent >= 0:
            children[op.parent].append(i)
    alive_after: list[list[bool]] = [[False] * len(a) for a in sim.after]
    for i in range(n - 1, -1, -1):
        deps = [c for c in children[i] if any(p >= 0 for p in sim.before_src[c])]
        if not deps:  # a terminal, or only fresh starts follow: every surviving world remains possible
            alive_after[i] = [True] * len(sim.after[i])
            continue
        for c in deps:
            alive_before_c = [False] * len(sim.before[c])
            for j, srcs in enumerate(sim.after_src[c]):
                if alive_after[c][j]:
                    for s in srcs:
                        alive_before_c[s] = True
            for jb, ok in enumerate(alive_before_c):
                p = sim.before_src[c][jb]
                if ok and p >= 0:
                    alive_after[i][p] = True
    return alive_after
