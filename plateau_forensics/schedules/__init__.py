"""Engines for every torch 2.13 ``LRScheduler``, bit-exact, without torch: alone, chained, or stepping the
same optimizer as a ReduceLROnPlateau; their saved states found in checkpoints; the whole lr timeline drawn.

    >>> from plateau_forensics import schedules as S
    >>> t = S.timeline([S.StepLR(step_size=3, gamma=0.1)], epochs=7, lrs=[0.1])
    >>> [round(v[0], 6) for v in t.lrs]
    [0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001]

Each class takes torch's constructor arguments (without the optimizer) and is a *spec* until bound to an
``Optimizer``; ``step()``, ``step(epoch)``, ``get_last_lr()``, ``state_dict()`` and ``load_state_dict()`` then
behave as torch's. Tensor lrs (torch >= 2.10) are ``TensorLR`` values rounded as torch rounds them.
"""

from __future__ import annotations

from plateau_forensics.schedules.base import LRScheduler
from plateau_forensics.schedules.basic import (
    ConstantLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    MultiplicativeLR,
    MultiStepLR,
    PolynomialLR,
    StepLR,
)
from plateau_forensics.schedules.chains import ChainedScheduler, SequentialLR
from plateau_forensics.schedules.checkpoints import FoundScheduler, find_schedulers, restore
from plateau_forensics.schedules.compose import AddParamGroup, ComposedTrace, Stepped, replay_composed
from plateau_forensics.schedules.cyclic import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    OneCycleLR,
)
from plateau_forensics.schedules.errors import ExpressionError, ScheduleConfigError, TorchRaises
from plateau_forensics.schedules.expr import Expression
from plateau_forensics.schedules.optimizer import Optimizer
from plateau_forensics.schedules.spec import parse_schedule, scheduler_classes
from plateau_forensics.schedules.timeline import Change, Timeline, plot_timeline, timeline
from plateau_forensics.schedules.values import TensorLR

__all__ = [
    "AddParamGroup",
    "ChainedScheduler",
    "Change",
    "ComposedTrace",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "ExponentialLR",
    "Expression",
    "ExpressionError",
    "FoundScheduler",
    "LRScheduler",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "MultiplicativeLR",
    "OneCycleLR",
    "Optimizer",
    "PolynomialLR",
    "ScheduleConfigError",
    "SequentialLR",
    "StepLR",
    "Stepped",
    "TensorLR",
    "Timeline",
    "TorchRaises",
    "find_schedulers",
    "parse_schedule",
    "plot_timeline",
    "replay_composed",
    "restore",
    "scheduler_classes",
    "timeline",
]
