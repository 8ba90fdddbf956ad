"""MMEngine's ``ReduceOnPlateauLR`` (mmengine 0.10.7), replayed in pure Python with MMEngine's own names.

MMEngine re-implements torch's state machine in ``ReduceOnPlateauParamScheduler`` (the same order: better,
cooldown, patience; the same ``max(lr * factor, min_value)`` and ``old - new > eps``) with four differences
that change a replay:

* the initial ``best`` is ``INF = int(1e9)`` (``-INF`` for ``rule='greater'``), not ``inf``: a metric at or
  above ``1e9 * (1 - threshold)`` never improves on a fresh scheduler;
* the metric is not cast to ``float``: a numpy ``float32`` or a float32 tensor keeps its type, so ``best`` and
  every comparison are float32 (NEP 50 / torch promotion: the Python float bar is rounded to float32);
* plateau logic runs only while ``begin <= _global_step < end``; ``_global_step`` counts ``step()`` calls
  without metrics (``ParamSchedulerHook.after_train_epoch``), and the Runner sets ``end = max_epochs``, so the
  validation after the last epoch (``_global_step == max_epochs``) is never used;
* ``last_step`` starts at -1: after ``k`` plateau steps it is ``k - 1``.

``simulate`` is the reference (differential-tested against the real class); ``torch_config`` maps the names
onto torch's (``rule`` -> ``mode``, ``threshold_rule`` -> ``threshold_mode``, ``min_value`` -> ``min_lr``)
in a ``PlateauConfig`` whose initial ``best`` is MMEngine's, so the package's engine and stories replay
Python-float metrics exactly as MMEngine does. This module imports neither mmengine, torch nor numpy.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from plateau_forensics.errors import ConfigError
from plateau_forensics.rulesets import RuleStep, RuleTrace
from plateau_forensics.state import PlateauConfig

Rule = Literal["less", "greater"]
ThresholdRule = Literal["rel", "abs"]
#: How the metric values reach ``step()``: ``python`` (floats or ints, compared as Python does), ``float32``
#: (numpy float32 or float32 tensors: float32 arithmetic).
MetricType = Literal["python", "float32"]

#: ``mmengine.optim.scheduler.param_scheduler.INF``: the initial best and the default ``end``.
INF = int(1e9)

__all__ = ["INF", "MMEngineConfig", "MMEngineState", "MMEngineStep", "MMEnginePlateauConfig", "simulate",
           "torch_config", "from_state_dict"]


def f32(x: float) -> float:
    """``x`` rounded to float32 (round half to even; overflow to +-inf, as a numpy cast does)."""
    if math.isnan(x) or math.isinf(x):
        return x
    try:
        return float(struct.unpack("<f", struct.pack("<f", x))[0])
    except OverflowError:
        # struct refuses values past float32's range; a cast rounds them to the largest float32 or to inf
        big = float(struct.unpack("<f", struct.pack("<I", 0x7F7FFFFF))[0])
        if abs(x) < big + 2.0 ** 103:  # below the midpoint to the next power: rounds down to the largest float32
            return math.copysign(big, x)
        return math.copysign(math.inf, x)


def _f32_of_exact(exact: Fraction) -> float:
    """The float32 nearest an exact rational (no double rounding through float64)."""
    d = float(exact)
    r = f32(d)
    if Fraction(d) == exact or math.isinf(r):
        return r
    # double rounding errs only when the float64 landed exactly on a float32 midpoint
    lo, hi = (r, math.nextafter(r, math.inf)) if Fraction(r) < exact else (math.nextafter(r, -math.inf), r)
    lo32, hi32 = f32(lo), f32(hi)
    if lo32 == hi32:
        return r
    mid = (Fraction(lo32) + Fraction(hi32)) / 2
    if exact < mid:
        return lo32
    if exact > mid:
        return hi32
    return r


def _mul32(a: float, b: float) -> float:
    """float32 ``a * b`` of two float32 values (the float64 product of two float32 values is exact)."""
    return f32(a * b)


def _sub32(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):
        return f32(a - b)
    return _f32_of_exact(Fraction(a) - Fraction(b))


def _add32(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):
        return f32(a + b)
    return _f32_of_exact(Fraction(a) + Fraction(b))


@dataclass(frozen=True)
class MMEngineConfig:
    """``ReduceOnPlateauLR``'s constructor arguments, with MMEngine's names and defaults.

    Args:
        monitor: the key of the metrics dict the scheduler reads (default ``'loss'``).
        rule: ``'less'`` (torch's ``mode='min'``) or ``'greater'``.
        factor: ``new_lr = lr * factor``; must be < 1.0.
        patience: bad epochs tolerated; the reduction comes on bad epoch ``patience + 1``.
        threshold: must be >= 0 (MMEngine raises otherwise; torch does not check).
        threshold_rule: ``'rel'`` or ``'abs'``.
        cooldown: steps after a reduction whose bad epochs are not counted.
        min_value: a floor per param group, or one for all.
        eps: a reduction smaller than this is not applied.
        begin, end: the ``_global_step`` window in which validations are plateau steps.

    Raises:
        ConfigError: what MMEngine's constructor raises ValueError for.
    """

    monitor: str = "loss"
    rule: Rule = "less"
    factor: float = 0.1
    patience: int = 10
    threshold: float = 1e-4
    threshold_rule: ThresholdRule = "rel"
    cooldown: int = 0
    min_value: float | tuple[float, ...] = 0.0
    eps: float = 1e-8
    begin: int = 0
    end: int = INF

    def __post_init__(self) -> None:
        if self.end <= self.begin:
            raise ConfigError(f"end should be larger than begin, but got begin={self.begin}, end={self.end}")
        if self.factor >= 1.0:
            raise ConfigError("Factor should be < 1.0.")
        if self.threshold < 0:
            raise ConfigError(f"threshold {self.threshold} should be >= 0.")
        if self.rule not in ("less", "greater"):
            raise ConfigError(f"mode {self.rule} is unknown!")
        if self.threshold_rule not in ("rel", "abs"):
            raise ConfigError(f"threshold mode {self.threshold_rule} is unknown!")
        if isinstance(self.min_value, list):
            object.__setattr__(self, "min_value", tuple(self.min_value))

    @property
    def rule_worse(self) -> int:
        """The initial ``best``: ``INF`` (an int, 10**9) for ``less``, ``-INF`` for ``greater``."""
        return INF if self.rule == "less" else -INF

    def min_values(self, n_groups: int) -> list[Any]:
        """MMEngine's ``min_values`` for ``n_groups`` param groups (a list of that length is required)."""
        if isinstance(self.min_value, tuple):
            if len(self.min_value) != n_groups:
                raise ConfigError(f"expected {n_groups} min_lrs, got {len(self.min_value)}")
            return list(self.min_value)
        return [self.min_value] * n_groups

    def to_dict(self) -> dict[str, Any]:
        """The constructor arguments (``ReduceOnPlateauLR(optimizer, **d)`` accepts them)."""
        names = ("monitor", "rule", "factor", "patience", "threshold", "threshold_rule", "cooldown", "min_value",
                 "eps", "begin", "end")
        d = {k: getattr(self, k) for k in names}
        if isinstance(self.min_value, tuple):
            d["min_value"] = list(self.min_value)
        return d


@dataclass(frozen=True)
class MMEngineState:
    """The scheduler's counters between two calls, with MMEngine's attribute names."""

    best: Any = INF
    num_bad_epochs: int = 0
    cooldown_counter: int = 0
    last_step: int = -1
    global_step: int = 0  # ``_global_step``


@dataclass(frozen=True)
class MMEngineStep:
    """One ``step(metrics)`` call: whether it was a plateau step (``used``), the state after it, and the lrs."""

    index: int
    epoch: float
    metric: Any
    used: bool
    best: Any
    num_bad_epochs: int
    cooldown_counter: int
    last_step: int
    global_step: int
    lr_in: tuple[Any, ...]
    lr: tuple[Any, ...]
    improved: bool = False
    reduced: bool = False
    due: bool = False  # num_bad_epochs > patience: a reduction was due (applied or not)


@dataclass
class Simulation:
    """``simulate``'s result: every ``step(metrics)`` call in order and the state after the last one."""

    config: MMEngineConfig
    steps: list[MMEngineStep] = field(default_factory=list)
    final: MMEngineState = field(default_factory=MMEngineState)
    lrs: tuple[Any, ...] = ()

    def used(self) -> list[MMEngineStep]:
        """The calls inside ``[begin, end)``: the plateau steps."""
        return [s for s in self.steps if s.used]


def simulate(
    config: MMEngineConfig,
    metrics: Sequence[Any],
    lrs: Sequence[float],
    *,
    global_steps: Sequence[int] | None = None,
    metric_type: MetricType = "python",
    state: MMEngineState | None = None,
    epochs: Sequence[float] | None = None,
) -> Simulation:
    """Replay ``ReduceOnPlateauParamScheduler.step(metrics)`` for every metric, as MMEngine 0.10.7 runs it.

    Args:
        config: the constructor arguments.
        metrics: the monitored value of each validation, as the metrics dict held it.
        lrs: every param group's lr before the first call.
        global_steps: the ``_global_step`` at each call (the Runner: ``1..n`` when it validates every epoch);
            between two calls the metric-less ``step()`` calls are implied by the difference.
        metric_type: ``"python"`` (Python numbers, compared exactly as Python does) or ``"float32"`` (numpy
            float32 or float32 tensors: the value, ``best`` and every bar are float32).
        state: the counters before the first call (a fresh scheduler's when None).
        epochs: a label per call (default ``global_steps``).

    Returns:
        The ``Simulation``: one ``MMEngineStep`` per call, the final state and lrs.
    """
    cfg = config
    gs_list = list(global_steps) if global_steps is not None else list(range(1, len(metrics) + 1))
    if len(gs_list) != len(metrics):
        raise ConfigError(f"{len(gs_list)} global steps for {len(metrics)} metrics")
    labels = list(epochs) if epochs is not None else list(gs_list)
    st = state or MMEngineState(best=cfg.rule_worse)
    best, nb, cd, last_step, gs = st.best, st.num_bad_epochs, st.cooldown_counter, st.last_step, st.global_step
    lr = list(lrs)
    min_values = cfg.min_values(len(lr))
    f32_mode = metric_type == "float32"
    thr = cfg.threshold
    rel_less, rel_greater = 1.0 - thr, thr + 1.0
    out: list[MMEngineStep] = []
    for i, (raw, g) in enumerate(zip(metrics, gs_list, strict=True)):
        if g < gs:
            raise ConfigError(f"global step {g} after {gs}: _global_step only grows")
        gs = g  # the step(None) calls of after_train_epoch in between
        lr_in = tuple(lr)
        used = cfg.begin <= gs < cfg.end
        improved = reduced = due = False
        if used:
            last_step += 1
            a = f32(float(raw)) if f32_mode else raw
            if _is_better(cfg, a, best, f32_mode, rel_less, rel_greater):
                best, nb, improved = a, 0, True
            else:
                nb += 1
            if cd > 0:
                cd -= 1
                nb = 0
            if nb > cfg.patience:
                due = True
                values = [max(float(v) * cfg.factor, m) for v, m in zip(lr, min_values, strict=False)]
                for j, value in enumerate(values):
                    if lr[j] - value > cfg.eps:
                        lr[j] = value
                        reduced = True
                cd, nb = cfg.cooldown, 0
        out.append(MMEngineStep(i, labels[i], raw, used, best, nb, cd, last_step, gs, lr_in, tuple(lr), improved,
                                reduced, due))
    final = MMEngineState(best, nb, cd, last_step, gs)
    return Simulation(cfg, out, final, tuple(lr))


def _is_better(cfg: MMEngineConfig, a: Any, best: Any, f32_mode: bool, rel_less: float, rel_greater: float) -> bool:
    """``ReduceOnPlateauParamScheduler._is_better``; in float32 mode every operand is float32."""
    if not f32_mode:
        if cfg.rule == "less":
            return bool(a < best * rel_less) if cfg.threshold_rule == "rel" else bool(a < best - cfg.threshold)
        return bool(a > best * rel_greater) if cfg.threshold_rule == "rel" else bool(a > best + cfg.threshold)
    if isinstance(best, int):  # INF: an int times a Python float is a Python float; then cast to float32
        bar = best * (rel_less if cfg.rule == "less" else rel_greater) if cfg.threshold_rule == "rel" else (
            best - cfg.threshold if cfg.rule == "less" else best + cfg.threshold)
        bar = f32(bar)
    elif cfg.threshold_rule == "rel":
        bar = _mul32(best, f32(rel_less if cfg.rule == "less" else rel_greater))
    else:
        t = f32(cfg.threshold)
        bar = _sub32(best, t) if cfg.rule == "less" else _add32(best, t)
    return bool(a < bar) if cfg.rule == "less" else bool(a > bar)


# -- onto the package's engine ---------------------------------------------------------------------------
@dataclass(frozen=True)
class MMEnginePlateauConfig(PlateauConfig):
    """torch's names for an MMEngine configuration, with MMEngine's initial ``best`` (``+-int(1e9)``).

    Every replay in the package starts a fresh scheduler at ``config.mode_worse``; this subclass makes that
    MMEngine's ``rule_worse``. The rest of the state machine is torch's, which MMEngine copies, so Python-float
    metrics replay exactly (``simulate`` is the reference for the other metric types).
    """

    @property
    def mode_worse(self) -> float:
        """MMEngine's initial ``best``: ``float(int(1e9))`` for ``less``, ``-1e9`` for ``greater``."""
        return float(INF) if self.mode == "min" else -float(INF)


def torch_config(config: MMEngineConfig) -> MMEnginePlateauConfig:
    """The package's configuration for an MMEngine one (names mapped; ``monitor``, ``begin``, ``end`` dropped)."""
    min_lr = config.min_value
    return MMEnginePlateauConfig(
        mode="min" if config.rule == "less" else "max", factor=float(config.factor), patience=config.patience,
        threshold=float(config.threshold), threshold_mode=config.threshold_rule, cooldown=config.cooldown,
        min_lr=tuple(float(v) for v in min_lr) if isinstance(min_lr, tuple) else float(min_lr),
        eps=float(config.eps))


def from_torch(config: PlateauConfig, *, monitor: str = "loss") -> MMEngineConfig:
    """The MMEngine configuration with the same numbers as a torch one (``--rules mmengine``)."""
    return MMEngineConfig(monitor=monitor, rule="less" if config.mode == "min" else "greater",
                          factor=config.factor, patience=config.patience, threshold=config.threshold,
                          threshold_rule=config.threshold_mode, cooldown=config.cooldown, min_value=config.min_lr,
                          eps=config.eps)


#: Keys of ``ReduceOnPlateauLR.state_dict()`` (its ``__dict__`` minus ``optimizer``) that tell it apart.
STATE_KEYS = frozenset({"rule", "threshold_rule", "min_values", "last_step", "_global_step", "rule_worse"})


def is_mmengine_state(raw: Any) -> bool:
    """A mapping with MMEngine's plateau names (``rule``, ``threshold_rule``, ``last_step``, ...)."""
    try:
        return len(STATE_KEYS & set(raw)) >= 3 and "best" in raw
    except TypeError:
        return False


def from_state_dict(raw: Any) -> tuple[MMEngineConfig, MMEngineState]:
    """``ReduceOnPlateauLR.state_dict()`` (numbers already read) as config and counters.

    Raises:
        ConfigError: a value MMEngine's constructor would refuse, or a missing key (named).
    """
    missing = [k for k in ("rule", "threshold_rule", "factor", "patience", "threshold", "cooldown", "eps",
                           "min_values", "best", "num_bad_epochs", "cooldown_counter", "last_step") if k not in raw]
    if missing:
        raise ConfigError(f"an MMEngine ReduceOnPlateauLR state without {', '.join(missing)}")
    for k in ("patience", "cooldown", "num_bad_epochs", "cooldown_counter", "last_step"):
        if isinstance(raw[k], bool) or not isinstance(raw[k], int):
            raise ConfigError(f"state key {k!r} holds {raw[k]!r}, not an integer")
    mv = raw["min_values"]
    if not isinstance(mv, (list, tuple)) or not all(isinstance(v, (int, float)) for v in mv):
        raise ConfigError(f"state key 'min_values' holds {mv!r}, not a list of numbers")
    cfg = MMEngineConfig(
        monitor=str(raw.get("monitor", "loss")), rule=raw["rule"], factor=raw["factor"], patience=raw["patience"],
        threshold=raw["threshold"], threshold_rule=raw["threshold_rule"], cooldown=raw["cooldown"],
        min_value=tuple(mv), eps=raw["eps"], begin=int(raw.get("begin", 0)), end=int(raw.get("end", INF)))
    st = MMEngineState(best=raw["best"], num_bad_epochs=raw["num_bad_epochs"],
                       cooldown_counter=raw["cooldown_counter"], last_step=raw["last_step"],
                       global_step=int(raw.get("_global_step", 0)))
    return cfg, st


# -- a rule set for ``--rules mmengine`` / ``--compare`` ------------------------------------------------------
def _word(x: Any) -> str:
    return f"{x:.6g}" if isinstance(x, float) else str(x)


def rule_trace(config: MMEngineConfig, metrics: Sequence[Any], lrs: Sequence[float], *,
               epochs: Sequence[float] | None = None, global_steps: Sequence[int] | None = None,
               metric_type: MetricType = "python") -> RuleTrace:
    """``simulate`` as a rule-set trace: one ``RuleStep`` per plateau step (calls outside ``[begin, end)``
    become notes), each with its event and reason in MMEngine's order (better, cooldown, patience)."""
    from plateau_forensics.engine import Event

    sim = simulate(config, metrics, lrs, global_steps=global_steps, metric_type=metric_type, epochs=epochs)
    steps: list[RuleStep] = []
    prev = MMEngineState(best=config.rule_worse)
    skipped = []
    for s in sim.steps:
        if not s.used:
            skipped.append(s.epoch)
            continue
        if s.reduced:
            ev = Event.REDUCED
        elif s.due:
            ev = Event.SUPPRESSED
        elif s.improved:
            ev = Event.IMPROVED
        elif prev.cooldown_counter > 0:
            ev = Event.COOLDOWN
        else:
            ev = Event.BAD
        op = "<" if config.rule == "less" else ">"
        why = "improved" if s.improved else f"not {op} the bar set by best {_word(prev.best)}"
        reason = (f"{why}; num_bad {prev.num_bad_epochs}->{s.num_bad_epochs}, cooldown {prev.cooldown_counter}->"
                  f"{s.cooldown_counter}; last_step {prev.last_step}->{s.last_step}"
                  + (f"; lr {'/'.join(map(_word, s.lr_in))}->{'/'.join(map(_word, s.lr))}" if s.reduced else ""))
        steps.append(RuleStep(len(steps), s.epoch, s.metric, s.best, s.lr, s.lr_in, ev, reason,
                              {"num_bad_epochs": s.num_bad_epochs, "cooldown_counter": s.cooldown_counter,
                               "last_step": s.last_step, "_global_step": s.global_step}))
        prev = MMEngineState(s.best, s.num_bad_epochs, s.cooldown_counter, s.last_step, s.global_step)
    notes: tuple[str, ...] = ()
    if skipped:
        notes = (f"validations at {', '.join(map(_word, skipped))} are outside begin <= _global_step < end "
                 f"({config.begin}, {config.end}): MMEngine does not step on them",)
    return RuleTrace(rules="mmengine", config=config, steps=steps, start_lrs=tuple(lrs), notes=notes)


def configure(given: Any, options: Any, *, monitor: str) -> MMEngineConfig:
    """The ``rulesets`` protocol: MMEngine's configuration from torch's names (``given``) and MMEngine's own
    (``options``: ``rule``, ``threshold_rule``, ``min_value``, ``begin``, ``end``, as strings)."""
    if given.get("mode") == "auto":
        raise ConfigError("MMEngine's ReduceOnPlateauLR has no mode 'auto': rule is 'less' or 'greater'")
    kw: dict[str, Any] = {"monitor": monitor}
    names = {"mode": "rule", "threshold_mode": "threshold_rule", "min_lr": "min_value"}
    for k, v in given.items():
        key = names.get(k, k)
        kw[key] = ({"min": "less", "max": "greater"}.get(v, v)) if k == "mode" else v
    for k, v in options.items():
        if k in ("patience", "cooldown", "begin", "end"):
            kw[k] = int(v)
        elif k in ("factor", "threshold", "eps"):
            kw[k] = float(v)
        elif k == "min_value":
            kw[k] = tuple(float(x) for x in v.split("/")) if "/" in v else float(v)
        elif k in ("rule", "threshold_rule", "monitor"):
            kw[k] = v
        else:
            raise ConfigError(f"MMEngine's ReduceOnPlateauLR has no option {k!r}")
    return MMEngineConfig(**kw)


def replay(config: MMEngineConfig, log: Any, lrs: Sequence[float]) -> RuleTrace:
    """The ``rulesets`` protocol: a log's metrics replayed by MMEngine's rules (validations every epoch)."""
    t = rule_trace(config, list(log.metrics), lrs, epochs=list(log.epochs))
    t.log = log
    return t


def rules_runner(**options: Any) -> Any:
    """A ``whatif.RulesRunner``: a torch ``PlateauConfig`` replayed under MMEngine's rules."""

    def runner(metrics: Sequence[float], epochs: Sequence[float], config: PlateauConfig,
               lrs: Sequence[float]) -> RuleTrace:
        return rule_trace(from_torch(config, monitor=str(options.get("monitor", "loss"))), metrics, lrs,
                          epochs=epochs)

    return runner
