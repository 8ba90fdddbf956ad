"""Resume forensics on real resumed runs (sample_checkpoints/resumes): each cause named, with its evidence.

The ground truth comes from each scenario's scenario.json, written by the generator that ran the
training (make_resumes.py), not from this package.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import SAMPLES

import plateau_forensics as pf
from plateau_forensics.cli import ExitStatus, main

RESUMES = SAMPLES / "resumes"
SCENARIOS = sorted(p.name for p in RESUMES.iterdir() if (p / "scenario.json").is_file())

# What the user would tell the tool: the monitored column when it is not the val loss, and for a partial
# state (timm keeps no hyperparameters) the hyperparameters the run used (make_resumes.py's defaults).
OPTIONS: dict[str, dict] = {
    "mode-mismatch": {"metric": "val_acc"},
    "rel-threshold-nonpositive": {"metric": "val_log_loss"},
}
FILL = {"partial-state": pf.PlateauConfig(patience=2, factor=0.5, cooldown=1)}
INFO_LEVEL = {"duplicate-epochs", "lr-at-floor", "saved-before-step", "torch-version", "epoch-offset",
              "defaults-in-effect"}


def truth(name: str) -> dict:
    """The scenario's ground truth as its generator recorded it."""
    return json.loads((RESUMES / name / "scenario.json").read_text())


def traced(name: str) -> pf.Trace:
    """Run the tool on a scenario as a user would (with the options the scenario calls for)."""
    ck = pf.load_checkpoint(RESUMES / name / "ckpt.pt")
    if name in FILL:
        fill = FILL[name]
        ck = ck.with_hyperparameters(fill, ("patience", "factor", "cooldown"))
    return pf.trace(ck, RESUMES / name / "log.csv", expect=truth(name).get("expected"), **OPTIONS.get(name, {}))


def codes(t: pf.Trace, severity: str | None = None) -> set[str]:
    """The finding codes of a trace (of one severity)."""
    return {f.code for f in t.findings if severity is None or f.severity == severity}


def finding(t: pf.Trace, code: str) -> pf.Finding:
    """The first finding with ``code``."""
    return next(f for f in t.findings if f.code == code)


def named(t: pf.Trace, code: str) -> pf.Finding:
    """The finding that names ``code``: its own, or an ``ambiguous`` one that lists it among the stories."""
    own = [f for f in t.findings if f.code == code]
    if own:
        return own[0]
    return next(f for f in t.findings if f.code == "ambiguous" and any(code in s for s in f.evidence["stories"]))


# The lr evidence of a fresh optimizer and of code that sets the initial lr by hand after loading is the same.
AMBIGUOUS = {"optimizer-not-restored": {("optimizer-not-restored",), ("lr-overwritten",)}}


@pytest.mark.parametrize("name", [s for s in SCENARIOS if s != "clean-resume"])
def test_each_scenario_names_its_cause(name: str) -> None:
    """Every scenario's own cause is named (alone, or with the stories the inputs cannot tell it from), at
    the expected severity."""
    code = truth(name)["finding"]
    t = traced(name)
    f = named(t, code)
    assert f.severity == ("info" if code in INFO_LEVEL else "warning"), [x.as_dict() for x in t.findings]
    if name in AMBIGUOUS:
        assert {tuple(s) for s in f.evidence["stories"]} == AMBIGUOUS[name]
    else:
        assert f.code == code, [x.as_dict() for x in t.findings]


def test_clean_resume_has_no_warning() -> None:
    """A correctly resumed run produces no warning-level finding, and --check exits 0."""
    t = traced("clean-resume")
    assert codes(t, "warning") == set()
    r = CliRunner().invoke(main, [str(RESUMES / "clean-resume" / "ckpt.pt"), str(RESUMES / "clean-resume" / "log.csv"),
                                  "--check"])
    assert ExitStatus.OK == r.exit_code


class TestEvidence:
    """The findings point at the right epochs and numbers."""

    def test_scheduler_not_restored_at_first_divergence(self) -> None:
        """The fresh scheduler starts at the resume, and the lr first departs from a restored scheduler's where
        the correct run would have dropped it."""
        g = truth("scheduler-not-restored")
        f = finding(traced("scheduler-not-restored"), "scheduler-not-restored")
        assert f.epoch == g["resume_epoch"]
        assert f.evidence["first_divergence_epoch"] == g["first_lr_drop_correct"]

    def test_optimizer_not_restored_numbers(self) -> None:
        """The first resumed epoch trained with the initial lr instead of the checkpoint's."""
        g = truth("optimizer-not-restored")
        f = named(traced("optimizer-not-restored"), "optimizer-not-restored")
        ev = f.evidence["components"]["optimizer-not-restored"]
        assert ev["resume_epoch"] == g["resume_epoch"]
        assert ev["logged_lr"] == [g["first_resumed_lr"]] and ev["checkpoint_lr"] == [g["checkpoint_lr"]]

    def test_lr_overwritten_value(self) -> None:
        """The hand-set lr is reported with the checkpoint's and the initial lr."""
        g = truth("lr-overwritten")
        f = finding(traced("lr-overwritten"), "lr-overwritten")
        assert (f.epoch, f.evidence["logged_lr"], f.evidence["checkpoint_lr"]) == (
            g["resume_epoch"], [g["lr_set_to"]], [g["checkpoint_lr"]])

    def test_partial_state_rebuilds_lost_counters(self, tmp_path: Path) -> None:
        """The counters a partial state lost are rebuilt from the log, and --write-state writes a loadable state."""
        g = truth("partial-state")
        t = traced("partial-state")
        f = finding(t, "partial-state")
        assert f.evidence["rebuilt"] == {"num_bad_epochs": g["lost"]["num_bad_epochs"],
                                         "cooldown_counter": g["lost"]["cooldown_counter"]}
        from plateau_forensics.repair import repaired_state, write_state

        state, changes, _why = repaired_state(t)
        write_state(state, tmp_path / "s.pt")
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
        sched.load_state_dict(torch.load(tmp_path / "s.pt"))
        assert (sched.num_bad_epochs, sched.patience, sched.factor) == (g["lost"]["num_bad_epochs"], 2, 0.5)
        assert any(c.startswith("num_bad_epochs:") for c in changes)

    def test_hyperparameters_overridden_lists_each(self) -> None:
        """Every expected value the checkpoint overrides is listed with both values."""
        g = truth("hyperparameters-overridden")
        diffs = finding(traced("hyperparameters-overridden"), "hyperparameters-overridden").evidence["differences"]
        assert set(diffs) == set(g["expected"])
        assert all(diffs[k]["expected"] == v for k, v in g["expected"].items())

    def test_epoch_offset_value(self) -> None:
        """Warm-up epochs without a step give the recorded offset, and no restart warning."""
        g = truth("epoch-offset")
        t = traced("epoch-offset")
        assert finding(t, "epoch-offset").evidence["offset"] == g["offset"]
        assert "scheduler-not-restored" not in codes(t)

    def test_steps_per_row_k(self) -> None:
        """Two steps per logged row are recognised as k=2 and reproduce the saved last_epoch."""
        g = truth("steps-per-row")
        t = traced("steps-per-row")
        assert finding(t, "steps-per-row").evidence["k"] == g["k"]
        assert t.alignment.epoch == g["checkpoint_epoch"] and t.alignment.scheduler_step == g["saved_last_epoch"]

    def test_wrong_metric_column(self) -> None:
        """The saved best is traced to the column the scheduler was really stepped with."""
        g = truth("wrong-metric")
        f = finding(traced("wrong-metric"), "wrong-metric")
        assert f.evidence["matches"][0]["column"] == g["stepped_with"]
        assert "reproduces the saved state" in f.message

    def test_external_lr_change_epochs(self) -> None:
        """Warm-up epochs and the hand-made cut are the external changes, and nothing else."""
        g = truth("external-lr-change")
        f = finding(traced("external-lr-change"), "external-lr-change")
        assert [r["epoch"] for r in f.evidence["rows"]] == [e for e in g["warmup_epochs"] if e > 1] + [
            g["external_change_epoch"]]

    def test_nan_epochs(self) -> None:
        """The NaN epochs are named, and the replay counts them as bad epochs as torch did."""
        g = truth("nan-metric")
        t = traced("nan-metric")
        assert finding(t, "nan-metric").evidence["epochs"] == g["nan_epochs"]
        after = {str(s.epoch): s.num_bad_epochs for s in t.steps if str(s.epoch) in g["num_bad_epochs_after"]}
        assert after == g["num_bad_epochs_after"]

    def test_min_lrs_mismatch_raise_epoch(self) -> None:
        """A per-group min_lr list with an added group stops the replay where torch raised."""
        g = truth("min-lrs-mismatch")
        f = finding(traced("min-lrs-mismatch"), "min-lrs-mismatch")
        assert f"epoch {g['raises_at_epoch']}: torch raises RuntimeError" in f.message

    def test_duplicates_replay_surviving_rows(self) -> None:
        """The earlier run's duplicated rows are reported once and the resumed run's rows are replayed."""
        g = truth("duplicate-epochs")
        t = traced("duplicate-epochs")
        assert finding(t, "duplicate-epochs").evidence["epochs"] == g["duplicated"]
        assert list(t.epochs) == sorted(set(t.epochs))
        assert "unsorted-epochs" not in codes(t)

    def test_saved_before_step(self) -> None:
        """A checkpoint saved before its epoch's step is placed one row earlier, not called a mismatch."""
        g = truth("saved-before-step")
        t = traced("saved-before-step")
        assert t.alignment.epoch == g["checkpoint_epoch"] - g["steps_behind"]

    def test_torch_1_3_offset_is_zero(self) -> None:
        """A torch <= 1.3 state (last_epoch from -1) has no epoch offset once counted in steps."""
        t = traced("torch-version")
        assert t.alignment.epoch_offset == 0 and "epoch-offset" not in codes(t)

    def test_rel_threshold_rows(self) -> None:
        """The epochs where a worse negative metric counted as an improvement are listed."""
        f = finding(traced("rel-threshold-nonpositive"), "rel-threshold-nonpositive")
        assert len(f.evidence["epochs"]) >= 5

    def test_mode_mismatch_reductions(self) -> None:
        """Reductions taken while accuracy was at its best are the evidence."""
        f = finding(traced("mode-mismatch"), "mode-mismatch")
        assert f.evidence["reductions_at_other_best"]


def test_check_exits_3_on_warning() -> None:
    """--check turns a warning-level finding into exit code 3."""
    d = RESUMES / "optimizer-not-restored"
    r = CliRunner().invoke(main, [str(d / "ckpt.pt"), str(d / "log.csv"), "--check"])
    assert ExitStatus.FINDINGS == r.exit_code
    r = CliRunner().invoke(main, [str(d / "ckpt.pt"), str(d / "log.csv"), "--format", "json"])
    f = json.loads(r.stdout)["findings"][0]
    assert set(f) == {"code", "severity", "epoch", "message", "evidence", "fix"}


def test_expect_parses_and_rejects() -> None:
    """--expect KEY=VALUE compares; an unknown key is a usage error."""
    d = RESUMES / "hyperparameters-overridden"
    r = CliRunner().invoke(main, [str(d / "ckpt.pt"), "--expect", "patience=5", "--check"])
    assert ExitStatus.FINDINGS == r.exit_code and "patience=2 (you expect 5)" in r.stdout
    r = CliRunner().invoke(main, [str(d / "ckpt.pt"), "--expect", "bogus=1"])
    assert ExitStatus.USAGE == r.exit_code


def test_write_state_json_roundtrip(tmp_path: Path) -> None:
    """--write-state FILE.json writes a state torch loads, with inf kept as inf."""
    d = RESUMES / "partial-state"
    out = tmp_path / "s.json"
    r = CliRunner().invoke(main, [str(d / "ckpt.pt"), str(d / "log.csv"), "--patience", "2", "--factor", "0.5",
                                  "--cooldown", "1", "--write-state", str(out)])
    assert ExitStatus.OK == r.exit_code, r.output
    state = json.loads(out.read_text())
    assert math.isinf(state["mode_worse"]) and state["patience"] == 2
    assert f"wrote {out}: " in r.stdout
