"""Progress bars on stderr for work that takes more than a second, silent when stderr is not a terminal.

``bar(total, unit)`` gives a tqdm bar that appears only after a second (``delay=1``), or a no-op object with the
same ``update``/``close``/context-manager methods when stderr is redirected or tqdm is not installed. Output on
stdout is never touched, so a redirected ``--format json > out.json`` stays clean.
"""

from __future__ import annotations

import sys
from typing import Any


class _Silent:
    """The bar when there is nothing to show it on."""

    n = 0

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
    return tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, leave=False, delay=1.0, dynamic_ncols=True)
