"""Hostile-input suite setup: build every case once, run them through the driver in two subprocesses."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
if str(HERE) not in sys.path:
    sys.path.append(str(HERE))  # payloads, fuzz, hostile_runner: appended, so no name here shadows tests/

import payloads  # noqa: E402  (needs HERE on sys.path)
from hostile_runner import run_parallel  # noqa: E402


@pytest.fixture(scope="session")
def hostile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding ``files/`` (every case) and an empty ``canary/``."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "files").mkdir()
    (root / "canary").mkdir()
    return root


@pytest.fixture(scope="session")
def cases(hostile_dir: Path) -> dict[str, payloads.Case]:
    """Every case, written to disk."""
    return payloads.build_all(hostile_dir / "files", hostile_dir / "canary")


@pytest.fixture(scope="session")
def outcomes(hostile_dir: Path, cases: dict[str, payloads.Case]) -> dict[str, dict[str, Any]]:
    """The driver's result per case name."""
    files = [{"path": str(hostile_dir / "files" / name), "cli": case.cli} for name, case in cases.items()]
    by_path = run_parallel(files, hostile_dir / "canary", hostile_dir, "hostile")
    return {Path(p).name: row for p, row in by_path.items()}
