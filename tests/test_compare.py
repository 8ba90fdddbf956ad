"""What-if: ``compare`` replays several settings over one log; ``expand_what_if`` builds them from the CLI."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

import plateau_forensics as pf
from plateau_forensics.errors import ConfigError
from plateau_forensics.whatif import (
    RULES,
    compare,
    expand_what_if,
    parse_what_if,
    register_rules,
    render_comparison,
)

SAMPLES = Path(__file__).resolve().parent.parent / "sample_checkpoints"
# torch's test style: patience=1 reduces on the 2nd bad step, patience=2 on the 3rd
RISING = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]


@pytest.fixture(scope="module")
def seed000() -> pf.Trace:
    """The seed-000 trace (patience=2, cooldown=3, factor=0.8, lr 1.5e-3 from epoch 11)."""
    return pf.trace(SAMPLES / "seed000.pt", SAMPLES / "seed000.csv")


class TestExpandWhatIf:
    """``--what-if KEY=V1,V2`` items become the cartesian product of configs."""

    def test_cartesian_product_first_key_outermost(self) -> None:
        """3 patiences x 2 factors = 6 configs, ordered like nested loops."""
        cfgs = expand_what_if(["patience=2,5,10", "factor=0.5,0.8"])
        assert [(2, 0.5), (2, 0.8), (5, 0.5), (5, 0.8), (10, 0.5), (10, 0.8)] == [
            (c.patience, c.factor) for c in cfgs]

    def test_overrides_apply_to_base(self) -> None:
        """Keys not named keep the base config's values."""
        base = pf.PlateauConfig(patience=2, cooldown=3, factor=0.8)
        (cfg,) = expand_what_if(["patience=5"], base)
        assert pf.PlateauConfig(patience=5, cooldown=3, factor=0.8) == cfg

    def test_include_base_first_without_duplicates(self) -> None:
        """With include_base the base comes first and a product config equal to it is not repeated."""
        base = pf.PlateauConfig(patience=10)
        cfgs = expand_what_if(["patience=2,5,10"], base, include_base=True)
        assert [10, 2, 5] == [c.patience for c in cfgs]

    def test_repeated_key_collects_values(self) -> None:
        """``--what-if patience=2 --what-if patience=5,2`` is patience 2 and 5."""
        assert {"patience": [2, 5]} == parse_what_if(["patience=2", "patience=5,2"])

    def test_value_types(self) -> None:
        """Integers for patience/cooldown, strings for modes, '/'-joined per-group min_lr."""
        got = parse_what_if(["cooldown=0,3", "mode=max", "threshold_mode=abs", "min_lr=1e-5/0.1", "eps=0"])
        assert {"cooldown": [0, 3], "mode": ["max"], "threshold_mode": ["abs"], "min_lr": [(1e-5, 0.1)],
                "eps": [0.0]} == got

    @pytest.mark.parametrize(
        ("items", "message"),
        [
            (["patience"], "use KEY=V1,V2,... with KEY one of"),
            (["lr=0.1"], "use KEY=V1,V2,... with KEY one of"),
            (["patience="], "no values after '='"),
            (["patience=two"], "'two' is not an integer"),
            (["factor=big"], "'big' is not a number"),
            (["factor=1.5"], "Factor should be < 1.0"),
            (["mode=sideways"], "mode sideways is unknown"),
        ],
        ids=["no-equals", "unknown-key", "empty", "not-int", "not-float", "torch-rejects", "bad-mode"],
    )
    def test_bad_items(self, items: list[str], message: str) -> None:
        """Each malformed item is a ConfigError that says what is wrong."""
        with pytest.raises(ConfigError, match=message):
            expand_what_if(items)


class TestCompare:
    """Replays, divergence, the table and the frame."""

    def test_each_replay_is_the_engines(self) -> None:
        """Every config's lr timeline is exactly what ``pf.replay`` gives for it."""
        cmp = compare(RISING, [{"patience": 1}, {"patience": 2}], lrs=[0.1])
        for k, patience in enumerate((1, 2)):
            ref = pf.replay(RISING, pf.PlateauConfig(patience=patience), lrs=[0.1])
            assert [s.lr for s in ref.steps] == cmp.lr_timeline(k)
        assert ["patience=1", "patience=2"] == cmp.labels

    def test_divergence_is_first_differing_epoch(self) -> None:
        """patience=1 reduces at epoch 3, patience=2 at epoch 4: they part at 3; an equal one never does."""
        cmp = compare(RISING, [{"patience": 1}, {"patience": 2}, {"patience": 1, "threshold": 1e-3}],
                      lrs=[0.1])
        assert {"patience=2 threshold=0.0001": 3, "patience=1 threshold=0.001": None} == cmp.divergence()

    def test_table_rows_where_an_lr_changes(self) -> None:
        """One row per epoch where any lr changes; ``changed`` names who reduced."""
        cmp = compare(RISING, [{"patience": 1}, {"patience": 2}], lrs=[1.0])
        rows = cmp.table()
        assert [3, 4, 5, 7] == [r["epoch"] for r in rows]
        assert [["patience=1"], ["patience=2"], ["patience=1"], ["patience=1", "patience=2"]] == [
            r["changed"] for r in rows]
        assert (0.1,) == rows[0]["patience=1"] and (1.0,) == rows[0]["patience=2"]

    def test_trace_input_reuses_config_and_lrs(self, seed000) -> None:
        """Given a Trace, the base is its config, the initial lr its first one; dicts override that base."""
        cmp = compare(seed000, [{}, {"patience": 5}])
        assert seed000.config == cmp.configs[0]
        assert (0.0015,) == cmp.initial_lrs
        assert [29, 35, 41, 47] == [e for e, _, _ in cmp.reductions(0)]
        assert {"patience=5": 29} == cmp.divergence()

    def test_losslog_and_path_input(self) -> None:
        """A CSV path is read with ``read_losses``; its first lr row gives the initial lrs."""
        cmp = compare(SAMPLES / "seed000.csv", [{"patience": 2, "cooldown": 3, "factor": 0.8}])
        assert (0.0015,) == cmp.initial_lrs
        assert 1 == cmp.epochs[0]

    def test_to_frame(self) -> None:
        """Every step, with epoch, metric and one lr column per config (and group)."""
        pytest.importorskip("pandas")
        cmp = compare(RISING, [{"patience": 1}, {"patience": 2}], lrs=[0.1, 1.0])
        df = cmp.to_frame()
        assert ["epoch", "metric", "patience=1[0]", "patience=1[1]", "patience=2[0]",
                "patience=2[1]"] == list(df)
        assert len(RISING) == len(df)

    def test_labels_given(self) -> None:
        """Explicit labels replace the generated ones; a wrong count is refused."""
        cmp = compare(RISING, [pf.PlateauConfig(patience=1)], labels=["mine"])
        assert ["mine"] == cmp.labels
        with pytest.raises(ConfigError, match="2 labels for 1 replays"):
            compare(RISING, [pf.PlateauConfig(patience=1)], labels=["a", "b"])


class TestRules:
    """Only torch's rules ship here; others plug in by name."""

    def test_unknown_rules_are_refused(self) -> None:
        """An unregistered rule set is a ConfigError listing what exists."""
        with pytest.raises(ConfigError, match="unknown rules 'lightning': available "):
            compare(RISING, [{}], rules="lightning")

    def test_keras_rules_plug_in(self) -> None:
        """``rules=["torch", "keras"]`` runs each config under both; Keras's float32 lr is no divergence."""
        from plateau_forensics.keras_rules import from_torch, run_keras

        base = pf.PlateauConfig(threshold_mode="abs")  # Keras has only an absolute min_delta
        cmp = compare(RISING, [{"patience": 2}], rules=["torch", "keras"], lrs=[0.1], base=base)
        assert ["rules=torch", "rules=keras"] == cmp.labels
        ref = run_keras(from_torch(replace(base, patience=2)), RISING, 0.1)
        assert [s.lr for s in ref.steps] == cmp.lr_timeline(1)
        # torch reduces on bad epoch patience + 1 (epoch 4), Keras on wait >= patience (epoch 3)
        assert {"rules=keras": 3} == cmp.divergence()
        assert [3, 5, 7] == [e for e, _, _ in cmp.reductions(1)]

    def test_registered_rules_run_for_every_config(self) -> None:
        """A runner returning any object with ``.steps`` (``.epoch``, ``.lr``) joins the comparison."""

        @dataclass
        class S:
            epoch: int
            lr: float

        @dataclass
        class Halving:
            steps: list[S]

        def halve_every_step(metrics, epochs, config, lrs):
            return Halving([S(e, lrs[0] * 0.5 ** (i + 1)) for i, e in enumerate(epochs)])

        register_rules("toy", halve_every_step)
        try:
            cmp = compare(RISING[:3], [{"patience": 1}], rules=["torch", "toy"], lrs=[1.0])
        finally:
            RULES.pop("toy")
        assert ["rules=torch", "rules=toy"] == cmp.labels
        assert [(0.5,), (0.25,), (0.125,)] == cmp.lr_timeline(1)
        assert {"rules=toy": 1} == cmp.divergence()


class TestRender:
    """``render_comparison`` in the four formats the CLI offers."""

    @pytest.fixture
    def cmp(self):
        """patience 1 vs 2 over a rising loss."""
        return compare(RISING, [{"patience": 1}, {"patience": 2}], lrs=[1.0])

    def test_table(self, cmp) -> None:
        """Change rows with ``*`` on who reduced, then one summary line per config."""
        out = render_comparison(cmp, "table")
        assert out.splitlines()[0].split() == ["epoch", "metric", "patience=1", "patience=2", "differ"]
        assert "3        1.2       0.1*          1             yes" in out
        assert "patience=1: 3 reductions at 3, 5, 7; final lr 0.001" in out
        assert "patience=2: 2 reductions at 4, 7; departs from patience=1 at epoch 3; final lr 0.01" in out

    def test_markdown(self, cmp) -> None:
        """A GitHub table and a bullet list."""
        out = render_comparison(cmp, "markdown")
        assert out.startswith("| epoch")
        assert "- patience=2: 2 reductions at 4, 7;" in out

    def test_csv_reads_back_exact(self, cmp) -> None:
        """Every step, floats bit-exact."""
        rows = list(csv.reader(io.StringIO(render_comparison(cmp, "csv"))))
        assert ["epoch", "metric", "patience=1", "patience=2"] == rows[0]
        assert len(RISING) + 1 == len(rows)
        assert [str(float(v)) for v in (0.1, 1.0)] == [repr(float(v)) for v in rows[3][2:]]

    def test_json(self, cmp) -> None:
        """Configs with reductions and divergence, the change rows, and the full timelines."""
        obj = json.loads(render_comparison(cmp, "json"))
        assert [None, 3] == [c["diverges_at"] for c in obj["configs"]]
        assert [3, 5, 7] == [r["epoch"] for r in obj["configs"][0]["reductions"]]
        assert [1.0] == obj["configs"][0]["reductions"][0]["lr_from"]
        assert len(RISING) == len(obj["lrs"]["patience=2"])

    def test_unknown_format(self, cmp) -> None:
        """An unknown format is a ConfigError."""
        with pytest.raises(ConfigError, match="unknown format 'yaml'"):
            render_comparison(cmp, "yaml")  # type: ignore[arg-type]


class TestPlot:
    """``Comparison.plot``: one overlaid lr panel, one style per config."""

    @pytest.fixture(autouse=True)
    def _agg(self):
        """Headless rendering; close pyplot figures afterwards."""
        mpl = pytest.importorskip("matplotlib")
        mpl.use("Agg")
        yield
        import matplotlib.pyplot as plt

        plt.close("all")

    def test_one_line_and_marker_set_per_config(self, seed000, tmp_path: Path) -> None:
        """Each config has its own line style and one marker per lr change; the lr axis is log."""
        import matplotlib.image as mpimg

        cmp = compare(seed000, [{}, {"patience": 5}, {"cooldown": 0}])
        fig = cmp.plot(tmp_path / "cmp.png")
        lines = [fig.findobj(lambda a, k=k: a.get_gid() == f"pf-compare-lr-{k}")[0] for k in range(3)]
        assert 3 == len({str(line.get_linestyle()) + str(line.get_linewidth()) for line in lines})
        for k in range(3):
            (mk,) = fig.findobj(lambda a, k=k: a.get_gid() == f"pf-compare-reductions-{k}")
            assert [e for e, _, _ in cmp.reductions(k)] == list(mk.get_xdata())
        (lr_ax,) = [a for a in fig.axes if a.get_gid() == "pf-lr-axes"]
        assert "log" == lr_ax.get_yscale()
        assert ["patience=2 cooldown=3", "patience=5 cooldown=3", "patience=2 cooldown=0"] == [
            t.get_text() for t in lr_ax.get_legend().get_texts()]
        divergences = fig.findobj(lambda a: a.get_gid() == "pf-divergence")
        assert sorted(v for v in cmp.divergence().values() if v is not None) == sorted(
            d.get_xdata()[0] for d in divergences)
        assert mpimg.imread(tmp_path / "cmp.png")[..., :3].std() > 0.05


def test_docstring_examples() -> None:
    """The examples in the module's docstrings run as written."""
    import doctest

    import plateau_forensics.whatif

    assert 0 == doctest.testmod(plateau_forensics.whatif).failed
