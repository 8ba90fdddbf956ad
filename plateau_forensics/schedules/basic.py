"""The multiplicative schedulers: LambdaLR, MultiplicativeLR, StepLR, MultiStepLR, ConstantLR, LinearLR,
ExponentialLR, PolynomialLR. Each ``get_lr`` is torch 2.13's chainable formula with its float operations in
torch's order (the closed forms differ in the last bits, so both are kept)."""

from __future__ import annotations

import types
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from plateau_forensics.schedules.base import LRScheduler, clone_tree, group_values, strict_zip
from plateau_forensics.schedules.errors import ScheduleConfigError, TorchRaises
from plateau_forensics.schedules.optimizer import Optimizer

Lambda = Callable[[int], float] | str


def _lambdas(lr_lambda: Any, optimizer: Optimizer, variable: str = "epoch") -> list[Any]:
    """One callable per group; an expression string becomes a ``schedules.expr.Expression``."""
    from plateau_forensics.schedules.expr import as_callable

    n = len(optimizer.param_groups)
    if not isinstance(lr_lambda, (list, tuple)):
        return [as_callable(lr_lambda, variable)] * n
    if len(lr_lambda) != n:
        raise ScheduleConfigError(f"Expected {n} lr_lambdas, but got {len(lr_lambda)}", "ValueError")
    return [as_callable(f, variable) for f in lr_lambda]


def saved_callable(fn: Any) -> Any:
    """What torch's state_dict keeps of a lambda: None for a function (ours: an expression), else its
    ``__dict__``."""
    from plateau_forensics.schedules.expr import Expression

    if isinstance(fn, (types.FunctionType, Expression)):
        return None
    return fn.__dict__.copy()


class _LambdaState(LRScheduler):
    """The state_dict protocol LambdaLR and MultiplicativeLR share: functions are saved as None."""

    lr_lambdas: list[Any]

    def _torch_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in super()._torch_dict().items() if k != "lr_lambdas"}
        d["lr_lambdas"] = [saved_callable(fn) for fn in self.lr_lambdas]
        return d

    def state_dict(self) -> dict[str, Any]:
        """torch's ``state_dict()``; ``lr_lambdas`` holds None per function (a callable object's
        ``__dict__``)."""
        self._require_bound()
        d = self._torch_dict()
        return {k: (clone_tree(v) if k != "lr_lambdas" else v) for k, v in d.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``: a saved callable object's attributes go back into ours."""
        saved = state_dict.get("lr_lambdas")
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "lr_lambdas"})
        for fn, attrs in zip(self.lr_lambdas, saved or [], strict=False):
            if attrs is not None:
                fn.__dict__.update(attrs)


class LambdaLR(_LambdaState):
    """``lr = initial_lr * lr_lambda(epoch)``: ``lr_lambda`` a callable, an expression (``"0.95 ** epoch"``),
    or one per group.

    Example:
        >>> s = LambdaLR(lr_lambda="0.95 ** epoch", optimizer=Optimizer([0.1]))
        >>> s.step(); s.get_last_lr()
        [0.095]
    """

    def __init__(
        self, lr_lambda: Lambda | list[Lambda], last_epoch: int = -1, *, optimizer: Optimizer | None = None
    ) -> None:
        self._setup(optimizer, lr_lambda=lr_lambda, last_epoch=last_epoch)

    def _construct(self, lr_lambda: Any, last_epoch: int) -> None:
        self.lr_lambdas = _lambdas(lr_lambda, self.optimizer)
        self._base_init(last_epoch)

    def get_lr(self) -> list[Any]:
        return [base_lr * fn(self.last_epoch) for fn, base_lr in strict_zip(self.lr_lambdas, self.base_lrs)]


class MultiplicativeLR(_LambdaState):
    """``lr = lr * lr_lambda(epoch)`` at every step after the first."""

    def __init__(
        self, lr_lambda: Lambda | list[Lambda], last_epoch: int = -1, *, optimizer: Optimizer | None = None
    ) -> None:
        self._setup(optimizer, lr_lambda=lr_lambda, last_epoch=last_epoch)

    def _construct(self, lr_lambda: Any, last_epoch: int) -> None:
        self.lr_lambdas = _lambdas(lr_lambda, self.optimizer)
        for fn in self.lr_lambdas:
            if not callable(fn):
                raise ScheduleConfigError(
                    f"lr_lambda should be a function, but got {type(fn).__name__}", "TypeError"
                )
        self._base_init(last_epoch)

    def get_lr(self) -> list[Any]:
        if self._is_initial:
            return group_values(self.optimizer, "lr")
        return [
            g["lr"] * fn(self.last_epoch)
            for fn, g in strict_zip(self.lr_lambdas, self.optimizer.param_groups)
        ]


class StepLR(LRScheduler):
    """``lr * gamma`` every ``step_size`` steps."""

    has_closed_form = True

    def __init__(
        self, step_size: int, gamma: float = 0.1, last_epoch: int = -1, *, optimizer: Optimizer | None = None
    ) -> None:
        self._setup(optimizer, step_size=step_size, gamma=gamma, last_epoch=last_epoch)

    def _construct(self, step_size: int, gamma: float, last_epoch: int) -> None:
        self.step_size = step_size
        self.gamma = gamma
        self._base_init(last_epoch)

    def get_lr(self) -> list[Any]:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return group_values(self.optimizer, "lr")
        return [g["lr"] * self.gamma for g in self.optimizer.param_groups]

    def _closed_form(self) -> list[Any]:
        return [base_lr * self.gamma ** (self.last_epoch // self.step_size) for base_lr in self.base_lrs]


class MultiStepLR(LRScheduler):
    """``lr * gamma`` at each milestone (``gamma ** k`` at a milestone listed k times)."""

    has_closed_form = True

    def __init__(
        self,
        milestones: Iterable[int],
        gamma: float = 0.1,
        last_epoch: int = -1,
        *,
        optimizer: Optimizer | None = None,
    ) -> None:
        self._setup(optimizer, milestones=list(milestones), gamma=gamma, last_epoch=last_epoch)

    def _construct(self, milestones: list[int], gamma: float, last_epoch: int) -> None:
        self.milestones = Counter(milestones)
        self.gamma = gamma
        self._base_init(last_epoch)

    def get_lr(self) -> list[Any]:
        if self.last_epoch not in self.milestones:
            return group_values(self.optimizer, "lr")
        return [g["lr"] * self.gamma ** self.milestones[self.last_epoch] for g in self.optimizer.param_groups]

    def _closed_form(self) -> list[Any]:
        milestones = sorted(self.milestones.elements())
        return [
            base_lr * self.gamma ** bisect_right(milestones, self.last_epoch) for base_lr in self.base_lrs
        ]


class ConstantLR(LRScheduler):
    """``lr * factor`` until step ``total_iters``, then the lr divided back by ``factor``."""

    has_closed_form = True

    def __init__(
        self,
        factor: float = 1.0 / 3,
        total_iters: int = 5,
        last_epoch: int = -1,
        *,
        optimizer: Optimizer | None = None,
    ) -> None:
        self._setup(optimizer, factor=factor, total_iters=total_iters, last_epoch=last_epoch)

    def _construct(self, factor: float, total_iters: int, last_epoch: int) -> None:
        if factor > 1.0 or factor < 0:
            raise ScheduleConfigError(
                "Constant multiplicative factor expected to be between 0 and 1.", "ValueError"
            )
        self.factor = factor
        self.total_iters = total_iters
        self._base_init(last_epoch)

    def get_lr(self) -> list[Any]:
        if self.last_epoch == 0:
            return [g["lr"] * self.factor for g in self.optimizer.param_groups]
        if self.last_epoch != self.total_iters:
            return group_values(self.optimizer, "lr")
        return [g["lr"] * (1.0 / self.factor) for g in self.optimizer.param_groups]

    def _closed_form(self) -> list[Any]:
        return [
            base_lr * (self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor))
            for base_lr in self.base_lrs
        ]


class LinearLR(LRScheduler):
    """The lr factor moves linearly from ``start_factor`` to ``end_factor`` over ``total_iters`` steps (a
    warm-up)."""

    has_closed_form = True

    def __init__(
        self,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
        *,
        optimizer: Optimizer | None = None,
    ) -> None:
        self._setup(
            optimizer,
            start_factor=start_factor,
            end_factor=end_factor,
            total_iters=total_iters,
            last_epoch=last_epoch,
        )

    def _construct(self, start_factor: float, end_factor: float, total_iters: int, last_epoch: int) -> None:
        if start_factor > 1.0 or start_factor <= 0:
            raise ScheduleConfigError(
                "Starting multiplicative factor expected to be greater than 0 and less or equal to 1.",
                "ValueError",
            )
        if end_factor > 1.0 or end_factor < 0:
            raise ScheduleConfigError(
                "Ending multiplicative factor expected to be between 0 and 1.", "ValueError"
            )
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        self._base_init(last_epoch)

    def get_lr(self) -> list[Any]:
        if self.last_epoch == 0:
            return [g["lr"] * self.start_factor for g in self.optimizer.param_groups]
        if self._is_initial or self.last_epoch > self.total_iters:
            return group_values(self.optimizer, "lr")
        span = self.end_factor - self.start_factor
        ratio = 1.0 + span / (self.total_iters * self.start_factor + (self.last_epoch - 1) * span)
        return [g["lr"] * ratio for g in self.optimizer.param_groups]

    def _closed_form(self) -> list[Any]:
        span = self.end_factor - self.start_factor
        factor = self.start_factor + span * min(self.total_iters, self.last_epoch) / self.total_iters
        return [base_lr * factor for base_lr in self.base_lrs]


class ExponentialLR(LRScheduler):
    """``lr * gamma`` at every step."""

    has_closed_form = True

    def __init__(self, gamma: float, last_epoch: int = -1, *, optimizer: Optimizer | None = None) -> None:
        self._setup(optimizer, gamma=gamma, last_epoch=last_epoch)

    def _construct(self, gamma: float, last_epoch: int) -> None:
        self.gamma = gamma
        self._base_init(last_epoch)

    def get_lr(self) -> list[Any]:
        if self._is_initial:
            return group_values(self.optimizer, "lr")
        return [g["lr"] * self.gamma for g in self.optimizer.param_groups]

    def _closed_form(self) -> list[Any]:
        return [base_lr * self.gamma**self.last_epoch for base_lr in self.base_lrs]


class PolynomialLR(LRScheduler):
    """``initial_lr * (1 - t / total_iters) ** power``, reaching 0 at ``total_iters``."""

    has_closed_form = True

    def __init__(
        self,
        total_iters: int = 5,
        power: float = 1.0,
        last_epoch: int = -1,
        *,
        optimizer: Optimizer | None = None,
    ) -> None:
        self._setup(optimizer, total_iters=total_iters, power=power, last_epoch=last_epoch)

    def _construct(self, total_iters: int, power: float, last_epoch: int) -> None:
        self.total_iters = total_iters
        self.power = power
        self._base_init(last_epoch)

    def get_lr(self) -> list[Any]:
        if self._is_initial or self.last_epoch > self.total_iters:
            return group_values(self.optimizer, "lr")
        t, n = self.last_epoch, self.total_iters
        decay = ((1.0 - t / n) / (1.0 - (t - 1) / n)) ** self.power
        if isinstance(decay, complex):
            raise TorchRaises(
                "TypeError", "PolynomialLR's decay factor is complex (a negative base to a fractional power)"
            )
        return [g["lr"] * decay for g in self.optimizer.param_groups]

    def _closed_form(self) -> list[Any]:
        factor = (1.0 - min(self.total_iters, self.last_epoch) / self.total_iters) ** self.power
        return [base_lr * factor for base_lr in self.base_lrs]
