"""SequentialLR and ChainedScheduler: schedulers of one optimizer run one after another or all at every step.

Children may be specs (bound here, in list order, on the same optimizer: what building them just before the
wrapper does) or schedulers already bound to that optimizer.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from plateau_forensics.schedules.base import (
    HIDDEN_KEYS,
    LRScheduler,
    clone_tree,
    group_values,
    set_group_value,
)
from plateau_forensics.schedules.errors import ScheduleConfigError, TorchRaises
from plateau_forensics.schedules.optimizer import Optimizer


def _bind_children(owner: str, schedulers: Sequence[Any], optimizer: Optimizer) -> list[LRScheduler]:
    if len(schedulers) < 1:
        raise ScheduleConfigError(
            f"{owner} expects at least one scheduler, but got no scheduler.", "ValueError"
        )
    bound = []
    for idx, s in enumerate(schedulers):
        if not isinstance(s, LRScheduler):
            raise ScheduleConfigError(
                f"{owner} at index {idx} should have `optimizer` as its attribute.", "TypeError"
            )
        bound.append(s if s.bound else s.bind(optimizer))
    return bound


def _check_same_optimizer(owner: str, schedulers: list[LRScheduler], optimizer: Any) -> None:
    for idx, s in enumerate(schedulers):
        if s.optimizer is not optimizer:
            raise ScheduleConfigError(
                f"{owner} expects all schedulers to belong to the same optimizer, but got scheduler "
                f"{type(s).__name__} at index {idx} has {s.optimizer}, which is different from Optimizer.",
                "ValueError",
            )


class _Wrapper(LRScheduler):
    """The state_dict protocol both wrappers share: children's states last, under ``_schedulers``."""

    _schedulers: list[LRScheduler]

    def _torch_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in super()._torch_dict().items() if k != "_schedulers"}
        d["_schedulers"] = [s._torch_dict() for s in self._schedulers]
        return d

    def state_dict(self) -> dict[str, Any]:
        """torch's ``state_dict()``: the wrapper's attributes, then each child's ``state_dict()``."""
        self._require_bound()
        d = clone_tree({k: v for k, v in self._torch_dict().items() if k != "_schedulers"})
        d["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return d  # type: ignore[no-any-return]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``: the wrapper's attributes, then each child's saved state."""
        self._require_bound()
        children = state_dict.get("_schedulers", [])
        skip = ("_schedulers", *HIDDEN_KEYS)
        self.__dict__.update(clone_tree({k: v for k, v in state_dict.items() if k not in skip}))
        for s, saved in zip(self._schedulers, children, strict=False):
            s.load_state_dict(saved)


class SequentialLR(_Wrapper):
    """``schedulers[i]`` drives the lr between ``milestones[i-1]`` and ``milestones[i]``; at a milestone the
    next one restarts from step 0 (its closed form where it has one), e.g. a LinearLR warm-up, then cosine."""

    def __init__(
        self,
        schedulers: Sequence[LRScheduler],
        milestones: Sequence[int],
        last_epoch: int = -1,
        *,
        optimizer: Optimizer | None = None,
    ) -> None:
        self._setup(
            optimizer, schedulers=list(schedulers), milestones=list(milestones), last_epoch=last_epoch
        )

    def _construct(self, schedulers: list[Any], milestones: list[int], last_epoch: int) -> None:
        opt = self.optimizer
        children = _bind_children("SequentialLR", schedulers, opt)
        _check_same_optimizer("SequentialLR", children, opt)
        if len(milestones) != len(children) - 1:
            raise ScheduleConfigError(
                "Sequential Schedulers expects number of schedulers provided to be one more than the number "
                f"of milestone points, but got number of schedulers {len(children)} and the number of "
                f"milestones to be equal to {len(milestones)}",
                "ValueError",
            )
        self._schedulers = children
        self._milestones = list(milestones)
        self.last_epoch = last_epoch + 1
        for group in opt.param_groups:
            if "initial_lr" not in group:
                raise TorchRaises("KeyError", "'initial_lr'")
            set_group_value(group, "lr", group["initial_lr"])
        self._recursive_undo(self)
        idx = bisect_right(self._milestones, 0)
        self._schedulers[idx]._initial_step()
        self._last_lr = self._schedulers[idx].get_last_lr()

    def _recursive_undo(self, sched: Any) -> None:
        if hasattr(sched, "_schedulers"):
            for s in sched._schedulers:
                self._recursive_undo(s)
        elif hasattr(sched, "last_epoch"):
            sched.last_epoch -= 1

    def _step(self, epoch: float | None) -> None:
        if epoch is not None:
            raise TorchRaises("TypeError", "SequentialLR.step() takes no epoch argument")
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        child = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            child._update_lr(0)
        else:
            child._step(None)
        self._last_lr = child.get_last_lr()


class ChainedScheduler(_Wrapper):
    """Every child steps at every step, in order, each on the lr the previous one left (e.g. a constant
    warm-up factor times an exponential decay)."""

    def __init__(self, schedulers: Sequence[LRScheduler], *, optimizer: Optimizer | None = None) -> None:
        self._setup(optimizer, schedulers=list(schedulers))

    def _construct(self, schedulers: list[Any]) -> None:
        opt = self.optimizer
        children = _bind_children("ChainedScheduler", schedulers, opt)
        _check_same_optimizer("ChainedScheduler", children, opt)
        self._schedulers = children
        self._last_lr = group_values(children[-1].optimizer, "lr")

    def _step(self, epoch: float | None) -> None:
        if epoch is not None:
            raise TorchRaises("TypeError", "ChainedScheduler.step() takes no epoch argument")
        for s in self._schedulers:
            s._step(None)
        self._last_lr = group_values(self._schedulers[-1].optimizer, "lr")
