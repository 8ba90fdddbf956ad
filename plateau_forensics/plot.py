"""Draw a Trace with matplotlib: the metric against ``best`` and the bar, the counters, the lr per group.

matplotlib is the ``[plot]`` extra and loads only here. With a ``path`` (and pyplot not in use) the figure is
built without pyplot: no backend, no global state, the same pixels on every machine.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plateau_forensics.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from plateau_forensics.engine import Trace

#: File suffixes ``plot_trace(path=...)`` and ``plateau-trace --plot`` can write.
SAVE_FORMATS = (".png", ".svg", ".pdf")

# Event codes of ``Trace._cols.events`` (engine: 0 improved, 1 bad, 2 cooldown, 3 reduced, 4 suppressed).
_REDUCED, _SUPPRESSED = 3, 4

# Series are told apart by line style and marker first, colour second, so a grey-scale print still reads.
INK = "black"
METRIC_COLOUR = "#1f4e9c"
REDUCE_COLOUR = "#c0392b"
COOL_COLOUR = "0.55"
GROUP_STYLES: tuple[tuple[str, Any], ...] = (
    ("black", "-"), ("#c0392b", (0, (5, 2))), ("#1f4e9c", (0, (1, 1.5))), ("#27864a", (0, (6, 2, 1, 2))),
    ("0.45", (0, (3, 1, 1, 1, 1, 1))),
)


def _need_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError as exc:  # tbparse's habit: say which extra to install
        raise ModuleNotFoundError(
            "plotting needs matplotlib: pip install 'plateau-forensics[plot]'", name="matplotlib") from exc


def check_plot_path(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` as a Path if its suffix is one ``plot_trace`` can write.

    Raises:
        ConfigError: another suffix (the CLI can call this before replaying anything).
    """
    p = Path(path)
    if p.suffix.lower() not in SAVE_FORMATS:
        suffix = p.suffix or "(no suffix)"
        raise ConfigError(f"{p}: cannot plot to '{suffix}': use one of {', '.join(SAVE_FORMATS)}")
    return p


def new_figure(path: Any, figsize: tuple[float, float]) -> Figure:
    """A figure for one plot: pyplot-managed for interactive use, detached when it only goes to a file.

    In Jupyter's inline backend the figure is closed in pyplot right away, so the returned figure is shown
    once, by its rich display, and not a second time when the cell ends.
    """
    if path is not None and "matplotlib.pyplot" not in sys.modules:
        from matplotlib.figure import Figure

        return Figure(figsize=figsize, layout="constrained")
    import matplotlib
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=figsize, layout="constrained")
    if "inline" in str(matplotlib.get_backend()).lower():
        plt.close(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` to ``path`` in the format its suffix names (fixed metadata: repeatable bytes)."""
    p = check_plot_path(path)
    fmt = p.suffix.lower()[1:]
    metadata: dict[str, Any] = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None},
                                "pdf": {"CreationDate": None, "Creator": None, "Producer": None}}[fmt]
    kwargs: dict[str, Any] = {"dpi": 100} if fmt == "png" else {}
    if fmt == "svg":
        import matplotlib

        with matplotlib.rc_context({"svg.hashsalt": "plateau-forensics"}):
            fig.savefig(p, format=fmt, metadata=metadata, **kwargs)
    else:
        fig.savefig(p, format=fmt, metadata=metadata, **kwargs)
    return p


# -- the trace as arrays -----------------------------------------------------------------------------
@dataclass
class TraceArrays:
    """The columns of a trace as numpy arrays, with the "before the step" values rebuilt per segment."""

    x: np.ndarray  # epoch label of each step
    metric: np.ndarray
    best: np.ndarray  # after the step
    best_before: np.ndarray
    bar_before: np.ndarray  # the value the metric had to beat
    num_bad: np.ndarray
    num_bad_before: np.ndarray
    cooldown: np.ndarray
    cooldown_before: np.ndarray
    events: np.ndarray
    lrs: np.ndarray  # (steps, groups), after the step
    last_epoch: np.ndarray
    improved: np.ndarray  # bool
    muted: np.ndarray  # bool: the step ran in cooldown, its bad epoch was not counted
    dx: float  # typical epoch spacing

    @property
    def reduced(self) -> np.ndarray:
        """Indices of the steps that reduced the lr."""
        import numpy as np

        return np.flatnonzero(self.events == _REDUCED)

    @property
    def suppressed(self) -> np.ndarray:
        """Indices of the steps whose reduction was due but changed no lr (``min_lr`` or ``eps``)."""
        import numpy as np

        return np.flatnonzero(self.events == _SUPPRESSED)


def _is_keras(t: Any) -> bool:
    return getattr(t, "rules", "torch") == "keras"


def _initial_lrs(t: Any) -> tuple[float, ...]:
    return (t.start.lr,) if _is_keras(t) else tuple(t.starts[0].lrs)


def _bar(t: Any, best: Any) -> Any:
    """The value a metric had to beat given ``best`` (an array): torch's ``_is_better``, Keras's min_delta."""
    import numpy as np

    cfg = t.config
    with np.errstate(invalid="ignore", over="ignore"):
        if _is_keras(t):
            return best - cfg.delta if cfg.direction == "min" else best + cfg.delta
        if cfg.threshold_mode == "rel":
            return best * (1.0 - cfg.threshold) if cfg.mode == "min" else best * (cfg.threshold + 1.0)
        return best - cfg.threshold if cfg.mode == "min" else best + cfg.threshold


def _arrays_from_steps(t: Any) -> TraceArrays:
    """The same arrays from ``Step``-like records, for rule sets without torch's columns (Keras)."""
    import numpy as np

    steps = list(t.steps)
    nan = float("nan")

    def col(name: str, default: float = nan) -> np.ndarray:
        vals = [getattr(s, name, default) for s in steps]
        return np.asarray([default if v is None else v for v in vals], dtype=float)

    x = col("epoch")
    best = col("best")
    best_b = col("best_before")
    names = {"REDUCED": _REDUCED, "SUPPRESSED": _SUPPRESSED, "IMPROVED": 0, "BAD": 1, "COOLDOWN": 2}
    ev = np.asarray([names[s.event.name] for s in steps], dtype=np.int8)
    groups = max((len(s.lr) for s in steps), default=1)
    lrs = np.full((len(steps), groups), np.nan)
    for i, s in enumerate(steps):
        lrs[i, : len(s.lr)] = s.lr
    nb = np.asarray([s.num_bad_epochs for s in steps], dtype=float)
    nb_b = np.asarray([getattr(s, "num_bad_before", getattr(s, "wait_before", 0)) for s in steps],
                      dtype=float)
    cd = col("cooldown_counter")
    cd_b = col("cooldown_before", 0.0)
    dx = float(np.median(np.diff(x))) if len(x) > 1 else 1.0
    return TraceArrays(x=x, metric=col("metric"), best=best, best_before=best_b, bar_before=_bar(t, best_b),
                       num_bad=nb, num_bad_before=nb_b, cooldown=cd, cooldown_before=cd_b, events=ev, lrs=lrs,
                       last_epoch=np.asarray([s.last_epoch for s in steps], dtype=float),
                       # Keras decrements the cooldown before counting: a step is muted from cooldown 2 up
                       improved=np.asarray([bool(s.improved) for s in steps]),
                       muted=cd_b > (1 if _is_keras(t) else 0),
                       dx=dx if math.isfinite(dx) and dx > 0 else 1.0)


def trace_arrays(t: Trace) -> TraceArrays:
    """Read the trace's columns directly (no ``Step`` objects), so 10,000 epochs cost milliseconds.

    A trace of another rule set (``keras_rules.KerasTrace``) is read from its ``steps`` instead.
    """
    import numpy as np

    if not hasattr(t, "_cols"):
        return _arrays_from_steps(t)

    c = t._cols
    n = len(t)
    x = np.asarray(t.epochs[:n], dtype=float)
    metric = np.asarray(t.metrics[:n], dtype=float)
    best = np.asarray(c.best, dtype=float)
    nb = np.asarray(c.num_bad, dtype=float)
    cd = np.asarray(c.cooldown, dtype=float)
    ev = np.asarray(c.events, dtype=np.int8)
    groups = max((len(v) for v in c.lrs), default=len(t.starts[0].lrs))
    lrs = np.full((n, max(groups, 1)), np.nan)
    if n and all(len(v) == groups for v in c.lrs):
        lrs[:] = np.asarray(c.lrs, dtype=float)
    else:  # the group count changed at a resume: pad the shorter rows
        for i, v in enumerate(c.lrs):
            lrs[i, : len(v)] = v
    best_b, nb_b, cd_b = np.empty(n), np.empty(n), np.empty(n)
    best_b[1:], nb_b[1:], cd_b[1:] = best[:-1], nb[:-1], cd[:-1]
    last_epoch = np.empty(n)
    for k, s in enumerate(t.starts):
        if s.index >= n:
            continue
        end = t.starts[k + 1].index if k + 1 < len(t.starts) else n
        st = s.state
        best_b[s.index], nb_b[s.index], cd_b[s.index] = st.best, st.num_bad_epochs, st.cooldown_counter
        last_epoch[s.index:end] = s.state.last_epoch + np.arange(1, end - s.index + 1)
    bar_b = _bar(t, best_b)
    improved = (best != best_b) & ~(np.isnan(best) & np.isnan(best_b))
    dx = float(np.median(np.diff(x))) if n > 1 else 1.0
    if not math.isfinite(dx) or dx <= 0:
        dx = 1.0
    return TraceArrays(x=x, metric=metric, best=best, best_before=best_b, bar_before=bar_b, num_bad=nb,
                       num_bad_before=nb_b, cooldown=cd, cooldown_before=cd_b, events=ev, lrs=lrs,
                       last_epoch=last_epoch, improved=improved, muted=cd_b > 0, dx=dx)


def _finite(a: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.where(np.isfinite(a), a, np.nan)


def _lr_text(lrs: Sequence[float]) -> str:
    from plateau_forensics.report import g

    return "/".join(g(float(v)) for v in lrs if not math.isnan(v))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of every run of True in ``mask``."""
    import numpy as np

    m = np.concatenate(([False], mask, [False])).astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1).tolist(), (np.flatnonzero(d == -1) - 1).tolist(), strict=False))


def shade_cooldown(
    ax: Axes, a: TraceArrays, label: str | None = "cooldown: bad epochs not counted", dense: bool = False,
) -> Any:
    """Shade the epochs whose step ran in cooldown, as one artist (gid ``pf-cooldown``), or None.

    Hatched, so it survives a grey-scale print; plain grey when the runs are narrower than the hatch.
    """
    from matplotlib.collections import PolyCollection

    runs = _runs(a.muted)
    if not runs:
        return None
    h = a.dx / 2
    verts = [[(a.x[i] - h, 0), (a.x[i] - h, 1), (a.x[j] + h, 1), (a.x[j] + h, 0)] for i, j in runs]
    style: dict[str, Any] = ({"facecolor": "0.88", "edgecolor": "none", "rasterized": True} if dense else
                             {"facecolor": "0.93", "edgecolor": COOL_COLOUR, "hatch": "////"})
    coll = PolyCollection(verts, transform=ax.get_xaxis_transform(), linewidth=0, zorder=0, label=label,
                          **style)
    coll.set_gid("pf-cooldown")
    ax.add_collection(coll, autolim=False)
    return coll


def _spread(count: int, limit: int) -> list[int]:
    """At most ``limit`` of ``range(count)``, evenly spread (a long run is labelled along its length)."""
    if limit <= 0:
        return []
    if count <= limit:
        return list(range(count))
    return sorted({round(k * (count - 1) / (limit - 1)) for k in range(limit)}) if limit > 1 else [0]


# offset (points), ha, va of a reduction label, in order of preference: above-right of the marker, then
# below-left (under the previous, higher lr step), above-left (at the right edge), then one row further out
_LABEL_SPOTS = ((3, 5, "left", "bottom"), (-4, -4, "right", "top"), (-3, 5, "right", "bottom"),
                (3, 16, "left", "bottom"), (-4, -15, "right", "top"), (3, -5, "left", "top"))


def _settle_labels(fig: Figure) -> None:
    """Move each reduction label to the first spot where it overlaps no earlier label and stays inside
    its panel; drop it when there is none (its marker stays). Needs one layout pass, no pixels."""
    labels = [t for ax in fig.axes for t in ax.texts if t.get_gid() == "pf-reduction-text"]
    if not labels:
        return
    fig.draw_without_rendering()
    renderer = fig._get_renderer()  # type: ignore[attr-defined]
    kept: list[Any] = []
    for ann in labels:
        inside = ann.axes.get_window_extent(renderer)
        for dx, dy, ha, va in _LABEL_SPOTS:
            ann.xyann = (dx, dy)
            ann.set_ha(ha)
            ann.set_va(va)
            box = ann.get_window_extent(renderer)
            fits = (box.x0 >= inside.x0 and box.x1 <= inside.x1 + 2 and box.y0 >= inside.y0
                    and box.y1 <= inside.y1)
            if fits and not any(box.overlaps(other) for other in kept):
                kept.append(box)
                break
        else:
            ann.remove()


@dataclass(frozen=True)
class _Marks:
    checkpoint: float | None
    checkpoint_step: float | None
    resume: float | None


def _marks(t: Trace, a: TraceArrays) -> _Marks:
    n = len(a.x)
    ck_x = ck_step = None
    al = getattr(t, "alignment", None)
    if al is not None and al.epoch is not None:
        ck_x, ck_step = float(al.epoch), al.scheduler_step
    elif getattr(t, "checkpoint", None) is not None and t.checkpoint.epoch is not None and n and \
            a.x[0] <= t.checkpoint.epoch <= a.x[-1]:
        ck_x, ck_step = float(t.checkpoint.epoch), t.checkpoint.state.last_epoch
    starts = getattr(t, "starts", ())
    resume = float(a.x[starts[1].index]) if len(starts) > 1 and starts[1].index < n else None
    return _Marks(ck_x, ck_step, resume)


def _gid(artist: Any, gid: str) -> None:
    """Tag an artist (or every bar of a BarContainer) so tests and users can find it in the figure."""
    for part in artist if isinstance(artist, tuple) else (artist,):
        part.set_gid(gid)


def _vline(axes: Sequence[Axes], x: float, gid: str, style: Any, label: str | None) -> None:
    for k, ax in enumerate(axes):
        line = ax.axvline(x, color=INK, linestyle=style, linewidth=1.1, zorder=1,
                          label=label if k == 0 else None)
        line.set_gid(gid)


def draw_lr(
    ax: Axes, t: Trace, a: TraceArrays, *, log_lr: bool = True, max_annotations: int = 20,
    rasterize: bool = False,
) -> None:
    """The lr of every group as a step line (after each step), reduction and suppression markers, labels."""
    import numpy as np

    n, groups = a.lrs.shape
    xs = np.append(a.x, a.x[-1] + a.dx) if n else a.x
    for gidx in range(groups):
        colour, style = GROUP_STYLES[gidx % len(GROUP_STYLES)]
        ys = np.append(a.lrs[:, gidx], a.lrs[-1, gidx]) if n else a.lrs[:, gidx]
        label = "lr (after the step)" if groups == 1 else f"lr group {gidx}"
        (line,) = ax.plot(xs, ys, drawstyle="steps-post", color=colour, linestyle=style, linewidth=1.8,
                          label=label, zorder=3, rasterized=rasterize)
        line.set_gid(f"pf-lr-{gidx}")
    positive = bool(n) and bool(np.all(a.lrs[np.isfinite(a.lrs)] > 0))
    if log_lr and positive:
        ax.set_yscale("log")
    red, sup = a.reduced, a.suppressed
    if len(red):
        prev = np.vstack([a.lrs[i - 1] if i > 0 else np.asarray(_initial_lrs(t),
                                                                float)[:groups] for i in red])
        changed = a.lrs[red] != prev
        first_changed = np.argmax(changed, axis=1)
        ys = a.lrs[red, first_changed]
        (m,) = ax.plot(a.x[red], ys, linestyle="none", marker="v", markersize=4 if rasterize else 7,
                       color=REDUCE_COLOUR,
                       markeredgecolor=INK, markeredgewidth=0.6, zorder=5,
                       label=f"reduction ({len(red)})", rasterized=rasterize and len(red) > 500)
        m.set_gid("pf-reductions")
        texts = [f"{_num(a.x[i])}: {_lr_text(prev[k])} → {_lr_text(a.lrs[i])}" for k, i in enumerate(red)]
        for k in _spread(len(red), max_annotations):
            i = int(red[k])
            ann = ax.annotate(texts[k], (a.x[i], ys[k]), xytext=_LABEL_SPOTS[0][:2],
                              textcoords="offset points",
                              fontsize=7.5, color=INK, ha="left", va="bottom", zorder=6,
                              bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none",
                                    "alpha": 0.85})
            ann.set_gid("pf-reduction-text")
            ann.set_in_layout(False)
    if len(sup):
        (m,) = ax.plot(a.x[sup], a.lrs[sup, 0], linestyle="none", marker="X",
                       markersize=5 if rasterize else 7,
                       markerfacecolor="white", markeredgecolor=REDUCE_COLOUR, markeredgewidth=1.2, zorder=5,
                       label=f"suppressed by min_lr/eps ({len(sup)})",
                       rasterized=rasterize and len(sup) > 500)
        m.set_gid("pf-suppressed")
    draw_logged_lr(ax, t, a, rasterize=rasterize)
    if ax.get_yscale() == "log":
        _level_ticks(ax, a.lrs)
    ax.set_ylabel("learning rate" + (" (log)" if ax.get_yscale() == "log" else ""))


def logged_lrs(t: Any) -> list[tuple[float, tuple[float, ...], bool]]:
    """(epoch, the lr the log says that epoch trained with, whether the story's replay agrees) per step."""
    log, rows = getattr(t, "log", None), getattr(t, "rows", None)
    if log is None or log.lrs is None or rows is None:
        return []
    verdict = getattr(t, "verdict", None)
    unexplained = set(verdict.evaluation.external_rows) if verdict is not None and verdict.evaluation else None
    out = []
    for p, row in enumerate(rows):
        if row >= len(log.lrs) or log.lrs[row] is None or log.lrs[row][0] is None:
            continue
        logged = tuple(v for v in log.lrs[row] if v is not None)
        if unexplained is not None:  # the story says which logged lrs no plateau step explains
            agrees = row not in unexplained
        else:
            replayed = t.step(p).lr_in[: len(logged)]
            ivs = log.lr_intervals(row) or ()
            agrees = all(iv is None or iv[0] <= v <= iv[1] or abs(v - (iv[0] + iv[1]) / 2) <= 1e-9 * abs(v)
                         for v, iv in zip(replayed, ivs))
        out.append((float(t.epochs[p]), logged, agrees))
    return out


def draw_logged_lr(ax: Axes, t: Trace, a: TraceArrays, *, rasterize: bool = False) -> None:
    """The lr the log says each epoch trained with, beside the replayed lr: hollow dots where they agree,
    red rings where they do not (the evidence behind an lr finding)."""
    points = logged_lrs(t)
    if not points:
        return
    ok = [(x, lrs[0]) for x, lrs, agrees in points if agrees]
    bad = [(x, lrs[0]) for x, lrs, agrees in points if not agrees]
    size = 3 if rasterize else 5
    if ok:
        (m,) = ax.plot([p[0] for p in ok], [p[1] for p in ok], linestyle="none", marker="o", markersize=size,
                       markerfacecolor="none", markeredgecolor="0.45", markeredgewidth=0.8, zorder=4,
                       label="logged lr (used during the epoch)", rasterized=rasterize and len(ok) > 500)
        m.set_gid("pf-logged-lr")
    if bad:
        (m,) = ax.plot([p[0] for p in bad], [p[1] for p in bad], linestyle="none", marker="o",
                       markersize=size + 3, markerfacecolor="none", markeredgecolor=REDUCE_COLOUR,
                       markeredgewidth=1.4, zorder=6, label=f"logged lr the replay does not give ({len(bad)})")
        m.set_gid("pf-logged-lr-mismatch")


def _level_ticks(ax: Axes, lrs: np.ndarray, most: int = 8) -> None:
    """Label a log lr axis at the lr levels themselves when there are few (a log axis spanning less
    than a decade otherwise shows one or two labels)."""
    import numpy as np
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    levels = np.unique(lrs[np.isfinite(lrs)])
    if 1 < len(levels) <= most:
        ax.yaxis.set_major_locator(FixedLocator(levels.tolist()))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _num(v)))


def _num(x: float) -> str:
    from plateau_forensics.report import g

    return g(float(x))


def _bar_words(t: Trace) -> str:
    c = t.config
    if _is_keras(t):
        return f"best{'-' if c.direction == 'min' else '+'}{_num(c.delta)} (min_delta)"
    thr = _num(c.threshold)
    if c.threshold_mode == "rel":
        return f"best*(1-{thr})" if c.mode == "min" else f"best*(1+{thr})"
    return f"best-{thr}" if c.mode == "min" else f"best+{thr}"


def _title(t: Trace) -> str:
    c = t.config
    if _is_keras(t):
        return (f"Keras ReduceLROnPlateau(mode={c.direction}, factor={_num(c.factor)}, "
                f"patience={c.patience}, "
                f"min_delta={_num(c.min_delta)}, cooldown={c.cooldown}, min_lr={_num(c.min_lr)})")
    min_lr = "/".join(_num(v) for v in c.min_lr) if isinstance(c.min_lr, tuple) else _num(c.min_lr)
    return (f"ReduceLROnPlateau(mode={c.mode}, factor={_num(c.factor)}, patience={c.patience}, "
            f"threshold={_num(c.threshold)} {c.threshold_mode}, cooldown={c.cooldown}, min_lr={min_lr}, "
            f"eps={_num(c.eps)})")


def _legend(ax: Axes, **kw: Any) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, borderaxespad=0, **kw)


def plot_trace(
    trace: Trace,
    path: str | os.PathLike[str] | None = None,
    *,
    ax: Axes | Sequence[Axes] | None = None,
    title: str | None = None,
    log_lr: bool = True,
    max_markers: int = 300,
    max_annotations: int = 20,
    zoom_metric: bool = True,
    figsize: tuple[float, float] = (11.0, 7.5),
) -> Figure:
    """Draw what the scheduler saw and did, epoch by epoch, in three panels sharing the epoch axis.

    1. the metric (filled dot: improved; hollow: not better than the bar), ``best`` (solid step line) and the
       bar a metric had to beat (dashed: ``best*(1-threshold)`` or ``best-threshold``), cooldown hatched;
    2. ``num_bad_epochs`` counting up toward the ``patience`` line (the count that triggered a reduction is
       drawn hatched above it) and ``cooldown_counter``;
    3. the lr of every param group after each step (log axis), reductions as filled triangles annotated
       ``epoch: from → to``, suppressed ones (``min_lr``/``eps``) as hollow crosses.

    The checkpoint's epoch (solid vertical line) and the resume point (the first step replayed from the
    saved state, dotted) are marked on every panel; a constant epoch offset puts torch's ``last_epoch`` on
    the top axis.

    Args:
        trace: what ``plateau_forensics.trace`` or ``replay`` returned.
        path: save there too, in the format the suffix names (``.png``, ``.svg``, ``.pdf``).
        ax: draw into existing axes instead of a new figure: a sequence of three (metric, counters, lr),
            or one Axes for the lr panel alone.
        title: the figure title; the hyperparameters by default.
        log_lr: a log lr axis (falls back to linear when some lr is not positive).
        max_markers: above this many epochs the per-epoch metric markers and count bars are left out
            (lines and shading stay; every reduction keeps its marker) and dense lines are rasterized.
        max_annotations: at most this many reductions get a ``from → to`` label, spread over the run
            (labels that would overlap are left out; every reduction keeps its marker).
        zoom_metric: zoom the metric axis onto the plateau where the bar decisions happen, when an early
            descent would otherwise flatten it (a note counts the values off scale).
        figsize: inches, for a new figure.

    Returns:
        The matplotlib ``Figure``.

    Raises:
        ModuleNotFoundError: matplotlib is not installed (the ``[plot]`` extra).
        ConfigError: ``path`` has a suffix other than ``.png``, ``.svg``, ``.pdf``.
    """
    _need_matplotlib()
    if path is not None:
        check_plot_path(path)
    a = trace_arrays(trace)
    dense = len(a.x) > max_markers
    if ax is None:
        fig = new_figure(path, figsize)
        axes = fig.subplots(3, 1, sharex=True, height_ratios=[3.0, 1.4, 2.2])
    elif isinstance(ax, Sequence):
        axes = list(ax)
        fig = axes[0].figure
    else:
        axes = [ax]
        fig = ax.figure
    if not len(trace):
        axes[0].text(0.5, 0.5, "empty trace: nothing was replayed", transform=axes[0].transAxes, ha="center")
        if path is not None:
            save_figure(fig, path)
        return fig  # type: ignore[return-value]
    marks = _marks(trace, a)
    if len(axes) == 1:
        lr_ax = axes[0]
        shade_cooldown(lr_ax, a, dense=dense)
        draw_lr(lr_ax, trace, a, log_lr=log_lr, max_annotations=max_annotations, rasterize=dense)
        _draw_marks([lr_ax], marks)
        lr_ax.set_xlabel("epoch (log label)")
        lr_ax.set_gid("pf-lr-axes")
        _legend(lr_ax)
    else:
        m_ax, c_ax, lr_ax = axes[:3]
        m_ax.set_gid("pf-metric-axes")
        c_ax.set_gid("pf-counter-axes")
        lr_ax.set_gid("pf-lr-axes")
        for k, panel in enumerate((m_ax, c_ax, lr_ax)):
            shade_cooldown(panel, a, label="cooldown: bad epochs not counted" if k == 0 else None,
                           dense=dense)
        _draw_metric(m_ax, trace, a, dense, zoom_metric)
        _draw_counters(c_ax, trace, a, dense)
        draw_lr(lr_ax, trace, a, log_lr=log_lr, max_annotations=max_annotations, rasterize=dense)
        _draw_marks([m_ax, c_ax, lr_ax], marks)
        lr_ax.set_xlabel("epoch (log label)")
        _offset_axis(m_ax, a)
        for panel in (m_ax, c_ax, lr_ax):
            panel.grid(True, axis="y", color="0.9", linewidth=0.6)
            _legend(panel)
    lr_ax.set_xlim(a.x[0] - a.dx * 0.8, a.x[-1] + a.dx * 1.2)
    if len(axes) >= 3 or ax is None:
        fig.suptitle(title if title is not None else _title(trace), fontsize=10)
    elif title:
        axes[0].set_title(title, fontsize=10)
    _settle_labels(fig)
    if path is not None:
        save_figure(fig, path)
    return fig  # type: ignore[return-value]


def _zoom_metric(ax: Axes, t: Trace, a: TraceArrays) -> None:
    """Zoom onto the band where metrics failed to beat the bar, when the early descent would flatten it.

    The decisions the plot explains happen within a hair of ``best``; a run that starts at 1.6 and
    plateaus at 0.41 would draw that hair as one line. Points outside the zoom are counted in a note.
    """
    import numpy as np

    bad = ~a.improved & np.isfinite(a.metric)
    finite = a.metric[np.isfinite(a.metric)]
    if bad.sum() < 2 or finite.size < 2:
        return
    refs = np.concatenate([a.metric[bad], _finite(a.best_before[bad])])
    refs = refs[np.isfinite(refs)]
    # the 85th percentile, not the max, so that a few spikes among the bad epochs do not undo the zoom
    lo, hi = float(refs.min()), float(np.percentile(refs, 85))
    full = float(finite.max() - finite.min())
    if full <= 0 or hi - lo > 0.3 * full:
        return
    w = (hi - lo) or abs(hi) * 1e-3 or 1e-3
    y0, y1 = lo - 0.25 * w, max(hi + 0.6 * w,
                                float(refs.max()) + 0.1 * w if refs.max() <= hi + w else -math.inf)
    ax.set_ylim(y0, y1)
    outside = int(((finite < y0) | (finite > y1)).sum())
    if outside:
        ax.text(0.005, 0.02, f"zoomed to the plateau: {outside} value{'s' if outside > 1 else ''} off scale",
                transform=ax.transAxes, fontsize=7.5, color="0.3", ha="left", va="bottom")


def _draw_metric(ax: Axes, t: Trace, a: TraceArrays, dense: bool, zoom: bool) -> None:
    import numpy as np

    (line,) = ax.plot(a.x, _finite(a.metric), color=METRIC_COLOUR, linewidth=1.0,
                      label="metric passed to step()",
                      zorder=3, rasterized=dense)
    line.set_gid("pf-metric")
    if not dense:
        imp = a.improved
        (m1,) = ax.plot(a.x[imp], a.metric[imp], linestyle="none", marker="o", markersize=5,
                        color=METRIC_COLOUR,
                        markeredgecolor=INK, markeredgewidth=0.5, zorder=4, label="improved: beat the bar")
        m1.set_gid("pf-improved")
        bad = ~imp & np.isfinite(a.metric)
        (m2,) = ax.plot(a.x[bad], a.metric[bad], linestyle="none", marker="o", markersize=5, color="white",
                        markeredgecolor=METRIC_COLOUR, markeredgewidth=1.2, zorder=4,
                        label="not better than the bar")
        m2.set_gid("pf-not-improved")
    xs = np.append(a.x, a.x[-1] + a.dx)
    best = _finite(np.append(a.best, a.best[-1]))
    (b,) = ax.plot(xs, best, drawstyle="steps-post", color=INK, linewidth=1.5, label="best (after the step)",
                   zorder=2, rasterized=dense)
    b.set_gid("pf-best")
    bar_next = float(_bar(t, a.best[-1:])[0])
    bars = _finite(np.append(a.bar_before, bar_next))
    # steps-pre: the segment arriving at an epoch from the left is the bar that epoch's metric had to beat
    (d,) = ax.plot(xs, bars, drawstyle="steps-pre", color=INK, linestyle=(0, (4, 2)), linewidth=1.0,
                   label=f"bar to beat: {_bar_words(t)}", zorder=2, rasterized=dense)
    d.set_gid("pf-bar")
    ax.set_ylabel(f"metric ({t.config.direction if _is_keras(t) else t.config.mode})")
    ax.ticklabel_format(axis="y", useOffset=False)  # "+0.4" offsets make 0.4143 vs 0.4186 hard to read
    if zoom:
        _zoom_metric(ax, t, a)


def _draw_counters(ax: Axes, t: Trace, a: TraceArrays, dense: bool) -> None:
    import numpy as np

    patience = t.config.patience
    trig = np.flatnonzero((a.events == _REDUCED) | (a.events == _SUPPRESSED))
    counted = np.where(a.improved | a.muted, 0, a.num_bad_before + 1)
    if dense:
        # one bar per epoch is below a pixel: draw the highest count reached in each bin instead
        bins = min(len(a.x), 600)
        edges_i = np.linspace(0, len(a.x), bins + 1).astype(int)
        peak = np.maximum.reduceat(counted, edges_i[:-1])
        edges = np.append(a.x[edges_i[:-1]] - a.dx / 2, a.x[-1] + a.dx / 2)
        st = ax.stairs(peak, edges, fill=True, color="0.7", label="bad epochs counted (peak per bin)")
        st.set_gid("pf-num-bad")
    else:
        bars = ax.bar(a.x, a.num_bad, width=a.dx * 0.7, color="0.75", edgecolor="0.35", linewidth=0.5,
                      label="num_bad_epochs (after the step)")
        _gid(bars, "pf-num-bad")
        if len(trig):
            tl = ax.bar(a.x[trig], counted[trig], width=a.dx * 0.7, color="white", edgecolor=REDUCE_COLOUR,
                        hatch="xxx", linewidth=0.8, label="count that made a reduction due")
            _gid(tl, "pf-trigger")
    # torch reduces when num_bad_epochs > patience; Keras when wait >= patience
    when = "reached" if _is_keras(t) else "exceeded"
    pl = ax.axhline(patience, color=INK, linestyle=(0, (4, 2)), linewidth=1.0,
                    label=f"patience = {patience} (reduce when {when})")
    pl.set_gid("pf-patience")
    if not dense and (t.config.cooldown > 0 or np.any(a.cooldown)):
        xs = np.append(a.x, a.x[-1] + a.dx)
        (cl,) = ax.plot(xs, np.append(a.cooldown, a.cooldown[-1]), drawstyle="steps-post", color=COOL_COLOUR,
                        linestyle=(0, (1, 1)), linewidth=1.6, label="cooldown_counter (after the step)",
                        rasterized=dense)
        cl.set_gid("pf-cooldown-counter")
    top = max(float(np.nanmax(counted)) if len(counted) else 0, patience + 1, float(np.nanmax(a.cooldown)), 1)
    ax.set_ylim(0, top + 0.6)
    if top <= 12:
        ax.set_yticks(range(0, int(top) + 1))
    ax.set_ylabel("counters" if not _is_keras(t) else "counters (wait)")


def _draw_marks(axes: Sequence[Axes], marks: _Marks) -> None:
    top = axes[0]
    if marks.checkpoint is not None:
        step = f", last_epoch {_num(marks.checkpoint_step)}" if marks.checkpoint_step is not None else ""
        _vline(axes, marks.checkpoint, "pf-checkpoint", "-",
               f"checkpoint saved after epoch {_num(marks.checkpoint)}")
        top.annotate(f"checkpoint\n(epoch {_num(marks.checkpoint)}{step})", (marks.checkpoint, 1.0),
                     xycoords=("data", "axes fraction"), xytext=(-3, -3), textcoords="offset points",
                     fontsize=7.5, ha="right", va="top")
    if marks.resume is not None:
        _vline(axes, marks.resume, "pf-resume", (0, (1, 2)),
               f"resumed from the saved state at epoch {_num(marks.resume)}")
        top.annotate("resume", (marks.resume, 1.0), xycoords=("data", "axes fraction"),
                     xytext=(3, -3), textcoords="offset points", fontsize=7.5, ha="left", va="top")


def _offset_axis(ax: Axes, a: TraceArrays) -> None:
    """torch's ``last_epoch`` on the top axis when ``epoch - last_epoch`` is the same for every step."""
    import numpy as np
    from matplotlib.ticker import FixedLocator, MaxNLocator

    off = a.x - a.last_epoch
    if not len(off) or not np.all(off == off[0]) or off[0] == 0:
        return
    o = float(off[0])
    sec = ax.secondary_xaxis("top", functions=(lambda v: v - o, lambda v: v + o))
    lo, hi = float(a.last_epoch[0]), float(a.last_epoch[-1])
    ticks = [v for v in MaxNLocator(nbins=10, integer=True).tick_values(lo, hi) if lo <= v <= hi]
    sec.xaxis.set_major_locator(FixedLocator(ticks))
    sign = "-" if o > 0 else "+"
    sec.set_xlabel(f"scheduler step (last_epoch = epoch {sign} {_num(abs(o))})", fontsize=8)
    sec.tick_params(labelsize=8)
    sec.set_gid("pf-last-epoch-axis")


# -- what-if: several configs over one log ------------------------------------------------------------
# (colour, dash pattern, marker, width): the reference is a wide pale band, the others thin dark patterns
COMPARE_STYLES: tuple[tuple[str, Any, str, float], ...] = (
    ("0.6", "-", "o", 4.0), ("black", (0, (5, 2)), "v", 1.6), ("#c0392b", (0, (1, 1.2)), "s", 1.8),
    ("#1f4e9c", (0, (6, 2, 1, 2)), "D", 1.6), ("#27864a", (0, (3, 1, 1, 1, 1, 1)), "^", 1.6),
    ("black", (0, (1, 3)), "P", 1.6), ("#7d3c98", (0, (8, 3)), "X", 1.6), ("0.35", (0, (2, 2)), "*", 1.6),
)


def plot_comparison(
    cmp: Any,
    path: str | os.PathLike[str] | None = None,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (11.0, 5.5),
    metric: bool = True,
    group: int = 0,
) -> Figure:
    """The lr timelines of a ``Comparison`` overlaid on one log axis (see ``Comparison.plot``).

    Each config gets its own dash pattern and reduction marker; where a config first departs from the
    reference (config 0) a short tick with its label is drawn at the top of the panel.
    """
    import numpy as np

    _need_matplotlib()
    if path is not None:
        check_plot_path(path)
    if ax is None:
        fig = new_figure(path, figsize)
        if metric:
            m_ax, lr_ax = fig.subplots(2, 1, sharex=True, height_ratios=[1.0, 2.4])
        else:
            m_ax, lr_ax = None, fig.subplots(1, 1)
    else:
        fig, m_ax, lr_ax = ax.figure, None, ax
    x = np.asarray([float(e) for e in cmp.epochs], dtype=float)
    n = len(x)
    dx = float(np.median(np.diff(x))) if n > 1 else 1.0
    dense = n > 300
    if m_ax is not None:
        (ml,) = m_ax.plot(x, _finite(np.asarray(cmp.metrics, dtype=float)), color=METRIC_COLOUR,
                          linewidth=1.0,
                          marker=None if dense else ".", markersize=4, label="metric passed to step()",
                          rasterized=dense)
        ml.set_gid("pf-metric")
        m_ax.set_ylabel("metric")
        m_ax.set_gid("pf-metric-axes")
        _legend(m_ax)
    from matplotlib.lines import Line2D

    xs = np.append(x, x[-1] + dx) if n else x
    all_lrs = []
    handles = []
    for k, lab in enumerate(cmp.labels):
        colour, dash, marker, width = COMPARE_STYLES[k % len(COMPARE_STYLES)]
        line = cmp.lr_timeline(k)
        ys = np.asarray([v[group] if group < len(v) else np.nan for v in line], dtype=float)
        all_lrs.append(ys)
        if n:
            ys_plot = np.append(ys, ys[-1])
            name = f"{lab} ({cmp.rules[k]})" if len(set(cmp.rules)) > 1 else lab
            (ln,) = lr_ax.plot(xs, ys_plot, drawstyle="steps-post", color=colour, linestyle=dash,
                               linewidth=width, label=name, zorder=2 + (k > 0), solid_capstyle="butt",
                               rasterized=dense)
            ln.set_gid(f"pf-compare-lr-{k}")
            prev = np.concatenate(([cmp.initial_lrs[group] if group < len(cmp.initial_lrs) else np.nan],
                                   ys[:-1]))
            red = np.flatnonzero(~np.isclose(ys, prev, rtol=1e-6, atol=0.0))
            (mk,) = lr_ax.plot(x[red], ys[red], linestyle="none", marker=marker, markersize=6 if k else 8,
                               markerfacecolor=colour if k else "white",
                               markeredgecolor="black" if k else "0.4",
                               markeredgewidth=0.8, zorder=4, rasterized=dense and len(red) > 500)
            mk.set_gid(f"pf-compare-reductions-{k}")
            handles.append(Line2D([], [], color=colour, linestyle=dash, linewidth=width, marker=marker,
                                  markersize=mk.get_markersize(), markerfacecolor=mk.get_markerfacecolor(),
                                  markeredgecolor=mk.get_markeredgecolor(), markeredgewidth=0.8, label=name))
    finite = np.concatenate(all_lrs) if all_lrs else np.array([])
    finite = finite[np.isfinite(finite)]
    if finite.size and np.all(finite > 0):
        lr_ax.set_yscale("log")
        _level_ticks(lr_ax, finite.reshape(-1, 1))
    for k, epoch in enumerate(cmp.divergence().values(), start=1):
        if epoch is None:
            continue
        colour = COMPARE_STYLES[k % len(COMPARE_STYLES)][0]
        tick = lr_ax.axvline(float(epoch), ymin=0.0, ymax=1.0, color=colour if colour != "0.6" else "0.3",
                             linestyle=(0, (1, 3)), linewidth=0.9, zorder=1)
        tick.set_gid("pf-divergence")
    lr_ax.set_ylabel("learning rate (log)" if lr_ax.get_yscale() == "log" else "learning rate")
    lr_ax.set_xlabel("epoch (log label)")
    lr_ax.set_gid("pf-lr-axes")
    lr_ax.grid(True, axis="y", color="0.9", linewidth=0.6)
    _legend(lr_ax, handles=handles or None,
            title="config (markers: reductions;\ndotted verticals: first departure\nfrom the first config)",
            title_fontsize=7.5)
    if n:
        lr_ax.set_xlim(x[0] - dx * 0.8, x[-1] + dx * 1.2)
    groups = max((len(v) for v in cmp.lr_timeline(0)), default=1)
    what = f"what-if: {len(cmp)} settings over {n} steps" + (f" (lr of group {group})" if groups > 1 else "")
    shared = title if title is not None else f"{what}\nshared: {_shared_config_text(cmp)}"
    if ax is None:
        fig.suptitle(shared, fontsize=9.5)
    if path is not None:
        save_figure(fig, path)
    return fig  # type: ignore[return-value]


def _shared_config_text(cmp: Any) -> str:
    from plateau_forensics.whatif import _shared_config

    return _shared_config(cmp) + f"; initial lr {_lr_text(cmp.initial_lrs)}"
