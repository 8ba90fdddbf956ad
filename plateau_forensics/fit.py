"""Inverse fit: the ReduceLROnPlateau hyperparameters that reproduce a log's lr column.

When the lr reductions happen depends only on mode, threshold, threshold_mode, patience and cooldown (a due
reduction restarts cooldown and ``num_bad_epochs`` whether or not ``min_lr``/``eps`` let it change the lr);
what the lr becomes depends on the initial lr, factor, min_lr and eps. So the fit has two parts:

* **Timing** (``_timing``): a sweep of fresh schedulers over a grid of (mode, threshold_mode, threshold,
  patience, cooldown), one numpy lane each, checked row by row against what the lr column shows: where it
  certainly changes, a reduction must have been due (and none suppressed before); where it certainly stays, a
  due reduction must have been suppressed from then on. On a rounded log a comparison the intervals cannot
  decide forks the lane into both outcomes (identical lanes merge again), so a setting is excluded only when
  every outcome the rounding allows misses: never because of a comparison the rounding cannot decide.
* **Values** (``_values``): factor from the ratios of the lr levels, min_lr and eps from where the lr stops.

Threshold edges are refined by bisection on the float's bits between a tested value that fits and one that
does not. numpy loads when a fit runs.
"""

from __future__ import annotations

import json
import math
import sys
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from plateau_forensics.errors import ConfigError, LossLogError
from plateau_forensics.state import PlateauConfig

__all__ = ["Fit", "fit", "check"]

_CHANGED, _SAME, _UNKNOWN = 0, 1, 2
#: why a setting misses at a row
_NO_DUE, _AFTER_SUPPRESSED = 1, 2
_KIND = {("min", "rel"): 0, ("min", "abs"): 1, ("max", "rel"): 2, ("max", "abs"): 3}
_KIND_NAMES = {v: k for k, v in _KIND.items()}
_REL_THRESHOLDS = (0.0, 1e-8, 1e-7, 1e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2,
                   0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
_ABS_STEPS = (1e-8, 1e-7, 1e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
_ABS_COMMON = (1e-4, 1e-3, 1e-2)


# -- the evidence ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Evidence:
    epochs: tuple[Any, ...]
    v: Any  # metric values as logged (np float64)
    lo: Any  # metric intervals
    hi: Any
    lr_lo: Any  # (rows, groups), NaN where not logged
    lr_hi: Any
    exact_lr: bool
    exact_metric: bool
    columns: tuple[str, ...]
    source: str
    initial: tuple[float, ...] | None  # the lrs before the first step when given
    notes: tuple[str, ...] = ()


def _evidence(log: Any, lrs: Sequence[float] | None) -> _Evidence:
    import numpy as np

    if log.lrs is None or not log.lr_columns:
        raise LossLogError(f"{log.source}: no lr column to fit (columns: "
                           f"{', '.join([log.metric_column, *log.columns]) or 'none'}); the fit needs the lr the "
                           "run logged (--lr-column chooses one)")
    notes = []
    if any(a.kind == "duplicate-epochs" for a in log.anomalies):
        log, dropped = log.surviving_history()
        notes.append(f"{len(dropped)} rows repeated by an appended resume were left out: the last run's rows "
                     "are fitted")
    n, g = len(log), len(log.lr_columns)
    v = np.asarray(log.metrics, dtype=np.float64)
    lo, hi = np.empty(n), np.empty(n)
    for i in range(n):
        lo[i], hi[i] = log.metric_interval(i)
    lr_lo, lr_hi = np.full((n, g), np.nan), np.full((n, g), np.nan)
    for i in range(n):
        iv = log.lr_intervals(i)
        for gi, pair in enumerate(iv or ()):
            if pair is not None:
                lr_lo[i, gi], lr_hi[i, gi] = pair
    if not np.isfinite(lr_lo).any():
        raise LossLogError(f"{log.source}: the lr column{'s' if g > 1 else ''} "
                           f"{', '.join(log.lr_columns)} hold no value to fit")
    exact_lr = all(log.precision_of(c).exact for c in log.lr_columns)
    exact_metric = log.precision_of(log.metric_column).exact
    if lrs is not None and len(lrs) != g:
        raise ConfigError(f"--lr gives {len(lrs)} lrs for {g} logged param groups")
    return _Evidence(tuple(log.epochs), v, lo, hi, lr_lo, lr_hi, exact_lr, exact_metric, tuple(log.lr_columns),
                     log.source, tuple(float(x) for x in lrs) if lrs is not None else None, tuple(notes))


def _pairs(ev: _Evidence, semantics: str) -> list[tuple[int, Any, Any, Any, Any]]:
    """Per step ``i``: the lr intervals before and after it, as the lr column shows them."""
    import numpy as np

    n = len(ev.epochs)
    out = []
    for i in range(n):
        if semantics == "during":  # row i trained with the lr before step i, row i+1 with the one after it
            if i + 1 >= n:
                out.append((i, None, None, None, None))
                continue
            out.append((i, ev.lr_lo[i], ev.lr_hi[i], ev.lr_lo[i + 1], ev.lr_hi[i + 1]))
        else:  # row i holds the lr after step i
            if i == 0:
                if ev.initial is None:
                    out.append((i, None, None, None, None))
                    continue
                a = np.asarray(ev.initial, dtype=np.float64)
                out.append((i, a, a, ev.lr_lo[0], ev.lr_hi[0]))
                continue
            out.append((i, ev.lr_lo[i - 1], ev.lr_hi[i - 1], ev.lr_lo[i], ev.lr_hi[i]))
    return out


@dataclass(frozen=True)
class FactorFit:
    """What the lr ratios say about ``factor``.

    Attributes:
        lo, hi: every factor in ``[lo, hi]`` reproduces every visible change (None: no change seen).
        value: the simplest decimal in the range (fewest significant digits).
        exact: the range holds exactly the floats that reproduce every change bit for bit (a ``repr`` lr
        column).
        floor_hit: the last change of these groups is a drop to ``min_lr`` rather than a multiplication.
        changes: the number of visible changes the range is built from.
    """

    lo: float | None
    hi: float | None
    value: float | None
    exact: bool
    floor_hit: tuple[int, ...] = ()
    changes: int = 0
    note: str = ""


def _simplest(lo: float, hi: float) -> float:
    """The decimal with the fewest significant digits in ``[lo, hi]`` (the value a person typed)."""
    if lo <= 0.0 <= hi:
        return 0.0
    for digits in range(1, 18):
        for x in (float(f"{lo:.{digits}g}"), float(f"{hi:.{digits}g}"), float(f"{(lo + hi) / 2:.{digits}g}")):
            if lo <= x <= hi:
                return x
    return lo


def _exact_factors(a: float, b: float) -> list[float]:
    """Every float ``f < 1`` with ``a * f == b`` near ``b / a`` (the candidates a ``repr`` log allows)."""
    if not (a > 0 and math.isfinite(a) and math.isfinite(b)):
        return []
    f0 = b / a
    out = []
    x = f0
    for _ in range(8):
        x = math.nextafter(x, -math.inf)
    for _ in range(17):
        if x < 1.0 and a * x == b:
            out.append(x)
        x = math.nextafter(x, math.inf)
    return out


def _changes(ev: _Evidence, semantics: str) -> list[list[tuple[int, float, float, float, float]]]:
    """Per group, the steps whose lr certainly changed: (step, before lo/hi, after lo/hi)."""
    out: list[list[tuple[int, float, float, float, float]]] = [[] for _ in ev.columns]
    for i, alo, ahi, blo, bhi in _pairs(ev, semantics):
        if alo is None:
            continue
        for gi in range(len(ev.columns)):
            a0, a1, b0, b1 = float(alo[gi]), float(ahi[gi]), float(blo[gi]), float(bhi[gi])
            if any(math.isnan(x) for x in (a0, a1, b0, b1)):
                continue
            if b1 < a0 or b0 > a1:
                out[gi].append((i, a0, a1, b0, b1))
    return out


def _factor(ev: _Evidence, changes: list[list[tuple[int, float, float, float, float]]],
            fixed: float | None) -> FactorFit:
    """The factors every visible decrease allows (a drop to min_lr may end a group's changes)."""
    def attempt(drop_last: tuple[int, ...]) -> FactorFit | None:
        pairs = [(c[1], c[2], c[3], c[4]) for gi, cs in enumerate(changes)
                 for j, c in enumerate(cs) if not (gi in drop_last and j == len(cs) - 1)]
        pairs = [p for p in pairs if p[2] < p[0]]  # decreases only; a rise is no plateau step (reported apart)
        if not pairs:
            return FactorFit(None, None, None, False, drop_last, 0)
        if all(p[0] == p[1] and p[2] == p[3] for p in pairs):  # exact: the floats that reproduce every change
            cands = set(_exact_factors(pairs[0][0], pairs[0][2]))
            for a, _, b, _ in pairs[1:]:
                cands &= set(_exact_factors(a, b))
            if fixed is not None:
                cands = {f for f in cands if f == fixed}
            if not cands:
                return None
            lo, hi = min(cands), max(cands)
            return FactorFit(lo, hi, _simplest(lo, hi), True, drop_last, len(pairs))
        lo, hi = -math.inf, math.inf
        for a0, a1, b0, b1 in pairs:
            if a0 <= 0:  # a level that may be 0 bounds nothing
                continue
            lo = max(lo, max(b0, 0.0) / a1)
            hi = min(hi, b1 / a0)
        hi = min(hi, math.nextafter(1.0, 0.0))
        if fixed is not None:
            if not lo <= fixed <= hi:
                return None
            lo = hi = fixed
        if lo > hi:
            return None
        return FactorFit(lo, hi, _simplest(max(lo, 0.0), hi), False, drop_last, len(pairs))

    import itertools

    ends = [gi for gi, cs in enumerate(changes) if cs]
    for size in range(len(ends) + 1):  # the fewest groups whose last change is a drop to min_lr
        for drop in itertools.combinations(ends, size):
            found = attempt(drop)
            if found is not None:
                return found
    return FactorFit(None, None, None, False, (), sum(len(c) for c in changes),
                     "no single factor gives every visible change: another lr writer, or several reductions "
                     "per visible change")


def _codes(ev: _Evidence, semantics: str, frange: FactorFit) -> Any:
    """Per step and group: the lr certainly changed, certainly stayed, or the log cannot tell.

    A rounded lr that prints the same may still hide a reduction by a factor close to 1: with ``frange`` the
    factors the visible changes allow, a row pair is "stayed" only when no such factor fits between them.
    """
    import numpy as np

    n, g = len(ev.epochs), len(ev.columns)
    codes = np.full((n, g), _UNKNOWN, dtype=np.int8)
    f_lo = frange.lo if frange.lo is not None else 0.0
    f_hi = frange.hi if frange.hi is not None else math.nextafter(1.0, 0.0)
    for i, alo, ahi, blo, bhi in _pairs(ev, semantics):
        if alo is None:
            continue
        for gi in range(g):
            a0, a1, b0, b1 = float(alo[gi]), float(ahi[gi]), float(blo[gi]), float(bhi[gi])
            if any(math.isnan(x) for x in (a0, a1, b0, b1)):
                continue
            if b1 < a0 or b0 > a1:
                codes[i, gi] = _CHANGED
            elif a0 == a1 and b0 == b1:
                codes[i, gi] = _SAME  # exact and equal
            elif not (a0 * min(f_lo, 1.0) <= b1 and a1 * f_hi >= b0):
                codes[i, gi] = _SAME  # no allowed factor fits a reduction between these two intervals
    return codes


# -- the timing sweep --------------------------------------------------------------------------------------
@dataclass
class _Configs:
    kind: Any
    arg: Any  # 1 - t (min rel), t + 1 (max rel), t (abs)
    threshold: Any
    patience: Any
    cooldown: Any

    def __len__(self) -> int:
        return int(self.kind.shape[0])


def _configs(rows: Sequence[tuple[str, str, float, int, int]]) -> _Configs:
    import numpy as np

    kind = np.array([_KIND[(m, tm)] for m, tm, _, _, _ in rows], dtype=np.int64)
    thr = np.array([t for _, _, t, _, _ in rows], dtype=np.float64)
    arg = np.where(kind == 0, 1.0 - thr, np.where(kind == 2, thr + 1.0, thr))
    return _Configs(kind, arg, thr, np.array([p for *_, p, _ in rows], dtype=np.int64),
                    np.array([c for *_, c in rows], dtype=np.int64))


@dataclass
class _Timing:
    fits: Any  # bool per config: some outcome the rounding allows reproduces every row
    undecided: Any  # bool: not excluded because too many outcomes had to be followed (counted as fitting)
    death: Any  # the step where the config's last outcome missed (-1: fits)
    why: Any  # _NO_DUE or _AFTER_SUPPRESSED
    group: Any
    floors: Any  # (configs, groups) bool: some fitting outcome had a due reduction held (min_lr / eps)
    free: Any  # (configs, groups) bool: some fitting outcome had none
    forked: bool


def _timing(ev: _Evidence, codes: Any, cfg: _Configs, cap: int = 2_000_000) -> _Timing:
    """Replay every config over the metrics and check each step against the lr column's ``codes``.

    Lane state: (config, row of ``best`` (-1: mode_worse), num_bad_epochs, cooldown_counter, per-group bits
    "a due reduction was held"). A comparison the metric intervals cannot decide forks the lane.
    """
    import numpy as np

    n_cfg, n, g = len(cfg), len(ev.epochs), len(ev.columns)
    worse = np.where(cfg.kind < 2, math.inf, -math.inf)
    is_min = cfg.kind < 2
    is_rel = (cfg.kind == 0) | (cfg.kind == 2)
    c_id = np.arange(n_cfg, dtype=np.int64)
    brow = np.full(n_cfg, -1, dtype=np.int64)
    nb = np.zeros(n_cfg, dtype=np.int64)
    cd = np.zeros(n_cfg, dtype=np.int64)
    held = np.zeros(n_cfg, dtype=np.int64)  # bit g: a due reduction of group g was held
    death = np.full(n_cfg, -1, dtype=np.int64)
    why = np.zeros(n_cfg, dtype=np.int64)
    group = np.zeros(n_cfg, dtype=np.int64)
    undecided = np.zeros(n_cfg, dtype=bool)
    lo_all = np.append(ev.lo, np.nan)  # index -1 (no best row yet) is replaced below
    hi_all = np.append(ev.hi, np.nan)
    forked = False
    with np.errstate(all="ignore"):
        for i in range(n):
            if not len(c_id):
                break
            k_min, k_rel = is_min[c_id], is_rel[c_id]
            a = cfg.arg[c_id]
            has = brow >= 0
            w = worse[c_id]
            blo = np.where(has, lo_all[brow], w)
            bhi = np.where(has, hi_all[brow], w)
            # torch's bar: best * (1.0 - t), best - t, best * (t + 1.0), best + t; on the interval's both ends
            x1 = np.where(k_rel, blo * a, np.where(k_min, blo - a, blo + a))
            x2 = np.where(k_rel, bhi * a, np.where(k_min, bhi - a, bhi + a))
            bar_lo, bar_hi = np.minimum(x1, x2), np.maximum(x1, x2)
            m_lo, m_hi = float(ev.lo[i]), float(ev.hi[i])
            sure = np.where(k_min, m_hi < bar_lo, m_lo > bar_hi)
            bad = np.where(k_min, ~(m_lo < bar_hi), ~(m_hi > bar_lo))
            open_ = ~sure & ~bad
            better = sure
            if open_.any():
                u = np.flatnonzero(open_)
                if len(c_id) + len(u) > cap:  # too many outcomes to follow: keep those configs, unexcluded
                    gave = np.unique(c_id[u])
                    undecided[gave] = True
                    keep = ~np.isin(c_id, gave)
                    c_id, brow, nb, cd, held, better = (c_id[keep], brow[keep], nb[keep], cd[keep], held[keep],
                                                        better[keep])
                else:
                    forked = True
                    better = better.copy()
                    better[u] = True
                    c_id = np.concatenate((c_id, c_id[u]))
                    brow = np.concatenate((brow, brow[u]))
                    nb = np.concatenate((nb, nb[u]))
                    cd = np.concatenate((cd, cd[u]))
                    held = np.concatenate((held, held[u]))
                    better = np.concatenate((better, np.zeros(len(u), dtype=bool)))
            brow = np.where(better, i, brow)
            nb = np.where(better, 0, nb + 1)
            incd = cd > 0
            cd = cd - incd
            nb = np.where(incd, 0, nb)
            due = nb > cfg.patience[c_id]
            cd = np.where(due, cfg.cooldown[c_id], cd)
            nb = np.where(due, 0, nb)
            miss = np.zeros(len(c_id), dtype=bool)
            reason = np.zeros(len(c_id), dtype=np.int64)
            grp = np.zeros(len(c_id), dtype=np.int64)
            for gi in range(g):
                code = codes[i, gi]
                bit = 1 << gi
                if code == _CHANGED:
                    was_held = (held & bit) != 0
                    m = (~due | was_held) & ~miss
                    reason[m] = np.where(was_held[m], _AFTER_SUPPRESSED, _NO_DUE)
                    grp[m] = gi
                    miss |= m
                elif code == _SAME:
                    held = held | np.where(due, bit, 0)
            if miss.any():
                dead = np.flatnonzero(miss)
                np.maximum.at(death, c_id[dead], i)
                # the reason of the outcome that lasted longest: written in step order, the last one wins
                why[c_id[dead]] = reason[dead]
                group[c_id[dead]] = grp[dead]
                live = ~miss
                c_id, brow, nb, cd, held = c_id[live], brow[live], nb[live], cd[live], held[live]
            if open_.any() and len(c_id):
                stacked = np.unique(np.stack((c_id, brow, nb, cd, held), axis=1), axis=0)
                c_id, brow, nb, cd, held = (np.ascontiguousarray(stacked[:, j]) for j in range(5))
    fits = np.zeros(n_cfg, dtype=bool)
    fits[c_id] = True
    fits |= undecided
    floors = np.zeros((n_cfg, g), dtype=bool)
    free = np.zeros((n_cfg, g), dtype=bool)
    for gi in range(g):
        h = (held >> gi) & 1
        floors[c_id[h == 1], gi] = True
        free[c_id[h == 0], gi] = True
    floors[undecided] = True
    free[undecided] = True
    death[fits] = -1
    return _Timing(fits, undecided, death, why, group, floors, free, forked)


def _timing_exact(ev: _Evidence, codes: Any, cfg: _Configs) -> _Timing:
    """``_timing`` for a log whose metrics are exact (no comparison can be open): every config is one lane of
    ``sweep._replay_lanes``, whose due reductions are then checked against ``codes`` all at once."""
    import numpy as np

    from plateau_forensics.state import PlateauConfig
    from plateau_forensics.sweep import _grid_lanes, _replay_lanes

    n_cfg, n, g = len(cfg), len(ev.epochs), len(ev.columns)
    names = {0: ("min", "rel"), 1: ("min", "abs"), 2: ("max", "rel"), 3: ("max", "abs")}
    explicit = [{"mode": names[int(k)][0], "threshold_mode": names[int(k)][1], "threshold": float(t),
                 "patience": int(p), "cooldown": int(c)}
                for k, t, p, c in zip(cfg.kind, cfg.threshold, cfg.patience, cfg.cooldown, strict=True)]
    keys = ["mode", "threshold_mode", "threshold", "patience", "cooldown"]
    values = [sorted({e[k] for e in explicit}, key=repr) for k in keys]
    lanes, _ = _grid_lanes(PlateauConfig(factor=0.5), keys, values, 1, explicit)
    raw = _replay_lanes([float(x) for x in ev.v], lanes, [1.0])  # the lr is irrelevant: only when steps are due
    steps, lane = raw.ev_step, raw.ev_config
    inf = np.iinfo(np.int64).max
    death = np.full(n_cfg, inf, dtype=np.int64)
    why = np.zeros(n_cfg, dtype=np.int64)
    group = np.zeros(n_cfg, dtype=np.int64)
    held_any = np.zeros((n_cfg, g), dtype=bool)
    for gi in range(g):
        col = codes[:, gi]
        changed = np.flatnonzero(col == _CHANGED)
        held = np.full(n_cfg, inf, dtype=np.int64)  # the first due step where the lr certainly stays
        at_same = col[steps] == _SAME
        np.minimum.at(held, lane[at_same], steps[at_same])
        held_any[:, gi] = held < inf
        no_due = np.full(n_cfg, inf, dtype=np.int64)  # the first certain change with no due reduction
        if changed.size:
            hit = np.zeros((n_cfg, changed.size), dtype=bool)
            pos = np.searchsorted(changed, steps)
            ok = (pos < changed.size) & (changed[np.minimum(pos, changed.size - 1)] == steps)
            hit[lane[ok], pos[ok]] = True
            missing = ~hit.all(axis=1)
            no_due[missing] = changed[np.argmin(hit[missing], axis=1)]
            after = np.searchsorted(changed, held, side="right")  # the first certain change after a held due
            after_held = np.where(after < changed.size, changed[np.minimum(after, changed.size - 1)], inf)
        else:
            after_held = np.full(n_cfg, inf, dtype=np.int64)
        miss = np.minimum(no_due, after_held)
        better = miss < death
        why = np.where(better, np.where(after_held <= no_due, _AFTER_SUPPRESSED, _NO_DUE), why)
        group = np.where(better, gi, group)
        death = np.minimum(death, miss)
    fits = death == inf
    death = np.where(fits, -1, death)
    floors = held_any & fits[:, None]
    free = ~held_any & fits[:, None]
    del n
    return _Timing(fits, np.zeros(n_cfg, dtype=bool), death, why, group, floors, free, False)


def _timing_any(ev: _Evidence, codes: Any, cfg: _Configs) -> _Timing:
    """The timing check: the vectorized sweep for exact metrics, the forking kernel for rounded ones."""
    if ev.exact_metric and len(cfg) > 1:
        return _timing_exact(ev, codes, cfg)
    return _timing(ev, codes, cfg)


# -- the search grid ---------------------------------------------------------------------------------------
def _threshold_grid(ev: _Evidence, tmode: str) -> list[float]:
    import numpy as np

    if tmode == "rel":
        return list(_REL_THRESHOLDS)
    finite = np.abs(ev.v[np.isfinite(ev.v)])
    scale = float(np.median(finite)) if finite.size else 1.0
    scale = scale if scale > 0 else 1.0
    values = {0.0, *_ABS_COMMON, *(float(f"{scale * s:.3g}") for s in _ABS_STEPS)}
    return sorted(values)


def _bounds(ev: _Evidence, changes: list[list[tuple[int, float, float, float, float]]], max_patience: int,
            max_cooldown: int) -> tuple[int, int, int | None, list[str]]:
    """The largest patience and cooldown worth searching, and the sum bound of two successive reductions."""
    n = len(ev.epochs)
    steps = sorted({c[0] for cs in changes for c in cs})
    notes = []
    if steps:
        p_hi = steps[0]  # the first reduction at step s needs num_bad_epochs = patience + 1 <= s + 1
    else:
        p_hi = n  # no reduction seen: any patience from n on never reduces inside the log
    gaps = [b - a for cs in changes for a, b in zip([c[0] for c in cs], [c[0] for c in cs][1:], strict=False)]
    pair = min(gaps) - 1 if gaps else None  # successive reductions are at least patience + cooldown + 1 apart
    if len(steps) >= 2 and pair is not None:
        c_hi = pair
    elif steps:
        c_hi = max(0, n - 1 - steps[-1])
    else:
        c_hi = 0  # no reduction: cooldown never acts
    if p_hi > max_patience:
        notes.append(f"patience searched up to {max_patience} (larger values were not tried)")
        p_hi = max_patience
    if c_hi > max_cooldown:
        notes.append(f"cooldown searched up to {max_cooldown} (larger values were not tried)")
        c_hi = max_cooldown
    return p_hi, c_hi, pair, notes


# -- the result --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """Settings that reproduce the timing: one mode, threshold_mode, patience and cooldown, and the threshold
    intervals (each ``(lo, hi)``: every tested value inside fits; the edges are exact to one float)."""

    mode: str
    threshold_mode: str
    patience: int
    cooldown: int
    thresholds: tuple[tuple[float, float], ...]
    open_above: bool = False  # the largest tested threshold fits too
    undecided: bool = False  # kept only because the rounding left too many outcomes to follow

    def threshold_value(self) -> float:
        """A representative threshold: torch's default 1e-4 when it fits, else the simplest inside."""
        for lo, hi in self.thresholds:
            if lo <= 1e-4 <= hi:
                return 1e-4
        lo, hi = self.thresholds[0]
        return _simplest(lo, hi)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (JSON)."""
        return {"mode": self.mode, "threshold_mode": self.threshold_mode, "patience": self.patience,
                "cooldown": self.cooldown, "thresholds": [list(t) for t in self.thresholds],
                "open_above": self.open_above, "undecided": self.undecided}


@dataclass(frozen=True)
class Miss:
    """A setting that does not reproduce the lr column, and where its last possible outcome first misses."""

    config: dict[str, Any]
    epoch: Any
    why: str

    def as_dict(self) -> dict[str, Any]:
        """Plain data (JSON)."""
        return {"config": self.config, "epoch": self.epoch, "why": self.why}


@dataclass
class Fit:
    """What a log's lr column says about the scheduler that wrote it.

    Attributes:
        source: the log.
        semantics: how the lr column was read: ``during`` (the lr each epoch trained with) or ``after``
            (the lr after each step).
        exact: some searched setting reproduces every row of the lr column.
        families: the (mode, threshold_mode, patience, cooldown) combinations that do, with threshold
        intervals.
        factor: what the lr ratios allow (``FactorFit``).
        min_lr, eps: per group, words for the range the evidence allows.
        closest: when nothing fits, the settings that go furthest, each with the first epoch it misses.
        defaults: whether torch's defaults reproduce the lr (``None``) or the epoch they first miss.
        searched: words for the grid that was searched.
        notes: what the reader should know (rounding, caps, anomalies).
    """

    source: str
    semantics: str
    exact: bool
    families: list[Family]
    factor: FactorFit
    min_lr: list[str]
    eps: list[str]
    closest: list[Miss]
    defaults: Miss | None
    searched: str
    changes: list[list[Any]]
    rows: int
    rounded: bool
    notes: list[str] = field(default_factory=list)
    columns: tuple[str, ...] = ()

    def values(self, key: str) -> list[Any]:
        """The distinct values of ``mode``, ``threshold_mode``, ``patience`` or ``cooldown`` that fit."""
        if key not in ("mode", "threshold_mode", "patience", "cooldown"):
            raise ConfigError(f"values() takes mode, threshold_mode, patience or cooldown, not {key!r}")
        return sorted({getattr(f, key) for f in self.families})

    def configs(self) -> list[PlateauConfig]:
        """One representative ``PlateauConfig`` per family (its simplest threshold, the simplest factor)."""
        out = []
        factor = self.factor.value if self.factor.value is not None else 0.1
        for f in self.families:
            out.append(PlateauConfig(mode=f.mode, factor=factor, patience=f.patience,  # type: ignore[arg-type]
                                     threshold=f.threshold_value(),
                                     threshold_mode=f.threshold_mode, cooldown=f.cooldown))  # type: ignore[arg-type]
        return out

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of ``plateau-trace LOG --fit --format json``."""
        fac = self.factor
        return {
            "source": self.source, "rows": self.rows, "lr_columns": list(self.columns),
            "semantics": self.semantics, "exact": self.exact, "rounded": self.rounded,
            "changes": [[_plain(e) for e in c] for c in self.changes],
            "mode": self.values("mode"), "threshold_mode": self.values("threshold_mode"),
            "patience": self.values("patience"), "cooldown": self.values("cooldown"),
            "factor": {"lo": fac.lo, "hi": fac.hi, "value": fac.value, "exact": fac.exact,
                       "floor_hit_groups": list(fac.floor_hit), "note": fac.note},
            "min_lr": self.min_lr, "eps": self.eps,
            "families": [f.as_dict() for f in self.families],
            "closest": [m.as_dict() for m in self.closest],
            "defaults": None if self.defaults is None else self.defaults.as_dict(),
            "searched": self.searched, "notes": self.notes,
        }

    def render(self, fmt: str = "text") -> str:
        """What ``plateau-trace LOG --fit`` prints (``text``, or ``json``)."""
        if fmt == "json":
            from plateau_forensics.report import jsonable

            return json.dumps(jsonable(self.as_dict()), indent=1, allow_nan=False)
        from plateau_forensics.report import g

        how = {"during": "the lr each epoch trained with", "after": "the lr after each step"}[self.semantics]
        cols = ", ".join(f"'{c}'" for c in self.columns)
        lab = "{:<15}".format
        lines = [f"{lab('fit')}{self.source}: {self.rows} rows, lr column {cols} read as {how}"
                 + (" (rounded: each value stands for an interval)" if self.rounded else "")]
        changes = "; ".join((f"{col}: " if len(self.columns) > 1 else "") + (", ".join(g(e) for e in c) or "none")
                            for col, c in zip(self.columns, self.changes, strict=True))
        if self.exact:
            lines.append(f"{lab('reproduces')}every logged lr: the lr changes after the steps of epochs {changes}"
                         " and nowhere else")
        else:
            lines.append(f"{lab('reproduces')}nothing searched reproduces the logged lr (changes after epochs "
                         f"{changes})")
        if self.families:
            for key in ("mode", "threshold_mode", "patience", "cooldown"):
                values = _values_text(self.values(key))
                if key == "cooldown" and not any(self.changes):
                    values = "any (no reduction in the log)"
                lines.append(f"{lab(key)}{values}")
            lines.append(f"{lab('threshold')}" + "; ".join(
                f"{tm}: {_intervals_text(iv)}" for tm, iv in self._threshold_union().items()))
        fac = self.factor
        if fac.lo is None:
            lines.append(f"{lab('factor')}{fac.note or 'not determined: the lr never decreases in the log'}")
        else:
            if fac.exact:
                span = (f"{fac.lo!r}" if fac.lo == fac.hi else f"{fac.lo!r} .. {fac.hi!r}")
                lines.append(f"{lab('factor')}{g(fac.value)} ({span} reproduce every change bit for bit)")
            else:
                lo_s, hi_s = _pair_text(fac.lo, fac.hi)
                lines.append(f"{lab('factor')}{g(fac.value)} (any factor in [{lo_s}, {hi_s}] fits the "
                             f"{fac.changes} visible changes)")
            if fac.floor_hit:
                lines.append(lab("") + "the last change of " + ", ".join(self.columns[gi] for gi in fac.floor_hit)
                             + " is a drop to min_lr, not a multiplication")
        for gi, (m, e) in enumerate(zip(self.min_lr, self.eps, strict=True)):
            tag = f" {self.columns[gi]}" if len(self.min_lr) > 1 else ""
            lines.append(f"{lab('min_lr' + tag)}{m}")
            lines.append(f"{lab('eps' + tag)}{e}")
        if self.families:
            lines.append(f"{lab('settings')}{len(self.families)} combination"
                         f"{'s' if len(self.families) != 1 else ''} fit:")
            for f in self.families[:12]:
                lines.append(f"{lab('')}mode={f.mode} threshold_mode={f.threshold_mode} patience={f.patience} "
                             f"cooldown={f.cooldown} threshold in {_intervals_text(f.thresholds, f.open_above)}"
                             + (" (not excluded: the rounding leaves it open)" if f.undecided else ""))
            if len(self.families) > 12:
                lines.append(f"{lab('')}... ({len(self.families) - 12} more; --format json lists all)")
        for m in self.closest:
            lines.append(f"{lab('closest')}{_config_text(m.config)}: first misses at epoch {g(m.epoch)} ({m.why})")
        if self.defaults is None:
            lines.append(f"{lab('defaults')}torch's defaults (mode=min factor=0.1 patience=10 threshold=1e-4 rel "
                         "cooldown=0) reproduce the logged lr")
        else:
            lines.append(f"{lab('defaults')}torch's defaults do not reproduce it: first miss at epoch "
                         f"{g(self.defaults.epoch)} ({self.defaults.why})")
        lines.append(f"{lab('searched')}{self.searched}")
        for note in self.notes:
            lines.append(f"{lab('note')}{note}")
        return "\n".join(lines)

    def _threshold_union(self) -> dict[str, list[tuple[float, float]]]:
        """Per threshold_mode, the union of the families' intervals (touching ones joined, as printed)."""
        from plateau_forensics.report import g

        out: dict[str, list[tuple[float, float]]] = {}
        for f in self.families:
            out.setdefault(f.threshold_mode, []).extend(f.thresholds)
        merged = {}
        for tm, ivs in out.items():
            ivs = sorted(ivs)
            acc: list[tuple[float, float]] = []
            for lo, hi in ivs:
                if acc and (lo <= math.nextafter(acc[-1][1], math.inf) or g(lo) == g(acc[-1][1])):
                    acc[-1] = (acc[-1][0], max(acc[-1][1], hi))
                else:
                    acc.append((lo, hi))
            merged[tm] = acc
        return merged

    def __repr__(self) -> str:
        word = "reproduces" if self.exact else "does not reproduce"
        return f"<Fit of {self.source}: {len(self.families)} families {word} the lr>"


def _plain(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def _pair_text(lo: float, hi: float) -> tuple[str, str]:
    """Two different bounds with the fewest digits (>= 6) that still tell them apart."""
    for digits in range(6, 18):
        a, b = f"{lo:.{digits}g}", f"{hi:.{digits}g}"
        if a != b or lo == hi:
            return a, b
    return repr(lo), repr(hi)


def _level(lo: float, hi: float) -> str:
    """An lr level: its value when the interval is narrow (a 4-digit print tells it), else the interval."""
    from plateau_forensics.report import g

    mid = (lo + hi) / 2
    if lo == hi or (mid and abs(hi - lo) <= 2e-3 * abs(mid)):
        return g(mid)
    return f"[{g(lo)}, {g(hi)}]"


def _values_text(values: Sequence[Any]) -> str:
    if not values:
        return "none"
    if all(isinstance(v, int) for v in values) and len(values) > 2 and values == list(
            range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return ", ".join(str(v) for v in values)


def _intervals_text(ivs: Sequence[tuple[float, float]], open_above: bool = False) -> str:
    from plateau_forensics.report import g

    parts = []
    for lo, hi in ivs:
        parts.append(g(lo) if lo == hi else f"[{g(lo)}, {g(hi)}]")
    return " or ".join(parts) + (" (and above)" if open_above else "")


def _config_text(cfg: Mapping[str, Any]) -> str:
    from plateau_forensics.report import g

    return " ".join(f"{k}={g(v) if isinstance(v, float) else v}" for k, v in cfg.items())


_WHY = {
    _NO_DUE: "the lr changes there, but no reduction is due",
    _AFTER_SUPPRESSED: "the lr changes there, after an earlier due reduction left it unchanged",
}


# -- the fit -----------------------------------------------------------------------------------------------
def _grid(ev: _Evidence, p_hi: int, c_hi: int, pair: int | None, fixed: Mapping[str, Any]
          ) -> list[tuple[str, str, float, int, int]]:
    modes = [fixed["mode"]] if "mode" in fixed else ["min", "max"]
    tmodes = [fixed["threshold_mode"]] if "threshold_mode" in fixed else ["rel", "abs"]
    rows = []
    for m in modes:
        for tm in tmodes:
            thresholds = [float(fixed["threshold"])] if "threshold" in fixed else _threshold_grid(ev, tm)
            patiences = [int(fixed["patience"])] if "patience" in fixed else range(0, p_hi + 1)
            cooldowns = [int(fixed["cooldown"])] if "cooldown" in fixed else range(0, c_hi + 1)
            for p in patiences:
                for c in cooldowns:
                    if pair is not None and "patience" not in fixed and "cooldown" not in fixed and p + c > pair:
                        continue
                    for t in thresholds:
                        rows.append((m, tm, t, p, c))
    return rows


def _refine_all(ev: _Evidence, codes: Any, jobs: list[tuple[float, float, str, str, int, int]],
                probes: int = 15) -> list[float]:
    """For each job ``(fits, misses, mode, threshold_mode, patience, cooldown)``: the float nearest ``misses``
    on the way from ``fits`` that still fits, by k-section on the bits (nonnegative floats order like their
    bit
    patterns); every job's probes of a round run as lanes of one timing sweep."""
    import numpy as np

    state = [[np.float64(a).view(np.int64).item(), np.float64(b).view(np.int64).item()] for a, b, *_ in jobs]
    while True:
        lanes, owners = [], []
        for j, (a, b) in enumerate(state):
            if abs(b - a) <= 1:
                continue
            step = (b - a) / (probes + 1)
            bits = sorted({int(a + step * (q + 1)) for q in range(probes)} - {a, b}, reverse=a > b)
            for x in bits:
                lanes.append((x, j))
            owners.append(j)
        if not lanes:
            break
        rows = [(jobs[j][2], jobs[j][3], float(np.int64(x).view(np.float64)), jobs[j][4], jobs[j][5])
                for x, j in lanes]
        ok = _timing_any(ev, codes, _configs(rows)).fits
        done: set[int] = set()
        for (x, j), good in zip(lanes, ok, strict=True):
            if j in done:
                continue
            if good:
                state[j][0] = x
            else:
                state[j][1] = x
                done.add(j)
    return [float(np.int64(a).view(np.float64)) for a, _ in state]


def _families(ev: _Evidence, codes: Any, rows: list[tuple[str, str, float, int, int]], t: _Timing,
              refine: bool) -> list[Family]:
    groups: dict[tuple[str, str, int, int], list[tuple[float, bool, bool]]] = {}
    for k, (m, tm, thr, p, c) in enumerate(rows):
        groups.setdefault((m, tm, p, c), []).append((thr, bool(t.fits[k]), bool(t.undecided[k])))
    out = []
    pending = []
    for (m, tm, p, c), items in groups.items():
        items.sort()
        if not any(ok for _, ok, _ in items):
            continue
        runs = []
        j = 0
        while j < len(items):
            if not items[j][1]:
                j += 1
                continue
            start = j
            while j + 1 < len(items) and items[j + 1][1]:
                j += 1
            runs.append((start, j))
            j += 1
        pending.append(((m, tm, p, c), items, runs))
    jobs = []
    for (m, tm, p, c), items, runs in pending:
        for start, stop in runs:
            if refine and start > 0:
                jobs.append((items[start][0], items[start - 1][0], m, tm, p, c))
            if refine and stop + 1 < len(items):
                jobs.append((items[stop][0], items[stop + 1][0], m, tm, p, c))
    edges = iter(_refine_all(ev, codes, jobs) if jobs else [])
    for (m, tm, p, c), items, runs in pending:
        ivs = []
        undecided = False
        for start, stop in runs:
            lo = next(edges) if refine and start > 0 else items[start][0]
            hi = next(edges) if refine and stop + 1 < len(items) else items[stop][0]
            undecided |= any(u for _, _, u in items[start:stop + 1])
            ivs.append((lo, hi))
        out.append(Family(m, tm, p, c, tuple(ivs), open_above=items[-1][1], undecided=undecided))
    out.sort(key=lambda f: (f.mode, f.threshold_mode, f.patience, f.cooldown))
    return out


def _floor_words(ev: _Evidence, semantics: str, t: _Timing, fits: Any, fac: FactorFit,
                 changes: list[list[tuple[int, float, float, float, float]]]) -> tuple[list[str], list[str]]:
    """Per group: what min_lr and eps may be, from the last level and whether a due reduction was held."""
    import numpy as np

    from plateau_forensics.report import g

    min_words, eps_words = [], []
    for gi in range(len(ev.columns)):
        col = ev.lr_lo[:, gi]
        finite = np.flatnonzero(np.isfinite(col))
        last = int(finite[-1]) if finite.size else None
        lo = float(ev.lr_lo[last, gi]) if last is not None else math.nan
        hi = float(ev.lr_hi[last, gi]) if last is not None else math.nan
        level = _level(lo, hi)
        need = bool(t.floors[fits, gi].any()) if fits.any() else False
        without = bool(t.free[fits, gi].any()) if fits.any() else False
        drops = [c[1] - c[4] for c in changes[gi] if c[4] < c[1]]  # the smallest a change can have been
        smallest = min(drops) if drops else None
        if gi in fac.floor_hit:
            min_words.append(f"= the last level {level} (the lr drops to it and stays)")
        elif need and not without:
            min_words.append(f"in [{level} - eps, {level}]: the lr stops at {level} while reductions are due "
                             f"(or eps >= that level x (1 - factor), with min_lr <= level x factor)")
        elif need:
            min_words.append(f"<= {level}; some fitting settings need the floor at {level} (a due reduction "
                             "leaves the lr there), others reduce no more")
        else:
            min_words.append(f"<= {level} (no due reduction was held: the floor, if any, was never reached)")
        if smallest is None:
            eps_words.append("not determined (no visible decrease)")
        else:
            eps_words.append(f"< {g(smallest)} (every visible decrease was larger)"
                             + ("; or large enough to hold the lr at its last level"
                                if need and gi not in fac.floor_hit else ""))
    return min_words, eps_words


def check(losses: Any, configs: Sequence[PlateauConfig], *, lrs: Sequence[float] | None = None,
          semantics: str = "during", **log_options: Any) -> list[bool]:
    """For each config, whether it may have written the log's lr column (its factor checked against the visible
    changes too); ``False`` only when every outcome the log's rounding allows misses.

    Raises:
        LossLogError: no lr column.
    """
    log = _read(losses, log_options)
    ev = _evidence(log, lrs)
    changes = _changes(ev, semantics)
    out = []
    for cfg in configs:
        fac = _factor(ev, changes, float(cfg.factor))
        codes = _codes(ev, semantics, fac if fac.lo is not None else FactorFit(cfg.factor, cfg.factor, None, False))
        t = _timing(ev, codes, _configs([(cfg.mode, cfg.threshold_mode, float(cfg.threshold), int(cfg.patience),
                                          int(cfg.cooldown))]))
        ok = bool(t.fits[0]) and (fac.lo is not None or not any(changes))
        if ok:  # where every fitting outcome needs a due reduction held, this config's min_lr/eps must hold it
            ok = all(bool(t.free[0, gi]) or _holds(ev, gi, cfg) for gi in range(len(ev.columns)))
        out.append(ok)
    return out


def _holds(ev: _Evidence, gi: int, cfg: PlateauConfig) -> bool:
    """``cfg`` leaves group ``gi``'s last logged lr unchanged at a due reduction: ``old - max(old * factor,
    min_lr) <= eps`` for some lr the last level stands for (the left side grows with the lr: test its low end)."""
    import numpy as np

    finite = np.flatnonzero(np.isfinite(ev.lr_lo[:, gi]))
    if not finite.size:
        return True
    old = float(ev.lr_lo[finite[-1], gi])
    floors = cfg.min_lrs_for(len(ev.columns))
    return old - max(old * cfg.factor, floors[gi]) <= cfg.eps


def _read(losses: Any, log_options: Mapping[str, Any]) -> Any:
    if hasattr(losses, "metrics") and hasattr(losses, "anomalies"):
        return losses
    if hasattr(losses, "_cols") and hasattr(losses, "starts"):
        if losses.log is None:
            raise LossLogError("this trace has no log with an lr column to fit")
        return losses.log
    from plateau_forensics.losses import read_losses

    return read_losses(losses, **{k: v for k, v in log_options.items() if v is not None})


def fit(
    losses: Any,
    *,
    lrs: Sequence[float] | None = None,
    fixed: Mapping[str, Any] | None = None,
    semantics: str | None = None,
    max_patience: int = 100,
    max_cooldown: int = 50,
    refine: bool = True,
    metric: str | None = None,
    epoch_column: str | None = None,
    lr_columns: Sequence[str] | None = None,
) -> Fit:
    """The ReduceLROnPlateau settings that reproduce the log's lr column exactly, or the closest ones.

    Args:
        losses: a log path, a ``LossLog``, a ``Trace`` with its log, or anything ``read_losses`` accepts.
        lrs: the lrs before the first step (default: the first row's logged lr).
        fixed: hyperparameters known in advance (``{"factor": 0.5}``); the search keeps them.
        semantics: ``"during"`` (the lr column holds the lr each epoch trained with, the default reading),
            ``"after"`` (the lr after each step), or None: ``during``, then ``after`` if nothing fits.
        max_patience, max_cooldown: the largest values searched.
        refine: bisect the threshold intervals' edges (off: the edges are the tested values).
        metric, epoch_column, lr_columns: column choices when the log is read here.

    Returns:
        A ``Fit``.

    Raises:
        LossLogError: the log has no lr column.
        ConfigError: a ``fixed`` key that is not a hyperparameter, or an unknown ``semantics``.
    """
    fixed = dict(fixed or {})
    unknown = set(fixed) - {"mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr", "eps"}
    if unknown:
        raise ConfigError(f"fixed: unknown hyperparameter {sorted(unknown)[0]!r}")
    if semantics not in (None, "during", "after"):
        raise ConfigError(f"semantics: {semantics!r} is not 'during' or 'after'")
    log = _read(losses, {"metric": metric, "epoch_column": epoch_column, "lr_columns": lr_columns})
    ev = _evidence(log, lrs)
    first = _fit_one(ev, semantics or "during", fixed, max_patience, max_cooldown, refine)
    if first.exact or semantics is not None:
        return first
    second = _fit_one(ev, "after", fixed, max_patience, max_cooldown, refine)
    if second.exact:
        second.notes.append("read as the lr after each step: read as the lr each epoch trained with, nothing "
                            "searched reproduces it (a log written after scheduler.step())")
        return second
    return first


def _fit_one(ev: _Evidence, semantics: str, fixed: Mapping[str, Any], max_patience: int, max_cooldown: int,
             refine: bool) -> Fit:
    import numpy as np

    changes = _changes(ev, semantics)
    fac = _factor(ev, changes, float(fixed["factor"]) if "factor" in fixed else None)
    codes = _codes(ev, semantics, fac)
    p_hi, c_hi, pair, notes = _bounds(ev, changes, max_patience, max_cooldown)
    rows = _grid(ev, p_hi, c_hi, pair, fixed)
    t = _timing_any(ev, codes, _configs(rows))
    rises = [(gi, c[0]) for gi, cs in enumerate(changes) for c in cs if c[3] > c[2]]
    families = _families(ev, codes, rows, t, refine) if t.fits.any() else []
    value_ok = fac.lo is not None or not any(changes)
    exact = bool(families) and value_ok and not rises
    epochs = ev.epochs
    notes = list(ev.notes) + notes
    if rises:
        gi, s = rises[0]
        notes.append(f"the lr rises after epoch {epochs[s]}: ReduceLROnPlateau never raises it (warm-up, another "
                     "scheduler or a hand edit wrote it)")
    if t.forked:
        notes.append("the log is rounded: comparisons its precision cannot decide were followed both ways, and a "
                     "setting is excluded only when every way misses")
    if any(f.undecided for f in families):
        notes.append("some settings are kept only because too many undecidable comparisons were left to follow")
    closest: list[Miss] = []
    if not exact:
        order = np.lexsort((np.arange(len(rows)), -t.death))
        seen = set()
        for k in order:
            if t.fits[k]:
                continue
            m, tm, thr, p, c = rows[int(k)]
            key = (m, tm, p, c)
            if key in seen:
                continue
            seen.add(key)
            closest.append(Miss({"mode": m, "threshold_mode": tm, "threshold": thr, "patience": p, "cooldown": c},
                                epochs[int(t.death[k])], _WHY.get(int(t.why[k]), "")))
            if len(closest) == 5:
                break
    defaults = _defaults(ev, codes, fac, changes)
    min_words, eps_words = _floor_words(ev, semantics, t, t.fits, fac, changes)
    n_thr = {tm: len(_threshold_grid(ev, tm)) for tm in ("rel", "abs")}
    searched = (f"{len(rows)} settings: mode {'/'.join(sorted({r[0] for r in rows}))}, thresholds "
                + ", ".join(f"{n} {tm}" for tm, n in n_thr.items())
                + f", patience 0..{p_hi}, cooldown 0..{c_hi}"
                + (f" with patience + cooldown <= {pair} (the closest two reductions)" if pair is not None else ""))
    return Fit(source=ev.source, semantics=semantics, exact=exact, families=families, factor=fac,
               min_lr=min_words, eps=eps_words, closest=closest, defaults=defaults, searched=searched,
               changes=[[epochs[c[0]] for c in cs] for cs in changes], rows=len(epochs),
               rounded=not (ev.exact_lr and ev.exact_metric), notes=notes, columns=ev.columns)


def _defaults(ev: _Evidence, codes: Any, fac: FactorFit,
              changes: list[list[tuple[int, float, float, float, float]]]) -> Miss | None:
    """None when torch's defaults reproduce the log, else where they first miss."""
    d = PlateauConfig()
    t = _timing(ev, codes, _configs([(d.mode, d.threshold_mode, d.threshold, d.patience, d.cooldown)]))
    factor_ok = not any(changes) or (fac.lo is not None and fac.lo <= d.factor <= fac.hi)
    cfg = {"mode": d.mode, "threshold_mode": d.threshold_mode, "threshold": d.threshold, "patience": d.patience,
           "cooldown": d.cooldown, "factor": d.factor}
    if not t.fits[0]:
        return Miss(cfg, ev.epochs[int(t.death[0])], _WHY.get(int(t.why[0]), ""))
    if not factor_ok:
        first = min((c[0] for cs in changes for c in cs), default=0)
        return Miss(cfg, ev.epochs[first], "the timing fits, but the lr ratio is not factor 0.1")
    return None


class _CallableModule(types.ModuleType):
    """``plateau_forensics.fit`` may be this module (imported as a submodule first) or the function; both
    call ``fit()``, so ``pf.fit(...)`` works whichever Python bound."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return fit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
