"""Typed errors of the scheduler engines: a constructor argument torch rejects, an expression the evaluator
refuses, and the exception torch itself raises at a step (reproduced, never a traceback)."""

from __future__ import annotations

from plateau_forensics.errors import ConfigError, ForensicsError


class ScheduleConfigError(ConfigError):
    """A scheduler argument torch's constructor rejects (with torch's message), or a bad ``--schedule`` text.

    Attributes:
        kind: the exception torch's constructor raises for it (``"ValueError"``, ``"TypeError"``), or None
            when torch has no such check (a text that is not a schedule).
    """

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind


class ExpressionError(ConfigError):
    """An lr expression (``"0.95 ** epoch"``) the small evaluator cannot or will not evaluate."""


class TorchRaises(ForensicsError):
    """torch raises here: the exception type it raises and its message, e.g. OneCycleLR's
    ``ValueError: Tried to step 101 times`` or ReduceLROnPlateau's ``RuntimeError`` after a group was added.

    Attributes:
        kind: the name of the exception torch raises (``"ValueError"``, ``"KeyError"``, ...).
        detail: torch's message.
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"torch raises {kind}: {detail}")
        self.kind = kind
        self.detail = detail
