"""The progress bar: on a terminal's stderr only, never on stdout."""

from __future__ import annotations

import io
import sys

import pytest

from plateau_forensics import progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_silent_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with progress.bar(10, "row") as b:
        b.update(4)
        assert b.n == 4
    assert sys.stderr.getvalue() == ""


def test_tqdm_on_a_terminal_after_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    tqdm = pytest.importorskip("tqdm")
    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    b = progress.bar(10, "row", "writing")
    assert isinstance(b, tqdm.tqdm) and b.delay == 1.0 and b.fp is not sys.stdout
    b.update(10)
    b.close()
