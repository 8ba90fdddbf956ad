"""Drive real torch ReduceLROnPlateau schedulers; the oracle every engine test compares against.

Kept apart from the tests so that each test states only its scenario and its assertion.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import torch


def make_scheduler(
    lrs: Sequence[float], kwargs: dict[str, Any], lr_dtype: torch.dtype | None = None
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.ReduceLROnPlateau]:
    """A real SGD optimizer with one param group per lr (tensor lrs when ``lr_dtype``) and its scheduler."""
    groups = []
    for lr in lrs:
        value = torch.tensor(lr, dtype=lr_dtype) if lr_dtype is not None else lr
        groups.append({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": value})
    opt = torch.optim.SGD(groups, lr=groups[0]["lr"])
    return opt, torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kwargs)


def lrs_of(opt: torch.optim.Optimizer) -> tuple[float, ...]:
    """Every group's lr as a Python float, as ``_reduce_lr`` reads it."""
    return tuple(float(g["lr"]) for g in opt.param_groups)


def snapshot(opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.ReduceLROnPlateau) -> dict[str, Any]:
    """The fields the replay must reproduce after every step."""
    return {
        "last_epoch": sched.last_epoch,
        "best": float(sched.best),
        "num_bad_epochs": sched.num_bad_epochs,
        "cooldown_counter": sched.cooldown_counter,
        "lr": lrs_of(opt),
        "_last_lr": tuple(float(v) for v in sched._last_lr),
        "min_lrs": tuple(sched.min_lrs),
    }


def same(a: float, b: float) -> bool:
    """Bit-level float equality: NaN equals NaN, 0.0 differs from -0.0."""
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def same_tuple(a: Sequence[float], b: Sequence[float]) -> bool:
    """``same`` element-wise."""
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))


def assert_same(a: Any, b: Any, where: str = "obj") -> None:
    """Recursive equality: same types and key order, tensors ``torch.equal``, floats bit-exact."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        assert torch.equal(a, b), where
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b), f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, where
