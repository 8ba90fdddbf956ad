"""The whole lr timeline of one optimizer: every group's lr in each interval of training, and which scheduler
changed it. Built by ``timeline()`` (schedulers alone, teaching mode) and by ``compose.replay_composed``
(beside a ReduceLROnPlateau); rendered as a grid or table, CSV, JSON, or a matplotlib plot."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from plateau_forensics.schedules.base import LRScheduler
from plateau_forensics.schedules.errors import ScheduleConfigError, TorchRaises
from plateau_forensics.schedules.optimizer import Optimizer

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: the writer name of changes made by ReduceLROnPlateau in a composed run
PLATEAU = "ReduceLROnPlateau"
#: the band under the plot: one colour per writer, none of them the lr lines' colours
WRITER_COLOURS = ("#8c6bb1", "#e6a532", "#41ab5d", "#6baed6", "#d9829b", "#969696")


@dataclass(frozen=True)
class Change:
    """One group's lr changed by one writer (a scheduler's label, ``ReduceLROnPlateau``,
    ``add_param_group``)."""

    writer: str
    group: int
    before: float | None
    after: float


@dataclass
class Timeline:
    """Row ``i``: the lr of every group during training interval ``i`` (an epoch, or a batch when a scheduler
    steps per batch) and the changes that set it (row 0: the constructors').

    Attributes:
        writers: the labels of the schedulers, in the order they were built.
        epochs: each row's label (``epoch`` 0-based, fractional for batches).
        lrs: each row's lrs, one per param group (groups added mid-run make later rows longer).
        changes: each row's changes, by writer and group.
        states: per row, every scheduler's ``state_dict()`` after the steps that set the row (when recorded).
        error: what torch raises after the last row (``"torch raises ValueError: Tried to step ..."``), or
            None.
        warnings: what torch warns, (writer, message) pairs in order.
    """

    writers: tuple[str, ...]
    epochs: list[float] = field(default_factory=list)
    lrs: list[tuple[float, ...]] = field(default_factory=list)
    changes: list[tuple[Change, ...]] = field(default_factory=list)
    states: list[tuple[dict[str, Any], ...]] = field(default_factory=list)
    error: str | None = None
    warnings: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.lrs)

    def add(
        self,
        epoch: float,
        lrs: tuple[float, ...],
        changes: Sequence[Change],
        states: tuple[dict[str, Any], ...] | None = None,
    ) -> None:
        """Append a row."""
        self.epochs.append(epoch)
        self.lrs.append(lrs)
        self.changes.append(tuple(changes))
        if states is not None:
            self.states.append(states)

    def segments(self) -> list[tuple[str, float, float]]:
        """Runs of consecutive rows whose lr one writer changed: ``(writer, first epoch, last epoch)``, in
        order of their first row (a warm-up is one run, each plateau reduction its own)."""
        open_runs: dict[str, int] = {}  # writer -> index in out of its run still open at the previous row
        out: list[tuple[str, float, float]] = []
        for epoch, ch in zip(self.epochs, self.changes, strict=True):
            writers = dict.fromkeys(c.writer for c in ch)
            still = {}
            for w in writers:
                if w in open_runs:
                    k = open_runs[w]
                    out[k] = (w, out[k][1], epoch)
                    still[w] = k
                else:
                    out.append((w, epoch, epoch))
                    still[w] = len(out) - 1
            open_runs = still
        return out

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per row: ``epoch``, ``lr`` (a list per group) and ``changed_by`` (writer names)."""
        return [
            {"epoch": e, "lr": list(lr), "changed_by": sorted({c.writer for c in ch})}
            for e, lr, ch in zip(self.epochs, self.lrs, self.changes, strict=True)
        ]

    def render(self, fmt: str = "grid", *, width: int = 100, style: str = "simple") -> str:
        """The timeline as text: ``grid`` (epochs as columns, wrapped to ``width``), ``table``, ``csv`` or
        ``json``."""
        if fmt == "json":
            return json.dumps(
                {
                    "schedulers": list(self.writers),
                    "rows": self.to_records(),
                    "error": self.error,
                    "warnings": [list(w) for w in self.warnings],
                },
                indent=2,
                default=_jsonable,
            )
        if fmt == "csv":
            return _csv(self)
        if fmt in ("table", "markdown"):
            return _table(self, "github" if fmt == "markdown" else style)
        if fmt != "grid":
            raise ScheduleConfigError(f"unknown timeline format {fmt!r}: grid, table, markdown, csv or json")
        return _grid(self, width)

    def plot(self, path: Any = None, **kwargs: Any) -> Figure:
        """Draw the lr of every group over the rows (matplotlib, the ``[plot]`` extra); see
        ``plot_timeline``."""
        return plot_timeline(self, path, **kwargs)


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return str(x)


def _g(x: float | None) -> str:
    from plateau_forensics.report import g

    return "" if x is None else g(x)


def _codes(t: Timeline) -> dict[str, str]:
    """A short code per writer for the grid's ``by`` row: 1, 2, ... in build order, P for the plateau."""
    codes = {}
    n = 0
    for w in t.writers:
        if w == PLATEAU:
            codes[w] = "P"
        else:
            n += 1
            codes[w] = str(n)
    codes.setdefault("add_param_group", "+")
    for ch in t.changes:
        for c in ch:
            if c.writer not in codes:
                n += 1
                codes[c.writer] = str(n)
    return codes


def _grid(t: Timeline, width: int) -> str:
    codes = _codes(t)
    n_groups = max((len(lr) for lr in t.lrs), default=1)
    rows: list[tuple[str, list[str]]] = [("epoch", [_g(e) for e in t.epochs])]
    for grp in range(n_groups):
        name = "lr" if n_groups == 1 else f"lr[{grp}]"
        rows.append((name, [_g(lr[grp]) if grp < len(lr) else "" for lr in t.lrs]))
    rows.append(("by", ["".join(dict.fromkeys(codes[c.writer] for c in ch)) for ch in t.changes]))
    label_w = max(len(name) for name, _ in rows)
    ncol = len(t.epochs)
    col_w = [max(len(cells[i]) for _, cells in rows) for i in range(ncol)]
    blocks, start = [], 0
    while start < ncol:
        used, end = label_w, start
        while end < ncol and (end == start or used + 2 + col_w[end] <= width):
            used += 2 + col_w[end]
            end += 1
        blocks.append(
            "\n".join(
                (
                    name.ljust(label_w) + "".join("  " + cells[i].rjust(col_w[i]) for i in range(start, end))
                ).rstrip()
                for name, cells in rows
            )
        )
        start = end
    legend = [
        "by: "
        + "; ".join(
            f"{code} = {w}" for w, code in codes.items() if any(c.writer == w for ch in t.changes for c in ch)
        )
    ]
    segments = t.segments()
    if len({w for w, _, _ in segments}) > 1:
        legend += [
            f"segment  {w}: epochs {_g(a)}-{_g(b)}" if a != b else f"segment  {w}: epoch {_g(a)}"
            for w, a, b in segments
        ]
    if t.error:
        legend.append(f"error    after epoch {_g(t.epochs[-1]) if t.epochs else '-'}: {t.error}")
    legend += [f"warning  {w}: {m}" for w, m in dict.fromkeys(t.warnings)]
    return "\n\n".join(blocks) + "\n\n" + "\n".join(legend)


def _table(t: Timeline, style: str) -> str:
    from tabulate import tabulate

    n_groups = max((len(lr) for lr in t.lrs), default=1)
    heads = ["epoch"] + (["lr"] if n_groups == 1 else [f"lr[{g}]" for g in range(n_groups)]) + ["changed by"]
    rows = []
    for e, lr, ch in zip(t.epochs, t.lrs, t.changes, strict=True):
        rows.append(
            [_g(e)]
            + [_g(lr[g]) if g < len(lr) else "" for g in range(n_groups)]
            + ["; ".join(dict.fromkeys(c.writer for c in ch))]
        )
    text = tabulate(rows, headers=heads, tablefmt=style, disable_numparse=True)
    if t.error:
        text += f"\n\nerror after the last row: {t.error}"
    return text


def _csv(t: Timeline) -> str:
    import csv
    import io

    n_groups = max((len(lr) for lr in t.lrs), default=1)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["epoch"] + [f"lr_{g}" for g in range(n_groups)] + ["changed_by"])
    for e, lr, ch in zip(t.epochs, t.lrs, t.changes, strict=True):
        w.writerow(
            [repr(e) if isinstance(e, float) else e]
            + [repr(lr[g]) if g < len(lr) else "" for g in range(n_groups)]
            + [";".join(dict.fromkeys(c.writer for c in ch))]
        )
    return buf.getvalue()


def changes_between(writer: str, before: Sequence[float], after: Sequence[float]) -> list[Change]:
    """The groups whose lr differs (bitwise) between two snapshots, attributed to ``writer``."""
    out = []
    for g, a in enumerate(after):
        b = before[g] if g < len(before) else None
        if b is None or _differs(a, b):
            out.append(Change(writer, g, b, a))
    return out


def _differs(a: float, b: float) -> bool:
    if a != a and b != b:  # both NaN
        return False
    return a != b or math.copysign(1.0, a) != math.copysign(1.0, b)


def timeline(
    schedulers: Sequence[LRScheduler],
    epochs: int,
    lrs: Sequence[float] = (0.1,),
    *,
    lr_dtypes: Sequence[str | None] | None = None,
    momentum: float = 0.0,
    betas: tuple[float, float] | None = None,
    record_states: bool = False,
) -> Timeline:
    """The lrs of ``epochs`` epochs when these schedulers are built in order on one optimizer and each steps
    once per epoch, in order, after ``optimizer.step()``: row ``e`` is the lr epoch ``e`` trains with (after
    ``e`` rounds of steps). What torch raises ends the timeline with ``error`` set.

    Args:
        schedulers: unbound schedulers (specs), e.g. ``[StepLR(step_size=30)]``; each is bound to a new
            optimizer.
        epochs: the number of rows (epochs 0 .. epochs-1).
        lrs: the optimizer's lr per param group.
        lr_dtypes: per group, a tensor dtype (``"float32"``) for a tensor lr, or None.
        momentum, betas: the optimizer's (betas makes it Adam-like, for CyclicLR/OneCycleLR's beta1 cycling).
        record_states: also keep every scheduler's ``state_dict()`` after each row.

    Raises:
        ScheduleConfigError: a constructor argument torch rejects.
        TorchRaises: torch raises while the schedulers are built (a missing ``initial_lr``).
    """
    if epochs < 0:
        raise ScheduleConfigError(f"epochs must be >= 0, got {epochs}")
    opt = Optimizer(lrs, lr_dtypes=lr_dtypes, momentum=momentum, betas=betas)
    t = Timeline(writers=tuple(s.label for s in schedulers))
    before = opt.lrs
    bound: list[LRScheduler] = []
    changes: list[Change] = []
    names: list[str] = []  # the labels, computed once (inspect.signature is slow)
    for s in schedulers:
        b = s.bind(opt)
        bound.append(b)
        names.append(b.label)
        after = opt.lrs
        changes += changes_between(names[-1], before, after)
        before = after
    if epochs == 0:
        return t
    t.add(0, before, changes, tuple(b.state_dict() for b in bound) if record_states else None)
    for e in range(1, epochs):
        opt.step()
        changes = []
        try:
            for b, name in zip(bound, names, strict=True):
                b.step()
                after = opt.lrs
                changes += changes_between(name, before, after)
                before = after
        except TorchRaises as exc:
            t.error = str(exc)
            break
        t.add(e, before, changes, tuple(b.state_dict() for b in bound) if record_states else None)
    t.warnings = list(opt.warnings)
    return t


def plot_timeline(
    t: Timeline,
    path: Any = None,
    *,
    figsize: tuple[float, float] = (10, 4.5),
    log: bool | None = None,
    title: str | None = None,
) -> Figure:
    """Every group's lr as a step line over the rows, with a band under it naming which scheduler wrote each
    row.

    Args:
        t: the timeline.
        path: also save to this file (``.png``, ``.svg``, ``.pdf``).
        figsize: the figure size in inches.
        log: a log lr axis; by default when the lrs span more than a factor of 50.
        title: the title (default: the writers).

    Raises:
        ModuleNotFoundError: matplotlib is not installed (the ``[plot]`` extra).
    """
    from plateau_forensics.plot import GROUP_STYLES, new_figure, save_figure

    fig = new_figure(path, figsize)
    ax, band = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [6, 1], "hspace": 0.08})
    n_groups = max((len(lr) for lr in t.lrs), default=1)
    xs = list(t.epochs)
    step = (xs[1] - xs[0]) if len(xs) > 1 else 1.0
    edges = xs + [xs[-1] + step] if xs else []
    values = [v for lr in t.lrs for v in lr if v > 0 and math.isfinite(v)]
    for g in range(n_groups):
        ys = [lr[g] if g < len(lr) else math.nan for lr in t.lrs]
        colour, dash = GROUP_STYLES[g % len(GROUP_STYLES)]
        ax.stairs(
            ys,
            edges,
            baseline=None,
            label="lr" if n_groups == 1 else f"group {g}",
            linewidth=1.6,
            color=colour,
            linestyle=dash,
        )
    if log is None:
        log = bool(values) and max(values) / min(values) > 50
    if log:
        ax.set_yscale("log")
    ax.set_ylabel("lr")
    ax.grid(True, alpha=0.3)
    if n_groups > 1:
        ax.legend(loc="best", fontsize="small")
    ax.set_title(title if title is not None else " + ".join(t.writers) or "lr timeline", fontsize="medium")
    codes = _codes(t)
    colors = {w: WRITER_COLOURS[k % len(WRITER_COLOURS)] for k, w in enumerate(codes)}
    seen = set()
    for x, ch in zip(xs, t.changes, strict=True):
        writers = list(dict.fromkeys(c.writer for c in ch))
        for k, w in enumerate(writers):
            h = 1.0 / len(writers)
            band.bar(
                x,
                h,
                width=step,
                bottom=k * h,
                align="edge",
                color=colors[w],
                label=w if w not in seen else None,
                linewidth=0,
            )
            seen.add(w)
    band.set_yticks([])
    band.set_ylabel("by", rotation=0, ha="right", va="center")
    band.set_xlabel("epoch")
    if seen:
        handles, labels = band.get_legend_handles_labels()
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncol=min(3, len(seen)),
            fontsize="small",
            frameon=False,
        )
    if t.error and xs:
        ax.axvline(edges[-1], color="red", linestyle="--", linewidth=1)
        ax.annotate(
            "torch raises here",
            (edges[-1], 0.95),
            xycoords=("data", "axes fraction"),
            ha="right",
            fontsize="small",
            color="red",
        )
    if path is not None:
        save_figure(fig, path)
    return fig
