"""Typed errors raised by the library; only the CLI turns them into messages and exit codes.

Every message is one line a user can act on: it names the file, key, row or column involved.
"""

from __future__ import annotations


class ForensicsError(Exception):
    """Base class of every error this package raises on bad input."""


class CheckpointError(ForensicsError):
    """The checkpoint file is missing, unreadable, or not something ``torch.save`` wrote."""


class SchedulerStateNotFound(CheckpointError):
    """No ReduceLROnPlateau-shaped state was found in the checkpoint."""


class AmbiguousSchedulerState(CheckpointError):
    """Several plateau states were found; the user must choose one with ``--scheduler``."""

    def __init__(self, message: str, candidates: list[str]) -> None:
        super().__init__(message)
        self.candidates = candidates


class LossLogError(ForensicsError):
    """The loss log cannot be used: no metric column, a non-numeric value, an unreadable file."""


class ConfigError(ForensicsError):
    """Hyperparameters or options that torch itself would reject, or that contradict each other."""


class CheckpointValueError(CheckpointError):
    """A value saved in the checkpoint is one torch's ``ReduceLROnPlateau`` cannot hold (a bad file, exit 1).

    Raised instead of ``ConfigError`` for values read from a file, so the CLI reports a bad input, not a
    usage error; the message names the key.
    """


class CheckpointLimitError(CheckpointError):
    """The checkpoint exceeds a reader limit (nesting, size, objects): far above what schedulers need."""


class RemoteError(ForensicsError):
    """A checkpoint or log URL (``s3://``, ``https://``, ...) cannot be read: no such bucket or object, not a
    file, a scheme no installed fsspec filesystem serves, or the ``[s3]`` extra missing (exit 1)."""


class RemoteUnavailable(RemoteError):
    """The object store could not be asked: network failure, timeout, no credentials, access denied (exit 4;
    the object itself may be fine: retry, or fix the credentials)."""


class RecordingError(LossLogError):
    """A recording written by ``plateau_forensics.record`` cannot be read: a bad line, or no header."""


class ResumeError(ForensicsError):
    """``check_resume`` found a resume mistake; ``problems`` lists each one (``code``, ``message``, ``fix``)."""

    def __init__(self, message: str, problems: list[object]) -> None:
        super().__init__(message)
        self.problems = problems
