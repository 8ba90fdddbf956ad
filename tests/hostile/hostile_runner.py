"""Run the batch drivers (ours and torch's) as subprocesses and collect one result per file.

The driver prints a ``start`` line before each file, so a crash (a signal) or a hang (the driver's watchdog
ends the process) is pinned to its file; the remaining files are then run in a fresh driver.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
DRIVER = HERE / "driver.py"
TORCH_DRIVER = HERE / "torch_driver.py"
ROOT = HERE.parents[1]


def run_driver(
    files: list[dict[str, Any]],
    canary_dir: Path,
    work: Path,
    tag: str,
    extra: dict[str, Any] | None = None,
    script: Path = DRIVER,
) -> dict[str, dict[str, Any]]:
    """Run the driver over ``files`` until all are done; a file that crashed or hung gets ``"died"``."""
    results: dict[str, dict[str, Any]] = {}
    pending = list(files)
    round_no = 0
    while pending:
        jobs = work / f"jobs-{tag}-{round_no}.json"
        jobs.write_text(json.dumps({"canary_dir": str(canary_dir), "files": pending, **(extra or {})}))
        proc = subprocess.run(
            [sys.executable, str(script), str(jobs)], capture_output=True, text=True, cwd=ROOT, timeout=600
        )
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
            raise RuntimeError(
                f"driver failed outside any file (exit {proc.returncode}): {proc.stderr[-2000:]}"
            )
        pending = [f for f in pending if f["path"] not in results]
        round_no += 1
    return results


def run_parallel(
    files: list[dict[str, Any]],
    canary_dir: Path,
    work: Path,
    tag: str,
    extra: dict[str, Any] | None = None,
    script: Path = DRIVER,
) -> dict[str, dict[str, Any]]:
    """Split ``files`` over two drivers (CI has two cores) and merge their results."""
    from concurrent.futures import ThreadPoolExecutor

    halves = [files[0::2], files[1::2]]
    with ThreadPoolExecutor(2) as pool:
        parts = list(
            pool.map(
                lambda ih: run_driver(ih[1], canary_dir, work, f"{tag}{ih[0]}", extra, script),
                enumerate(halves),
            )
        )
    return {k: v for part in parts for k, v in part.items()}
