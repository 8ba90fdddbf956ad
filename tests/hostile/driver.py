"""Run the API and the CLI on many checkpoint files in one process; print one JSON line per file.

Usage: ``python driver.py JOBS.json`` where JOBS.json is ``{"canary_dir": ..., "files": [{"path": ..., "cli":
bool,
"log": optional log path, "ranges": bool}]}``; with ``"log"`` the file is traced against it (an event-file
mutant
and its run's checkpoint), with ``"ranges"`` the reader's unverified byte ranges are reported too.
Before each file a ``{"start": path}`` line is printed, so a crash (signal) or a hang (faulthandler's C
watchdog
ends the process after ``TIMEOUT`` s) is pinned to the file that caused it.
"""

from __future__ import annotations

import faulthandler
import json
import resource
import sys
import time
import traceback
from pathlib import Path

TIMEOUT = 10.0


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM belongs to the current memory map (reset at exec); ru_maxrss would also
    count the map of the process we were started from (a big pytest), so it is only the fallback."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    jobs = json.loads(Path(sys.argv[1]).read_text())
    canary_dir = Path(jobs["canary_dir"])
    from click.testing import CliRunner

    from plateau_forensics import api, report
    from plateau_forensics.cli import main as cli
    from plateau_forensics.errors import ForensicsError
    from plateau_forensics.report import _plain_state
    from plateau_forensics.torchfile import read_torch_archive

    runner = CliRunner()
    for job in jobs["files"]:
        path = job["path"]
        print(json.dumps({"start": path}), flush=True)
        faulthandler.dump_traceback_later(TIMEOUT, exit=True)
        t0 = time.perf_counter()
        out: dict[str, object] = {"path": path}
        log = job.get("log")
        try:
            ck = api.load_checkpoint(log if log else path)
            out["neutralised"] = list(ck.neutralised)
            out["integrity"] = list(ck.integrity)
            out["state"] = json.dumps(_plain_state(ck.raw), sort_keys=True)
            out["lrs"] = list(ck.optimizer_lrs) if ck.optimizer_lrs else None
            repr(ck)  # what a notebook shows: must stay bounded whatever the extra keys hold
            if job.get("ranges"):
                out["unverified"] = [list(r[:2]) for r in read_torch_archive(path).unverified]
            t = api.trace(ck, path if log else None)
            report.render(t, "grid")
            report.render(t, "json")
            out["api"] = "ok"
        except ForensicsError as exc:
            out["api"], out["api_error"], out["api_type"] = "error", str(exc), type(exc).__name__
        except Exception:  # what the test must see: any other exception is a defect
            out["api"], out["api_error"] = "traceback", traceback.format_exc()[-3000:]
        out["api_seconds"] = time.perf_counter() - t0
        if job.get("cli", True):
            t1 = time.perf_counter()
            result = runner.invoke(
                cli, [log, path, "--format", "json"] if log else [path, "--format", "json"]
            )
            exc = result.exception
            out["cli_exit"] = result.exit_code
            out["cli_stderr"] = result.stderr[-3000:]
            out["cli_stdout_chars"] = len(result.stdout)
            if exc is not None and not isinstance(exc, SystemExit):
                out["cli_traceback"] = "".join(traceback.format_exception(exc))[-3000:]
            out["cli_seconds"] = time.perf_counter() - t1
        faulthandler.cancel_dump_traceback_later()
        out["seconds"] = time.perf_counter() - t0
        out["canaries"] = sorted(p.name for p in canary_dir.iterdir())
        out["maxrss_mb"] = peak_rss_mb()
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
