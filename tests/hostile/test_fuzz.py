"""Seeded mutation fuzzing of the shipped samples, with torch.load(weights_only=True) as the second reader.

About 2,600 mutants (``PLATEAU_FUZZ_SEED``, ``PLATEAU_FUZZ_CHECKPOINTS``, ``PLATEAU_FUZZ_EVENTS`` change the
run).
Both readers run in watchdog'd subprocesses; the tests then compare what each made of every file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import fuzz
import pytest
from hostile_runner import TORCH_DRIVER, run_parallel

SEED = int(os.environ.get("PLATEAU_FUZZ_SEED", "14"))
N_CHECKPOINTS = int(os.environ.get("PLATEAU_FUZZ_CHECKPOINTS", "2400"))
N_EVENTS = int(os.environ.get("PLATEAU_FUZZ_EVENTS", "240"))
# Refusals of files torch.load reads: checks this reader makes and torch's does not (CRC of data.pkl and small
# records, local header names and signatures, the pickle protocol byte, text records).
STRICTER = [
    r"Bad CRC-32 for file",
    r"File name in directory .* and header .* differ",
    r"Bad magic number",
    r"UnicodeDecodeError",
    r"unsupported pickle protocol",
    r"serialization_id record is not UTF-8",
]


@pytest.fixture(scope="session")
def fuzzed(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[list[fuzz.Mutant], dict[str, Any], dict[str, Any]]:
    """The mutants, our driver's result per file, and torch's result per checkpoint file."""
    work = tmp_path_factory.mktemp("fuzz")
    (work / "files").mkdir()
    (work / "canary").mkdir()
    mutants = fuzz.mutants(SEED, N_CHECKPOINTS, N_EVENTS)
    jobs = []
    for i, m in enumerate(mutants):
        path = work / "files" / m.name
        path.write_bytes(m.data)
        jobs.append(
            {
                "path": str(path),
                "cli": i % 8 == 0,
                "ranges": m.log is None,
                **({"log": str(m.log)} if m.log else {}),
            }
        )
    ours = run_parallel(jobs, work / "canary", work, "fuzz")
    theirs = run_parallel(
        [j for j in jobs if "log" not in j], work / "canary", work, "torch", script=TORCH_DRIVER
    )
    by_name = lambda rows: {Path(p).name: row for p, row in rows.items()}  # noqa: E731
    return mutants, by_name(ours), by_name(theirs)


def _problems(row: dict[str, Any]) -> list[str]:
    out = []
    if "died" in row:
        out.append(f"died (exit {row['died']}): {row.get('stderr', '')[-300:]}")
        return out
    if row["canaries"]:
        out.append(f"code ran: {row['canaries']}")
    if row["api"] not in ("ok", "error"):
        out.append(f"API traceback: {row['api_error'][-300:]}")
    elif row["api"] == "error" and ("\n" in row["api_error"] or len(row["api_error"]) > 1200):
        out.append("multi-line or overlong error")
    if "cli_traceback" in row or "Traceback" in row.get("cli_stderr", ""):
        out.append(f"CLI traceback: {row.get('cli_traceback', row.get('cli_stderr'))[-300:]}")
    if row.get("cli_exit", 0) not in (0, 1, 2, 3):
        out.append(f"CLI exit {row['cli_exit']}")
    if row["api_seconds"] >= 10 or row.get("cli_seconds", 0) >= 10 or row["maxrss_mb"] >= 500:
        out.append(
            f"slow or big: {row['api_seconds']:.1f} s, {row.get('cli_seconds', 0):.1f} s, "
            f"{row['maxrss_mb']} MB"
        )
    return out


def test_volume(fuzzed: tuple[list[fuzz.Mutant], dict[str, Any], dict[str, Any]]) -> None:
    """A few thousand mutants ran, of every kind, and every one has a result from both readers."""
    mutants, ours, theirs = fuzzed
    assert len(mutants) >= 2000 and len(ours) == len(mutants)
    assert len(theirs) == sum(1 for m in mutants if m.log is None)
    kinds = {m.kind for m in mutants}
    assert {"flip", "truncate", "insert", "swap", "opcode", "pickle-flip", "record-flip"} <= kinds


def test_checkpoint_mutants(fuzzed: tuple[list[fuzz.Mutant], dict[str, Any], dict[str, Any]]) -> None:
    """No checkpoint mutant crashes, hangs, runs code, prints a traceback, or exits outside 0-3."""
    mutants, ours, _ = fuzzed
    bad = {m.name: p for m in mutants if m.log is None and (p := _problems(ours[m.name]))}
    assert not bad, json.dumps(dict(list(bad.items())[:10]), indent=1)


def test_event_mutants_in_our_code(fuzzed: tuple[list[fuzz.Mutant], dict[str, Any], dict[str, Any]]) -> None:
    """No event-file mutant crashes, hangs or creates a canary file."""
    mutants, ours, _ = fuzzed
    rows = [ours[m.name] for m in mutants if m.log is not None]
    assert rows and not [r for r in rows if "died" in r or r["canaries"]]


def test_event_mutants_no_traceback(fuzzed: tuple[list[fuzz.Mutant], dict[str, Any], dict[str, Any]]) -> None:
    """No event-file mutant gives a traceback anywhere."""
    mutants, ours, _ = fuzzed
    bad = {m.name: p for m in mutants if m.log is not None and (p := _problems(ours[m.name]))}
    assert not bad, json.dumps(dict(list(bad.items())[:5]), indent=1)


def test_accepted_but_refused_by_torch_is_reported(
    fuzzed: tuple[list[fuzz.Mutant], dict[str, Any], dict[str, Any]],
) -> None:
    """A file we read but torch refuses has an integrity anomaly, a neutralised global, or damage in bytes we
    list as unverified (storage data never read)."""
    mutants, ours, theirs = fuzzed
    silent = []
    for m in mutants:
        o, t = ours[m.name], theirs.get(m.name)
        if m.log is not None or o["api"] != "ok" or t is None or t.get("torch") != "refused":
            continue
        anomalies = [n for n in o["integrity"] if not n.startswith("not verified: ")]
        start, end = m.changed
        unread = any(a < end and start < b for a, b in o["unverified"])
        if not (anomalies or o["neutralised"] or unread):
            silent.append((m.name, t["torch_error"][:200]))
    assert not silent, silent[:5]


def test_same_answer_when_both_read(fuzzed: tuple[list[fuzz.Mutant], dict[str, Any], dict[str, Any]]) -> None:
    """When both readers accept a mutant, they find the same scheduler state and optimizer lrs."""
    mutants, ours, theirs = fuzzed
    both = [
        (m, ours[m.name], theirs[m.name])
        for m in mutants
        if m.log is None and ours[m.name]["api"] == "ok" and theirs[m.name].get("torch") == "ok"
    ]
    assert len(both) > 100
    differ = [m.name for m, o, t in both if (o["state"], o["lrs"]) != (t.get("state"), t.get("lrs"))]
    assert not differ, differ[:5]


def test_refusals_of_what_torch_reads(
    fuzzed: tuple[list[fuzz.Mutant], dict[str, Any], dict[str, Any]],
) -> None:
    """Where torch reads a plateau state we refuse the file, the reason is one of our stricter checks."""
    mutants, ours, theirs = fuzzed
    reasons = [
        ours[m.name]["api_error"]
        for m in mutants
        if m.log is None and ours[m.name]["api"] == "error" and "state" in theirs[m.name]
    ]
    unexplained = [r for r in reasons if not any(re.search(p, r) for p in STRICTER)]
    assert not unexplained, unexplained[:5]
