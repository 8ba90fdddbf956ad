"""The TensorBoard fixtures read back as TensorBoard shows them and tell their story.

Each scenario's truth.json holds ``live``, what make_tensorboard.py recorded from the real scheduler while
it trained (its ``precision`` is float32: the event files store float32 scalars). Every test below runs
on the committed fixtures and on a fresh regeneration; nothing compares numbers between the two.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorboard")

from fixture_truth import (  # noqa: E402 - after importorskip
    SAMPLES,
    Live,
    assert_tool_tells_the_truth,
    named,
    read_truth,
    regenerate,
    warnings,
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

import plateau_forensics as pf  # noqa: E402

TB = SAMPLES / "tensorboard"
SCENARIOS = ("plain", "crash_purge", "slash_tags")
#: (scenario, checkpoint file, the log epoch it was saved after)
CHECKPOINTS = [("plain", "ckpt_epoch20.pt", 20), ("crash_purge", "ckpt_epoch12.pt", 12),
               ("crash_purge", "ckpt_epoch20.pt", 20), ("slash_tags", "ckpt_epoch20.pt", 20)]

# EventAccumulator logs (logging, not warnings) "Detected out of order event.step ... Purging expired events"
# on crash_purge; nothing here emits a Python warning, so pytest's filterwarnings=error needs no exception.


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh ``make_tensorboard.py`` run on this machine."""
    return regenerate("make_tensorboard.py", tmp_path_factory.mktemp("tensorboard"))


@pytest.fixture(scope="module", params=["committed", "regenerated"])
def folder(request: pytest.FixtureRequest) -> Path:
    """The committed fixtures, then a regeneration: every test below holds for both."""
    return TB if request.param == "committed" else request.getfixturevalue("regenerated")


def truth(folder: Path, scenario: str) -> dict[str, Any]:
    return read_truth(folder / scenario / "truth.json")


def shown(path: Path, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of ``tag`` as TensorBoard itself shows the run (purged, float32 widened)."""
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def event_files(folder: Path, scenario: str) -> list[Path]:
    return sorted((folder / scenario / "run").glob("events.out.tfevents.*"))


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]




# ------------------------------------------------------------------------------ regeneration


def test_regenerated_files_are_the_committed_ones(regenerated: Path) -> None:
    """make_tensorboard.py writes the committed scenarios with the same (fixed) file names."""
    def listing(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*"))

    assert listing(regenerated) == listing(TB)


def test_fixture_stays_small() -> None:
    """All TensorBoard fixture files together stay under 400 KB."""
    assert sum(p.stat().st_size for p in TB.rglob("*") if p.is_file()) < 400_000


# ------------------------------------------------------------------------------ what the fixture shows


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_truth_is_what_tensorboard_shows(folder: Path, scenario: str) -> None:
    """truth.json's val_loss and lr are TensorBoard's values: the stepped float64 values as float32."""
    info = truth(folder, scenario)
    run = folder / scenario / "run"
    assert shown(run, info["tags"]["val"]) == list(zip(info["steps"], info["val_loss"], strict=True))
    assert shown(run, info["tags"]["lr"]) == list(zip(info["steps"], info["lr"], strict=True))
    assert info["val_loss"] == [f32(v) for v in info["val_loss_stepped"]]
    assert info["val_loss"] != info["val_loss_stepped"]  # the float32 rounding is real in these logs


def test_crash_purge_has_two_files_and_duplicates_on_disk(folder: Path) -> None:
    """crash_purge's run dir holds run A's and run B's event files; each alone shows its own steps 13..15."""
    info = truth(folder, "crash_purge")
    a, b = event_files(folder, "crash_purge")
    assert [s for s, _ in shown(a, "val_loss")] == list(range(1, 16))
    assert [s for s, _ in shown(b, "val_loss")] == list(range(13, 26))
    assert [v for s, v in shown(a, "val_loss") if s >= 13] == info["purged"]["val_loss"]
    assert info["raw_val_loss_events"] == 15 + 13


# ------------------------------------------------------------------------------ read_losses


def assert_log_is_tensorboards(log: Any, path: Path, info: dict[str, Any]) -> None:
    """The LossLog holds exactly what EventAccumulator shows for the metric, lr and train tags."""
    tags = info["tags"]
    val = shown(path, tags["val"])
    assert log.metric_column == tags["val"]
    assert list(log.epochs) == [s for s, _ in val]
    assert list(log.metrics) == [v for _, v in val]
    assert log.lr_columns == (tags["lr"],)
    assert [row[0] for row in log.lrs] == [v for _, v in shown(path, tags["lr"])]
    assert list(log.columns[tags["train"]]) == [v for _, v in shown(path, tags["train"])]
    assert [a.kind for a in log.anomalies if a.kind != "tensorboard-purge"] == []


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_read_losses_run_dir(folder: Path, scenario: str) -> None:
    """read_losses(run_dir) gives the metric, lr and train scalars as TensorBoard shows them, by step."""
    info = truth(folder, scenario)
    log = pf.read_losses(folder / scenario / "run")
    assert_log_is_tensorboards(log, folder / scenario / "run", info)
    assert list(log.epochs) == info["steps"]
    assert list(log.metrics) == info["val_loss"]
    assert [row[0] for row in log.lrs] == info["lr"]


@pytest.mark.parametrize("scenario", ["plain", "slash_tags"])
def test_read_losses_event_file(folder: Path, scenario: str) -> None:
    """read_losses(event_file) reads a single event file the same way."""
    (path,) = event_files(folder, scenario)
    log = pf.read_losses(path)
    assert_log_is_tensorboards(log, path, truth(folder, scenario))
    assert list(log.metrics) == truth(folder, scenario)["val_loss"]


def test_read_losses_crash_purge_drops_the_purged_steps(folder: Path) -> None:
    """After purge_step=13, run A's steps 13..15 are gone, as in TensorBoard; run B's values stand."""
    info = truth(folder, "crash_purge")
    log = pf.read_losses(folder / "crash_purge" / "run")
    assert list(log.epochs) == list(range(1, 26))
    assert list(log.metrics) == info["val_loss"]
    assert not set(info["purged"]["val_loss"]) & set(log.metrics[12:15])
    assert [a.kind for a in log.anomalies] == ["tensorboard-purge"]
    purged = sum(len(v) for k, v in info["purged"].items() if k != "steps")
    assert f"from step 13 on were purged ({purged} scalars)" in log.anomalies[0].message


@pytest.mark.parametrize("which, steps", [(0, range(1, 16)), (1, range(13, 26))])
def test_read_losses_crash_purge_single_files(folder: Path, which: int, steps: range) -> None:
    """Each event file of crash_purge read alone gives that run's own steps (no purge within one file)."""
    path = event_files(folder, "crash_purge")[which]
    log = pf.read_losses(path)
    assert list(log.epochs) == list(steps)
    assert list(log.metrics) == [v for _, v in shown(path, "val_loss")]


# ------------------------------------------------------------------------------ trace


@pytest.mark.parametrize("scenario, ckpt, epoch", CHECKPOINTS)
def test_trace_aligns_checkpoint_in_run_dir(folder: Path, scenario: str, ckpt: str, epoch: int) -> None:
    """trace(ckpt, run_dir) places the checkpoint after its epoch's step despite float32 logs; no warning."""
    t = pf.trace(folder / scenario / ckpt, folder / scenario / "run")
    assert t.alignment is not None
    assert t.alignment.epoch == epoch and t.alignment.index == epoch - 1
    assert t.alignment.consistent
    assert warnings(t) == []
    assert named(t, "duplicate-epochs") is None  # TensorBoard purged them


@pytest.mark.parametrize("scenario, ckpt, epoch", CHECKPOINTS)
def test_trace_lrs_match_the_logged_lr(folder: Path, scenario: str, ckpt: str, epoch: int) -> None:
    """The replayed lr of each epoch is the logged lr (as float32) and the checkpoint's lr at its epoch."""
    info = truth(folder, scenario)
    t = pf.trace(folder / scenario / ckpt, folder / scenario / "run")
    assert len(t) == len(info["steps"])
    assert [f32(s.lr_in[0]) for s in t.steps] == info["lr"]
    saved = info["checkpoints"][ckpt]["optimizer_lrs"]
    assert len(t.steps[epoch - 1].lr) == len(saved)
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(t.steps[epoch - 1].lr, saved, strict=True))


def test_trace_plain_rebuilds_saved_counters(folder: Path) -> None:
    """The replay reaches the saved num_bad_epochs/cooldown and the float32 image of the float64 best."""
    info = truth(folder, "plain")["checkpoints"]["ckpt_epoch20.pt"]
    t = pf.trace(folder / "plain" / "ckpt_epoch20.pt", folder / "plain" / "run")
    step = t.steps[19]
    sched = info["scheduler"]
    assert step.num_bad_epochs == sched["num_bad_epochs"]
    assert step.cooldown_counter == sched["cooldown_counter"]
    assert f32(step.best) == info["best_float32"]


@pytest.mark.parametrize("scenario, ckpt, epoch", CHECKPOINTS)
def test_cli_on_checkpoint_and_run_dir(folder: Path, scenario: str, ckpt: str, epoch: int) -> None:
    """plateau-trace CKPT RUN_DIR exits 0, also with --check (no warning-level finding)."""
    from click.testing import CliRunner

    from plateau_forensics.cli import main

    for extra in ([], ["--check"]):
        args = [str(folder / scenario / ckpt), str(folder / scenario / "run"), *extra]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output


# ------------------------------------------------------------------------------ truth against the tool


@pytest.mark.parametrize("scenario, ckpt, epoch", CHECKPOINTS)
def test_tool_tells_the_recorded_truth(folder: Path, scenario: str, ckpt: str, epoch: int) -> None:
    """The tool's alignment, every replayed step (float32, as logged) and its findings are the run's."""
    assert_tool_tells_the_truth(folder / scenario, truth(folder, scenario), ckpt, f"tensorboard/{scenario}")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_truth_is_the_logged_run(folder: Path, scenario: str) -> None:
    """The recorded rows are every scalar row the runs wrote, in order; each step read its row's value."""
    info = truth(folder, scenario)
    live = Live.of(info)
    raw = [(s, v) for f in event_files(folder, scenario) for s, v in shown(f, info["tags"]["val"])]
    assert [r.epoch for r in live.rows] == [s for s, _ in raw]
    assert [f32(s.metric) for s in live.steps] == [raw[s.row][1] for s in live.steps]
    lrs = [v for f in event_files(folder, scenario) for _, v in shown(f, info["tags"]["lr"])]
    assert [f32(r.lr[0]) for r in live.rows] == lrs


def test_crash_purge_story_from_truth(folder: Path) -> None:
    """crash_purge: run B's scheduler is restored from epoch 12's file and re-steps 13..15 on other values."""
    live = Live.of(truth(folder, "crash_purge"))
    assert len(live.schedulers) == 2
    held = live.steps[live.checkpoint("ckpt_epoch12.pt").state_step]
    assert held.epoch == 12 and live.start(1) == {"last_epoch": held.last_epoch, "best": held.best,
                                                  "num_bad_epochs": held.num_bad_epochs,
                                                  "cooldown_counter": held.cooldown_counter}
    a, b = live.steps_of_scheduler(0), live.steps_of_scheduler(1)
    assert [s.epoch for s in a] == list(range(1, 16)) and [s.epoch for s in b] == list(range(13, 26))
    assert all(x.metric != y.metric for x, y in zip(a[12:], b[:3], strict=True))
    assert live.steps[live.checkpoint("ckpt_epoch20.pt").state_step].scheduler == 1


@pytest.mark.parametrize("scenario", ["plain", "slash_tags"])
def test_single_run_story_from_truth(folder: Path, scenario: str) -> None:
    """plain / slash_tags: one scheduler, 25 steps, at least two reductions, saved after epoch 20's step."""
    live = Live.of(truth(folder, scenario))
    assert len(live.schedulers) == 1 and [s.epoch for s in live.steps] == list(range(1, 26))
    assert len(live.reductions()) >= 2
    ck = live.checkpoint("ckpt_epoch20.pt")
    assert (ck.saved, live.steps[ck.state_step].epoch) == ("after_step", 20)
    assert live.steps[ck.state_step].best not in [f32(s.metric) for s in live.steps]  # float64, never logged
