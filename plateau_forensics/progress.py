"""Progress bars on stderr for work that takes more than a second, silent when stderr is not a terminal.

``bar(total, unit)`` gives a tqdm bar that appears only after a second (``delay=1``), or a no-op object with the
same ``update``/``close``/context-manager methods when stderr is redirected or tqdm is not installed. Output on
stdout is never touched, so a redirected ``--format json > out.json`` stays clean. ``PF_PROGRESS_DELAY`` (seconds,
a number >= 0) changes the delay: 0 shows the bar at once (the tests use it, so they do not depend on how fast the
machine is).
"""

from __future__ import annotations

import os
import sys
from typing import Any

#: Environment variable: seconds before a bar appears (default ``DEFAULT_DELAY``).
DELAY_ENV = "PF_PROGRESS_DELAY"
DEFAULT_DELAY = 1.0


def delay() -> float:
    """The delay before a bar appears: ``PF_PROGRESS_DELAY`` if it is a number from 0 to 3600, else 1 s."""
    try:
        value = float(os.environ.get(DELAY_ENV, DEFAULT_DELAY))
    except ValueError:
        return DEFAULT_DELAY
    return value if 0 <= value <= 3600 else DEFAULT_DELAY


class _Silent:
    """The bar when there is nothing to show it on."""

    n = 0
    #: nothing is shown: callers may skip counting what they would report to it
    shown = False

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_description(self, desc: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bar(total: int | None, unit: str, desc: str = "") -> Any:
    """A progress bar for ``total`` units on stderr (see the module docstring)."""
    if not sys.stderr.isatty():
        return _Silent()
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a nicety
        return _Silent()
    return tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, leave=False, delay=delay(), dynamic_ncols=True)
