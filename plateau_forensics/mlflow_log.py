"""Read one run's metrics from an MLflow tracking store: the sqlite store (``mlflow.db``) or the file store
(``mlruns/``), recognised by their content; the result is a ``LossLog`` like every other log.

Rules:
    * The sqlite store is opened read-only (``file:...?mode=ro`` URI, ``query_only``, ``trusted_schema``
      off): a hostile database cannot be written, and its views or triggers are never run. Its ``metrics``
      table (``key, value, timestamp, run_uuid, step, is_nan``) is read with the standard library's
      ``sqlite3``; runs and names come from ``runs`` (``name``) and ``tags`` (``mlflow.runName``),
      experiment names from ``experiments``. MLflow stores a NaN as ``value 0, is_nan 1`` and ±inf as
      ±1.7976931348623157e308: both are read back as NaN / ±inf, and the latter is reported (``mlflow-inf``:
      a logged ±1.797e308 cannot be told apart).
    * The file store: a run folder holds ``meta.yaml`` (``run_id``, ``run_name``, ``lifecycle_stage``) and
      ``metrics/<key>`` files of ``timestamp value step`` lines (a key with ``/`` is a sub-folder); the path
      given may be the store, an experiment folder or a run folder. A symlink loop, a metric that is not a
      regular file, or a bad line is an error naming it.
    * A run is chosen with ``run=`` (``--run``): its id, or its name. Deleted runs are left out unless named
      by id. Several runs and no ``run=``, a name that several runs share, or no such run: an error listing
      them.
    * Order: MLflow's (the sqlite store's ``get_metric_history`` sorts by timestamp, step, value; the file
      store keeps each file's lines in order, files merged by timestamp).
    * Entries: one per value of the metric key (``--metric``; detected like a log column, e.g. ``val_loss``),
      labelled by MLflow's ``step``. Other keys are joined to it by step, as MLflow's charts do: the k-th
      value a key logged at a step goes with the k-th value the metric logged there. ``lr`` / ``lr-<group>``
      keys become the lr columns.
    * Anomalies, never repaired: a key logged twice at the same step (``mlflow-duplicate-step``; the metric's
      also as ``duplicate-epochs``), NaN values (``non-finite-metric``, ``mlflow-nan`` for other keys), steps
      missing from the metric's stride (``mlflow-step-gap``), and a key logged at other steps than the metric
      (``mlflow-different-steps``: lr per batch, val_loss per epoch), where the join by step number may pair
      unrelated values.
    * Limits: at most ``MAX_POINTS`` values for the run, keys of at most 1,000 characters, a lock held longer
      than ``LOCK_TIMEOUT`` seconds is an error (a writer holds the database).
"""

from __future__ import annotations

import errno
import heapq
import math
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from plateau_forensics.errors import LossLogError

__all__ = ["LOCK_TIMEOUT", "MAX_POINTS", "MlflowRun", "is_mlflow", "list_runs", "read_mlflow"]

SQLITE_MAGIC = b"SQLite format 3\x00"
#: seconds to wait for a writer's lock before giving up
LOCK_TIMEOUT = 2.0
#: values (all keys together) one run may hold
MAX_POINTS = 2_000_000
MAX_KEY = 1_000
#: how MLflow's sqlite store keeps +inf / -inf (sqlalchemy_store: a float column cannot hold inf everywhere)
DBL_MAX = 1.7976931348623157e308
STEP = "step"


@dataclass(frozen=True)
class MlflowRun:
    """One run of a store: its id, name (None when unnamed), experiment and lifecycle stage."""

    run_id: str
    name: str | None
    experiment: str | None
    lifecycle_stage: str | None
    #: the run folder (file store) or None (sqlite store)
    folder: str | None = None

    def label(self) -> str:
        """``'name' (id)`` for listings."""
        exp = f", experiment {self.experiment!r}" if self.experiment else ""
        return f"{self.name!r} ({self.run_id}{exp})" if self.name else f"{self.run_id}{exp}"


class _Point(NamedTuple):
    """One logged value (a tuple: a long run has millions)."""

    key: str
    value: float
    step: int
    is_nan: bool
    clamped: bool  # sqlite: ±DBL_MAX, MLflow's stand-in for ±inf


def _err(path: Any, text: str) -> LossLogError:
    return LossLogError(f"{os.fspath(path)}: {' '.join(text.split())}")


# ------------------------------------------------------------------------------------------ recognising


def _is_regular(p: Path) -> bool:
    try:
        return stat.S_ISREG(p.stat().st_mode)
    except OSError:
        return False


def is_sqlite(path: str | os.PathLike[str]) -> bool:
    """A regular file that starts with SQLite's header (whatever its name)."""
    p = Path(path)
    if not _is_regular(p):
        return False
    try:
        with open(p, "rb") as f:
            return f.read(16) == SQLITE_MAGIC
    except OSError:
        return False


def is_mlflow(path: str | os.PathLike[str]) -> bool:
    """An SQLite database (MLflow's sqlite store, checked when read) or a folder holding MLflow runs."""
    p = Path(path)
    if p.is_dir():
        try:
            return bool(_run_folders(p, probe=True))
        except LossLogError:
            return True  # a store with a damaged part: reading it says what is wrong
    return is_sqlite(p)


def _meta(path: Path) -> dict[str, str]:
    """The flat ``key: value`` lines of an MLflow ``meta.yaml`` (quotes stripped); {} if unreadable."""
    out: dict[str, str] = {}
    try:
        if not _is_regular(path) or path.stat().st_size > 1 << 20:
            return out
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        if line[:1].isspace() or ":" not in line:
            continue
        key, _, value = line.partition(":")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def _children(folder: Path) -> Iterator[Path]:
    """Sub-folders (symlinks followed); a symlink loop is an error."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise _err(folder, f"cannot list it ({exc.strerror})") from None
    for entry in entries:
        if entry.is_symlink():
            try:
                os.stat(entry.path)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise _err(entry.path, "a symlink loop") from None
                continue  # a dangling link is no folder
        if entry.is_dir():
            yield Path(entry.path)


def _run_folders(root: Path, probe: bool = False) -> list[tuple[Path, dict[str, str], dict[str, str]]]:
    """(run folder, its meta.yaml, its experiment's meta.yaml) for the run folders at or up to two levels
    below ``root`` (store / experiment / run); the same folder reached twice counts once."""
    found: list[tuple[Path, dict[str, str], dict[str, str]]] = []
    seen: set[str] = set()

    def visit(folder: Path, depth: int, exp_meta: dict[str, str]) -> None:
        meta = _meta(folder / "meta.yaml")
        if meta.get("run_id"):
            real = os.path.realpath(folder)
            if real not in seen:
                seen.add(real)
                found.append((folder, meta, exp_meta))
            return
        if depth == 2:
            return
        for child in _children(folder):
            visit(child, depth + 1, meta if "experiment_id" in meta else exp_meta)
            if probe and found:
                return

    visit(root, 0, {})
    return found


# ------------------------------------------------------------------------------------------ the file store


def _file_runs(root: Path) -> list[MlflowRun]:
    runs = []
    for folder, meta, exp in _run_folders(root):
        name = meta.get("run_name") or None
        tag = folder / "tags" / "mlflow.runName"
        if name is None and _is_regular(tag):
            try:
                name = tag.read_text(encoding="utf-8", errors="replace")[:MAX_KEY].strip() or None
            except OSError:
                pass
        stage = meta.get("lifecycle_stage")
        if exp.get("lifecycle_stage") == "deleted":
            stage = "deleted"
        runs.append(MlflowRun(meta["run_id"], name, exp.get("name") or meta.get("experiment_id"), stage,
                              str(folder)))
    return runs


def _strict_float(text: str) -> float | None:
    low = text.lower()
    if low in ("nan", "inf", "-inf", "infinity", "-infinity", "+inf"):
        return float(low)
    if not text.isascii() or "_" in text:
        return None
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _strict_int(text: str) -> int | None:
    if not text.isascii() or "_" in text or not text.lstrip("-").isdigit():
        return None
    return int(text)


def _file_points(run: MlflowRun) -> list[tuple[int, int, _Point]]:
    """Every value of the run's metric files: (timestamp, file order, point), merged by timestamp."""
    from plateau_forensics.logtable import MAX_LOG_BYTES

    assert run.folder is not None
    metrics = Path(run.folder) / "metrics"
    if not metrics.is_dir():
        return []
    files: list[tuple[str, Path]] = []
    for here, dirs, names in os.walk(metrics, followlinks=False):
        for name in sorted(dirs + names):
            p = Path(here) / name
            try:
                st = os.stat(p)
            except OSError as exc:
                what = "a symlink loop" if exc.errno == errno.ELOOP else f"unreadable ({exc.strerror})"
                raise _err(p, what) from None
            if stat.S_ISDIR(st.st_mode):
                if p.is_symlink():
                    raise _err(p, "a symlink to a folder inside metrics/: not followed")
                continue
            if not stat.S_ISREG(st.st_mode):
                raise _err(p, "not a regular file")
            files.append((p.relative_to(metrics).as_posix(), p))
    total = sum(p.stat().st_size for _, p in files)
    if total > MAX_LOG_BYTES:
        raise _err(metrics, f"{total:,} bytes of metric files (limit {MAX_LOG_BYTES >> 20} MiB)")
    series: list[list[tuple[int, int, _Point]]] = []
    count = 0
    for order, (key, p) in enumerate(sorted(files)):
        if len(key) > MAX_KEY:
            raise _err(p, f"a metric key of {len(key):,} characters")
        pts = []
        with open(p, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                count += 1
                if count > MAX_POINTS:
                    raise _err(metrics, f"over {MAX_POINTS:,} logged values")
                # MLflow before 0.9 wrote 'timestamp value' (step 0)
                ts = _strict_int(parts[0]) if len(parts) in (2, 3) else None
                value = _strict_float(parts[1]) if ts is not None else None
                step = (_strict_int(parts[2]) if len(parts) == 3 else 0) if value is not None else None
                if ts is None or value is None or step is None:
                    shown = line.strip()[:80]
                    raise _err(p, f"line {n}: {shown!r} is not 'timestamp value step'")
                pts.append((ts, order, _Point(key, value, step, math.isnan(value), False)))
        series.append(pts)
    # heapq.merge keeps each file's own order even where its timestamps go back
    return list(heapq.merge(*series, key=lambda x: (x[0], x[1])))


# ------------------------------------------------------------------------------------------ the sqlite store


def _connect(path: Path) -> Any:
    import sqlite3

    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=LOCK_TIMEOUT)
        con.execute("PRAGMA query_only = ON")
        con.execute("PRAGMA trusted_schema = OFF")
    except sqlite3.Error as exc:
        raise _sqlite_error(path, exc) from None
    return con


def _sqlite_error(path: Path, exc: Exception) -> LossLogError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return _err(path, f"the database is locked (a writer has held it over {LOCK_TIMEOUT:g} s); try again "
                          "when the run has closed it, or read a copy")
    return _err(path, f"not a readable SQLite database ({type(exc).__name__}: {text[:120]})")


def _tables(con: Any) -> dict[str, set[str]]:
    names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    out = {}
    for name in names:
        if name in ("metrics", "runs", "tags", "experiments"):
            out[name] = {r[1] for r in con.execute(f"PRAGMA table_info(\"{name}\")")}
    out["*"] = set(names)
    return out


def _sqlite_runs(path: Path, con: Any, tables: dict[str, set[str]]) -> list[MlflowRun]:
    if "metrics" not in tables or not {"key", "value", "step", "run_uuid"} <= tables["metrics"]:
        listing = ", ".join(sorted(tables["*"])[:12]) or "none"
        raise _err(path, f"an SQLite database without MLflow's metrics(key, value, step, run_uuid) table "
                         f"(tables: {listing})")
    names: dict[str, str] = {}
    if "tags" in tables and {"key", "value", "run_uuid"} <= tables["tags"]:
        for rid, value in con.execute("SELECT run_uuid, substr(value, 1, 1000) FROM tags "
                                      "WHERE key = 'mlflow.runName'"):
            names[str(rid)] = str(value)
    experiments: dict[Any, str] = {}
    if "experiments" in tables and {"experiment_id", "name"} <= tables["experiments"]:
        experiments = {e: str(n) for e, n in con.execute("SELECT experiment_id, substr(name, 1, 1000) "
                                                          "FROM experiments")}
    runs: dict[str, MlflowRun] = {}
    cols = tables.get("runs", set())
    if {"run_uuid", "name", "lifecycle_stage", "experiment_id"} <= cols:
        for rid, name, stage, exp in con.execute("SELECT run_uuid, substr(name, 1, 1000), lifecycle_stage, "
                                                 "experiment_id FROM runs ORDER BY start_time, run_uuid"
                                                 if "start_time" in cols else
                                                 "SELECT run_uuid, substr(name, 1, 1000), lifecycle_stage, "
                                                 "experiment_id FROM runs"):
            rid = str(rid)
            runs[rid] = MlflowRun(rid, (name and str(name)) or names.get(rid),
                                  experiments.get(exp, None if exp is None else str(exp)),
                                  None if stage is None else str(stage))
    for (rid,) in con.execute("SELECT DISTINCT run_uuid FROM metrics"):  # runs the runs table lacks
        if str(rid) not in runs:
            runs[str(rid)] = MlflowRun(str(rid), names.get(str(rid)), None, None)
    return list(runs.values())


def _sqlite_points(path: Path, con: Any, run: MlflowRun, tables: dict[str, set[str]]) -> list[_Point]:
    import sqlite3

    has_nan = "is_nan" in tables["metrics"]
    where = "FROM metrics WHERE run_uuid = ?"
    (n,) = con.execute(f"SELECT COUNT(*) {where}", (run.run_id,)).fetchone()
    if n > MAX_POINTS:
        raise _err(path, f"run {run.run_id} holds {n:,} metric values (limit {MAX_POINTS:,})")
    bad = con.execute(
        f"SELECT substr(CAST(key AS TEXT), 1, 80), typeof(key), length(key), typeof(value), "
        f"substr(CAST(value AS TEXT), 1, 80), typeof(step), substr(CAST(step AS TEXT), 1, 80) {where} AND ("
        "typeof(key) != 'text' OR length(key) > ? OR typeof(value) NOT IN ('real', 'integer') "
        "OR typeof(step) != 'integer') LIMIT 1", (run.run_id, MAX_KEY)).fetchone()
    if bad is not None:
        key, tkey, lkey, tval, val, tstep, step = bad
        if tkey != "text" or lkey > MAX_KEY:
            what = (f"a metric key of type {tkey}" if tkey != "text" else
                    f"a metric key of {lkey:,} characters")
        elif tval not in ("real", "integer"):
            what = f"metric {key!r}: a value of type {tval} ({val!r}), not a number"
        else:
            what = f"metric {key!r}: a step of type {tstep} ({step!r}), not an integer"
        raise _err(path, f"run {run.run_id}: {what}")
    # MLflow's own order (SqlAlchemyStore.get_metric_history), then the order rows were written in
    order = "timestamp, step, value, rowid" if "timestamp" in tables["metrics"] else "step, value, rowid"
    flag_column = "is_nan" if has_nan else "0"
    select = f"SELECT key, value, step, {flag_column} {where} ORDER BY "
    try:
        rows = con.execute(select + order, (run.run_id,)).fetchall()
    except sqlite3.OperationalError:  # a WITHOUT ROWID table has no rowid: MLflow's order alone
        rows = con.execute(select + order.replace(", rowid", ""), (run.run_id,)).fetchall()
    nan, inf, ninf = math.nan, math.inf, -math.inf
    out = [_Point(k, nan, n, True, False) if flag else
           _Point(k, float(v), n, False, False) if -DBL_MAX < v < DBL_MAX else
           _Point(k, inf if v > 0 else ninf, n, False, abs(v) == DBL_MAX)
           for k, v, n, flag in rows]  # a REAL column cannot hold NaN: only is_nan says so
    return out


# ------------------------------------------------------------------------------------------ selection


def list_runs(path: str | os.PathLike[str]) -> list[MlflowRun]:
    """Every run of the store at ``path`` (sqlite database or file-store folder), deleted ones included.

    Raises:
        LossLogError: not an MLflow store, unreadable, locked, or damaged.
    """
    p = Path(path)
    if p.is_dir():
        return _file_runs(p)
    if not is_sqlite(p):
        raise _err(p, "not an MLflow store (neither an SQLite database nor a folder of MLflow runs)")
    import sqlite3

    con = _connect(p)
    try:
        return _sqlite_runs(p, con, _tables(con))
    except sqlite3.Error as exc:
        raise _sqlite_error(p, exc) from None
    finally:
        con.close()


def _listing(runs: Sequence[MlflowRun]) -> str:
    shown = "; ".join(r.label() for r in runs[:10])
    return shown + (f"; and {len(runs) - 10} more" if len(runs) > 10 else "")


def _select(path: Path, runs: list[MlflowRun], run: str | None) -> MlflowRun:
    active = [r for r in runs if r.lifecycle_stage != "deleted"]
    if run is None:
        if len(active) == 1:
            return active[0]
        if not active:
            raise _err(path, "an MLflow store without runs" if not runs else
                       f"only deleted runs: {_listing(runs)} (choose one by id with --run)")
        raise _err(path, f"{len(active)} runs: {_listing(active)} (choose one with --run ID-or-NAME)")
    by_id = [r for r in runs if r.run_id == run]
    if by_id:
        return by_id[0]
    by_name = [r for r in active if r.name == run]
    if len(by_name) == 1:
        return by_name[0]
    if by_name:
        raise _err(path, f"{len(by_name)} runs are named {run!r}: {_listing(by_name)} (choose one by id with "
                         "--run)")
    raise _err(path, f"no run with id or name {run[:80]!r}; runs: {_listing(active or runs)}")


def read_points(path: str | os.PathLike[str], run: str | None = None) -> tuple[MlflowRun, list[_Point]]:
    """The chosen run and every value it logged, in logging order (timestamp, then the store's order)."""
    p = Path(path)
    if p.is_dir():
        chosen = _select(p, _file_runs(p), run)
        return chosen, [pt for _, _, pt in _file_points(chosen)]
    if not is_sqlite(p):
        raise _err(p, "not an MLflow store (neither an SQLite database nor a folder of MLflow runs)")
    import sqlite3

    con = _connect(p)
    try:
        tables = _tables(con)
        chosen = _select(p, _sqlite_runs(p, con, tables), run)
        return chosen, _sqlite_points(p, con, chosen, tables)
    except sqlite3.Error as exc:
        raise _sqlite_error(p, exc) from None
    finally:
        con.close()


# ------------------------------------------------------------------------------------------ the log


def _steps_text(steps: Sequence[int]) -> str:
    shown = ", ".join(map(str, steps[:8]))
    return shown + (f" and {len(steps) - 8} more" if len(steps) > 8 else "")


def read_mlflow(
    path: str | os.PathLike[str], *, run: str | None = None, metric: str | None = None,
    epoch_column: str | None = None, lr_columns: Sequence[str] | None = None,
) -> Any:
    """One MLflow run's metrics as a ``LossLog`` (the module's rules); ``read_losses`` calls it for stores.

    Args:
        path: ``mlflow.db`` (any SQLite file) or an ``mlruns/`` store, experiment or run folder.
        run: the run's id or name; needed when the store holds several runs.
        metric: the metric key fed to ``step()``; detected like a log column when None.
        epoch_column: the label of each entry; MLflow's ``step`` when None.
        lr_columns: the lr key of each param group; ``lr`` / ``lr-<group>`` keys when None.

    Raises:
        LossLogError: not a store, no such run or several, a damaged or locked store, no metric key.
    """
    from plateau_forensics.losses import LogAnomaly, _metric_column, read_losses

    src = os.fspath(path)
    chosen, points = read_points(path, run)
    where = f"{src} (run {chosen.run_id})"
    if not points:
        raise _err(path, f"run {chosen.label()} logged no metrics")
    by_key: dict[str, dict[int, list[float]]] = {}
    for pt in points:
        by_key.setdefault(pt.key, {}).setdefault(pt.step, []).append(pt.value)
    if STEP in by_key:
        raise _err(path, f"run {chosen.run_id} logs a metric named {STEP!r}, which is MLflow's step column "
                         "here")
    try:
        mkey = _metric_column(where, list(by_key), metric)
        log = read_losses(_columns(points, mkey), metric=mkey, epoch_column=epoch_column or STEP,
                          lr_columns=lr_columns)
    except LossLogError as exc:
        text = str(exc).replace("<mapping>", where)
        raise LossLogError(text.replace("columns are", "metric keys are")) from None
    named = tuple(replace(a, message=a.message.replace("<mapping>", where)) for a in log.anomalies)
    mine = tuple(LogAnomaly(kind, (), (), f"{where}: {text}")
                 for kind, text in _store_anomalies(points, by_key, mkey, log.lr_columns))
    return replace(log, source=src, anomalies=named + mine)


def _columns(points: Sequence[_Point], mkey: str) -> dict[str, list[Any]]:
    """Columns for ``read_losses`` (None: not logged on a row): the k-th value a key logged at a step joins
    the metric's k-th value at that step (one row); a value with no such metric value is a row of its own.
    Rows keep logging order: a metric row where its metric value was logged, any other where its value was."""
    count: dict[tuple[str, int], int] = {}
    slots = []
    for key, _, step, _, _ in points:
        k = count.get((key, step), 0)
        count[(key, step)] = k + 1
        slots.append((step, k))
    metric_slots = {slot for p, slot in zip(points, slots, strict=True) if p[0] == mkey}
    row_of: dict[Any, int] = {}
    pos: list[int] = []
    steps: list[int] = []
    cells = []
    for i, (p, slot) in enumerate(zip(points, slots, strict=True)):
        at: Any = slot if slot in metric_slots else i
        r = row_of.get(at)
        if r is None:
            r = row_of[at] = len(pos)
            pos.append(i)
            steps.append(p[2])
        elif p[0] == mkey:
            pos[r] = i
        cells.append((r, p[0], p[1]))
    order = sorted(range(len(pos)), key=pos.__getitem__)
    rank = [0] * len(pos)
    for new, old in enumerate(order):
        rank[old] = new
    columns: dict[str, list[Any]] = {STEP: [steps[o] for o in order]}
    for r, key, value in cells:
        col = columns.get(key)
        if col is None:
            col = columns[key] = [None] * len(pos)
        col[rank[r]] = value
    return columns


def _store_anomalies(points: Sequence[_Point], by_key: dict[str, dict[int, list[float]]], mkey: str,
                     lr_columns: Sequence[str]) -> list[tuple[str, str]]:
    """(kind, text) of what the store shows about how the run was logged: see the module's rules."""
    out: list[tuple[str, str]] = []
    for key, steps in by_key.items():
        dups = sorted(s for s, v in steps.items() if len(v) > 1)
        if dups:
            n = max(len(steps[s]) for s in dups)
            differ = [s for s in dups if len(set(map(repr, steps[s]))) > 1]
            how = f"different values at {_steps_text(differ)}" if differ else "the same value each time"
            out.append(("mlflow-duplicate-step", f"{key!r} is logged up to {n} times at the same step "
                        f"(steps {_steps_text(dups)}; {how})"))
    msteps = sorted(by_key[mkey])
    diffs = [b - a for a, b in zip(msteps, msteps[1:], strict=False)]
    if diffs:
        counts: dict[int, int] = {}
        for d in diffs:
            counts[d] = counts.get(d, 0) + 1
        stride = max(counts, key=lambda d: (counts[d], -d))  # the most common stride, the smaller on a tie
        gaps = [(a, b) for a, b in zip(msteps, msteps[1:], strict=False) if b - a > stride]
        if gaps:
            shown = ", ".join(f"{a} to {b}" for a, b in gaps[:8]) + (
                f" and {len(gaps) - 8} more" if len(gaps) > 8 else "")
            per = "" if stride == 1 else f" (it logs every {stride} steps)"
            out.append(("mlflow-step-gap", f"{mkey!r} skips steps{per}: {shown}"))
    mset = set(msteps)
    for key, steps in by_key.items():
        if key == mkey:
            continue
        ksteps = set(steps)
        if ksteps != mset:
            parts = []
            for what, only in ((f"without {mkey!r}", sorted(ksteps - mset)),
                               (f"of {mkey!r} without it", sorted(mset - ksteps))):
                if only:
                    plural = "s" if len(only) > 1 else ""
                    parts.append(f"{len(only)} step{plural} {what} ({_steps_text(only)})")
            hint = (f"; joined by step number: if the two count different things (batches, epochs), the "
                    f"{key} at a {mkey} step is not the lr of that epoch") if key in lr_columns else ""
            out.append(("mlflow-different-steps", f"{key!r} is logged at {len(ksteps)} steps and {mkey!r} at "
                        f"{len(mset)}: {', '.join(parts)}{hint}"))
        nan_steps = sorted(s for s, v in steps.items() if any(x != x for x in v))  # NaN != NaN
        if nan_steps:
            out.append(("mlflow-nan", f"{key!r} is NaN at step{'s' if len(nan_steps) > 1 else ''} "
                        f"{_steps_text(nan_steps)}"))
    clamped = sorted({(pt.key, pt.step) for pt in points if pt.clamped})
    if clamped:
        shown = ", ".join(f"{k!r} at step {s}" for k, s in clamped[:8])
        out.append(("mlflow-inf", "±1.7976931348623157e308 (how MLflow's sqlite store keeps ±inf) read as "
                    f"±inf: {shown}"))
    return out
