"""The annealing and cyclic schedulers: CosineAnnealingLR, CosineAnnealingWarmRestarts, CyclicLR, OneCycleLR.

Float operations follow torch 2.13 term by term (``math.cos(L * math.pi / T)`` and ``math.cos(math.pi * L /
T)`` are different numbers, and torch uses both)."""

from __future__ import annotations

import math
from typing import Any, Literal

from plateau_forensics.schedules.base import (
    HIDDEN_KEYS,
    LRScheduler,
    clone_tree,
    format_param,
    group_values,
    set_group_value,
    strict_zip,
)
from plateau_forensics.schedules.errors import ScheduleConfigError, TorchRaises
from plateau_forensics.schedules.optimizer import Optimizer


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from the initial lr to ``eta_min`` over ``T_max`` steps (and back up after, no
    restart)."""

    has_closed_form = True

    def __init__(
        self,
        T_max: int,
        eta_min: float = 0.0,
        last_epoch: int = -1,
        *,  # noqa: N803 (torch's names)
        optimizer: Optimizer | None = None,
    ) -> None:
        self._setup(optimizer, T_max=T_max, eta_min=eta_min, last_epoch=last_epoch)

    def _construct(self, T_max: int, eta_min: float, last_epoch: int) -> None:  # noqa: N803
        self.T_max = T_max
        self.eta_min = eta_min
        self._base_init(last_epoch)

    def get_lr(self) -> list[Any]:
        groups = self.optimizer.param_groups
        L, T, eta_min = self.last_epoch, self.T_max, self.eta_min  # noqa: N806
        if self._is_initial:
            return group_values(self.optimizer, "lr")
        if self._step_count == 1 and L > 0:
            return [
                eta_min + (base_lr - eta_min) * (1 + math.cos(L * math.pi / T)) / 2
                for base_lr, _ in strict_zip(self.base_lrs, groups)
            ]
        if (L - 1 - T) % (2 * T) == 0:
            return [
                g["lr"] + (base_lr - eta_min) * (1 - math.cos(math.pi / T)) / 2
                for base_lr, g in strict_zip(self.base_lrs, groups)
            ]
        ratio = (1 + math.cos(math.pi * L / T)) / (1 + math.cos(math.pi * (L - 1) / T))
        return [ratio * (g["lr"] - eta_min) + eta_min for g in groups]

    def _closed_form(self) -> list[Any]:
        c = 1 + math.cos(math.pi * self.last_epoch / self.T_max)
        return [self.eta_min + (base_lr - self.eta_min) * c / 2 for base_lr in self.base_lrs]


class CosineAnnealingWarmRestarts(LRScheduler):
    """SGDR: cosine annealing from the initial lr to ``eta_min`` over ``T_0`` steps, restarting with periods
    multiplied by ``T_mult``. ``step(epoch)`` takes fractional epochs (per-batch stepping)."""

    T_cur: Any  # an int, or a float after a fractional step(epoch)
    T_i: Any

    def __init__(
        self,
        T_0: int,
        T_mult: int = 1,
        eta_min: float = 0.0,
        last_epoch: int = -1,
        *,  # noqa: N803
        optimizer: Optimizer | None = None,
    ) -> None:
        self._setup(optimizer, T_0=T_0, T_mult=T_mult, eta_min=eta_min, last_epoch=last_epoch)

    def _construct(self, T_0: int, T_mult: int, eta_min: float, last_epoch: int) -> None:  # noqa: N803
        if T_0 <= 0 or not isinstance(T_0, int):
            raise ScheduleConfigError(f"Expected positive integer T_0, but got {T_0}", "ValueError")
        if T_mult < 1 or not isinstance(T_mult, int):
            raise ScheduleConfigError(f"Expected integer T_mult >= 1, but got {T_mult}", "ValueError")
        if not isinstance(eta_min, (float, int)):
            raise ScheduleConfigError(
                f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}", "ValueError"
            )
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur = last_epoch
        self._base_init(last_epoch)

    def get_lr(self) -> list[Any]:
        c = 1 + math.cos(math.pi * self.T_cur / self.T_i)
        return [self.eta_min + (base_lr - self.eta_min) * c / 2 for base_lr in self.base_lrs]

    def _step(self, epoch: float | None) -> None:
        # torch overrides step(): no _step_count, no order warning, its own epoch arithmetic
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        else:
            if epoch < 0:
                raise TorchRaises("ValueError", f"Expected non-negative epoch, but got {epoch}")
            if epoch >= self.T_0:
                if self.T_mult == 1:
                    self.T_cur = epoch % self.T_0
                else:
                    n = int(math.log((epoch / self.T_0 * (self.T_mult - 1) + 1), self.T_mult))
                    self.T_cur = epoch - self.T_0 * (self.T_mult**n - 1) / (self.T_mult - 1)
                    self.T_i = self.T_0 * self.T_mult**n
            else:
                self.T_i = self.T_0
                self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        self._get_lr_called_within_step = True
        try:
            values = self.get_lr()
        finally:
            self._get_lr_called_within_step = False
        for group, lr in strict_zip(self.optimizer.param_groups, values):
            set_group_value(group, "lr", lr)
        self._last_lr = group_values(self.optimizer, "lr")


CyclicMode = Literal["triangular", "triangular2", "exp_range"]


class CyclicLR(LRScheduler):
    """The lr cycles between ``base_lr`` and ``max_lr`` (``step_size_up`` steps up, ``step_size_down`` down);
    ``triangular2`` halves the amplitude every cycle, ``exp_range`` scales it by ``gamma ** iteration``.
    Momentum (or Adam's beta1) cycles inversely when ``cycle_momentum``."""

    def __init__(
        self,
        base_lr: float | list[float],
        max_lr: float | list[float],
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: CyclicMode = "triangular",
        gamma: float = 1.0,
        scale_fn: Any = None,
        scale_mode: Literal["cycle", "iterations"] = "cycle",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.8,
        max_momentum: float | list[float] = 0.9,
        last_epoch: int = -1,
        *,
        optimizer: Optimizer | None = None,
    ) -> None:
        self._setup(
            optimizer,
            base_lr=base_lr,
            max_lr=max_lr,
            step_size_up=step_size_up,
            step_size_down=step_size_down,
            mode=mode,
            gamma=gamma,
            scale_fn=scale_fn,
            scale_mode=scale_mode,
            cycle_momentum=cycle_momentum,
            base_momentum=base_momentum,
            max_momentum=max_momentum,
            last_epoch=last_epoch,
        )

    def _construct(
        self,
        base_lr: Any,
        max_lr: Any,
        step_size_up: Any,
        step_size_down: Any,
        mode: str,
        gamma: float,
        scale_fn: Any,
        scale_mode: str,
        cycle_momentum: bool,
        base_momentum: Any,
        max_momentum: Any,
        last_epoch: int,
    ) -> None:
        from plateau_forensics.schedules.expr import as_callable

        opt = self.optimizer
        base_lrs = format_param("base_lr", opt, base_lr)
        if last_epoch == -1:
            for lr, group in strict_zip(base_lrs, opt.param_groups):
                set_group_value(group, "lr", lr)
        self.max_lrs = format_param("max_lr", opt, max_lr)
        up = float(step_size_up)
        down = float(step_size_down) if step_size_down is not None else up
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise ScheduleConfigError("mode is invalid and scale_fn is None", "ValueError")
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_custom = as_callable(scale_fn, "x") if scale_fn is not None else None
        self.scale_mode = scale_mode
        self._init_scale_fn()
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            if "momentum" not in opt.defaults and "betas" not in opt.defaults:
                raise ScheduleConfigError(
                    "optimizer must support momentum or beta1 with `cycle_momentum` option enabled",
                    "ValueError",
                )
            self.use_beta1 = "betas" in opt.defaults
            self.base_momentums = format_param("base_momentum", opt, base_momentum)
            self.max_momentums = format_param("max_momentum", opt, max_momentum)
            if last_epoch == -1:
                for m_mom, b_mom, group in strict_zip(
                    self.max_momentums, self.base_momentums, opt.param_groups
                ):
                    if self.use_beta1:
                        group["betas"] = (m_mom, *group["betas"][1:])
                    else:
                        group["momentum"] = m_mom
                    group["max_momentum"] = m_mom
                    group["base_momentum"] = b_mom
        self._base_init(last_epoch)
        self.base_lrs = base_lrs

    def _init_scale_fn(self) -> None:
        if self._scale_fn_custom is not None:
            return
        if self.mode == "triangular":
            self._scale_fn_ref = _triangular
            self.scale_mode = "cycle"
        elif self.mode == "triangular2":
            self._scale_fn_ref = _triangular2
            self.scale_mode = "cycle"
        elif self.mode == "exp_range":
            gamma = self.gamma
            self._scale_fn_ref = lambda x: gamma**x
            self.scale_mode = "iterations"

    def scale_fn(self, x: float) -> float:
        """The amplitude scale at ``x`` (the cycle number or the iteration, per ``scale_mode``)."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)  # type: ignore[no-any-return]
        return self._scale_fn_ref(x)

    def get_lr(self) -> list[Any]:
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        if x <= self.step_ratio:
            scale_factor = x / self.step_ratio
        else:
            scale_factor = (x - 1) / (self.step_ratio - 1)
        at = cycle if self.scale_mode == "cycle" else self.last_epoch
        lrs = []
        for base_lr, max_lr in strict_zip(self.base_lrs, self.max_lrs):
            base_height = (max_lr - base_lr) * scale_factor
            lrs.append(base_lr + base_height * self.scale_fn(at))
        if self.cycle_momentum:
            momentums = []
            for base_m, max_m in strict_zip(self.base_momentums, self.max_momentums):
                base_height = (max_m - base_m) * scale_factor
                momentums.append(max_m - base_height * self.scale_fn(at))
            for group, momentum in strict_zip(self.optimizer.param_groups, momentums):
                if self.use_beta1:
                    group["betas"] = (momentum, *group["betas"][1:])
                else:
                    group["momentum"] = momentum
        return lrs

    def _torch_dict(self) -> dict[str, Any]:
        from plateau_forensics.schedules.basic import saved_callable

        d = super()._torch_dict()
        d.pop("_scale_fn_ref", None)
        fn = d.pop("_scale_fn_custom")
        d["_scale_fn_custom"] = saved_callable(fn) if fn is not None else None
        return d

    def state_dict(self) -> dict[str, Any]:
        """torch's ``state_dict()``: ``_scale_fn_ref`` dropped, ``_scale_fn_custom`` None for a function."""
        self._require_bound()
        return clone_tree(self._torch_dict())  # type: ignore[no-any-return]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict`` (the scale function is rebuilt from ``mode``)."""
        self._require_bound()
        saved = state_dict.get("_scale_fn_custom")
        custom = self.__dict__.get("_scale_fn_custom")
        skip = ("_scale_fn_custom", *HIDDEN_KEYS)
        self.__dict__.update(clone_tree({k: v for k, v in state_dict.items() if k not in skip}))
        self._scale_fn_custom = custom
        if saved is not None and custom is not None:
            custom.__dict__.update(saved)
        self._init_scale_fn()


def _triangular(x: float) -> float:
    return 1.0


def _triangular2(x: float) -> float:
    return 1 / (2.0 ** (x - 1))  # type: ignore[no-any-return]


class OneCycleLR(LRScheduler):
    """The 1cycle policy: up from ``max_lr / div_factor`` to ``max_lr`` over ``pct_start`` of ``total_steps``,
    then down to ``initial_lr / final_div_factor`` (cosine or linear; ``three_phase`` comes back down first).
    Stepping past ``total_steps`` raises, as in torch."""

    def __init__(
        self,
        max_lr: float | list[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.85,
        max_momentum: float | list[float] = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
        *,
        optimizer: Optimizer | None = None,
    ) -> None:
        self._setup(
            optimizer,
            max_lr=max_lr,
            total_steps=total_steps,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            pct_start=pct_start,
            anneal_strategy=anneal_strategy,
            cycle_momentum=cycle_momentum,
            base_momentum=base_momentum,
            max_momentum=max_momentum,
            div_factor=div_factor,
            final_div_factor=final_div_factor,
            three_phase=three_phase,
            last_epoch=last_epoch,
        )

    def _construct(
        self,
        max_lr: Any,
        total_steps: Any,
        epochs: Any,
        steps_per_epoch: Any,
        pct_start: Any,
        anneal_strategy: str,
        cycle_momentum: bool,
        base_momentum: Any,
        max_momentum: Any,
        div_factor: float,
        final_div_factor: float,
        three_phase: bool,
        last_epoch: int,
    ) -> None:
        opt = self.optimizer
        if total_steps is not None:
            if total_steps <= 0 or not isinstance(total_steps, int):
                raise ScheduleConfigError(
                    f"Expected positive integer total_steps, but got {total_steps}", "ValueError"
                )
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            if not isinstance(epochs, int) or epochs <= 0:
                raise ScheduleConfigError(f"Expected positive integer epochs, but got {epochs}", "ValueError")
            if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
                raise ScheduleConfigError(
                    f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}", "ValueError"
                )
            self.total_steps = epochs * steps_per_epoch
        else:
            raise ScheduleConfigError(
                "You must define either total_steps OR (epochs AND steps_per_epoch)", "ValueError"
            )
        n = self.total_steps
        if three_phase:
            self._schedule_phases = [
                _phase(float(pct_start * n) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                _phase(float(2 * pct_start * n) - 2, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
                _phase(n - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum"),
            ]
        else:
            self._schedule_phases = [
                _phase(float(pct_start * n) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                _phase(n - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"),
            ]
        if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
            raise ScheduleConfigError(
                f"Expected float between 0 and 1 pct_start, but got {pct_start}", "ValueError"
            )
        if anneal_strategy not in ("cos", "linear"):
            raise ScheduleConfigError(
                f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}",
                "ValueError",
            )
        self._anneal_func_type = anneal_strategy
        max_lrs = format_param("max_lr", opt, max_lr)
        if last_epoch == -1:
            for idx, group in enumerate(opt.param_groups):
                group["initial_lr"] = max_lrs[idx] / div_factor
                group["max_lr"] = max_lrs[idx]
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            if "momentum" not in opt.defaults and "betas" not in opt.defaults:
                raise ScheduleConfigError(
                    "optimizer must support momentum or beta1 with `cycle_momentum` option enabled",
                    "ValueError",
                )
            self.use_beta1 = "betas" in opt.defaults
            max_moms = format_param("max_momentum", opt, max_momentum)
            base_moms = format_param("base_momentum", opt, base_momentum)
            if last_epoch == -1:
                for m_mom, b_mom, group in strict_zip(max_moms, base_moms, opt.param_groups):
                    if self.use_beta1:
                        group["betas"] = (m_mom, *group["betas"][1:])
                    else:
                        group["momentum"] = m_mom
                    group["max_momentum"] = m_mom
                    group["base_momentum"] = b_mom
        self._base_init(last_epoch)

    def _anneal(self, start: Any, end: Any, pct: float) -> Any:
        if self._anneal_func_type == "cos":
            cos_out = math.cos(math.pi * pct) + 1
            return end + (start - end) / 2.0 * cos_out
        if self._anneal_func_type == "linear":
            return (end - start) * pct + start
        raise TorchRaises("ValueError", f"Unknown _anneal_func_type: {self._anneal_func_type}")

    def get_lr(self) -> list[Any]:
        step_num = self.last_epoch
        if step_num > self.total_steps:
            raise TorchRaises(
                "ValueError",
                f"Tried to step {step_num} times. The specified number of total steps is {self.total_steps}",
            )
        lrs = []
        phases = self._schedule_phases
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, phase in enumerate(phases):
                end_step = phase["end_step"]
                if step_num <= end_step or i == len(phases) - 1:
                    pct = (step_num - start_step) / (end_step - start_step)
                    lr = self._anneal(_key(group, phase["start_lr"]), _key(group, phase["end_lr"]), pct)
                    if self.cycle_momentum:
                        mom = self._anneal(
                            _key(group, phase["start_momentum"]), _key(group, phase["end_momentum"]), pct
                        )
                    break
                start_step = phase["end_step"]
            lrs.append(lr)
            if self.cycle_momentum:
                if self.use_beta1:
                    group["betas"] = (mom, *group["betas"][1:])
                else:
                    group["momentum"] = mom
        return lrs


def _key(group: dict[str, Any], key: str) -> Any:
    if key not in group:  # a group added after construction has no max_lr / initial_lr / min_lr
        raise TorchRaises("KeyError", repr(key))
    return group[key]


def _phase(end_step: float, start_lr: str, end_lr: str, start_m: str, end_m: str) -> dict[str, Any]:
    return {
        "end_step": end_step,
        "start_lr": start_lr,
        "end_lr": end_lr,
        "start_momentum": start_m,
        "end_momentum": end_m,
    }
