"""plateau_forensics: replay and explain torch's ReduceLROnPlateau from checkpoints and loss logs.

The public names load lazily (PEP 562): ``import plateau_forensics`` and ``plateau-trace --help`` cost
almost nothing, and torch/pandas load only inside the functions that need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plateau_forensics.api import replay, trace
    from plateau_forensics.callbacks import hf_callback, keras_callback, lightning_callback
    from plateau_forensics.diagnose import Finding
    from plateau_forensics.engine import Event, Forecast, Step, Trace
    from plateau_forensics.errors import (
        AmbiguousSchedulerState,
        CheckpointError,
        ConfigError,
        ForensicsError,
        LossLogError,
        RecordingError,
        ResumeError,
        SchedulerStateNotFound,
    )
    from plateau_forensics.fit import Fit, fit
    from plateau_forensics.guard import ResumeProblem, ResumeWarning, check_resume
    from plateau_forensics.loader import Checkpoint, load_checkpoint
    from plateau_forensics.losses import LossLog, read_losses
    from plateau_forensics import schedules
    from plateau_forensics.recorder import Recorder, Recording, read_recording, record
    from plateau_forensics.scan import find_runs, scan_run
    from plateau_forensics.schedules import (
        AddParamGroup,
        ChainedScheduler,
        ConstantLR,
        CosineAnnealingLR,
        CosineAnnealingWarmRestarts,
        CyclicLR,
        ExponentialLR,
        LambdaLR,
        LinearLR,
        MultiplicativeLR,
        MultiStepLR,
        OneCycleLR,
        PolynomialLR,
        SequentialLR,
        StepLR,
        Stepped,
    )
    from plateau_forensics.state import PlateauConfig, PlateauState
    from plateau_forensics.sweep import Sweep, sweep
    from plateau_forensics.whatif import Comparison, compare, expand_what_if

_WHERE = {
    "replay": "api", "trace": "api", "Finding": "diagnose",
    "Event": "engine", "Forecast": "engine", "Step": "engine", "Trace": "engine",
    "AmbiguousSchedulerState": "errors", "CheckpointError": "errors", "ConfigError": "errors",
    "ForensicsError": "errors", "LossLogError": "errors", "SchedulerStateNotFound": "errors",
    "Checkpoint": "loader", "load_checkpoint": "loader", "LossLog": "losses", "read_losses": "losses",
    "PlateauConfig": "state", "PlateauState": "state",
    "compare": "whatif", "Comparison": "whatif", "expand_what_if": "whatif",
    "record": "recorder", "Recorder": "recorder", "read_recording": "recorder", "Recording": "recorder",
    "RecordingError": "errors", "ResumeError": "errors", "check_resume": "guard", "ResumeProblem": "guard",
    "ResumeWarning": "guard", "lightning_callback": "callbacks", "hf_callback": "callbacks",
    "keras_callback": "callbacks",
    "sweep": "sweep", "Sweep": "sweep", "fit": "fit", "Fit": "fit", "scan_run": "scan", "find_runs": "scan",
    **dict.fromkeys(("AddParamGroup", "Stepped", "LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR",
                     "ConstantLR", "LinearLR", "ExponentialLR", "PolynomialLR", "CosineAnnealingLR",
                     "CosineAnnealingWarmRestarts", "CyclicLR", "OneCycleLR", "SequentialLR", "ChainedScheduler"),
                    "schedules"),
}
#: subpackages reachable as attributes (``pf.schedules.StepLR``), imported on first use
_SUBMODULES = ("schedules",)

__all__ = [  # static, so linters and type checkers see the lazy names
    "AddParamGroup",
    "AmbiguousSchedulerState",
    "ChainedScheduler",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "ExponentialLR",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "MultiplicativeLR",
    "OneCycleLR",
    "PolynomialLR",
    "SequentialLR",
    "StepLR",
    "Stepped",
    "Checkpoint",
    "CheckpointError",
    "Comparison",
    "ConfigError",
    "Event",
    "Finding",
    "Forecast",
    "Fit",
    "ForensicsError",
    "LossLog",
    "LossLogError",
    "PlateauConfig",
    "PlateauState",
    "Recorder",
    "Recording",
    "RecordingError",
    "ResumeError",
    "ResumeProblem",
    "ResumeWarning",
    "SchedulerStateNotFound",
    "Step",
    "Sweep",
    "Trace",
    "__version__",
    "check_resume",
    "compare",
    "expand_what_if",
    "find_runs",
    "fit",
    "hf_callback",
    "keras_callback",
    "lightning_callback",
    "load_checkpoint",
    "read_losses",
    "read_recording",
    "record",
    "replay",
    "scan_run",
    "schedules",
    "sweep",
    "trace",
]
assert set(__all__) == {*_WHERE, *_SUBMODULES, "__version__"}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("plateau-forensics")
        except PackageNotFoundError:  # a source tree that was not installed
            return "0+unknown"
    if name in _SUBMODULES:
        return importlib.import_module(f"plateau_forensics.{name}")
    if name in _WHERE:
        value = getattr(importlib.import_module(f"plateau_forensics.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'plateau_forensics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
