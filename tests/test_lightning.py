"""Lightning samples in sample_checkpoints/lightning/: plateau_forensics explains them.

Each scenario's truth.json holds ``live``, what make_lightning.py recorded from the real scheduler while
Lightning trained. Every test below runs on the committed files and on a fresh regeneration; nothing
compares numbers between the two (another CPU trains to other last bits). No test imports lightning:
the generator runs in a subprocess, and checkpoints are read with ``torch.load(weights_only=True)`` or
the package's loaders, so no Lightning warning filter is needed.
"""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from fixture_truth import (  # noqa: E402 - after importorskip
    SAMPLES,
    Live,
    assert_tool_tells_the_truth,
    named,
    read_truth,
    regenerate,
    warnings,
)

import plateau_forensics as pf  # noqa: E402

LIGHTNING = SAMPLES / "lightning"
SCENARIOS = ("plain", "resumed", "step_interval", "missing_monitor_nonstrict")
CKPTS = sorted(p.relative_to(LIGHTNING).as_posix() for p in LIGHTNING.rglob("*.ckpt"))


# ------------------------------------------------------------------------------------ the two folders


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh ``make_lightning.py`` run on this machine (real Lightning training)."""
    if importlib.util.find_spec("lightning") is None:
        pytest.skip("lightning is not installed")
    return regenerate("make_lightning.py", tmp_path_factory.mktemp("lightning"))


@pytest.fixture(scope="module", params=["committed", "regenerated"])
def folder(request: pytest.FixtureRequest) -> Path:
    """The committed samples, then a regeneration: every test below holds for both."""
    return LIGHTNING if request.param == "committed" else request.getfixturevalue("regenerated")


# ------------------------------------------------------------------------------------ helpers


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def truth(folder: Path, scenario: str) -> dict:
    return read_truth(folder / scenario / "truth.json")


def ckpt_truth(folder: Path, rel: str) -> dict:
    """The ``truth.json`` entry of a checkpoint (path relative to ``lightning/``)."""
    scenario, _, inner = rel.partition("/")
    return next(c for c in truth(folder, scenario)["checkpoints"] if c["file"] == inner)


def logged(path: Path) -> list[tuple[int, float, float]]:
    """(epoch, lr-Adam used during that epoch, val_loss) per epoch, read independently of the package.

    LearningRateMonitor writes its row (epoch cell empty) at each epoch start, before that epoch's rows.
    """
    out, lr = [], None
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["lr-Adam"]:
                lr = float(row["lr-Adam"])
            if row["val_loss"]:
                out.append((int(row["epoch"]), lr, float(row["val_loss"])))
    return out


def replayed_lrs(t) -> dict[float, float]:
    """Epoch -> the lr the trace says that epoch trained with (group 0)."""
    return {s.epoch: s.lr_in[0] for s in t.steps}


# ------------------------------------------------------------------------------------ regeneration


def test_regenerated_files_are_the_committed_ones(regenerated: Path) -> None:
    """make_lightning.py writes the committed file names (checkpoint names hold epoch and step)."""

    def files(root: Path) -> list[str]:
        return sorted(
            p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != "README.md"
        )

    assert sorted(p.name for p in regenerated.iterdir()) == sorted(SCENARIOS)
    assert files(regenerated) == files(LIGHTNING)


def test_committed_sizes() -> None:
    """The Lightning samples stay small (< 400 KB in all)."""
    total = sum(p.stat().st_size for p in LIGHTNING.rglob("*") if p.is_file())
    assert total < 400_000, total


# ------------------------------------------------------------------------------------ loader


@pytest.mark.parametrize("rel", CKPTS)
def test_load_checkpoint_finds_lightning_state(folder: Path, rel: str) -> None:
    """load_checkpoint reads lr_schedulers[0], optimizer_states[0] and the counters."""
    path = folder / rel
    raw = load(path)
    want = ckpt_truth(folder, rel)
    ck = pf.load_checkpoint(path)
    assert (ck.framework, ck.key_path, ck.optimizer_key_path) == (
        "lightning",
        "lr_schedulers[0]",
        "optimizer_states[0]",
    )
    assert ck.optimizer_lrs == tuple(g["lr"] for g in raw["optimizer_states"][0]["param_groups"])
    assert ck.optimizer_lrs == tuple(want["optimizer_lrs"])
    assert (
        (ck.epoch, ck.global_step)
        == (raw["epoch"], raw["global_step"])
        == (want["epoch"], want["global_step"])
    )
    sd = raw["lr_schedulers"][0]
    assert ck.state.last_epoch == sd["last_epoch"] == want["last_epoch"]
    assert ck.state.best == sd["best"]
    assert (ck.state.num_bad_epochs, ck.state.cooldown_counter) == (
        sd["num_bad_epochs"],
        sd["cooldown_counter"],
    )
    assert (ck.config.patience, ck.config.factor, ck.config.cooldown) == (2, 0.5, 1)
    assert pf.load_checkpoint(path, loader="torch") == ck


# ------------------------------------------------------------------------------------ plain


@pytest.mark.parametrize("name", ["epoch=9-step=80.ckpt", "epoch=19-step=160.ckpt", "last.ckpt"])
def test_plain_saved_before_step(folder: Path, name: str) -> None:
    """A plain epoch-E checkpoint aligns after row E-1, warning-free, replaying the logged lr."""
    plain = folder / "plain"
    ckpt = plain / "csv_logs" / "version_0" / "checkpoints" / name
    t = pf.trace(ckpt, plain / "metrics.csv")
    ck_epoch = load(ckpt)["epoch"]
    assert t.alignment.epoch == ck_epoch - 1
    found = named(t, "saved-before-step")
    assert found is not None and found.severity == "info"
    assert found.evidence["checkpoint_epoch"] == ck_epoch
    assert warnings(t) == []
    rows = logged(plain / "metrics.csv")
    assert [e for e, _, _ in rows] == list(range(20))
    assert replayed_lrs(t) == {e: lr for e, lr, _ in rows}
    assert [s.metric for s in t.steps] == [v for _, _, v in rows]


# ------------------------------------------------------------------------------------ resumed


@pytest.mark.parametrize("name", ["epoch=17-step=144.ckpt", "epoch=23-step=192.ckpt"])
def test_resumed_explains_skipped_step(folder: Path, name: str) -> None:
    """Over both logs, a run-2 checkpoint aligns and the unstepped epoch 11 is named."""
    resumed = folder / "resumed" / "csv_logs"
    ckpt = resumed / "version_1" / "checkpoints" / name
    logs = [resumed / "version_0" / "metrics.csv", resumed / "version_1" / "metrics.csv"]
    t = pf.trace(ckpt, logs)
    ck = load(ckpt)
    assert ck["lr_schedulers"][0]["last_epoch"] == ck["epoch"] - 1
    assert t.alignment.epoch == ck["epoch"] - 1 and t.alignment.consistent
    skipped = named(t, "resume-skipped-step")
    assert skipped is not None and skipped.epoch == 11
    assert named(t, "saved-before-step") is not None
    assert named(t, "overlapping-logs") is None and named(t, "duplicate-epochs") is None
    assert warnings(t) == []
    rows = logged(logs[0]) + logged(logs[1])
    assert [e for e, _, _ in rows] == list(range(24))
    lrs = replayed_lrs(t)
    assert set(lrs) >= set(range(24)) - {11}
    assert lrs == {e: lr for e, lr, _ in rows if e in lrs}


def test_resumed_cli_two_logs(folder: Path) -> None:
    """``plateau-trace CKPT LOG0 LOG1`` reports the skipped step and no warning."""
    from click.testing import CliRunner

    from plateau_forensics.cli import main

    resumed = folder / "resumed" / "csv_logs"
    args = [
        str(resumed / "version_1" / "checkpoints" / "epoch=23-step=192.ckpt"),
        str(resumed / "version_0" / "metrics.csv"),
        str(resumed / "version_1" / "metrics.csv"),
        "--check",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "[resume-skipped-step]" in result.output
    assert not [line for line in result.output.splitlines() if line.startswith("warning")], result.output


# ------------------------------------------------------------------------------------ step interval


@pytest.mark.parametrize("name", ["epoch=5-step=48.ckpt", "epoch=11-step=96.ckpt"])
def test_step_interval_steps_per_row(folder: Path, name: str) -> None:
    """Two plateau steps per val_loss row (one stale) are reported as steps-per-row, k=2."""
    step = folder / "step_interval"
    ckpt = step / "csv_logs" / "version_0" / "checkpoints" / name
    ck = load(ckpt)
    assert ck["lr_schedulers"][0]["last_epoch"] == 2 * ck["epoch"] + 1
    t = pf.trace(ckpt, step / "metrics.csv")
    found = named(t, "steps-per-row")
    assert found is not None and found.evidence["k"] == 2
    assert t.alignment.epoch == ck["epoch"]  # the state already holds this epoch's val_loss (read once)
    assert t.alignment.lr_matches is True
    assert named(t, "saved-before-step") is None
    assert [w for w in warnings(t) if not w.startswith("[steps-per-row]")] == []


# ------------------------------------------------------------------------------------ missing monitor


def test_missing_monitor_never_stepped(folder: Path) -> None:
    """A scheduler that never stepped (last_epoch 0) over 16 logged epochs is a warning."""
    missing = folder / "missing_monitor_nonstrict"
    ckpt = missing / "csv_logs" / "version_0" / "checkpoints" / "epoch=15-step=128.ckpt"
    sd = load(ckpt)["lr_schedulers"][0]
    assert sd["last_epoch"] == 0 and sd["best"] == math.inf
    t = pf.trace(ckpt, missing / "metrics.csv")
    found = named(t, "scheduler-never-stepped")
    assert found is not None and found.severity == "warning"
    rows = logged(missing / "metrics.csv")
    assert len(rows) == 16 and {lr for _, lr, _ in rows} == {0.01}


# ------------------------------------------------------------------------------------ truth against the tool


@pytest.mark.parametrize("rel", CKPTS)
def test_tool_tells_the_recorded_truth(folder: Path, rel: str) -> None:
    """The tool's alignment, every replayed step and its findings agree with what Lightning's run recorded."""
    scenario, _, inner = rel.partition("/")
    assert_tool_tells_the_truth(folder / scenario, truth(folder, scenario), inner, f"lightning/{scenario}")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_truth_is_the_logged_run(folder: Path, scenario: str) -> None:
    """The recorded rows are metrics.csv's val_loss rows, with the lr-Adam logged at their epoch's start."""
    t = truth(folder, scenario)
    logs = t["log"] if isinstance(t["log"], list) else [t["log"]]
    rows = [row for log in logs for row in logged(folder / scenario / log)]
    live = Live.of(t)
    assert [(r.epoch, r.lr) for r in live.rows] == [(e, (lr,)) for e, lr, _ in rows]
    assert [s.metric for s in live.steps] == [rows[s.row][2] for s in live.steps]


@pytest.mark.parametrize("rel", CKPTS)
def test_checkpoint_holds_the_recorded_state(folder: Path, rel: str) -> None:
    """Each checkpoint's lr_schedulers[0] is the state of the step the truth says it holds."""
    scenario, _, inner = rel.partition("/")
    live = Live.of(truth(folder, scenario))
    saved = live.checkpoint(inner)
    sd = load(folder / rel)["lr_schedulers"][0]
    if saved.state_step is None:
        assert (sd["last_epoch"], sd["best"]) == (0, math.inf)
        return
    step = live.steps[saved.state_step]
    held = (sd["last_epoch"], sd["best"], sd["num_bad_epochs"], sd["cooldown_counter"], tuple(sd["_last_lr"]))
    assert held == (step.last_epoch, step.best, step.num_bad_epochs, step.cooldown_counter, step.lr)


# ------------------------------------------------------------------------------------ stories, from the truth


def test_plain_story_from_truth(folder: Path) -> None:
    """plain: one scheduler stepped once per epoch; every checkpoint is saved before its epoch's step."""
    live = Live.of(truth(folder, "plain"))
    assert len(live.schedulers) == 1 and [s.row for s in live.steps] == list(range(20))
    for ck in live.checkpoints:
        assert ck.saved == "before_step" and live.steps[ck.state_step].row == ck.row - 1
    assert len(live.reductions()) >= 2
    last = live.steps[-1]
    assert last.lr[0] < last.lr_before[0]  # the reduction decided at the end of the last epoch ...
    assert all(ck.state_step < last.index for ck in live.checkpoints)  # ... is in no file


def test_resumed_story_from_truth(folder: Path) -> None:
    """resumed: run 2's scheduler is restored from the epoch-11 file, so epoch 11's val_loss is never used."""
    t = truth(folder, "resumed")
    live = Live.of(t)
    source = "csv_logs/version_0/checkpoints/epoch=11-step=96.ckpt"
    assert t["resume_from"] == source and len(live.schedulers) == 2
    run2 = live.schedulers[1]
    assert run2["restored_from"] == source and run2["origin_step"] == live.checkpoint(source).state_step
    origin = live.steps[run2["origin_step"]]
    assert origin.epoch == 10 and live.start(1)["last_epoch"] == origin.last_epoch
    second = live.steps_of_scheduler(1)
    assert second[0].epoch == 12 and 11 not in [s.epoch for s in second]
    for ck in live.checkpoints:
        if ck.file.startswith("csv_logs/version_1/"):
            assert live.steps[ck.state_step].last_epoch == ck.epoch - 1


def test_step_interval_story_from_truth(folder: Path) -> None:
    """step_interval: each val_loss row is stepped twice (after its validation, then stale), but the last."""
    live = Live.of(truth(folder, "step_interval"))
    counts = [len(live.steps_of_row(r.index)) for r in live.rows]
    assert counts == [2] * (len(live.rows) - 1) + [1]
    for ck in live.checkpoints:
        assert ck.saved == "after_step" and live.steps[ck.state_step].last_epoch == 2 * ck.epoch + 1
    assert len(live.reductions()) >= 2


def test_missing_monitor_story_from_truth(folder: Path) -> None:
    """missing_monitor_nonstrict: 16 logged epochs, no plateau step at all, the lr never moves."""
    live = Live.of(truth(folder, "missing_monitor_nonstrict"))
    assert live.steps == () and len(live.rows) == 16
    assert {r.lr for r in live.rows} == {(0.01,)}
    assert [c.state_step for c in live.checkpoints] == [None]
