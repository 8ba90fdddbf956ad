"""``plateau-trace --schedule``: the lr timeline of torch schedulers printed (its lrs are real torch's) and
plotted, alone, composed, or beside the plateau replay of a log; usage errors exit 2 with one line."""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_schedules_oracle import torch_optimizer

from plateau_forensics import schedules as S
from plateau_forensics.cli import ExitStatus, main
from plateau_forensics.report import g

ROOT = Path(__file__).resolve().parent.parent


def _torch_lrs(build, epochs: int, lrs: list[float]) -> list[list[float]]:
    """The lr each epoch trains with when real torch schedulers (built by ``build(opt)``, in order) step per
    epoch."""
    opt = torch_optimizer(lrs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        scheds = build(opt)
        out = [[float(gr["lr"]) for gr in opt.param_groups]]
        for _ in range(epochs - 1):
            opt.step()
            for s in scheds:
                s.step()
            out.append([float(gr["lr"]) for gr in opt.param_groups])
    return out


def _csv_lrs(text: str) -> list[list[float]]:
    rows = list(csv.DictReader(io.StringIO(text)))
    return [[float(r[k]) for k in r if k.startswith("lr_")] for r in rows]


@pytest.fixture(name="runner")
def _runner() -> CliRunner:
    return CliRunner()


def test_csv_lrs_are_torchs(runner) -> None:
    """--format csv: every epoch's lr (repr, bit-exact) equals real torch's
    CosineAnnealingWarmRestarts(T_0=10, T_mult=2)."""
    r = runner.invoke(
        main,
        [
            "--schedule",
            "CosineAnnealingWarmRestarts(T_0=10, T_mult=2)",
            "--epochs",
            "100",
            "--lr",
            "0.1",
            "--format",
            "csv",
        ],
    )
    assert r.exit_code == ExitStatus.OK, r.output
    want = _torch_lrs(
        lambda o: [torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2)], 100, [0.1]
    )
    assert _csv_lrs(r.stdout) == want


def test_composition_in_order(runner) -> None:
    """Two --schedule options are built and stepped in order on one optimizer of two groups, as torch does."""
    r = runner.invoke(
        main,
        [
            "--schedule",
            "LinearLR(start_factor=0.1, total_iters=5)",
            "--schedule",
            "ExponentialLR(gamma=0.9)",
            "--epochs",
            "12",
            "--lr",
            "0.1",
            "--lr",
            "0.02",
            "--format",
            "csv",
        ],
    )
    assert r.exit_code == ExitStatus.OK, r.output
    want = _torch_lrs(
        lambda o: [
            torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=5),
            torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9),
        ],
        12,
        [0.1, 0.02],
    )
    assert _csv_lrs(r.stdout) == want
    changed = [row["changed_by"] for row in csv.DictReader(io.StringIO(r.stdout))]
    assert changed[0] == "LinearLR(start_factor=0.1)"
    assert changed[3] == "LinearLR(start_factor=0.1);ExponentialLR(gamma=0.9)"
    assert changed[8] == "ExponentialLR(gamma=0.9)"


def test_grid_cells_are_torchs_values(runner) -> None:
    """The grid shows each epoch's torch lr in 4 significant digits, the writer code, and the legend."""
    r = runner.invoke(
        main,
        [
            "--schedule",
            "MultiStepLR(milestones=[3, 5], gamma=0.1)",
            "--epochs",
            "8",
            "--lr",
            "0.1",
            "--width",
            "200",
        ],
    )
    assert r.exit_code == ExitStatus.OK, r.output
    lines = r.stdout.splitlines()
    want = _torch_lrs(lambda o: [torch.optim.lr_scheduler.MultiStepLR(o, [3, 5])], 8, [0.1])
    assert lines[0].split() == ["epoch", *map(str, range(8))]
    assert lines[1].split() == ["lr", *(g(v[0]) for v in want)]
    ends = [lines[0].index(f" {e}", 5) + len(str(e)) + 1 for e in range(8)]  # right-aligned columns
    marks = [e for e, end in enumerate(ends) if lines[2][end - 1 : end] == "1"]
    assert marks == [3, 5]  # the two milestones (building MultiStepLR changes no lr)
    assert "by: 1 = MultiStepLR(milestones=[3, 5])" in r.stdout


def test_json_rows(runner) -> None:
    """--format json: one row per epoch with lr per group and the writers, floats exact."""
    r = runner.invoke(
        main, ["--schedule", "StepLR(step_size=2)", "--epochs", "5", "--lr", "1", "--format", "json"]
    )
    doc = json.loads(r.stdout)
    assert doc["schedulers"] == ["StepLR(step_size=2)"]
    assert [row["lr"] for row in doc["rows"]] == [[1.0], [1.0], [0.1], [0.1], [0.1 * 0.1]]
    assert doc["error"] is None


def test_torch_raising_is_shown_not_crashed(runner) -> None:
    """OneCycleLR over more epochs than total_steps: the timeline stops where torch raises, and says so (exit
    0)."""
    r = runner.invoke(main, ["--schedule", "OneCycleLR(max_lr=0.1, total_steps=10)", "--epochs", "20"])
    assert r.exit_code == ExitStatus.OK, r.output
    assert "Tried to step 11 times. The specified number of total steps is 10" in r.stdout
    assert "Traceback" not in r.output


@pytest.mark.parametrize(
    "args,match",
    [
        (["--schedule", "FooLR()"], "unknown scheduler 'FooLR'"),
        (["--schedule", "StepLR(step_size=3"], "expected ',' or ')', found the end"),
        (["--schedule", "CosineAnnealingWarmRestarts(T_0=0)"], "Expected positive integer T_0"),
        (["--epochs", "10"], "--epochs needs --schedule"),
        (["--schedule", "StepLR(step_size=3)", "--patience", "2"], "does not combine with --patience"),
        (["--schedule", "StepLR(step_size=3)", "--plot", "x.txt"], "cannot plot to '.txt'"),
        (["--schedule", "LambdaLR(lr_lambda='__import__(1)')"], "not an allowed function"),
    ],
    ids=[
        "unknown",
        "unclosed",
        "torch-refuses",
        "epochs-alone",
        "plateau-option",
        "plot-suffix",
        "hostile-lambda",
    ],
)
def test_usage_errors(runner, args, match) -> None:
    """Bad --schedule input exits 2 with one ``Error:`` line naming the problem."""
    r = runner.invoke(main, args)
    assert r.exit_code == ExitStatus.USAGE, r.output
    assert match in r.stderr
    assert "Traceback" not in r.output


def test_schedule_with_checkpoint_is_refused(runner, monkeypatch) -> None:
    """--schedule with a checkpoint is a usage error (the saved schedulers come from the checkpoint
    itself)."""
    monkeypatch.chdir(ROOT)
    r = runner.invoke(
        main,
        [
            "sample_checkpoints/seed000.pt",
            "sample_checkpoints/seed000.csv",
            "--schedule",
            "StepLR(step_size=3)",
        ],
    )
    assert r.exit_code == ExitStatus.USAGE
    assert "give the log alone" in r.stderr


def test_beside_a_plateau_replay_of_a_log(runner, monkeypatch) -> None:
    """A LOSSES log with --schedule: the plateau grid, then the timeline naming the warm-up and each
    reduction."""
    monkeypatch.chdir(ROOT)
    r = runner.invoke(
        main,
        [
            "sample_checkpoints/seed000.csv",
            "--patience",
            "2",
            "--cooldown",
            "3",
            "--factor",
            "0.8",
            "--lr",
            "0.0015",
            "--schedule",
            "LinearLR(start_factor=0.1, total_iters=5)",
            "--width",
            "100",
        ],
    )
    assert r.exit_code == ExitStatus.OK, r.output
    assert "reductions  epoch 29: 0.0015 -> 0.0012" in r.stdout
    assert "by: P = ReduceLROnPlateau; 1 = LinearLR(start_factor=0.1)" in r.stdout
    assert "segment  LinearLR(start_factor=0.1): epochs 1-6" in r.stdout
    assert "segment  ReduceLROnPlateau: epoch 30\n" in r.stdout  # the reduction at the end of epoch 29


def test_plot_writes_the_file(runner, tmp_path) -> None:
    """--plot FILE draws the timeline (PNG signature) after printing it."""
    out = tmp_path / "t.png"
    r = runner.invoke(
        main,
        [
            "--schedule",
            "CyclicLR(base_lr=5e-5, max_lr=1e-4, step_size_up=5, mode='exp_range', gamma=0.5)",
            "--epochs",
            "40",
            "--plot",
            str(out),
        ],
    )
    assert r.exit_code == ExitStatus.OK, r.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_timeline_plot_api(tmp_path) -> None:
    """``Timeline.plot`` draws one line per group and a band with one bar per writer's change."""
    pytest.importorskip("matplotlib")
    t = S.timeline(
        [S.LinearLR(start_factor=0.25, total_iters=4), S.StepLR(step_size=6)], epochs=20, lrs=[0.1, 0.3]
    )
    fig = t.plot(tmp_path / "t.svg")
    ax, band = fig.axes[:2]
    assert len(ax.patches) == 2  # one stairs line per group
    writers = [c.writer for ch in t.changes for c in dict((c.writer, c) for c in ch).values()]
    assert len(band.patches) == len(writers)
    assert (tmp_path / "t.svg").read_text().startswith("<?xml")


def test_readme_timeline_block_is_real(runner) -> None:
    """The timeline output quoted in the README is what its command prints today."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- timeline-output:start -->\n```\n")[1].split("```\n<!-- timeline-output:end -->")[0]
    r = runner.invoke(main, ["--schedule", "LinearLR(start_factor=0.1, total_iters=4)", "--schedule",
                             "MultiStepLR(milestones=[6, 9], gamma=0.5)", "--epochs", "12", "--lr", "0.1",
                             "--width", "100"])
    assert r.exit_code == ExitStatus.OK
    assert r.stdout == block
    assert 'plateau-trace --schedule "LinearLR(start_factor=0.1, total_iters=4)" --schedule' in readme
