"""``Trace._repr_html_``: the seed's grid as HTML, highlighted, collapsed around events on long runs."""

from __future__ import annotations

import random
from html.parser import HTMLParser
from pathlib import Path

import pytest

import plateau_forensics as pf
from plateau_forensics.engine import Event
from plateau_forensics.html import ROWS, trace_html, visible_columns

SAMPLES = Path(__file__).resolve().parent.parent / "sample_checkpoints"
VOID = {"br", "hr", "img", "meta", "link", "input", "col", "wbr"}


class Grid(HTMLParser):
    """Parse the grid back: every row's cells as (text, classes), and check that tags nest."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tables: list[list[list[tuple[str, set[str], dict[str, str]]]]] = []
        self.cell: list | None = None
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID:
            self.stack.append(tag)
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = ["", set(a.get("class", "").split()), a]

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
            return
        self.stack.pop()
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1][-1].append(tuple(self.cell))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell[0] += data


def parse(html: str) -> Grid:
    """Parse ``html``; fail on any tag that does not nest."""
    p = Grid()
    p.feed(html)
    p.close()
    assert not p.errors, p.errors
    assert not p.stack, f"unclosed {p.stack}"
    return p


def grid_rows(html: str) -> dict[str, list[tuple[str, set[str], dict[str, str]]]]:
    """The first table (the grid) as ``{row name: cells after the label}``."""
    table = parse(html).tables[0]
    return {row[0][0]: row[1:] for row in table}


@pytest.fixture(scope="module")
def seed000() -> pf.Trace:
    """The seed-000 trace (reductions at 29, 35, 41, 47; checkpoint after 33)."""
    return pf.trace(SAMPLES / "seed000.pt", SAMPLES / "seed000.csv")


def long_trace(n: int = 2000) -> pf.Trace:
    """A 2,000-epoch decaying noisy loss with dozens of reductions."""
    rng = random.Random(1)
    metrics = [1 / (1 + i / 50) + rng.gauss(0, 0.01) for i in range(n)]
    return pf.replay(metrics, pf.PlateauConfig(patience=20, cooldown=5, factor=0.9), lrs=[0.1])


class TestSeedGrid:
    """The short seed-000 run: every epoch is a column."""

    def test_rows_in_the_seed_layout(self, seed000) -> None:
        """Rows epoch, last_epoch, metric, best, num_bad, cooldown, lr, event; one column per step."""
        rows = grid_rows(trace_html(seed000))
        assert list(ROWS) == list(rows)
        assert [str(e) for e in seed000.epochs] == [c[0] for c in rows["epoch"]]
        assert [str(s.last_epoch) for s in seed000.steps] == [c[0] for c in rows["last_epoch"]]

    def test_reductions_highlighted(self, seed000) -> None:
        """The reduction epochs' columns carry the pf-reduced class and the ``LR`` mark."""
        rows = grid_rows(trace_html(seed000))
        reduced = [c[0] for c in rows["epoch"] if "pf-reduced" in c[1]]
        assert ["29", "35", "41", "47"] == reduced
        assert all(c[0] == "LR" for c in rows["event"] if "pf-reduced" in c[1])
        assert all("background" in c[2]["style"] for c in rows["lr"] if "pf-reduced" in c[1])

    def test_cooldown_and_checkpoint_columns(self, seed000) -> None:
        """Steps run in cooldown are marked, the checkpoint column says ``+ckpt``, the resume is marked."""
        rows = grid_rows(trace_html(seed000))
        cool = [c[0] for c in rows["epoch"] if "pf-cooldown" in c[1]]
        assert ["30", "31", "32", "36", "37", "38", "42", "43", "44", "48", "49"] == cool
        ck = [i for i, c in enumerate(rows["epoch"]) if "pf-checkpoint" in c[1]]
        assert 1 == len(ck) and "33" == rows["epoch"][ck[0]][0]
        assert "bad+ckpt" == rows["event"][ck[0]][0]
        assert ["34"] == [c[0] for c in rows["epoch"] if "pf-resume" in c[1]]

    def test_event_cells_explain_on_hover(self, seed000) -> None:
        """Each event cell's title is the step's reason, as ``--explain`` prints it."""
        rows = grid_rows(trace_html(seed000))
        titles = [c[2]["title"] for c in rows["event"]]
        assert [s.explain() for s in seed000.steps] == titles

    def test_summary_below(self, seed000) -> None:
        """The summary lines follow the grid: alignment, reductions, forecast, findings."""
        tables = parse(trace_html(seed000)).tables
        summary = {row[0][0]: row[1][0] for row in tables[1]}
        assert summary["alignment"].startswith("saved after epoch 33 (scheduler step 23): epoch offset 10")
        assert summary["forecast"] == seed000.forecast().sentence()
        assert "epoch 47: 0.000768 -> 0.0006144" in summary["reductions"]

    def test_repr_html_is_trace_html(self, seed000) -> None:
        """Jupyter's display hook returns the same HTML."""
        assert trace_html(seed000) == seed000._repr_html_()


class TestCollapsing:
    """Long runs keep every reduction and collapse the quiet stretches."""

    def test_every_reduction_kept_with_ellipses(self) -> None:
        """On 2,000 epochs each reduction epoch has its column and hidden stretches show as ``…``."""
        t = long_trace()
        rows = grid_rows(trace_html(t, max_columns=60))
        epochs = [c[0] for c in rows["epoch"]]
        reductions = [str(s.epoch) for s in t.reductions()]
        assert len(reductions) > 20
        assert set(reductions) <= set(epochs)
        assert reductions == [c[0] for c in rows["epoch"] if "pf-reduced" in c[1]]
        gaps = [c for c in rows["epoch"] if "pf-gap" in c[1]]
        assert gaps and all(c[0] == "…" for c in gaps)
        assert len(epochs) < len(t)
        assert all(len(cells) == len(epochs) for cells in rows.values())

    def test_windows_around_events(self) -> None:
        """With room to spare, two steps either side of each event are shown, plus the ends."""
        falling = [0.5 - 1e-3 * i for i in range(200)]
        t = pf.replay([1.0] + [1.5] * 11 + falling, pf.PlateauConfig(patience=10), lrs=[0.1])
        assert [11] == [s.index for s in t.reductions()]
        cols = visible_columns(t, max_columns=30, context=2)
        assert [0, 1, 2, (3, 8), 9, 10, 11, 12, 13, (14, 208), 209, 210, 211] == cols

    def test_gap_title_counts_hidden_steps(self) -> None:
        """A ``…`` column's title says which epochs it hides."""
        t = pf.replay([1.0] * 300, pf.PlateauConfig(patience=1000), lrs=[0.1])
        rows = grid_rows(trace_html(t, max_columns=10))
        (gap,) = [c for c in rows["epoch"] if "pf-gap" in c[1]]
        assert "epochs 4-297 hidden: 294 steps without a reduction" == gap[2]["title"]


def test_text_is_escaped() -> None:
    """Notes and findings are escaped: markup in them shows as text."""
    t = pf.replay([1.0, 1.1], pf.PlateauConfig(patience=0), lrs=[0.1])
    t.notes.append('<script>alert("x")</script> & <b>')
    html = trace_html(t)
    assert "<script>" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;" in html
    parse(html)


def test_suppressed_highlighted() -> None:
    """A reduction blocked by min_lr is its own kind of column (``lr=``)."""
    t = pf.replay([1.0] * 8, pf.PlateauConfig(patience=1, factor=0.5, min_lr=0.05), lrs=[0.1])
    rows = grid_rows(trace_html(t))
    sup = [c for c in rows["event"] if "pf-suppressed" in c[1]]
    assert [s for s in t.steps if s.event is Event.SUPPRESSED]
    assert sup and all(c[0] == "lr=" for c in sup)


def test_empty_trace() -> None:
    """A trace with no steps renders its summary only."""
    html = trace_html(pf.replay([], pf.PlateauConfig(), lrs=[0.1]))
    assert "0 steps" in html
    assert 1 == len(parse(html).tables)
