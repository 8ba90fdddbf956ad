"""The ReduceLROnPlateau state machine, re-run in pure Python, bit for bit what torch 2.13 computes.

The hot loop stores columns (best, num_bad_epochs, cooldown_counter, lr, event) and nothing else;
``Step`` records and their plain-English reasons are built only when someone reads them.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar, overload

from plateau_forensics.state import PlateauConfig, PlateauState

if TYPE_CHECKING:
    import pandas as pd


class Event(str, Enum):
    """What one step did, in order of precedence (a reduction outranks everything)."""

    IMPROVED = "improved"
    BAD = "bad"
    COOLDOWN = "cooldown"
    REDUCED = "reduced"
    SUPPRESSED = "suppressed"


_EVENTS = (Event.IMPROVED, Event.BAD, Event.COOLDOWN, Event.REDUCED, Event.SUPPRESSED)
#: The events by their code in ``Trace._cols.events`` (0 improved ... 4 suppressed).
EVENTS_BY_CODE = _EVENTS
_IMPROVED, _BAD, _COOLDOWN, _REDUCED, _SUPPRESSED = range(5)


def _round_float32(x: float) -> float:
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:  # torch's fill_ saturates to inf where struct refuses
        return math.copysign(math.inf, x)


def _round_float16(x: float) -> float:
    # torch converts a Python float to float16 through float32 (c10::Half is built from a float): rounding the
    # double straight to float16 differs where the float32 value lands on a float16 midpoint
    try:
        return struct.unpack("<e", struct.pack("<e", _round_float32(x)))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def _round_bfloat16(x: float) -> float:
    bits = struct.unpack("<I", struct.pack("<f", _round_float32(x)))[0]
    if math.isnan(x):
        return x
    # round-to-nearest-even on the low 16 bits, as torch's float -> bfloat16 conversion does
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return struct.unpack("<f", struct.pack("<I", bits))[0]


_ROUNDERS: dict[str | None, Callable[[float], float] | None] = {
    None: None,
    "float64": None,
    "float32": _round_float32,
    "float16": _round_float16,
    "bfloat16": _round_bfloat16,
}


def rounder(dtype: str | None) -> Callable[[float], float] | None:
    """How torch >= 2.10 rounds a new lr written with ``fill_`` into a tensor lr of this dtype."""
    return _ROUNDERS.get(dtype, None)


class ReplayError(Exception):
    """torch itself raised at this step (a per-group ``min_lr`` list and a changed group count)."""


@dataclass(frozen=True)
class Start:
    """Where a segment of the trace begins: the state before its first step, and the lrs then."""

    index: int
    state: PlateauState
    lrs: tuple[float, ...]
    note: str = ""


@dataclass(frozen=True)
class Step:
    """One ``scheduler.step(metric)``: the state after it (torch's names) and why it went that way.

    ``lr`` is the lr of every param group after the step; ``lr_in`` the one the epoch trained with.
    """

    index: int
    epoch: float
    last_epoch: float
    metric: float
    best: float
    num_bad_epochs: int
    cooldown_counter: int
    lr: tuple[float, ...]
    event: Event
    reason: str
    lr_in: tuple[float, ...]
    best_before: float
    num_bad_before: int
    cooldown_before: int
    bar: float
    improved: bool
    known: bool = True
    lr_known: bool = True

    def explain(self) -> str:
        """One line in the seed's words: ``48: bad (...) num_bad 2->3 > patience 2: lr a->b, ...``."""
        return f"{_num(self.epoch)}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        """The JSON contract's step object (``lr`` as a list); state the inputs cannot determine is None."""
        known = self.known
        return {
            "epoch": self.epoch,
            "last_epoch": self.last_epoch,
            "metric": self.metric,
            "best": self.best if known else None,
            "num_bad_epochs": self.num_bad_epochs if known else None,
            "cooldown_counter": self.cooldown_counter if known else None,
            "lr": list(self.lr) if self.lr_known else None,
            "event": self.event.value if known else None,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Forecast:
    """What happens next if no metric improves: when the lr drops, to what, and the bar to beat."""

    steps_until_reduction: int
    earliest_reduction_epoch: float
    improvement_threshold: float
    mode: str
    lr_from: tuple[float, ...]
    lr_to: tuple[float, ...]

    @property
    def suppressed(self) -> bool:
        """The due reduction would change no group's lr (``min_lr`` or ``eps``)."""
        return self.lr_from == self.lr_to

    def sentence(self) -> str:
        """e.g. ``no improvement below 0.4311 by epoch 48 -> lr 0.000328 -> 0.000262``."""
        word = "below" if self.mode == "min" else "above"
        head = f"no improvement {word} {_num(self.improvement_threshold)} by epoch {_num(self.earliest_reduction_epoch)}"
        if any(math.isnan(v) for v in self.lr_from):  # the lr now is not determined by the inputs
            return f"{head} -> a reduction is due (from an lr the inputs do not determine)"
        if self.suppressed:
            return f"{head} -> reduction due but suppressed, lr stays {_lrs(self.lr_from)}"
        return f"{head} -> lr {_lrs(self.lr_from)} -> {_lrs(self.lr_to)}"


def _num(x: float, digits: int = 4) -> str:
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) < 1e15):
        return str(int(x))
    return f"{x:.{digits}g}"


def _pair(a: float, b: float) -> tuple[str, str]:
    """Format two different numbers with the fewest digits (>= 4) that still tell them apart."""
    for digits in range(4, 18):
        sa, sb = _num(a, digits), _num(b, digits)
        if sa != sb or a == b or math.isnan(a) or math.isnan(b):
            return sa, sb
    return repr(a), repr(b)


def _lrs(lrs: Sequence[float]) -> str:
    return _num(lrs[0]) if len(lrs) == 1 else "[" + ", ".join(_num(v) for v in lrs) + "]"


class _Columns:
    __slots__ = ("best", "num_bad", "cooldown", "lrs", "events")

    def __init__(self) -> None:
        self.best: list[float] = []
        self.num_bad: list[int] = []
        self.cooldown: list[int] = []
        self.lrs: list[tuple[float, ...]] = []
        self.events: list[int] = []


def _advance(
    cfg: PlateauConfig,
    state: PlateauState,
    lrs: tuple[float, ...],
    rounders: Sequence[Callable[[float], float] | None],
    metrics: Sequence[float],
    cols: _Columns,
) -> tuple[PlateauState, tuple[float, ...], str | None]:
    """Run ``len(metrics)`` steps from ``state``; append to ``cols``; return the end state and lrs.

    Mirrors torch 2.13 ``ReduceLROnPlateau.step`` and ``_reduce_lr`` line by line; the order
    (is_better, then cooldown, then patience) and every float expression are torch's.
    """
    best, nb, cd = state.best, state.num_bad_epochs, state.cooldown_counter
    min_lrs, default_min_lr = state.min_lrs, state.default_min_lr
    threshold, patience, cooldown = cfg.threshold, cfg.patience, cfg.cooldown
    factor, eps = cfg.factor, cfg.eps
    kind = (0 if cfg.mode == "min" else 2) + (0 if cfg.threshold_mode == "rel" else 1)
    rel_min, rel_max = 1.0 - threshold, threshold + 1.0
    add_best, add_nb, add_cd = cols.best.append, cols.num_bad.append, cols.cooldown.append
    add_lr, add_ev = cols.lrs.append, cols.events.append
    n_before = len(cols.best)
    error = None
    # A torch 1.0 state may hold best as a 0-dim tensor; until an improvement replaces it with a float,
    # torch 2.13 computes the bar and the comparison in the tensor's dtype (scalar cast first).
    tb = rounder(state.best_dtype) if state.best_dtype is not None else None
    for current in metrics:
        if tb is not None:
            t_thr = tb(threshold)
            if kind == 0:
                better = tb(current) < tb(best * tb(rel_min))
            elif kind == 1:
                better = tb(current) < tb(best - t_thr)
            elif kind == 2:
                better = tb(current) > tb(best * tb(rel_max))
            else:
                better = tb(current) > tb(best + t_thr)
            if better:
                tb = None
        elif kind == 0:
            better = current < best * rel_min
        elif kind == 1:
            better = current < best - threshold
        elif kind == 2:
            better = current > best * rel_max
        else:
            better = current > best + threshold
        if better:
            best = current
            nb = 0
            ev = _IMPROVED
        else:
            nb += 1
            ev = _BAD
        if cd > 0:
            cd -= 1
            nb = 0
            if not better:
                ev = _COOLDOWN
        if nb > patience:
            if len(lrs) != len(min_lrs):
                if default_min_lr is None:
                    error = (
                        f"torch raises RuntimeError here: {len(lrs)} param groups but {len(min_lrs)} min_lrs "
                        "and no default_min_lr to rebuild them from"
                    )
                    break
                min_lrs = (default_min_lr,) * len(lrs)
            new = list(lrs)
            changed = False
            for i, old in enumerate(lrs):
                new_lr = max(old * factor, min_lrs[i])
                if old - new_lr > eps:
                    r = rounders[i]
                    new[i] = r(new_lr) if r is not None else new_lr
                    changed = True
            if changed:
                lrs = tuple(new)
                ev = _REDUCED
            else:
                ev = _SUPPRESSED
            cd = cooldown
            nb = 0
        add_best(best)
        add_nb(nb)
        add_cd(cd)
        add_lr(lrs)
        add_ev(ev)
    end = replace(
        state,
        best_dtype=state.best_dtype if tb is not None else None,
        best=best,
        num_bad_epochs=nb,
        cooldown_counter=cd,
        min_lrs=min_lrs,
        last_lr=lrs,
        last_epoch=state.last_epoch + (len(cols.best) - n_before),
    )
    return end, lrs, error


@dataclass
class Trace:
    """The replay of a sequence of steps, plus what the caller knew about where it came from.

    ``steps`` is a sequence of ``Step`` records; ``to_frame()`` gives them as a pandas DataFrame.
    The optional context (checkpoint, alignment, findings, log) is filled in by ``plateau_forensics.trace``.
    """

    config: PlateauConfig
    epochs: tuple[float, ...]
    metrics: tuple[float, ...]
    starts: tuple[Start, ...]
    final: PlateauState
    error: str | None = None
    lr_dtypes: tuple[str | None, ...] = ()
    checkpoint: Any = None
    alignment: Any = None
    findings: list[Any] = field(default_factory=list)
    log: Any = None
    notes: list[str] = field(default_factory=list)
    label_offset: float = 0
    #: trace positions whose state the inputs cannot determine (shown as unknown, ``null`` in JSON)
    unknown: frozenset[int] = frozenset()
    #: trace positions whose lr the inputs cannot determine
    lr_unknown: frozenset[int] = frozenset()
    #: trace positions whose comparison the log's precision could not decide (resolved or not by later evidence)
    undecided: frozenset[int] = frozenset()
    #: per position, ``last_epoch`` after the step when a story sets it (None inside: unknown)
    last_epochs: tuple[float | None, ...] | None = None
    #: the forensics verdict (``stories.Verdict``) when the trace explains a checkpoint and a log
    verdict: Any = None
    #: the metric interval each position stands for, when the log was rounded
    intervals: tuple[tuple[float, float], ...] | None = None
    #: the log row of each position (a story may skip, reorder or repeat rows)
    rows: tuple[int, ...] | None = None
    #: per position, the lrs right before the step when a story says something other than the previous step
    #: set them (a hand-set lr at a resume, another writer, a param group added); None: the previous step's
    lr_ins: tuple[tuple[float, ...] | None, ...] | None = None
    _cols: _Columns = field(default_factory=_Columns, repr=False)

    # -- sequence of steps -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._cols.best)

    @property
    def steps(self) -> StepsView[Step]:
        """Every step, as ``Step`` records built on access."""
        return StepsView(self)

    def min_lrs_for(self, n_groups: int) -> tuple[float, ...]:
        """The min_lrs in effect for ``n_groups`` groups (torch rebuilds them from default_min_lr)."""
        min_lrs = self.final.min_lrs
        if len(min_lrs) != n_groups and self.final.default_min_lr is not None:
            min_lrs = (self.final.default_min_lr,) * n_groups
        return min_lrs

    def _start_for(self, i: int) -> Start:
        found = self.starts[0]
        for s in self.starts:
            if s.index <= i:
                found = s
        return found

    def step(self, i: int, *, explain: bool = True) -> Step:
        """The ``i``-th step record (0-based position in the trace); ``explain=False`` leaves ``reason`` empty
        (the cheap record a long trace's CSV and JSON rows use)."""
        c, cfg = self._cols, self.config
        start = self._start_for(i)
        if i == start.index:
            b0, nb0, cd0, lr0 = start.state.best, start.state.num_bad_epochs, start.state.cooldown_counter, start.lrs
        else:
            b0, nb0, cd0, lr0 = c.best[i - 1], c.num_bad[i - 1], c.cooldown[i - 1], c.lrs[i - 1]
        if self.lr_ins is not None and self.lr_ins[i] is not None:
            lr0 = self.lr_ins[i]  # type: ignore[assignment]
        metric = self.metrics[i]
        improved = cfg.is_better(metric, b0)
        bar = cfg.bar(b0)
        event = _EVENTS[c.events[i]]
        if self.last_epochs is not None:
            last_epoch = self.last_epochs[i]
        else:
            last_epoch = start.state.last_epoch + (i - start.index) + 1
        known = i not in self.unknown
        if i in self.undecided and self.intervals is not None and known:
            improved = event is Event.IMPROVED
        reason = self._reason_of(i, b0, nb0, cd0, lr0, {}) if explain else ""
        return Step(
            index=i, epoch=self.epochs[i], last_epoch=last_epoch, metric=metric, best=c.best[i],
            num_bad_epochs=c.num_bad[i], cooldown_counter=c.cooldown[i], lr=c.lrs[i], event=event,
            reason=reason, lr_in=lr0, best_before=b0, num_bad_before=nb0, cooldown_before=cd0, bar=bar,
            improved=improved, known=known, lr_known=i not in self.lr_unknown,
        )

    def reasons(self, indices: Iterable[int]) -> list[str]:
        """``step(i).reason`` for each of ``indices``, without building the steps (a long trace's csv and json
        rows need the reasons of thousands of reductions and suppressed ones)."""
        c, starts = self._cols, {s.index: s for s in self.starts}
        suppressions: dict[tuple[float, ...], str] = {}
        out = []
        lr_ins = self.lr_ins
        for i in indices:
            start = starts.get(i)
            if start is not None:
                st = start.state
                b0, nb0, cd0, lr0 = st.best, st.num_bad_epochs, st.cooldown_counter, start.lrs
            else:
                b0, nb0, cd0, lr0 = c.best[i - 1], c.num_bad[i - 1], c.cooldown[i - 1], c.lrs[i - 1]
            if lr_ins is not None and lr_ins[i] is not None:
                lr0 = lr_ins[i]  # type: ignore[assignment]
            out.append(self._reason_of(i, b0, nb0, cd0, lr0, suppressions))
        return out

    def _reason_of(self, i: int, b0: float, nb0: int, cd0: int, lr0: tuple[float, ...],
                   suppressions: dict[tuple[float, ...], str]) -> str:
        """Step ``i``'s reason from the state it started in (its lrs after any logged override);
        ``suppressions`` caches the suppression clause by those lrs."""
        if i in self.unknown:
            return "not determined by the inputs (several states of the scheduler fit the evidence here)"
        c, cfg = self._cols, self.config
        metric = self.metrics[i]
        bar = cfg.bar(b0)
        event = _EVENTS[c.events[i]]
        why = None
        if event is Event.SUPPRESSED:
            why = suppressions.get(lr0)
            if why is None:
                why = suppressions[lr0] = _suppression(cfg, lr0, self.min_lrs_for(len(lr0)))
        if i in self.undecided and self.intervals is not None:
            lo, hi = self.intervals[i]
            return (f"the log's precision cannot decide this comparison ({_num(lo, 6)}..{_num(hi, 6)} "
                    f"against {_num(bar, 6)}); the rest of the evidence does: "
                    + _reason(cfg, metric, bar, event is Event.IMPROVED, event, b0, nb0, cd0, lr0, c, i, why))
        return _reason(cfg, metric, bar, cfg.is_better(metric, b0), event, b0, nb0, cd0, lr0, c, i, why)

    def lr_before(self, i: int) -> tuple[float, ...]:
        """The lrs step ``i`` started from (what ``step(i).lr_in`` says), without building the step."""
        if self.lr_ins is not None and self.lr_ins[i] is not None:
            return self.lr_ins[i]  # type: ignore[return-value]
        start = self._start_for(i)
        return start.lrs if i == start.index else self._cols.lrs[i - 1]

    def last_epoch_column(self, a: int, b: int) -> list[Any]:
        """``last_epoch`` after each step ``a..b-1`` (from the stories' counts when they set them)."""
        if self.last_epochs is not None:
            return list(self.last_epochs[a:b])
        out: list[Any] = []
        starts = sorted(self.starts, key=lambda s: s.index)
        for k, st in enumerate(starts):
            lo = max(a, st.index if k else 0)
            hi = min(b, starts[k + 1].index if k + 1 < len(starts) else b)
            if lo < hi:
                base = st.state.last_epoch + 1 - st.index
                out.extend(range(base + lo, base + hi))
        return out

    def row_values(self) -> Iterator[tuple[Any, ...]]:
        """Every step as ``(epoch, last_epoch, metric, best, num_bad_epochs, cooldown_counter, lr, event, known,
        lr_known)`` straight from the columns (no ``Step``, no reason): what a long trace's csv and json rows
        are written from. ``event`` is the ``Event`` value."""
        c = self._cols
        starts = sorted(self.starts, key=lambda s: s.index)
        bounds = [s.index for s in starts[1:]] + [len(self)]
        unknown, lr_unknown, les = self.unknown, self.lr_unknown, self.last_epochs
        names = [e.value for e in _EVENTS]
        epochs, metrics = self.epochs, self.metrics
        i = 0
        for start, end in zip(starts, bounds, strict=True):
            base = start.state.last_epoch + 1 - start.index
            while i < end:
                yield (epochs[i], les[i] if les is not None else base + i, metrics[i], c.best[i], c.num_bad[i],
                       c.cooldown[i], c.lrs[i], names[c.events[i]], i not in unknown, i not in lr_unknown)
                i += 1

    def state_at(self, i: int) -> PlateauState:
        """The scheduler state after step ``i`` (0-based position), in torch's terms."""
        c, start = self._cols, self._start_for(i)
        return replace(start.state, last_epoch=start.state.last_epoch + (i - start.index) + 1, best=c.best[i],
                       num_bad_epochs=c.num_bad[i], cooldown_counter=c.cooldown[i], last_lr=c.lrs[i],
                       best_dtype=None)

    # -- summaries ---------------------------------------------------------------------------
    @property
    def lrs(self) -> tuple[float, ...]:
        """The lr of every group after the last step (or at the start of an empty trace)."""
        return self._cols.lrs[-1] if self._cols.lrs else self.starts[0].lrs

    def reductions(self) -> list[Step]:
        """The steps whose event is ``reduced`` or ``suppressed``."""
        return [self.step(i) for i, e in enumerate(self._cols.events) if e in (_REDUCED, _SUPPRESSED)]

    def forecast(self) -> Forecast:
        """When the lr drops next if nothing improves, to what, and the bar a metric must beat."""
        st, cfg = self.final, self.config
        if cfg.patience < 0:
            k = 1
        elif st.cooldown_counter > 0:
            k = st.cooldown_counter + cfg.patience + 1
        else:
            k = max(1, cfg.patience + 1 - st.num_bad_epochs)
        lrs = self.lrs
        min_lrs = st.min_lrs
        if len(min_lrs) != len(lrs) and st.default_min_lr is not None:
            min_lrs = (st.default_min_lr,) * len(lrs)
        new = []
        for i, old in enumerate(lrs):
            cand = max(old * cfg.factor, min_lrs[i]) if i < len(min_lrs) else old
            r = rounder(self.lr_dtypes[i]) if i < len(self.lr_dtypes) else None
            new.append((r(cand) if r else cand) if old - cand > cfg.eps else old)
        last_label = self.epochs[-1] if self.epochs else st.last_epoch + self.label_offset
        return Forecast(
            steps_until_reduction=k,
            earliest_reduction_epoch=last_label + k,
            improvement_threshold=cfg.bar(st.best),
            mode=cfg.mode,
            lr_from=tuple(lrs),
            lr_to=tuple(new),
        )

    def to_records(self) -> list[dict[str, Any]]:
        """Every step as the JSON contract's dict."""
        return [s.as_dict() for s in self.steps]

    def to_frame(self) -> pd.DataFrame:
        """The steps as a pandas DataFrame, one row per step; ``lr`` columns ``lr`` or ``lr_0``, ``lr_1``... (empty
        where the inputs do not determine the lr)."""
        import pandas as pd

        rows = []
        records = [s.as_dict() for s in self.steps]
        groups = max((len(r["lr"]) for r in records if r["lr"] is not None), default=1)
        for row in records:
            lrs = row.pop("lr")
            if lrs is None:  # an lr the inputs do not determine
                lrs = [None] * groups
            if len(lrs) == 1:
                row["lr"] = lrs[0]
            else:
                row.update({f"lr_{g}": v for g, v in enumerate(lrs)})
            rows.append(row)
        return pd.DataFrame(rows)

    def to_state_dict(self) -> dict[str, Any]:
        """torch 2.13's ``state_dict()`` of a scheduler that ran these steps."""
        from plateau_forensics.state import to_state_dict

        return to_state_dict(self.config, self.final)

    def plot(self, path: Any = None, **kwargs: Any) -> Any:
        """Draw the trace with matplotlib (the ``[plot]`` extra); see ``plateau_forensics.plot.plot_trace``."""
        from plateau_forensics.plot import plot_trace

        return plot_trace(self, path, **kwargs)

    def _repr_html_(self) -> str:
        """Jupyter display: the seed's grid as HTML; see ``plateau_forensics.html.trace_html``."""
        from plateau_forensics.html import trace_html

        return trace_html(self)

    def __repr__(self) -> str:
        return (
            f"<Trace {len(self)} steps, {len(self.reductions())} reductions, "
            f"lr {_lrs(self.lrs)}, best {_num(self.final.best)}>"
        )


S = TypeVar("S")


class StepsView(Sequence[S]):
    """A read-only sequence of step records built on access from any trace with ``step(i)`` and ``len``."""

    def __init__(self, trace: Any) -> None:
        self._t = trace

    def __len__(self) -> int:
        return len(self._t)

    @overload
    def __getitem__(self, i: int) -> S: ...
    @overload
    def __getitem__(self, i: slice) -> list[S]: ...
    def __getitem__(self, i: int | slice) -> S | list[S]:
        if isinstance(i, slice):
            return [self._t.step(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        return self._t.step(i % n)  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[S]:
        return (self._t.step(i) for i in range(len(self)))


def _reason(
    cfg: PlateauConfig, metric: float, bar: float, improved: bool, event: Event,
    b0: float, nb0: int, cd0: int, lr0: tuple[float, ...], c: _Columns, i: int, suppressed: str | None,
) -> str:
    """The transition in words; the same text is the JSON ``reason`` and the ``--explain`` line."""
    cmp_bad, cmp_good = (">=", "<") if cfg.mode == "min" else ("<=", ">")
    m_s, bar_s = _pair(metric, bar)
    if math.isnan(metric):
        parts = ["bad (nan is never better)"]
    elif improved:
        by = "" if math.isinf(b0) else f" by {_num(abs(metric - b0))}"
        parts = [f"improved{by} ({m_s} {cmp_good} {bar_s} needed), best {_pair(b0, metric)[0]}->{m_s}"]
    else:
        parts = [f"bad ({m_s} {cmp_bad} {bar_s} needed)"]
    nb_mid = 0 if improved else nb0 + 1
    parts.append(f"num_bad {nb0}->{nb_mid}")
    text = parts[0] + (", " if improved else " ") + parts[1]
    nb_after_cd = nb_mid
    if cd0 > 0:
        text += f", in cooldown: cooldown {cd0}->{cd0 - 1}"
        if nb_mid:
            text += f", num_bad {nb_mid}->0"
        nb_after_cd = 0
    if event in (Event.REDUCED, Event.SUPPRESSED):
        lr1 = c.lrs[i]
        text += f" > patience {cfg.patience}: "
        if event is Event.REDUCED:
            text += f"lr {_lrs(lr0)}->{_lrs(lr1)}"
            held = [g for g in range(len(lr0)) if lr0[g] == lr1[g]]
            if held:
                text += f" (group {', '.join(map(str, held))} held at its floor)"
        else:
            text += f"reduction due but suppressed ({suppressed})"
        cd_before = cd0 - 1 if cd0 > 0 else cd0
        text += f", cooldown {cd_before}->{c.cooldown[i]}, num_bad {nb_after_cd}->0"
    elif cd0 <= 0:
        text += f" (patience {cfg.patience})"
    return text


def _suppression(cfg: PlateauConfig, lr0: tuple[float, ...], min_lrs: tuple[float, ...]) -> str:
    """Say why no group changed: the floor (``min_lr``) or a change no larger than ``eps``."""
    why = []
    for g, old in enumerate(lr0):
        floor = min_lrs[g] if g < len(min_lrs) else math.nan
        if not old * cfg.factor > floor:
            why.append(f"lr {_num(old)} at min_lr {_num(floor)}")
        else:
            why.append(f"lr {_num(old)} - {_num(max(old * cfg.factor, floor))} <= eps {_num(cfg.eps)}")
    return "; ".join(why)


def run(
    config: PlateauConfig,
    metrics: Sequence[float],
    lrs: Sequence[float],
    *,
    state: PlateauState | None = None,
    epochs: Sequence[float] | None = None,
    lr_dtypes: Sequence[str | None] | None = None,
    strict: bool = True,
) -> Trace:
    """Replay ``metrics`` through a scheduler with ``config``, from ``state`` (a fresh one when None).

    Args:
        config: the hyperparameters in effect.
        metrics: values passed to ``step()``, converted with ``float()`` as torch does.
        lrs: each param group's lr before the first step.
        state: the counters before the first step; a freshly constructed scheduler's when None.
        epochs: the log's epoch label for each metric; ``last_epoch`` values when None.
        lr_dtypes: per group, the tensor dtype of the lr (torch >= 2.10 rounds new lrs to it), or None.
        strict: a fresh scheduler refuses a per-group ``min_lr`` whose length differs from ``lrs`` (as torch's
            constructor does); False replays a checkpoint whose optimizer gained groups after construction.

    Returns:
        A ``Trace`` whose ``steps`` hold the state after every step and why.
    """
    lrs_t = tuple(float(v) for v in lrs)
    start_state = state if state is not None else PlateauState.fresh(config, lrs_t, strict=strict)
    dtypes = tuple(lr_dtypes) if lr_dtypes is not None else (None,) * len(lrs_t)
    trace = Trace(
        config=config, epochs=(), metrics=(), starts=(Start(0, start_state, lrs_t),),
        final=start_state, lr_dtypes=dtypes,
    )
    return extend(trace, metrics, epochs=epochs)  # extend converts each metric with float() once


def extend(
    trace: Trace,
    metrics: Sequence[float],
    *,
    epochs: Sequence[float] | None = None,
    state: PlateauState | None = None,
    lrs: Sequence[float] | None = None,
    note: str = "",
) -> Trace:
    """Continue ``trace`` over more metrics, optionally from a different state (e.g. a checkpoint's).

    Continuing from another state starts a new segment; its first step's "before" values are that
    state's, not the previous step's. Returns the same (mutated) trace for chaining.
    """
    values = [float(m) for m in metrics]
    n0 = len(trace)
    if state is not None or lrs is not None:
        seg_state = state if state is not None else trace.final
        seg_lrs = tuple(float(v) for v in lrs) if lrs is not None else trace.lrs
        if n0 > 0 or trace.starts[0].state is not seg_state:
            start = Start(n0, seg_state, seg_lrs, note)
            trace.starts = tuple(s for s in trace.starts if s.index < n0) + (start,)
    start = trace.starts[-1]
    cur_state = trace.final if start.index < n0 else start.state
    cur_lrs = trace.lrs if start.index < n0 else start.lrs
    rounders = [rounder(d) for d in trace.lr_dtypes] or [None] * len(cur_lrs)
    if len(rounders) < len(cur_lrs):
        rounders += [None] * (len(cur_lrs) - len(rounders))
    end, _, error = _advance(trace.config, cur_state, cur_lrs, rounders, values, trace._cols)
    done = len(trace) - n0
    if epochs is None:
        labels = [cur_state.last_epoch + k + 1 for k in range(done)]
    else:
        labels = list(epochs)[:done]
    trace.epochs = trace.epochs + tuple(labels)
    trace.metrics = trace.metrics[:n0] + tuple(values[:done])
    trace.final = end
    trace.error = error
    return trace
