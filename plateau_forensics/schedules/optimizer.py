"""A stand-in for a torch optimizer as the schedulers see it: param groups (``lr``, ``initial_lr``, momentum
or betas, and the keys schedulers write), the optimizer's ``defaults``, and the warnings torch would emit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from plateau_forensics.schedules.errors import ScheduleConfigError
from plateau_forensics.schedules.values import DTYPES, TensorLR, round_to


class Optimizer:
    """Param groups with an lr each, as ``torch.optim.SGD`` (``momentum`` in its defaults) or Adam
    (``betas``).

    Args:
        lrs: each param group's ``lr``.
        lr_dtypes: per group, None for a float lr or a dtype name (``"float32"``) for a tensor lr.
        momentum: SGD's momentum (its defaults always hold the key, as torch's SGD does).
        betas: when given, an Adam-like optimizer (``betas`` instead of ``momentum``).
        initial_lrs: per group, an ``initial_lr`` already present (a resumed optimizer's state dict has it).

    Example:
        >>> opt = Optimizer([0.1, 0.5])
        >>> opt.lrs
        (0.1, 0.5)
    """

    def __init__(
        self,
        lrs: Sequence[float] = (0.1,),
        *,
        lr_dtypes: Sequence[str | None] | None = None,
        momentum: float = 0.0,
        betas: tuple[float, float] | None = None,
        initial_lrs: Sequence[float] | None = None,
    ) -> None:
        lrs = list(lrs)
        if not lrs:
            raise ScheduleConfigError("optimizer got an empty parameter list")
        dtypes = list(lr_dtypes) if lr_dtypes is not None else [None] * len(lrs)
        if len(dtypes) != len(lrs):
            raise ScheduleConfigError(f"{len(lrs)} lrs but {len(dtypes)} lr_dtypes")
        self.defaults: dict[str, Any] = {"lr": lrs[0]}
        if betas is not None:
            self.defaults["betas"] = tuple(betas)
        else:
            self.defaults["momentum"] = momentum
        self.param_groups: list[dict[str, Any]] = []
        self.warnings: list[tuple[str, str]] = []
        self._opt_called = False
        for i, (lr, dtype) in enumerate(zip(lrs, dtypes, strict=True)):
            group = self._group(lr, dtype)
            if initial_lrs is not None:
                group["initial_lr"] = _lr_value(initial_lrs[i], dtype)
            self.param_groups.append(group)

    def _group(self, lr: Any, dtype: str | None) -> dict[str, Any]:
        group: dict[str, Any] = {"lr": _lr_value(lr, dtype)}
        for key in ("momentum", "betas"):
            if key in self.defaults:
                group[key] = self.defaults[key]
        return group

    def add_param_group(
        self, lr: float | None = None, lr_dtype: str | None = None, **keys: Any
    ) -> dict[str, Any]:
        """torch's ``add_param_group``: a new group with ``lr`` (the defaults' lr when None) and no
        ``initial_lr``."""
        group = self._group(self.defaults["lr"] if lr is None else lr, lr_dtype)
        group.update(keys)
        self.param_groups.append(group)
        return group

    def step(self) -> None:
        """``optimizer.step()``: only what the schedulers check (that it was called before their first
        step)."""
        self._opt_called = True

    @property
    def lrs(self) -> tuple[float, ...]:
        """Every group's lr as a Python float."""
        return tuple(float(g["lr"]) for g in self.param_groups)

    @property
    def lr_dtypes(self) -> tuple[str | None, ...]:
        """Per group, the tensor dtype of its lr (None for a float lr)."""
        return tuple(g["lr"].dtype if isinstance(g["lr"], TensorLR) else None for g in self.param_groups)

    def __repr__(self) -> str:
        return f"<Optimizer {len(self.param_groups)} groups, lr {list(self.lrs)}>"


def _lr_value(lr: Any, dtype: str | None) -> Any:
    if isinstance(lr, bool) or not isinstance(lr, (int, float, TensorLR)):
        raise ScheduleConfigError(f"an lr must be a number, got {lr!r}")
    if dtype is None or isinstance(lr, TensorLR):
        return lr
    if dtype not in DTYPES:
        raise ScheduleConfigError(
            f"lr dtype {dtype!r}: use one of {', '.join(DTYPES)} (or None for a float lr)"
        )
    return TensorLR(round_to(dtype)(float(lr)), dtype)
