"""plateau_forensics: replay and explain torch's ReduceLROnPlateau from checkpoints and loss logs.

Importing this package loads neither torch nor pandas; they load inside the functions that need them.
"""

from __future__ import annotations

from plateau_forensics.api import replay, trace
from plateau_forensics.diagnose import Finding
from plateau_forensics.errors import (
    AmbiguousSchedulerState,
    CheckpointError,
    ConfigError,
    ForensicsError,
    LossLogError,
    SchedulerStateNotFound,
)
from plateau_forensics.loader import Checkpoint, load_checkpoint
from plateau_forensics.losses import LossLog, read_losses
from plateau_forensics.replay import Event, Forecast, Step, Trace
from plateau_forensics.state import PlateauConfig, PlateauState


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("plateau-forensics")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0+unknown"


__version__ = _version()

__all__ = [
    "AmbiguousSchedulerState", "Checkpoint", "CheckpointError", "ConfigError", "Event", "Finding", "Forecast",
    "ForensicsError", "LossLog", "LossLogError", "PlateauConfig", "PlateauState", "SchedulerStateNotFound",
    "Step", "Trace", "__version__", "load_checkpoint", "read_losses", "replay", "trace",
]
