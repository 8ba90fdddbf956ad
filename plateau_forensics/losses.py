"""Read logged validation losses (CSV, JSON Lines, printed log, DataFrame, mapping, sequence): a ``LossLog``.

Values stay bit-exact; duplicate, unsorted or missing epochs and NaN losses are reported, never repaired.

Rules:
    * Exact floats. A CSV is tokenised by pandas' C parser as strings (``dtype=object``, no NA filtering) and
      each cell goes through Python's ``float()``, so a value written with ``repr(float)`` reads back
      bit-identical. JSON Lines are decoded line by line by the ``json`` module's C scanner, numbers kept
      as the text they were written as; a string ``"nan"`` or ``"0.5"`` counts as a number too.
    * Strict numbers. A number is ASCII: ``float()`` would also read ``1_000``, Arabic-Indic or full-width
      digits, but a log writer never prints those, so such a cell is not a number (an error naming the line
      when it is the metric, epoch or an lr; the column is left out of ``columns`` otherwise). So is a
      finite literal beyond a float's range (``1e999``); ``inf``/``nan`` literals are real values.
    * Not logged vs NaN. An empty or blank cell, JSON ``null`` or a missing key means "not logged on this
      row"; the literals ``nan``, ``inf``, ``-inf``, ``Infinity`` are real values. A row that does not log
      the metric is not an entry (its line goes to ``skipped_lines``); a row whose metric is NaN is one.
      A DataFrame cannot tell the two apart, so there NaN/None/NA mean "not logged" (pass the file, or a
      DataFrame read with ``dtype=str, keep_default_na=False``, to keep NaN losses); in a mapping or a
      sequence only ``None`` does.
    * Format. A file whose first non-blank character is ``{`` is JSON Lines, a file whose first lines carry
      ``key: number`` pairs is a printed log (``textlog``), anything else is CSV (tab-separated when the
      header has tabs and no commas); the file name is not used. ``fmt="csv"``/``"jsonl"``/``"text"``
      overrides the guess. Blank lines are skipped; line numbers stay the file's.
    * Names are compared normalised: lowercase, with ``/``, ``-``, ``.`` and space turned into ``_``. Two
      columns whose names normalise alike are ambiguous where the name decides something (the metric, the
      epoch, an lr group: ``lr`` and ``LR``): an error asking to choose.
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
      for in-memory sources) and the column; quoted text is cut at 80 characters.
    * Anomalies. Duplicate epochs, epochs going back, gaps between integer epochs (epoch-named columns
      only), non-finite metrics and missing LRs are listed in ``LossLog.anomalies``; no entry is dropped.
      So are what a file says about how it was written: a CSV row with fewer fields than the header
      (``short-rows``: the missing fields are not logged), a last row cut short (``truncated-row``: a crash
      while it was written; it is not read, its numbers may be cut), and a JSON object naming a key twice
      with the same value (``duplicate-keys``; different values are an error).
    * Limits (``logtable``). A file is read only if it is a regular file (a FIFO would block, ``/dev/zero``
      never ends) of at most ``MAX_LOG_BYTES`` (128 MiB), 2,000,000 lines of at most 1 MiB, 10,000 columns
      and 8,000,000 cells (rows x columns); the log it gives holds at most 5,000,000 numbers (entries x
      columns kept). Beyond a limit, an error names it. Cells are kept as compact arrays while reading.
"""

from __future__ import annotations

import gc
import math
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import chain
from operator import countOf, itemgetter
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from plateau_forensics import precision as _prec
from plateau_forensics.errors import LossLogError
from plateau_forensics.logtable import (
    MAX_CELLS,
    MAX_COLUMNS,
    MAX_LINE_BYTES,
    MAX_LINES,
    MAX_LOG_BYTES,
    MAX_VALUES,
    LogTable,
    clip,
    load,
    names_text,
    quote,
)
from plateau_forensics.precision import EXACT, Precision, concat, float32_precision

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FILE_ANOMALIES", "LogAnomaly", "LossLog", "MAX_CELLS", "MAX_COLUMNS", "MAX_LINE_BYTES",
           "MAX_LINES", "MAX_LOG_BYTES", "MAX_VALUES", "column_precision_of", "normalize", "read_losses",
           "stitch"]

Epoch = int | float
METRIC_NAMES = ("val_loss", "valid_loss", "validation_loss", "eval_loss", "val_loss_epoch", "val_epoch_loss",
                "loss_val", "loss_valid", "loss_validation")
EPOCH_NAMES = ("epoch", "epochs", "ep")
STEP_NAMES = ("step", "_step", "global_step", "iteration", "iter")
_VAL_WORDS = frozenset({"val", "valid", "validation", "eval"})
_LR = re.compile(r"(lr|learning_rate)(_.*)?")
#: the kinds of anomaly about the file itself (not about its entries): kept when entries are picked
FILE_ANOMALIES = frozenset({"short-rows", "truncated-row", "duplicate-keys"})
_VECTOR_MIN = 2_048  # entries from which anomalies are found with numpy


def normalize(name: str) -> str:
    """Return the column name as detection compares it: lowercase, ``/ - . space`` turned into ``_``."""
    return re.sub(r"[/\-. ]", "_", name.strip().lower())


@dataclass(frozen=True)
class LogAnomaly:
    """One irregularity found in a loss log; reported so that nothing is silently repaired.

    Attributes:
        kind: ``duplicate-epochs``, ``unsorted-epochs``, ``epoch-gap``, ``non-finite-metric``,
            ``lr-missing``; about the file itself (``rows``/``epochs`` empty, the lines in the message):
            ``short-rows``, ``truncated-row``, ``duplicate-keys``; ``tensorboard-purge``,
            ``overlapping-logs``.
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
    #: entry indexes where a resume shows in the log itself: each later log of a stitched log, and the entry
    #: after a printed ``Resuming from ...`` line (``textlog``)
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
        """Per logged group, the interval entry ``i``'s lr stands for (None for a group not logged on this
        row, trailing ones dropped); None when no group's lr is logged."""
        if self.lrs is None or self.lrs[i] is None:
            return None
        out = [None if v is None else self.precision_of(c).interval(i, v)
               for c, v in zip(self.lr_columns, self.lrs[i], strict=False)]
        while out and out[-1] is None:
            out.pop()
        return tuple(out) if out else None

    def pick_rows(self, keep: Sequence[int]) -> LossLog:
        """The log with only the entries ``keep`` (in that order); boundaries move with them, anomalies are
        recomputed (those about the file itself are kept)."""
        keep = [int(k) for k in keep]
        bounds = tuple(sorted({sum(1 for k in keep if k < b) for b in self.boundaries} - {0, len(keep)}))
        log = replace(self, epochs=_take(self.epochs, keep), metrics=_take(self.metrics, keep),
                      lines=_take(self.lines, keep), lrs=None if self.lrs is None else _take(self.lrs, keep),
                      boundaries=bounds,
                      columns=MappingProxyType({k: _take(v, keep) for k, v in self.columns.items()}),
                      precision=MappingProxyType({k: p.pick(keep) for k, p in self.precision.items()}))
        return replace(log, anomalies=_anomalies(log) + _file_anomalies(self))

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
        if self.epoch_column is None:
            keep = list(range(len(self)))
        elif len(self) >= _VECTOR_MIN and _exact_in_float64(self.epochs):
            import numpy as np

            e = np.array(self.epochs, dtype=np.float64)
            later_min = np.append(np.minimum.accumulate(e[::-1])[::-1][1:], np.inf)
            keep = np.flatnonzero(e < later_min).tolist()
        else:
            keep = []
            floor: float = math.inf
            for i in reversed(range(len(self))):
                if self.epochs[i] < floor:
                    keep.append(i)
                    floor = self.epochs[i]
            keep.reverse()
        dropped = tuple(sorted(set(range(len(self))) - set(keep)))
        return self.pick_rows(keep), dropped


def _take(values: Sequence[Any], keep: Sequence[int]) -> tuple[Any, ...]:
    """``tuple(values[i] for i in keep)`` at C speed."""
    if len(keep) > 1:
        return itemgetter(*keep)(values)  # type: ignore[no-any-return]
    return tuple(values[i] for i in keep)


def _exact_in_float64(epochs: Sequence[Epoch]) -> bool:
    """Every epoch label is exactly a float64 (always true for read logs: labels come from ``float()``)."""
    return -(1 << 53) <= min(epochs) and max(epochs) <= (1 << 53)


def _file_anomalies(log: LossLog) -> tuple[LogAnomaly, ...]:
    return tuple(a for a in log.anomalies if a.kind in FILE_ANOMALIES)


def read_losses(
    source: str | os.PathLike[str] | pd.DataFrame | pd.Series | Mapping[str, Sequence[Any]] | Sequence[Any],
    *,
    metric: str | None = None,
    epoch_column: str | None = None,
    lr_columns: Sequence[str] | None = None,
    fmt: Literal["auto", "csv", "jsonl", "text"] = "auto",
    run: str | None = None,
) -> LossLog:
    """Read a loss log into a ``LossLog`` following the module's rules.

    Args:
        source: A CSV/TSV, JSON Lines or printed-log path, a DataFrame or Series, a mapping of column ->
            values, a sequence of row mappings (e.g. HF's ``log_history``), or a sequence of metric values.
        metric: The metric column; detected when None.
        epoch_column: The epoch column; detected when None.
        lr_columns: The LR column of each param group, in group order; detected when None.
        fmt: Force the file format instead of guessing it from the content.
        run: An MLflow store's run (id or name), see ``mlflow_log``; only for MLflow stores.

    Returns:
        The entries, their epochs, LRs, other numeric columns and the anomalies found.

    Raises:
        LossLogError: The file can't be read or is over a limit, a column is missing or ambiguous, or a cell
            is not a number.

    Example:
        >>> read_losses([0.9, 0.7, float("nan")]).epochs
        (1, 2, 3)
    """
    if isinstance(source, (str, os.PathLike)):
        from plateau_forensics import mlflow_log

        if mlflow_log.is_mlflow(source):  # mlflow.db (SQLite) or an mlruns/ folder, by content
            return mlflow_log.read_mlflow(source, run=run, metric=metric, epoch_column=epoch_column,
                                          lr_columns=lr_columns)
    if run is not None:
        raise LossLogError(f"{source if isinstance(source, (str, os.PathLike)) else '<in-memory log>'}: --run "
                           "selects a run of an MLflow store (mlflow.db or mlruns/), and this is not one")
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
            named = tuple(replace(a, message=a.message.replace("<records>", os.fspath(source)))
                          for a in log.anomalies)
            return replace(log, source=os.fspath(source), precision=MappingProxyType(f32),
                           anomalies=named + purges)
    with _no_gc():  # a long log makes millions of small objects, none in a cycle: the collector finds nothing
        return _build(load(source, fmt, metric), metric, epoch_column, lr_columns)


@contextmanager
def _no_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# -- the log -------------------------------------------------------------------------------------------------
def _build(t: LogTable, metric: str | None, epoch_column: str | None,
           lr_columns: Sequence[str] | None) -> LossLog:
    """The entries of a table following the module's rules."""
    np = t.np
    src, header = t.source, t.header
    metric = header[0] if src == "<sequence>" else metric
    where = "row" if src.startswith("<") else "line"
    lines = t.lines()

    def check(col: str) -> str:
        bad = t.bad(col)
        if bad is not None:
            row, cell, hint = bad
            if isinstance(cell, str) and cell.strip() == col and where == "line":
                raise LossLogError(f"{src}: line {lines[row]} repeats the header (column '{clip(col)}' holds its own "
                                   "name): the file is several logs appended one after another, each run writing "
                                   "its header again; split it there and give the parts in order (plateau-trace "
                                   "CKPT part1.csv part2.csv: each part's start is a resume), or --rules fastai "
                                   "for fastai's history.csv")
            raise LossLogError(f"{src}: {where} {lines[row]}, column '{clip(col)}': {quote(cell)} is not a "
                               f"number{hint}")
        return col

    mcol = check(_metric_column(src, header, metric))
    if epoch_column is not None:
        ecol: str | None = check(_pick(src, header, epoch_column, "--epoch-column"))
    else:
        norm = {c: normalize(c) for c in header}
        ecol = None
        for name in EPOCH_NAMES + STEP_NAMES:
            hits = [c for c in header if norm[c] == name and c != mcol]
            if len(hits) > 1:
                raise LossLogError(f"{src}: columns {names_text(hits)} all read as the epoch column '{name}' "
                                   "(choose one with --epoch-column)")
            if hits:
                ecol = check(hits[0])
                break
    if lr_columns is not None:
        lcols = tuple(check(_pick(src, header, c, "--lr-column")) for c in lr_columns)
    else:
        numeric = [c for c in header if t.numeric(c) and c not in (mcol, ecol)]
        lcols = tuple(check(c) for c in _lr_columns(src, numeric))

    mvals, mpresent = t.dense(mcol)
    entries = np.flatnonzero(mpresent)
    if not len(entries):
        raise LossLogError(f"{src}: column '{clip(mcol)}' has no values")
    labels = e = None
    if ecol is not None:
        evals, epresent = t.dense(ecol)
        missing = np.flatnonzero(~epresent[entries])
        if len(missing):
            raise LossLogError(f"{src}: {where} {lines[entries[missing[0]]]}, column '{clip(ecol)}' is "
                               f"empty on a row that logs '{clip(mcol)}' (choose another with "
                               "--epoch-column)")
        e = evals[entries]
        bad = np.flatnonzero(~np.isfinite(e))
        if len(bad):
            i = int(entries[bad[0]])
            text = t.texts_at(ecol, [i])[0]
            shown = quote(text) if text is not None else repr(float(evals[i]))
            raise LossLogError(f"{src}: {where} {lines[i]}, column '{clip(ecol)}': {shown} is not a "
                               "finite number")
        labels = np.where(epresent & np.isfinite(evals), evals, np.nan)
        del evals, epresent

    # Where each column's value of each entry comes from, then the precisions (their texts are the
    # reader's largest transient), then the tuples the log keeps: the peak is the larger of the two, not both.
    lr_rows = [(c, *_attach(t, c, entries, None)) for c in lcols]
    other_rows = [(c, *_attach(t, c, entries, labels)) for c in header
                  if c not in (mcol, ecol, *lcols) and t.bad(c) is None]
    other_rows = [(c, v, r) for c, v, r in other_rows if (r >= 0).any()]
    n_values = len(entries) * (3 + len(lr_rows) + len(other_rows))
    if t.limits and n_values > MAX_VALUES:
        raise LossLogError(f"{src}: {len(entries):,} entries x {3 + len(lr_rows) + len(other_rows)} numbers "
                           f"each (metric, epoch, line, {len(lr_rows)} lr and {len(other_rows)} other "
                           "columns) "
                           f"is over the {MAX_VALUES:,} numbers a loss log may hold")
    sources = {c: r for c, _, r in (*lr_rows, *other_rows)}
    rows_of = {c: sources.get(c, entries) for c in (mcol, *lcols, *(c for c, _, _ in other_rows))}
    precisions = {c: p for c, p in _precisions(t, rows_of, lcols).items() if not p.exact}
    metrics, entry_lines, skipped = mvals[entries], lines[entries], lines[~mpresent]
    # a printed "Resuming from ..." line before an entry: the log shows a resume there (not before the first)
    restarts = tuple(sorted({int(i) for i in np.searchsorted(entry_lines, t.restart_lines)
                             if 0 < int(i) < len(entries)}))
    del labels, sources, rows_of, mvals, mpresent
    t.release()  # the file's bytes and the columns: what the log keeps is taken out above
    epochs = tuple(range(1, len(entries) + 1)) if e is None else tuple(_epoch_labels(np, e))
    log = LossLog(
        source=src, metric_column=mcol, epoch_column=ecol, lr_columns=lcols, epochs=epochs,
        metrics=tuple(metrics.tolist()),
        lrs=_lr_rows(np, [(v, r) for _, v, r in lr_rows]) if lcols else None,
        lines=tuple(entry_lines.tolist()),
        columns=MappingProxyType({c: _values_at(v, r) for c, v, r in other_rows}),
        anomalies=(), skipped_lines=tuple(skipped.tolist()),
        precision=MappingProxyType(precisions), boundaries=restarts,
    )
    return replace(log, anomalies=_anomalies(log) + tuple(LogAnomaly(k, (), (), m) for k, m in t.notes))


def _attach(t: LogTable, col: str, entries: Any, labels: Any) -> tuple[Any, Any]:
    """(the column's value at each entry's source row, those rows; -1 where none), see ``_source_rows``."""
    values, present = t.dense(col)
    rows = _source_rows(t.np, present, entries, labels, t.n_rows)
    return values[rows], rows


def _epoch_labels(np: Any, e: Any) -> list[Epoch]:
    """Epoch labels: ints where integral (HF's ``19.0``), floats otherwise."""
    integral = e == np.floor(e)
    if integral.all() and (np.abs(e) < 2.0 ** 63).all():
        return e.astype(np.int64).tolist()  # type: ignore[no-any-return]
    out = e.tolist()
    for i in np.flatnonzero(integral).tolist():
        out[i] = int(out[i])
    return out  # type: ignore[no-any-return]


def _source_rows(np: Any, present: Any, entries: Any, labels: Any, n: int) -> Any:
    """Per entry, the row its value of a column comes from (-1: none): the entry's own row, else the nearest
    row back to the previous entry, else (with ``labels``: only rows of the same epoch label) the nearest row
    forward to the next entry."""
    prev = np.concatenate([[-1], entries[:-1]])
    nxt = np.concatenate([entries[1:], [n]])
    if labels is None:
        last = np.maximum.accumulate(np.where(present, np.arange(n), -1))
        j = last[entries]
        return np.where(j > prev, j, -1)
    cand = np.flatnonzero(present & ~np.isnan(labels))  # rows whose label can equal an entry's (finite)
    if not len(cand):
        return np.full(len(entries), -1, dtype=np.int64)
    _, rank = np.unique(np.concatenate([labels[cand], labels[entries]]), return_inverse=True)
    rank = rank.reshape(-1).astype(np.int64)
    rc, re_ = rank[: len(cand)], rank[len(cand):]
    order = np.argsort(rc * (n + 1) + cand, kind="stable")
    keys, rows, ranks = (rc * (n + 1) + cand)[order], cand[order], rc[order]
    pos = np.searchsorted(keys, re_ * (n + 1) + entries, side="right")  # first candidate after the entry
    b = np.maximum(pos - 1, 0)
    back = (pos > 0) & (ranks[b] == re_) & (rows[b] > prev)
    f = np.minimum(pos, len(keys) - 1)
    fwd = (pos < len(keys)) & (ranks[f] == re_) & (rows[f] < nxt)
    return np.where(back, rows[b], np.where(fwd, rows[f], -1))


def _values_at(values: Any, rows: Any) -> tuple[float | None, ...]:
    """The values (one per entry) as a tuple, None where the source row is -1."""
    out = values.tolist()
    for i in (rows < 0).nonzero()[0].tolist():
        out[i] = None
    return tuple(out)


def _lr_rows(np: Any, groups: Sequence[tuple[Any, Any]]) -> tuple[tuple[float | None, ...], ...]:
    """Per entry, the lr of each group (None: not logged) from (values at entries, source rows) per group;
    rows equal bit for bit share one tuple (an lr column holds a handful of values)."""
    if len(groups) == 1 and not (groups[0][1] < 0).any():  # one group, every row logged: its bits are the key
        v = groups[0][0]
        _, first, inverse = np.unique(v.view(np.int64), return_index=True, return_inverse=True)
        rows = [(float(v[i]),) for i in first.tolist()]
        return tuple(map(rows.__getitem__, inverse.reshape(-1).tolist()))
    key = None
    for v, r in groups:  # rank each group's bit patterns (a missing value ranks apart), then rows by ranks
        bits = v.view(np.int64)
        if (r < 0).any():
            _, rank = np.unique(np.where(r >= 0, bits, 0), return_inverse=True)
            rank = np.where(r >= 0, rank.reshape(-1) + 1, 0)
        else:
            _, rank = np.unique(bits, return_inverse=True)
        rank = rank.reshape(-1)
        key = rank if key is None else np.unique(key * (int(rank.max()) + 1) + rank, return_inverse=True)[1]
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    rows = [tuple(None if r[i] < 0 else float(v[i]) for v, r in groups) for i in first.tolist()]
    return tuple(map(rows.__getitem__, inverse.reshape(-1).tolist()))


def _precisions(t: LogTable, rows: Mapping[str, Any], lcols: Sequence[str]) -> dict[str, Precision]:
    """``column_precision`` of each column's texts at its rows: a text with 12 significant digits among the
    first ones settles a ``repr`` column at once; the others are read together, each distinct text once."""
    out: dict[str, Precision] = {}
    for c, r in rows.items():
        if any(x is not None and len(x) >= 12 and (d := _prec._digits(x)) is not None and d[0] >= 12
               for x in t.texts_at(c, r[:64])):
            out[c] = EXACT
    rest = {c: r for c, r in rows.items() if c not in out}
    for c, (uniques, counts, codes) in (t.text_codes(rest) if rest else {}).items():
        out[c] = _precision_of(uniques, counts, codes, lr=c in lcols)
    return out


def column_precision_of(texts: Sequence[str | None], *, lr: bool = False) -> Precision:
    """``precision.column_precision(texts, lr=lr)``, computed once per distinct text instead of once per cell.

    Long logs repeat their texts (an lr column holds a handful, a 4-decimal loss at most 10,000 per unit);
    the rules are column statistics (maxima, and counts of values sharing them), so counting each distinct
    text with its multiplicity gives the same result (``tests/test_losses.py`` compares the two on random
    columns of every format).
    """
    counts = Counter(texts)  # in first-seen order, as the rules read "the first value"
    position = {x: i for i, x in enumerate(counts)}
    return _precision_of(list(counts), list(counts.values()), list(map(position.__getitem__, texts)), lr=lr)


def _precision_of(uniques: Sequence[str | None], counts: Sequence[int], codes: Sequence[int], *, lr: bool
                  ) -> Precision:
    """The precision of a column given its distinct texts (in first-seen order), how often each occurs, and
    which one each value is; the rules of ``precision.column_precision``, with counts."""
    parsed = [_prec._digits(x) if isinstance(x, str) else None for x in uniques]
    known = [(d, k) for d, k in zip(parsed, counts, strict=True) if d is not None]
    if not known or max(d[0] for d, _ in known) >= 12:
        return EXACT
    groups = _prec._groups(parsed)
    padded = any(isinstance(x, str) and _prec._pads(x) for x in uniques)
    if lr:
        fixed = [(d, k) for d, k in known if not d[3]]
        same_decimals = (sum(k for _, k in fixed) >= 3 and len(fixed) >= 2
                         and len({d[2] for d, _ in fixed}) == 1 and fixed[0][0][2] >= 4)
        padded = padded or same_decimals
        half: list[float] = []
        for x, d in zip(uniques, parsed, strict=True):
            if d is None:
                half.append(0.0)
            elif padded:
                half.append(_prec._half(float(x), d, groups))  # type: ignore[arg-type]
            else:  # precision._lr_precision: at least 3 significant digits assumed
                v = abs(float(x))  # type: ignore[arg-type]
                exponent = math.floor(math.log10(v)) if v > 0 and math.isfinite(v) else 0
                half.append(10.0 ** (exponent - max(groups[d[3]][1], 3) + 1) / 2)
        if padded:
            kind, description = _describe_counts(known)
        else:
            sig = max(max(d[0] for d, _ in known), 3)
            kind, description = "significant", f"at least {sig} significant digits"
        return Precision(kind, description, _per_value(half, codes), assumed=not padded)
    if not padded:  # precision._looks_rounded, with counts
        n = sum(k for _, k in known)
        max_dec = max(d[2] for d, _ in known)
        max_sig = max(d[0] for d, _ in known)
        same_dec = sum(k for d, k in known if d[2] == max_dec)
        same_sig = sum(k for d, k in known if d[0] == max_sig)
        if not ((max_dec >= 2 and same_dec * 5 >= n * 4) or (max_sig >= 3 and same_sig * 5 >= n * 4)):
            return EXACT
    half = [0.0 if d is None else _prec._half(float(x), d, groups)  # type: ignore[arg-type]
            for x, d in zip(uniques, parsed, strict=True)]
    return Precision(*_describe_counts(known), _per_value(half, codes))


def _per_value(half: list[float], codes: Any) -> tuple[float, ...]:
    """Each value's half-width (the floats are shared: a long column has few distinct ones)."""
    if isinstance(codes, list):
        return tuple(map(half.__getitem__, codes))
    step = 1 << 16  # an array of codes: turned into ints a slice at a time
    return tuple(chain.from_iterable(map(half.__getitem__, codes[i: i + step].tolist())
                                     for i in range(0, len(codes), step)))


def _describe_counts(known: Sequence[tuple[tuple[int, int, int, bool], int]]) -> tuple[str, str]:
    """``precision._describe`` with counts."""
    fixed = [(d, k) for d, k in known if not d[3]]
    n_fixed = sum(k for _, k in fixed)
    if fixed and n_fixed == sum(k for _, k in known):
        max_dec = max(d[2] for d, _ in fixed)
        if sum(k for d, k in fixed if d[2] == max_dec) * 5 >= n_fixed * 4:
            return "decimals", f"{max_dec} decimals"
    return "significant", f"{max(d[0] for d, _ in known)} significant digits"


def _pick(src: str, header: list[str], name: str, flag: str) -> str:
    """Return the column the user named (exactly, else by normalised name) or raise listing the columns."""
    hits = [c for c in header if c == name] or [c for c in header if normalize(c) == normalize(name)]
    if len(hits) != 1:
        raise LossLogError(f"{src}: no column '{clip(name)}'; columns are: {names_text(header)} "
                           f"(choose one with {flag})")
    return hits[0]


def _metric_column(src: str, header: list[str], metric: str | None) -> str:
    """Detect the validation-loss column, or raise when there is none or several."""
    if metric is not None:
        return _pick(src, header, metric, "--metric")
    norm = {c: normalize(c) for c in header}
    present = set(norm.values())
    hits = next(([c for c in header if norm[c] == name] for name in METRIC_NAMES if name in present), None)
    if hits is None:
        hits = [c for c in header if "loss" in (w := norm[c].split("_")) and _VAL_WORDS.intersection(w)]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise LossLogError(f"{src}: several validation-loss columns: {names_text(hits)} "
                           "(choose one with --metric)")
    raise LossLogError(f"{src}: no validation-loss column; columns are: {names_text(header)} "
                       "(choose one with --metric)")


def _lr_columns(src: str, candidates: list[str]) -> tuple[str, ...]:
    """Return the LR columns of the first optimizer family, in param-group order; two columns that name the
    same group (``lr`` and ``LR``, ``lr_0`` and ``lr-0``) are an error, not two groups."""
    found = []
    for pos, col in enumerate(candidates):
        norm = normalize(col)
        if _LR.fullmatch(norm):
            group = re.search(r"(\d+)$", norm)
            found.append((re.sub(r"_?(pg)?\d+$", "", norm), -1 if group is None else int(group[1]), pos, col))
    if not found:
        return ()
    family = sorted(f for f in found if f[0] == found[0][0])
    for a, b in zip(family, family[1:], strict=False):
        if a[1] == b[1]:
            raise LossLogError(f"{src}: columns '{clip(a[3])}' and '{clip(b[3])}' both read as the lr of "
                               f"param group {max(a[1], 0)} (choose with --lr-column, once per group)")
    return tuple(f[3] for f in family)


def _anomalies(log: LossLog, vectorized: bool | None = None) -> tuple[LogAnomaly, ...]:
    """List duplicate, backward and skipped epochs, non-finite metrics and missing LRs (with numpy from
    ``_VECTOR_MIN`` entries; both ways give the same anomalies)."""
    unit = "row" if log.source.startswith("<") else "line"

    def listing(values: Sequence[object], total: int | None = None) -> str:
        total = len(values) if total is None else total
        shown = ", ".join(map(str, values[:8]))
        return shown + (f" and {total - 8} more" if total > 8 else "")

    def at(idx: Sequence[int]) -> str:
        return f"{unit}{'s' if len(idx) > 1 else ''} {listing([log.lines[i] for i in idx[:8]], len(idx))}"

    def anomaly(kind: str, idx: list[int], text: str) -> LogAnomaly:
        return LogAnomaly(kind, tuple(idx), tuple(log.epochs[i] for i in idx), f"{text} ({at(idx)})")

    if vectorized is None:
        vectorized = len(log) >= _VECTOR_MIN and _exact_in_float64(log.epochs)
    out: list[LogAnomaly] = []
    if log.epoch_column is not None:
        gaps = normalize(log.epoch_column) in EPOCH_NAMES
        if vectorized:
            out += _epoch_anomalies_np(log, anomaly, gaps)
        else:
            seen: dict[Epoch, list[int]] = {}
            for i, e in enumerate(log.epochs):
                seen.setdefault(e, []).append(i)
            out += [anomaly("duplicate-epochs", idx, f"epoch {e} appears {len(idx)} times")
                    for e, idx in seen.items() if len(idx) > 1]
            for i, (a, b) in enumerate(zip(log.epochs, log.epochs[1:], strict=False), 1):
                if b < a:
                    out.append(anomaly("unsorted-epochs", [i - 1, i], f"epoch goes back from {a} to {b}"))
                elif gaps and isinstance(a, int) and isinstance(b, int) and b > a + 1:
                    text = f"epoch jumps from {a} to {b}, {b - a - 1} missing"
                    out.append(anomaly("epoch-gap", [i - 1, i], text))
    if vectorized:
        import numpy as np

        bad = np.flatnonzero(~np.isfinite(np.array(log.metrics, dtype=np.float64))).tolist()
    else:
        bad = [i for i, m in enumerate(log.metrics) if not math.isfinite(m)]
    if bad:
        shown = listing([log.epochs[i] for i in bad[:8]], len(bad))
        out.append(anomaly("non-finite-metric", bad, f"{log.metric_column} is not finite at epoch"
                           f"{'s' if len(bad) > 1 else ''} {shown}"))
    for g, col in enumerate(log.lr_columns):
        get = itemgetter(g)
        if not countOf(map(get, log.lrs or ()), None):
            continue
        miss = [i for i, v in enumerate(map(get, log.lrs or ())) if v is None]
        if miss:
            shown = listing([log.epochs[i] for i in miss[:8]], len(miss))
            out.append(anomaly("lr-missing", miss, f"no '{col}' logged for epoch"
                               f"{'s' if len(miss) > 1 else ''} {shown}"))
    return tuple(out)


def _epoch_anomalies_np(log: LossLog, anomaly: Any, gaps: bool) -> list[LogAnomaly]:
    """Duplicate, backward and skipped epochs with numpy (labels are exact in float64)."""
    import numpy as np

    e = np.array(log.epochs, dtype=np.float64)
    out = []
    if not (e[1:] > e[:-1]).all():  # strictly rising labels have no duplicates: skip the sort
        _, first, inverse, counts = np.unique(e, return_index=True, return_inverse=True, return_counts=True)
        members = np.argsort(inverse.reshape(-1), kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        dup_groups = np.flatnonzero(counts > 1)
        for g in dup_groups[np.argsort(first[dup_groups], kind="stable")].tolist():
            idx = members[starts[g]: starts[g] + counts[g]].tolist()
            text = f"epoch {log.epochs[idx[0]]} appears {len(idx)} times"
            out.append(anomaly("duplicate-epochs", idx, text))
    back = e[1:] < e[:-1]
    jump = np.zeros(len(back), bool)
    if gaps:
        if set(map(type, log.epochs)) == {int}:
            is_int = np.ones(len(e), bool)
        else:
            is_int = np.fromiter((isinstance(x, int) for x in log.epochs), bool, len(log.epochs))
        jump = ~back & is_int[:-1] & is_int[1:] & (e[1:] > e[:-1] + 1)
    for i in (np.flatnonzero(back | jump) + 1).tolist():
        a, b = log.epochs[i - 1], log.epochs[i]
        if b < a:
            out.append(anomaly("unsorted-epochs", [i - 1, i], f"epoch goes back from {a} to {b}"))
        else:
            out.append(anomaly("epoch-gap", [i - 1, i], f"epoch jumps from {a} to {b}, {b - a - 1} missing"))
    return out


def stitch(logs: Sequence[LossLog]) -> LossLog:
    """Join logs written one after another (a resume each, e.g. Lightning's version_0, version_1) in order.

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
            raise LossLogError(f"{log.source}: monitors '{clip(log.metric_column)}' but {first.source} "
                               f"monitors '{clip(first.metric_column)}' (choose one with --metric)")
    n_groups = {len(log.lr_columns) for log in logs if log.lrs is not None}
    lrs: tuple[tuple[float | None, ...], ...] | None = None
    if n_groups:
        width = max(n_groups)
        lrs = tuple(row + (None,) * (width - len(row)) for log in logs
                    for row in (log.lrs or ((None,) * width,) * len(log)))
    overlaps = []
    for prev, nxt in zip(logs, logs[1:], strict=False):
        if len(prev) and len(nxt) and nxt.epochs[0] <= prev.epochs[-1]:
            overlaps.append(f"{nxt.source} starts at epoch {nxt.epochs[0]} but {prev.source} reached "
                            f"{prev.epochs[-1]}")
    columns = {c: tuple(chain.from_iterable(log.columns.get(c, (None,) * len(log)) for log in logs))
               for c in dict.fromkeys(c for log in logs for c in log.columns)}
    log = LossLog(
        source=" + ".join(log.source for log in logs), metric_column=first.metric_column,
        epoch_column=first.epoch_column, lr_columns=max((log.lr_columns for log in logs), key=len),
        epochs=tuple(chain.from_iterable(log.epochs for log in logs)),
        metrics=tuple(chain.from_iterable(log.metrics for log in logs)),
        lrs=lrs, lines=tuple(chain.from_iterable(log.lines for log in logs)),
        columns=MappingProxyType(columns),
        anomalies=(), skipped_lines=(),
        boundaries=tuple(sorted({*(sum(len(x) for x in logs[:i]) for i in range(1, len(logs))),
                                 *(sum(len(x) for x in logs[:i]) + b for i, x in enumerate(logs)
                                   for b in x.boundaries)})),
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
    files = tuple(a for x in logs for a in _file_anomalies(x))
    return replace(log, anomalies=_anomalies(log) + extra + files, precision=MappingProxyType(precision))


def without_rows(log: LossLog, rows: Sequence[int]) -> LossLog:
    """The log without the given entries (e.g. a step the training never took); boundaries shift with them."""
    drop = set(rows)
    keep = [i for i in range(len(log)) if i not in drop]
    shifted = tuple(b - sum(1 for r in drop if r < b) for b in log.boundaries)
    return replace(log, epochs=_take(log.epochs, keep), metrics=_take(log.metrics, keep),
                   lines=_take(log.lines, keep), lrs=None if log.lrs is None else _take(log.lrs, keep),
                   boundaries=shifted,
                   columns=MappingProxyType({k: _take(v, keep) for k, v in log.columns.items()}),
                   precision=MappingProxyType({k: p.pick(keep) for k, p in log.precision.items()}))


def _purge_text(source: str, notice: str) -> str:
    """TensorBoard's purge warning as a stable sentence (its own text carries wall-clock timestamps)."""
    step = re.search(r"current step: (\d+)", notice)
    removed = re.search(r"Removing (\d+) scalars", notice)
    return (f"{source}: an earlier run's events from step {step.group(1) if step else '?'} on were purged "
            f"({removed.group(1) if removed else '?'} scalars), as TensorBoard does after a crash and "
            "SummaryWriter(purge_step=...); the replay uses what TensorBoard shows")
