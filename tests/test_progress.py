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
    monkeypatch.delenv("PF_PROGRESS_DELAY", raising=False)
    tqdm = pytest.importorskip("tqdm")
    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    b = progress.bar(10, "row", "writing")
    assert isinstance(b, tqdm.tqdm) and b.delay == 1.0 and b.fp is not sys.stdout
    b.update(10)
    b.close()


@pytest.mark.parametrize(("value", "want"), [("0", 0.0), ("2.5", 2.5), ("-1", 1.0), ("soon", 1.0), ("1e9", 1.0)])
def test_delay_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, want: float) -> None:
    """PF_PROGRESS_DELAY sets the delay; a value that is not a sane number of seconds keeps the default."""
    pytest.importorskip("tqdm")
    monkeypatch.setenv("PF_PROGRESS_DELAY", value)
    monkeypatch.setattr(sys, "stderr", _Tty())
    b = progress.bar(3, "row")
    assert b.delay == want
    b.close()
