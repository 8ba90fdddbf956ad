"""The history a story implies, as a ``Trace``: one step per ``scheduler.step()`` of the run, with the
state after each one where the evidence determines it, and "unknown" where it does not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from plateau_forensics.engine import Start, Trace, _Columns
from plateau_forensics.state import PlateauState
from plateau_forensics.stories import Evaluation, Evidence
from plateau_forensics.worlds import BAD, REDUCED, World, undo_reduction

__all__ = ["trace_of", "step_counts"]


def step_counts(ev: Evidence, e: Evaluation) -> list[float | None]:
    """``last_epoch`` after every op: the story's count, and from the checkpoint on the saved count."""
    ck = ev.ck
    base = ck.state.last_epoch_base if ck is not None else 0  # torch <= 1.3 counted last_epoch from -1
    counts: list[float | None] = [c if c is None else c + base for c in e.last_epochs]
    ops = e.ops
    fresh = {i for i, _ in e.segment_starts if not _carries(e, i)}
    if ck is not None and e.anchor_op is not None and e.anchor_op >= 0:
        a = e.anchor_op
        counts[a] = ck.state.last_epoch
        i = a
        while i >= 0 and i not in fresh and ops[i].parent >= 0 and counts[ops[i].parent] is None:
            counts[ops[i].parent] = counts[i] - 1  # type: ignore[operator]
            i = ops[i].parent
        for j in range(a + 1, len(ops)):
            p = ops[j].parent
            if j not in fresh and p >= 0 and counts[p] is not None and (p >= a or counts[j] is None):
                counts[j] = counts[p] + 1  # type: ignore[operator]
    elif ck is not None and e.anchor_op == -1:
        for j in range(len(ops)):
            p = ops[j].parent
            if counts[j] is None and j not in fresh and p >= 0 and counts[p] is not None:
                counts[j] = counts[p] + 1  # type: ignore[operator]
    return counts


def _carries(e: Evaluation, op_index: int) -> bool:
    """Whether a segment's first op continues its parent's scheduler (a restored state)."""
    return any(s >= 0 for s in e.sim.before_src[op_index]) and e.last_epochs[op_index] != 1


def _state(w: World, last_epoch: float | None, default_min_lr: float | None) -> PlateauState:
    return PlateauState(
        last_epoch=last_epoch if last_epoch is not None else 0, best=w.best_val, num_bad_epochs=w.nb,
        cooldown_counter=w.cd, min_lrs=w.min_lrs, default_min_lr=default_min_lr, last_lr=w.lrs,
        best_dtype=w.best_dtype)


def _row_states(e: Evaluation) -> dict[tuple[int, int], tuple[object, ...] | None]:
    """Per (log row, occurrence), the state after that row's last step on the path to the end of the run."""
    out: dict[tuple[int, int], tuple[object, ...] | None] = {}
    seen: dict[int, int] = {}
    lineage = [i for i in e.lineage if i < len(e.sim.after)]
    for p, i in enumerate(lineage):
        row = e.ops[i].row
        nxt = lineage[p + 1] if p + 1 < len(lineage) else None
        if nxt is not None and e.ops[nxt].row == row:
            continue  # not the row's last step
        k = seen.get(row, 0)
        seen[row] = k + 1
        w = e.sim.determined(i)
        out[(row, k)] = None if w is None or w.lr_approx else (w.best_val, w.nb, w.cd, w.lrs)
    return out


def disputed_rows(win: Evaluation, others: Sequence[Evaluation]
                  ) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """Rows after which the stories that explain the evidence equally well leave different states, and the rows
    among them where they leave different lrs (a reading that moves a reset by a row may agree on the lr)."""
    mine = _row_states(win)
    out: set[tuple[int, int]] = set()
    lr_out: set[tuple[int, int]] = set()
    for o in others:
        theirs = _row_states(o)
        for key, state in mine.items():
            other = theirs.get(key, state)
            if state is not None and other != state:
                out.add(key)
                if other is None or other[3] != state[3]:
                    lr_out.add(key)
    return out, lr_out


def trace_of(ev: Evidence, e: Evaluation, others: Sequence[Evaluation] = ()) -> Trace:
    """The run's steps under story ``e``, in time order, on the path that leads to the end of the run.

    A state every surviving world agrees on is shown; otherwise the position is in ``Trace.unknown``. Lrs
    the story leaves unknown (no lr logged, no initial lr) are inferred back from the checkpoint's lr through
    the reductions in between, where those are known; otherwise they are in ``Trace.lr_unknown``.
    """
    cfg, sim = ev.config, e.sim
    lineage = [i for i in e.lineage if i < len(sim.after)]
    stop = next((i for i in lineage if i in sim.errors), None)
    error = None
    if stop is not None:
        error = f"epoch {e.ops[stop].label}: {sim.errors[stop]}"
        lineage = [i for i in lineage if i < stop]
    counts = step_counts(ev, e)
    n_groups = ev.n_groups
    worlds: list[World | None] = [sim.determined(i) for i in lineage]
    lrs = _lrs(ev, e, lineage, worlds)
    if e.external_rows and ev.log.lrs is None:
        # another writer changes the lr and no lr is logged: only the checkpoint's own lr is known
        anchor = e.anchor_op
        lrs = [x if i == anchor else None for x, i in zip(lrs, lineage)]
    cols = _Columns()
    unknown: set[int] = set()
    lr_unknown: set[int] = set()
    undecided: set[int] = set()
    nan_lrs = (math.nan,) * n_groups
    disputed, disputed_lr = disputed_rows(e, others) if others else (set(), set())
    occurrence: dict[int, int] = {}
    row_key = []
    for p, i in enumerate(lineage):
        row = e.ops[i].row
        nxt = lineage[p + 1] if p + 1 < len(lineage) else None
        k = occurrence.get(row, 0)
        row_key.append((row, k))
        if nxt is None or e.ops[nxt].row != row:
            occurrence[row] = k + 1
    for p, i in enumerate(lineage):
        w = worlds[p]
        event = sim.event(i)
        if row_key[p] in disputed:  # another story that fits as well leaves another state here
            w = None
        if w is None or event is None:
            unknown.add(p)
            alive = sim.alive(i) or sim.after[i]
            w = alive[0] if alive else None
            event = event if event is not None else BAD
        if lrs[p] is None or row_key[p] in disputed_lr:
            lr_unknown.add(p)
        if sim.undecided[i]:
            undecided.add(p)
        cols.best.append(w.best_val if w is not None else math.nan)
        cols.num_bad.append(w.nb if w is not None else 0)
        cols.cooldown.append(w.cd if w is not None else 0)
        cols.lrs.append(lrs[p] if lrs[p] is not None else nan_lrs)
        cols.events.append(event)
    starts = []
    seg_notes = dict(e.segment_starts)
    for p, i in enumerate(lineage):
        if p == 0 or i in seg_notes:
            before = sim.before[i]
            b = before[0] if before else None
            le0 = counts[i] - 1 if counts[i] is not None else None
            in_lrs = _lrs_in(ev, e, lineage, p, lrs)
            if b is not None and b.best_row != -2 and len({(x.nb, x.cd, x.best_row, x.lrs) for x in before}) == 1:
                st = _state(replace(b, lrs=in_lrs), le0, cfg.default_min_lr)
            else:
                st = PlateauState(le0 if le0 is not None else 0, math.nan, 0, 0, b.min_lrs if b else (0.0,) * n_groups,
                                  cfg.default_min_lr, in_lrs)
            starts.append(Start(p, st, in_lrs if in_lrs is not None else nan_lrs, seg_notes.get(i, "")))
    if ev.ck is not None and e.anchor_op is not None and e.anchor_op in lineage:
        p = lineage.index(e.anchor_op) + 1  # from here the replay runs from the state the checkpoint saved
        if p < len(lineage) and all(st.index != p for st in starts):
            ck = ev.ck
            saved = replace(ck.state, last_lr=tuple(ck.lrs) if ck.lrs else ck.state.last_lr)
            starts.append(Start(p, saved, tuple(ck.lrs) if ck.lrs else cols.lrs[p - 1],
                                "continued from the checkpoint's state"))
            starts.sort(key=lambda st: st.index)
    last = len(lineage) - 1
    if last >= 0 and last not in unknown:
        wl = worlds[last]
        assert wl is not None
        final = _state(replace(wl, lrs=lrs[last]), counts[lineage[last]], cfg.default_min_lr)
    elif last >= 0:
        final = PlateauState(counts[lineage[last]] or 0, math.nan, 0, 0, (0.0,) * n_groups, cfg.default_min_lr,
                             lrs[last])
    elif ev.ck is not None:
        final = ev.ck.state
    else:
        final = PlateauState(0, cfg.mode_worse, 0, 0, (0.0,) * n_groups, cfg.default_min_lr, None)
    if not starts:
        lr0 = tuple(ev.ck.lrs) if ev.ck is not None and ev.ck.lrs else nan_lrs
        starts = [Start(0, final, lr0)]
    # a step taken during the next epoch on the last validation's value (per-batch stepping) is shown at the
    # epoch it ran in
    t = Trace(config=cfg, epochs=tuple(e.ops[i].epoch_after if e.ops[i].epoch_after is not None
                                       else e.ops[i].label for i in lineage),
              metrics=tuple(e.ops[i].metric for i in lineage), starts=tuple(starts), final=final,
              error=error, lr_dtypes=ev.lr_dtypes, unknown=frozenset(unknown), lr_unknown=frozenset(lr_unknown),
              undecided=frozenset(undecided), last_epochs=tuple(counts[i] for i in lineage),
              intervals=tuple((e.ops[i].lo, e.ops[i].hi) for i in lineage)
              if any(e.ops[i].lo != e.ops[i].hi for i in lineage) else None,
              rows=tuple(e.ops[i].row for i in lineage))
    ins: list[tuple[float, ...] | None] = []
    for p, i in enumerate(lineage):
        before = {w.lrs for w in sim.before[i] if w.lrs is not None and not w.lr_approx}
        prev = cols.lrs[p - 1] if p > 0 else None
        mine = before.pop() if len(before) == 1 else None
        ins.append(mine if mine is not None and mine != prev else None)
    if any(x is not None for x in ins[1:]):
        t.lr_ins = tuple(ins)
    t._cols = cols
    return t


def _lrs_in(ev: Evidence, e: Evaluation, lineage: list[int], p: int,
            lrs: list[tuple[float, ...] | None]) -> tuple[float, ...] | None:
    """The lrs before lineage position ``p``'s step."""
    i = lineage[p]
    before = e.sim.before[i]
    if before and before[0].lrs is not None and len({w.lrs for w in before}) == 1:
        return before[0].lrs
    if lrs[p] is not None and e.sim.event(i) not in (REDUCED, None):
        return lrs[p]
    if lrs[p] is not None and e.sim.event(i) == REDUCED and ev.config.factor > 0:
        return undo_reduction(lrs[p], ev.config.factor, _min_lrs(ev, len(lrs[p])), ev.config.eps)
    return None


def _min_lrs(ev: Evidence, n: int) -> tuple[float, ...]:
    """Each param group's floor: the checkpoint's saved ``min_lrs`` (what torch applied), else the config's."""
    if ev.ck is not None and len(ev.ck.state.min_lrs) == n:
        return tuple(float(v) for v in ev.ck.state.min_lrs)
    m = ev.config.min_lr
    return tuple(float(v) for v in m) if isinstance(m, tuple) and len(m) == n else (float(m if not isinstance(
        m, tuple) else m[0]),) * n


def _lrs(ev: Evidence, e: Evaluation, lineage: list[int], worlds: list[World | None]
         ) -> list[tuple[float, ...] | None]:
    """The lrs after each lineage position: the story's, else inferred back from the next known ones."""
    out: list[tuple[float, ...] | None] = [w.lrs if w is not None and not w.lr_approx else None for w in worlds]
    factor = ev.config.factor
    if factor <= 0:
        return out
    for p in range(len(lineage) - 2, -1, -1):
        if out[p] is not None or out[p + 1] is None:
            continue
        nxt = lineage[p + 1]
        if e.ops[nxt].parent != lineage[p] or e.ops[nxt].init is not None or e.ops[nxt].lr_set is not None:
            continue
        event = e.sim.event(nxt)
        if event is None:
            continue
        if event == REDUCED:
            nxt_lrs = out[p + 1]
            assert nxt_lrs is not None
            out[p] = undo_reduction(nxt_lrs, factor, _min_lrs(ev, len(nxt_lrs)), ev.config.eps)
        else:
            out[p] = out[p + 1]
    return out
