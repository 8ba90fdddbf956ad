"""Render a Trace as the seed's epoch grid, a table, CSV, Markdown, JSON or one line per epoch.

Every renderer returns a string; nothing here prints. Floats in CSV and JSON are written with
``repr`` so they read back bit-identical; JSON writes non-finite floats as "inf", "-inf", "nan".
"""

from __future__ import annotations

import bisect
import csv
import io
import itertools
import json
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from plateau_forensics import fanout
from plateau_forensics.engine import EVENTS_BY_CODE, Event, Step, Trace

Format = Literal["grid", "table", "csv", "markdown", "json", "explain"]
FORMATS: tuple[str, ...] = ("grid", "table", "csv", "markdown", "json", "explain")

_EVENT_MARK = {
    Event.IMPROVED: "best",
    Event.BAD: "bad",
    Event.COOLDOWN: "cool",
    Event.REDUCED: "LR",
    Event.SUPPRESSED: "lr=",
}


def g(x: Any) -> str:
    """A number in 4 significant digits (integers as integers); the display format of every table."""
    if x is None:
        return ""
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int) or (isinstance(x, float) and math.isfinite(x) and x.is_integer() and abs(x) < 1e15):
        return str(int(x))
    return f"{x:.4g}"


def _lr_cell(lrs: Sequence[float]) -> str:
    return g(lrs[0]) if len(lrs) == 1 else "/".join(g(v) for v in lrs)


def jsonable(x: Any) -> Any:
    """``x`` with non-finite floats as the strings ``"nan"``, ``"inf"``, ``"-inf"`` (standard JSON), dict keys as
    strings and tuples as lists, nested."""
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


#: Nodes converted per saved state value: a huge, shared (DAG) or self-referencing extra value is summarised.
_STATE_NODES = 10_000


def _plain_state(raw: Any) -> dict[str, Any]:
    """A checkpoint's saved state as JSON values: bytes, sets, complex numbers and the reader's inert objects
    become short strings, cycles ``"<cycle>"``, and a value past ``_STATE_NODES`` nodes a summary."""

    def conv(x: Any, budget: list[int], active: set[int]) -> Any:
        if x is None or isinstance(x, (str, int, float)):  # bool is an int
            return x
        if isinstance(x, (dict, list, tuple)):
            if id(x) in active:
                return "<cycle>"
            budget[0] -= 1 + len(x)
            if budget[0] < 0:
                return f"<{type(x).__name__} of {len(x)} items, not shown>"
            active.add(id(x))
            try:
                if isinstance(x, dict):
                    return {k if isinstance(k, str) else _short(k): conv(v, budget, active) for k, v in x.items()}
                return [conv(v, budget, active) for v in x]
            finally:
                active.discard(id(x))
        if isinstance(x, (set, frozenset)):
            return sorted(_short(v) for v in x)[:100]
        return _short(x)

    return {str(k): conv(v, [_STATE_NODES], set()) for k, v in raw.items()}


def _short(x: Any) -> str:
    if isinstance(x, (bytes, bytearray)):
        return f"<{len(x)} bytes: {bytes(x[:32]).hex()}{'...' if len(x) > 32 else ''}>"
    try:
        text = repr(x)
    except (ValueError, RecursionError):  # an int past the int-to-str limit, a deep structure
        text = f"<{type(x).__name__}>"
    return text if len(text) <= 200 else text[:197] + "..."


# -- the summary lines shared by grid and table ---------------------------------------------------
def _config_line(t: Trace) -> str:
    rules = getattr(t, "rules", "torch")
    text = " ".join(f"{k}={v}" for k, v in t.config.to_dict().items())
    return text if rules == "torch" else f"{text}  ({rules} rules)"


def _state_line(last_epoch: Any, best: float, nb: int, cd: int, lrs: Sequence[float] | None) -> str:
    lr = "?" if lrs is None else _lr_cell(lrs)
    return f"last_epoch={g(last_epoch)} best={g(best)} num_bad_epochs={nb} cooldown_counter={cd} lr={lr}"


def summary_lines(t: Trace) -> list[tuple[str, str]]:
    """The labelled lines around the grid: checkpoint, config, alignment, reductions, forecast, findings."""
    lines: list[tuple[str, str]] = []
    ck = getattr(t, "checkpoint", None)
    if ck is not None:
        where = ck.key_path or "<root>"
        partial = "  PARTIAL STATE" if ck.partial else ""
        lines.append(("checkpoint", f"{ck.path}  [{where}]  ({ck.framework}){partial}"))
        st = ck.state
        lines.append(("saved", _state_line(st.last_epoch, st.best, st.num_bad_epochs, st.cooldown_counter, ck.lrs)))
        counters = [f"{k}={g(v)}" for k, v in (("epoch", ck.epoch), ("global_step", ck.global_step)) if v is not None]
        if counters:
            lines.append(("counters", " ".join(counters)))
    lines.append(("config", _config_line(t)))
    a = getattr(t, "alignment", None)
    if a is not None:
        if a.epoch is None:
            lines.append(("alignment", a.note or "no row of the log reproduces the saved state"))
        else:
            more = f"; candidates {', '.join(g(e) for e in a.candidates)}" if len(a.candidates) > 1 else ""
            lines.append(("alignment", f"saved after epoch {g(a.epoch)} (scheduler step {g(a.scheduler_step)}): "
                                       f"epoch offset {g(a.epoch_offset)}{more}"))
    verdict = getattr(t, "verdict", None)
    if verdict is not None:
        lines.append(("story", story_sentence(verdict)))
    if len(t):
        lines.append(("reductions", reductions_text(t)))
        last = t.step(len(t) - 1, explain=False)
        if not last.known:
            lines.append(("end state", "unknown: the inputs do not determine it"))
        else:
            lines.append(("end state", _state_line(last.last_epoch, last.best, last.num_bad_epochs,
                                                   last.cooldown_counter, last.lr if last.lr_known else None)))
    if hasattr(t, "forecast"):
        lines.append(("forecast", forecast_sentence(t)))
    for f in getattr(t, "findings", ()):
        lines.append((f"{f.severity}", f"[{f.code}] {f.message}"))
        if f.severity == "warning" and f.fix:
            lines.append(("  fix", f.fix))
    for n in getattr(t, "notes", ()):
        lines.append(("note", n))
    return lines


def story_sentence(verdict: Any) -> str:
    """The verdict in one line: the story, the alternatives, what would decide, what is left unexplained."""
    words = " + ".join(verdict.story) if verdict.story else "clean (nothing the inputs show went wrong)"
    if verdict.ambiguous:
        alts = " or ".join(" + ".join(a) if a else "clean" for a in verdict.alternatives)
        text = f"ambiguous: {words} or {alts}"
        if verdict.decide:
            text += f"; to decide: {verdict.decide}"
    else:
        text = words
    if verdict.explained:
        text += "; explains " + ", ".join(verdict.explained)
    if verdict.unexplained:
        text += "; leaves unexplained: " + ", ".join(verdict.unexplained)
    return text


def forecast_sentence(t: Trace) -> str:
    """The forecast, or why there is none (the end state is not determined by the inputs)."""
    if len(t) and (len(t) - 1) in getattr(t, "unknown", ()):
        return "unknown: the inputs do not determine the end state"
    return t.forecast().sentence()


def _summary(t: Trace) -> str:
    lines = summary_lines(t)
    w = max((len(k) for k, _ in lines), default=0)
    return "\n".join(f"{k.ljust(w)}  {v}" for k, v in lines)


# -- renderers ---------------------------------------------------------------------------------------
def _grid_rows(t: Trace, steps: Sequence[Step]) -> list[tuple[str, list[str]]]:
    a = getattr(t, "alignment", None)
    saved_at = a.index if a is not None and a.index is not None else None
    marks = []
    for s in steps:
        m = _EVENT_MARK[s.event]
        if saved_at is not None and s.index == saved_at:
            m += "+ckpt"
        marks.append(m)
    def known(s: Step, text: str) -> str:
        return text if s.known else "?"

    return [
        ("epoch", [g(s.epoch) for s in steps]),
        ("last_epoch", [g(s.last_epoch) if s.last_epoch is not None else "?" for s in steps]),
        ("metric", [g(s.metric) for s in steps]),
        ("best", [known(s, g(s.best)) for s in steps]),
        ("num_bad", [known(s, str(s.num_bad_epochs)) for s in steps]),
        ("cooldown", [known(s, str(s.cooldown_counter)) for s in steps]),
        ("lr", [_lr_cell(s.lr) if s.lr_known else "?" for s in steps]),
        ("event", [m if s.known else "?" + m[len(_EVENT_MARK[s.event]):] for s, m in zip(steps, marks)]),
    ]


#: Above this many steps the grid keeps windows around the events (the csv and json formats keep every row).
GRID_COLUMNS = 240
#: Above this many steps, csv and json rows explain only the steps that did something (reductions,
#: suppressed reductions, cooldown starts): building every reason would cost more than the whole replay.
EXPLAIN_ROWS = 20_000


#: Suppressed reductions that anchor a window of the collapsed grid (the first ones and the last one):
#: a run at its floor has one every ``patience`` steps, and they all say the same.
SHOWN_SUPPRESSED = 3
#: Longest reductions list written out in the summary lines.
MAX_LISTED_REDUCTIONS = 12


def checkpoint_index(t: Trace) -> int | None:
    """Position of the step the checkpoint was saved after, when the alignment found one in the trace."""
    a = t.alignment
    if a is not None and a.index is not None and 0 <= a.index < len(t):
        return a.index
    return None


def resume_index(t: Trace) -> int | None:
    """Position of the first step after the first resume, if the trace has one."""
    if len(t.starts) > 1 and t.starts[1].index < len(t):
        return t.starts[1].index
    return None


def visible_columns(t: Trace, max_columns: int = 60, context: int = 2, *,
                    strict: bool = False) -> list[int | tuple[int, int]]:
    """Which steps get a column: all when they fit, else windows around every event worth seeing.

    The windows (``context`` steps either side) surround every reduction, the first ``SHOWN_SUPPRESSED``
    and the last suppressed reduction, the checkpoint's step and every resume point; the first and last
    three steps are always shown. When that is still wider than ``max_columns`` the windows shrink, down
    to the event columns alone: a reduction is never hidden, unless ``strict``, where the first two thirds
    and the last third of them are kept around one hidden middle when even they do not fit. A hidden stretch is returned as ``(first, last)`` positions,
    drawn as one "..." column.
    """
    n = len(t)
    if n <= max_columns:
        return list(range(n))
    ev = t._cols.events
    suppressed = [i for i, e in enumerate(ev) if e == _SUPPRESSED]
    anchors = [i for i, e in enumerate(ev) if e == _REDUCED]
    anchors += suppressed[:SHOWN_SUPPRESSED] + suppressed[-1:]
    anchors += [i for i in (checkpoint_index(t),) if i is not None]
    anchors += [s.index for s in t.starts[1:] if s.index < n]
    ends = [*range(min(3, n)), *range(max(0, n - 3), n)]
    keep: set[int] = set()
    for r in range(max(context, 0), -1, -1):
        keep = set(ends)
        for a in anchors:
            keep.update(range(max(0, a - r), min(n, a + r + 1)))
        if _width(sorted(keep)) <= max_columns:
            break
    kept = sorted(keep)
    if strict and _width(kept) > max_columns:  # more events than columns: the first ones and the last ones
        kept = _cut(kept, max(max_columns, 3))
    cols: list[int | tuple[int, int]] = []
    prev = -1
    for i in kept:
        if i > prev + 1:
            cols.append((prev + 1, i - 1))
        cols.append(i)
        prev = i
    return cols


def _cut(kept: list[int], budget: int) -> list[int]:
    """The longest head (two thirds) and tail (one third) of ``kept`` whose columns, gaps included, fit."""
    head_budget = budget * 2 // 3
    head: list[int] = []
    for i in kept:
        if _width([*head, i]) > head_budget:
            break
        head.append(i)
    tail: list[int] = []
    for i in reversed(kept[len(head):]):
        if _width([i, *tail]) + _width(head) + 1 > budget:
            break
        tail.insert(0, i)
    return head + tail


def _width(kept: list[int]) -> int:
    gaps = sum(1 for a, b in zip(kept, kept[1:], strict=False) if b > a + 1)
    return len(kept) + gaps


_REDUCED, _SUPPRESSED = 3, 4  # engine event codes (``Trace._cols.events``)



def reductions_text(t: Trace) -> str:
    """The summary's reductions line: every reduction and suppressed one, at most ``MAX_LISTED_REDUCTIONS``
    written out (the first ones and the last two, with the count of those between)."""
    unknown = t.unknown
    reds = [i for i, e in enumerate(t._cols.events) if e in (_REDUCED, _SUPPRESSED) and i not in unknown]
    hidden = sum(1 for i, e in enumerate(t._cols.events) if e in (_REDUCED, _SUPPRESSED) and i in unknown)
    more = f" (and {hidden} replayed where the state is not determined, shown as ?)" if hidden else ""
    if not reds:
        return ("none" + more) if hidden else "none"
    shown = reds if len(reds) <= MAX_LISTED_REDUCTIONS else reds[: MAX_LISTED_REDUCTIONS - 2] + reds[-2:]
    parts = []
    for k, i in enumerate(shown):
        s = t.step(i, explain=False)
        # lrs the inputs do not determine show as ? (as in the grid), never as the nan that stands for them
        lr_in = "?" if i - 1 in t.lr_unknown or any(v != v for v in s.lr_in) else _lr_cell(s.lr_in)
        lr_out = "?" if i in t.lr_unknown else _lr_cell(s.lr)
        parts.append(f"epoch {g(s.epoch)}: {lr_in} -> {lr_out}"
                     + (" (suppressed)" if s.event is Event.SUPPRESSED else ""))
        if len(shown) < len(reds) and k == MAX_LISTED_REDUCTIONS - 3:
            parts.append(f"... {len(reds) - len(shown)} more (all of them in --format csv) ...")
    return "; ".join(parts) + more


def _shown(t: Trace) -> list[int | tuple[int, int]]:
    """The positions the terminal grid shows: all of a short trace; windows around the events of a long one."""
    return visible_columns(t, max_columns=GRID_COLUMNS, context=2, strict=True)


def grid(t: Trace, width: int = 100) -> str:
    """The seed's layout: one column per epoch, wrapped into blocks that fit ``width`` characters; a long
    trace shows windows around its events, a hidden stretch as one ``...`` column."""
    shown = _shown(t)
    rows = _grid_rows(t, [t.step(c) for c in shown if not isinstance(c, tuple)])
    if any(isinstance(c, tuple) for c in shown):  # one "..." column where each hidden stretch was
        cells_at = iter(range(len(shown)))
        order = [None if isinstance(c, tuple) else next(cells_at) for c in shown]
        rows = [(name, [cells[k] if k is not None else "..." for k in order]) for name, cells in rows]
    label_w = max(len(name) for name, _ in rows)
    n_cols = len(rows[0][1])
    col_w = [max(len(cells[i]) for _, cells in rows) for i in range(n_cols)]
    blocks, start = [], 0
    while start < n_cols:
        used, end = label_w, start
        while end < n_cols and (end == start or used + 2 + col_w[end] <= width):
            used += 2 + col_w[end]
            end += 1
        blocks.append("\n".join(
            (name.ljust(label_w) + "".join("  " + cells[i].rjust(col_w[i]) for i in range(start, end))).rstrip()
            for name, cells in rows))
        start = end
    return "\n\n".join(blocks)


COLUMNS = ("epoch", "last_epoch", "metric", "best", "num_bad_epochs", "cooldown_counter", "lr", "event", "reason")


def _table_rows(t: Trace) -> list[list[Any]]:
    rows = []
    for s in t.steps:
        k = s.known
        rows.append([g(s.epoch), g(s.last_epoch) if s.last_epoch is not None else "?", g(s.metric),
                     g(s.best) if k else "?", s.num_bad_epochs if k else "?", s.cooldown_counter if k else "?",
                     _lr_cell(s.lr) if s.lr_known else "?", s.event.value if k else "?", s.reason])
    return rows


def table(t: Trace, style: str = "simple") -> str:
    """One row per step, rendered by tabulate in ``style`` (any tabulate format name)."""
    from tabulate import tabulate

    return tabulate(_table_rows(t), headers=COLUMNS, tablefmt=style, disable_numparse=True)


def to_csv(t: Trace) -> str:
    """One row per step; floats with ``repr`` (bit-exact), one ``lr_<group>`` column per group."""
    return "".join(csv_chunks(t))


def csv_chunks(t: Trace) -> Iterator[str]:
    """``to_csv``'s text in pieces: a long trace's rows are written straight from the engine's columns, a
    chunk at a time."""
    n_groups = len(t.step(0, explain=False).lr) if len(t) else 1
    header = ",".join([*COLUMNS[:6], *[f"lr_{i}" for i in range(n_groups)], "event", "reason"]) + "\n"
    if len(t) > EXPLAIN_ROWS:
        yield header
        yield from _long_csv_lines(t, n_groups)
        return
    yield header + _short_csv(t, n_groups)


def _short_csv(t: Trace, n_groups: int) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    blank = ("",) * n_groups
    for d in _rows(t):
        lrs = d["lr"] if d["lr"] is not None else blank
        w.writerow([repr(v) if isinstance(v, float) else ("" if v is None else v) for v in
                    (d["epoch"], d["last_epoch"], d["metric"], d["best"], d["num_bad_epochs"],
                     d["cooldown_counter"], *lrs)]
                   + [d["event"] or "", d["reason"]])
    return buf.getvalue()


#: The reason of a step whose state the inputs do not determine (``Trace.step`` says the same).
_UNKNOWN_REASON = "not determined by the inputs (several states of the scheduler fit the evidence here)"


def _rows(t: Trace) -> Iterator[dict[str, Any]]:
    """Every step as the JSON contract's step object (unknown state as None). A long trace (over
    ``EXPLAIN_ROWS`` steps) is written from the engine's columns and explains only the steps that did
    something (reductions, suppressed reductions) and the ones it cannot determine."""
    if len(t) <= EXPLAIN_ROWS:
        for s in t.steps:
            yield s.as_dict()
        return
    for i, (epoch, le, metric, best, nb, cd, lr, event, known, lr_known) in enumerate(t.row_values()):
        if not known:
            reason = _UNKNOWN_REASON
        elif event in ("reduced", "suppressed"):
            reason = t.step(i).reason
        else:
            reason = ""
        yield {"epoch": epoch, "last_epoch": le, "metric": metric, "best": best if known else None,
               "num_bad_epochs": nb if known else None, "cooldown_counter": cd if known else None,
               "lr": list(lr) if lr_known else None, "event": event if known else None, "reason": reason}


def _reasons(t: Trace, a: int = 0, b: int | None = None) -> dict[int, str]:
    """A long trace's reasons (of rows ``a`` to ``b``): for the steps that did something (reductions,
    suppressed reductions)."""
    acted = {_REDUCED, _SUPPRESSED}
    unknown, events = t.unknown, t._cols.events[a:b]
    rows = [i for i in itertools.compress(range(a, a + len(events)), map(acted.__contains__, events))
            if i not in unknown]
    return dict(zip(rows, t.reasons(rows), strict=True))


#: A long trace's rows are written this many at a time, column by column (bounded memory, C-speed loops).
_CHUNK = 50_000


def _json_num(v: Any) -> str:
    """A number as the JSON contract writes it: ``repr`` (bit-exact), non-finite floats as strings, None as
    null. (A finite float's or an int's repr ends in a digit; ``nan``, ``inf``, ``-inf`` do not.)"""
    if v is None:
        return "null"
    r = repr(v)
    return r if r[-1].isdigit() else f'"{r}"'


def _number_texts(values: Sequence[Any], json_form: bool) -> list[str]:
    """``_json_num`` (json) or ``_csv_cell`` (csv) of each value: ``float.__repr__`` at C speed when they are
    all floats, the non-finite ones then quoted for JSON."""
    try:
        texts = list(map(float.__repr__, values))
    except TypeError:  # ints or None among them
        return list(map(_json_num if json_form else _csv_cell, values))
    if json_form and not all(map(math.isfinite, values)):
        texts = [x if math.isfinite(v) else f'"{x}"' for x, v in zip(texts, values, strict=True)]
    return texts


def _in_chunk(rows: Sequence[int], a: int, b: int) -> Sequence[int]:
    """The part of the sorted ``rows`` in ``[a, b)``."""
    return rows[bisect.bisect_left(rows, a):bisect.bisect_left(rows, b)]


def _long_columns(t: Trace, json_form: bool) -> tuple[int, Callable[[int], list[list[str]]]]:
    """A long trace's cells as text, ``_CHUNK`` rows at a time: (the number of chunks, the columns of chunk
    ``k``) with columns epoch, last_epoch, metric, best, num_bad_epochs, cooldown_counter, one per lr group,
    event, reason. Cells the inputs do not determine are empty (csv) or null (json); reasons only for
    reductions, suppressed ones and undetermined steps."""
    c, n = t._cols, len(t)
    names = [e.value for e in EVENTS_BY_CODE]
    fmt = _json_num if json_form else _csv_cell
    none = "null" if json_form else ""
    quote_reason = json.dumps if json_form else _csv_quote
    events = [f'"{v}"' for v in names] if json_form else names
    empty_reason = '""' if json_form else ""
    unknown_reason = quote_reason(_UNKNOWN_REASON)
    n_groups = len(c.lrs[0]) if c.lrs else 1

    def held(values: Sequence[Any]) -> list[str]:
        """Best and the lrs repeat: each distinct value's text is made once. Values that are equal with other
        texts (0.0 and -0.0, 1 and 1.0) each get their own."""
        distinct = set(values)
        if 0.0 in distinct or any(type(v) is not float for v in distinct):
            return _number_texts(values, json_form)
        keys = list(distinct)
        text = dict(zip(keys, _number_texts(keys, json_form), strict=True))
        return list(map(text.__getitem__, values))

    def counts(values: list[Any]) -> list[str]:  # epochs, last_epochs, counters: ints, their repr is enough
        return list(map(int.__repr__, values)) if set(map(type, values)) == {int} else list(map(fmt, values))

    unknown, lr_unknown = sorted(t.unknown), sorted(t.lr_unknown)

    def chunk(k: int) -> list[list[str]]:
        a = k * _CHUNK
        b = min(n, a + _CHUNK)
        lrs = c.lrs[a:b]
        cols = [counts(list(t.epochs[a:b])), counts(t.last_epoch_column(a, b)),
                _number_texts(t.metrics[a:b], json_form), held(c.best[a:b]),
                counts(c.num_bad[a:b]), counts(c.cooldown[a:b])]
        cols += [held([lr[g] for lr in lrs]) for g in range(n_groups)]
        cols.append(list(map(events.__getitem__, c.events[a:b])))
        reason = [empty_reason] * (b - a)
        for i, text in _reasons(t, a, b).items():
            reason[i - a] = quote_reason(text)
        cols.append(reason)
        for i in _in_chunk(unknown, a, b):
            j = i - a
            for col in (3, 4, 5, 6 + n_groups):
                cols[col][j] = none
            reason[j] = unknown_reason
        for i in _in_chunk(lr_unknown, a, b):
            for g in range(n_groups):
                cols[6 + g][i - a] = none
        return cols

    return -(-n // _CHUNK), chunk


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    return repr(v) if isinstance(v, float) else str(v)


def _csv_quote(text: str) -> str:
    """One csv cell as ``csv.writer`` quotes it (minimal quoting)."""
    if any(ch in text for ch in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _long_csv_lines(t: Trace, n_groups: int) -> Iterator[str]:
    """The csv rows of a long trace (the text ``csv.writer`` writes for them), a chunk of lines at a time."""
    n, columns = _long_columns(t, json_form=False)

    def text(k: int) -> str:
        return "\n".join(map(",".join, zip(*columns(k), strict=True))) + "\n"

    yield from fanout.in_order(text, n)


def _long_json_lines(t: Trace) -> Iterator[str]:
    """The JSON step objects of a long trace (what ``json.dumps`` writes for them), a chunk at a time: a row
    is its cells put in one template."""
    c = t._cols
    n_groups = len(c.lrs[0]) if c.lrs else 1
    # one %-template per row: the cells are already JSON text (a % in them is an argument, never interpreted)
    row = ('{"epoch": %s, "last_epoch": %s, "metric": %s, "best": %s, "num_bad_epochs": %s, '
           '"cooldown_counter": %s, "lr": %s, "event": %s, "reason": %s}')

    def lr_cell(*cells: str) -> str:
        return "null" if cells[0] == "null" else "[" + ", ".join(cells) + "]"

    n, columns = _long_columns(t, json_form=True)

    def text(k: int) -> str:
        cols = columns(k)
        groups = list(zip(*cols[6:6 + n_groups], strict=True))  # the lr cells of a row (a handful distinct)
        lr_text = {g: lr_cell(*g) for g in set(groups)}
        lr = list(map(lr_text.__getitem__, groups))
        lines = ",\n  ".join(map(row.__mod__, zip(*cols[:6], lr, *cols[6 + n_groups:], strict=True)))
        return (",\n  " if k else "") + lines

    yield from fanout.in_order(text, n)


def _step_json(d: dict[str, Any]) -> dict[str, Any]:
    """A step object with its non-finite floats as strings (the JSON contract)."""
    for k in ("metric", "best", "epoch", "last_epoch"):
        v = d[k]
        if isinstance(v, float) and not math.isfinite(v):
            d[k] = jsonable(v)
    lr = d["lr"]
    if lr is not None and any(isinstance(v, float) and not math.isfinite(v) for v in lr):
        d["lr"] = jsonable(lr)
    return d


def to_json_obj(t: Trace, *, with_steps: bool = True) -> dict[str, Any]:
    """The JSON contract as a Python object (non-finite floats already turned into strings)."""
    if getattr(t, "rules", "torch") != "torch":  # another rule set: no checkpoint, alignment or torch state
        return jsonable({"rules": t.rules, "config": t.config.to_dict(), "checkpoint": None, "alignment": None,
                          "findings": [], "steps": t.to_records()})
    ck = t.checkpoint
    checkpoint = None
    if ck is not None:
        checkpoint = {
            "path": ck.path, "key_path": ck.key_path, "framework": ck.framework, "partial": ck.partial,
            "state": _plain_state(ck.raw), "optimizer_lrs": list(ck.optimizer_lrs) if ck.optimizer_lrs else None,
            "optimizer_key_path": ck.optimizer_key_path, "lr_dtypes": list(ck.lr_dtypes),
            "epoch": ck.epoch, "global_step": ck.global_step, "missing": list(ck.state.missing),
        }
    log = t.log
    final_known = not (len(t) and (len(t) - 1) in t.unknown)
    fc = t.forecast()
    obj = {
        "config": t.config.to_dict(),
        "checkpoint": checkpoint,
        "log": None if log is None else {"source": log.source, "metric_column": log.metric_column,
                                         "epoch_column": log.epoch_column, "lr_columns": list(log.lr_columns)},
        "alignment": t.alignment.as_dict() if t.alignment is not None else None,
        "verdict": t.verdict.as_dict() if t.verdict is not None else None,
        "forecast": None if not final_known else {
            "earliest_reduction_epoch": fc.earliest_reduction_epoch,
            "improvement_threshold": fc.improvement_threshold,
            "steps_until_reduction": fc.steps_until_reduction,
            "lr_from": list(fc.lr_from), "lr_to": list(fc.lr_to), "sentence": fc.sentence()},
        "final_state": t.to_state_dict() if final_known else None,
        "findings": [f.as_dict() for f in t.findings],
        "notes": list(t.notes),
    }
    if with_steps:
        obj["steps"] = [_step_json(d) for d in _rows(t)]
    return jsonable(obj)


def to_json(t: Trace) -> str:
    """The JSON contract (see README): config, checkpoint, alignment, forecast, findings, steps.

    The steps come one per line: a million-row trace renders in seconds (``json_chunks`` streams it).
    """
    return "".join(json_chunks(t))


def json_chunks(t: Trace) -> Iterator[str]:
    """``to_json``'s text in pieces (the head, then the steps a chunk at a time), for writing it out without
    holding a long trace's whole text in memory."""
    if getattr(t, "rules", "torch") != "torch":
        yield json.dumps(to_json_obj(t), indent=1, allow_nan=False)
        return
    obj = to_json_obj(t, with_steps=False)
    head = json.dumps(obj, indent=1, allow_nan=False)
    if not len(t):
        yield head[:-2] + ',\n "steps": []\n}'
        return
    yield head[:-2] + ',\n "steps": [\n  '
    if len(t) > EXPLAIN_ROWS:
        yield from _long_json_lines(t)
    else:
        encode = json.JSONEncoder(allow_nan=False, separators=(", ", ": ")).encode
        yield ",\n  ".join(encode(_step_json(d)) for d in _rows(t))
    yield "\n ]\n}"


def markdown(t: Trace) -> str:
    """What people paste into a bug report: the summary, the findings with their fixes, and the step table."""
    out = ["**plateau-trace**", "", "| | |", "|---|---|"]
    for key, value in summary_lines(t):
        if key in ("info", "warning", "  fix", "note"):
            continue
        out.append(f"| {key} | {_md(value)} |")
    findings = list(getattr(t, "findings", ()))
    if findings:
        out += ["", "**Findings**", ""]
        for f in findings:
            where = f" (epoch {g(f.epoch)})" if f.epoch is not None else ""
            out.append(f"- **{f.severity}** `{f.code}`{where}: {_md(f.message)}")
            if f.fix:
                out.append(f"  - fix: {_md(f.fix)}")
    notes = [v for k, v in summary_lines(t) if k == "note"]
    if notes:
        out += ["", "**Notes**", ""] + [f"- {_md(n)}" for n in notes]
    if len(t):
        out += ["", "**Steps**", "", table(t, "github")]
    return "\n".join(out)


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def explain(t: Trace) -> str:
    """One line per step in the seed's words of transitions."""
    return "\n".join(s.explain() for s in t.steps)


def render_chunks(t: Trace, fmt: Format = "grid", *, width: int = 100, style: str = "simple") -> Iterator[str]:
    """``render``'s text in pieces: csv and json stream a long trace chunk by chunk; the others come whole."""
    if fmt == "json":
        yield from json_chunks(t)
    elif fmt == "csv":
        yield from csv_chunks(t)
    else:
        yield render(t, fmt, width=width, style=style)


def render(t: Trace, fmt: Format = "grid", *, width: int = 100, style: str = "simple") -> str:
    """Render ``t`` in one of ``FORMATS``; grid and table come with the summary lines."""
    if fmt == "json":
        return to_json(t)
    if fmt == "csv":
        return to_csv(t)
    if fmt == "markdown":
        return markdown(t)
    body = {"grid": lambda: grid(t, width), "table": lambda: table(t, style), "explain": lambda: explain(t)}[fmt]()
    return (body + "\n\n" if len(t) else "") + _summary(t)
