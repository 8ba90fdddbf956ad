"""Shared pytest setup: the torch-oracle helpers on sys.path, sample paths, and --update-goldens."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_checkpoints"
GOLDEN = Path(__file__).parent / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register --update-goldens: rewrite tests/golden/* from the current output (review the diff!)."""
    parser.addoption("--update-goldens", action="store_true", default=False, help="rewrite golden files")


@pytest.fixture
def update_goldens(request: pytest.FixtureRequest) -> bool:
    """True when the run should rewrite golden files instead of comparing."""
    return bool(request.config.getoption("--update-goldens"))


@pytest.fixture
def in_root(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from the repository root so that sample paths print the same on every machine."""
    monkeypatch.chdir(ROOT)
    return ROOT
