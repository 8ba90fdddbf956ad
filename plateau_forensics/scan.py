"""Fleet scan: find every run (a checkpoint with its log) below some folders, analyse each, one row per run.

``find_runs`` walks the folders and groups files by each stack's layout; a checkpoint is recognised by its
content (the torch zip archive's ``data.pkl`` or the legacy format's magic number), never by its name alone:

* **HF Trainer**: ``checkpoint-N/`` directories (a ``scheduler.pt`` that is a torch file); the directories of
  one output folder are one run, analysed at the latest checkpoint with its ``trainer_state.json`` log.
* **Lightning**: a logger folder with ``version_N/`` subfolders (``checkpoints/*.ckpt`` plus ``metrics.csv``
  or TensorBoard events); all versions are one run (one log per version, stitched in version order).
* **plain torch**: torch files in a folder with the logs next to them (CSV, JSON Lines, printed text or a
  TensorBoard run folder); a log named like a checkpoint (``seed000.pt`` / ``seed000.csv``) pairs with it,
  the other checkpoints of the folder are one run with the other logs; a folder of checkpoints without a log
  takes the logs of its parent folder (``exp/checkpoints/*.pt`` with ``exp/log.csv``).

``scan_run(run)`` analyses one run and returns plain, JSON-able data, so it runs unchanged in a process pool
or
under a cluster's map. The checkpoint analysed is the run's latest by content (the saved step count, then
``global_step``, then ``epoch``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plateau_forensics.errors import ForensicsError

__all__ = ["Run", "find_runs", "scan_run", "scan", "render_scan", "SCAN_FORMATS"]

SCAN_FORMATS = ("table", "markdown", "csv", "json")
# torch's legacy (non-zip) format starts with the pickled magic number 0x1950a86a20f9469cfc6c
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_VERSION = re.compile(r"version_(\d+)$")
_HF_CHECKPOINT = re.compile(r"checkpoint-(\d+)$")
_SNIFF = 8192
_HEADER_NAME = re.compile(r"[^\W\d][\w./\- \[\]]{0,63}")


@dataclass(frozen=True)
class Run:
    """One training run found on disk.

    Attributes:
        path: the run's folder (or its checkpoint, for a checkpoint paired with a log by name).
        stack: ``torch``, ``lightning`` or ``hf``.
        checkpoints: the run's checkpoints (files, or HF ``checkpoint-N/`` folders); the latest is analysed.
        logs: the run's logs, in the order they were written (stitched).
    """

    path: str
    stack: str
    checkpoints: tuple[str, ...]
    logs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoints", tuple(self.checkpoints))  # lists from JSON become tuples
        object.__setattr__(self, "logs", tuple(self.logs))

    def as_dict(self) -> dict[str, Any]:
        """Plain data; ``Run(**d)`` rebuilds it."""
        return {"path": self.path, "stack": self.stack, "checkpoints": list(self.checkpoints),
                "logs": list(self.logs)}


# -- recognising files by content ------------------------------------------------------------------------
def is_torch_checkpoint(path: str | os.PathLike[str]) -> bool:
    """A regular file written by ``torch.save``: a zip archive with a ``data.pkl`` record, or the legacy format's
    magic number (a ``.pt`` name alone, or any other zip or pickle, is not enough)."""
    p = os.fspath(path)
    try:
        if not os.path.isfile(p) or os.path.islink(p) and not os.path.isfile(os.path.realpath(p)):
            return False
        with open(p, "rb") as f:
            head = f.read(len(_LEGACY_MAGIC))
        if head.startswith(_LEGACY_MAGIC):
            return True
        if head[:4] != b"PK\x03\x04":
            return False
        with zipfile.ZipFile(p) as zf:
            return any(n.endswith("/data.pkl") or n == "data.pkl" for n in zf.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def _looks_like_log(path: str) -> bool:
    """A loss log by its first bytes: a CSV/TSV header naming a loss column, JSON Lines whose first record has
    a loss key, or a printed training log (``textlog.looks_like_text_log``) that mentions a loss."""
    try:
        if not os.path.isfile(path):
            return False
        with open(path, "rb") as f:
            head = f.read(_SNIFF)
    except OSError:
        return False
    if not head or b"\x00" in head:
        return False
    text = head.decode("utf-8", errors="replace")
    if "loss" not in text.lower() and not text.lstrip().startswith('{"plateau_recording"'):
        return False
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    if first.startswith("{"):  # JSON Lines (a pretty-printed JSON document does not parse line by line)
        try:
            record = json.loads(first)
        except ValueError:
            return False
        if isinstance(record, dict) and "plateau_recording" in record:  # pf.record's file: its steps are the log
            return True
        return isinstance(record, dict) and any("loss" in str(k).lower() for k in record)
    for sep in (",", "\t"):
        fields = [f.strip().strip('"') for f in first.split(sep)]
        if len(fields) >= 2 and all(_HEADER_NAME.fullmatch(f) for f in fields):
            return any("loss" in f.lower() for f in fields)
    from plateau_forensics.textlog import looks_like_text_log

    return looks_like_text_log(text)


def _is_tensorboard_dir(path: str) -> bool:
    try:
        with os.scandir(path) as entries:
            return any(e.is_file() and e.name.startswith("events.out.tfevents") for e in entries)
    except OSError:
        return False


def _is_hf_checkpoint(path: str) -> bool:
    return os.path.isdir(path) and is_torch_checkpoint(os.path.join(path, "scheduler.pt"))


def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


# -- finding runs ----------------------------------------------------------------------------------------
@dataclass
class _Dir:
    path: str
    checkpoints: list[str]
    logs: list[str]


def find_runs(*folders: str | os.PathLike[str], skipped: list[dict[str, str]] | None = None) -> list[Run]:
    """Every run below ``folders`` (each folder is walked once; symlinked folders are not followed).

    Args:
        folders: where to look.
        skipped: if given, receives ``{"path", "reason"}`` for every log found without a checkpoint.

    Returns:
        The runs, sorted by path.

    Raises:
        ForensicsError: a folder that does not exist.
    """
    runs: list[Run] = []
    seen: set[str] = set()
    for folder in folders:
        root = os.fspath(folder)
        if not os.path.isdir(root):
            raise ForensicsError(f"{root}: no such folder")
        plain: dict[str, _Dir] = {}
        for here, dirs, files in os.walk(root, followlinks=False):
            dirs.sort(key=_natural)
            real = os.path.realpath(here)
            if real in seen:
                dirs[:] = []
                continue
            seen.add(real)
            hf = [d for d in dirs if _HF_CHECKPOINT.fullmatch(d) and _is_hf_checkpoint(os.path.join(here, d))]
            versions = [d for d in dirs if _VERSION.fullmatch(d)]
            if hf:
                ckpts = tuple(os.path.join(here, d) for d in sorted(hf, key=_natural))
                runs.append(Run(here, "hf", ckpts))
                dirs[:] = [d for d in dirs if d not in hf]
            lightning = _lightning(here, versions)
            if lightning is not None:
                runs.append(lightning)
                dirs[:] = [d for d in dirs if d not in versions]
            files.sort(key=_natural)
            paths = [os.path.join(here, f) for f in files]
            ckpts_here = [p for p in paths if is_torch_checkpoint(p)]
            logs = [p for p in paths if p not in ckpts_here and _looks_like_log(p)]
            logs += [os.path.join(here, d) for d in dirs if _is_tensorboard_dir(os.path.join(here, d))]
            if hf and ckpts_here:  # an HF output folder's own files (training_args.bin) are not checkpoints
                ckpts_here = []
            plain[here] = _Dir(here, ckpts_here, logs)
        runs.extend(_plain_runs(plain, skipped))
    return sorted(runs, key=lambda r: _natural(r.path))


def _lightning(here: str, versions: Sequence[str]) -> Run | None:
    """A Lightning logger folder: ``version_N/`` folders with checkpoints and a metrics.csv or events."""
    ckpts, logs = [], []
    for v in sorted(versions, key=lambda d: int(_VERSION.fullmatch(d).group(1))):  # type: ignore[union-attr]
        vdir = os.path.join(here, v)
        cdir = os.path.join(vdir, "checkpoints")
        if os.path.isdir(cdir):
            ckpts += [os.path.join(cdir, f) for f in sorted(os.listdir(cdir), key=_natural)
                      if is_torch_checkpoint(os.path.join(cdir, f))]
        metrics = os.path.join(vdir, "metrics.csv")
        if os.path.isfile(metrics):
            logs.append(metrics)
        elif _is_tensorboard_dir(vdir):
            logs.append(vdir)
    if not ckpts:
        return None
    return Run(here, "lightning", tuple(ckpts), tuple(logs))


def _plain_runs(dirs: Mapping[str, _Dir], skipped: list[dict[str, str]] | None) -> list[Run]:
    """Plain torch runs folder by folder: one checkpoint takes every log; several pair with logs of the same
    name, and the rest of them are one run with the rest of the logs."""
    out = []
    used: set[str] = set()
    for d in dirs.values():
        if not d.checkpoints:
            continue
        logs = list(d.logs)
        if not logs:  # exp/checkpoints/*.pt with exp/log.csv
            parent = dirs.get(os.path.dirname(d.path))
            if parent is not None and not parent.checkpoints:
                logs = list(parent.logs)
        if len(d.checkpoints) == 1:
            out.append(Run(d.path, "torch", tuple(d.checkpoints), tuple(logs)))
            used.update(logs)
            continue
        stems = {Path(p).stem: p for p in logs}
        rest = []
        for c in d.checkpoints:
            log = stems.get(_stem(c))
            if log is not None and log not in used:
                out.append(Run(c, "torch", (c,), (log,)))
                used.add(log)
            else:
                rest.append(c)
        if rest:
            free = tuple(p for p in logs if p not in used)
            out.append(Run(rest[0] if len(rest) == 1 else d.path, "torch", tuple(rest), free))
            used.update(free)
    if skipped is not None:
        for d in dirs.values():
            skipped.extend({"path": p, "reason": "a log without a checkpoint beside it"} for p in d.logs
                           if p not in used)
    return out


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".pth.tar", ".pt", ".pth", ".ckpt", ".bin", ".tar"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


# -- one run -----------------------------------------------------------------------------------------------
def _as_run(run: Run | Mapping[str, Any] | str | os.PathLike[str]) -> Run:
    if isinstance(run, Run):
        return run
    if isinstance(run, Mapping):
        return Run(str(run["path"]), str(run["stack"]), tuple(run["checkpoints"]), tuple(run.get("logs", ())))
    path = os.fspath(run)
    if os.path.isdir(path):
        if _is_hf_checkpoint(path):
            return Run(path, "hf", (path,))
        found = find_runs(path)
        if len(found) != 1:
            raise ForensicsError(f"{path}: {len(found)} runs below this folder; scan_run takes one "
                                 "(find_runs lists them)")
        return found[0]
    if not is_torch_checkpoint(path):
        raise ForensicsError(f"{path}: not a torch checkpoint (by its content)")
    here = os.path.dirname(path) or "."
    parent = os.path.dirname(here)
    if os.path.basename(here) == "checkpoints" and _VERSION.fullmatch(os.path.basename(parent)):
        here = os.path.dirname(parent)  # a Lightning checkpoint: its run is the whole logger folder
    for r in find_runs(here):
        if path in r.checkpoints or os.path.abspath(path) in map(os.path.abspath, r.checkpoints):
            return Run(r.path, r.stack, (path,), r.logs)
    return Run(path, "torch", (path,))


def _latest(run: Run, loader: str) -> tuple[Any, list[str]]:
    """The run's checkpoint with the most scheduler steps (then global_step, epoch, path), and notes on the
    candidates that could not be read."""
    from plateau_forensics.loader import load_checkpoint

    best, key, notes, errors = None, None, [], []
    for c in run.checkpoints:
        try:
            ck = load_checkpoint(c, loader=loader)  # type: ignore[arg-type]
        except ForensicsError as exc:
            errors.append(f"{c}: {' '.join(str(exc).split())}")
            continue
        k = (float(ck.state.steps), ck.global_step if ck.global_step is not None else -1,
             ck.epoch if ck.epoch is not None else -1, _natural(os.path.basename(c)))
        if key is None or k > key:
            best, key = ck, k
    if best is None:
        raise ForensicsError(errors[0] if len(errors) == 1 else "no checkpoint with a plateau state: "
                             + "; ".join(errors))
    notes += [f"not analysed: {e}" for e in errors]
    return best, notes


def scan_run(run: Run | Mapping[str, Any] | str | os.PathLike[str], *, loader: str = "builtin") -> dict[str, Any]:
    """Analyse one run with ``plateau_forensics.trace`` and return plain data (JSON-able, picklable).

    Args:
        run: a ``Run`` from ``find_runs`` (or its ``as_dict()``), a checkpoint path, or a folder holding one
        run.
        loader: the checkpoint reader (``builtin`` or ``torch``).

    Returns:
        ``path``, ``stack``, ``checkpoint`` (the one analysed), ``logs``, ``verdict`` (the story's codes
        joined
        with ``+``, None without a log), ``ambiguous``, ``alternatives``, ``warnings`` (warning-level finding
        codes), ``findings`` (every finding code), ``error`` (a one-line message, or None), ``notes``,
        ``seconds``. Bad input becomes ``error``; nothing is raised for a run that cannot be read.
    """
    t0 = time.perf_counter()
    row: dict[str, Any] = {"path": os.fspath(run) if isinstance(run, (str, os.PathLike)) else None,
                           "stack": None, "checkpoint": None, "logs": [], "verdict": None, "ambiguous": False,
                           "alternatives": [], "warnings": [], "findings": [], "error": None, "notes": []}
    try:
        r = _as_run(run)
        row.update({"path": r.path, "stack": r.stack, "logs": list(r.logs)})
        from plateau_forensics import api

        ck, notes = _latest(r, loader)
        row["checkpoint"] = ck.path
        row["notes"] += notes
        logs: Any = list(r.logs) if len(r.logs) > 1 else (r.logs[0] if r.logs else None)
        try:
            t = api.trace(ck, logs)
        except ForensicsError as exc:
            if logs is None or r.stack == "hf":
                raise
            row["notes"].append(f"log not used: {' '.join(str(exc).split())}")
            t = api.trace(ck, None)
        if t.verdict is not None:
            row["verdict"] = "+".join(t.verdict.story) or "clean"
            row["ambiguous"] = bool(t.verdict.ambiguous)
            row["alternatives"] = ["+".join(a) for a in t.verdict.alternatives]
        elif t.log is None:
            row["notes"].append("no log: the checkpoint alone was read")
        row["warnings"] = [f.code for f in t.findings if f.severity == "warning"]
        row["findings"] = [f.code for f in t.findings]
    except (ForensicsError, OSError) as exc:
        text = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.filename else str(exc)
        row["error"] = " ".join(text.split())
    except Exception as exc:  # noqa: BLE001 - one broken run must not stop a fleet scan; the row says so
        row["error"] = f"internal error ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})"
    row["seconds"] = round(time.perf_counter() - t0, 4)
    return row


def _scan_one(args: tuple[Any, str]) -> dict[str, Any]:
    return scan_run(args[0], loader=args[1])


def scan(
    folders: Iterable[str | os.PathLike[str]] | Sequence[Run],
    *,
    jobs: int | None = None,
    loader: str = "builtin",
    progress: Callable[[int], None] | None = None,
    skipped: list[dict[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """Find the runs below ``folders`` (or take a list of ``Run``) and ``scan_run`` each in a process pool.

    Args:
        folders: folders to walk, or runs from ``find_runs``.
        jobs: worker processes (default: the CPUs this process may use); 1 runs them here, one by one.
        loader: the checkpoint reader.
        progress: called with the number of runs finished so far, after each one.
        skipped: receives what ``find_runs`` found but could not pair.

    Returns:
        One ``scan_run`` row per run, in path order.
    """
    items = list(folders)
    runs = [r for r in items if isinstance(r, Run)]
    if len(runs) != len(items):
        runs = find_runs(*items, skipped=skipped)  # type: ignore[arg-type]
    if jobs is None:
        jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = max(1, min(jobs, len(runs) or 1))
    from plateau_forensics import api  # noqa: F401 - warm for jobs=1 (the pool's workers preload it)

    out: list[dict[str, Any]] = []
    if jobs == 1:
        for r in runs:
            out.append(scan_run(r, loader=loader))
            if progress is not None:
                progress(len(out))
        return out
    from concurrent.futures import ProcessPoolExecutor

    chunk = max(1, min(16, len(runs) // (jobs * 8)))
    with ProcessPoolExecutor(max_workers=jobs, mp_context=_pool_context()) as pool:
        for row in pool.map(_scan_one, [(r, loader) for r in runs], chunksize=chunk):
            out.append(row)
            if progress is not None:
                progress(len(out))
    return out


def _pool_context() -> Any:
    """The workers' start method: a fork server where there is one (workers forked from a clean process that
    imported the API, so they start warm), never a fork of this process: it may run threads (torch's, JAX's,
    a notebook's), and forking a threaded process can deadlock the child."""
    import multiprocessing as mp

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["plateau_forensics.api", "plateau_forensics.scan"])
        return ctx
    return mp.get_context("spawn")


# -- output ------------------------------------------------------------------------------------------------
def has_warning(row: Mapping[str, Any]) -> bool:
    """The run has a warning-level finding or could not be analysed (what ``--check`` fails on)."""
    return bool(row["warnings"]) or row["error"] is not None


def render_scan(rows: Sequence[Mapping[str, Any]], fmt: str = "table", *, style: str = "simple",
                skipped: Sequence[Mapping[str, str]] = ()) -> str:
    """What ``plateau-trace scan DIR...`` prints: one row per run (path, stack, verdict, ambiguity, warnings).

    ``json`` is ``{"runs": [...], "skipped": [...], "summary": {...}}``; ``csv`` has one line per run.
    """
    summary = {"runs": len(rows), "with_warnings": sum(1 for r in rows if r["warnings"]),
               "errors": sum(1 for r in rows if r["error"] is not None),
               "ambiguous": sum(1 for r in rows if r["ambiguous"])}
    if fmt == "json":
        clean = [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
        return json.dumps({"runs": clean, "skipped": list(skipped), "summary": summary}, indent=1)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "stack", "checkpoint", "logs", "verdict", "ambiguous", "alternatives", "warnings",
                    "findings", "error"])
        for r in rows:
            w.writerow([r["path"], r["stack"] or "", r["checkpoint"] or "", ";".join(r["logs"]), r["verdict"] or "",
                        "yes" if r["ambiguous"] else "", ";".join(r["alternatives"]), ";".join(r["warnings"]),
                        ";".join(r["findings"]), r["error"] or ""])
        return buf.getvalue()
    if fmt not in ("table", "markdown"):
        raise ForensicsError(f"unknown format {fmt!r}: use one of {', '.join(SCAN_FORMATS)}")
    from tabulate import tabulate

    body = []
    for r in rows:
        if r["error"] is not None:
            verdict = f"error: {r['error']}"
        else:
            verdict = r["verdict"] or "no log"
        body.append([r["path"], r["stack"] or "?", verdict,
                     " or ".join(r["alternatives"]) if r["ambiguous"] else "",
                     ", ".join(r["warnings"])])
    head = ["run", "stack", "verdict", "ambiguous with", "warnings"]
    table = tabulate(body, headers=head, tablefmt="github" if fmt == "markdown" else style, disable_numparse=True)
    foot = (f"{summary['runs']} runs: {summary['with_warnings']} with warnings, {summary['ambiguous']} ambiguous, "
            f"{summary['errors']} not analysed")
    if skipped:
        foot += f"; {len(skipped)} logs without a checkpoint were skipped (--format json lists them)"
    return table + "\n\n" + foot
