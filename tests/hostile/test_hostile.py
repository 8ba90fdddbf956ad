"""Hostile and broken checkpoints: nothing runs, nothing crashes or hangs, memory stays bounded, errors are
one line.

Every file is built by ``payloads.py``. The API and the CLI run on each inside ``driver.py`` subprocesses
(a crash is a signal there, a hang ends at the watchdog); a few real ``plateau-trace`` processes run too.
"""

from __future__ import annotations

import copyreg
import os
import pickle
import re
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import payloads
import pytest
from click.testing import CliRunner

import plateau_forensics as pf
from plateau_forensics.cli import main as cli_main
from plateau_forensics.errors import CheckpointError

NAMES = payloads.case_names()
MAX_SECONDS, MAX_RSS_MB = 10.0, 500.0


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_case(
    name: str, outcomes: dict[str, dict[str, Any]], cases: dict[str, payloads.Case], hostile_dir: Path
) -> None:
    """No canary, crash, hang or traceback; one-line errors, exit 0/1/2/3, under 10 s and 500 MB."""
    row, case = outcomes[name], cases[name]
    assert "died" not in row, f"the process died (exit {row.get('died')}) on {name}: {row.get('stderr')}"
    assert row["canaries"] == [], f"code ran: {row['canaries']}"
    assert row["api"] in ("ok", "error"), row.get("api_error")
    assert row["api_seconds"] < MAX_SECONDS and row.get("cli_seconds", 0) < MAX_SECONDS, row
    assert row["maxrss_mb"] < MAX_RSS_MB, row["maxrss_mb"]  # the driver's peak so far bounds this file's
    if row["api"] == "error":
        assert "\n" not in row["api_error"] and len(row["api_error"]) < 1200, row["api_error"]
    if case.cli:
        assert row["cli_exit"] in (0, 1, 2, 3) and "cli_traceback" not in row, row.get("cli_traceback")
        assert "Traceback" not in row["cli_stderr"]
        if row["cli_exit"] == 1:
            lines = row["cli_stderr"].splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: ") and len(lines[0]) < 1200, lines
    if case.payload is not None:  # a classic payload: refused, or loaded with what it named listed as inert
        assert row["api"] == "error" or row["neutralised"], row
    elif case.expect is None:
        assert row["api"] == "ok", row.get("api_error")
        assert set(case.neutralised) <= set(row["neutralised"]), row["neutralised"]
    else:
        assert row["api"] == "error" and re.search(case.expect, row["api_error"]), row.get("api_error")
        if case.cli:
            assert row["cli_exit"] == 1, row["cli_stderr"]


def test_no_canary_at_all(outcomes: dict[str, dict[str, Any]], hostile_dir: Path) -> None:
    """After every file has been read by the API and the CLI, the canary directory is still empty."""
    assert len(outcomes) == len(NAMES)
    assert list((hostile_dir / "canary").iterdir()) == []


def test_embedded_payloads_are_named(outcomes: dict[str, dict[str, Any]]) -> None:
    """A payload next to a valid state loads, and the global it would have run is listed as neutralised."""
    row = outcomes["os.system@zip-embedded"]
    assert row["api"] == "ok" and row["neutralised"] in (["os.system"], ["posix.system"])
    assert outcomes["subprocess.Popen-newobj@legacy-embedded"]["neutralised"] == ["subprocess.Popen"]
    assert outcomes["builtins.compile-exec@zip-in-state"]["neutralised"] == [
        "builtins.exec",
        "builtins.compile",
    ]
    assert (
        "refused: the pickle calls a Opaque[builtins.getattr]"
        in outcomes["getattr-import-os@zip-in-state"]["api_error"]
    )  # calling what a neutralised call returned is refused


def test_bad_values_exit_1_naming_the_key(outcomes: dict[str, dict[str, Any]]) -> None:
    """factor >= 1, an unknown mode and a string patience are bad files (exit 1, typed error), not usage
    errors."""
    for name, key in [
        ("factor-one", "factor"),
        ("mode-bogus", "mode"),
        ("patience-string", "patience"),
        ("best-none", "best"),
    ]:
        row = outcomes[name]
        assert row["api_type"] == "CheckpointValueError" and f"scheduler.{key}" in row["api_error"], row
        assert row["cli_exit"] == 1


def _ext_checkpoint(path: Path, target: Path) -> Path:
    path.write_bytes(
        payloads.torch_zip(payloads.pickle_of(b"\x82\xf0" + payloads.val((f"touch {target}",)) + b"R"))
    )
    return path


def test_ext_opcode_with_a_registered_extension(tmp_path: Path) -> None:
    """With os.system registered as copyreg extension 240 and cached, EXT1 240 still runs nothing."""
    control, canary = tmp_path / "control", tmp_path / "canary"
    copyreg.add_extension("os", "system", 240)
    try:
        assert (
            pickle.loads(b"\x80\x02\x82\xf0.") is os.system
        )  # fills copyreg._extension_cache, as a library would
        # The threat is real: CPython's unpickler runs the command through the cache.
        pickle.loads(payloads.pickle_of(b"\x82\xf0" + payloads.val((f"touch {control}",)) + b"R"))
        assert control.exists()
        path = _ext_checkpoint(tmp_path / "ext.pt", canary)
        with pytest.raises(CheckpointError, match=r"refused: the pickle uses EXT1 240"):
            pf.load_checkpoint(path)
        result = CliRunner().invoke(cli_main, [str(path)])
        assert result.exit_code == 1 and "EXT1 240" in result.stderr
        assert not canary.exists()
    finally:
        copyreg.remove_extension("os", "system", 240)


def _script() -> str:
    path = Path(sysconfig.get_path("scripts")) / "plateau-trace"
    return str(path) if path.exists() else "plateau-trace"


def _run(args: list[str], cwd: Path) -> tuple[int, str, float, float]:
    """Run ``plateau-trace`` as its own process: exit code (negative for a signal), stderr, seconds, peak
    MB."""
    import json

    out = subprocess.run(
        [sys.executable, str(Path(payloads.__file__).with_name("measure.py")), "60", _script(), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    result = json.loads(out.stdout)
    return result["exit"], out.stderr, result["seconds"], result["maxrss_mb"]


SUBPROCESS_CASES = [
    "deep-tuple-dict-key-zip",
    "deep-tuple-dict-key-legacy",
    "deep-tuple-in-set",
    "colliding-hash-keys",
    "object-flood",
    "byteorder-bomb",
    "os.system@zip-root",
    "os.system@legacy-magic",
    "factor-one",
]


@pytest.mark.parametrize("name", SUBPROCESS_CASES, ids=SUBPROCESS_CASES)
def test_real_cli_process(name: str, cases: dict[str, payloads.Case], hostile_dir: Path) -> None:
    """``plateau-trace FILE`` as a real process: no signal, no traceback, exit 1 with one line, bounded
    time."""
    code, err, seconds, rss = _run([str(hostile_dir / "files" / name)], hostile_dir)
    assert code == 1, (code, err)
    assert err.count("\n") == 1 and err.startswith("Error: ") and "Traceback" not in err, err
    assert seconds < MAX_SECONDS and rss < MAX_RSS_MB, (seconds, rss)
    assert list((hostile_dir / "canary").iterdir()) == []


def test_torch_loader_is_prechecked(hostile_dir: Path, cases: dict[str, payloads.Case]) -> None:
    """``--loader torch`` on a file that crashes torch.load (SIGSEGV) is refused by our reader first."""
    pytest.importorskip("torch")
    code, err, _, _ = _run(
        [str(hostile_dir / "files" / "deep-tuple-dict-key-zip"), "--loader", "torch"], hostile_dir
    )
    assert code == 1 and "nested deeper than 100" in err, (code, err)


def test_real_cli_json_with_inert_values(hostile_dir: Path, cases: dict[str, payloads.Case]) -> None:
    """``--format json`` prints bytes, sets, complex numbers and inert objects in extra keys as short
    strings."""
    import json

    out = subprocess.run(
        [_script(), str(hostile_dir / "files" / "bytes-set-opaque-in-state"), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=hostile_dir,
    )
    assert out.returncode == 0, out.stderr
    state = json.loads(out.stdout)["checkpoint"]["state"]
    assert state["blob"] == "<20 bytes: " + "00ff" * 10 + ">"
    assert state["tags"] == ["'a'", "'b'"] and state["frozen"] == ["1"] and state["cx"] == "(1+2j)"
    assert state["cfg"] == "<Opaque argparse.Namespace>" and state["cls"] == "<Opaque global torch.float32>"


def test_real_cli_json_cycle_and_dag(hostile_dir: Path, cases: dict[str, payloads.Case]) -> None:
    """A self-referencing state and a DAG of 10**25 paths give JSON quickly: a cycle marker, a summary."""
    import json

    for name, key in [("self-referencing-state", "me"), ("dag-shared-subobjects", "extra")]:
        t0 = time.perf_counter()
        out = subprocess.run(
            [_script(), str(hostile_dir / "files" / name), "--format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=hostile_dir,
        )
        assert out.returncode == 0 and time.perf_counter() - t0 < MAX_SECONDS, out.stderr
        value = json.loads(out.stdout)["checkpoint"]["state"][key]
        if key == "me":  # the saved dict holds itself: one level down its own key is the cycle
            assert value["me"] == "<cycle>" and value["best"] == 0.25, value
        else:
            assert "items, not shown>" in json.dumps(value), value


def test_fickling_rates_every_classic_payload_unsafe(outcomes: dict[str, dict[str, Any]]) -> None:
    """An independent analyser (fickling) calls each classic payload unsafe, and none of them ran here."""
    fickling = pytest.importorskip(
        "fickling", reason="fickling is not installed (pip install fickling==0.1.12)"
    )
    from fickling.analysis import Severity, check_safety
    from fickling.fickle import Pickled

    del fickling
    rated = {}
    for name, code in payloads.classic_payloads(Path("/nonexistent")).items():
        try:
            rated[name] = check_safety(Pickled.load(payloads.pickle_of(code))).severity
        except (TypeError, ValueError, NotImplementedError):  # fickling cannot parse a few hand-made streams
            continue
    assert len(rated) >= 60
    assert all(sev.value[0] >= Severity.LIKELY_UNSAFE.value[0] for sev in rated.values()), rated
    for name in rated:
        for container in payloads.CONTAINERS:
            assert outcomes[f"{name}@{container}"]["canaries"] == []
