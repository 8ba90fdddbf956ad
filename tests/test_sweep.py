"""Sweeps: the vectorized replay equals the scalar engine and real torch schedulers lane by lane; its outputs."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch_oracle import lrs_of, make_scheduler, same, same_tuple

from plateau_forensics.cli import ExitStatus, main
from plateau_forensics.engine import Event, run
from plateau_forensics.errors import ConfigError
from plateau_forensics.state import PlateauConfig
from plateau_forensics.sweep import parse_sweep, sweep

# A small pool makes ties, exact repeats and sign changes frequent; NaN and infinities are real values.
POOL = [0.0, -0.0, 1.0, 0.5, 0.4999, 0.49995, -1.0, -0.95, 2.0, 1e-9, 1e300]
metric_values = st.one_of(
    st.sampled_from(POOL),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.floats(min_value=-3, max_value=3),
)
AXES = {
    "mode": st.sampled_from(["min", "max"]),
    "factor": st.sampled_from([0.1, 0.5, 0.8, 0.999, 0.0, -0.5, 0.3333333333333333]),
    "patience": st.integers(-1, 5),
    "threshold": st.sampled_from([0.0, 1e-4, 0.01, 0.1, 0.5, 1.0, 1.5]),
    "threshold_mode": st.sampled_from(["rel", "abs"]),
    "cooldown": st.integers(-1, 4),
    "eps": st.sampled_from([0.0, 1e-8, 1e-3, -1e-3]),
}


@st.composite
def grids(draw: st.DrawFn, most: int = 3) -> dict:
    """Random lrs, metrics and a grid over a random subset of the hyperparameters (1-``most`` values each)."""
    n_groups = draw(st.integers(1, 3))
    lrs = draw(st.lists(st.sampled_from([1.0, 0.5, 0.1, 0.05, 1e-3, 1e-7, 3e-8, 0.0]), min_size=n_groups,
                        max_size=n_groups))
    keys = draw(st.lists(st.sampled_from(sorted(AXES)), unique=True, min_size=1, max_size=4))
    grid = {k: draw(st.lists(AXES[k], min_size=1, max_size=most, unique=True)) for k in keys}
    floors = st.one_of(st.sampled_from([0.0, 1e-3, 0.01, 0.2, 1e-9]),
                       st.tuples(*[st.sampled_from([0.0, 1e-3, 0.01, 0.3])] * n_groups))
    if draw(st.booleans()):
        grid["min_lr"] = draw(st.lists(floors, min_size=1, max_size=2, unique=True))
    metrics = draw(st.lists(metric_values, min_size=0, max_size=40))
    return {"lrs": lrs, "grid": grid, "metrics": metrics}


EVENT_CODES = list(Event)  # the engine's event columns hold indices into Event's declaration order


def engine_columns(cfg: PlateauConfig, metrics: list[float], lrs: list[float]) -> dict:
    """What the scalar engine says for one configuration, in the sweep's terms (read from its columns)."""
    t = run(cfg, metrics, lrs)
    events = [EVENT_CODES[e] for e in t._cols.events]
    return {
        "reduced": [t.epochs[i] for i, e in enumerate(events) if e is Event.REDUCED],
        "suppressed": [t.epochs[i] for i, e in enumerate(events) if e is Event.SUPPRESSED],
        "timeline": list(t._cols.lrs),
        "final": (t.final.best, t.final.num_bad_epochs, t.final.cooldown_counter, tuple(t.lrs)),
    }


class TestDifferential:
    """Every lane equals the scalar engine and a real torch scheduler at every step."""

    @settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(grids())
    def test_every_lane_equals_the_engine(self, sc: dict) -> None:
        """Reductions, suppressed reductions, every step's lrs and the end counters equal ``engine.run``."""
        sw = sweep(sc["metrics"], sc["grid"], lrs=sc["lrs"])
        for k in range(len(sw)):
            want = engine_columns(sw.config(k), sc["metrics"], sc["lrs"])
            assert want["reduced"] == sw.reduction_epochs(k)
            assert want["suppressed"] == sw.suppressed_epochs(k)
            got = sw.lr_timeline(k)
            assert len(want["timeline"]) == len(got)
            assert all(same_tuple(a, b) for a, b in zip(want["timeline"], got, strict=True))
            best, nb, cd, final = want["final"]
            assert same(best, float(sw.final_best[k]))
            assert (nb, cd) == (int(sw.final_num_bad_epochs[k]), int(sw.final_cooldown_counter[k]))
            assert same_tuple(final, tuple(float(v) for v in sw.final_lrs[k]))

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(grids(most=2))
    def test_every_lane_equals_torch(self, sc: dict) -> None:
        """Each lane's lr after every step and its end counters equal a real ``ReduceLROnPlateau``'s."""
        sw = sweep(sc["metrics"], sc["grid"], lrs=sc["lrs"])
        for k in range(len(sw)):
            kwargs = sw.config(k).to_dict()
            if isinstance(kwargs["min_lr"], list) and len(kwargs["min_lr"]) != len(sc["lrs"]):
                continue
            opt, sched = make_scheduler(sc["lrs"], kwargs)
            timeline = sw.lr_timeline(k)
            for i, m in enumerate(sc["metrics"]):
                sched.step(m)
                assert same_tuple(lrs_of(opt), timeline[i]), f"config {k} step {i}"
            assert same(float(sched.best), float(sw.final_best[k]))
            assert sched.num_bad_epochs == int(sw.final_num_bad_epochs[k])
            assert sched.cooldown_counter == int(sw.final_cooldown_counter[k])

    def test_large_grid_equals_the_engine(self) -> None:
        """A 2,400-configuration grid over a 300-step noisy log with NaN and ties: every lane equals the engine."""
        import random

        rng = random.Random(7)
        metrics, v = [], 1.0
        for i in range(300):
            v *= 1 - rng.uniform(-0.002, 0.01)
            metrics.append(math.nan if i % 97 == 50 else round(v, 3))
        grid = {"patience": range(0, 10), "cooldown": [0, 1, 3], "factor": [0.1, 0.5, 0.9, 0.8],
                "threshold": [0.0, 1e-4, 1e-2, 0.1, 0.3], "min_lr": [0.0, 1e-3], "eps": [1e-8, 1e-4]}
        sw = sweep(metrics, grid, lrs=[0.1])
        assert 2400 == len(sw)
        for k in range(len(sw)):
            want = engine_columns(sw.config(k), metrics, [0.1])
            assert want["reduced"] == sw.reduction_epochs(k)
            assert want["suppressed"] == sw.suppressed_epochs(k)
            assert same_tuple(want["final"][3], tuple(float(x) for x in sw.final_lrs[k]))


class TestRunLengths:
    """Hand-derived run lengths, torch's test style: the patience arithmetic can be checked by eye."""

    def test_patience_lanes(self) -> None:
        """One improvement then bad epochs: patience p reduces on bad epoch p+1, then every p+1 epochs."""
        metrics = [1.0] * 2 + [1.5] * 12  # step 0 improves; from step 1 every step is bad
        sw = sweep(metrics, {"patience": [0, 2, 5]}, lrs=[0.1])
        # patience 0 reduces on every bad step until eps: 0.1 * 0.1**7 = 1e-8, and 1e-8 - 1e-9 <= eps = 1e-8
        assert [2, 3, 4, 5, 6, 7, 8] == sw.reduction_epochs(0)
        assert [9, 10, 11, 12, 13, 14] == sw.suppressed_epochs(0)
        assert [4, 7, 10, 13] == sw.reduction_epochs(1)
        assert [7, 13] == sw.reduction_epochs(2)
        assert [((0.1,), 7), ((0.1 * 0.1,), 6), ((0.1 * 0.1 * 0.1,), 1)] == sw.lr_spans(2)

    def test_cooldown_and_floor(self) -> None:
        """cooldown c mutes the c steps after a reduction; min_lr holds the lr and the due reductions are
        suppressed."""
        sw = sweep([1.0] + [2.0] * 12, {"cooldown": [0, 3]}, base=PlateauConfig(patience=2, factor=0.5,
                                                                                min_lr=0.03), lrs=[0.1])
        assert [4, 7] == sw.reduction_epochs(0) and [10, 13] == sw.suppressed_epochs(0)
        assert [4, 10] == sw.reduction_epochs(1) and [] == sw.suppressed_epochs(1)
        assert [0.1, 0.05, 0.03] == [lr for (lr,), _ in sw.lr_spans(0)]
        assert 13 == sum(n for _, n in sw.lr_spans(0))


class TestGridAndOutputs:
    """The grid order, per-configuration outputs, tables, frames and text formats."""

    def test_grid_order_first_key_outermost(self) -> None:
        """Configurations come in nested-loop order with the first key outermost, like ``expand_what_if``."""
        sw = sweep([1.0, 2.0], {"patience": [1, 2], "factor": [0.1, 0.5, 0.8]})
        assert [(1, 0.1), (1, 0.5), (1, 0.8), (2, 0.1), (2, 0.5), (2, 0.8)] == [
            (sw.settings(k)["patience"], sw.settings(k)["factor"]) for k in range(len(sw))]
        assert PlateauConfig(patience=2, factor=0.5) == sw.config(4)

    def test_list_of_configs(self) -> None:
        """A list of configs or override dicts runs each one, keys a config leaves out keep the base value."""
        metrics = [1.0, 1.1, 1.2, 1.3, 1.4]
        sw = sweep(metrics, [PlateauConfig(patience=1), {"cooldown": 2}], lrs=[0.1])
        assert PlateauConfig(patience=1) == sw.config(0)
        assert PlateauConfig(cooldown=2) == sw.config(1)
        assert [3, 5] == sw.reduction_epochs(0) and [] == sw.reduction_epochs(1)

    def test_table_sorted_and_frame(self) -> None:
        """``table(sort)`` orders by a column (``-`` descending; no reduction last); the frame has every row."""
        sw = sweep([1.0] + [2.0] * 10, {"patience": [9, 0, 3, 20]}, base=PlateauConfig(factor=0.5), lrs=[0.1])
        assert [0, 3, 9, 20] == [r["patience"] for r in sw.table("first_reduction")]
        assert [0, 3, 9, 20] == [r["patience"] for r in sw.table("-reductions")]
        df = sw.to_frame()
        assert list(df["patience"]) == [9, 0, 3, 20]
        assert list(df["reductions"]) == [1, 10, 2, 0]
        assert df.loc[3, "first_reduction"] is None or math.isnan(df.loc[3, "first_reduction"])
        assert {"final_lr", "epochs_at_lr", "reduction_epochs", "suppressed"} <= set(df.columns)
        with pytest.raises(ConfigError, match="cannot sort by 'nope'"):
            sw.table("nope")

    def test_csv_and_json_are_exact(self) -> None:
        """CSV floats are ``repr`` and JSON numbers read back to the same bits; both have one row per config."""
        sw = sweep([1.0, math.nan, 1.0, 1.0, 0.9, 1.0, 1.0], {"factor": [1 / 3, 0.7], "patience": [0, 1]},
                   lrs=[0.3])
        rows = list(csv.DictReader(io.StringIO(sw.render("csv"))))
        assert 4 == len(rows)
        for k, r in enumerate(rows):
            assert float(r["final_lr"]) == float(sw.final_lrs[k, 0])
            assert [int(e) for e in r["reduction_epochs"].split()] == sw.reduction_epochs(k)
        obj = json.loads(sw.render("json"))
        assert [c["final_lr"] for c in obj["configs"]] == [float(v) for v in sw.final_lrs[:, 0]]
        assert {"factor": [1 / 3, 0.7], "patience": [0, 1]} == obj["swept"]

    def test_two_groups_per_group_floor(self) -> None:
        """Two param groups with per-group floors: the final lr and spans hold both groups."""
        sw = sweep([1.0] + [2.0] * 8, {"min_lr": [(0.0, 0.0), (0.0, 0.25)]},
                   base=PlateauConfig(patience=0, factor=0.5), lrs=[1.0, 1.0])
        assert [1.0 / 256, 1.0 / 256] == [float(v) for v in sw.final_lrs[0]]
        assert [1.0 / 256, 0.25] == [float(v) for v in sw.final_lrs[1]]
        assert ((1.0, 1.0), 2) == sw.lr_spans(1)[0]

    def test_from_a_trace_and_a_log(self, tmp_path) -> None:
        """A Trace lends its config, epochs and initial lrs; a CSV path is read with the log rules."""
        import plateau_forensics as pf

        t = pf.replay([1.0, 1.2, 1.3, 1.4], PlateauConfig(patience=1, factor=0.5), lrs=[0.2])
        sw = pf.sweep(t, {"cooldown": [0, 1]})
        assert (0.2,) == sw.initial_lrs and 0.5 == sw.config(0).factor
        assert [s.epoch for s in t.reductions()] == sw.reduction_epochs(0)
        log = tmp_path / "log.csv"
        log.write_text("epoch,val_loss,lr\n5,1.0,0.01\n6,1.1,0.01\n7,1.2,0.01\n")
        sw2 = pf.sweep(str(log), {"patience": [0]})
        assert (0.01,) == sw2.initial_lrs and [6, 7] == sw2.reduction_epochs(0)


class TestErrors:
    """Bad grids are typed errors, each naming the key and value."""

    @pytest.mark.parametrize(("items", "message"), [
        (["patience"], "use KEY=A..B"),
        (["nope=1"], "use KEY=A..B"),
        (["patience=a"], "'a' is not an integer"),
        (["factor=0.1..0.5"], "ranges A..B are for patience and cooldown"),
        (["patience=5..1"], "the range is empty"),
        (["cooldown="], "no values"),
    ], ids=["no-equals", "unknown-key", "not-int", "float-range", "empty-range", "no-values"])
    def test_parse_errors(self, items: list[str], message: str) -> None:
        """Each malformed ``--sweep`` item raises ConfigError with an actionable message."""
        with pytest.raises(ConfigError, match=message):
            parse_sweep(items)

    def test_ranges_and_lists(self) -> None:
        """``A..B``, ``A..B..STEP`` and comma lists combine, in order, without repeats."""
        assert {"patience": [0, 1, 2, 3, 5, 7], "min_lr": [(1e-5, 0.1)], "mode": ["max"]} == parse_sweep(
            ["patience=0..3", "patience=3..7..2", "min_lr=1e-5/0.1", "mode=max"])

    @pytest.mark.parametrize(("grid", "message"), [
        ({"factor": [0.5, 1.0]}, "Factor should be < 1.0"),
        ({"patience": [2.5]}, "not an integer"),
        ({"mode": ["up"]}, "mode up is unknown"),
        ({"min_lr": [(0.1, 0.2)]}, "2 values for 1 param groups"),
        ({"gamma": [0.1]}, "unknown hyperparameter 'gamma'"),
        ({"patience": []}, "no values"),
    ], ids=["factor", "float-patience", "mode", "min-lr-groups", "unknown", "empty"])
    def test_refused_values(self, grid: dict, message: str) -> None:
        """Values torch (or a sweep) cannot run are refused before anything is replayed."""
        with pytest.raises(ConfigError, match=message):
            sweep([1.0, 2.0], grid, lrs=[0.1])


class TestHeatMap:
    """The heat map's content, read back from matplotlib's artists by gid."""

    @pytest.fixture(autouse=True)
    def _agg(self):
        """Headless rendering, and no figure left open."""
        matplotlib = pytest.importorskip("matplotlib")
        matplotlib.use("Agg")
        yield
        import matplotlib.pyplot as plt

        plt.close("all")

    def test_cells_are_the_engine_counts(self) -> None:
        """Each cell holds that (patience, factor) pair's number of reductions, counted by the scalar engine."""
        metrics = [1.0] + [1.0 + 0.01 * (i % 3) for i in range(30)]
        sw = sweep(metrics, {"patience": [0, 1, 2, 4], "factor": [0.1, 0.5, 0.9], "cooldown": [0, 2]}, lrs=[1.0])
        fig = sw.plot(fixed={"cooldown": 2})
        (cells,) = fig.findobj(lambda a: a.get_gid() == "pf-sweep-cells")
        data = cells.get_array()
        for c, patience in enumerate([0, 1, 2, 4]):  # x: the first swept key, y: the second
            for r, factor in enumerate([0.1, 0.5, 0.9]):
                t = run(PlateauConfig(patience=patience, factor=factor, cooldown=2), metrics, [1.0])
                assert sum(1 for e in t._cols.events if EVENT_CODES[e] is Event.REDUCED) == data[r, c]
        (ax,) = [a for a in fig.axes if a.get_gid() == "pf-sweep-axes"]
        assert ["0", "1", "2", "4"] == [t.get_text() for t in ax.get_xticklabels()]
        assert ["0.1", "0.5", "0.9"] == [t.get_text() for t in ax.get_yticklabels()]
        assert ("patience", "factor") == (ax.get_xlabel(), ax.get_ylabel())
        assert "cooldown=2" in ax.get_title()
        labels = fig.findobj(lambda a: a.get_gid() == "pf-sweep-label")
        assert 12 == len(labels)
        assert [a for a in fig.axes if a.get_gid() == "pf-sweep-colorbar"]

    def test_needs_two_axes(self) -> None:
        """One swept key cannot make a heat map: a ConfigError says what to add."""
        with pytest.raises(ConfigError, match="two swept keys"):
            sweep([1.0, 2.0], {"patience": [1, 2]}).plot()


class TestCli:
    """``plateau-trace LOG --sweep ...`` end to end."""

    def test_sweep_csv_matches_torch(self, tmp_path) -> None:
        """Every row of ``--sweep ... --format csv`` has the reductions a real torch scheduler makes."""
        log = tmp_path / "log.csv"
        metrics = [1.0, 0.9, 0.95, 0.97, 0.9, 0.91, 0.92, 0.93, 0.85, 0.86, 0.87, 0.88, 0.89]
        log.write_text("epoch,val_loss\n" + "".join(f"{i + 1},{m!r}\n" for i, m in enumerate(metrics)))
        r = CliRunner().invoke(main, [str(log), "--lr", "0.1", "--sweep", "patience=0..2", "--sweep",
                                      "factor=0.5,0.1", "--format", "csv", "--cooldown", "1"])
        assert ExitStatus.OK == r.exit_code, r.output
        rows = list(csv.DictReader(io.StringIO(r.stdout)))
        assert 6 == len(rows)
        for row in rows:
            kwargs = {"patience": int(row["patience"]), "factor": float(row["factor"]), "cooldown": 1}
            opt, sched = make_scheduler([0.1], kwargs)
            reductions = []
            for epoch, m in enumerate(metrics, start=1):
                before = lrs_of(opt)
                sched.step(m)
                if lrs_of(opt) != before:
                    reductions.append(epoch)
            assert reductions == [int(e) for e in row["reduction_epochs"].split()]
            assert float(row["final_lr"]) == lrs_of(opt)[0]

    def test_sort_and_plot(self, tmp_path) -> None:
        """``--sort -reductions`` orders the table; ``--plot`` writes the heat map."""
        pytest.importorskip("matplotlib")
        log = tmp_path / "log.csv"
        log.write_text("epoch,val_loss\n" + "".join(f"{i},{1.0 + (i % 2) * 0.1}\n" for i in range(1, 15)))
        png = tmp_path / "heat.png"
        r = CliRunner().invoke(main, [str(log), "--sweep", "patience=0,4,1", "--sweep", "cooldown=0,1",
                                      "--sort", "-reductions", "--format", "json", "--plot", str(png)])
        assert ExitStatus.OK == r.exit_code, r.output
        counts = [c["reductions"] for c in json.loads(r.stdout)["configs"]]
        assert counts == sorted(counts, reverse=True)
        assert png.stat().st_size > 1000

    @pytest.mark.parametrize(("args", "message"), [
        (["--sweep", "gamma=1"], "use KEY=A..B"),
        (["--sweep", "patience=1", "--sort", "nope"], "cannot sort by 'nope'"),
        (["--sort", "reductions"], "--sort needs --sweep"),
        (["--sweep", "patience=1", "--what-if", "patience=2"], "either --sweep or --what-if"),
    ], ids=["bad-key", "bad-sort", "sort-alone", "with-what-if"])
    def test_usage_errors(self, tmp_path, args: list[str], message: str) -> None:
        """Bad ``--sweep`` / ``--sort`` options are usage errors (exit 2) naming the problem."""
        log = tmp_path / "log.csv"
        log.write_text("epoch,val_loss\n1,1.0\n2,1.1\n")
        r = CliRunner().invoke(main, [str(log), *args])
        assert ExitStatus.USAGE == r.exit_code, r.output
        assert message in r.stderr


def test_torch_is_the_oracle_here() -> None:
    """The torch these tests compare with is the one the engine reproduces (2.13)."""
    assert torch.__version__.startswith("2.13")
