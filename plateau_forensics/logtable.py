"""Read a loss log's file (CSV, JSON Lines, printed log) or in-memory source into compact columns.

A ``LogTable`` holds, per column, its numbers (float64, NaN where none), a logged mask and, where the cells
were text, that text (for ``precision``): never a Python object per cell, so a long log costs a small
multiple of its file. ``losses.read_losses`` applies the rules (metric, epoch, lr columns, entries).

What is refused, with one ``LossLogError`` naming the limit: anything that is not a regular file (opened
with ``O_NONBLOCK`` and checked with ``fstat`` before a byte is read, so a FIFO cannot block and
``/dev/zero`` cannot fill memory), a file over ``MAX_LOG_BYTES``, more than ``MAX_LINES`` lines, a line over
``MAX_LINE_BYTES``, more than ``MAX_COLUMNS`` columns or ``MAX_CELLS`` cells, a file that is not UTF-8, a
JSON line nested too deeply or holding an integer too long for ``int()``. Quoted text in messages is cut
at 80 characters.

Numbers: a plain numeric CSV (no quotes, every cell a number or empty) is converted by pandas' C parser,
whose floats equal ``float()`` of the text bit for bit (pandas >= 3.1 has one, correctly rounded,
converter; older pandas is asked for ``float_precision="round_trip"``, which calls Python's own); its texts
are read back from the bytes only where precision needs them. Any other cell goes through ``float()``,
after the strict checks of ``cell()``: ASCII only, no ``_`` digit separators, no finite literal beyond a
float's range.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import numbers
import os
import re
import reprlib
import stat
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import chain, compress
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from plateau_forensics.errors import LossLogError
from plateau_forensics.textlog import TextLogParser, looks_like_text_log

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["MAX_CELLS", "MAX_COLUMNS", "MAX_LINE_BYTES", "MAX_LINES", "MAX_LOG_BYTES", "MAX_VALUES",
           "MAX_JSON_LINES", "MAX_PRINTED_LINES", "BAD", "LogTable",
           "cell", "clip", "load", "names_text", "quote"]

#: A loss log larger than this is refused (1,000,000 rows of ``epoch,val_loss,lr`` in ``repr`` are ~35 MB
#: as CSV, ~65 MB as JSON Lines).
MAX_LOG_BYTES = 128 << 20
#: The longest line (``\n`` or ``\r`` ends one); a CSV row of 1,000 ``repr`` floats is ~20 KB.
MAX_LINE_BYTES = 1 << 20
MAX_LINES = 2_000_000
#: JSON Lines and printed logs are decoded a line at a time in Python (a few microseconds each): fewer lines
MAX_JSON_LINES = 1_250_000
MAX_PRINTED_LINES = 500_000
MAX_COLUMNS = 10_000
#: rows x columns of a file's table (what is held while it is read)
MAX_CELLS = 8_000_000
#: numbers the log keeps: entries x (metric, epoch, line, each lr, each other column); ~5 GB less than a
#: naive reader would need for them, but still Python objects
MAX_VALUES = 5_000_000

BAD = object()  # marks a cell that is neither empty nor a number
_SHOWN = 80  # characters of a cell or a name quoted in a message
_CHUNK_CELLS = 400_000  # cells parsed at a time


# -- quoting -----------------------------------------------------------------------------------------------
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _SHOWN
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxlong = 3, 8, 8, 8, 40


def clip(text: str) -> str:
    """A name as a message shows it: at most 80 characters."""
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text):,} characters)"


def quote(value: object) -> str:
    """A cell as a message shows it: its repr, at most 80 characters of it."""
    if isinstance(value, str):
        return repr(value) if len(value) <= _SHOWN else f"{value[:_SHOWN]!r}... ({len(value):,} characters)"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {value.bit_length():,} bits"  # repr() refuses ints over 4,300 digits
    if isinstance(value, list) and value and all(isinstance(p, tuple) for p in value):
        value = dict(value)  # a JSON object, read as its pairs
    return _REPR.repr(value)


def names_text(names: Sequence[str]) -> str:
    """Column names for a message: as many as fit in about 600 characters (each cut at 80), then a count."""
    shown: list[str] = []
    for name in names:
        if shown and sum(map(len, shown)) + len(clip(name)) > 600:
            break
        shown.append(clip(name))
    rest = len(names) - len(shown)
    return ", ".join(shown) + (f" and {rest:,} more" if rest else "")


def size_text(n: int) -> str:
    """``128 MiB`` / ``1,000 bytes``."""
    return f"{n >> 20} MiB" if n >= 1 << 20 and not n % (1 << 20) else f"{n:,} bytes"


def lines_text(lines: Sequence[int]) -> str:
    """``line 3`` / ``lines 3, 7, ... and 12 more``."""
    shown = ", ".join(map(str, lines[:8]))
    more = f" and {len(lines) - 8:,} more" if len(lines) > 8 else ""
    return f"line{'s' if len(lines) > 1 else ''} {shown}{more}"


# -- cells -------------------------------------------------------------------------------------------------
_SPACES = (" ", "\t", "\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x1f")  # what float() strips, in ASCII


def cell(value: object) -> tuple[float | None | object, str | None, str]:
    """One cell: (its number, None when not logged, or ``BAD``; the text it was written as, None when it was
    not text; why it is not a number, as a message suffix)."""
    if value is None:
        return None, None, ""
    if isinstance(value, str):
        if not value.strip():
            return None, None, ""
        try:
            x = float(value)
        except ValueError:
            return BAD, None, ""
        if not value.isascii():
            return BAD, None, " (written with non-ASCII characters; only ASCII digits are read as numbers)"
        if "_" in value:
            return BAD, None, " (a '_' digit separator, which a log writer never prints)"
        if math.isinf(x) and value.strip().lstrip("+-").lower() not in ("inf", "infinity"):
            return BAD, None, " (beyond a float's range)"
        return x, value, ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return BAD, None, ""
    try:
        return float(value), None, ""
    except (OverflowError, ValueError):
        return BAD, None, " (beyond a float's range)"


class Cells:
    """A run of one column's cells, converted: numbers (NaN where none), a logged mask, a blank mask, the
    texts of the cells joined by NUL ("" for a non-text cell; None when no cell is text), the first bad cell
    (its index, the cell, a hint), and whether any cell is a number."""

    __slots__ = ("bad", "blank", "numeric", "present", "texts", "values")

    def __init__(self, values: np.ndarray, present: np.ndarray, blank: np.ndarray, texts: str | None,
                 bad: tuple[int, object, str] | None) -> None:
        self.values, self.present, self.blank, self.texts, self.bad = values, present, blank, texts, bad
        self.numeric = bool(present.any())

    def take(self, keep: np.ndarray) -> Cells:
        """The cells where ``keep`` is true."""
        texts = None if self.texts is None else "\x00".join(compress(self.texts.split("\x00"), keep.tolist()))
        bad = self.bad
        if bad is not None:
            bad = (int(keep[: bad[0]].sum()), bad[1], bad[2]) if keep[bad[0]] else None
        return Cells(self.values[keep], self.present[keep], self.blank[keep], texts, bad)


def convert(np: Any, cells: Sequence[object]) -> Cells:
    """Convert one column's cells with ``cell()``; runs of plain text or of numbers take a vectorized path
    that gives the same (text: only when no cell holds a character ``cell()`` treats specially)."""
    n = len(cells)
    if not isinstance(cells, list):
        cells = list(cells)
    kinds = set(map(type, cells))
    if kinds == {str}:
        joined = "\x00".join(cells)  # type: ignore[arg-type]
        if (joined.isascii() and "_" not in joined and joined.count("\x00") == n - 1
                and not any(s in joined for s in _SPACES)):
            arr = np.array(cells, dtype=object)
            if n and "\x00\x00" not in joined and joined[:1] != "\x00" and joined[-1:] != "\x00" and joined:
                blank = np.zeros(n, bool)  # no empty cell (it leaves two NULs together or one at an end)
            else:
                blank = arr == ""
            present = ~blank
            try:
                got = (arr if not blank.any() else arr[present]).astype(np.float64)  # float() of each text
            except (ValueError, TypeError):
                pass  # a cell that is not a number: found, with its line, cell by cell below
            else:
                values = np.full(n, np.nan)
                values[present] = got
                inf = np.flatnonzero(np.isinf(values)).tolist()
                if all(str(cells[i]).lstrip("+-").lower() in ("inf", "infinity") for i in inf):
                    return Cells(values, present, blank, joined, None)
    elif kinds and kinds <= {float, int}:
        try:
            values = np.array(cells, dtype=np.float64)
        except OverflowError:
            pass
        else:
            return Cells(values, np.ones(n, bool), np.zeros(n, bool), None, None)
    values = np.full(n, np.nan)
    present = np.zeros(n, bool)
    blank = np.zeros(n, bool)
    texts: list[str] = []
    bad: tuple[int, object, str] | None = None
    for i, c in enumerate(cells):
        x, text, hint = cell(c)
        texts.append(text or "")
        if x is None:
            blank[i] = True
        elif x is BAD:
            if bad is None:
                bad = (i, c, hint)
        else:
            values[i] = x
            present[i] = True
    return Cells(values, present, blank, "\x00".join(texts) if any(texts) else None, bad)


# -- the table ---------------------------------------------------------------------------------------------
class _Column:
    __slots__ = ("bad", "chunks", "numeric")

    def __init__(self) -> None:
        #: (first row, rows spanned, positions among them or None for all, values, logged mask, texts)
        self.chunks: list[tuple[int, int, Any, Any, Any, str | None]] = []
        self.bad: tuple[int, object, str] | None = None  # (row, cell, hint) of the first non-number
        self.numeric = False


class LogTable:
    """A log as columns of compact arrays, filled a run of rows at a time.

    Attributes:
        source: the file path or ``<mapping>``, ``<records>``, ``<sequence>``, ``<DataFrame>``.
        header: the column names in order.
        n_rows: rows that are not blank (each an entry when it logs the metric).
        notes: ``(kind, message)`` about the file itself (``short-rows``, ``truncated-row``,
            ``duplicate-keys``), for ``LossLog.anomalies``.
    """

    def __init__(self, source: str, limits: bool = True) -> None:
        import numpy as np

        self.np = np
        self.source = source
        self.header: list[str] = []
        self.columns: dict[str, _Column] = {}
        self.n_rows = 0
        self._lines: list[Any] = []
        self._line_array: Any = None
        self.notes: list[tuple[str, str]] = []
        #: file lines (1-based) that say the run resumed from a checkpoint (printed logs, ``textlog``)
        self.restart_lines: list[int] = []
        self.limits = limits
        #: reads the texts of a column at some rows when the cells were not kept as text (plain CSV)
        self.text_reader: Callable[[LogTable, str, Any], list[str | None]] | None = None

    def set_header(self, names: Sequence[str]) -> None:
        """Declare the columns in order; a name given twice is an error."""
        if len(set(names)) != len(names):
            dup = next(c for c, k in Counter(names).items() if k > 1)
            raise LossLogError(f"{self.source}: column '{clip(dup)}' appears more than once in the header")
        if self.limits and len(names) > MAX_COLUMNS:
            raise LossLogError(f"{self.source}: {len(names):,} columns (the limit is {MAX_COLUMNS:,})")
        for name in names:
            self._column(name)

    def _column(self, name: str) -> _Column:
        col = self.columns.get(name)
        if col is None:
            if self.limits and len(self.columns) >= MAX_COLUMNS:
                raise LossLogError(f"{self.source}: more than {MAX_COLUMNS:,} columns (the limit)")
            col = self.columns[name] = _Column()
            self.header.append(name)
        return col

    def add(self, lines: Any, cells: Mapping[str, tuple[Any, Cells]]) -> None:
        """Append ``len(lines)`` rows (their line numbers); ``cells`` maps a column to (positions among the
        new rows, or None for all of them; its converted cells). Absent columns are not logged there."""
        base, n = self.n_rows, len(lines)
        for name, (pos, conv) in cells.items():
            col = self._column(name)
            col.numeric |= conv.numeric
            if col.bad is not None:
                continue
            if conv.bad is not None:
                i = conv.bad[0]
                col.bad = (base + (int(pos[i]) if pos is not None else i), conv.bad[1], conv.bad[2])
                col.chunks.clear()  # a column with a non-number is never used as numbers
                continue
            if conv.numeric or conv.texts is not None:
                col.chunks.append((base, n, pos, conv.values, conv.present, conv.texts))
        self._lines.append(self.np.asarray(lines, dtype=self.np.int32))
        self._line_array = None
        self.n_rows += n
        if self.limits and self.n_rows * len(self.columns) > MAX_CELLS:
            raise LossLogError(f"{self.source}: more than {MAX_CELLS:,} cells ({self.n_rows:,} rows x "
                               f"{len(self.columns):,} columns so far; the limit is {MAX_CELLS:,})")

    def add_rows(self, lines: Sequence[int], rows: Sequence[Mapping[str, object]]) -> None:
        """Append rows given as mappings (printed logs, records)."""
        np = self.np
        if rows:
            names = tuple(rows[0])
            if list(map(tuple, rows)).count(names) == len(rows):  # every row has the same keys: by column
                self.add(lines, {k: (None, convert(np, list(map(itemgetter(k), rows)))) for k in names})
                return
        buckets: dict[str, tuple[list[int], list[object]]] = {}
        for i, row in enumerate(rows):
            for k, v in row.items():
                b = buckets.get(k)
                if b is None:
                    b = buckets[k] = ([], [])
                b[0].append(i)
                b[1].append(v)
        n = len(rows)
        self.add(lines, {k: (None if len(p) == n else np.array(p, dtype=np.int64), convert(np, v))
                         for k, (p, v) in buckets.items()})

    def release(self) -> None:
        """Drop the columns and the file's bytes (the log has taken what it keeps); names and notes stay."""
        self.columns = {c: _Column() for c in self.columns}
        self._lines, self._line_array, self.text_reader = [], None, None

    def lines(self) -> Any:
        """The line (or 0-based row) of each row."""
        if self._line_array is None:
            np = self.np
            self._line_array = np.concatenate(self._lines) if self._lines else np.zeros(0, np.int32)
        return self._line_array

    def bad(self, name: str) -> tuple[int, object, str] | None:
        """(row, cell, hint) of the column's first cell that is not a number, or None."""
        return self.columns[name].bad

    def numeric(self, name: str) -> bool:
        """At least one cell of the column is a number."""
        return self.columns[name].numeric

    def dense(self, name: str) -> tuple[Any, Any]:
        """(values, logged mask) of a column over every row."""
        np = self.np
        values = np.full(self.n_rows, np.nan)
        present = np.zeros(self.n_rows, bool)
        for base, n, pos, v, p, _ in self.columns[name].chunks:
            idx = slice(base, base + n) if pos is None else base + pos
            values[idx] = v
            present[idx] = p
        return values, present

    def texts_at(self, name: str, rows: Any) -> list[str | None]:
        """The text each of ``rows`` (-1: none) was written as in column ``name``; None for a cell that was
        not text (a JSON integer, a number from Python)."""
        if self.text_reader is not None:
            return self.text_reader(self, name, rows)
        np = self.np
        rows = np.asarray(rows, dtype=np.int64)
        out = np.full(len(rows), None, dtype=object)
        chunks = [c for c in self.columns[name].chunks if c[5] is not None]
        for k, sel, local in _by_chunk(np, [c[0] for c in chunks], [c[1] for c in chunks],
                                       [c[2] for c in chunks], rows):
            split = chunks[k][5].split("\x00")  # type: ignore[union-attr]
            out[sel] = [split[j] for j in local.tolist()]
        out[out == ""] = None
        return out.tolist()  # type: ignore[no-any-return]

    def text_codes(self, wanted: Mapping[str, Any]) -> dict[str, tuple[list[str | None], list[int], Any]]:
        """For each column of ``wanted`` (column -> rows, -1: none), its texts at those rows as (the distinct
        texts, None for a non-text cell, non-None ones in first-seen order; how often each occurs; which one
        each row has, an array), never holding a Python string per row: a long column is looked at a run of
        rows at a time (a plain CSV: one more pass of the parser over those columns only)."""
        np = self.np
        rows = {c: np.asarray(r, dtype=np.int64) for c, r in wanted.items()}
        index: dict[str, dict[str, int]] = {c: {"": 0} for c in rows}  # code 0: no text
        codes = {c: np.zeros(len(r), dtype=np.int64) for c, r in rows.items()}
        if self.text_reader is not None:
            for c, sel, texts in self.text_reader.runs(self, rows):  # type: ignore[attr-defined]
                codes[c][sel] = _codes(np, index[c], texts)
        else:
            for c, r in rows.items():
                chunks = [k for k in self.columns[c].chunks if k[5] is not None]
                for k, sel, local in _by_chunk(np, [x[0] for x in chunks], [x[1] for x in chunks],
                                               [x[2] for x in chunks], r):
                    split = chunks[k][5].split("\x00")  # type: ignore[union-attr]
                    codes[c][sel] = _codes(np, index[c], [split[j] for j in local.tolist()])
        return {c: _first_seen(np, list(index[c]), codes[c], rows[c]) for c in rows}


def _codes(np: Any, index: dict[str, int], texts: list[str]) -> Any:
    """Each text's code in ``index`` (new texts get the next codes)."""
    for x in dict.fromkeys(texts):
        if x not in index:
            index[x] = len(index)
    return np.fromiter(map(index.__getitem__, texts), dtype=np.int64, count=len(texts))


def _first_seen(np: Any, texts: list[str], codes: Any, rows: Any) -> tuple[list[str | None], list[int], Any]:
    """(distinct texts, counts, codes) with the texts in first-seen order along ``rows``; code 0 (no text) is
    None. Codes were handed out in the order the texts were met, which is that order when the rows ascend."""
    uniques: list[str | None] = [None, *texts[1:]]
    if len(rows) < 2 or bool((rows[1:] >= rows[:-1]).all()):
        return uniques, np.bincount(codes, minlength=len(texts)).tolist(), codes
    present, first, counts = np.unique(codes, return_index=True, return_counts=True)
    order = np.argsort(first, kind="stable")
    renumber = np.zeros(len(texts), dtype=np.int64)
    renumber[present[order]] = np.arange(len(order))
    return [uniques[c] for c in present[order].tolist()], counts[order].tolist(), renumber[codes]


def _by_chunk(np: Any, bases: list[int], sizes: list[int], positions: list[Any], rows: Any
              ) -> Iterator[tuple[int, Any, Any]]:
    """For each chunk holding some of ``rows``: (its index, which of ``rows``, their index in the chunk)."""
    if not bases or not len(rows):
        return
    which = np.searchsorted(np.asarray(bases), rows, side="right") - 1
    which[rows < 0] = -1
    order = np.argsort(which, kind="stable")
    ws = which[order]
    for k in np.unique(ws[ws >= 0]).tolist():
        sel = order[np.searchsorted(ws, k): np.searchsorted(ws, k, side="right")]
        local = rows[sel] - bases[k]
        keep = local < sizes[k]
        sel, local = sel[keep], local[keep]
        pos = positions[k]
        if pos is not None:
            at = np.minimum(np.searchsorted(pos, local), len(pos) - 1)
            hit = pos[at] == local
            sel, local = sel[hit], at[hit]
        yield k, sel, local


# -- sources -----------------------------------------------------------------------------------------------
def load(source: object, fmt: str, metric: str | None) -> LogTable:
    """Turn a file path or an in-memory source into a table (``losses.read_losses`` documents them)."""
    pd = sys.modules.get("pandas")  # a DataFrame can only exist if pandas is already imported
    if pd is not None and isinstance(source, pd.Series):
        source = source.to_frame(name=metric or (source.name if source.name is not None else "metric"))
    if pd is not None and isinstance(source, pd.DataFrame):
        return _from_frame(pd, source)
    if isinstance(source, (str, os.PathLike)):
        return _read_file(str(os.fspath(source)), fmt)
    if isinstance(source, Mapping):
        header = [str(k) for k in source]
        cols = [list(v) for v in source.values()]
        if len({len(c) for c in cols}) > 1:
            sizes = ", ".join(f"{clip(h)}: {len(c)}" for h, c in zip(header, cols, strict=True))
            raise LossLogError(f"<mapping>: columns have different lengths ({sizes})")
        t = LogTable("<mapping>", limits=False)
        t.set_header(header)
        t.add(range(len(cols[0]) if cols else 0),
              {h: (None, convert(t.np, c)) for h, c in zip(header, cols, strict=True)})
        return t
    if isinstance(source, Sequence) and not isinstance(source, (bytes, str)):
        if source and all(isinstance(r, Mapping) for r in source):
            t = LogTable("<records>", limits=False)
            for k in dict.fromkeys(str(k) for r in source for k in r):
                t._column(k)
            t.add_rows(range(len(source)), [{str(k): v for k, v in r.items()} for r in source])
            return t
        name = metric or "metric"
        t = LogTable("<sequence>", limits=False)
        t.set_header([name])
        t.add(range(len(source)), {name: (None, convert(t.np, list(source)))})
        return t
    raise TypeError(f"read_losses() cannot read a {type(source).__name__}")


def _from_frame(pd: Any, frame: pd.DataFrame) -> LogTable:
    """A DataFrame: NaN, None, NA and NaT mean "not logged"."""
    t = LogTable("<DataFrame>", limits=False)
    np = t.np
    header = [str(c) for c in frame.columns]
    t.set_header(header)
    cells: dict[str, tuple[None, Cells]] = {}
    missing = (None, pd.NA, pd.NaT)
    for j, name in enumerate(header):
        col = frame.iloc[:, j]
        if col.dtype.kind in "fiu":
            values = col.to_numpy(dtype=np.float64, na_value=np.nan)
            present = ~np.isnan(values)
            cells[name] = (None, Cells(values, present, ~present, None, None))
        else:
            vals = [None if any(v is m for m in missing) or (isinstance(v, float) and math.isnan(v)) else v
                    for v in col.tolist()]
            cells[name] = (None, convert(np, vals))
    t.add(range(len(frame)), cells)
    return t


def read_bytes(path: str) -> bytes:
    """The file's bytes, if it is a regular file within ``MAX_LOG_BYTES``. It is opened with ``O_NONBLOCK``
    (opening a FIFO returns at once) and checked with ``fstat`` before anything is read."""
    from plateau_forensics.remote import is_url, read_limited

    if is_url(path):  # s3://, https://, ...: its size is checked against the same limit before a byte is fetched
        return read_limited(path, MAX_LOG_BYTES, LossLogError, "a loss log")
    flags = os.O_RDONLY
    for extra in ("O_NONBLOCK", "O_CLOEXEC", "O_BINARY"):
        flags |= getattr(os, extra, 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise LossLogError(f"{path}: no such file") from None
    except OSError as exc:
        raise LossLogError(f"{path}: cannot read the file ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise LossLogError(f"{path}: cannot read the file (Is a directory)")
        if not stat.S_ISREG(st.st_mode):
            kinds = [(stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                     (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]
            what = next((name for test, name in kinds if test(st.st_mode)), "not a file")
            raise LossLogError(f"{path}: not a regular file ({what}); a loss log is read only from a file")
        if st.st_size > MAX_LOG_BYTES:
            raise LossLogError(f"{path}: {st.st_size:,} bytes, over the {size_text(MAX_LOG_BYTES)} limit for "
                               "a loss log")
        with os.fdopen(fd, "rb") as f:
            fd = -1  # the file object closes it now
            data = f.read(MAX_LOG_BYTES + 1)  # a file in /proc reports size 0: the cap still holds
    except OSError as exc:
        raise LossLogError(f"{path}: cannot read the file ({exc.strerror})") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > MAX_LOG_BYTES:
        raise LossLogError(f"{path}: over the {size_text(MAX_LOG_BYTES)} limit for a loss log")
    return data


_NON_SPACE = re.compile(rb"\S")


def _read_file(path: str, fmt: str) -> LogTable:
    """Read a CSV/TSV, JSON Lines or printed log, skipping blank lines but keeping line numbers."""
    data = read_bytes(path)
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    if not data.isascii():
        decoder = codecs.getincrementaldecoder("utf-8")()
        view = memoryview(data)
        try:
            for i in range(start, len(data), 1 << 22):
                decoder.decode(view[i: i + (1 << 22)])
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise LossLogError(f"{path}: not a UTF-8 text file") from None
    first = _NON_SPACE.search(data, start)
    if first is None:
        raise LossLogError(f"{path}: the file is empty")
    n_lines = data.count(b"\n", start) + data.count(b"\r", start) - data.count(b"\r\n", start)
    n_lines += data[-1:] not in (b"\n", b"\r")  # an unterminated last line
    _check_lines(path, n_lines, MAX_LINES, "loss log")
    if len(data) - start > MAX_LINE_BYTES:
        _check_line_lengths(path, data, start)
    if fmt == "jsonl" or (fmt == "auto" and data[first.start(): first.start() + 1] == b"{"):
        _check_lines(path, n_lines, MAX_JSON_LINES, "JSON Lines log")
        return _read_jsonl(path, data, start)
    head = data[start: start + 200_000].decode("utf-8", "ignore")
    if fmt == "text" or (fmt == "auto" and looks_like_text_log(head)):
        _check_lines(path, n_lines, MAX_PRINTED_LINES, "printed log")
        return _read_text(path, data, start)
    return _read_csv(path, data, start, first.start())


def _check_lines(path: str, n: int, limit: int, what: str) -> None:
    if n > limit:
        raise LossLogError(f"{path}: {n:,} lines, over the {limit:,} lines a {what} may have")


def _check_line_lengths(path: str, data: bytes, start: int) -> None:
    """Refuse a line (ended by ``\\n`` or ``\\r``) over ``MAX_LINE_BYTES``, scanning a block at a time."""
    import numpy as np

    block = 1 << 23
    prev = start - 1  # the last line end seen
    for at in range(start, len(data), block):
        a = np.frombuffer(data, np.uint8, count=min(block, len(data) - at), offset=at)
        ends = np.flatnonzero((a == 10) | (a == 13)) + at
        if len(ends):
            gaps = np.diff(ends, prepend=prev) - 1
            over = np.flatnonzero(gaps > MAX_LINE_BYTES)
            if len(over):
                k = int(over[0])
                _too_long(path, data, start, int(ends[k - 1]) + 1 if k else prev + 1)
            prev = int(ends[-1])
        if at + len(a) - prev - 1 > MAX_LINE_BYTES:
            _too_long(path, data, start, prev + 1)


def _too_long(path: str, data: bytes, start: int, line_start: int) -> None:
    n = data.count(b"\n", start, line_start) + 1
    raise LossLogError(f"{path}: line {n:,} is longer than {size_text(MAX_LINE_BYTES)} (the limit for one "
                       "line of a loss log)")


# -- JSON Lines --------------------------------------------------------------------------------------------
def _read_jsonl(path: str, data: bytes, start: int) -> LogTable:
    """JSON Lines, one object per line, decoded by the json module's C scanner; numbers stay the text they
    were written as (``parse_float=str``) and objects stay their pairs, so a key named twice is seen."""
    t = LogTable(path)
    # the decoder's C scanner, called directly: raw_decode would wrap each line in Python-level work
    scan = json.JSONDecoder(parse_float=str, object_pairs_hook=list).scan_once  # type: ignore[attr-defined]
    rows: list[list[tuple[str, object]]] = []
    lines: list[int] = []
    twice: list[int] = []
    pairs = 0
    for first, block in _line_blocks(data, start):
        for n, line in enumerate(block, first):
            s = line.strip(" \t\r\n")
            if not s or s[0] != "{":
                if not line.strip():
                    continue
                _json_error(path, n, s)
            try:
                obj, end = scan(s, 0)
            except (StopIteration, ValueError, RecursionError):  # JSONDecodeError is a ValueError
                _json_error(path, n, s)
            if end != len(s):
                _json_error(path, n, s)
            rows.append(obj)
            lines.append(n)
            pairs += len(obj)
            if pairs >= _CHUNK_CELLS:
                twice += _add_json_rows(t, rows, lines)
                rows, lines, pairs = [], [], 0
    twice += _add_json_rows(t, rows, lines)
    if twice:
        verb = "names" if len(twice) == 1 else "name"
        t.notes.append(("duplicate-keys", f"{path}: {lines_text(twice)} {verb} a key twice in one JSON "
                                          "object, with the same value both times (read once)"))
    return t


def _line_blocks(data: bytes, start: int, size: int = 1 << 22) -> Iterator[tuple[int, list[str]]]:
    """(number of the first line, the lines) from ``start`` on, decoded a block of whole lines at a time."""
    n, pos = 1, start
    while pos < len(data):
        end = data.find(b"\n", min(pos + size, len(data)))
        end = len(data) if end < 0 else end + 1
        text = data[pos:end].decode("utf-8")
        block = text.split("\n")
        if text.endswith("\n"):
            block.pop()
        yield n, block
        n += len(block)
        pos = end


def _json_error(path: str, n: int, s: str) -> None:
    """Raise the error for a line the scanner refused (or that is not an object), in ``json.loads``' words."""
    try:
        obj = json.loads(s, parse_float=str)
    except json.JSONDecodeError as exc:
        raise LossLogError(f"{path}: line {n} is not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise LossLogError(f"{path}: line {n} is nested too deeply for a log line") from None
    except ValueError:  # int() refuses more than sys.get_int_max_str_digits() digits
        raise LossLogError(f"{path}: line {n} holds an integer too long to read (over "
                           f"{sys.get_int_max_str_digits():,} digits)") from None
    if not isinstance(obj, dict):
        raise LossLogError(f"{path}: line {n} is not a JSON object")
    raise LossLogError(f"{path}: line {n} is not valid JSON")  # not reached: the scanner and loads agree


def _add_json_rows(t: LogTable, rows: list[list[tuple[str, object]]], lines: list[int]) -> list[int]:
    """Spread a batch of decoded objects over the columns; returns the lines that name a key twice with one
    value (two values are an error)."""
    if not rows:
        return []
    np = t.np
    n, width = len(rows), len(rows[0])
    if width and list(map(len, rows)).count(width) == n:  # the common log: every object has the same keys
        pairs = [list(map(itemgetter(j), rows)) for j in range(width)]
        names = [p[0][0] for p in pairs]
        if len(set(names)) == width and all(list(map(itemgetter(0), p)).count(k) == n
                                            for p, k in zip(pairs, names, strict=True)):
            for k in names:
                t._column(k)
            t.add(lines, {k: (None, convert(np, list(map(itemgetter(1), p))))
                          for p, k in zip(pairs, names, strict=True)})
            return []
    flat = list(chain.from_iterable(rows))
    keys = list(map(itemgetter(0), flat))
    vals = list(map(itemgetter(1), flat))
    index = {k: i for i, k in enumerate(t.header)}
    for k in dict.fromkeys(keys):
        if k not in index:
            t._column(k)
            index[k] = len(index)
    kid = np.fromiter(map(index.__getitem__, keys), dtype=np.int64, count=len(keys))
    rid = np.repeat(np.arange(len(rows)), list(map(len, rows)))
    combo = rid * (len(index) + 1) + kid
    order = np.argsort(combo, kind="stable")
    keep = np.ones(len(keys), bool)
    twice = []
    for i in np.flatnonzero(combo[order][1:] == combo[order][:-1]).tolist():
        a, b = int(order[i]), int(order[i + 1])  # b: the later mention of the key in the same object
        if repr(vals[a]) != repr(vals[b]):
            raise LossLogError(f"{t.source}: line {lines[int(rid[a])]} names '{clip(keys[a])}' twice, with "
                               f"different values ({quote(vals[a])} and {quote(vals[b])}): which one was "
                               "logged?")
        keep[b] = False
        twice.append(lines[int(rid[a])])
    objs = np.empty(len(vals), dtype=object)
    objs[:] = vals
    by_key = np.argsort(kid[keep], kind="stable")
    kk, kr, ko = kid[keep][by_key], rid[keep][by_key], objs[keep][by_key]
    cuts = np.flatnonzero(np.diff(kk)) + 1
    cells = {}
    for ks, rs, vs in zip(np.split(kk, cuts), np.split(kr, cuts), np.split(ko, cuts), strict=True):
        if len(ks):
            cells[t.header[int(ks[0])]] = (None if len(rs) == len(rows) else rs, convert(np, vs.tolist()))
    t.add(lines, cells)
    return sorted(set(twice))


# -- printed logs ------------------------------------------------------------------------------------------
def _read_text(path: str, data: bytes, start: int) -> LogTable:
    """A printed log (``textlog``), a batch of rows at a time; a carriage return ends a line."""
    t = LogTable(path)
    parser = TextLogParser(path)
    feed = parser.feed
    rows: list[dict[str, str]] = []
    lines: list[int] = []
    pairs = 0
    for first, block in _line_blocks(data, start):
        for n, line in enumerate(block, first):
            if "\r" in line:
                parts = [p for p in line.split("\r") if p.strip()]
                line = parts[-1] if parts else ""
            cells = feed(n, line)
            if cells is not None:
                rows.append(cells)
                lines.append(n)
                pairs += len(cells)
                if pairs >= _CHUNK_CELLS:
                    t.add_rows(lines, rows)
                    rows, lines, pairs = [], [], 0
    t.add_rows(lines, rows)
    if not t.n_rows:
        raise LossLogError(f"{path}: no line of this printed log has 'key: number' pairs")
    t.header = parser.header()  # epoch first when a line named one
    t.restart_lines = parser.restarts
    return t


# -- CSV ---------------------------------------------------------------------------------------------------
def _round_trip() -> dict[str, str]:
    """pandas < 3.1 needs ``float_precision="round_trip"`` (Python's own converter) to be exact; 3.1 has one
    correctly rounded converter and deprecates the option."""
    import pandas as pd

    version = tuple(int(x) for x in re.findall(r"\d+", pd.__version__)[:2])
    return {} if version >= (3, 1) else {"float_precision": "round_trip"}


def _line_table(np: Any, data: bytes, start: int, sep: bytes) -> tuple[Any, Any]:
    """(fields, ends) per line from ``start`` on, for a file without quotes: separators + 1, and the offset of
    the byte that ends the line (``len(data)`` for an unterminated last line), with lines split as pandas' C
    parser splits them (``\\n``, ``\\r\\n`` or a lone ``\\r``); a block of bytes at a time."""
    counts, offsets = [], []
    carry = 0  # separators on the line still open at the end of the previous block
    block = 1 << 22
    for at in range(start, len(data), block):
        a = np.frombuffer(data, np.uint8, count=min(block, len(data) - at), offset=at)
        cr, nl = a == 13, a == 10
        end = nl.copy()
        end[:-1] |= cr[:-1] & ~nl[1:]
        if data[at + len(a): at + len(a) + 1] != b"\n":
            end[-1] |= cr[-1]
        seps = np.cumsum(a == sep[0], dtype=np.int32)
        ends = np.flatnonzero(end)
        if len(ends):
            per_line = np.diff(seps[ends], prepend=0)
            per_line[0] += carry
            carry = int(seps[-1] - seps[ends[-1]])
            counts.append(per_line)
            offsets.append((ends + at).astype(np.int32))
        else:
            carry += int(seps[-1])
    if data[-1:] not in (b"\n", b"\r"):
        counts.append(np.array([carry], dtype=np.int32))
        offsets.append(np.array([len(data)], dtype=np.int32))
    if not counts:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    return np.concatenate(counts) + 1, np.concatenate(offsets)


def _first_line(data: bytes, at: int) -> bytes:
    """The bytes from ``at`` to the end of that line."""
    ends = [i for i in (data.find(b"\n", at), data.find(b"\r", at)) if i >= 0]
    return data[at: min(ends) if ends else len(data)]


def _quoted_field_counts(np: Any, data: bytes, start: int, sep: str) -> Any:
    """Fields per record for a file with quotes, by the csv module (None when it cannot split the file)."""
    text = io.TextIOWrapper(io.BytesIO(data[start:]), encoding="utf-8", newline="")
    try:
        return np.fromiter(map(len, csv.reader(text, delimiter=sep)), dtype=np.int64)
    except csv.Error:
        return None


class _NotPlain(Exception):
    """A cell of the CSV is not a plain number (text, nan, inf, ...): read it cell by cell instead."""


def _read_csv(path: str, data: bytes, start: int, first: int) -> LogTable:
    """CSV or TSV through pandas' C tokenizer, a run of rows at a time.

    Rows with fewer fields than the header (the parser pads them) are found from the bytes: the last one is
    a row cut short (``truncated-row``, not read), others are ``short-rows``.
    """
    import numpy as np

    all_fields, all_ends = _line_table(np, data, start, b"\t" if _first_line(data, first).count(b"\t") and not
                                       _first_line(data, first).count(b",") else b",")
    skip = int(np.searchsorted(all_ends, first))  # blank lines above the header (lines end at \n, \r\n or \r)
    head_at = int(all_ends[skip - 1]) + 1 if skip else start
    head = data[head_at: int(all_ends[skip])]
    if head.endswith(b"\r"):  # \r\n: the line ends at the \n
        head = head[:-1]
    sep = "\t" if b"\t" in head and b"," not in head else ","
    quoted = data.find(b'"', head_at) >= 0
    if b'"' in head:
        n_cols = len(next(csv.reader([head.decode("utf-8", "replace")], delimiter=sep), []))
    else:
        n_cols = head.count(sep.encode()) + 1
    if n_cols > MAX_COLUMNS:
        raise LossLogError(f"{path}: {n_cols:,} columns (the limit is {MAX_COLUMNS:,})")
    n_lines = len(all_ends) - skip
    if n_lines * n_cols > MAX_CELLS:
        raise LossLogError(f"{path}: {n_lines:,} lines x {n_cols:,} columns, over the {MAX_CELLS:,} cells a "
                           "loss log may have")
    if not quoted:
        fields, ends = all_fields[skip:], all_ends[skip:]
        over = np.flatnonzero(fields > n_cols)
        if len(over):
            p = int(over[0])
            raise LossLogError(f"{path}: not a well-formed CSV file (Expected {n_cols} fields in line "
                               f"{p + 1 + skip}, saw {int(fields[p])})")
        header = [c.decode("utf-8") for c in head.split(sep.encode())]
        try:
            return _fill(LogTable(path), _plain_chunks(np, path, data, ends, sep, header), fields, skip,
                         header, _PlainTexts(data, ends, sep, skip, header, bool((fields == n_cols).all())))
        except _NotPlain:
            pass
    else:
        fields = _quoted_field_counts(np, data, head_at, sep)
    return _fill(LogTable(path), _cell_chunks(np, path, data, head_at, sep, skip, n_cols), fields, skip, None,
                 None)


def _csv_error(path: str, exc: Exception, skip: int) -> LossLogError:
    reason = " ".join(str(exc).split()).split("C error: ")[-1]
    reason = re.sub(r"line (\d+)", lambda m: f"line {int(m[1]) + skip}", reason)
    return LossLogError(f"{path}: not a well-formed CSV file ({clip(reason)})")


_PANDAS_ERRORS = (ValueError, OverflowError, MemoryError)  # ParserError and EmptyDataError are ValueErrors


def _cell_chunks(np: Any, path: str, data: bytes, head_at: int, sep: str, skip: int, n_cols: int
                 ) -> Iterator[tuple[Any, list[Cells] | list[str]]]:
    """Parser rows as strings (the header first, then runs of (parser row numbers, converted cells))."""
    import pandas as pd

    buf = io.BytesIO(data)
    buf.seek(head_at)
    reader = pd.read_csv(buf, header=None, dtype=object, keep_default_na=False, na_filter=False,
                         skip_blank_lines=False, sep=sep, chunksize=max(1024, _CHUNK_CELLS // max(n_cols, 1)),
                         encoding="utf-8", engine="c")
    seen = 0
    with reader:
        while True:
            try:
                frame = next(reader)
            except StopIteration:
                return
            except _PANDAS_ERRORS as exc:
                raise _csv_error(path, exc, skip) from None
            cells2d = frame.to_numpy(dtype=object)
            first_row, seen = seen, seen + len(cells2d)
            if first_row == 0:
                yield None, [str(c) for c in cells2d[0]]
                cells2d, first_row = cells2d[1:], 1
            if len(cells2d):
                yield (np.arange(first_row, first_row + len(cells2d)),
                       [convert(np, cells2d[:, j].tolist()) for j in range(cells2d.shape[1])])


def _plain_chunks(np: Any, path: str, data: bytes, ends: Any, sep: str, header: list[str]
                  ) -> Iterator[tuple[Any, list[Cells] | list[str]]]:
    """Parser rows of a file of plain numbers, converted by pandas' C parser; raises ``_NotPlain`` at the
    first cell that is not one (or an inf, whose text decides whether it is a literal)."""
    import pandas as pd

    yield None, header
    if len(ends) < 2:
        return
    buf = io.BytesIO(data)
    buf.seek(int(ends[0]) + 1)
    n_cols = len(header)
    reader = pd.read_csv(buf, header=None, names=list(range(n_cols)), index_col=False, dtype=np.float64,
                         keep_default_na=False, na_values=[""], skip_blank_lines=False, sep=sep,
                         chunksize=max(1024, _CHUNK_CELLS // max(n_cols, 1)), encoding="utf-8", engine="c",
                         **_round_trip())
    row = 1
    with reader:
        while True:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # any doubt about the parse: read it cell by cell
                    frame = next(reader)
            except StopIteration:
                break
            except (Warning, *_PANDAS_ERRORS):
                raise _NotPlain from None
            a = frame.to_numpy(dtype=np.float64)
            if np.isinf(a).any():
                raise _NotPlain
            nan = np.isnan(a)
            yield (np.arange(row, row + len(a)),
                   [Cells(np.ascontiguousarray(a[:, j]), ~nan[:, j], nan[:, j], None, None)
                    for j in range(n_cols)])
            row += len(a)
    if row != len(ends):  # the parser split the file into other lines than the bytes say
        raise _NotPlain


class _PlainTexts:
    """The texts of a plain CSV's cells, read back from the bytes: a few rows by splitting their lines, a
    whole column by a second pass of the parser over that column only."""

    def __init__(self, data: bytes, ends: Any, sep: str, skip: int, header: list[str],
                 full_rows: bool) -> None:
        self.data, self.ends, self.sep, self.skip, self.header = data, ends, sep, skip, header
        self.full_rows = full_rows  # every line has as many fields as the header
        self._split: dict[int, list[bytes]] = {}
        self._column_of = {c: j for j, c in enumerate(header)}

    def __call__(self, t: LogTable, name: str, rows: Any) -> list[str | None]:
        j = self._column_of[name]
        if len(rows) <= 512:  # a few rows (the first of a column, an error's cell): split their lines
            lines = t.lines()
            out: list[str | None] = []
            for r in (rows.tolist() if hasattr(rows, "tolist") else list(rows)):
                fields = self._fields(int(lines[r]) - self.skip - 1) if r >= 0 else []
                out.append(fields[j].decode("utf-8") or None if j < len(fields) else None)
            return out
        np = t.np
        rows = np.asarray(rows, dtype=np.int64)
        arr = np.full(len(rows), None, dtype=object)
        for _, sel, texts in self.runs(t, {name: rows}):
            arr[sel] = texts
        arr[arr == ""] = None
        return arr.tolist()  # type: ignore[no-any-return]

    def _fields(self, p: int) -> list[bytes]:
        """The fields of parser row ``p``, split once for all the columns that ask (a wide file's rows)."""
        fields = self._split.get(p)
        if fields is None:
            s, e = int(self.ends[p - 1]) + 1, int(self.ends[p])
            if e < len(self.data) and self.data[e] == 10 and self.data[e - 1: e] == b"\r":
                e -= 1
            if len(self._split) > 1024:
                self._split.clear()
            fields = self._split[p] = self.data[s:e].split(self.sep.encode())
        return fields

    def runs(self, t: LogTable, wanted: Mapping[str, Any]) -> Iterator[tuple[str, Any, list[str]]]:
        """(column, which of its rows, their texts) a run of the file at a time: one more pass of the parser,
        over the wanted columns only, as strings."""
        import pandas as pd

        np = t.np
        lines = t.lines()
        order = {}
        for c, rows in wanted.items():
            ok = np.flatnonzero(rows >= 0)
            parser_rows = lines[rows[ok]] - self.skip - 1
            by_row = np.argsort(parser_rows, kind="stable")
            order[c] = (ok[by_row], parser_rows[by_row])
        buf = io.BytesIO(self.data)
        buf.seek(int(self.ends[0]) + 1)
        n_cols = len(self.header)
        cols = sorted({self._column_of[c] for c in wanted})
        # usecols fails on a run of rows that all have fewer fields than the header: then read every column
        use = {"usecols": cols} if self.full_rows else {}
        reader = pd.read_csv(buf, header=None, names=list(range(n_cols)), index_col=False, dtype=object,
                             keep_default_na=False, na_filter=False, skip_blank_lines=False, sep=self.sep,
                             encoding="utf-8", engine="c",
                             chunksize=max(1024, _CHUNK_CELLS // max(len(cols), 1)), **use)
        row = 1
        with reader:
            for frame in reader:
                cells = frame.to_numpy(dtype=object)
                at = {j: k for k, j in enumerate(frame.columns)}
                for c, (ok, parser_rows) in order.items():
                    lo, hi = np.searchsorted(parser_rows, [row, row + len(frame)])
                    if hi > lo:
                        yield c, ok[lo:hi], cells[parser_rows[lo:hi] - row, at[self._column_of[c]]].tolist()
                row += len(frame)


def _fill(t: LogTable, chunks: Iterator[tuple[Any, Any]], fields: Any, skip: int, header: list[str] | None,
          texts: _PlainTexts | None) -> LogTable:
    """Add the parser's runs of rows to the table: blank rows dropped, rows with fewer fields than the header
    reported, the last row dropped when it is one of them (held back a run until the end to know)."""
    np = t.np
    short: list[tuple[int, int]] = []  # (parser row, line) of rows with fewer fields than the header
    held: tuple[Any, list[Cells]] | None = None
    rows_seen = 0
    for rows_p, convs in chunks:
        if rows_p is None:
            header = convs
            t.set_header(header)
            continue
        rows_seen = int(rows_p[-1]) + 1
        keep = ~np.logical_and.reduce([c.blank for c in convs])
        if not keep.any():
            continue
        if not keep.all():
            convs, rows_p = [c.take(keep) for c in convs], rows_p[keep]
        if fields is not None and len(fields) >= rows_p[-1] + 1:
            short += [(p, p + skip + 1) for p in rows_p[fields[rows_p] < len(convs)].tolist()]
        if held is not None:
            t.add(held[0] + skip + 1, dict(zip(t.header, ((None, c) for c in held[1]), strict=True)))
        held = (rows_p, convs)
    if header is None:
        raise LossLogError(f"{t.source}: the file is empty")
    if fields is not None and len(fields) != max(rows_seen, 1):
        short = []  # the csv module split the file otherwise than the parser: its counts cannot be trusted
    if held is not None:
        rows_p, convs = held
        if short and short[-1][0] == int(rows_p[-1]):  # the last row is cut short: not read
            p, line = short.pop()
            keep = np.ones(len(rows_p), bool)
            keep[-1] = False
            convs, rows_p = [c.take(keep) for c in convs], rows_p[keep]
            t.notes.append(("truncated-row", (
                f"{t.source}: line {line}, the last row, has {int(fields[p])} of {len(header)} fields: it "
                "was cut short (a crash while it was written?) and is not read")))
        t.add(rows_p + skip + 1, dict(zip(t.header, ((None, c) for c in convs), strict=True)))
    if short:
        t.notes.insert(0, ("short-rows", (
            f"{t.source}: {lines_text([ln for _, ln in short])} {'have' if len(short) > 1 else 'has'} fewer "
            f"fields than the header's {len(header)}: the missing fields are read as not logged")))
    t.text_reader = texts
    return t
