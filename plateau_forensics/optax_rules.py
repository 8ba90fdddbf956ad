"""optax's ``contrib.reduce_on_plateau``, replayed in pure Python, bit for bit what optax 0.2.8 computes.

Its rules differ from torch's (``--rules optax``): it minimises only; an evaluation improves when
``avg < (1 - rtol) * best - atol``; it reduces when ``plateau_count == patience`` (one evaluation earlier
than torch's ``num_bad_epochs > patience``); it has no eps; it averages ``accumulation_size`` values before
each evaluation; its state is float32 (``best_value``, ``avg_value``, ``scale``) and int32 (the counters,
which saturate); and it holds a *scale* that multiplies the updates, not an lr. ``lr`` in the trace is the
base lr times the scale (with no lr known, the scale itself).

This module imports neither jax, optax nor numpy: float32 rounding is done with ``struct``, and subnormal
results are flushed to zero as XLA's CPU backend does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from plateau_forensics.engine import Event, _round_float32
from plateau_forensics.engine import _num as _fmt
from plateau_forensics.errors import ConfigError
from plateau_forensics.rulesets import RuleStep, RuleTrace
from plateau_forensics.state import PlateauConfig

if TYPE_CHECKING:
    from plateau_forensics.losses import LossLog

__all__ = ["OptaxConfig", "OptaxState", "configure", "from_torch", "replay", "rules_runner", "run_optax"]

INT32_MAX = 2**31 - 1
_F32_TINY = 2.0**-126


def f32(x: float) -> float:
    """A float32 result as XLA's CPU backend gives it: rounded to float32, a subnormal flushed to (signed)
    zero.

    XLA runs with flush-to-zero and denormals-are-zero, so a value below 2**-126 in magnitude is 0 in
    every jax computation (``jnp.astype`` of the value included).
    """
    r = _round_float32(x)
    return math.copysign(0.0, r) if r != 0.0 and abs(r) < _F32_TINY else r


def _inc(n: int) -> int:
    """``optax.safe_increment`` on an int32: +1, staying at the maximum."""
    return n if n >= INT32_MAX else n + 1


def _int32(n: int) -> int:
    """``astype(jnp.int32)`` of a Python int (two's complement wrap)."""
    return (n + 2**31) % 2**32 - 2**31


def _max32(a: float, b: float) -> float:
    """``jnp.maximum`` in float32: NaN on either side gives NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return a if a >= b else b


@dataclass(frozen=True)
class OptaxConfig:
    """``optax.contrib.reduce_on_plateau``'s arguments, with optax's names and defaults.

    Frozen so that a replay cannot change the configuration it explains.

    Args:
        factor: ``new_scale = scale * factor``; optax requires 0 < factor < 1.
        patience: reduce when the plateau count (evaluations without improvement) equals it.
        rtol: relative tolerance, ``0 <= rtol <= 1``.
        atol: absolute tolerance, ``>= 0``; rtol and atol cannot both be 0.
        cooldown: evaluations after a reduction that zero the plateau count.
        accumulation_size: values averaged into one evaluation.
        min_scale: the scale never goes below it (``jnp.maximum`` after every evaluation outside cooldown).

    Raises:
        ConfigError: what optax raises ValueError for, or a count outside int32.

    Example:
        >>> OptaxConfig(patience=2).rtol
        0.0001
    """

    factor: float = 0.1
    patience: int = 10
    rtol: float = 1e-4
    atol: float = 0.0
    cooldown: int = 0
    accumulation_size: int = 1
    min_scale: float = 0.0

    def __post_init__(self) -> None:
        # optax's own checks, in its order and words
        if self.factor <= 0.0 or self.factor >= 1.0:
            raise ConfigError(f"Factor must be in the range (0, 1), got factor = {self.factor}.")
        if self.rtol < 0.0 or self.atol < 0.0:
            raise ConfigError(f"Both rtol and atol must be non-negative, got rtol = {self.rtol} and atol = "
                              f"{self.atol}.")
        if self.rtol == 0.0 and self.atol == 0.0:
            raise ConfigError(f"At least one of rtol or atol must be positive, got rtol = {self.rtol} and "
                              f"atol = {self.atol}.")
        if self.rtol > 1.0:
            raise ConfigError(f"rtol must be less than or equal to 1.0, got rtol = {self.rtol}.")
        for name in ("patience", "cooldown", "accumulation_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not -(2**31) <= v <= INT32_MAX:
                raise ConfigError(f"optax {name} must be an int32 integer, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        """The arguments as a dict; ``optax.contrib.reduce_on_plateau(**d)`` accepts it."""
        return asdict(self)


@dataclass(frozen=True)
class OptaxState:
    """``ReduceLROnPlateauState``: float32 values and int32 counters, with optax's names."""

    scale: float = 1.0
    best_value: float = math.inf
    plateau_count: int = 0
    cooldown_count: int = 0
    count: int = 0
    avg_value: float = 0.0


def run_optax(config: OptaxConfig, metrics: Sequence[float], lrs: Sequence[float] = (1.0,), *,
              epochs: Sequence[float] | None = None, state: OptaxState | None = None) -> RuleTrace:
    """Feed ``metrics`` to ``update(..., value=metric)`` one by one, from ``init`` (or ``state``).

    Args:
        config: the transformation's arguments.
        metrics: the ``value`` of each update (converted to float32, as optax does).
        lrs: each param group's base lr; the trace's ``lr`` is ``base * scale``.
        epochs: a label per metric (``1..n`` when None).
        state: the state before the first update (``init``'s when None).

    Returns:
        A ``RuleTrace`` (``rules="optax"``) whose steps hold the state after every update
        (``state``: scale, best_value, plateau_count, cooldown_count, count, avg_value).

    Example:
        >>> t = run_optax(OptaxConfig(patience=2), [1.0, 1.0, 1.0])
        >>> [s.event.value for s in t.steps], t.steps[-1].state["scale"]
        (['improved', 'bad', 'reduced'], 0.10000000149011612)
    """
    values = [float(m) for m in metrics]
    labels = list(range(1, len(values) + 1)) if epochs is None else list(epochs)
    if len(labels) != len(values):
        raise ConfigError(f"{len(labels)} epoch labels for {len(values)} metrics")
    base = tuple(float(v) for v in lrs)
    c = config
    one_minus_rtol = f32(1 - c.rtol)  # (1 - rtol) is a Python float, weakly typed into float32
    atol, factor, min_scale = f32(c.atol), f32(c.factor), f32(c.min_scale)
    s = state or OptaxState()
    scale, best, plateau, cool, count, avg = (f32(s.scale), f32(s.best_value), s.plateau_count,
                                              s.cooldown_count, s.count, f32(s.avg_value))
    steps = []
    for i, value in enumerate(values):
        scale0, best0, plateau0, cool0 = scale, best, plateau, cool
        # update_fn: new_avg = (count * avg + float32(value)) / new_count, every operation in float32
        new_count = _inc(count)
        avg = f32(f32(f32(f32(count) * avg) + f32(value)) / f32(new_count))
        count = new_count
        avg_fed = avg
        if count != c.accumulation_size:
            event: Event | None = None
            reason = f"averaging: {count} of {c.accumulation_size} values, avg_value {_fmt(avg)}"
        else:
            # _update_scale
            bar = f32(f32(one_minus_rtol * best) - atol)
            improved = avg < bar
            if improved:
                best = avg
            curr = 0 if improved else _inc(plateau)
            if cool > 0:
                plateau, cool = 0, cool - 1
                hit = False
            else:
                hit = curr == c.patience
                plateau = 0 if hit else curr
                scale = _max32(f32(scale * factor) if hit else scale, min_scale)
                cool = _int32(c.cooldown) if hit else 0
            count, avg = 0, 0.0
            event = _event(improved, hit, cool0 > 0, scale0, scale)
            reason = _reason(c, avg_fed, bar, improved, best0, plateau0, curr, cool0, cool, hit, scale0,
                             scale)
        lr_in = tuple(b * scale0 for b in base)
        lr = tuple(b * scale for b in base)
        steps.append(RuleStep(
            index=i, epoch=labels[i], metric=value, best=best, lr=lr, lr_in=lr_in, event=event, reason=reason,
            state={"scale": scale, "best_value": best, "plateau_count": plateau, "cooldown_count": cool,
                   "count": count, "avg_value": avg}))
    notes = ["optax holds a scale that multiplies the updates; lr = base lr x scale"]
    if c.accumulation_size != 1:
        notes.append(f"each evaluation averages {c.accumulation_size} values (accumulation_size)")
    return RuleTrace(rules="optax", config=c, steps=steps, start_lrs=tuple(b * f32(s.scale) for b in base),
                     notes=tuple(notes))


def _event(improved: bool, hit: bool, in_cooldown: bool, scale0: float, scale: float) -> Event:
    if hit:
        return Event.REDUCED if scale != scale0 else Event.SUPPRESSED
    if improved:
        return Event.IMPROVED
    return Event.COOLDOWN if in_cooldown else Event.BAD


def _reason(c: OptaxConfig, avg: float, bar: float, improved: bool, best0: float, p0: int, curr: int,
            cd0: int, cd: int, hit: bool, scale0: float, scale: float) -> str:
    """The transition in words, in optax's order (improvement, then cooldown or patience)."""
    rel = f"(1 - {_fmt(c.rtol)}) * {_fmt(best0)} - {_fmt(c.atol)} = {_fmt(bar)}"
    if improved:
        parts = [f"improved ({_fmt(avg)} < {rel} in float32), best {_fmt(best0)}->{_fmt(avg)}"]
    elif math.isnan(avg):
        parts = ["bad (nan never improves)"]
    else:
        parts = [f"bad ({_fmt(avg)} not < {rel} in float32)"]
    parts.append(f"plateau_count {p0}->{curr}")
    if cd0 > 0:
        parts.append(f"in cooldown ({cd0}->{cd}): plateau_count 0")
    elif hit:
        same = " (unchanged: min_scale)" if scale == scale0 else ""
        parts.append(f"== patience {c.patience}: scale {_fmt(scale0)}->{_fmt(scale)}{same}, cooldown {cd}, "
                     "plateau_count 0")
    elif scale != scale0:
        parts.append(f"scale {_fmt(scale0)}->{_fmt(scale)} (raised to min_scale)")
    return "; ".join(parts)


# -- the rule-set protocol (rulesets.py) -------------------------------------------------------------------
_NATIVE = {"factor": float, "patience": int, "rtol": float, "atol": float, "cooldown": int,
           "accumulation_size": int, "min_scale": float}


def _parse(options: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in options.items():
        if k == "min_delta":
            raise ConfigError("optax has no min_delta: its tolerances are rtol and atol "
                              "(--rule-option atol=VALUE, or --threshold with --threshold-mode abs)")
        if k not in _NATIVE:
            raise ConfigError(f"optax's reduce_on_plateau has no argument {k!r}: it takes "
                              f"{', '.join(_NATIVE)}")
        try:
            out[k] = _NATIVE[k](v)
        except ValueError:
            kind = "an integer" if _NATIVE[k] is int else "a number"
            raise ConfigError(f"--rule-option {k}={v!r}: not {kind}") from None
    return out


def from_torch(given: Mapping[str, Any]) -> dict[str, Any]:
    """optax arguments for the torch-named hyperparameters ``given`` (only those; the rest keep optax's
    defaults).

    ``factor``, ``patience``, ``cooldown`` map 1:1; ``threshold`` is ``rtol`` (``threshold_mode="rel"``,
    torch's
    default) or ``atol`` (``"abs"``, with ``rtol=0``).

    Raises:
        ConfigError: ``mode="max"`` (optax only minimises), ``eps`` (optax has none), ``min_lr`` (optax has
            ``min_scale``, a fraction of the base lr).
    """
    out: dict[str, Any] = {}
    mode = given.get("mode")
    if mode not in (None, "min", "auto"):
        raise ConfigError("optax's reduce_on_plateau only minimises: mode 'max' has no counterpart (log the "
                          "negated metric)")
    if "eps" in given:
        raise ConfigError("optax's reduce_on_plateau has no eps")
    if "min_lr" in given:
        raise ConfigError("optax's reduce_on_plateau has min_scale, a fraction of the base lr, not min_lr: "
                          "use --rule-option min_scale=VALUE")
    for k in ("factor", "patience", "cooldown"):
        if k in given:
            out[k] = given[k]
    if "threshold" in given or "threshold_mode" in given:
        threshold = given.get("threshold", 1e-4)
        if given.get("threshold_mode", "rel") == "rel":
            out["rtol"] = threshold
        else:
            out["rtol"], out["atol"] = 0.0, threshold
    return out


def configure(given: Mapping[str, Any], options: Mapping[str, str], *, monitor: str) -> OptaxConfig:
    """``OptaxConfig`` from torch-named ``given`` values and optax-named ``options`` (which win)."""
    return OptaxConfig(**{**from_torch(given), **_parse(options)})


def replay(config: OptaxConfig, log: LossLog, lrs: Sequence[float]) -> RuleTrace:
    """``run_optax`` over a log's metrics, labelled with its epochs."""
    return run_optax(config, log.metrics, lrs, epochs=log.epochs)


def rules_runner(
    **options: str,
) -> Callable[[Sequence[float], Sequence[float], PlateauConfig, Sequence[float]], RuleTrace]:
    """A ``whatif.RulesRunner``: each torch ``PlateauConfig`` runs under optax's rules (``from_torch``)."""

    def runner(metrics: Sequence[float], epochs: Sequence[float], config: PlateauConfig,
               lrs: Sequence[float]) -> RuleTrace:
        given = {k: v for k, v in config.to_dict().items() if k not in ("eps", "min_lr", "mode")}
        if config.mode != "min":
            given["mode"] = config.mode
        return run_optax(configure(given, options, monitor=""), metrics, lrs, epochs=epochs)

    return runner
