"""Sweeps: one replay per configuration of a grid, run side by side as numpy array lanes.

Each lane performs, bit for bit, the IEEE double operations ``engine.run`` performs for its configuration,
in the same order: the bar ``best * (1.0 - threshold)`` (``best - threshold``, ``best * (threshold + 1.0)``,
``best + threshold``), a strict comparison, then cooldown, then patience; a due reduction computes
``old * factor``, takes ``max(., min_lr)`` as Python's ``max`` does (the first argument unless the second is
larger, so NaN behaves the same) and applies it when ``old - new > eps``. Only the bookkeeping differs: the
counters are kept as the step at which ``num_bad_epochs`` would pass ``patience`` (see ``_replay_lanes``).
numpy loads when a sweep runs; pandas and matplotlib only in ``to_frame`` and ``plot``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from plateau_forensics.errors import ConfigError
from plateau_forensics.state import PlateauConfig

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["Sweep", "sweep", "parse_sweep", "SWEEP_KEYS", "COLUMNS"]

#: Keys a sweep can vary: torch's constructor names.
SWEEP_KEYS = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr", "eps")
#: Result columns besides the swept keys (``table(sort=...)`` and ``--sort`` accept these and the keys).
COLUMNS = ("reductions", "suppressed", "first_reduction", "reduction_epochs", "final_lr", "epochs_at_lr",
           "final_best", "final_num_bad_epochs", "final_cooldown_counter")
_KINDS = {("min", "rel"): 0, ("min", "abs"): 1, ("max", "rel"): 2, ("max", "abs"): 3}
_INT_KEYS = ("patience", "cooldown")


# -- the grid ----------------------------------------------------------------------------------------------
def _parse_value(key: str, text: str) -> Any:
    text = text.strip()
    try:
        if key in _INT_KEYS:
            return int(text)
        if key in ("mode", "threshold_mode"):
            return text
        if key == "min_lr" and "/" in text:  # one floor per param group, as the grid writes lrs
            return tuple(float(v) for v in text.split("/"))
        return float(text)
    except ValueError:
        kind = "an integer" if key in _INT_KEYS else "a number"
        raise ConfigError(f"--sweep {key}: {text!r} is not {kind}") from None


def _range(key: str, spec: str) -> list[int]:
    """``0..20`` (inclusive) or ``0..20..2`` (with a step), integers only."""
    parts = spec.split("..")
    if len(parts) not in (2, 3) or key not in _INT_KEYS:
        if key not in _INT_KEYS:
            raise ConfigError(f"--sweep {key}={spec}: ranges A..B are for patience and cooldown; list the "
                              f"values of {key} with commas (e.g. {key}=0.1,0.2,0.5)")
        raise ConfigError(f"--sweep {key}={spec}: use A..B or A..B..STEP")
    try:
        lo, hi = int(parts[0]), int(parts[1])
        step = int(parts[2]) if len(parts) == 3 else 1
    except ValueError:
        raise ConfigError(f"--sweep {key}={spec}: A..B needs integers") from None
    if step <= 0 or hi < lo:
        raise ConfigError(f"--sweep {key}={spec}: the range is empty (A <= B and STEP > 0)")
    return list(range(lo, hi + 1, step))


def parse_sweep(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["patience=0..20", "factor=0.1,0.2,0.5"]`` -> ``{"patience": [0, ..., 20], "factor": [0.1, 0.2, 0.5]}``.

    ``A..B`` (inclusive) and ``A..B..STEP`` are integer ranges (patience, cooldown); other values are listed
    with commas; ``min_lr`` takes one value per param group joined with ``/``. A key given twice collects the
    values of both, in order, without repeats.

    Raises:
        ConfigError: an item without ``=``, an unknown key, an empty or malformed value.
    """
    out: dict[str, list[Any]] = {}
    for item in items:
        key, sep, spec = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in SWEEP_KEYS:
            raise ConfigError(f"--sweep {item!r}: use KEY=A..B or KEY=V1,V2,... with KEY one of "
                              f"{', '.join(SWEEP_KEYS)}")
        parts = [v.strip() for v in spec.split(",") if v.strip()]
        if not parts:
            raise ConfigError(f"--sweep {item!r}: no values after '='")
        bucket = out.setdefault(key, [])
        for part in parts:
            values = _range(key, part) if ".." in part else [_parse_value(key, part)]
            bucket.extend(v for v in values if v not in bucket)
    return out


@dataclass(frozen=True)
class _Lanes:
    """The configurations as arrays, one element per lane, lanes ordered by comparison kind."""

    n: int
    perm: Any  # lane (kind order) -> configuration index
    slices: tuple[tuple[int, int, int], ...]  # (start, stop, kind) runs of lanes
    arg: Any  # the multiplier (rel) or threshold (abs) of each lane's bar
    worse: Any  # the initial best (mode_worse)
    patience: Any
    factor: Any
    eps: Any
    cooldown: Any
    min_lrs: Any  # (lanes, groups)
    any_negative_patience: bool


def _check_value(base: PlateauConfig, key: str, value: Any, n_groups: int) -> Any:
    """The value as the engine would use it, or ConfigError when torch would refuse it (or a sweep can't run it)."""
    if key not in SWEEP_KEYS:
        raise ConfigError(f"unknown hyperparameter {key!r}: use one of {', '.join(SWEEP_KEYS)}")
    if key in _INT_KEYS and (isinstance(value, bool) or not isinstance(value, int)):
        if not (isinstance(value, float) and value.is_integer()):
            raise ConfigError(f"sweep: {key}={value!r} is not an integer")
        value = int(value)
    if key in ("factor", "threshold", "eps") and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"sweep: {key}={value!r} is not a number")
    if key == "min_lr":
        if isinstance(value, (list, tuple)):
            value = tuple(float(v) for v in value)
            if len(value) != n_groups:
                raise ConfigError(f"sweep: min_lr={'/'.join(map(str, value))} has {len(value)} values for "
                                  f"{n_groups} param groups")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"sweep: min_lr={value!r} is not a number")
    try:
        replace(base, **{key: value})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"sweep: {key}={value!r}: {exc}") from exc
    return value


def _grid_lanes(base: PlateauConfig, keys: Sequence[str], values: Sequence[Sequence[Any]], n_groups: int,
                explicit: Sequence[Mapping[str, Any]] | None) -> tuple[_Lanes, dict[str, Any]]:
    """Per-lane parameter arrays for the cartesian product of ``values`` (first key outermost), or for the
    ``explicit`` list of overrides; also the per-configuration value index of every key."""
    import numpy as np

    for k in _INT_KEYS:
        v = getattr(base, k)
        if k not in keys and (isinstance(v, bool) or not float(v).is_integer()):
            raise ConfigError(f"sweep: {k}={v!r} is not an integer")
    if explicit is None:
        sizes = [len(v) for v in values]
        n = math.prod(sizes) if sizes else 1
        index = {}
        stride = n
        for key, size in zip(keys, sizes, strict=True):
            stride //= size
            index[key] = (np.arange(n) // stride) % size
    else:
        n = len(explicit)
        index = {key: np.array([next(j for j, w in enumerate(vals) if _same(ov[key], w)) if key in ov else -1
                                for ov in explicit], dtype=np.int64)
                 for key, vals in zip(keys, values, strict=True)}

    def column(key: str, convert: Any, dtype: Any) -> Any:
        default = convert(getattr(base, key))
        if key not in index:
            return np.full(n, default, dtype=dtype)
        table = np.array([convert(v) for v in values[list(keys).index(key)]] + [default], dtype=dtype)
        return table[index[key]]  # -1 (an explicit config without the key) picks the base value

    mode = column("mode", lambda v: 0 if v == "min" else 1, np.int8)
    tmode = column("threshold_mode", lambda v: 0 if v == "rel" else 1, np.int8)
    threshold = column("threshold", float, np.float64)
    patience = column("patience", int, np.int64)
    cooldown = column("cooldown", int, np.int64)
    factor = column("factor", float, np.float64)
    eps = column("eps", float, np.float64)

    def floors(v: Any) -> tuple[float, ...]:
        return tuple(float(x) for x in v) if isinstance(v, tuple) else (float(v),) * n_groups

    if "min_lr" in index:
        table = np.array([floors(v) for v in values[list(keys).index("min_lr")]] + [floors(base.min_lr)],
                         dtype=np.float64).reshape(-1, n_groups)
        min_lrs = table[index["min_lr"]]
    else:
        min_lrs = np.tile(np.array(floors(base.min_lr), dtype=np.float64), (n, 1))
    kind = (mode * 2 + tmode).astype(np.int8)
    perm = np.argsort(kind, kind="stable")
    kind_sorted = kind[perm]
    slices = []
    for k in range(4):
        lo, hi = np.searchsorted(kind_sorted, k, "left"), np.searchsorted(kind_sorted, k, "right")
        if hi > lo:
            slices.append((int(lo), int(hi), k))
    thr = threshold[perm]
    arg = np.empty(n, dtype=np.float64)
    for lo, hi, k in slices:
        if k == 0:
            np.subtract(1.0, thr[lo:hi], out=arg[lo:hi])  # torch: best * (1.0 - threshold)
        elif k == 2:
            np.add(thr[lo:hi], 1.0, out=arg[lo:hi])  # torch: best * (threshold + 1.0)
        else:
            arg[lo:hi] = thr[lo:hi]
    worse = np.where(mode[perm] == 0, math.inf, -math.inf)
    lanes = _Lanes(
        n=n, perm=perm, slices=tuple(slices), arg=arg, worse=worse, patience=patience[perm], factor=factor[perm],
        eps=eps[perm], cooldown=cooldown[perm], min_lrs=np.ascontiguousarray(min_lrs[perm]),
        any_negative_patience=bool((patience < 0).any()),
    )
    return lanes, index


@dataclass
class _Raw:
    """What the lanes did, in configuration order."""

    best: Any
    num_bad: Any
    cooldown: Any
    lrs: Any  # (configs, groups) after the last step
    ev_step: Any  # one entry per due reduction (reduced or suppressed), in step order
    ev_config: Any
    ev_changed: Any  # (events,) bool: some group's lr changed (reduced) or none did (suppressed)
    ev_lrs: Any  # (events, groups): every group's lr after the step


def _replay_lanes(metrics: Sequence[float], lanes: _Lanes, lrs0: Sequence[float]) -> _Raw:
    """Step every lane through ``metrics``; torch's order per step, as in ``engine._advance``.

    Instead of ``num_bad_epochs`` and ``cooldown_counter`` each lane keeps ``deadline``: a reduction is due at
    step ``i`` iff ``i > deadline``. With ``a`` the last step that improved or reduced (``num_bad_epochs``
    reset)
    and ``c`` the last cooldown step after a reduction at ``r`` (``r + cooldown``), torch's counters after
    step
    ``i`` are ``num_bad_epochs = i - max(a, min(i, c))``; so ``num_bad_epochs > patience`` iff
    ``i > max(a, c) + patience`` for ``patience >= 0`` (lanes with ``patience < 0`` reduce at every step, as
    ``0 > patience``). An improvement sets ``deadline = max(deadline, i + patience)``, a reduction
    ``deadline = i + max(cooldown, 0) + patience``. The counters are rebuilt from it after the last step.
    """
    import numpy as np

    n, g = lanes.n, len(lrs0)
    best = lanes.worse.copy()
    deadline = lanes.patience - 1  # a = -1: the fresh scheduler's num_bad_epochs is 0 "after step -1"
    last_red = np.full(n, -1, dtype=np.int64)
    cols = [np.full(n, float(v), dtype=np.float64) for v in lrs0]  # one lr array per param group
    floors = [np.ascontiguousarray(lanes.min_lrs[:, gi]) for gi in range(g)]
    pc = lanes.patience + np.maximum(lanes.cooldown, 0)
    bar = np.empty(n, dtype=np.float64)
    better = np.empty(n, dtype=bool)
    due = np.empty(n, dtype=bool)
    ip = np.empty(n, dtype=np.int64)
    always = lanes.patience < 0 if lanes.any_negative_patience else None
    ev_step: list[int] = []
    ev_idx: list[Any] = []
    ev_changed: list[Any] = []
    ev_lrs: list[list[Any]] = [[] for _ in range(g)]
    slices = [(k, best[lo:hi], bar[lo:hi], lanes.arg[lo:hi], better[lo:hi]) for lo, hi, k in lanes.slices]
    with np.errstate(all="ignore"):  # inf * 0, overflow: IEEE results, as in Python, without warnings
        for i, cur in enumerate(metrics):
            for k, b, o, a, bt in slices:
                if k == 0:
                    np.multiply(b, a, out=o)
                    np.less(cur, o, out=bt)
                elif k == 1:
                    np.subtract(b, a, out=o)
                    np.less(cur, o, out=bt)
                elif k == 2:
                    np.multiply(b, a, out=o)
                    np.greater(cur, o, out=bt)
                else:
                    np.add(b, a, out=o)
                    np.greater(cur, o, out=bt)
            np.copyto(best, cur, where=better)
            np.add(lanes.patience, i, out=ip)
            np.maximum(deadline, ip, out=deadline, where=better)
            np.less(deadline, i, out=due)
            if always is not None:
                np.logical_or(due, always, out=due)
            if not due.any():
                continue
            idx = np.flatnonzero(due)
            factor, eps = lanes.factor[idx], lanes.eps[idx]
            any_changed = None
            for gi in range(g):
                col = cols[gi]
                old = col[idx]
                new = old * factor
                floor = floors[gi][idx]
                np.copyto(new, floor, where=floor > new)  # Python's max(new, floor)
                changed = (old - new) > eps
                np.copyto(old, new, where=changed)
                col[idx] = old
                ev_lrs[gi].append(old)
                any_changed = changed if any_changed is None else any_changed | changed
            deadline[idx] = pc[idx] + i
            last_red[idx] = i
            ev_step.append(i)
            ev_idx.append(idx)
            ev_changed.append(any_changed)
    lrs = np.stack(cols, axis=1)
    steps = len(metrics)
    j = steps - 1
    if steps:
        in_cooldown = (last_red >= 0) & (last_red + lanes.cooldown >= j)
        num_bad = np.where(in_cooldown | (always if always is not None else False), 0,
                           j - (deadline - lanes.patience))
        num_bad = np.where(last_red == j, 0, num_bad)
        cd = np.where(last_red < 0, 0, np.where(lanes.cooldown <= 0, lanes.cooldown,
                                                  np.maximum(lanes.cooldown - (j - last_red), 0)))
    else:
        num_bad = np.zeros(n, dtype=np.int64)
        cd = np.zeros(n, dtype=np.int64)
    inv = lanes.perm
    out_best, out_nb, out_cd, out_lrs = (np.empty_like(best), np.empty_like(num_bad), np.empty_like(cd),
                                         np.empty_like(lrs))
    out_best[inv], out_nb[inv], out_cd[inv], out_lrs[inv] = best, num_bad, cd, lrs
    if ev_idx:
        counts = [len(x) for x in ev_idx]
        e_step = np.repeat(np.asarray(ev_step, dtype=np.int64), counts)
        e_cfg = inv[np.concatenate(ev_idx)]
        e_changed = np.concatenate(ev_changed)
        e_lrs = np.stack([np.concatenate(parts) for parts in ev_lrs], axis=1)
    else:
        e_step = np.zeros(0, dtype=np.int64)
        e_cfg = np.zeros(0, dtype=np.int64)
        e_changed = np.zeros(0, dtype=bool)
        e_lrs = np.zeros((0, g), dtype=np.float64)
    return _Raw(out_best, out_nb, out_cd, out_lrs, e_step, e_cfg, e_changed, e_lrs)


# -- the result ---------------------------------------------------------------------------------------------
@dataclass
class Sweep:
    """One fresh replay per configuration over the same metrics, as columns (numpy arrays).

    Configuration ``k`` is ``config(k)``; the grid order is that of nested loops, the first key outermost.

    Attributes:
        keys: the swept hyperparameters, in grid order.
        values: the values of each swept key.
        base: the hyperparameters the swept values replace.
        epochs: the log's epoch label of every step.
        metrics: the value passed to every ``step()``.
        initial_lrs: every group's lr before the first step.
        reduced: per configuration, the number of steps that reduced some group's lr.
        suppressed: per configuration, the due reductions that changed no lr (``min_lr`` or ``eps``).
        final_lrs: (configurations, groups): every group's lr after the last step.
        final_best, final_num_bad_epochs, final_cooldown_counter: the counters after the last step.
    """

    keys: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]
    base: PlateauConfig
    epochs: tuple[Any, ...]
    metrics: tuple[float, ...]
    initial_lrs: tuple[float, ...]
    _index: dict[str, Any]
    _raw: _Raw
    _explicit: tuple[Mapping[str, Any], ...] | None = None

    def __post_init__(self) -> None:
        import numpy as np

        raw = self._raw
        n = len(self)
        self._grouped: tuple[Any, Any] | None = None
        self._label_array: Any = None
        self.reduced = np.bincount(raw.ev_config[raw.ev_changed], minlength=n)
        self.suppressed = np.bincount(raw.ev_config[~raw.ev_changed], minlength=n)
        self.final_lrs = raw.lrs
        self.final_best = raw.best
        self.final_num_bad_epochs = raw.num_bad
        self.final_cooldown_counter = raw.cooldown

    def __len__(self) -> int:
        return int(self._raw.best.shape[0])

    @property
    def n_groups(self) -> int:
        """The number of param groups."""
        return len(self.initial_lrs)

    # -- one configuration -----------------------------------------------------------------------------------
    def settings(self, k: int) -> dict[str, Any]:
        """The swept keys' values of configuration ``k``."""
        out = {}
        for key, vals in zip(self.keys, self.values, strict=True):
            j = int(self._index[key][k])
            out[key] = vals[j] if j >= 0 else getattr(self.base, key)
        return out

    def config(self, k: int) -> PlateauConfig:
        """The full hyperparameters of configuration ``k``."""
        return replace(self.base, **self.settings(k))

    def configs(self) -> list[PlateauConfig]:
        """Every configuration, in grid order."""
        return [self.config(k) for k in range(len(self))]

    def _events(self, k: int) -> Any:
        """Configuration ``k``'s events (indices into the raw event arrays), in step order."""
        if self._grouped is None:  # grouped on first use: a sweep that is only counted never sorts
            import numpy as np

            order = np.argsort(self._raw.ev_config, kind="stable")
            offsets = np.searchsorted(self._raw.ev_config[order], np.arange(len(self) + 1))
            self._grouped = (order, offsets)
        order, offsets = self._grouped
        return order[offsets[k]:offsets[k + 1]]

    def _labels(self) -> Any:
        """The epoch labels as an array indexable by step (integers stay integers)."""
        if self._label_array is None:
            import numpy as np

            if all(isinstance(e, int) and not isinstance(e, bool) for e in self.epochs):
                self._label_array = np.asarray(self.epochs, dtype=np.int64)
            elif all(isinstance(e, float) for e in self.epochs):
                self._label_array = np.asarray(self.epochs, dtype=np.float64)
            else:
                self._label_array = np.asarray(self.epochs + (None,), dtype=object)[:-1]
        return self._label_array

    def _changed(self, k: int) -> tuple[Any, Any]:
        """Configuration ``k``'s reducing steps and every group's lr after each, in step order."""
        idx = self._events(k)
        idx = idx[self._raw.ev_changed[idx]]
        return self._raw.ev_step[idx], self._raw.ev_lrs[idx]

    def reductions(self, k: int) -> list[tuple[Any, tuple[float, ...], tuple[float, ...]]]:
        """Configuration ``k``'s lr changes as ``(epoch, lr_before, lr_after)`` (suppressed ones left out)."""
        steps, lrs = self._changed(k)
        after = [tuple(r) for r in lrs.tolist()]
        before = [self.initial_lrs, *after[:-1]]
        return list(zip(self._labels()[steps].tolist(), before, after, strict=True))

    def reduction_epochs(self, k: int) -> list[Any]:
        """The epochs at whose step configuration ``k`` reduced some lr."""
        return self._labels()[self._changed(k)[0]].tolist()  # type: ignore[no-any-return]

    def suppressed_epochs(self, k: int) -> list[Any]:
        """The epochs at whose step a reduction was due but changed no lr."""
        idx = self._events(k)
        idx = idx[~self._raw.ev_changed[idx]]
        return self._labels()[self._raw.ev_step[idx]].tolist()  # type: ignore[no-any-return]

    def lr_spans(self, k: int) -> list[tuple[tuple[float, ...], int]]:
        """Each lr configuration ``k`` trained with and the number of epochs it was in use (the lr during an
        epoch is the one before its step; the last lr may have 0 epochs when the last step reduced)."""
        import numpy as np

        steps, lrs = self._changed(k)
        bounds = np.concatenate(([-1], steps, [len(self.metrics) - 1]))
        counts = np.diff(bounds).tolist()
        levels = [self.initial_lrs, *(tuple(r) for r in lrs.tolist())]
        return list(zip(levels, counts, strict=True))

    def _spans_for_row(self, k: int) -> list[tuple[Any, int]]:
        """``lr_spans`` with a single group's lr as a float and several groups' as a list (row format)."""
        import numpy as np

        steps, lrs = self._changed(k)
        counts = np.diff(np.concatenate(([-1], steps, [len(self.metrics) - 1]))).tolist()
        if self.n_groups == 1:
            levels: list[Any] = [self.initial_lrs[0], *lrs[:, 0].tolist()]
        else:
            levels = [list(self.initial_lrs), *lrs.tolist()]
        return list(zip(levels, counts, strict=True))

    def lr_timeline(self, k: int) -> list[tuple[float, ...]]:
        """Configuration ``k``'s lrs after every step (one tuple of groups per step)."""
        out: list[tuple[float, ...]] = []
        lr = self.initial_lrs
        steps, lrs = self._changed(k)
        for s, now in zip(steps.tolist(), lrs.tolist(), strict=True):
            out.extend([lr] * (s - len(out)))
            lr = tuple(now)
            out.append(lr)
        out.extend([lr] * (len(self.metrics) - len(out)))
        return out

    def first_reduction(self, k: int) -> Any:
        """The epoch of configuration ``k``'s first reduction, or None."""
        steps = self._changed(k)[0]
        return self._labels()[steps[0]].item() if len(steps) else None

    def final_state(self, k: int) -> dict[str, Any]:
        """``best``, ``num_bad_epochs``, ``cooldown_counter`` and the lrs after the last step (torch's names)."""
        return {"best": float(self.final_best[k]), "num_bad_epochs": int(self.final_num_bad_epochs[k]),
                "cooldown_counter": int(self.final_cooldown_counter[k]),
                "lr": [float(v) for v in self.final_lrs[k]]}

    # -- tables ----------------------------------------------------------------------------------------------
    def row(self, k: int) -> dict[str, Any]:
        """Configuration ``k`` as one result row: the swept keys, then ``COLUMNS``."""
        red = self.reduction_epochs(k)
        final = self.final_lrs[k].tolist()
        row = dict(self.settings(k))
        row.update({
            "reductions": int(self.reduced[k]), "suppressed": int(self.suppressed[k]),
            "first_reduction": red[0] if red else None, "reduction_epochs": red,
            "final_lr": final[0] if len(final) == 1 else final,
            "epochs_at_lr": self._spans_for_row(k),
            "final_best": float(self.final_best[k]),
            "final_num_bad_epochs": int(self.final_num_bad_epochs[k]),
            "final_cooldown_counter": int(self.final_cooldown_counter[k]),
        })
        return row

    def table(self, sort: str | None = None, *, descending: bool = False, limit: int | None = None
              ) -> list[dict[str, Any]]:
        """The result rows, in grid order or sorted by ``sort`` (a swept key or a column of ``COLUMNS``;
        a leading ``-`` sorts descending); configurations without a value (no reduction) come last.

        Raises:
            ConfigError: an unknown column.
        """
        order = self.order(sort, descending=descending)
        if limit is not None:
            order = order[:limit]
        return [self.row(k) for k in order]

    def order(self, sort: str | None = None, *, descending: bool = False) -> list[int]:
        """Configuration indices in grid order, or sorted by ``sort`` (see ``table``); ties keep grid order."""
        n = len(self)
        if sort is None:
            return list(range(n))
        if sort.startswith("-"):
            sort, descending = sort[1:], not descending
        sort = sort.replace("-", "_")
        if sort not in (*self.keys, *COLUMNS):
            raise ConfigError(f"cannot sort by {sort!r}: use one of {', '.join((*self.keys, *COLUMNS))}")
        if sort in self.keys:
            j = self.keys.index(sort)
            if sort in ("mode", "threshold_mode"):
                keyf = [str(self.settings(k)[sort]) for k in range(n)]
            else:
                keyf = [_sort_number(self.settings(k)[sort]) for k in range(n)]  # type: ignore[misc]
            del j
            return sorted(range(n), key=lambda k: keyf[k], reverse=descending)
        if sort == "reductions":
            values = [float(v) for v in self.reduced]
        elif sort == "suppressed":
            values = [float(v) for v in self.suppressed]
        elif sort == "final_lr":
            values = [float(v) for v in self.final_lrs[:, 0]]
        elif sort == "final_best":
            values = [float(v) for v in self.final_best]
        elif sort == "final_num_bad_epochs":
            values = [float(v) for v in self.final_num_bad_epochs]
        elif sort == "final_cooldown_counter":
            values = [float(v) for v in self.final_cooldown_counter]
        elif sort == "first_reduction":
            values = [_sort_number(self.first_reduction(k)) for k in range(n)]
        elif sort == "reduction_epochs":
            seqs = [self.reduction_epochs(k) for k in range(n)]
            return sorted(range(n), key=lambda k: seqs[k], reverse=descending)
        else:  # epochs_at_lr: by the epochs spent at the first lr
            values = [float(self.lr_spans(k)[0][1]) for k in range(n)]
        missing = [math.isnan(v) for v in values]
        present = sorted((k for k in range(n) if not missing[k]), key=lambda k: values[k], reverse=descending)
        return present + [k for k in range(n) if missing[k]]

    def to_frame(self) -> pd.DataFrame:
        """One row per configuration: the swept keys, then ``COLUMNS`` (``final_lr_0``, ``final_lr_1``... with
        several param groups); ``reduction_epochs`` and ``epochs_at_lr`` hold lists."""
        import pandas as pd

        rows = []
        for k in range(len(self)):
            row = self.row(k)
            final = row.pop("final_lr")
            if isinstance(final, list):
                for gi, v in enumerate(final):
                    row[f"final_lr_{gi}"] = v
            else:
                row["final_lr"] = final
            rows.append(row)
        return pd.DataFrame(rows)

    def render(self, fmt: str = "table", *, sort: str | None = None, style: str = "simple") -> str:
        """What ``plateau-trace LOG --sweep ...`` prints: ``table`` / ``markdown`` (one row per configuration),
        ``csv`` (floats as ``repr``) or ``json`` (``base``, ``swept``, ``initial_lrs``, ``configs``).

        Raises:
            ConfigError: an unknown format or sort column.
        """
        rows = self.table(sort)
        if fmt == "json":
            obj = {"base": self.base.to_dict(), "swept": {k: list(v) for k, v in zip(self.keys, self.values,
                                                                                       strict=True)},
                   "initial_lrs": list(self.initial_lrs), "steps": len(self.metrics),
                   "first_epoch": self.epochs[0] if self.epochs else None,
                   "last_epoch": self.epochs[-1] if self.epochs else None, "configs": rows}
            from plateau_forensics.report import jsonable

            return json.dumps(jsonable(obj), indent=1, allow_nan=False)
        if fmt == "csv":
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            head = [*self.keys, "reductions", "suppressed", "first_reduction", "reduction_epochs",
                    *(["final_lr"] if self.n_groups == 1 else [f"final_lr_{gi}" for gi in range(self.n_groups)]),
                    "epochs_at_lr", "final_best", "final_num_bad_epochs", "final_cooldown_counter"]
            w.writerow(head)
            for r in rows:
                final = r["final_lr"] if isinstance(r["final_lr"], list) else [r["final_lr"]]
                w.writerow([*(_csv_value(r[k]) for k in self.keys), r["reductions"], r["suppressed"],
                            "" if r["first_reduction"] is None else _repr(r["first_reduction"]),
                            " ".join(_repr(e) for e in r["reduction_epochs"]), *(_repr(v) for v in final),
                            " ".join(f"{_lr_csv(v)}:{n}" for v, n in r["epochs_at_lr"]),
                            _repr(r["final_best"]), r["final_num_bad_epochs"], r["final_cooldown_counter"]])
            return buf.getvalue()
        if fmt not in ("table", "markdown"):
            raise ConfigError(f"unknown format {fmt!r}: use table, markdown, csv or json")
        from tabulate import tabulate

        from plateau_forensics.report import g

        body = []
        for r in rows:
            final = r["final_lr"] if isinstance(r["final_lr"], list) else [r["final_lr"]]
            body.append([*(_cell(r[k]) for k in self.keys), str(r["reductions"]),
                         g(r["first_reduction"]) if r["first_reduction"] is not None else "-",
                         _epochs_text(r["reduction_epochs"]), "/".join(g(v) for v in final),
                         _spans_text(r["epochs_at_lr"]), str(r["suppressed"]) if r["suppressed"] else ""])
        head = [*self.keys, "reductions", "first", "reduction epochs", "final lr", "epochs at each lr",
                "suppressed"]
        table = tabulate(body, headers=head, tablefmt="github" if fmt == "markdown" else style,
                         disable_numparse=True)
        lines = [table, "", self.summary()]
        if fmt == "markdown":
            return table + "\n\n" + self.summary()
        return "\n".join(lines)

    def summary(self) -> str:
        """One line: how many configurations over how many steps, and the shared hyperparameters."""
        from plateau_forensics.report import g

        swept = set(self.keys)
        shared = " ".join(f"{f.name}={_value_text(getattr(self.base, f.name))}" for f in fields(PlateauConfig)
                          if f.name not in swept)
        span = f"epochs {g(self.epochs[0])}-{g(self.epochs[-1])}" if self.epochs else "no epochs"
        lrs = "/".join(g(v) for v in self.initial_lrs)
        return (f"{len(self)} configuration{'s' if len(self) != 1 else ''} x {len(self.metrics)} steps ({span}); "
                f"shared: {shared}; "
                f"initial lr {lrs}; 'epochs at each lr' counts the epochs that trained with it")

    # -- the picture -----------------------------------------------------------------------------------------
    def grid(self, x: str, y: str, value: str = "reductions", *, fixed: Mapping[str, Any] | None = None) -> Any:
        """``value`` as a 2-D array over two swept keys (rows: ``y``'s values, columns: ``x``'s), with every
        other swept key at ``fixed[key]`` (its first value by default). NaN where a value is undefined.

        Raises:
            ConfigError: ``x``/``y`` not swept (or equal), an unknown value column, or a fixed value not
            swept.
        """
        import numpy as np

        if self._explicit is not None:
            raise ConfigError("a heat map needs a grid sweep (a mapping of key -> values), not a list of configs")
        for a in (x, y):
            if a not in self.keys:
                raise ConfigError(f"{a!r} is not swept: choose two of {', '.join(self.keys) or '(none)'}")
        if x == y:
            raise ConfigError("a heat map needs two different swept keys")
        numeric = ("reductions", "suppressed", "first_reduction", "final_lr", "final_best",
                   "final_num_bad_epochs", "final_cooldown_counter")
        if value not in numeric:
            raise ConfigError(f"cannot draw {value!r}: use one of {', '.join(numeric)}")
        fixed = dict(fixed or {})
        pick = {}
        for key, vals in zip(self.keys, self.values, strict=True):
            if key in (x, y):
                continue
            v = fixed.pop(key, vals[0])
            if v not in vals:
                raise ConfigError(f"{key}={v!r} was not swept: use one of {', '.join(map(str, vals))}")
            pick[key] = vals.index(v)
        if fixed:
            raise ConfigError(f"{', '.join(fixed)}: not swept, or one of the two axes")
        xv, yv = self.values[self.keys.index(x)], self.values[self.keys.index(y)]
        out = np.full((len(yv), len(xv)), np.nan)
        mask = np.ones(len(self), dtype=bool)
        for key, j in pick.items():
            mask &= self._index[key] == j
        for k in np.flatnonzero(mask):
            out[self._index[y][k], self._index[x][k]] = self._value(int(k), value)
        return out

    def _value(self, k: int, value: str) -> float:
        if value == "reductions":
            return float(self.reduced[k])
        if value == "suppressed":
            return float(self.suppressed[k])
        if value == "first_reduction":
            return _sort_number(self.first_reduction(k))
        if value == "final_lr":
            return float(self.final_lrs[k, 0])
        if value == "final_best":
            return float(self.final_best[k])
        if value == "final_num_bad_epochs":
            return float(self.final_num_bad_epochs[k])
        return float(self.final_cooldown_counter[k])

    def plot(self, path: str | os.PathLike[str] | None = None, *, x: str | None = None, y: str | None = None,
             value: str = "reductions", fixed: Mapping[str, Any] | None = None, ax: Axes | None = None,
             figsize: tuple[float, float] = (7.5, 5.5)) -> Figure:
        """A heat map of ``value`` over two swept keys (the first two by default), each cell labelled.

        Artists carry gids: the Axes ``pf-sweep-axes``, the cells ``pf-sweep-cells`` (their array is
        ``grid(x, y, value)``), the cell labels ``pf-sweep-label``, the colour bar ``pf-sweep-colorbar``.

        Raises:
            ConfigError: fewer than two swept keys, or a bad ``x``/``y``/``value``/``fixed``.
        """
        if x is None or y is None:
            if len(self.keys) < 2:
                raise ConfigError("a heat map needs two swept keys (e.g. --sweep patience=0..10 --sweep "
                                  "factor=0.1,0.5)")
            rest = [k for k in self.keys if k not in (x, y)]
            x = x if x is not None else rest.pop(0)
            y = y if y is not None else rest.pop(0)
        return _heatmap(self, path, x, y, value, fixed, ax, figsize)

    def __repr__(self) -> str:
        swept = ", ".join(f"{k} ({len(v)})" for k, v in zip(self.keys, self.values, strict=True))
        return f"<Sweep of {len(self)} configs over {len(self.metrics)} steps: {swept or 'no keys'}>"

    def _repr_html_(self) -> str:
        import html

        return "<pre>" + html.escape(self.render("table")) + "</pre>"


def _heatmap(sw: Sweep, path: Any, x: str, y: str, value: str, fixed: Mapping[str, Any] | None, ax: Any,
             figsize: tuple[float, float]) -> Any:
    import numpy as np

    from plateau_forensics.plot import check_plot_path, new_figure, save_figure
    from plateau_forensics.report import g

    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError("plotting needs matplotlib: pip install 'plateau-forensics[plot]'",
                                  name="matplotlib") from exc
    if path is not None:
        check_plot_path(path)
    data = sw.grid(x, y, value, fixed=fixed)
    xv, yv = sw.values[sw.keys.index(x)], sw.values[sw.keys.index(y)]
    if ax is None:
        fig = new_figure(path, figsize)
        ax = fig.subplots(1, 1)
    else:
        fig = ax.figure
    masked = np.ma.masked_invalid(data)
    mesh = ax.imshow(masked, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest")
    mesh.set_gid("pf-sweep-cells")
    finite = data[np.isfinite(data)]
    mid = (float(finite.min()) + float(finite.max())) / 2 if finite.size else 0.0
    if data.size <= 600:
        for r in range(data.shape[0]):
            for c in range(data.shape[1]):
                v = data[r, c]
                text = "-" if not math.isfinite(v) else g(float(v))
                t = ax.text(c, r, text, ha="center", va="center", fontsize=7,
                            color="black" if math.isfinite(v) and v > mid else "white")
                t.set_gid("pf-sweep-label")
    ax.set_xticks(range(len(xv)), [_cell(v) for v in xv], rotation=90 if len(xv) > 12 else 0, fontsize=8)
    ax.set_yticks(range(len(yv)), [_cell(v) for v in yv], fontsize=8)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_gid("pf-sweep-axes")
    bar = fig.colorbar(mesh, ax=ax)
    bar.ax.set_gid("pf-sweep-colorbar")
    label = {"first_reduction": "epoch of the first reduction ('-': none)"}.get(value, value.replace("_", " "))
    bar.set_label(label)
    others = [f"{k}={_cell(v[0] if k not in (fixed or {}) else (fixed or {})[k])}"
              for k, v in zip(sw.keys, sw.values, strict=True) if k not in (x, y)]
    title = f"{label} over {len(sw.metrics)} steps"
    if others:
        title += " at " + ", ".join(others)
    ax.set_title(title, fontsize=9)
    if path is not None:
        save_figure(fig, path)
    return fig


# -- helpers ----------------------------------------------------------------------------------------------
def _same(a: Any, b: Any) -> bool:
    """The same swept value: equal and written the same (0.0 and -0.0 differ as factors; NaN equals NaN)."""
    return repr(a) == repr(b)


def _sort_number(v: Any) -> float:
    if v is None:
        return math.nan
    if isinstance(v, tuple):
        return float(v[0])
    return float(v)


def _repr(x: Any) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x) if isinstance(x, float) else str(x)


def _csv_value(v: Any) -> str:
    if isinstance(v, tuple):
        return "/".join(_repr(x) for x in v)
    return _repr(v)


def _lr_csv(v: Any) -> str:
    return "/".join(_repr(x) for x in v) if isinstance(v, list) else _repr(v)


def _cell(v: Any) -> str:
    from plateau_forensics.report import g

    if isinstance(v, tuple):
        return "/".join(g(x) for x in v)
    return g(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def _value_text(v: Any) -> str:
    return _cell(v)


def _epochs_text(epochs: Sequence[Any], most: int = 6) -> str:
    from plateau_forensics.report import g

    if not epochs:
        return "-"
    text = ", ".join(g(e) for e in epochs[:most])
    return text + (f", ... ({len(epochs)})" if len(epochs) > most else "")


def _spans_text(spans: Sequence[tuple[Any, int]], most: int = 4) -> str:
    from plateau_forensics.report import g

    def lr(v: Any) -> str:
        return "/".join(g(x) for x in v) if isinstance(v, list) else g(v)

    parts = [f"{lr(v)}:{n}" for v, n in spans[:most]]
    if len(spans) > most:
        parts.append(f"... ({len(spans)} lrs)")
    return " ".join(parts)


# -- the entry point --------------------------------------------------------------------------------------
def inputs(losses: Any, **log_options: Any) -> tuple[list[float], list[Any], Any]:
    """(metrics, epochs, source) from a Trace, a LossLog, a list of numbers or anything ``read_losses`` reads;
    ``source`` is the Trace or LossLog (None for a list)."""
    if hasattr(losses, "_cols") and hasattr(losses, "starts"):  # a Trace
        return [float(m) for m in losses.metrics], list(losses.epochs), losses
    if hasattr(losses, "metrics") and hasattr(losses, "epochs"):  # a LossLog
        return [float(m) for m in losses.metrics], list(losses.epochs), losses
    if isinstance(losses, Sequence) and not isinstance(losses, str) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in losses):
        values = [float(v) for v in losses]
        return values, list(range(1, len(values) + 1)), None
    from plateau_forensics.losses import read_losses

    log = read_losses(losses, **{k: v for k, v in log_options.items() if v is not None})
    return [float(m) for m in log.metrics], list(log.epochs), log


def initial_lrs(source: Any, lrs: Sequence[float] | None) -> tuple[float, ...]:
    """The lrs before the first step: ``lrs``, a Trace's, a LossLog's first logged row, else ``(1.0,)``."""
    if lrs is not None:
        return tuple(float(v) for v in lrs)
    if hasattr(source, "_cols") and hasattr(source, "starts"):
        return tuple(float(v) for v in source.starts[0].lrs)
    if source is not None and getattr(source, "lrs", None) and source.lrs[0] is not None and all(
            v is not None for v in source.lrs[0]):
        return tuple(float(v) for v in source.lrs[0])
    return (1.0,)


def sweep(
    losses: Any,
    grid: Mapping[str, Iterable[Any]] | Sequence[PlateauConfig | Mapping[str, Any]],
    *,
    lrs: Sequence[float] | None = None,
    base: PlateauConfig | None = None,
    metric: str | None = None,
    epoch_column: str | None = None,
    lr_columns: Sequence[str] | None = None,
) -> Sweep:
    """Replay the same metrics under every configuration of ``grid``, all at once (one numpy lane each).

    Every replay starts from a fresh scheduler at the first metric, as ``whatif.compare`` does, and equals
    ``engine.run(config, metrics, lrs)`` bit for bit (see the module docstring).

    Args:
        losses: a ``Trace`` (its metrics, epochs, config and initial lrs), a ``LossLog``, a list of numbers,
        or
            anything ``read_losses`` accepts (a path, a DataFrame...).
        grid: ``{"patience": range(0, 21), "factor": [0.1, 0.2, 0.5]}`` (the cartesian product, first key
            outermost), or a list of ``PlateauConfig`` / override dicts.
        lrs: every param group's lr before the first step; default: the Trace's, the log's first lr row, else
        1.0.
        base: the hyperparameters the grid's values replace; default: the Trace's config, else torch's
        defaults.
        metric, epoch_column, lr_columns: column choices when ``losses`` is read from a file.

    Returns:
        A ``Sweep``: per configuration the reductions (count, epochs), the final lr, the epochs spent at each
        lr.

    Raises:
        ConfigError: an unknown key, a value torch would reject, a non-integer patience/cooldown, an empty
        grid.

    Example:
        >>> sw = sweep([1.0, 1.1, 1.2, 1.3, 1.4], {"patience": [0, 1, 2]}, lrs=[0.1])
        >>> [sw.reduction_epochs(k) for k in range(len(sw))]
        [[2, 3, 4, 5], [3, 5], [4]]
    """
    metrics, epochs, source = inputs(losses, metric=metric, epoch_column=epoch_column, lr_columns=lr_columns)
    is_trace = hasattr(source, "_cols") and hasattr(source, "starts")
    if base is None:
        base = source.config if is_trace else PlateauConfig()
    lrs0 = initial_lrs(source, lrs)
    if not lrs0:
        raise ConfigError("sweep: no param groups (lrs is empty)")
    explicit: list[dict[str, Any]] | None = None
    if isinstance(grid, Mapping):
        keys = [str(k).replace("-", "_") for k in grid]
        values: list[list[Any]] = []
        for key, vals in zip(keys, grid.values(), strict=True):
            items = list(vals) if not isinstance(vals, (str, bytes)) and isinstance(vals, Iterable) else [vals]
            if not items:
                raise ConfigError(f"sweep: no values for {key}")
            checked: list[Any] = []
            for v in items:
                v = _check_value(base, key, v, len(lrs0))
                if not any(_same(v, w) for w in checked):
                    checked.append(v)
            values.append(checked)
    else:
        explicit = []
        names = {f.name for f in fields(PlateauConfig)}
        for c in grid:
            if isinstance(c, PlateauConfig):
                ov = {f: getattr(c, f) for f in names if getattr(c, f) != getattr(base, f)
                      or repr(getattr(c, f)) != repr(getattr(base, f))}
            else:
                ov = dict(c)
            explicit.append({k: _check_value(base, k, v, len(lrs0)) for k, v in ov.items()})
        if not explicit:
            raise ConfigError("sweep needs at least one configuration")
        keys = [f.name for f in fields(PlateauConfig) if any(f.name in ov for ov in explicit)]
        values = []
        for key in keys:
            seen: list[Any] = []
            for ov in explicit:
                if key in ov and not any(_same(ov[key], w) for w in seen):
                    seen.append(ov[key])
            values.append(seen)
    lanes, index = _grid_lanes(base, keys, values, len(lrs0), explicit)
    raw = _replay_lanes(metrics, lanes, lrs0)
    return Sweep(keys=tuple(keys), values=tuple(tuple(v) for v in values), base=base, epochs=tuple(epochs),
                 metrics=tuple(metrics), initial_lrs=lrs0, _index=index, _raw=raw,
                 _explicit=tuple(explicit) if explicit is not None else None)


def product_size(grid: Mapping[str, Sequence[Any]]) -> int:
    """The number of configurations of a grid."""
    return math.prod(len(v) for v in grid.values()) if grid else 1


class _CallableModule(types.ModuleType):
    """``plateau_forensics.sweep`` may be this module (imported as a submodule first) or the function; both
    call ``sweep()``, so ``pf.sweep(...)`` works whichever Python bound."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
