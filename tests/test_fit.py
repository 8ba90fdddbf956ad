"""Inverse fit: the settings that reproduce a logged lr, judged on real torch runs with known settings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import SAMPLES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch_oracle import make_scheduler

import plateau_forensics as pf
from plateau_forensics.cli import ExitStatus, main
from plateau_forensics.errors import LossLogError
from plateau_forensics.fit import check, fit


def train(epochs: int = 60, seed: int = 0, lr: float = 0.05, warmup: int = 0, after_step: bool = False,
          **kwargs: object) -> list[tuple[int, float, float]]:
    """A real run: a linear model trained with SGD and a real ReduceLROnPlateau stepped on the validation loss.

    Returns ``(epoch, val_loss, lr)`` rows; the lr is the one the epoch trained with (or the lr after the step
    with ``after_step``). ``warmup`` epochs raise the lr by hand first (a writer outside the plateau scheduler).
    """
    torch.manual_seed(seed)
    x = torch.randn(64, 4)
    y = x @ torch.randn(4, 1) + 0.3 * torch.randn(64, 1)
    xv = torch.randn(32, 4)
    yv = 0.3 * torch.randn(32, 1)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kwargs)  # type: ignore[arg-type]
    rows = []
    for epoch in range(1, epochs + 1):
        if epoch <= warmup:
            for g in opt.param_groups:
                g["lr"] = lr * epoch / warmup
        used = opt.param_groups[0]["lr"]
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        with torch.no_grad():
            val = torch.nn.functional.mse_loss(model(xv), yv).item()
        if epoch > warmup:
            sched.step(val)
        rows.append((epoch, val, opt.param_groups[0]["lr"] if after_step else used))
    return rows


def write(path: Path, rows: list[tuple[int, float, float]], fmt: str = "repr") -> Path:
    """The rows as a CSV log: ``repr`` (exact) or a format spec such as ``.4f`` for both columns."""
    cell = repr if fmt == "repr" else (lambda v: format(v, fmt))
    path.write_text("epoch,val_loss,lr\n" + "".join(f"{e},{cell(v)},{cell(lr)}\n" for e, v, lr in rows))
    return path


def family(f: pf.Fit, mode: str, tmode: str, patience: int, cooldown: int):
    """The fitted family with these settings, or None."""
    return next((x for x in f.families if (x.mode, x.threshold_mode, x.patience, x.cooldown)
                 == (mode, tmode, patience, cooldown)), None)


def inside(value: float, intervals) -> bool:
    """``value`` lies in one of the ``(lo, hi)`` intervals."""
    return any(lo <= value <= hi for lo, hi in intervals)


# Real settings whose threshold is one of the values the fit tests, so its interval must contain it.
RUNS = {
    "rel-cooldown": {"patience": 2, "factor": 0.5, "cooldown": 1, "threshold": 0.01},
    "abs": {"patience": 3, "factor": 0.8, "threshold": 1e-3, "threshold_mode": "abs"},
    "floor": {"patience": 1, "factor": 0.3, "cooldown": 2, "min_lr": 0.004},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    """Each run of RUNS trained once, logged exactly (repr) and printed with 4 decimals."""
    out = {}
    for name, kwargs in RUNS.items():
        rows = train(**kwargs)
        d = tmp_path_factory.mktemp(name)
        out[name] = {"kwargs": kwargs, "rows": rows, "repr": write(d / "log.csv", rows),
                     "4f": write(d / "log4.csv", rows, ".4f")}
    return out


class TestRealRuns:
    """Logs of real torch runs: the true settings are among those the fit reports."""

    @pytest.mark.parametrize("name", list(RUNS), ids=list(RUNS))
    def test_exact_log_finds_the_truth(self, runs: dict, name: str) -> None:
        """An exact log: the fit reproduces the lr, and the true mode/patience/cooldown/threshold and factor fit."""
        run = runs[name]
        kw = run["kwargs"]
        changes = [e for (e, _, a), (_, _, b) in zip(run["rows"], run["rows"][1:], strict=False) if b != a]
        assert changes, "the run must reduce its lr for the fit to have evidence"
        f = fit(run["repr"])
        assert f.exact
        assert changes == f.changes[0]  # the lr changes after the step of these epochs
        fam = family(f, "min", kw.get("threshold_mode", "rel"), kw["patience"], kw.get("cooldown", 0))
        assert fam is not None, f.render()
        assert inside(kw.get("threshold", 1e-4), fam.thresholds)
        assert f.factor.lo <= kw["factor"] <= f.factor.hi
        assert kw["factor"] == f.factor.value  # the simplest decimal in the range is what was typed

    @pytest.mark.parametrize("name", list(RUNS), ids=list(RUNS))
    def test_rounded_log_keeps_the_truth(self, runs: dict, name: str) -> None:
        """The same run printed with 4 decimals: the truth is never excluded, and the fit still excludes."""
        run = runs[name]
        kw = run["kwargs"]
        f = fit(run["4f"])
        assert f.rounded
        fam = family(f, "min", kw.get("threshold_mode", "rel"), kw["patience"], kw.get("cooldown", 0))
        assert fam is not None, f.render()
        assert inside(kw.get("threshold", 1e-4), fam.thresholds)
        assert f.factor.lo <= kw["factor"] <= f.factor.hi
        assert len(f.values("patience")) < 5

    def test_floor_is_reported(self, runs: dict) -> None:
        """A run that reaches min_lr: the last change is a drop to the floor and the words say so."""
        f = fit(runs["floor"]["repr"])
        assert f.factor.floor_hit == (0,)
        assert f.min_lr[0].startswith("= the last level") and "0.004" in f.min_lr[0]

    def test_committed_two_group_sample(self) -> None:
        """sample_checkpoints/two_groups.csv (patience 1, factor 0.5, min_lr [1e-5, 0.1]): truth recovered."""
        truth = json.loads((SAMPLES / "two_groups.truth.json").read_text())["setup"]["scheduler"]
        f = fit(SAMPLES / "two_groups.csv")
        assert f.exact
        assert family(f, truth["mode"], "rel", truth["patience"], 0) is not None
        assert f.factor.lo <= truth["factor"] <= f.factor.hi
        assert f.factor.floor_hit == (1,)  # the head group drops to its 0.1 floor and stays
        assert "0.1" in f.min_lr[1]


CONFIGS = st.fixed_dictionaries({
    "mode": st.sampled_from(["min", "max"]),
    "patience": st.integers(0, 4),
    "cooldown": st.integers(0, 3),
    "threshold": st.sampled_from([0.0, 1e-4, 1e-2, 0.1]),
    "threshold_mode": st.sampled_from(["rel", "abs"]),
    "factor": st.sampled_from([0.5, 0.1, 0.8]),
})
# near-ties (0.5 against 0.5004 and 0.49996) make 3-4 decimal prints undecidable; NaN is a real value
METRICS = st.lists(st.one_of(st.sampled_from([0.5, 0.5004, 0.49996, 0.6, math.nan]), st.floats(0.1, 1.0)),
                   min_size=2, max_size=40)


def torch_lrs(kwargs: dict, metrics: list[float]) -> list[float]:
    """The lr each epoch trained with under a real torch scheduler (initial lr 1.0)."""
    opt, sched = make_scheduler([1.0], kwargs)
    lrs = []
    for m in metrics:
        lrs.append(opt.param_groups[0]["lr"])
        sched.step(m)
    return lrs


class TestConservative:
    """A rounded log never excludes the setting that wrote it; an exact log excludes exactly the misfits."""

    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(kwargs=CONFIGS, metrics=METRICS, decimals=st.sampled_from([None, 2, 3, 4]))
    def test_truth_is_never_excluded(self, kwargs: dict, metrics: list[float], decimals: int | None) -> None:
        """Logs written by a real scheduler, exact or rounded to 2-4 decimals: ``check`` keeps the true config."""
        lrs = torch_lrs(kwargs, metrics)
        cell = repr if decimals is None else (lambda v: f"{v:.{decimals}f}")
        log = pf.read_losses({"epoch": [str(i + 1) for i in range(len(metrics))],
                              "val_loss": [cell(m) for m in metrics], "lr": [cell(v) for v in lrs]})
        assert check(log, [pf.PlateauConfig(**kwargs)]) == [True]


    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(truth=CONFIGS, other=CONFIGS, metrics=METRICS)
    def test_exact_log_check_is_reproduction(self, truth: dict, other: dict, metrics: list[float]) -> None:
        """On an exact log, ``check`` accepts a config iff a real torch scheduler with it logs the same lrs."""
        logged, theirs = torch_lrs(truth, metrics), torch_lrs(other, metrics)
        log = pf.read_losses({"epoch": [str(i + 1) for i in range(len(metrics))],
                              "val_loss": [repr(m) for m in metrics], "lr": [repr(v) for v in logged]})
        assert check(log, [pf.PlateauConfig(**other)]) == [theirs == logged]


class TestMisfits:
    """Logs no plateau setting wrote: the closest settings and where they miss; other readings of the log."""

    def test_warm_up_is_not_reproduced(self, tmp_path) -> None:
        """A hand-written warm-up raises the lr: nothing fits; the closest settings and the rise are reported."""
        rows = train(warmup=3, patience=2, factor=0.5)
        f = fit(write(tmp_path / "log.csv", rows))
        assert not f.exact
        assert f.closest
        epochs = {e for e, _, _ in rows}
        assert all(m.epoch in epochs for m in f.closest)
        assert any("rises" in n for n in f.notes)

    def test_lr_logged_after_the_step(self, tmp_path) -> None:
        """A log of the lr after each step, read as such, is reproduced by the settings that wrote it."""
        rows = train(after_step=True, patience=2, factor=0.5, cooldown=1, threshold=0.01)
        f = fit(write(tmp_path / "log.csv", rows), lrs=[0.05], semantics="after")
        assert f.exact and "after" == f.semantics
        fam = family(f, "min", "rel", 2, 1)
        assert fam is not None and inside(0.01, fam.thresholds)

    def test_defaults_recognised(self, tmp_path) -> None:
        """A run with torch's defaults (a wrapper that swallowed the arguments): the defaults line says they fit."""
        rows = train(epochs=90, lr=0.05)
        f = fit(write(tmp_path / "log.csv", rows))
        assert any(a != b for (_, _, a), (_, _, b) in zip(rows, rows[1:], strict=False))
        assert f.exact and f.defaults is None
        other = fit(write(tmp_path / "other.csv", train(patience=2, factor=0.5)))
        assert other.defaults is not None and other.defaults.epoch == other.changes[0][0]

    def test_no_lr_column(self, tmp_path) -> None:
        """A log without an lr column cannot be fitted: a LossLogError says what is missing."""
        log = tmp_path / "log.csv"
        log.write_text("epoch,val_loss\n1,0.5\n2,0.4\n")
        with pytest.raises(LossLogError, match="no lr column to fit"):
            fit(log)


class TestCli:
    """``plateau-trace LOG --fit``."""

    def test_text_and_json(self, runs: dict) -> None:
        """The text names the settings; JSON lists the true patience and the factor range."""
        run = runs["rel-cooldown"]
        r = CliRunner().invoke(main, [str(run["repr"]), "--fit"])
        assert ExitStatus.OK == r.exit_code, r.output
        assert "reproduces     every logged lr" in r.stdout
        r = CliRunner().invoke(main, [str(run["repr"]), "--fit", "--format", "json", "--check"])
        assert ExitStatus.OK == r.exit_code, r.output
        obj = json.loads(r.stdout)
        assert 2 in obj["patience"] and obj["factor"]["lo"] <= 0.5 <= obj["factor"]["hi"]

    def test_fixed_option_and_check(self, tmp_path, runs: dict) -> None:
        """``--patience`` fixes patience in the search; ``--check`` exits 3 when nothing reproduces the lr."""
        r = CliRunner().invoke(main, [str(runs["rel-cooldown"]["repr"]), "--fit", "--patience", "2",
                                      "--format", "json"])
        assert ExitStatus.OK == r.exit_code, r.output
        assert [2] == json.loads(r.stdout)["patience"]
        warm = write(tmp_path / "warm.csv", train(warmup=3, patience=2, factor=0.5))
        r = CliRunner().invoke(main, [str(warm), "--fit", "--check"])
        assert ExitStatus.FINDINGS == r.exit_code
        assert "closest" in r.stdout

    @pytest.mark.parametrize(("args", "message"), [
        (["--min-lr", "0.1"], "drop --min-lr/--eps"),
        (["--format", "csv"], "--fit prints text"),
        (["--what-if", "patience=2"], "either --fit or --what-if"),
    ], ids=["min-lr", "csv", "what-if"])
    def test_usage_errors(self, runs: dict, args: list[str], message: str) -> None:
        """Options the fit cannot take are usage errors (exit 2)."""
        r = CliRunner().invoke(main, [str(runs["abs"]["repr"]), "--fit", *args])
        assert ExitStatus.USAGE == r.exit_code, r.output
        assert message in r.stderr

    def test_checkpoint_refused(self) -> None:
        """A checkpoint saves its hyperparameters: --fit takes the log alone (exit 2)."""
        r = CliRunner().invoke(main, [str(SAMPLES / "seed000.pt"), str(SAMPLES / "seed000.csv"), "--fit"])
        assert ExitStatus.USAGE == r.exit_code
        assert "give the log alone" in r.stderr
