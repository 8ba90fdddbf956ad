"""plateau-trace end to end: reviewed golden outputs, every error's message and exit code, teaching mode."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import GOLDEN
from torch_oracle import make_scheduler, same

from plateau_forensics.cli import ExitStatus, main

SAMPLES = ["seed000", "clean", "forgot_scheduler", "two_groups"]


@pytest.fixture(name="runner")
def _runner() -> CliRunner:
    return CliRunner()


def check_golden(name: str, text: str, update: bool) -> None:
    """Compare ``text`` with tests/golden/``name`` (or rewrite it under --update-goldens)."""
    path = GOLDEN / name
    if update:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.read_text() == text


class TestGoldens:
    """The outputs a person reads, compared with reviewed files (fixed width, no colour)."""

    @pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLES)
    def test_grid(self, runner: CliRunner, in_root: Path, update_goldens: bool, sample: str) -> None:
        """The default grid for each shipped sample equals its golden file."""
        r = runner.invoke(main, [f"sample_checkpoints/{sample}.pt", f"sample_checkpoints/{sample}.csv", "--width", "100"])
        assert ExitStatus.OK == r.exit_code, r.output
        check_golden(f"{sample}.grid.txt", r.stdout, update_goldens)

    def test_explain(self, runner: CliRunner, in_root: Path, update_goldens: bool) -> None:
        """--explain prints one transition line per epoch for the seed story."""
        r = runner.invoke(main, ["sample_checkpoints/seed000.pt", "sample_checkpoints/seed000.csv", "--explain"])
        assert ExitStatus.OK == r.exit_code
        check_golden("seed000.explain.txt", r.stdout, update_goldens)

    def test_json(self, runner: CliRunner, in_root: Path, update_goldens: bool) -> None:
        """--format json for the seed story equals its golden file."""
        r = runner.invoke(main, ["sample_checkpoints/seed000.pt", "sample_checkpoints/seed000.csv", "--format", "json"])
        assert ExitStatus.OK == r.exit_code
        check_golden("seed000.json", r.stdout, update_goldens)

    def test_checkpoint_only(self, runner: CliRunner, in_root: Path, update_goldens: bool) -> None:
        """A checkpoint alone shows the saved state, the hyperparameters and the forecast."""
        r = runner.invoke(main, ["sample_checkpoints/seed000.pt"])
        assert ExitStatus.OK == r.exit_code
        check_golden("seed000.checkpoint-only.txt", r.stdout, update_goldens)


class TestJsonContract:
    """The JSON object other tools read."""

    def test_fields_and_alignment(self, runner: CliRunner, in_root: Path) -> None:
        """The seed story's JSON places the checkpoint after epoch 33 with offset 10 and has every step field."""
        r = runner.invoke(main, ["sample_checkpoints/seed000.pt", "sample_checkpoints/seed000.csv", "--format", "json"])
        obj = json.loads(r.stdout)
        assert {"config", "checkpoint", "alignment", "forecast", "findings", "steps"} <= obj.keys()
        assert obj["alignment"]["epoch"] == 33 and obj["alignment"]["epoch_offset"] == 10
        assert obj["alignment"]["scheduler_step"] == 23
        step = obj["steps"][0]
        assert set(step) == {"epoch", "last_epoch", "metric", "best", "num_bad_epochs", "cooldown_counter", "lr",
                             "event", "reason"}
        assert {"earliest_reduction_epoch", "improvement_threshold"} <= obj["forecast"].keys()

    def test_floats_bit_exact_and_non_finite(self, runner: CliRunner, tmp_path: Path) -> None:
        """Metrics read back bit-identical; inf and nan are the strings "inf" and "nan"."""
        values = [0.1 + 0.2, math.nan, 1 / 3, math.inf]
        log = tmp_path / "l.csv"
        log.write_text("epoch,val_loss\n" + "".join(f"{i + 1},{v!r}\n" for i, v in enumerate(values)))
        r = runner.invoke(main, [str(log), "--lr", "0.1", "--format", "json"])
        steps = json.loads(r.stdout)["steps"]
        assert [s["metric"] for s in steps] == [0.1 + 0.2, "nan", 1 / 3, "inf"]
        assert steps[0]["best"] == 0.1 + 0.2


class TestTeachingMode:
    """LOSSES plus hyperparameters replays a fresh scheduler, checked against real torch."""

    def test_matches_torch(self, runner: CliRunner, tmp_path: Path) -> None:
        """--lr/--patience/--cooldown/--factor replay equals torch's scheduler on every step."""
        metrics = [1.0, 0.9, 0.95, 0.95, 0.96, 0.97, 0.98, 0.99, 0.7, 0.8, 0.8, 0.8, 0.8]
        log = tmp_path / "l.csv"
        log.write_text("val_loss\n" + "".join(f"{m!r}\n" for m in metrics))
        r = runner.invoke(main, [str(log), "--lr", "0.1", "--patience", "2", "--cooldown", "3", "--factor", "0.8",
                                 "--format", "json"])
        assert ExitStatus.OK == r.exit_code, r.output
        steps = json.loads(r.stdout)["steps"]
        opt, sched = make_scheduler([0.1], {"patience": 2, "cooldown": 3, "factor": 0.8})
        for s, m in zip(steps, metrics):
            sched.step(m)
            assert same(s["lr"][0], opt.param_groups[0]["lr"])
            assert (s["num_bad_epochs"], s["cooldown_counter"]) == (sched.num_bad_epochs, sched.cooldown_counter)

    def test_per_group_lr_and_min_lr(self, runner: CliRunner, tmp_path: Path) -> None:
        """--lr and --min-lr repeat per param group."""
        log = tmp_path / "l.csv"
        log.write_text("val_loss\n1\n2\n2\n")
        r = runner.invoke(main, [str(log), "--lr", "0.1", "--lr", "0.01", "--min-lr", "0.05", "--min-lr", "0",
                                 "--patience", "0", "--format", "json"])
        assert [s["lr"] for s in json.loads(r.stdout)["steps"]] == [[0.1, 0.01], [0.05, 0.001], [0.05, 0.0001]]


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


class TestErrors:
    """Bad input: one line on stderr, no traceback, exit 1; misuse: exit 2."""

    def test_missing_file(self, runner: CliRunner, tmp_path: Path) -> None:
        """A missing checkpoint is an input error naming the path."""
        log = tmp_path / "l.csv"
        log.write_text("val_loss\n1\n")
        r = runner.invoke(main, [str(tmp_path / "nope.pt"), str(log)])
        assert ExitStatus.ERROR == r.exit_code
        assert f"Error: {tmp_path / 'nope.pt'}: no such file\n" == r.stderr

    def test_not_a_checkpoint(self, runner: CliRunner, tmp_path: Path) -> None:
        """A text file given as the checkpoint is refused in one line."""
        bad = tmp_path / "x.pt"
        bad.write_text("hello\n")
        r = runner.invoke(main, [str(bad), str(bad)])
        assert ExitStatus.ERROR == r.exit_code
        assert r.stderr.startswith(f"Error: {bad}: not a torch.save file")
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.output

    def test_no_plateau_state(self, runner: CliRunner, tmp_path: Path) -> None:
        """A checkpoint without scheduler state lists what its top level holds."""
        ck = _save({"epoch": 3, "model": torch.nn.Linear(2, 1).state_dict()}, tmp_path / "m.pt")
        r = runner.invoke(main, [str(ck)])
        assert ExitStatus.ERROR == r.exit_code
        assert f"Error: {ck}: no ReduceLROnPlateau state found; top level holds: epoch, model\n" == r.stderr

    def test_several_states_and_choice(self, runner: CliRunner, tmp_path: Path) -> None:
        """Two plateau states are listed; --scheduler picks one."""
        _, s1 = make_scheduler([0.1], {"patience": 1})
        _, s2 = make_scheduler([0.1], {"patience": 2})
        ck = _save({"a": s1.state_dict(), "b": [s2.state_dict()]}, tmp_path / "two.pt")
        r = runner.invoke(main, [str(ck)])
        assert ExitStatus.ERROR == r.exit_code
        assert f"Error: {ck}: 2 plateau states found: 'a', 'b[0]' (choose one with --scheduler KEYPATH)\n" == r.stderr
        r = runner.invoke(main, [str(ck), "--scheduler", "b[0]", "--format", "json"])
        assert ExitStatus.OK == r.exit_code
        assert json.loads(r.stdout)["config"]["patience"] == 2

    def test_no_metric_column(self, runner: CliRunner, tmp_path: Path) -> None:
        """A log without a validation-loss column lists its columns."""
        log = tmp_path / "l.csv"
        log.write_text("epoch,acc\n1,0.5\n")
        r = runner.invoke(main, [str(log), "--lr", "0.1"])
        assert ExitStatus.ERROR == r.exit_code
        assert "epoch, acc" in r.stderr and "--metric" in r.stderr and r.stderr.count("\n") == 1

    def test_non_numeric_value(self, runner: CliRunner, tmp_path: Path) -> None:
        """A non-numeric metric names its line and column."""
        log = tmp_path / "l.csv"
        log.write_text("epoch,val_loss\n1,0.5\n2,oops\n")
        r = runner.invoke(main, [str(log), "--lr", "0.1"])
        assert ExitStatus.ERROR == r.exit_code
        assert "line 3" in r.stderr and "'val_loss'" in r.stderr and "'oops'" in r.stderr

    def test_usage_errors(self, runner: CliRunner, in_root: Path) -> None:
        """Unknown options, no arguments and hyperparameters next to a checkpoint are usage errors (exit 2)."""
        assert ExitStatus.USAGE == runner.invoke(main, ["--bogus"]).exit_code
        assert ExitStatus.USAGE == runner.invoke(main, []).exit_code
        r = runner.invoke(main, ["sample_checkpoints/seed000.pt", "--patience", "3"])
        assert ExitStatus.USAGE == r.exit_code
        assert "patience is saved in the checkpoint and wins on load_state_dict" in r.stderr

    @pytest.mark.parametrize("flag", ["-h", "--help"], ids=["short", "long"])
    def test_help(self, runner: CliRunner, flag: str) -> None:
        """Both help flags exit 0 and show the example."""
        r = runner.invoke(main, [flag])
        assert ExitStatus.OK == r.exit_code
        assert "plateau-trace sample_checkpoints/seed000.pt" in r.stdout

    def test_every_option_has_help(self) -> None:
        """Every option of the command documents itself."""
        assert all(p.help for p in main.params if p.param_type_name == "option")


class TestRules:
    """--rules keras and --compare torch,keras on a plateau, checked against real torch and real Keras."""

    METRICS = [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]

    def _log(self, tmp_path: Path) -> Path:
        log = tmp_path / "plateau.csv"
        log.write_text("epoch,val_loss\n" + "".join(f"{i + 1},{m!r}\n" for i, m in enumerate(self.METRICS)))
        return log

    @pytest.mark.filterwarnings("ignore::DeprecationWarning")  # keras' numpy-2 __array__ copy warning
    def test_compare_marks_first_divergence(self, runner: CliRunner, tmp_path: Path) -> None:
        """The side-by-side table diverges where real torch and the real Keras callback first disagree."""
        import os

        os.environ.setdefault("KERAS_BACKEND", "torch")
        import keras

        r = runner.invoke(main, [str(self._log(tmp_path)), "--lr", "0.1", "--patience", "2", "--compare", "torch,keras"])
        assert ExitStatus.OK == r.exit_code, r.output
        opt, sched = make_scheduler([0.1], {"patience": 2, "threshold": 1e-4, "threshold_mode": "abs"})
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
        cb = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", patience=2, min_delta=1e-4, mode="min")
        cb.set_model(model)
        cb.on_train_begin()
        first = None
        for i, m in enumerate(self.METRICS):
            sched.step(m)
            cb.on_epoch_end(i, {"val_loss": m})
            t_lr, k_lr = opt.param_groups[0]["lr"], float(model.optimizer.learning_rate)
            if first is None and not math.isclose(t_lr, k_lr, rel_tol=1e-5):
                first = i + 1
        assert f"first divergence: epoch {first} " in r.stdout

    def test_keras_needs_no_checkpoint(self, runner: CliRunner, in_root: Path) -> None:
        """--rules keras with a checkpoint is a usage error: Keras saves no scheduler state."""
        r = runner.invoke(main, ["sample_checkpoints/seed000.pt", "sample_checkpoints/seed000.csv", "--rules", "keras"])
        assert ExitStatus.USAGE == r.exit_code

    def test_keras_json_steps(self, runner: CliRunner, tmp_path: Path) -> None:
        """--rules keras --format json lists the Keras replay's steps under the keras rule set."""
        r = runner.invoke(main, [str(self._log(tmp_path)), "--lr", "0.1", "--patience", "2", "--rules", "keras",
                                 "--format", "json"])
        obj = json.loads(r.stdout)
        assert obj["rules"] == "keras" and len(obj["steps"]) == len(self.METRICS)


class TestPicturesAndWhatIf:
    """--plot and --what-if from the command line."""

    @pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
    def test_plot_file(self, runner: CliRunner, in_root: Path, tmp_path: Path, suffix: str) -> None:
        """--plot writes a non-empty picture in the suffix's format next to the normal report."""
        out = tmp_path / f"t{suffix}"
        r = runner.invoke(main, ["sample_checkpoints/seed000.pt", "sample_checkpoints/seed000.csv", "--plot", str(out)])
        assert ExitStatus.OK == r.exit_code, r.output
        head = out.read_bytes()[:8]
        assert {".png": b"\x89PNG", ".svg": b"<?xml", ".pdf": b"%PDF"}[suffix] == head[: len(
            {".png": b"\x89PNG", ".svg": b"<?xml", ".pdf": b"%PDF"}[suffix])]

    def test_plot_bad_suffix_is_usage(self, runner: CliRunner, in_root: Path, tmp_path: Path) -> None:
        """An unsupported picture format is refused before any work, as a usage error."""
        r = runner.invoke(main, ["sample_checkpoints/seed000.pt", "--plot", str(tmp_path / "t.gif")])
        assert ExitStatus.USAGE == r.exit_code

    def test_what_if_matches_torch(self, runner: CliRunner, in_root: Path) -> None:
        """Each --what-if setting's reductions equal a real torch scheduler's over the same log."""
        import csv as _csv

        r = runner.invoke(main, ["sample_checkpoints/seed000.csv", "--lr", "0.0015", "--factor", "0.8",
                                 "--what-if", "patience=2,5", "--format", "json"])
        assert ExitStatus.OK == r.exit_code, r.output
        with open("sample_checkpoints/seed000.csv") as f:
            rows = list(_csv.DictReader(f))
        obj = json.loads(r.stdout)
        for patience in (2, 5):
            opt, sched = make_scheduler([0.0015], {"patience": patience, "factor": 0.8})
            cuts = []
            for row in rows:
                before = opt.param_groups[0]["lr"]
                sched.step(float(row["val_loss"]))
                if opt.param_groups[0]["lr"] != before:
                    cuts.append(int(row["epoch"]))
            entry = next(c for c in obj["configs"] if c["config"]["patience"] == patience)
            assert [x["epoch"] for x in entry["reductions"]] == cuts and cuts
