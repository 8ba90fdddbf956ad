"""Rendering long traces: the collapsed terminal grid, the capped reductions line, the streamed JSON."""

from __future__ import annotations

import csv
import io
import json
import math

import plateau_forensics as pf
from plateau_forensics import report
from plateau_forensics.engine import Event


def grid_columns(text: str) -> list[dict[str, str]]:
    """The grid's columns, across its wrapped blocks, as {row name: cell}."""
    cols: list[dict[str, str]] = []
    for block in text.split("\n\n"):
        lines = block.splitlines()
        if not lines or not lines[0].startswith("epoch "):
            continue
        table = {ln.split()[0]: ln.split()[1:] for ln in lines}
        for k in range(len(table["epoch"])):
            cols.append({name: cells[k] for name, cells in table.items()})
    return cols


def at_floor(n: int) -> pf.Trace:
    """A run that reaches min_lr early and then has a suppressed reduction every ``patience + 1`` steps."""
    return pf.replay([1.0] * n, pf.PlateauConfig(patience=4, factor=0.5, min_lr=0.01), lrs=[0.1])


def many_reductions(n: int) -> pf.Trace:
    """More real reductions than the grid has columns (factor 0.999, no floor in reach)."""
    return pf.replay([1.0] * n, pf.PlateauConfig(patience=0, factor=0.999), lrs=[0.1])


class TestGrid:
    def test_short_trace_every_column(self) -> None:
        t = at_floor(50)
        cols = grid_columns(report.grid(t, width=100))
        assert [str(e) for e in t.epochs] == [c["epoch"] for c in cols]

    def test_long_trace_windows(self) -> None:
        """Every real reduction, the first suppressed ones and the last one, the ends; "..." between."""
        t = at_floor(20_000)
        cols = grid_columns(report.grid(t, width=100))
        assert len(cols) <= report.GRID_COLUMNS
        shown = [c["epoch"] for c in cols]
        reduced = [str(s.epoch) for s in t.reductions() if s.event is Event.REDUCED]
        suppressed = [str(s.epoch) for s in t.reductions() if s.event is Event.SUPPRESSED]
        assert len(suppressed) > 1000 and len(reduced) >= 3
        assert set(reduced) <= set(shown)
        assert set(suppressed[: report.SHOWN_SUPPRESSED] + suppressed[-1:]) <= set(shown)
        ends = [str(e) for e in (*t.epochs[:3], *t.epochs[-3:])]
        assert ends == shown[:3] + shown[-3:]
        assert "..." in shown
        assert all(c["event"] == "..." for c in cols if c["epoch"] == "...")

    def test_more_reductions_than_columns(self) -> None:
        """Beyond what fits, the first reductions and the last ones, one hidden middle."""
        t = many_reductions(3000)
        cols = grid_columns(report.grid(t, width=100))
        assert len(cols) <= report.GRID_COLUMNS
        shown = [c["epoch"] for c in cols]
        assert shown[:3] == [str(e) for e in t.epochs[:3]] and shown[-1] == str(t.epochs[-1])
        assert shown.count("...") == 1

    def test_html_keeps_every_reduction(self) -> None:
        """The notebook table promises every reduction column (it scrolls); only the terminal grid cuts."""
        t = many_reductions(400)
        cols = report.visible_columns(t, max_columns=60)
        assert {s.index for s in t.reductions()} <= {c for c in cols if isinstance(c, int)}


class TestReductionsLine:
    def test_capped(self) -> None:
        t = at_floor(2000)
        reds = t.reductions()
        text = report.reductions_text(t)
        listed = text.count("epoch ")
        assert listed == report.MAX_LISTED_REDUCTIONS
        assert f"... {len(reds) - report.MAX_LISTED_REDUCTIONS} more" in text
        assert text.startswith(f"epoch {reds[0].epoch}: ") and f"epoch {reds[-1].epoch}: " in text

    def test_short_list_whole(self) -> None:
        t = at_floor(40)
        text = report.reductions_text(t)
        assert text.count("epoch ") == len(t.reductions()) <= report.MAX_LISTED_REDUCTIONS
        assert "more" not in text

    def test_none(self) -> None:
        assert "none" == report.reductions_text(pf.replay([3.0, 2.0, 1.0], lrs=[0.1]))


class TestLongRecords:
    def test_json_stream_is_the_object(self) -> None:
        """The streamed text parses to exactly ``to_json_obj`` (NaN and inf metrics as strings)."""
        t = pf.replay([1.0, math.nan, math.inf, -math.inf, 0.5] * 10, lrs=[0.1, 0.2])
        assert json.loads(report.to_json(t)) == report.to_json_obj(t)
        empty = pf.replay([], lrs=[0.1])
        assert json.loads(report.to_json(empty)) == report.to_json_obj(empty)

    def test_long_rows_explain_what_happened(self) -> None:
        """Above EXPLAIN_ROWS, reductions and suppressed ones keep their reason; quiet rows carry none."""
        t = at_floor(report.EXPLAIN_ROWS + 10)
        rows = list(csv.DictReader(io.StringIO(report.to_csv(t))))
        assert len(rows) == len(t)
        for r in rows:
            if r["event"] in ("reduced", "suppressed"):
                assert r["reason"]
            else:
                assert r["reason"] == ""
        steps = json.loads(report.to_json(t))["steps"]
        assert [s["event"] for s in steps] == [r["event"] for r in rows]

    def test_short_rows_explain_every_step(self) -> None:
        t = at_floor(100)
        rows = list(csv.DictReader(io.StringIO(report.to_csv(t))))
        assert all(r["reason"] for r in rows)


class TestFastWriters:
    """A long trace's csv and json are written from the engine's columns: the same values as the step
    records give (checked against the generic writer, which builds a ``Step`` for every row)."""

    def _trace(self) -> pf.Trace:
        n = report.EXPLAIN_ROWS + 50
        metrics = [math.nan if i % 97 == 0 else (math.inf if i % 89 == 0 else 1.0 - (i % 13) * 1e-3)
                   for i in range(n)]
        t = pf.replay(metrics, pf.PlateauConfig(patience=3, factor=0.5, min_lr=1e-4), lrs=[0.1, 0.02])
        t.unknown = frozenset(range(n - 20, n))  # as a story leaves the end undetermined
        t.lr_unknown = frozenset(range(n - 10, n))
        return t

    def test_csv_same_values(self, monkeypatch) -> None:
        t = self._trace()
        fast = list(csv.reader(io.StringIO(report.to_csv(t))))
        monkeypatch.setattr(report, "EXPLAIN_ROWS", 10**9)
        slow = list(csv.reader(io.StringIO(report.to_csv(t))))
        assert len(fast) == len(slow) == len(t) + 1 and fast[0] == slow[0]
        for f, s in zip(fast[1:], slow[1:], strict=True):
            assert f[:-1] == s[:-1]
            assert f[-1] == (s[-1] if f[-2] in ("reduced", "suppressed", "") else "")

    def test_json_same_values(self, monkeypatch) -> None:
        t = self._trace()
        fast = json.loads(report.to_json(t))["steps"]
        monkeypatch.setattr(report, "EXPLAIN_ROWS", 10**9)
        slow = json.loads(report.to_json(t))["steps"]
        assert len(fast) == len(slow) == len(t)
        for f, s in zip(fast, slow, strict=True):
            assert {k: v for k, v in f.items() if k != "reason"} == {k: v for k, v in s.items() if k != "reason"}
            assert f["reason"] == (s["reason"] if f["event"] in ("reduced", "suppressed", None) else "")


class TestChunkedWriters:
    """The long writers' chunks (``report._CHUNK`` rows each) join to the same text, whatever the chunk size,
    and the same values as the step records give; values equal with other texts (-0.0 and 0.0) keep their
    own."""

    def _trace(self) -> pf.Trace:
        n = report.EXPLAIN_ROWS + 77
        metrics = [(-0.0 if i % 7 == 0 else 0.0) if i % 5 < 2 else 1.0 - (i % 13) * 1e-3 for i in range(n)]
        metrics[3] = math.nan
        t = pf.replay(metrics, pf.PlateauConfig(patience=2, factor=0.5, min_lr=1e-4, threshold_mode="abs"),
                      lrs=[0.1, 0.02])
        t.unknown = frozenset(range(n - 40, n - 5))
        t.lr_unknown = frozenset(range(n - 30, n - 5))
        return t

    def test_chunk_size_does_not_change_the_text(self, monkeypatch) -> None:
        t = self._trace()
        whole = report.to_csv(t), report.to_json(t)
        monkeypatch.setattr(report, "_CHUNK", 997)  # about 21 chunks, the last one short
        assert (report.to_csv(t), report.to_json(t)) == whole

    def test_zero_signs_kept(self, monkeypatch) -> None:
        t = self._trace()
        assert "-0.0" in {repr(b) for b in t._cols.best}  # the trace does hold both zeros in best
        monkeypatch.setattr(report, "_CHUNK", 997)
        fast = list(csv.reader(io.StringIO(report.to_csv(t))))
        monkeypatch.setattr(report, "EXPLAIN_ROWS", 10**9)
        slow = list(csv.reader(io.StringIO(report.to_csv(t))))
        assert [r[:-1] for r in fast] == [r[:-1] for r in slow]


class TestReasonsInBulk:
    """``Trace.reasons`` (what the long writers use) says what ``Trace.step(i).reason`` says, on traces with
    several starts, logged lrs that override the replay's, undecidable comparisons and unknown rows."""

    def _traces(self, tmp_path) -> list[pf.Trace]:
        from pathlib import Path

        root = Path(__file__).resolve().parent.parent / "sample_checkpoints"
        out = []
        for ck in sorted((root / "resumes").glob("*/ckpt.pt")):
            logs = sorted(ck.parent.glob("*.csv"))
            if logs:
                out.append(pf.trace(ck, logs[0] if len(logs) == 1 else logs))
        with (root / "seed000.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        rounded = tmp_path / "rounded.csv"
        with rounded.open("w", newline="") as f:
            w = csv.DictWriter(f, list(rows[0]))
            w.writeheader()
            w.writerows({**r, "val_loss": f"{float(r['val_loss']):.3f}"} for r in rows)
        out.append(pf.trace(root / "seed000.pt", rounded))
        moved = tmp_path / "moved.csv"  # the lr moved by hand: reductions suppressed (eps) at two lrs
        moved.write_text("epoch,val_loss,lr\n"
                         + "".join(f"{i},1.0,{0.05 if i < 20 else 0.2}\n" for i in range(40)))
        out.append(pf.trace(None, moved, config=pf.PlateauConfig(patience=1, eps=1.0), lr=[0.05]))
        hidden = pf.trace(root / "seed000.pt", root / "seed000.csv")
        hidden.unknown = frozenset(range(5, 12))
        out.append(hidden)
        return out

    def test_same_as_step_reason(self, tmp_path) -> None:
        traces = self._traces(tmp_path)
        seen = {"starts": 0, "lr_ins": 0, "undecided": 0, "unknown": 0, "suppressed at two lrs": 0}
        for t in traces:
            n = len(t)
            assert t.reasons(range(n)) == [t.step(i).reason for i in range(n)]
            assert t.reasons([n - 1, 0]) == [t.step(n - 1).reason, t.step(0).reason]
            seen["starts"] += len(t.starts) > 1
            seen["lr_ins"] += t.lr_ins is not None and any(x is not None for x in t.lr_ins)
            seen["undecided"] += bool(t.undecided)
            seen["unknown"] += bool(t.unknown)
            seen["suppressed at two lrs"] += len({t.lr_before(i) for i in range(n)
                                                  if t._cols.events[i] == report._SUPPRESSED}) > 1
        assert all(seen.values()), seen  # every kind of row was compared


class TestUndeterminedLrs:
    """An lr the inputs do not determine reads as ? in the summary, never as the nan that stands for it."""

    def test_reductions_line(self) -> None:
        t = many_reductions(12)
        reds = [i for i, e in enumerate(t._cols.events) if e == report._REDUCED]
        t.lr_unknown = frozenset(range(reds[2], len(t)))
        text = report.reductions_text(t)
        parts = text.split("; ")
        assert "?" not in parts[1] and parts[2].endswith("-> ?") and "? -> ?" in parts[3], text
        assert "nan" not in text

    def test_forecast_sentence(self) -> None:
        from plateau_forensics.engine import Forecast

        f = Forecast(3, 12.0, 0.5, "min", (math.nan,), (math.nan,))
        assert "nan" not in f.sentence() and "do not determine" in f.sentence()
        assert "lr 0.1 -> 0.01" in Forecast(3, 12.0, 0.5, "min", (0.1,), (0.01,)).sentence()
