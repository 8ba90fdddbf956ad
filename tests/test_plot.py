"""``Trace.plot``: what the figure shows (markers, lines, scales, labels), read from matplotlib's objects."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")  # headless: every test renders with Agg, whatever the machine's default

import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402

import plateau_forensics as pf  # noqa: E402
from plateau_forensics.engine import Event  # noqa: E402
from plateau_forensics.errors import ConfigError  # noqa: E402
from plateau_forensics.plot import plot_trace, trace_arrays  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "sample_checkpoints"


@pytest.fixture(scope="module")
def seed000() -> pf.Trace:
    """The seed-000 story: resume at epoch 11, checkpoint after epoch 33, reductions at 29, 35, 41, 47."""
    return pf.trace(SAMPLES / "seed000.pt", SAMPLES / "seed000.csv")


@pytest.fixture(scope="module")
def seed_fig(seed000: pf.Trace):
    """The seed-000 figure, drawn once for the read-only tests."""
    return seed000.plot()


@pytest.fixture(autouse=True)
def _close_figures():
    """Leave no pyplot figure open (matplotlib warns past 20, and warnings are errors here)."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def by_gid(fig, gid: str) -> list:
    """Every artist in ``fig`` tagged with ``gid``."""
    return fig.findobj(lambda a: a.get_gid() == gid)


def axes_by_gid(fig, gid: str):
    """The one Axes tagged ``gid``."""
    (ax,) = [a for a in fig.axes if a.get_gid() == gid]
    return ax


def suppressing_trace() -> pf.Trace:
    """Two reductions down to min_lr=0.3, then three reductions that are due but suppressed."""
    return pf.replay([1.0] * 10 + [0.5] * 3, pf.PlateauConfig(patience=1, factor=0.5, min_lr=0.3), lrs=[1.0])


def long_trace(n: int = 10_000) -> pf.Trace:
    """A noisy 10,000-epoch run with hundreds of reductions, suppressed ones and cooldowns."""
    rng = random.Random(0)
    v, metrics = 2.0, []
    for _ in range(n):
        v = v * 0.9995 + rng.gauss(0, 0.01)
        metrics.append(abs(v) + 0.1)
    return pf.replay(metrics, pf.PlateauConfig(patience=5, cooldown=2, factor=0.7, min_lr=1e-4), lrs=[0.1])


class TestWhatTheFigureShows:
    """The seed-000 figure, read back through matplotlib's artists."""

    def test_one_marker_per_reduction(self, seed000, seed_fig) -> None:
        """The reduction markers sit at exactly the REDUCED epochs, at the lr after the step."""
        (markers,) = by_gid(seed_fig, "pf-reductions")
        reduced = [s for s in seed000.steps if s.event is Event.REDUCED]
        assert [29, 35, 41, 47] == list(markers.get_xdata())
        assert [s.lr[0] for s in reduced] == list(markers.get_ydata())
        assert not by_gid(seed_fig, "pf-suppressed")

    def test_each_reduction_is_annotated_from_to(self, seed_fig) -> None:
        """Every reduction of a short run carries an ``epoch: from → to`` label."""
        texts = sorted(t.get_text() for t in by_gid(seed_fig, "pf-reduction-text"))
        assert ["29: 0.0015 → 0.0012", "35: 0.0012 → 0.00096", "41: 0.00096 → 0.000768",
                "47: 0.000768 → 0.0006144"] == texts

    def test_lr_axis_is_log_and_labelled(self, seed_fig) -> None:
        """The lr panel has a log y axis; every panel has a y label, the bottom one the epoch label."""
        lr_ax = axes_by_gid(seed_fig, "pf-lr-axes")
        assert "log" == lr_ax.get_yscale()
        assert "learning rate (log)" == lr_ax.get_ylabel()
        assert "epoch (log label)" == lr_ax.get_xlabel()
        assert "metric (min)" == axes_by_gid(seed_fig, "pf-metric-axes").get_ylabel()
        assert "counters" == axes_by_gid(seed_fig, "pf-counter-axes").get_ylabel()

    def test_every_panel_has_a_legend(self, seed_fig) -> None:
        """Each of the three panels carries a legend naming its series."""
        for gid in ("pf-metric-axes", "pf-counter-axes", "pf-lr-axes"):
            legend = axes_by_gid(seed_fig, gid).get_legend()
            assert legend is not None and legend.get_texts()
        labels = [t.get_text() for t in axes_by_gid(seed_fig, "pf-metric-axes").get_legend().get_texts()]
        assert "bar to beat: best*(1-0.0001)" in labels

    def test_checkpoint_and_resume_lines(self, seed000, seed_fig) -> None:
        """A vertical line at the alignment epoch (33) and one at the resume point (34) on every panel."""
        ck = by_gid(seed_fig, "pf-checkpoint")
        assert 3 == len(ck)
        assert all(list(line.get_xdata()) == [seed000.alignment.epoch] * 2 for line in ck)
        resume = by_gid(seed_fig, "pf-resume")
        assert 3 == len(resume)
        assert [seed000.epochs[seed000.starts[1].index]] * 2 == list(resume[0].get_xdata())

    def test_bar_is_the_value_each_metric_had_to_beat(self, seed000, seed_fig) -> None:
        """The dashed bar line, read at each epoch, is ``Step.bar``; the best line is ``Step.best``."""
        (bar,) = by_gid(seed_fig, "pf-bar")
        (best,) = by_gid(seed_fig, "pf-best")
        bars = [s.bar for s in seed000.steps]
        assert bars[1:] == list(bar.get_ydata()[1:-1])  # step 0's bar is inf: not drawn
        assert np.isnan(bar.get_ydata()[0])
        assert [s.best for s in seed000.steps] == list(best.get_ydata()[:-1])
        assert bar.get_drawstyle() == "steps-pre" and best.get_drawstyle() == "steps-post"

    def test_improved_and_not_improved_markers(self, seed000, seed_fig) -> None:
        """Filled markers at improvements, hollow ones elsewhere, one per epoch in all."""
        (imp,) = by_gid(seed_fig, "pf-improved")
        (bad,) = by_gid(seed_fig, "pf-not-improved")
        assert [s.epoch for s in seed000.steps if s.improved] == list(imp.get_xdata())
        assert len(seed000) == len(imp.get_xdata()) + len(bad.get_xdata())
        assert "white" == bad.get_markerfacecolor()

    def test_cooldown_is_hatched_per_run(self, seed_fig) -> None:
        """Cooldown epochs (30-32, 36-38, 42-44, 48-49) are hatched spans, one per run, on every panel."""
        shades = by_gid(seed_fig, "pf-cooldown")
        assert 3 == len(shades)
        spans = [(p.vertices[:, 0].min(), p.vertices[:, 0].max()) for p in shades[0].get_paths()]
        assert [(29.5, 32.5), (35.5, 38.5), (41.5, 44.5), (47.5, 49.5)] == spans
        assert shades[0].get_hatch()

    def test_counters_climb_to_patience(self, seed000, seed_fig) -> None:
        """The patience line sits at 2; the count that made each reduction due (3) is drawn at its epoch."""
        (patience,) = by_gid(seed_fig, "pf-patience")
        assert [2, 2] == list(patience.get_ydata())
        triggers = by_gid(seed_fig, "pf-trigger")
        assert [29, 35, 41, 47] == sorted(round(b.get_x() + b.get_width() / 2) for b in triggers)
        assert {3} == {b.get_height() for b in triggers}

    def test_offset_axis_shows_last_epoch(self, seed_fig) -> None:
        """The top axis translates epochs to torch's last_epoch: the seed's 10-epoch offset."""
        m_ax = axes_by_gid(seed_fig, "pf-metric-axes")
        (sec,) = [c for c in m_ax.child_axes if c.get_gid() == "pf-last-epoch-axis"]
        assert "scheduler step (last_epoch = epoch - 10)" == sec.get_xlabel()


class TestVariants:
    """Suppressed reductions, several param groups, given axes, bad paths."""

    def test_suppressed_reductions_are_marked_apart(self) -> None:
        """Reductions blocked by min_lr get their own markers; the reduction markers count only real ones."""
        t = suppressing_trace()
        fig = plot_trace(t)
        (red,) = by_gid(fig, "pf-reductions")
        (sup,) = by_gid(fig, "pf-suppressed")
        events = [s.event for s in t.steps]
        assert events.count(Event.REDUCED) == len(red.get_xdata()) == 2
        assert events.count(Event.SUPPRESSED) == len(sup.get_xdata()) == 3
        assert red.get_marker() != sup.get_marker()
        assert "white" == sup.get_markerfacecolor()

    def test_one_lr_line_per_param_group(self) -> None:
        """Two param groups draw two lr lines, told apart by line style, not only colour."""
        t = pf.trace(SAMPLES / "two_groups.pt", SAMPLES / "two_groups.csv")
        fig = plot_trace(t)
        (g0,) = by_gid(fig, "pf-lr-0")
        (g1,) = by_gid(fig, "pf-lr-1")
        assert g0.get_linestyle() != g1.get_linestyle()
        assert [s.lr[1] for s in t.steps] == list(g1.get_ydata()[:-1])
        (red,) = by_gid(fig, "pf-reductions")
        assert len(t.reductions()) == len(red.get_xdata())

    def test_draws_into_given_axes(self, seed000) -> None:
        """Three given axes receive the three panels; a single Axes gets the lr panel alone."""
        from matplotlib.figure import Figure

        fig = Figure()
        axes = fig.subplots(3, 1)
        assert fig is plot_trace(seed000, ax=list(axes))
        assert "pf-lr-axes" == axes[2].get_gid()
        single = Figure().subplots()
        plot_trace(seed000, ax=single)
        assert "log" == single.get_yscale()
        assert 4 == len(by_gid(single.figure, "pf-reductions")[0].get_xdata())

    def test_keras_rules_trace(self) -> None:
        """A Keras-rules replay draws too: its bar is ``best - min_delta``, its reductions are marked."""
        from plateau_forensics.keras_rules import KerasConfig, run_keras

        metrics = [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0, 0.85, 0.9, 0.91, 0.92]
        t = run_keras(KerasConfig(patience=2, cooldown=2, factor=0.5, mode="min"), metrics, 0.1)
        fig = plot_trace(t)
        (red,) = by_gid(fig, "pf-reductions")
        assert [s.epoch for s in t.reductions()] == list(red.get_xdata())
        (bar,) = by_gid(fig, "pf-bar")
        assert 0.9 - 1e-4 == bar.get_ydata()[2]  # epoch 3 had to beat best 0.9 by min_delta
        labels = [x.get_text() for x in axes_by_gid(fig, "pf-counter-axes").get_legend().get_texts()]
        assert "patience = 2 (reduce when reached)" in labels

    def test_unknown_suffix_is_refused_before_drawing(self, seed000, tmp_path: Path) -> None:
        """A .jpg path raises ConfigError naming the formats; nothing is written."""
        with pytest.raises(ConfigError, match=r"use one of \.png, \.svg, \.pdf"):
            seed000.plot(tmp_path / "out.jpg")
        assert not list(tmp_path.iterdir())

    def test_empty_trace_still_draws(self) -> None:
        """A replay of no metrics gives a figure saying so, not an exception."""
        fig = plot_trace(pf.replay([], pf.PlateauConfig(), lrs=[0.1]))
        assert any("empty trace" in t.get_text() for t in fig.axes[0].texts)


class TestFiles:
    """What gets written: real, non-blank images in three formats, the same bytes every time."""

    def test_png_is_not_blank(self, seed000, tmp_path: Path) -> None:
        """The saved PNG reads back as an image with real contrast, at 100 dpi."""
        path = tmp_path / "seed.png"
        seed000.plot(path)
        img = mpimg.imread(path)
        assert (750, 1100) == img.shape[:2]
        grey = img[..., :3].mean(axis=2)
        assert grey.std() > 0.05
        assert (grey < 0.2).mean() > 0.005  # lines and text, not just a white page

    @pytest.mark.parametrize(("suffix", "magic"), [(".svg", b"<?xml"), (".pdf", b"%PDF")], ids=["svg", "pdf"])
    def test_vector_formats(self, seed000, tmp_path: Path, suffix: str, magic: bytes) -> None:
        """SVG and PDF are written by suffix."""
        path = tmp_path / f"seed{suffix}"
        seed000.plot(path)
        assert path.read_bytes().startswith(magic)

    def test_same_bytes_every_time(self, seed000, tmp_path: Path) -> None:
        """Two renders of the same trace give identical PNG files (the README plot is regenerated)."""
        a, b = tmp_path / "a.png", tmp_path / "b.png"
        seed000.plot(a)
        seed000.plot(b)
        assert a.read_bytes() == b.read_bytes()

    def test_saving_does_not_touch_pyplot(self, tmp_path: Path) -> None:
        """With a path, the figure is built without pyplot: no backend is chosen, no global state."""
        code = (
            "import sys, plateau_forensics as pf\n"
            f"t = pf.replay([1.0, 1.1, 1.2, 1.3], pf.PlateauConfig(patience=1), lrs=[0.1])\n"
            f"t.plot({str(tmp_path / 'x.png')!r})\n"
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True)
        assert (tmp_path / "x.png").stat().st_size > 1000


class TestLongRuns:
    """10,000 epochs: drawn from the columns, every reduction still marked."""

    def test_ten_thousand_epochs(self, tmp_path: Path) -> None:
        """A 10,000-epoch trace renders to PNG; the marker counts still equal the event counts."""
        t = long_trace()
        fig = t.plot(tmp_path / "long.png")
        a = trace_arrays(t)
        (red,) = by_gid(fig, "pf-reductions")
        (sup,) = by_gid(fig, "pf-suppressed")
        assert len(a.reduced) == len(red.get_xdata())
        assert len(a.suppressed) == len(sup.get_xdata())
        assert len(by_gid(fig, "pf-reduction-text")) <= 20
        assert not by_gid(fig, "pf-improved")  # per-epoch markers are left out above max_markers
        assert mpimg.imread(tmp_path / "long.png")[..., :3].std() > 0.05

    def test_arrays_match_the_steps(self) -> None:
        """The column arrays the plot reads agree with the Step records."""
        t = pf.trace(SAMPLES / "seed000.pt", SAMPLES / "seed000.csv")
        a = trace_arrays(t)
        steps = list(t.steps)
        assert [s.best_before for s in steps] == a.best_before.tolist()
        assert [s.num_bad_before for s in steps] == a.num_bad_before.tolist()
        assert [s.cooldown_before for s in steps] == a.cooldown_before.tolist()
        assert [s.last_epoch for s in steps] == a.last_epoch.tolist()
        assert [s.improved for s in steps] == a.improved.tolist()
        assert [s.bar for s in steps[1:]] == a.bar_before[1:].tolist()


def test_readme_plot_script(tmp_path: Path) -> None:
    """scripts/make_readme_plot.py writes a small PNG, the same bytes twice on one machine (committed inputs,
    no training; not compared with the committed file, whose bytes may differ on another machine)."""
    root = Path(__file__).resolve().parent.parent
    script = root / "scripts" / "make_readme_plot.py"
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for out in (a, b):
        subprocess.run([sys.executable, str(script), str(out)], check=True, capture_output=True)
    assert a.read_bytes() == b.read_bytes()
    assert a.stat().st_size < 150_000
    committed = root / "docs" / "img" / "seed000.png"
    fresh, old = mpimg.imread(a)[..., :3], mpimg.imread(committed)[..., :3]
    assert fresh.shape == old.shape
    # pixel-identical on the same matplotlib; allow a little drift across releases (regenerate if it fails)
    assert np.abs(fresh - old).mean() < 0.02


def test_logged_lr_beside_the_replay() -> None:
    """The lr panel shows the logged lr of every epoch; the epochs the story calls external changes are ringed."""
    d = SAMPLES / "resumes" / "external-lr-change"
    t = pf.trace(d / "ckpt.pt", d / "log.csv")
    fig = t.plot()
    agree = by_gid(fig, "pf-logged-lr")
    ringed = by_gid(fig, "pf-logged-lr-mismatch")
    assert 1 == len(agree) and 1 == len(ringed)
    external = next(f for f in t.findings if f.code == "external-lr-change").evidence["epochs"]
    assert sorted(ringed[0].get_xdata()) == sorted(float(e) for e in external)
    assert len(agree[0].get_xdata()) + len(ringed[0].get_xdata()) == len(t)
