"""Read logged validation losses (CSV, JSON Lines, DataFrame, mapping, sequence) into a ``LossLog``.

Values stay bit-exact; duplicate, unsorted or missing epochs and NaN losses are reported, never repaired.

Rules:
    * Exact floats. A CSV is read by pandas as strings (``dtype=str``, no NA filtering) and each cell goes
      through Python's ``float()``, so a value written with ``repr(float)`` reads back bit-identical.
      JSON Lines are read with ``json.loads`` per line (``NaN``/``Infinity`` accepted); a string ``"nan"``
      counts as a number too.
    * Not logged vs NaN. An empty or blank cell, JSON ``null`` or a missing key means "not logged on this
      row"; the literals ``nan``, ``inf``, ``-inf``, ``Infinity`` are real values. A row that does not log
      the metric is not an entry (its line goes to ``skipped_lines``); a row whose metric is NaN is one.
      A DataFrame cannot tell the two apart, so there NaN/None/NA mean "not logged" (pass the file, or a
      DataFrame read with ``dtype=str, keep_default_na=False``, to keep NaN losses); in a mapping or a
      sequence only ``None`` does.
    * Format. A file whose first non-blank character is ``{`` is JSON Lines, anything else is CSV
      (tab-separated when the header has tabs and no commas); the file name is not used.
      ``fmt="csv"``/``"jsonl"`` overrides the guess. Blank lines are skipped; line numbers stay the file's.
    * Names are compared normalised: lowercase, with ``/``, ``-``, ``.`` and space turned into ``_``.
    * Metric column: the first present of val_loss, valid_loss, validation_loss, eval_loss, val_loss_epoch,
      val_epoch_loss, loss_val, loss_valid, loss_validation; else the single column whose ``_``-separated
      words include ``loss`` and one of val, valid, validation, eval. Several such columns, or none, is an
      error: choose with ``metric=`` (``--metric``).
    * Epoch column: the first present of epoch, epochs, ep, then step, _step, global_step, iteration, iter.
      Without one, the epochs are 1..n in entry order (the n-th ``scheduler.step()`` call). Integral floats
      (HF's ``19.0``) become ints; ``19.5`` stays a float.
    * LR columns: ``lr`` or ``learning_rate``, alone or followed by a separator and a suffix (``lr_0``,
      ``lr-SGD``, ``lr-SGD/pg1``), with at least one number in the column. One column per param group: the
      one without a trailing number first (Lightning's ``lr-SGD`` is group 0), then by trailing number
      (``pg1``, ``_1``); ties keep file order. If several optimizers are logged (``lr-SGD``, ``lr-Adam``),
      only the family of the first one is used and the others stay in ``columns``.
    * Interleaved rows (Lightning CSVLogger, HF log_history). An LR missing on the entry's row is the last
      LR logged since the previous entry (Lightning's epoch-start row, HF's train log), i.e. the LR used
      during that epoch. Any other column missing on the entry's row is taken from the nearest row between
      the previous and the next entry with the same epoch label, earlier rows first (Lightning writes
      train_loss_epoch after val_loss). A column with a non-numeric cell is left out of ``columns``.
    * Errors. A non-numeric metric, epoch or LR cell, an empty or non-finite epoch on an entry, or a missing
      column raises ``LossLogError`` naming the file, the line (1-based, header = line 1; the 0-based row
      for in-memory sources) and the column.
    * Anomalies. Duplicate epochs, epochs going back, gaps between integer epochs (epoch-named columns
      only), non-finite metrics and missing LRs are listed in ``LossLog.anomalies``; no entry is dropped.
"""

from __future__ import annotations

import io
import json
import math
import numbers
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from plateau_forensics.errors import LossLogError
from plateau_forensics.precision import EXACT, Precision, column_precision, concat, float32_precision
from plateau_forensics.textlog import looks_like_text_log, parse_text_log

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LogAnomaly", "LossLog", "normalize", "read_losses", "stitch"]

Epoch = int | float
METRIC_NAMES = ("val_loss", "valid_loss", "validation_loss", "eval_loss", "val_loss_epoch", "val_epoch_loss",
                "loss_val", "loss_valid", "loss_validation")
EPOCH_NAMES = ("epoch", "epochs", "ep")
STEP_NAMES = ("step", "_step", "global_step", "iteration", "iter")
_VAL_WORDS = frozenset({"val", "valid", "validation", "eval"})
_LR = re.compile(r"(lr|learning_rate)(_.*)?")
_BAD = object()  # marks a cell that is neither empty nor a number


def normalize(name: str) -> str:
    """Return the column name as detection compares it: lowercase, ``/ - . space`` turned into ``_``."""
    return re.sub(r"[/\-. ]", "_", name.strip().lower())


@dataclass(frozen=True)
class LogAnomaly:
    """One irregularity found in a loss log; reported so that nothing is silently repaired.

    Attributes:
        kind: ``duplicate-epochs``, ``unsorted-epochs``, ``epoch-gap``, ``non-finite-metric``,
            ``lr-missing``.
        rows: Entry indexes (into ``LossLog.metrics``) involved, in order.
        epochs: The epoch labels of those entries.
        message: One plain-English line naming the epochs and file lines.
    """

    kind: str
    rows: tuple[int, ...]
    epochs: tuple[Epoch, ...]
    message: str


@dataclass(frozen=True)
class LossLog:
    """The metric values a scheduler would have been stepped with, one entry per logged value, in log order.

    Frozen so that a log can be shared between the replay and the report without either changing the evidence.

    Attributes:
        source: The file path, or ``<sequence>``, ``<mapping>``, ``<records>``, ``<DataFrame>``.
        metric_column: The column holding the metric.
        epoch_column: The epoch column, or None when epochs are 1..n in entry order.
        lr_columns: One LR column per param group, in group order; ``()`` if none.
        epochs: The log's epoch label of each entry (int when integral).
        metrics: The metric of each entry, exact floats; NaN and inf kept.
        lrs: Per entry, per group LR (None = not logged), or None without LR columns.
        lines: File line of each entry (1-based, header = 1); 0-based row for in-memory sources.
        columns: Every other numeric column, aligned to the entries (None = not logged).
        anomalies: Irregularities found, see ``LogAnomaly``.
        skipped_lines: Lines (or rows) that do not log the metric, so are not entries.
    """

    source: str
    metric_column: str
    epoch_column: str | None
    lr_columns: tuple[str, ...]
    epochs: tuple[Epoch, ...]
    metrics: tuple[float, ...]
    lrs: tuple[tuple[float | None, ...], ...] | None
    lines: tuple[int, ...]
    columns: Mapping[str, tuple[float | None, ...]]
    anomalies: tuple[LogAnomaly, ...]
    skipped_lines: tuple[int, ...] = ()
    #: for a stitched log, the entry index where each later log begins (a resume each)
    boundaries: tuple[int, ...] = ()
    #: how precisely each column was written (metric, lr and other columns), aligned to the entries;
    #: a column absent here is exact
    precision: Mapping[str, Precision] = field(default_factory=lambda: MappingProxyType({}))

    def precision_of(self, column: str) -> Precision:
        """The precision of ``column`` (exact unless the log wrote it rounded)."""
        return self.precision.get(column, EXACT)

    def metric_interval(self, i: int) -> tuple[float, float]:
        """The interval entry ``i``'s metric stands for (a point for an exact log)."""
        return self.precision_of(self.metric_column).interval(i, self.metrics[i])

    def column_interval(self, column: str, i: int) -> tuple[float, float] | None:
        """The interval entry ``i`` of another numeric column stands for, or None when it was not logged."""
        v = self.columns[column][i]
        return None if v is None else self.precision_of(column).interval(i, v)

    def lr_intervals(self, i: int) -> tuple[tuple[float, float] | None, ...] | None:
        """Per logged group, the interval entry ``i``'s lr stands for (None for a group not logged on this row,
        trailing ones dropped); None when no group's lr is logged."""
        if self.lrs is None or self.lrs[i] is None:
            return None
        out = [None if v is None else self.precision_of(c).interval(i, v)
               for c, v in zip(self.lr_columns, self.lrs[i])]
        while out and out[-1] is None:
            out.pop()
        return tuple(out) if out else None

    def pick_rows(self, keep: Sequence[int]) -> LossLog:
        """The log with only the entries ``keep`` (in that order); boundaries move with them, anomalies are
        recomputed."""
        def pick(values: Sequence[Any]) -> tuple[Any, ...]:
            return tuple(values[i] for i in keep)

        kept = set(keep)
        bounds = tuple(sorted({sum(1 for k in keep if k < b) for b in self.boundaries} - {0, len(keep)}))
        log = replace(self, epochs=pick(self.epochs), metrics=pick(self.metrics), lines=pick(self.lines),
                      lrs=None if self.lrs is None else pick(self.lrs), boundaries=bounds,
                      columns=MappingProxyType({k: pick(v) for k, v in self.columns.items()}),
                      precision=MappingProxyType({k: p.pick(keep) for k, p in self.precision.items()}))
        del kept
        return replace(log, anomalies=_anomalies(log))

    def __len__(self) -> int:
        """Return the number of entries."""
        return len(self.metrics)

    def surviving_history(self) -> tuple[LossLog, tuple[int, ...]]:
        """Keep only the last run's entries after a crash and an appended resume.

        An entry is dropped when a later entry has an epoch less than or equal to its own (the later run
        restarted at or before it). Logs without an epoch column are returned whole. Does not mutate.

        Returns:
            The new log (anomalies recomputed) and the dropped entry indexes, ascending.
        """
        keep: list[int] = []
        floor: float = math.inf
        for i in reversed(range(len(self))):
            if self.epoch_column is None or self.epochs[i] < floor:
                keep.append(i)
                floor = self.epochs[i]
        keep.reverse()
        dropped = tuple(sorted(set(range(len(self))) - set(keep)))
        return self.pick_rows(keep), dropped


def read_losses(
    source: str | os.PathLike[str] | pd.DataFrame | pd.Series | Mapping[str, Sequence[Any]] | Sequence[Any],
    *,
    metric: str | None = None,
    epoch_column: str | None = None,
    lr_columns: Sequence[str] | None = None,
    fmt: Literal["auto", "csv", "jsonl", "text"] = "auto",
) -> LossLog:
    """Read a loss log into a ``LossLog`` following the module's rules.

    Args:
        source: A CSV/TSV or JSON Lines path, a DataFrame or Series, a mapping of column -> values, a sequence
            of row mappings (e.g. HF's ``log_history``), or a sequence of metric values.
        metric: The metric column; detected when None.
        epoch_column: The epoch column; detected when None.
        lr_columns: The LR column of each param group, in group order; detected when None.
        fmt: Force the file format instead of guessing it from the content.

    Returns:
        The entries, their epochs, LRs, other numeric columns and the anomalies found.

    Raises:
        LossLogError: The file can't be read, a column is missing or ambiguous, or a cell is not a number.

    Example:
        >>> read_losses([0.9, 0.7, float("nan")]).epochs
        (1, 2, 3)
    """
    if isinstance(source, (str, os.PathLike)):
        from plateau_forensics.tensorboard_log import is_tensorboard, read_event_scalars

        if is_tensorboard(source):
            records, _tags, notices = read_event_scalars(source)
            log = read_losses(records, metric=metric, epoch_column=epoch_column, lr_columns=lr_columns)
            purges = tuple(LogAnomaly("tensorboard-purge", (), (), _purge_text(os.fspath(source), n))
                           for n in notices if "purging" in n.lower())
            f32 = {c: float32_precision(v) for c, v in
                   [(log.metric_column, log.metrics), *log.columns.items(),
                    *((c, [row[g] for row in (log.lrs or ())]) for g, c in enumerate(log.lr_columns))]}
            return replace(log, source=os.fspath(source), precision=MappingProxyType(f32),
                           anomalies=tuple(replace(a, message=a.message.replace("<records>", os.fspath(source)))
                                           for a in log.anomalies) + purges)
    src, header, rows, lines = _load(source, fmt, metric)
    metric = header[0] if src == "<sequence>" else metric
    if len(set(header)) != len(header):
        dup = next(c for c in header if header.count(c) > 1)
        raise LossLogError(f"{src}: column '{dup}' appears more than once in the header")
    where = "row" if src.startswith("<") else "line"
    parsed = [{c: _num(row.get(c)) for c in header} for row in rows]

    def check(col: str) -> str:
        for p, row, n in zip(parsed, rows, lines):
            if p[col] is _BAD:
                raise LossLogError(f"{src}: {where} {n}, column '{col}': {row[col]!r} is not a number")
        return col

    mcol = check(_metric_column(src, header, metric))
    if epoch_column is not None:
        ecol: str | None = check(_pick(src, header, epoch_column, "--epoch-column"))
    else:
        ecol = next((c for name in EPOCH_NAMES + STEP_NAMES for c in header
                     if normalize(c) == name and c != mcol), None)
        if ecol is not None:
            check(ecol)
    if lr_columns is not None:
        lcols = tuple(check(_pick(src, header, c, "--lr-column")) for c in lr_columns)
    else:
        numeric = [c for c in header if any(isinstance(p[c], float) for p in parsed)]
        lcols = tuple(check(c) for c in _lr_columns([c for c in numeric if c not in (mcol, ecol)]))

    entries = [i for i, p in enumerate(parsed) if p[mcol] is not None]
    if not entries:
        raise LossLogError(f"{src}: column '{mcol}' has no values")
    if ecol is None:
        epochs: list[Epoch] = list(range(1, len(entries) + 1))
    else:
        epochs = []
        for i in entries:
            e = parsed[i][ecol]
            if e is None:
                raise LossLogError(f"{src}: {where} {lines[i]}, column '{ecol}' is empty on a row that logs "
                                   f"'{mcol}' (choose another with --epoch-column)")
            if not math.isfinite(e):
                raise LossLogError(f"{src}: {where} {lines[i]}, column '{ecol}': {rows[i][ecol]!r} "
                                   "is not a finite number")
            epochs.append(int(e) if e.is_integer() else e)

    sources: dict[str, tuple[int | None, ...]] = {}

    def attach(col: str, lr: bool) -> tuple[float | None, ...]:
        out, src_rows = [], []
        for k, r in enumerate(entries):
            lo = entries[k - 1] if k else -1
            hi = entries[k + 1] if k + 1 < len(entries) else len(parsed)
            near = [r, *range(r - 1, lo, -1)] + ([] if lr or ecol is None else [*range(r + 1, hi)])
            if not lr and ecol is not None:
                near = [j for j in near if parsed[j][ecol] == parsed[r][ecol]]
            j = next((j for j in near if parsed[j][col] is not None), None)
            out.append(None if j is None else parsed[j][col])
            src_rows.append(j)
        sources[col] = tuple(src_rows)
        return tuple(out)

    def precision(col: str) -> Precision:
        rows_of = sources.get(col) or tuple(entries)
        return column_precision([None if j is None else _text(rows[j].get(col)) for j in rows_of],
                                lr=col in lcols)

    others = {c: attach(c, lr=False) for c in header if c not in (mcol, ecol, *lcols)
              and all(p[c] is not _BAD for p in parsed)}
    lr_values = tuple(zip(*(attach(c, lr=True) for c in lcols))) if lcols else None
    kept_others = {c: v for c, v in others.items() if any(x is not None for x in v)}
    precisions = {c: p for c in (mcol, *lcols, *kept_others) if not (p := precision(c)).exact}
    log = LossLog(
        source=src, metric_column=mcol, epoch_column=ecol, lr_columns=lcols, epochs=tuple(epochs),
        metrics=tuple(parsed[i][mcol] for i in entries),
        lrs=lr_values,
        lines=tuple(lines[i] for i in entries),
        columns=MappingProxyType(kept_others),
        anomalies=(), skipped_lines=tuple(n for p, n in zip(parsed, lines) if p[mcol] is None),
        precision=MappingProxyType(precisions),
    )
    return replace(log, anomalies=_anomalies(log))


class _JsonFloat(float):
    """A JSON number that remembers how it was written (its precision)."""

    text: str

    def __new__(cls, text: str) -> _JsonFloat:
        obj = super().__new__(cls, text)
        obj.text = text
        return obj


def _text(value: object) -> str | None:
    """The text a cell was written as, when it was text (a CSV cell, a JSON number), else None."""
    if isinstance(value, str):
        return value
    return getattr(value, "text", None)


def _num(value: object) -> float | None | object:
    """Parse one cell: None when not logged, a float, or ``_BAD``."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return float(value) if value.strip() else None
        except ValueError:
            return _BAD
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return _BAD
    return float(value)


_Table = tuple[str, list[str], list[dict[str, Any]], list[int]]  # name, header, rows, line or row numbers


def _load(source: object, fmt: str, metric: str | None) -> _Table:
    """Turn any supported source into a table of raw cells."""
    pd = sys.modules.get("pandas")  # a DataFrame can only exist if pandas is already imported
    if pd is not None and isinstance(source, pd.Series):
        source = source.to_frame(name=metric or (source.name if source.name is not None else "metric"))
    if pd is not None and isinstance(source, pd.DataFrame):
        header = [str(c) for c in source.columns]
        cols = [source.iloc[:, j].tolist() for j in range(source.shape[1])]
        missing = [None, pd.NA, pd.NaT]
        rows = [{h: None if any(v is m for m in missing) or (isinstance(v, float) and math.isnan(v))
                 else v for h, v in zip(header, vals)} for vals in zip(*cols)]
        return "<DataFrame>", header, rows, list(range(len(rows)))
    if isinstance(source, (str, os.PathLike)):
        return _read_file(str(os.fspath(source)), fmt)
    if isinstance(source, Mapping):
        header = [str(k) for k in source]
        cols = [list(v) for v in source.values()]
        if len({len(c) for c in cols}) > 1:
            sizes = ", ".join(f"{h}: {len(c)}" for h, c in zip(header, cols))
            raise LossLogError(f"<mapping>: columns have different lengths ({sizes})")
        rows = [dict(zip(header, vals)) for vals in zip(*cols)]
        return "<mapping>", header, rows, list(range(len(cols[0]) if cols else 0))
    if isinstance(source, Sequence) and not isinstance(source, bytes):
        if source and all(isinstance(r, Mapping) for r in source):
            header = list(dict.fromkeys(str(k) for r in source for k in r))
            rows = [{str(k): v for k, v in r.items()} for r in source]
            return "<records>", header, rows, list(range(len(source)))
        name = metric or "metric"
        return "<sequence>", [name], [{name: v} for v in source], list(range(len(source)))
    raise TypeError(f"read_losses() cannot read a {type(source).__name__}")


def _read_file(path: str, fmt: str) -> _Table:
    """Read a CSV/TSV or JSON Lines file, skipping blank lines but keeping line numbers."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        raise LossLogError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise LossLogError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise LossLogError(f"{path}: cannot read the file ({exc.strerror})") from None
    if not text.strip():
        raise LossLogError(f"{path}: the file is empty")
    if fmt == "jsonl" or (fmt == "auto" and text.lstrip().startswith("{")):
        seen: dict[str, None] = {}
        rows, lines = [], []
        for n, line in enumerate(text.split("\n"), 1):
            if line.strip():
                try:
                    obj = json.loads(line, parse_float=_JsonFloat)
                except json.JSONDecodeError as exc:
                    raise LossLogError(f"{path}: line {n} is not valid JSON ({exc.msg})") from None
                if not isinstance(obj, dict):
                    raise LossLogError(f"{path}: line {n} is not a JSON object")
                seen.update(dict.fromkeys(obj))
                rows.append(obj)
                lines.append(n)
        return path, list(seen), rows, lines
    if fmt == "text" or (fmt == "auto" and looks_like_text_log(text)):
        header, cells, numbers = parse_text_log(text, path)
        if not cells:
            raise LossLogError(f"{path}: no line of this printed log has 'key: number' pairs")
        return path, header, cells, numbers
    import pandas as pd

    split = text.split("\n")
    skip = next(i for i, line in enumerate(split) if line.strip())  # blank lines above the header
    try:  # header=None: a row with more fields than the header is an error, not an index column
        frame = pd.read_csv(io.StringIO("\n".join(split[skip:])), header=None, dtype=str,
                            keep_default_na=False, na_filter=False, skip_blank_lines=False,
                            sep="\t" if "\t" in split[skip] and "," not in split[skip] else ",")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        reason = str(exc).strip().split("C error: ")[-1]
        reason = re.sub(r"line (\d+)", lambda m: f"line {int(m[1]) + skip}", reason)
        raise LossLogError(f"{path}: not a well-formed CSV file ({reason})") from None
    table = list(zip(*(frame[c].tolist() for c in frame.columns)))
    header = [str(c) for c in table[0]]
    body = [(n, r) for n, r in enumerate(table[1:], skip + 2) if any(str(c).strip() for c in r)]
    return path, header, [dict(zip(header, r)) for _, r in body], [n for n, _ in body]


def _pick(src: str, header: list[str], name: str, flag: str) -> str:
    """Return the column the user named (exactly, else by normalised name) or raise listing the columns."""
    hits = [c for c in header if c == name] or [c for c in header if normalize(c) == normalize(name)]
    if len(hits) != 1:
        raise LossLogError(f"{src}: no column '{name}'; columns are: {', '.join(header)} "
                           f"(choose one with {flag})")
    return hits[0]


def _metric_column(src: str, header: list[str], metric: str | None) -> str:
    """Detect the validation-loss column, or raise when there is none or several."""
    if metric is not None:
        return _pick(src, header, metric, "--metric")
    words = {c: normalize(c).split("_") for c in header}
    hits = next(([c for c in header if normalize(c) == name] for name in METRIC_NAMES
                 if name in map(normalize, header)), None)
    if hits is None:
        hits = [c for c in header if "loss" in words[c] and _VAL_WORDS.intersection(words[c])]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise LossLogError(f"{src}: several validation-loss columns: {', '.join(hits)} "
                           "(choose one with --metric)")
    raise LossLogError(f"{src}: no validation-loss column; columns are: {', '.join(header)} "
                       "(choose one with --metric)")


def _lr_columns(candidates: list[str]) -> tuple[str, ...]:
    """Return the LR columns of the first optimizer family, in param-group order."""
    found = []
    for pos, col in enumerate(candidates):
        norm = normalize(col)
        if _LR.fullmatch(norm):
            group = re.search(r"(\d+)$", norm)
            found.append((re.sub(r"_?(pg)?\d+$", "", norm), -1 if group is None else int(group[1]), pos, col))
    return tuple(f[3] for f in sorted(found) if f[0] == found[0][0]) if found else ()


def _anomalies(log: LossLog) -> tuple[LogAnomaly, ...]:
    """List duplicate, backward and skipped epochs, non-finite metrics and missing LRs."""
    unit = "row" if log.source.startswith("<") else "line"

    def listing(values: Sequence[object]) -> str:
        shown = ", ".join(map(str, values[:8]))
        return shown + (f" and {len(values) - 8} more" if len(values) > 8 else "")

    def at(idx: Sequence[int]) -> str:
        return f"{unit}{'s' if len(idx) > 1 else ''} {listing([log.lines[i] for i in idx])}"

    def anomaly(kind: str, idx: list[int], text: str) -> LogAnomaly:
        return LogAnomaly(kind, tuple(idx), tuple(log.epochs[i] for i in idx), f"{text} ({at(idx)})")

    out: list[LogAnomaly] = []
    if log.epoch_column is not None:
        seen: dict[Epoch, list[int]] = {}
        for i, e in enumerate(log.epochs):
            seen.setdefault(e, []).append(i)
        out += [anomaly("duplicate-epochs", idx, f"epoch {e} appears {len(idx)} times")
                for e, idx in seen.items() if len(idx) > 1]
        gaps = normalize(log.epoch_column) in EPOCH_NAMES
        for i, (a, b) in enumerate(zip(log.epochs, log.epochs[1:]), 1):
            if b < a:
                out.append(anomaly("unsorted-epochs", [i - 1, i], f"epoch goes back from {a} to {b}"))
            elif gaps and isinstance(a, int) and isinstance(b, int) and b > a + 1:
                text = f"epoch jumps from {a} to {b}, {b - a - 1} missing"
                out.append(anomaly("epoch-gap", [i - 1, i], text))
    bad = [i for i, m in enumerate(log.metrics) if not math.isfinite(m)]
    if bad:
        out.append(anomaly("non-finite-metric", bad, f"{log.metric_column} is not finite at epoch"
                           f"{'s' if len(bad) > 1 else ''} {listing([log.epochs[i] for i in bad])}"))
    for g, col in enumerate(log.lr_columns):
        miss = [i for i, lrs in enumerate(log.lrs or ()) if lrs[g] is None]
        if miss:
            out.append(anomaly("lr-missing", miss, f"no '{col}' logged for epoch"
                               f"{'s' if len(miss) > 1 else ''} {listing([log.epochs[i] for i in miss])}"))
    return tuple(out)


def stitch(logs: Sequence[LossLog]) -> LossLog:
    """Join logs written one after another (a resume per file, e.g. Lightning's version_0, version_1) in order.

    Entries keep their order; where a later log starts at or before an epoch an earlier one reached, the
    overlap is reported (``overlapping-logs``) and the usual duplicate-epoch anomalies appear, so the replay
    can keep the last run's rows (``surviving_history``). Nothing is dropped here.

    Raises:
        LossLogError: the logs monitor different metric columns or log a different number of lr groups.
    """
    if len(logs) == 1:
        return logs[0]
    first = logs[0]
    for log in logs[1:]:
        if normalize(log.metric_column) != normalize(first.metric_column):
            raise LossLogError(f"{log.source}: monitors '{log.metric_column}' but {first.source} monitors "
                               f"'{first.metric_column}' (choose one with --metric)")
    n_groups = {len(log.lr_columns) for log in logs if log.lrs is not None}
    lrs: tuple[tuple[float | None, ...], ...] | None = None
    if n_groups:
        width = max(n_groups)
        lrs = tuple(row + (None,) * (width - len(row)) for log in logs
                    for row in (log.lrs or ((None,) * width,) * len(log)))
    overlaps = []
    for prev, nxt in zip(logs, logs[1:]):
        if len(prev) and len(nxt) and nxt.epochs[0] <= prev.epochs[-1]:
            overlaps.append(f"{nxt.source} starts at epoch {nxt.epochs[0]} but {prev.source} reached "
                            f"{prev.epochs[-1]}")
    columns = {c: tuple(v for log in logs for v in log.columns.get(c, (None,) * len(log)))
               for c in {c for log in logs for c in log.columns}}
    log = LossLog(
        source=" + ".join(log.source for log in logs), metric_column=first.metric_column,
        epoch_column=first.epoch_column, lr_columns=max((log.lr_columns for log in logs), key=len),
        epochs=tuple(e for log in logs for e in log.epochs), metrics=tuple(m for log in logs for m in log.metrics),
        lrs=lrs, lines=tuple(n for log in logs for n in log.lines), columns=MappingProxyType(columns),
        anomalies=(), skipped_lines=(),
        boundaries=tuple(sum(len(x) for x in logs[:i]) for i in range(1, len(logs))),
    )
    def part(x: LossLog, own: str | None) -> tuple[Precision, int]:
        return (x.precision_of(own) if own is not None else EXACT), len(x)

    precision = {first.metric_column: concat([part(x, x.metric_column) for x in logs])}
    for g, col in enumerate(log.lr_columns):
        precision[col] = concat([part(x, x.lr_columns[g] if g < len(x.lr_columns) else None) for x in logs])
    for col in log.columns:
        precision[col] = concat([part(x, col if col in x.columns else None) for x in logs])
    precision = {c: p for c, p in precision.items() if not p.exact}
    extra = tuple(LogAnomaly("overlapping-logs", (), (), text) for text in overlaps)
    return replace(log, anomalies=_anomalies(log) + extra, precision=MappingProxyType(precision))


def without_rows(log: LossLog, rows: Sequence[int]) -> LossLog:
    """The log without the given entries (e.g. a step the training never took); boundaries shift with them."""
    drop = set(rows)
    keep = [i for i in range(len(log)) if i not in drop]

    def pick(values: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(values[i] for i in keep)

    shifted = tuple(b - sum(1 for r in drop if r < b) for b in log.boundaries)
    return replace(log, epochs=pick(log.epochs), metrics=pick(log.metrics), lines=pick(log.lines),
                   lrs=None if log.lrs is None else pick(log.lrs), boundaries=shifted,
                   columns=MappingProxyType({k: pick(v) for k, v in log.columns.items()}),
                   precision=MappingProxyType({k: p.pick(keep) for k, p in log.precision.items()}))


def _purge_text(source: str, notice: str) -> str:
    """TensorBoard's purge warning as a stable sentence (its own text carries wall-clock timestamps)."""
    step = re.search(r"current step: (\d+)", notice)
    removed = re.search(r"Removing (\d+) scalars", notice)
    return (f"{source}: an earlier run's events from step {step.group(1) if step else '?'} on were purged "
            f"({removed.group(1) if removed else '?'} scalars), as TensorBoard does after a crash and "
            "SummaryWriter(purge_step=...); the replay uses what TensorBoard shows")
