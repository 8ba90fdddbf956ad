"""Keras 3's ``ReduceLROnPlateau`` callback, replayed in pure Python, bit for bit what keras 3.15.1 computes.

Keras and torch share a class name and constructor words but not the rules (SEMANTICS.md section 6):
Keras decrements the cooldown *before* the improvement test, reduces at ``wait >= patience`` (torch:
``num_bad_epochs > patience``), tests an absolute ``min_delta`` in float32, starts ``best`` as None, keeps
the lr in a float32 variable, and does nothing at all (no cooldown, no reset) when the lr is already at
``min_lr``. ``run_keras`` replays ``on_epoch_end`` over a metric log; ``first_divergence`` and
``render_side_by_side`` put a Keras replay next to a torch one.

This module imports neither keras, torch nor numpy: float32 rounding is done with ``struct``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from plateau_forensics.engine import Event, StepsView, _pair
from plateau_forensics.engine import _num as _fmt
from plateau_forensics.engine import _round_float32 as float32
from plateau_forensics.errors import ConfigError
from plateau_forensics.state import PlateauConfig

if TYPE_CHECKING:
    import pandas as pd

    from plateau_forensics.engine import Trace

KerasMode = Literal["auto", "min", "max"]
Direction = Literal["min", "max"]

__all__ = [
    "METRIC_DIRECTIONS", "KerasConfig", "KerasState", "KerasStep", "KerasTrace", "configure", "first_divergence",
    "float32", "from_torch", "legacy_auto_mode", "render_side_by_side", "replay", "resolve_mode", "rules_runner",
    "run_keras",
]

#: The ``_direction`` of every Keras 3.15 built-in metric, by the name it logs under (compiled from its
#: string, e.g. ``metrics=["acc"]``, or from its class with the default name). ``mode="auto"`` on
#: ``val_<name>`` resolves through it when the metric was compiled; tests/test_keras_rules.py checks every
#: entry against real Keras. Metrics without a direction (``mean``, ``true_positives``, ...) are absent.
METRIC_DIRECTIONS: dict[str, str] = {
    "acc": "up", "accuracy": "up", "auc": "up", "binary_accuracy": "up", "binary_io_u": "up",
    "categorical_accuracy": "up", "concordance_correlation": "up", "cosine_similarity": "up", "f1_score": "up",
    "f_beta_score": "up", "fbeta_score": "up", "pearson_correlation": "up", "precision": "up", "r2_score": "up",
    "recall": "up", "sparse_categorical_accuracy": "up", "sparse_top_k_categorical_accuracy": "up",
    "top_k_categorical_accuracy": "up",
    "bce": "down", "binary_crossentropy": "down", "categorical_crossentropy": "down", "categorical_hinge": "down",
    "hinge": "down", "kl_divergence": "down", "log_cosh_error": "down", "logcosh": "down", "mae": "down",
    "mape": "down", "mean_absolute_error": "down", "mean_absolute_percentage_error": "down",
    "mean_squared_error": "down", "mean_squared_logarithmic_error": "down", "mse": "down", "msle": "down",
    "poisson": "down", "root_mean_squared_error": "down", "sparse_categorical_crossentropy": "down",
    "squared_hinge": "down",
}


def resolve_mode(monitor: str, mode: str = "auto", *, metric_direction: str | None = None) -> Direction:
    """The direction Keras >= 3.11 picks for ``mode`` (``MonitorCallback._set_monitor_op``).

    ``"min"`` and ``"max"`` are taken as given. For ``"auto"`` Keras strips one ``val_`` prefix and
    picks min when what is left is exactly ``"loss"`` (so ``val_loss`` and ``loss``, but not
    ``val_mae_loss``); a compiled metric of that name with a ``_direction`` (``"up"``/``"down"``)
    overrides it. Anything else makes Keras raise ValueError on the first epoch.

    Args:
        monitor: the logged quantity, e.g. ``"val_loss"``.
        mode: ``"auto"``, ``"min"`` or ``"max"``.
        metric_direction: the ``_direction`` of the compiled Keras metric named like ``monitor``, if any.

    Raises:
        ConfigError: ``auto`` cannot be resolved from the name (pass ``mode="min"`` or ``"max"``).

    Example:
        >>> resolve_mode("val_loss"), resolve_mode("val_accuracy", metric_direction="up")
        ('min', 'max')
    """
    if mode in ("min", "max"):
        return mode  # type: ignore[return-value]
    name = monitor.removeprefix("val_")
    found: Direction | None = "min" if name == "loss" else None
    if metric_direction is not None:  # Keras looks the compiled metric up after the name test
        found = "max" if metric_direction == "up" else "min"
    if found is None:
        raise ConfigError(
            f"Keras cannot tell whether {monitor!r} should be minimized or maximized (mode='auto' picks min "
            "only for 'loss'/'val_loss' or a compiled metric with a direction); pass mode 'min' or 'max'"
        )
    return found


def legacy_auto_mode(monitor: str) -> Direction:
    """The ``mode="auto"`` rule of Keras 3.0-3.10 and tf.keras 2.x, for reference: max iff "acc" in the name.

    The replay does not implement those releases otherwise (they started ``best`` at +-inf and compared
    ``np.less(current, best - min_delta)`` in float64).
    """
    return "max" if "acc" in monitor else "min"


@dataclass(frozen=True)
class KerasConfig:
    """``keras.callbacks.ReduceLROnPlateau``'s constructor arguments, with Keras's names and defaults.

    Frozen so that a replay can never change the configuration it explains. ``verbose`` is left out:
    it only prints.

    Args:
        monitor: the logged quantity; only used to resolve ``mode="auto"``.
        factor: ``new_lr = lr * factor``; must be < 1.0, as Keras requires.
        patience: the lr is reduced when ``wait`` (bad epochs outside cooldown) reaches ``patience``.
        mode: ``"auto"``, ``"min"`` or ``"max"``; see ``resolve_mode``.
        min_delta: absolute improvement needed; Keras uses ``abs(min_delta)``.
        cooldown: set into ``cooldown_counter`` after a reduction (``cooldown=1`` mutes nothing).
        min_lr: lower bound of the lr.
        metric_direction: the ``_direction`` (``"up"``/``"down"``) of the compiled Keras metric named like
            ``monitor`` without ``val_``, when there is one; it resolves ``mode="auto"`` as Keras does. Not a
            constructor argument: Keras reads it from the model.

    Raises:
        ConfigError: ``factor >= 1.0`` (Keras: ValueError), or an ``auto`` mode Keras cannot resolve (Keras
            raises ValueError on the first epoch; here at construction). An unknown ``mode`` warns, with
            Keras's words, and falls back to ``auto``, as Keras does.

    Example:
        >>> KerasConfig(patience=2, min_delta=-0.01).direction, KerasConfig(min_delta=-0.01).delta
        ('min', 0.01)
    """

    monitor: str = "val_loss"
    factor: float = 0.1
    patience: int = 10
    mode: KerasMode = "auto"
    min_delta: float = 1e-4
    cooldown: int = 0
    min_lr: float = 0.0
    metric_direction: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "min", "max"):
            # MonitorCallback.__init__ runs before ReduceLROnPlateau's factor check, and says this
            warnings.warn(f"ReduceLROnPlateau mode '{self.mode}' is unknown, fallback to auto mode.",
                          UserWarning, stacklevel=3)
            object.__setattr__(self, "mode", "auto")
        if self.factor >= 1.0:
            raise ConfigError(
                f"ReduceLROnPlateau does not support a factor >= 1.0. Received factor={self.factor}"
            )
        if self.metric_direction not in (None, "up", "down"):
            raise ConfigError(f"metric_direction {self.metric_direction!r}: Keras metrics have 'up' or 'down'")
        self.direction  # noqa: B018  # fail now, not on the first epoch as Keras does

    @property
    def direction(self) -> Direction:
        """``"min"`` or ``"max"``: ``mode`` resolved as Keras 3.15 does."""
        return resolve_mode(self.monitor, self.mode, metric_direction=self.metric_direction)

    @property
    def delta(self) -> float:
        """``abs(min_delta)``, the value Keras stores (since 3.11 a negative ``min_delta`` means the same)."""
        return abs(self.min_delta)

    def probe(self, current: float) -> float:
        """The left side of Keras's test, in float64: ``current + delta`` (min) or ``current - delta`` (max).

        Keras computes ``monitor_value - self.min_delta`` on Python floats, with ``min_delta`` negated in
        min mode, and only then converts to a float32 tensor. The sum is therefore rounded twice (to
        float64, then to float32), which differs from a float32 addition in rare cases.
        """
        signed = -self.delta if self.direction == "min" else self.delta
        return current - signed

    def is_improvement(self, current: float, best: float | None) -> bool:
        """Keras's ``_is_improvement``: True when ``best`` is None, else the float32 comparison.

        ``ops.less(current + delta, best)`` (min) or ``ops.greater(current - delta, best)`` (max), both
        sides converted to float32 tensors first (overflow becomes inf); NaN on either side is False.
        """
        if best is None:
            return True
        lhs, rhs = float32(self.probe(current)), float32(best)
        return lhs < rhs if self.direction == "min" else lhs > rhs

    def to_dict(self) -> dict[str, Any]:
        """The constructor arguments as a dict; ``keras.callbacks.ReduceLROnPlateau(**d)`` accepts it."""
        names = ("monitor", "factor", "patience", "mode", "min_delta", "cooldown", "min_lr")
        return {k: getattr(self, k) for k in names}


def from_torch(
    config: PlateauConfig, *, monitor: str = "val_loss", min_delta: float | None = None
) -> KerasConfig:
    """The Keras configuration with "the same numbers" as a torch one, for ``--compare torch,keras``.

    Names map 1:1 and numbers are copied unchanged (so Keras ``patience`` p is torch's p, which is exactly
    what makes the two disagree: Keras p acts like torch p-1). torch's ``eps`` has no Keras counterpart
    and is dropped.

    Args:
        config: the torch hyperparameters.
        monitor: the Keras ``monitor`` name (only a label here; the mode is copied explicitly).
        min_delta: Keras's threshold; when None, torch's ``threshold`` is used, which needs
            ``threshold_mode="abs"`` (or a zero threshold, where rel and abs agree).

    Raises:
        ConfigError: a relative threshold with no ``min_delta`` given, or one ``min_lr`` per param group
            (Keras has a single optimizer lr).

    Example:
        >>> from_torch(PlateauConfig(patience=2, threshold=0.01, threshold_mode="abs")).min_delta
        0.01
    """
    if min_delta is None:
        if config.threshold_mode == "rel" and config.threshold != 0:
            raise ConfigError(
                f"torch's threshold {config.threshold} is relative (threshold_mode='rel'); Keras only has an "
                "absolute min_delta: give one explicitly (--min-delta)"
            )
        min_delta = config.threshold
    min_lr = config.min_lr
    if isinstance(min_lr, tuple):
        if len(set(min_lr)) != 1:
            raise ConfigError(f"Keras has one lr and one min_lr; torch has per-group min_lrs {list(min_lr)}")
        min_lr = min_lr[0]
    return KerasConfig(monitor=monitor, factor=config.factor, patience=config.patience, mode=config.mode,
                       min_delta=min_delta, cooldown=config.cooldown, min_lr=float(min_lr))


@dataclass(frozen=True)
class KerasState:
    """The callback's attributes between two epochs (Keras's names), plus the optimizer's float32 lr."""

    best: float | None
    wait: int
    cooldown_counter: int
    lr: float


@dataclass(frozen=True)
class KerasStep:
    """One ``on_epoch_end``: the state after it (Keras's names) and why it went that way.

    ``lr`` is the lr after the epoch and ``lr_in`` the one the epoch trained with, which is also what
    Keras writes into ``logs["learning_rate"]`` (before this epoch's reduction). Both are 1-tuples of
    float32 values, to match torch's per-group ``Step.lr``.
    """

    index: int
    epoch: float
    metric: float
    best: float
    wait: int
    cooldown_counter: int
    lr: tuple[float]
    lr_in: tuple[float]
    event: Event
    reason: str
    best_before: float | None
    wait_before: int
    cooldown_before: int
    improved: bool

    @property
    def num_bad_epochs(self) -> int:
        """``wait`` under torch's name, so code written for ``engine.Step`` can read it."""
        return self.wait

    @property
    def last_epoch(self) -> int:
        """How many ``on_epoch_end`` calls have run (Keras keeps no such counter; torch's column name)."""
        return self.index + 1

    def explain(self) -> str:
        """One line: ``4: bad (...) wait 1->2 >= patience 2: lr 0.1->0.01, ...``."""
        return f"{_fmt(self.epoch)}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        """The step as a JSON-ready dict (``lr`` and ``lr_in`` as lists)."""
        return {
            "epoch": self.epoch, "metric": self.metric, "best": self.best, "wait": self.wait,
            "num_bad_epochs": self.wait, "cooldown_counter": self.cooldown_counter, "lr": list(self.lr),
            "lr_in": list(self.lr_in), "event": self.event.value, "reason": self.reason,
        }


_EVENTS = (Event.IMPROVED, Event.BAD, Event.COOLDOWN, Event.REDUCED, Event.SUPPRESSED)
_IMPROVED, _BAD, _COOLDOWN, _REDUCED, _SUPPRESSED = range(5)


@dataclass
class KerasTrace:
    """The replay of a metric log through Keras's callback; ``steps`` are built on access.

    Attributes:
        config: the Keras hyperparameters.
        epochs: one label per step (``1..n`` unless given).
        metrics: the values fed to ``on_epoch_end``.
        start: the state before the first epoch (``best=None``, counters 0, the float32 lr).
        final: the state after the last epoch.
    """

    rules: ClassVar[str] = "keras"

    config: KerasConfig
    epochs: tuple[float, ...]
    metrics: tuple[float, ...]
    start: KerasState
    final: KerasState
    # columns: best, wait, cooldown_counter, lr, event code after each step
    _rows: list[tuple[float, int, int, float, int]] = field(default_factory=list, repr=False)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def steps(self) -> StepsView[KerasStep]:
        """Every step, as ``KerasStep`` records built on access."""
        return StepsView(self)

    @property
    def lrs(self) -> tuple[float]:
        """The lr after the last epoch (or at the start of an empty trace), as a 1-tuple."""
        return (self.final.lr,)

    def step(self, i: int) -> KerasStep:
        """The ``i``-th step record (0-based)."""
        best, wait, cd, lr, ev = self._rows[i]
        if i == 0:
            b0, w0, cd0, lr0 = self.start.best, self.start.wait, self.start.cooldown_counter, self.start.lr
        else:
            b0, w0, cd0, lr0 = self._rows[i - 1][:4]
        metric = self.metrics[i]
        event = _EVENTS[ev]
        improved = event is Event.IMPROVED
        reason = _reason(self.config, metric, b0, w0, cd0, lr0, wait, cd, lr, event)
        return KerasStep(
            index=i, epoch=self.epochs[i], metric=metric, best=best, wait=wait, cooldown_counter=cd, lr=(lr,),
            lr_in=(lr0,), event=event, reason=reason, best_before=b0, wait_before=w0, cooldown_before=cd0,
            improved=improved,
        )

    def reductions(self) -> list[KerasStep]:
        """The steps whose event is ``reduced`` or ``suppressed`` (a reduction due at ``min_lr``)."""
        return [self.step(i) for i, row in enumerate(self._rows) if row[4] in (_REDUCED, _SUPPRESSED)]

    def to_records(self) -> list[dict[str, Any]]:
        """Every step as a JSON-ready dict."""
        return [s.as_dict() for s in self.steps]

    def to_frame(self) -> pd.DataFrame:
        """The steps as a pandas DataFrame, one row per step (``lr`` and ``lr_in`` as plain floats)."""
        from plateau_forensics.rulesets import steps_frame

        return steps_frame(self.steps)

    def __repr__(self) -> str:
        best = self.final.best
        return (f"<KerasTrace {len(self)} epochs, {len(self.reductions())} reductions, "
                f"lr {_fmt(self.final.lr)}, best {_fmt(best) if best is not None else None}>")


def run_keras(
    config: KerasConfig, metrics: Sequence[float], lr: float, *, epochs: Sequence[float] | None = None
) -> KerasTrace:
    """Replay ``metrics`` through ``keras.callbacks.ReduceLROnPlateau`` (3.15.1) after ``on_train_begin``.

    Args:
        config: the callback's hyperparameters.
        metrics: the monitored value of each epoch, converted with ``float()`` (Keras logs hold floats).
        lr: the optimizer's lr before the first epoch; stored as float32, as Keras's lr variable is.
        epochs: a label per metric (e.g. the log's epoch column); ``1..n`` when None.

    Returns:
        A ``KerasTrace`` whose ``steps`` hold the state after every epoch and why.

    Raises:
        ConfigError: ``epochs`` and ``metrics`` differ in length.

    Example:
        >>> t = run_keras(KerasConfig(patience=2), [0.5, 0.5, 0.5], 0.1)
        >>> [s.event.value for s in t.steps], t.steps[-1].lr
        (['improved', 'bad', 'reduced'], (0.009999999776482582,))
    """
    values = tuple(float(m) for m in metrics)
    if epochs is None:
        labels: tuple[float, ...] = tuple(range(1, len(values) + 1))
    else:
        labels = tuple(epochs)
        if len(labels) != len(values):
            raise ConfigError(f"{len(labels)} epoch labels for {len(values)} metrics")
    direction = config.direction
    # Keras stores abs(min_delta), negated in min mode; the test is monitor_op(current - min_delta, best).
    signed_delta = -config.delta if direction == "min" else config.delta
    is_min = direction == "min"
    patience, cooldown, factor, min_lr = config.patience, config.cooldown, config.factor, config.min_lr
    min_lr32 = float32(min_lr)  # the guard compares against np.float32(self.min_lr)
    lr = float32(float(lr))  # the optimizer's lr is a float32 Variable
    start = KerasState(best=None, wait=0, cooldown_counter=0, lr=lr)  # on_train_begin -> _reset()

    best: float | None = None
    wait = cooldown_counter = 0
    rows: list[tuple[float, int, int, float, int]] = []
    add = rows.append
    for current in values:
        # logs["learning_rate"] = float(lr) is written here, before any reduction (= the step's lr_in).
        # 1. Cooldown first: a counter of 1 reaches 0 now, so this very epoch already counts as bad below.
        if cooldown_counter > 0:
            cooldown_counter -= 1
            wait = 0
        # 2. _is_improvement: best None accepts anything (even NaN); otherwise float64 subtraction, then both
        #    sides become float32 tensors (ops.less / ops.greater); any NaN makes the comparison False.
        if best is None:
            improved = True
        else:
            lhs, rhs = float32(current - signed_delta), float32(best)
            improved = lhs < rhs if is_min else lhs > rhs
        if improved:
            best = current  # the Python float from the logs, not its float32 rounding
            wait = 0
            ev = _IMPROVED
        elif cooldown_counter > 0:  # `elif not self.in_cooldown()`, re-read after the decrement
            ev = _COOLDOWN
        else:
            wait += 1
            ev = _BAD
            if wait >= patience:
                # _reduce_optimizer_lr: old_lr = float(variable); reduce only if old_lr > np.float32(min_lr).
                if lr > min_lr32:
                    lr = float32(max(lr * factor, min_lr))  # Python max in float64, assigned to the variable
                    cooldown_counter = cooldown
                    wait = 0
                    ev = _REDUCED
                else:
                    ev = _SUPPRESSED  # nothing happens: no cooldown, and wait keeps growing
        add((best, wait, cooldown_counter, lr, ev))  # type: ignore[arg-type]  # the first epoch sets best
    final = KerasState(best=best, wait=wait, cooldown_counter=cooldown_counter, lr=lr)
    return KerasTrace(config=config, epochs=labels, metrics=values, start=start, final=final, _rows=rows)


# -- the rule-set protocol (rulesets.py) -------------------------------------------------------------------
_NATIVE: dict[str, Callable[[str], Any]] = {
    "factor": float, "patience": int, "mode": str, "min_delta": float, "cooldown": int, "min_lr": float,
    "metric_direction": str,
}


def configure(given: Mapping[str, Any], options: Mapping[str, str], *, monitor: str) -> KerasConfig:
    """The Keras callback for torch-named ``given`` values and Keras-named ``options`` (which win).

    What is not given keeps Keras's default, ``mode="auto"`` included: resolved from ``monitor`` as Keras
    3.15 does (``loss``/``val_loss`` -> min), else from ``options["metric_direction"]``, else from the
    direction of the Keras built-in metric of that name (``METRIC_DIRECTIONS``: ``val_accuracy`` -> max),
    which is what Keras finds when the logged column is that compiled metric. ``threshold`` becomes
    ``min_delta`` only when absolute (``threshold_mode="abs"``) or 0.

    Raises:
        ConfigError: a relative threshold, ``eps`` (Keras has none), per-group ``min_lr``, an ``auto`` mode
            nothing resolves, an unknown option, or a value that is not a number.
    """
    out: dict[str, Any] = {}
    if "eps" in given:
        raise ConfigError("Keras's ReduceLROnPlateau has no eps (its guard is lr > float32(min_lr))")
    for k in ("mode", "factor", "patience", "cooldown"):
        if k in given:
            out[k] = given[k]
    if "threshold" in given or "threshold_mode" in given:
        threshold = given.get("threshold", 1e-4)
        if given.get("threshold_mode", "rel") == "rel" and threshold != 0:
            raise ConfigError(f"torch's threshold {threshold} is relative (threshold_mode='rel'); Keras only has an "
                              "absolute min_delta: give --min-delta, or --threshold-mode abs")
        out["min_delta"] = threshold
    if "min_lr" in given:
        min_lr = given["min_lr"]
        if isinstance(min_lr, tuple):
            if len(set(min_lr)) != 1:
                raise ConfigError(f"Keras has one lr and one min_lr; got per-group min_lrs {list(min_lr)}")
            min_lr = min_lr[0]
        out["min_lr"] = float(min_lr)
    for k, v in options.items():
        if k not in _NATIVE:
            raise ConfigError(f"Keras's ReduceLROnPlateau has no argument {k!r}: it takes {', '.join(_NATIVE)}")
        try:
            out[k] = _NATIVE[k](v)
        except ValueError:
            raise ConfigError(f"--rule-option {k}={v!r}: not {'an integer' if _NATIVE[k] is int else 'a number'}") \
                from None
    if out.get("mode", "auto") == "auto" and "metric_direction" not in out:
        name = monitor.removeprefix("val_")
        if name != "loss" and name in METRIC_DIRECTIONS:
            out["metric_direction"] = METRIC_DIRECTIONS[name]
    return KerasConfig(monitor=monitor, **out)


def replay(config: KerasConfig, log: Any, lrs: Sequence[float]) -> KerasTrace:
    """``run_keras`` over a log's metrics, labelled with its epochs (Keras has one lr).

    Raises:
        ConfigError: param groups with different lrs.
    """
    values = [float(v) for v in lrs]
    if not values or len(set(values)) != 1:
        raise ConfigError(f"Keras has one optimizer lr; got param-group lrs {values}")
    t = run_keras(config, [float(m) for m in log.metrics], values[0], epochs=list(log.epochs))
    if config.mode == "auto":
        how = ("its name" if config.metric_direction is None else
               f"the compiled Keras metric {config.monitor.removeprefix('val_')!r} (_direction "
               f"{config.metric_direction!r}; assumed to be the one logged)")
        t.notes.append(f"mode auto: {config.monitor!r} is {'minimized' if config.direction == 'min' else 'maximized'}"
                       f", resolved by Keras 3.15 from {how}")
    return t


def rules_runner(
    *, min_delta: float | None = None, monitor: str = "val_loss"
) -> Callable[[Sequence[float], Sequence[float], PlateauConfig, Sequence[float]], KerasTrace]:
    """A ``compare.RulesRunner`` that replays a torch configuration under Keras's rules.

    ``compare.register_rules("keras", rules_runner(min_delta=opts.min_delta))`` makes ``rules="keras"``
    available: each call converts the torch config with ``from_torch`` and runs ``run_keras``.

    Raises (when called):
        ConfigError: what ``from_torch`` rejects, or param groups with different lrs (Keras has one lr).
    """

    def runner(metrics: Sequence[float], epochs: Sequence[float], config: PlateauConfig,
               lrs: Sequence[float]) -> KerasTrace:
        values = [float(v) for v in lrs]
        if not values or len(set(values)) != 1:
            raise ConfigError(f"Keras has one optimizer lr; got param-group lrs {values}")
        keras_config = from_torch(config, monitor=monitor, min_delta=min_delta)
        return run_keras(keras_config, metrics, values[0], epochs=epochs)

    return runner


def _reason(
    cfg: KerasConfig, metric: float, b0: float | None, w0: int, cd0: int, lr0: float,
    wait: int, cd: int, lr: float, event: Event,
) -> str:
    """The transition in words, in the order Keras runs it (cooldown, improvement, patience)."""
    parts = []
    if cd0 > 0:
        parts.append(f"cooldown {cd0}->{cd0 - 1}" + (f", wait {w0}->0" if w0 else "") + "; ")
        w0 = 0
    d = cfg.delta
    op, neg = ("<", "not <") if cfg.direction == "min" else (">", "not >")
    sign = "+" if cfg.direction == "min" else "-"
    if b0 is None:
        m_s = _fmt(metric)
        parts.append(f"improved (first value, best None->{m_s})" + (f", wait {w0}->0" if w0 else ""))
    else:
        m_s, b_s = _pair(metric, b0)
        lhs = f"{m_s} {sign} {_fmt(d)}" if d else m_s
        if event is Event.IMPROVED:
            parts.append(f"improved ({lhs} {op} {b_s} in float32), best {b_s}->{m_s}"
                         + (f", wait {w0}->0" if w0 else ""))
        else:
            why = f"{lhs} {neg} {b_s} in float32"
            if math.isnan(b0):
                why = "best is nan, kept from the first epoch: nothing improves on it"
            elif math.isnan(metric):
                why = "nan never improves"
            else:
                probe = cfg.probe(metric)
                if (probe < b0 if cfg.direction == "min" else probe > b0):
                    why += "; float64 would call it an improvement"
            parts.append(f"bad ({why})")
    if event is Event.COOLDOWN:
        parts.append(f", in cooldown ({cd} left): wait stays 0")
    elif event is not Event.IMPROVED:
        parts.append(f" wait {w0}->{w0 + 1}")
        if event is Event.BAD:
            parts.append(f" (patience {cfg.patience})")
        elif event is Event.REDUCED:
            same = " (unchanged in float32)" if lr == lr0 else ""
            parts.append(f" >= patience {cfg.patience}: lr {_fmt(lr0)}->{_fmt(lr)}{same}, "
                         f"cooldown 0->{cd}, wait {w0 + 1}->0")
        else:
            parts.append(f" >= patience {cfg.patience}: reduction due but lr {_fmt(lr0)} is not above min_lr "
                         f"{_fmt(float32(cfg.min_lr))} (float32): no change, no cooldown, "
                         "wait keeps counting")
    return "".join(parts)


def _lrs_differ(torch_lr: float, keras_lr: float) -> bool:
    """Different beyond float32 rounding: Keras rounds every lr to float32, torch keeps float64."""
    t = float32(torch_lr)
    if t == keras_lr:
        return False
    return not math.isclose(t, keras_lr, rel_tol=1e-5, abs_tol=0.0)


def _changed(lr_in: float, lr: float) -> bool:
    return lr_in != lr


def first_divergence(torch_trace: Trace, keras_trace: KerasTrace) -> float | None:
    """The epoch label of the first step whose lr after the step differs between the two replays, or None.

    Keras has one lr, so torch's param group 0 is compared. The lrs "differ" when one replay changed
    its lr at that step and the other did not, or when the values disagree beyond float32 rounding
    (relative 1e-5: Keras rounds every lr to float32, torch computes in float64). Only the common
    length of the two traces is compared.
    """
    n = min(len(torch_trace), len(keras_trace))
    for i in range(n):
        t, k = torch_trace.steps[i], keras_trace.steps[i]
        if _changed(t.lr_in[0], t.lr[0]) != _changed(k.lr_in[0], k.lr[0]) or _lrs_differ(t.lr[0], k.lr[0]):
            return t.epoch
    return None


_STYLES = {"table": "simple", "markdown": "github"}
_MARK = {Event.IMPROVED: "best", Event.BAD: "bad", Event.COOLDOWN: "cool", Event.REDUCED: "LR",
         Event.SUPPRESSED: "lr="}


def render_side_by_side(torch_trace: Trace, keras_trace: KerasTrace, fmt: str = "simple") -> str:
    """Both replays in one table, the first divergent epoch marked ``<< diverge``, then a summary line.

    Args:
        torch_trace: ``engine.run`` over the metrics (group 0 is shown).
        keras_trace: ``run_keras`` over the same metrics.
        fmt: a tabulate format name (``"simple"``, ``"github"``, ...); ``"table"`` and ``"markdown"``
            are accepted as aliases of ``"simple"`` and ``"github"``, as in ``report.FORMATS``.

    Returns:
        The table, a blank line, and ``first divergence: epoch N (...)`` or ``no divergence ...``.
    """
    from tabulate import tabulate

    div = first_divergence(torch_trace, keras_trace)
    n = min(len(torch_trace), len(keras_trace))
    rows = []
    div_row = None
    for i in range(n):
        t, k = torch_trace.steps[i], keras_trace.steps[i]
        mark = ""
        if div_row is None and div is not None and t.epoch == div:
            div_row, mark = i, "<< diverge"
        rows.append([_fmt(t.epoch), _fmt(t.metric),
                     _fmt(t.lr[0]), str(t.num_bad_epochs), str(t.cooldown_counter), _MARK[t.event],
                     _fmt(k.lr[0]), str(k.wait), str(k.cooldown_counter), _MARK[k.event], mark])
    headers = ["epoch", "metric", "torch lr", "torch num_bad", "torch cooldown", "torch event",
               "keras lr", "keras wait", "keras cooldown", "keras event", ""]
    body = tabulate(rows, headers=headers, tablefmt=_STYLES.get(fmt, fmt), disable_numparse=True)
    if div_row is None:
        tail = f"no divergence: the lr agrees after every one of {n} epochs"
    else:
        t, k = torch_trace.steps[div_row], keras_trace.steps[div_row]
        tail = (f"first divergence: epoch {_fmt(t.epoch)} (torch lr {_fmt(t.lr_in[0])}->{_fmt(t.lr[0])} "
                f"[{t.event.value}], keras lr {_fmt(k.lr_in[0])}->{_fmt(k.lr[0])} [{k.event.value}])")
    return body + "\n\n" + tail
