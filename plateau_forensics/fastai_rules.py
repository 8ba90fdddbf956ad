"""fastai's ``ReduceLROnPlateau`` callback, replayed in pure Python, what fastai 2.8.12 computes.

Its rules differ from torch's (``--rules fastai``): the lr is *divided* by ``factor`` (default 10, so
``lr / 10``, not ``lr * 0.1``); it reduces at ``wait >= patience`` (default patience 1: every bad epoch)
and resets ``wait`` even when ``min_lr`` stops the reduction; it has no cooldown and no eps;
``min_delta`` is absolute (default 0); the direction comes from the monitor's name (``'loss'`` or
``'error'`` in it: minimised, else maximised) unless ``comp`` is given; and every ``fit()`` starts again:
``before_fit`` zeroes ``wait``, resets ``best`` to +-inf (``reset_on_fit=True``), and ``Learner.fit`` sets
the lr to its ``lr`` argument. The comparison is float64 (``np.less`` on the Python floats the Recorder
holds), the lr a Python float.

fastai's ``CSVLogger`` writes ``history.csv``: the header (``epoch,train_loss,valid_loss,<metrics>,time``)
then one line per epoch, each value ``str()`` of a Python float (exact); with ``append=True`` every
``fit()`` adds its own header, and its epochs start again at 0. ``read_log`` reads that shape (each
header a ``fit()``).

This module imports neither fastai, torch nor numpy.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from plateau_forensics.engine import Event
from plateau_forensics.engine import _num as _fmt
from plateau_forensics.errors import ConfigError, LossLogError
from plateau_forensics.rulesets import RuleStep, RuleTrace
from plateau_forensics.state import PlateauConfig

if TYPE_CHECKING:
    from plateau_forensics.losses import LossLog

__all__ = ["FastaiConfig", "configure", "read_history", "read_log", "replay", "rules_runner", "run_fastai"]

#: fastai's default lr (``defaults.lr``): what ``Learner.fit`` sets when called without ``lr``.
DEFAULT_LR = 1e-3


@dataclass(frozen=True)
class FastaiConfig:
    """``fastai.callback.tracker.ReduceLROnPlateau``'s arguments, with fastai's names and defaults.

    Frozen so that a replay cannot change the configuration it explains.

    Args:
        monitor: the Recorder's column monitored; with ``mode="auto"`` it picks the direction.
        mode: ``"auto"`` (fastai's ``comp=None``: ``np.less`` when ``'loss'`` or ``'error'`` is in the
            name, else ``np.greater``), ``"min"`` (``comp=np.less``) or ``"max"`` (``comp=np.greater``).
        min_delta: added to the value before the comparison (min: ``val + min_delta < best``; max:
            ``val - min_delta > best``); its sign is kept, as fastai keeps it.
        patience: reduce when ``wait`` (bad epochs since the last improvement or reduction) reaches it.
        factor: the lr is divided by it: ``max(lr / factor, min_lr)``, every param group.
        min_lr: the lowest lr.
        reset_on_fit: ``best`` back to +-inf at every ``fit()`` (``wait`` always is zeroed).
        fit_lrs: not the callback's: the lr each ``fit(n, lr)`` call set, one per fit (one param group), when
            the fits used different lrs; history.csv does not record them. None: every fit starts at the
            replay's starting lrs.

    Raises:
        ConfigError: an unknown mode, or ``factor == 0`` (fastai divides by it).

    Example:
        >>> FastaiConfig().direction, FastaiConfig(monitor="accuracy").direction
        ('min', 'max')
    """

    monitor: str = "valid_loss"
    mode: Literal["auto", "min", "max"] = "auto"
    min_delta: float = 0.0
    patience: int = 1
    factor: float = 10.0
    min_lr: float = 0.0
    reset_on_fit: bool = True
    fit_lrs: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "min", "max"):
            raise ConfigError(f"fastai's mode is its comp: 'auto' (comp=None), 'min' (np.less) or 'max' "
                              f"(np.greater); got {self.mode!r}")
        if self.factor == 0:
            raise ConfigError("factor 0: fastai divides the lr by factor (ZeroDivisionError at the first "
                              "reduction)")

    @property
    def direction(self) -> Literal["min", "max"]:
        """``"min"`` or ``"max"``: fastai's ``comp`` (``TrackerCallback.__init__``)."""
        if self.mode != "auto":
            return self.mode
        return "min" if "loss" in self.monitor or "error" in self.monitor else "max"

    def to_dict(self) -> dict[str, Any]:
        """The arguments, ``mode`` for ``comp``; ``comp=None`` is ``mode="auto"``."""
        out = {"monitor": self.monitor, "mode": self.mode, "min_delta": self.min_delta,
               "patience": self.patience, "factor": self.factor, "min_lr": self.min_lr,
               "reset_on_fit": self.reset_on_fit}
        if self.fit_lrs is not None:
            out["fit_lrs"] = ",".join(_fmt(v) for v in self.fit_lrs)
        return out


def run_fastai(config: FastaiConfig, metrics: Sequence[float], lrs: Sequence[float] = (DEFAULT_LR,), *,
               epochs: Sequence[float] | None = None, fits: Sequence[int] = (),
               fit_lrs: Sequence[Sequence[float]] | None = None) -> RuleTrace:
    """Feed ``metrics`` to the callback's ``after_epoch`` one by one, a ``before_fit`` before each fit.

    Args:
        config: the callback's arguments.
        metrics: the monitored value of each epoch (Python floats, as the Recorder holds them).
        lrs: each param group's lr set by the first ``fit()``.
        epochs: a label per metric (``0..n-1``, fastai's own epoch counter, when None).
        fits: the index of the first epoch of every later ``fit()`` (sorted, within the metrics).
        fit_lrs: per later fit, the lrs its ``fit(lr=...)`` set; default ``lrs`` again.

    Returns:
        A ``RuleTrace`` (``rules="fastai"``); each step's ``state`` has ``fit`` (0-based), ``wait``, ``best``.

    Example:
        >>> t = run_fastai(FastaiConfig(), [1.0, 1.0, 0.5], [0.1])
        >>> [s.event.value for s in t.steps], t.steps[-1].lr
        (['improved', 'reduced', 'improved'], (0.01,))
    """
    values = [float(m) for m in metrics]
    labels = list(range(len(values))) if epochs is None else list(epochs)
    if len(labels) != len(values):
        raise ConfigError(f"{len(labels)} epoch labels for {len(values)} metrics")
    starts = sorted(set(fits))
    if any(not 0 < s < max(len(values), 1) for s in starts):
        raise ConfigError(f"fit starts {starts} outside the {len(values)} epochs")
    base = tuple(float(v) for v in lrs)
    later = [tuple(float(v) for v in x) for x in fit_lrs] if fit_lrs is not None else [base] * len(starts)
    if len(later) != len(starts):
        raise ConfigError(f"{len(later)} fit lrs for {len(starts)} later fits")
    c = config
    is_min = c.direction == "min"
    signed = c.min_delta * -1 if is_min else c.min_delta  # `if comp == np.less: min_delta *= -1`
    best: float | None = None
    wait, fit, cur = 0, -1, base
    begins = dict(zip(starts, later, strict=True))
    steps = []
    for i, val in enumerate(values):
        lr_fit = None
        if i == 0 or i in begins:  # Learner.fit: set_hypers(lr=...), then before_fit
            fit += 1
            cur = base if i == 0 else begins[i]
            lr_fit = cur
            wait = 0
            if c.reset_on_fit or best is None:
                best = math.inf if is_min else -math.inf
        assert best is not None
        best0, wait0, lr_in = best, wait, cur
        probe = val - signed
        improved = probe < best if is_min else probe > best  # np.less / np.greater: NaN gives False
        if improved:
            best, wait, event = val, 0, Event.IMPROVED
        else:
            wait += 1
            event = Event.BAD
            if wait >= c.patience:
                cur = tuple(float(max(h / c.factor, c.min_lr)) for h in cur)
                wait = 0
                event = Event.REDUCED if cur != lr_in else Event.SUPPRESSED
        reason = _reason(c, val, probe, best0, wait0, lr_in, cur, event, fit, lr_fit)
        steps.append(RuleStep(index=i, epoch=labels[i], metric=val, best=best, lr=cur, lr_in=lr_in,
                              event=event, reason=reason, state={"fit": fit, "wait": wait}))
    notes = [f"fastai divides the lr by factor {_fmt(c.factor)} (lr / factor, rounded as a division) and has "
             "no cooldown and no eps; wait resets at every reduction, even one min_lr stops"]
    if starts:
        notes.append(f"{len(starts) + 1} fit() calls: each zeroes wait"
                     + (" and resets best (reset_on_fit=True)" if c.reset_on_fit
                        else " (best kept: reset_on_fit=False)")
                     + "; fit() sets the lr to its lr argument: each fit is replayed from "
                     + ("the given lrs" if fit_lrs is not None else f"lr {'/'.join(_fmt(v) for v in base)}")
                     + " (history.csv does not record the lr)")
    if c.mode == "auto":
        notes.append(f"mode auto (comp=None): {c.monitor!r} is "
                     + ("minimised ('loss' or 'error' in the name)" if is_min else
                        "maximised (neither 'loss' nor 'error' in the name)"))
    return RuleTrace(rules="fastai", config=c, steps=steps, start_lrs=base, notes=tuple(notes))


def _reason(c: FastaiConfig, val: float, probe: float, best0: float, w0: int, lr_in: tuple[float, ...],
            lr: tuple[float, ...], event: Event, fit: int, lr_fit: tuple[float, ...] | None) -> str:
    """The transition in words, in fastai's order (before_fit, comparison, patience)."""
    parts = []
    if lr_fit is not None:
        parts.append(f"fit {fit} begins (wait 0, best {_fmt(best0)}, lr {'/'.join(_fmt(v) for v in lr_fit)})")
    op = "<" if c.direction == "min" else ">"
    sign = "+" if c.direction == "min" else "-"
    lhs = _fmt(val) if probe == val or math.isnan(val) else f"{_fmt(val)} {sign} {_fmt(abs(c.min_delta))}"
    if event is Event.IMPROVED:
        parts.append(f"improved ({lhs} {op} {_fmt(best0)}), best {_fmt(best0)}->{_fmt(val)}, wait {w0}->0")
    else:
        why = "nan never improves" if math.isnan(val) else f"{lhs} not {op} {_fmt(best0)}"
        text = f"bad ({why}), wait {w0}->{w0 + 1}"
        if event is Event.BAD:
            text += f" (patience {c.patience})"
        else:
            old, new = "/".join(_fmt(v) for v in lr_in), "/".join(_fmt(v) for v in lr)
            same = " (unchanged: min_lr)" if event is Event.SUPPRESSED else ""
            text += f" >= patience {c.patience}: lr {old}->{new} (/ {_fmt(c.factor)}){same}, wait 0"
        parts.append(text)
    return "; ".join(parts)


# -- history.csv ---------------------------------------------------------------------------------------------
def _header_fields(line: str) -> list[str] | None:
    """The Recorder's column names when ``line`` is fastai's header (``epoch,train_loss,...``), else None."""
    fields = line.rstrip("\r\n").split(",")
    if len(fields) >= 2 and fields[0] == "epoch" and fields[1] in ("train_loss", "valid_loss"):
        return fields
    return None


def read_history(path: str | os.PathLike[str], *, metric: str | None = None) -> LossLog:
    """fastai's ``history.csv`` as a ``LossLog``; every header line begins a ``fit()`` (``boundaries``).

    Args:
        path: the file ``CSVLogger`` wrote.
        metric: the monitored column; default ``valid_loss`` (fastai's default monitor).

    Raises:
        LossLogError: not fastai's shape, a header that changes, a short row, or a cell that is not a number.
    """
    from plateau_forensics.losses import LossLog

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LossLogError(f"{p}: cannot read ({exc})") from None
    lines = text.splitlines()
    header = _header_fields(lines[0]) if lines else None
    if header is None:
        raise LossLogError(f"{p}: not fastai's history.csv (first line is not 'epoch,train_loss,...')")
    name = metric or "valid_loss"
    if name not in header[1:]:
        raise LossLogError(f"{p}: no column {name!r}; the Recorder's columns are {', '.join(header[1:])}")
    numeric = [h for h in header if h not in ("time",)]
    rows: list[tuple[int, list[str]]] = []
    starts: list[int] = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        if line.rstrip("\r\n") == lines[0].rstrip("\r\n"):
            if rows and (not starts or starts[-1] != len(rows)):
                starts.append(len(rows))
            continue
        if _header_fields(line) is not None:
            raise LossLogError(f"{p}:{n}: a fit() with other columns ({line.strip()}) than the first")
        cells = line.rstrip("\r\n").split(",")
        if len(cells) != len(header):
            raise LossLogError(f"{p}:{n}: {len(cells)} cells for {len(header)} columns")
        rows.append((n, cells))
    values: dict[str, list[float]] = {h: [] for h in numeric}
    for n, cells in rows:
        for h, cell in zip(header, cells, strict=True):
            if h in values:
                try:
                    values[h].append(float(cell))
                except ValueError:
                    raise LossLogError(f"{p}:{n}: {h} {cell!r} is not a number") from None
    epochs = tuple(int(e) if e.is_integer() else e for e in values["epoch"])
    return LossLog(source=str(p), metric_column=name, epoch_column="epoch", lr_columns=(), epochs=epochs,
                   metrics=tuple(values[name]), lrs=None, lines=tuple(n for n, _ in rows),
                   columns={h: tuple(v) for h, v in values.items() if h not in ("epoch", name)}, anomalies=(),
                   boundaries=tuple(starts))


def read_log(path: Any, **log_options: Any) -> LossLog | None:
    """``read_history`` when ``path`` is a local file in fastai's history.csv shape (by its first line), else
    None.

    Only ``metric`` is taken from ``log_options``; an epoch or lr column is not fastai's.
    """
    if not isinstance(path, (str, os.PathLike)):
        return None
    p = Path(path)
    if not p.is_file():
        return None
    try:
        with p.open(encoding="utf-8") as f:
            first = f.readline(4096)
    except (OSError, UnicodeDecodeError):
        return None
    if _header_fields(first) is None:
        return None
    extra = sorted(k for k, v in log_options.items() if v is not None and k != "metric")
    if extra:
        raise ConfigError(f"{p} is fastai's history.csv (epoch column 'epoch', no lr): drop "
                          f"{', '.join('--' + k.replace('_', '-') for k in extra)}")
    return read_history(p, metric=log_options.get("metric"))


# -- the rule-set protocol (rulesets.py) ---------------------------------------------------------------------
def _bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes"):
        return True
    if v.lower() in ("0", "false", "no"):
        return False
    raise ValueError(v)


def _floats(v: str) -> tuple[float, ...]:
    return tuple(float(x) for x in v.split(","))


_NATIVE: dict[str, Callable[[str], Any]] = {"mode": str, "min_delta": float, "patience": int, "factor": float,
                                            "min_lr": float, "reset_on_fit": _bool, "fit_lrs": _floats}


def configure(given: Mapping[str, Any], options: Mapping[str, str], *, monitor: str) -> FastaiConfig:
    """``FastaiConfig`` from torch-named ``given`` values and fastai-named ``options`` (which win).

    torch's ``factor`` f (a multiplier) is fastai's ``factor`` 1/f (a divisor); ``--rule-option factor=10``
    is fastai's own. ``threshold`` is ``min_delta`` when absolute (``threshold_mode="abs"``) or 0. What is
    not given keeps fastai's default (``patience=1``, ``factor=10``, ``mode`` from the monitor's name).

    Raises:
        ConfigError: a relative threshold, a cooldown or eps (fastai has neither), per-group min_lrs,
            an unknown option or a value that is not of its type.
    """
    out: dict[str, Any] = {}
    if "eps" in given:
        raise ConfigError("fastai's ReduceLROnPlateau has no eps")
    if given.get("cooldown"):
        raise ConfigError("fastai's ReduceLROnPlateau has no cooldown")
    if "mode" in given:
        out["mode"] = given["mode"]
    if "patience" in given:
        out["patience"] = given["patience"]
    if "factor" in given:
        f = float(given["factor"])
        if not 0 < f < 1:
            raise ConfigError(f"factor {f}: torch's factor multiplies the lr (0 < factor < 1); fastai's "
                              "divides it (--rule-option factor=10)")
        out["factor"] = 1.0 / f
    if "threshold" in given or "threshold_mode" in given:
        threshold = given.get("threshold", 1e-4)
        if given.get("threshold_mode", "rel") == "rel" and threshold != 0:
            raise ConfigError(f"torch's threshold {threshold} is relative (threshold_mode='rel'); fastai "
                              "only has an absolute min_delta: give --min-delta, or --threshold-mode abs")
        out["min_delta"] = threshold
    if "min_lr" in given:
        min_lr = given["min_lr"]
        if isinstance(min_lr, tuple):
            if len(set(min_lr)) != 1:
                raise ConfigError(f"fastai has one min_lr for every param group; got {list(min_lr)}")
            min_lr = min_lr[0]
        out["min_lr"] = float(min_lr)
    for k, v in options.items():
        if k not in _NATIVE:
            raise ConfigError(f"fastai's ReduceLROnPlateau has no argument {k!r}: it takes "
                              f"{', '.join(_NATIVE)}")
        try:
            out[k] = _NATIVE[k](v)
        except ValueError:
            kind = {_bool: "true or false", int: "an integer"}.get(_NATIVE[k], "a number")
            raise ConfigError(f"--rule-option {k}={v!r}: not {kind}") from None
    return FastaiConfig(monitor=monitor, **out)


def replay(config: FastaiConfig, log: LossLog, lrs: Sequence[float]) -> RuleTrace:
    """``run_fastai`` over a log; each of its ``boundaries`` (a header of history.csv, a later file) is a fit.

    Raises:
        ConfigError: ``config.fit_lrs`` does not give one lr per fit.
    """
    fits = log.boundaries
    fit_lrs = None
    if config.fit_lrs is not None:
        if len(config.fit_lrs) != len(fits) + 1:
            raise ConfigError(f"fit_lrs gives {len(config.fit_lrs)} lrs; the log has {len(fits) + 1} fit() "
                              "calls")
        lrs = (config.fit_lrs[0],) * len(lrs)
        fit_lrs = [(v,) * len(lrs) for v in config.fit_lrs[1:]]
    return run_fastai(config, log.metrics, lrs, epochs=log.epochs, fits=fits, fit_lrs=fit_lrs)


def rules_runner(
    **options: str,
) -> Callable[[Sequence[float], Sequence[float], PlateauConfig, Sequence[float]], RuleTrace]:
    """A ``whatif.RulesRunner``: each torch ``PlateauConfig`` runs under fastai's rules (one fit)."""

    def runner(metrics: Sequence[float], epochs: Sequence[float], config: PlateauConfig,
               lrs: Sequence[float]) -> RuleTrace:
        given: dict[str, Any] = {"mode": config.mode, "factor": config.factor, "patience": config.patience}
        if config.cooldown:
            given["cooldown"] = config.cooldown
        if config.threshold_mode == "abs" or config.threshold == 0:
            given["threshold"], given["threshold_mode"] = config.threshold, "abs"
        return run_fastai(configure(given, options, monitor="valid_loss"), metrics, lrs, epochs=epochs)

    return runner
