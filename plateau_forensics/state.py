"""Frozen value objects for ReduceLROnPlateau: its hyperparameters and its counters.

Vocabulary used across the package. A *step* is one call of ``scheduler.step(metric)``. torch's
``last_epoch`` counts steps (0 before the first one; -1-based in torch <= 1.3). An *epoch* is the
label the user's loss log gives a row; ``epoch - last_epoch`` is the *epoch offset*.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from plateau_forensics.errors import ConfigError

Mode = Literal["min", "max"]
ThresholdMode = Literal["rel", "abs"]

#: Hyperparameter keys of a torch state dict, with the PlateauConfig field each one fills.
HYPERPARAMETER_KEYS = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "eps")
COUNTER_KEYS = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch")
#: Keys that identify a mapping as a ReduceLROnPlateau state (any two of them, ``best`` among them).
SHAPE_KEYS = frozenset(COUNTER_KEYS) | {"mode_worse", "patience", "cooldown", "min_lrs", "threshold_mode"}

# torch <= 1.3 wrote these keys in this order and counted last_epoch from -1 (SEMANTICS.md section 3).
_TORCH_1_3_ORDER = (
    "factor", "min_lrs", "patience", "verbose", "cooldown", "cooldown_counter", "mode", "threshold",
    "threshold_mode", "best", "num_bad_epochs", "mode_worse", "eps", "last_epoch",
)


@dataclass(frozen=True)
class PlateauConfig:
    """ReduceLROnPlateau's constructor arguments, with torch's names and defaults.

    Frozen so that a replay can never change the configuration it explains.

    Args:
        mode: ``"min"`` or ``"max"``.
        factor: multiplier applied to the lr on a reduction; must be < 1.0, as torch requires.
        patience: bad epochs tolerated; the reduction happens on bad epoch ``patience + 1``.
        threshold: how much better a metric must be to count as an improvement.
        threshold_mode: ``"rel"`` (bar is ``best * (1 -/+ threshold)``) or ``"abs"`` (``best -/+ threshold``).
        cooldown: steps after a reduction during which bad epochs are not counted.
        min_lr: lower bound of the lr, a scalar or one value per param group.
        eps: a reduction smaller than this (absolute) is not applied.

    Example:
        >>> PlateauConfig(patience=2, cooldown=3, factor=0.8).bar(0.5)
        0.49995
    """

    mode: Mode = "min"
    factor: float = 0.1
    patience: int = 10
    threshold: float = 1e-4
    threshold_mode: ThresholdMode = "rel"
    cooldown: int = 0
    min_lr: float | tuple[float, ...] = 0.0
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.factor >= 1.0:
            raise ConfigError("Factor should be < 1.0.")
        if self.mode not in ("min", "max"):
            raise ConfigError(f"mode {self.mode} is unknown!")
        if self.threshold_mode not in ("rel", "abs"):
            raise ConfigError(f"threshold mode {self.threshold_mode} is unknown!")
        if isinstance(self.min_lr, Sequence) and not isinstance(self.min_lr, str):
            object.__setattr__(self, "min_lr", tuple(float(v) for v in self.min_lr))

    @property
    def default_min_lr(self) -> float | None:
        """torch's ``default_min_lr``: the scalar ``min_lr``, or None when it was given per group."""
        return None if isinstance(self.min_lr, tuple) else float(self.min_lr)

    @property
    def mode_worse(self) -> float:
        """The initial ``best``: ``+inf`` in min mode, ``-inf`` in max mode."""
        return math.inf if self.mode == "min" else -math.inf

    def min_lrs_for(self, n_groups: int) -> tuple[float, ...]:
        """The per-group floors torch builds for ``n_groups`` param groups.

        Raises:
            ConfigError: a per-group ``min_lr`` whose length differs from ``n_groups`` (torch: ValueError).
        """
        if isinstance(self.min_lr, tuple):
            if len(self.min_lr) != n_groups:
                raise ConfigError(f"expected {n_groups} min_lrs, got {len(self.min_lr)}")
            return self.min_lr
        return (float(self.min_lr),) * n_groups

    def bar(self, best: float) -> float:
        """The value a metric must beat (strictly) to count as an improvement over ``best``.

        Computed exactly as torch's ``_is_better`` does, e.g. ``best * (1.0 - threshold)`` in min/rel.
        """
        if self.threshold_mode == "rel":
            return best * (1.0 - self.threshold) if self.mode == "min" else best * (self.threshold + 1.0)
        return best - self.threshold if self.mode == "min" else best + self.threshold

    def is_better(self, a: float, best: float) -> bool:
        """torch's ``_is_better(a, best)``; NaN is never better."""
        return a < self.bar(best) if self.mode == "min" else a > self.bar(best)

    def to_dict(self) -> dict[str, Any]:
        """The constructor arguments as a plain dict (``min_lr`` a float or a list)."""
        # torch's constructor order: mode, factor, patience, threshold, threshold_mode, cooldown, min_lr, eps
        d = {k: getattr(self, k) for k in ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown",
                                           "min_lr", "eps")}
        if isinstance(self.min_lr, tuple):
            d["min_lr"] = list(self.min_lr)
        return d


@dataclass(frozen=True)
class PlateauState:
    """The counters of a scheduler between two steps, with torch's attribute names.

    Args:
        last_epoch: torch's step counter (see the module docstring).
        best: best metric so far (``mode_worse`` before any improvement).
        num_bad_epochs: consecutive non-improving steps outside cooldown.
        cooldown_counter: cooldown steps left.
        min_lrs: per-group lr floors as torch keeps them.
        default_min_lr: the scalar floor used to rebuild ``min_lrs`` (None: per-group list, or pre-2.6 state).
        last_lr: torch's ``_last_lr`` (None when the state does not have it).
        partial: the state lacked counters (e.g. timm keeps only best and last_epoch).
        missing: the keys a full torch 2.13 state has that this one lacked.
        extras: keys torch 2.13 does not write (kept, e.g. ``verbose`` from old releases).
        keys: the key order as saved, a torch-version fingerprint.
        last_epoch_base: 0, or -1 for torch <= 1.3 states (there ``last_epoch`` = steps - 1).
        best_dtype: the tensor dtype of ``best`` when it was saved as a tensor (torch 1.0), else None.
    """

    last_epoch: float
    best: float
    num_bad_epochs: int
    cooldown_counter: int
    min_lrs: tuple[float, ...]
    default_min_lr: float | None
    last_lr: tuple[float, ...] | None = None
    partial: bool = False
    missing: tuple[str, ...] = ()
    extras: Mapping[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] = ()
    last_epoch_base: int = 0
    best_dtype: str | None = None

    @property
    def steps(self) -> float:
        """Number of ``step()`` calls this state has seen (``last_epoch`` corrected for its base)."""
        return self.last_epoch - self.last_epoch_base

    @classmethod
    def fresh(cls, config: PlateauConfig, lrs: Sequence[float], *, strict: bool = True) -> PlateauState:
        """The state of a newly constructed scheduler over param groups with these ``lrs``.

        With ``strict=False`` a per-group ``min_lr`` of another length is kept as it is: the scheduler was
        built before groups were added (torch then fails or rebuilds at the next reduction, not here).
        """
        mismatch = isinstance(config.min_lr, tuple) and len(config.min_lr) != len(lrs)
        return cls(
            last_epoch=0,
            best=config.mode_worse,
            num_bad_epochs=0,
            cooldown_counter=0,
            min_lrs=config.min_lr if (mismatch and not strict) else config.min_lrs_for(len(lrs)),  # type: ignore[arg-type]
            default_min_lr=config.default_min_lr,
            last_lr=tuple(float(v) for v in lrs),
        )


def is_plateau_shaped(obj: Any) -> bool:
    """True for a mapping that looks like a ReduceLROnPlateau state (``best`` plus another known key)."""
    if not isinstance(obj, Mapping) or "best" not in obj:
        return False
    return sum(1 for k in obj if k in SHAPE_KEYS) >= 2


def _number(raw: Mapping[str, Any], key: str) -> Any:
    """The saved number, unchanged (torch keeps an int patience or a float last_epoch as given)."""
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"state key {key!r} holds {value!r}, not a number")
    return value


def from_state_dict(
    raw: Mapping[str, Any], fallback: PlateauConfig | None = None
) -> tuple[PlateauConfig, PlateauState]:
    """Parse a ``scheduler.state_dict()`` (values already plain Python numbers) into config and state.

    Saved hyperparameters win, as in torch's ``load_state_dict``; ``fallback`` (torch's defaults when
    None) supplies only what the state lacks, and every such key is listed in ``state.missing``.

    Args:
        raw: the state mapping.
        fallback: hyperparameters to use for keys the state does not have.

    Returns:
        The effective configuration and the counters.

    Raises:
        ConfigError: a value of the wrong type, or hyperparameters torch would reject.
    """
    fallback = fallback or PlateauConfig()
    missing = [k for k in (*HYPERPARAMETER_KEYS, *COUNTER_KEYS, "min_lrs") if k not in raw]
    kw: dict[str, Any] = {}
    for key in HYPERPARAMETER_KEYS:
        if key in raw:
            kw[key] = raw[key] if key in ("mode", "threshold_mode") else _number(raw, key)
        else:
            kw[key] = getattr(fallback, key)
    saved_min_lrs = raw.get("min_lrs")
    if isinstance(saved_min_lrs, (list, tuple)):
        min_lrs = tuple(float(v) for v in saved_min_lrs)
    else:
        min_lrs = fallback.min_lrs_for(1) if not isinstance(fallback.min_lr, tuple) else fallback.min_lr
    if "default_min_lr" in raw:
        default_min_lr = raw["default_min_lr"]
        default_min_lr = None if default_min_lr is None else float(default_min_lr)
    else:
        # Before torch 2.6 there was no default_min_lr; loading such a state keeps the constructor's.
        default_min_lr = fallback.default_min_lr
    kw["min_lr"] = default_min_lr if default_min_lr is not None else min_lrs
    config = PlateauConfig(**kw)

    keys = tuple(str(k) for k in raw)
    base = -1 if "_last_lr" not in raw and keys == _TORCH_1_3_ORDER[: len(keys)] and "verbose" in raw else 0
    last_lr = raw.get("_last_lr")
    counters_missing = {"num_bad_epochs", "cooldown_counter"} & set(missing)
    known = {*HYPERPARAMETER_KEYS, *COUNTER_KEYS, "min_lrs", "default_min_lr", "_last_lr", "mode_worse"}
    state = PlateauState(
        last_epoch=_number(raw, "last_epoch") if "last_epoch" in raw else 0,
        best=float(raw["best"]) if "best" in raw else config.mode_worse,
        num_bad_epochs=_number(raw, "num_bad_epochs") if "num_bad_epochs" in raw else 0,
        cooldown_counter=_number(raw, "cooldown_counter") if "cooldown_counter" in raw else 0,
        min_lrs=min_lrs,
        default_min_lr=default_min_lr,
        last_lr=tuple(float(v) for v in last_lr) if isinstance(last_lr, (list, tuple)) else None,
        partial=bool(counters_missing),
        missing=tuple(missing),
        extras={k: v for k, v in raw.items() if k not in known},
        keys=keys,
        last_epoch_base=base,
    )
    return config, state


def to_state_dict(config: PlateauConfig, state: PlateauState) -> dict[str, Any]:
    """A torch 2.13 ``ReduceLROnPlateau.state_dict()`` for this config and state, in torch's key order.

    ``scheduler.load_state_dict(to_state_dict(cfg, st))`` reproduces the scheduler exactly.
    """
    return {
        "factor": config.factor,
        "default_min_lr": state.default_min_lr,
        "min_lrs": list(state.min_lrs),
        "patience": config.patience,
        "cooldown": config.cooldown,
        "eps": config.eps,
        "last_epoch": state.last_epoch,
        "_last_lr": list(state.last_lr) if state.last_lr is not None else [],
        "mode_worse": config.mode_worse,
        "mode": config.mode,
        "threshold": config.threshold,
        "threshold_mode": config.threshold_mode,
        "best": state.best,
        "cooldown_counter": state.cooldown_counter,
        "num_bad_epochs": state.num_bad_epochs,
    }
