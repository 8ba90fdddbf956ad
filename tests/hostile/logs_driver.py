"""Run the API and the CLI on many loss-log files in one process; print one JSON line per file.

Usage: ``python logs_driver.py JOBS.json`` where JOBS.json is ``{"canary_dir": ..., "files": [{"path": ...,
"cli": bool, "ckpt": optional checkpoint, "full": bool}]}``. Per file: ``read_losses``, then (with ``full``) a
trace of it (teaching mode, or placed against ``ckpt``) rendered as grid and JSON; with ``cli``,
``plateau-trace LOG --format json`` (the lone argument, classified by content) or ``plateau-trace CKPT LOG
--format json``; with ``oracle``, the metrics read are checked against the csv and json modules' reading.
Before each file a ``{"start": path}`` line is printed and a C watchdog (faulthandler) ends the process after
``TIMEOUT`` s, so a crash or a hang is pinned to its file (``hostile_runner.run_driver`` restarts after it).
"""

from __future__ import annotations

import csv
import faulthandler
import io
import json
import math
import struct
import sys
import time
import traceback
from pathlib import Path

from driver import TIMEOUT, peak_rss_mb


def _strict(value: object) -> float | None:
    """What a log reader may read as a number (strict float() of text; JSON numbers; not bools)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:
            return None
    if not isinstance(value, str) or not value.strip() or not value.isascii() or "_" in value:
        return None
    try:
        x = float(value)
    except ValueError:
        return None
    return None if math.isinf(x) and value.strip().lstrip("+-").lower() not in ("inf", "infinity") else x


def unexplained_metrics(path: str, column: str, metrics: tuple[float, ...]) -> list[float]:
    """Metrics the file does not hold as a strict number in that column (an independent reading: the csv and
    json modules); printed logs are not checked."""
    bits = struct.Struct("<d").pack
    text = Path(path).read_bytes().decode("utf-8-sig", "replace")
    allowed: set[bytes] = set()
    if text.lstrip()[:1] == "{":
        for line in text.split("\n"):
            try:
                obj = json.loads(line, parse_float=str)
            except (ValueError, RecursionError):
                continue
            if isinstance(obj, dict) and (x := _strict(obj.get(column))) is not None:
                allowed.add(bits(x))
    else:
        rows = [
            r
            for r in csv.reader(
                io.StringIO(text, newline=""),
                delimiter="\t" if "\t" in text.split("\n")[0] and "," not in text.split("\n")[0] else ",",
            )
            if any(c.strip() for c in r)
        ]
        if not rows or column not in rows[0]:
            return []  # a printed log, or a header the csv module splits otherwise
        j = rows[0].index(column)
        allowed = {bits(x) for r in rows[1:] if len(r) > j and (x := _strict(r[j])) is not None}
    return [m for m in metrics if bits(m) not in allowed][:5]


def main() -> None:
    jobs = json.loads(Path(sys.argv[1]).read_text())
    canary_dir = Path(jobs["canary_dir"])
    from click.testing import CliRunner

    from plateau_forensics import api, report
    from plateau_forensics.cli import main as cli
    from plateau_forensics.errors import ForensicsError
    from plateau_forensics.losses import read_losses

    runner = CliRunner()
    for job in jobs["files"]:
        path, ckpt = job["path"], job.get("ckpt")
        print(json.dumps({"start": path}), flush=True)
        faulthandler.dump_traceback_later(TIMEOUT, exit=True)
        t0 = time.perf_counter()
        out: dict[str, object] = {"path": path}
        log = t = None
        try:
            log = read_losses(path)
            out["entries"] = len(log)
            out["anomalies"] = [a.kind for a in log.anomalies]
            if job.get("oracle") and len(log) < 100_000:
                try:
                    out["unexplained"] = unexplained_metrics(path, log.metric_column, log.metrics)
                except csv.Error:  # the csv module cannot split this file: no independent reading
                    pass
            if job.get("full"):
                t = api.trace(ckpt, path) if ckpt else api.trace(None, path, lr=[0.1])
                report.render(t, "grid")
                report.render(t, "json")
            out["api"] = "ok"
        except ForensicsError as exc:
            out["api"], out["api_error"], out["api_type"] = "error", str(exc), type(exc).__name__
        except Exception:  # what the test must see: any other exception is a defect
            out["api"], out["api_error"] = "traceback", traceback.format_exc()[-3000:]
        out["api_seconds"] = time.perf_counter() - t0
        if job.get("cli"):
            t1 = time.perf_counter()
            result = runner.invoke(
                cli, [ckpt, path, "--format", "json"] if ckpt else [path, "--format", "json"]
            )
            exc = result.exception
            out["cli_exit"] = result.exit_code
            out["cli_stderr"] = result.stderr[-3000:]
            if exc is not None and not isinstance(exc, SystemExit):
                out["cli_traceback"] = "".join(traceback.format_exception(exc))[-3000:]
            out["cli_seconds"] = time.perf_counter() - t1
        faulthandler.cancel_dump_traceback_later()
        log = t = None  # a long log is freed before the next file is read
        out["seconds"] = time.perf_counter() - t0
        out["canaries"] = sorted(p.name for p in canary_dir.iterdir())
        out["maxrss_mb"] = peak_rss_mb()
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
