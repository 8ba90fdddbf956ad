"""Hostile and broken loss logs (issue 14): no crash, hang, traceback or runaway memory; one-line errors.

``logs_payloads.py`` builds the hand-made files, ``logs_fuzz.py`` mutates the shipped logs; ``logs_driver.py``
runs the API and the CLI on them in watchdog'd subprocesses (two at a time, ``hostile_runner``), so a crash
or a hang is pinned to its file. Every log the reader accepts is checked against an independent reading.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import logs_fuzz
import logs_payloads
import pytest
from hostile_runner import run_driver, run_parallel
from test_hostile import _script

LOGS_DRIVER = Path(__file__).with_name("logs_driver.py")
MAX_SECONDS, MAX_RSS_MB = 10.0, 500.0
SEED = int(os.environ.get("PLATEAU_FUZZ_SEED", "14"))
N_MUTANTS = int(os.environ.get("PLATEAU_FUZZ_LOGS", "2400"))
NAMES = sorted(logs_payloads.cases()) + ["fifo", "dev-zero", "a-directory", "loop-a"]


@pytest.fixture(scope="session")
def log_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding ``files/`` (the hostile logs), ``fuzz/`` (the mutants) and an empty ``canary/``."""
    root = tmp_path_factory.mktemp("hostile-logs")
    for sub in ("files", "fuzz", "canary"):
        (root / sub).mkdir()
    return root


@pytest.fixture(scope="session")
def log_cases(log_root: Path) -> dict[str, logs_payloads.LogCase]:
    """Every hand-made case, written to disk."""
    return logs_payloads.build_all(log_root / "files")


@pytest.fixture(scope="session")
def log_outcomes(log_root: Path, log_cases: dict[str, logs_payloads.LogCase]) -> dict[str, dict[str, Any]]:
    """The driver's result per case name."""
    from concurrent.futures import ThreadPoolExecutor

    def job(name: str) -> dict[str, Any]:
        case = log_cases[name]
        return {"path": str(log_root / "files" / name), "cli": case.cli, "full": case.full, "oracle": True}

    small = [job(n) for n, c in log_cases.items() if not c.big]
    rows = run_parallel(small, log_root / "canary", log_root, "logs", script=LOGS_DRIVER)
    with ThreadPoolExecutor(2) as pool:  # a big file in a driver of its own: its peak memory is its own
        for part in pool.map(
            lambda n: run_driver([job(n)], log_root / "canary", log_root, f"big-{n}", script=LOGS_DRIVER),
            [n for n, c in log_cases.items() if c.big],
        ):
            rows.update(part)
    return {Path(p).name: row for p, row in rows.items()}


@pytest.fixture(scope="session")
def fuzzed_logs(log_root: Path) -> tuple[list[logs_fuzz.LogMutant], dict[str, dict[str, Any]]]:
    """The mutants and the driver's result per mutant."""
    mutants = logs_fuzz.mutants(SEED, N_MUTANTS, log_root)
    jobs = []
    for i, m in enumerate(mutants):
        path = log_root / "fuzz" / m.name
        path.write_bytes(m.data)
        full = i % 16 == 0
        jobs.append(
            {
                "path": str(path),
                "cli": i % 32 == 0,
                "full": full,
                "oracle": True,
                **({"ckpt": str(m.ckpt)} if m.ckpt is not None and full else {}),
            }
        )
    rows = run_parallel(jobs, log_root / "canary", log_root, "logfuzz", script=LOGS_DRIVER)
    return mutants, {Path(p).name: row for p, row in rows.items()}


def problems(row: dict[str, Any]) -> list[str]:
    """What is wrong with one result: a crash, a hang, code run, a traceback, a bad exit, slow, big, or a
    number the file does not hold."""
    if "died" in row:
        return [f"died (exit {row['died']}): {row.get('stderr', '')[-300:]}"]
    out = []
    if row["canaries"]:
        out.append(f"code ran: {row['canaries']}")
    if row["api"] not in ("ok", "error"):
        out.append(f"API traceback: {row['api_error'][-600:]}")
    elif row["api"] == "error" and ("\n" in row["api_error"] or len(row["api_error"]) > 1200):
        out.append(f"multi-line or overlong error: {row['api_error'][:300]}")
    if "cli_traceback" in row or "Traceback" in row.get("cli_stderr", ""):
        out.append(f"CLI traceback: {row.get('cli_traceback', row.get('cli_stderr'))[-600:]}")
    if row.get("cli_exit", 0) not in (0, 1, 2, 3):
        out.append(f"CLI exit {row['cli_exit']}")
    if row.get("cli_exit") == 1:
        lines = row["cli_stderr"].splitlines()
        if len(lines) != 1 or not lines[0].startswith("Error: ") or len(lines[0]) > 1200:
            out.append(f"CLI error is not one 'Error:' line: {row['cli_stderr'][:300]}")
    if row["api_seconds"] >= MAX_SECONDS or row.get("cli_seconds", 0) >= MAX_SECONDS:
        out.append(f"slow: {row['api_seconds']:.1f} s, {row.get('cli_seconds', 0):.1f} s")
    if row["maxrss_mb"] >= MAX_RSS_MB:
        out.append(f"big: {row['maxrss_mb']:.0f} MB")
    if row.get("unexplained"):
        out.append(f"metrics the file does not hold as numbers: {row['unexplained']}")
    return out


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_log_case(
    name: str, log_outcomes: dict[str, dict[str, Any]], log_cases: dict[str, logs_payloads.LogCase]
) -> None:
    """Each hostile log gives its expected one-line error (or reads, reporting its anomalies), safely."""
    row, case = log_outcomes[name], log_cases[name]
    assert not problems(row), problems(row)
    if case.expect is None:
        assert row["api"] == "ok", row.get("api_error")
        assert set(case.anomalies) <= set(row["anomalies"]), row["anomalies"]
        if case.cli:
            assert row["cli_exit"] == 0, row["cli_stderr"]
    else:
        import re

        assert row["api"] == "error" and re.search(case.expect, row["api_error"]), row.get("api_error")
        if case.cli:
            assert row["cli_exit"] == 1, row["cli_stderr"]


def test_no_canary_after_the_logs(log_outcomes: dict[str, dict[str, Any]], log_root: Path) -> None:
    """After every hostile log was read, nothing was written into the canary directory."""
    assert len(log_outcomes) == len(NAMES)
    assert [] == list((log_root / "canary").iterdir())


def test_log_mutants(fuzzed_logs: tuple[list[logs_fuzz.LogMutant], dict[str, dict[str, Any]]]) -> None:
    """No mutant of a shipped log crashes, hangs, prints a traceback, exits outside 0-3 or reads a number the
    file does not hold."""
    mutants, rows = fuzzed_logs
    bad = {m.name: p for m in mutants if (p := problems(rows[m.name]))}
    assert not bad, json.dumps(dict(list(bad.items())[:8]), indent=1)


def test_log_mutant_volume(fuzzed_logs: tuple[list[logs_fuzz.LogMutant], dict[str, dict[str, Any]]]) -> None:
    """Thousands of mutants of every kind and source ran, and both outcomes occur (read, refused)."""
    mutants, rows = fuzzed_logs
    assert len(mutants) >= 2000 and len(rows) == len(mutants)
    assert {"flip", "truncate", "insert", "delete", "swap-lines", "duplicate-line", "digit", "field"} <= {
        m.kind for m in mutants
    }
    assert {".csv", ".jsonl", ".log"} <= {m.source.suffix for m in mutants}
    outcomes = [r["api"] for r in rows.values()]
    assert outcomes.count("ok") > 500 and outcomes.count("error") > 200
    assert sum(1 for r in rows.values() if "cli_exit" in r) > 60


def _measured(args: list[str], cwd: Path) -> tuple[int, str, float, float]:
    """``plateau-trace ARGS`` as its own process: exit code, stderr, seconds, peak MB (measure.py)."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("measure.py")), "30", _script(), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )
    result = json.loads(out.stdout)
    return result["exit"], out.stderr, result["seconds"], result["maxrss_mb"]


@pytest.mark.parametrize(
    "args",
    [
        ["fifo"],
        ["dev-zero"],
        ["../../../sample_checkpoints/seed000.pt", "fifo"],
        ["csv-200MB-sparse"],
        ["single-line-100MB"],
    ],
    ids=["fifo", "dev-zero", "ckpt-and-fifo", "200MB", "100MB-line"],
)
def test_real_process_refuses(
    args: list[str], log_root: Path, log_cases: dict[str, logs_payloads.LogCase]
) -> None:
    """``plateau-trace`` as a real process, the log alone or after a checkpoint: exit 1 at once, one line."""
    files = log_root / "files"
    args = [str((files / a).resolve()) if a.startswith("..") else a for a in args]
    args = [
        str(Path(__file__).parents[2] / "sample_checkpoints" / "seed000.pt")
        if a.endswith("seed000.pt")
        else a
        for a in args
    ]
    code, err, seconds, rss = _measured(args, files)
    assert code == 1, (code, err)
    assert err.count("\n") == 1 and err.startswith("Error: ") and "Traceback" not in err, err
    assert seconds < MAX_SECONDS and rss < MAX_RSS_MB, (seconds, rss)
