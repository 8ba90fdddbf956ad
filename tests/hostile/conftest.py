"""Hostile-input suite setup: build every case once, run them through the driver in two subprocesses.

The driver prints a ``start`` line before each file, so a crash (a signal) or a hang (the driver's watchdog
ends the process) is pinned to its file; the remaining files are then run in a fresh driver.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import payloads  # noqa: E402  (needs HERE on sys.path)

DRIVER = HERE / "driver.py"
ROOT = HERE.parents[1]


def run_driver(files: list[dict[str, Any]], canary_dir: Path, work: Path, tag: str,
               extra: dict[str, Any] | None = None, script: Path = DRIVER) -> dict[str, dict[str, Any]]:
    """Run the driver over ``files`` until all are done; a file that crashed or hung gets ``{"died": ...}``."""
    results: dict[str, dict[str, Any]] = {}
    pending = list(files)
    round_no = 0
    while pending:
        jobs = work / f"jobs-{tag}-{round_no}.json"
        jobs.write_text(json.dumps({"canary_dir": str(canary_dir), "files": pending, **(extra or {})}))
        proc = subprocess.run([sys.executable, str(script), str(jobs)], capture_output=True, text=True,
                              cwd=ROOT, timeout=600)
        started = None
        for line in proc.stdout.splitlines():
            row = json.loads(line)
            if "start" in row:
                started = row["start"]
            else:
                results[row["path"]] = row
                started = None
        if started is not None:  # the process ended inside this file: a signal, or the watchdog's exit
            results[started] = {"path": started, "died": proc.returncode, "stderr": proc.stderr[-2000:]}
        elif proc.returncode != 0:
            raise RuntimeError(f"driver failed outside any file (exit {proc.returncode}): {proc.stderr[-2000:]}")
        pending = [f for f in pending if f["path"] not in results]
        round_no += 1
    return results


def run_parallel(files: list[dict[str, Any]], canary_dir: Path, work: Path, tag: str,
                 extra: dict[str, Any] | None = None, script: Path = DRIVER) -> dict[str, dict[str, Any]]:
    """Split ``files`` over two drivers (CI has two cores) and merge their results."""
    from concurrent.futures import ThreadPoolExecutor

    halves = [files[0::2], files[1::2]]
    with ThreadPoolExecutor(2) as pool:
        parts = list(pool.map(lambda ih: run_driver(ih[1], canary_dir, work, f"{tag}{ih[0]}", extra, script),
                              enumerate(halves)))
    return {k: v for part in parts for k, v in part.items()}


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
