"""The TensorBoard fixtures regenerate, and read back as TensorBoard itself shows them."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from torch_oracle import assert_same  # noqa: E402 - after importorskip

import plateau_forensics as pf  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TB = ROOT / "sample_checkpoints" / "tensorboard"
SCRIPT = ROOT / "sample_checkpoints" / "make_tensorboard.py"
SCENARIOS = ("plain", "crash_purge", "slash_tags")
#: (scenario, checkpoint file, the log epoch it was saved after)
CHECKPOINTS = [("plain", "ckpt_epoch20.pt", 20), ("crash_purge", "ckpt_epoch12.pt", 12),
               ("crash_purge", "ckpt_epoch20.pt", 20), ("slash_tags", "ckpt_epoch20.pt", 20)]

# EventAccumulator logs (logging, not warnings) "Detected out of order event.step ... Purging expired events"
# on crash_purge; nothing here emits a Python warning, so pytest's filterwarnings=error needs no exception.


def truth(scenario: str) -> dict[str, Any]:
    return json.loads((TB / scenario / "truth.json").read_text())


def shown(path: Path, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of ``tag`` as TensorBoard itself shows the run (purged, float32 widened)."""
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def event_files(scenario: str) -> list[Path]:
    return sorted((TB / scenario / "run").glob("events.out.tfevents.*"))


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]




# ------------------------------------------------------------------------------ regeneration


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tensorboard")
    subprocess.run([sys.executable, str(SCRIPT), str(out)], check=True, capture_output=True, timeout=300)
    return out


def test_regenerated_files_match(regenerated: Path) -> None:
    """make_tensorboard.py writes the committed scenarios with the same (fixed) file names."""
    def listing(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*"))

    assert listing(regenerated) == listing(TB)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_regenerated_truth_and_checkpoints_are_identical(regenerated: Path, scenario: str) -> None:
    """truth.json regenerates byte for byte and every checkpoint loads to the committed contents."""
    assert (regenerated / scenario / "truth.json").read_bytes() == (TB / scenario / "truth.json").read_bytes()
    for ckpt in sorted((TB / scenario).glob("*.pt")):
        assert_same(torch.load(ckpt, weights_only=True),
                    torch.load(regenerated / scenario / ckpt.name, weights_only=True), ckpt.name)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_regenerated_scalars_read_back_equal(regenerated: Path, scenario: str) -> None:
    """The regenerated run shows the same steps and float32 values per tag (event bytes hold wall times)."""
    for tag in truth(scenario)["tags"].values():
        assert shown(regenerated / scenario / "run", tag) == shown(TB / scenario / "run", tag), tag


def test_fixture_stays_small() -> None:
    """All TensorBoard fixture files together stay under 400 KB."""
    assert sum(p.stat().st_size for p in TB.rglob("*") if p.is_file()) < 400_000


# ------------------------------------------------------------------------------ what the fixture shows


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_truth_is_what_tensorboard_shows(scenario: str) -> None:
    """truth.json's val_loss and lr are TensorBoard's values: the stepped float64 values as float32."""
    info = truth(scenario)
    run = TB / scenario / "run"
    assert shown(run, info["tags"]["val"]) == list(zip(info["steps"], info["val_loss"], strict=True))
    assert shown(run, info["tags"]["lr"]) == list(zip(info["steps"], info["lr"], strict=True))
    assert info["val_loss"] == [f32(v) for v in info["val_loss_stepped"]]
    assert info["val_loss"] != info["val_loss_stepped"]  # the float32 rounding is real in these logs


def test_crash_purge_has_two_files_and_duplicates_on_disk() -> None:
    """crash_purge's run dir holds run A's and run B's event files; each alone shows its own steps 13..15."""
    info = truth("crash_purge")
    a, b = event_files("crash_purge")
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
def test_read_losses_run_dir(scenario: str) -> None:
    """read_losses(run_dir) gives the metric, lr and train scalars as TensorBoard shows them, by step."""
    info = truth(scenario)
    log = pf.read_losses(TB / scenario / "run")
    assert_log_is_tensorboards(log, TB / scenario / "run", info)
    assert list(log.epochs) == info["steps"]
    assert list(log.metrics) == info["val_loss"]
    assert [row[0] for row in log.lrs] == info["lr"]


@pytest.mark.parametrize("scenario", ["plain", "slash_tags"])
def test_read_losses_event_file(scenario: str) -> None:
    """read_losses(event_file) reads a single event file the same way."""
    (path,) = event_files(scenario)
    log = pf.read_losses(path)
    assert_log_is_tensorboards(log, path, truth(scenario))
    assert list(log.metrics) == truth(scenario)["val_loss"]


def test_read_losses_crash_purge_drops_the_purged_steps() -> None:
    """After purge_step=13, run A's steps 13..15 are gone, as in TensorBoard; run B's values stand."""
    info = truth("crash_purge")
    log = pf.read_losses(TB / "crash_purge" / "run")
    assert list(log.epochs) == list(range(1, 26))
    assert list(log.metrics) == info["val_loss"]
    assert not set(info["purged"]["val_loss"]) & set(log.metrics[12:15])
    assert [a.kind for a in log.anomalies] == ["tensorboard-purge"]
    purged = sum(len(v) for k, v in info["purged"].items() if k != "steps")
    assert f"from step 13 on were purged ({purged} scalars)" in log.anomalies[0].message


@pytest.mark.parametrize("which, steps", [(0, range(1, 16)), (1, range(13, 26))])
def test_read_losses_crash_purge_single_files(which: int, steps: range) -> None:
    """Each event file of crash_purge read alone gives that run's own steps (no purge within one file)."""
    path = event_files("crash_purge")[which]
    log = pf.read_losses(path)
    assert list(log.epochs) == list(steps)
    assert list(log.metrics) == [v for _, v in shown(path, "val_loss")]


# ------------------------------------------------------------------------------ trace


@pytest.mark.parametrize("scenario, ckpt, epoch", CHECKPOINTS)
def test_trace_aligns_checkpoint_in_run_dir(scenario: str, ckpt: str, epoch: int) -> None:
    """trace(ckpt, run_dir) places the checkpoint after its epoch's step despite float32 logs; no warning."""
    t = pf.trace(TB / scenario / ckpt, TB / scenario / "run")
    assert t.alignment is not None
    assert t.alignment.epoch == epoch and t.alignment.index == epoch - 1
    assert t.alignment.consistent
    assert [f for f in t.findings if f.severity == "warning"] == []
    assert "duplicate-epochs" not in [f.code for f in t.findings]  # TensorBoard purged them


@pytest.mark.parametrize("scenario, ckpt, epoch", CHECKPOINTS)
def test_trace_lrs_match_the_logged_lr(scenario: str, ckpt: str, epoch: int) -> None:
    """The replayed lr of each epoch is the logged lr (as float32) and the checkpoint's lr at its epoch."""
    info = truth(scenario)
    t = pf.trace(TB / scenario / ckpt, TB / scenario / "run")
    assert len(t) == len(info["steps"])
    assert [f32(s.lr_in[0]) for s in t.steps] == info["lr"]
    saved = info["checkpoints"][ckpt]["optimizer_lrs"]
    assert len(t.steps[epoch - 1].lr) == len(saved)
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(t.steps[epoch - 1].lr, saved, strict=True))


def test_trace_plain_rebuilds_saved_counters() -> None:
    """The replay reaches the saved num_bad_epochs/cooldown and the float32 image of the float64 best."""
    info = truth("plain")["checkpoints"]["ckpt_epoch20.pt"]
    t = pf.trace(TB / "plain" / "ckpt_epoch20.pt", TB / "plain" / "run")
    step = t.steps[19]
    sched = info["scheduler"]
    assert step.num_bad_epochs == sched["num_bad_epochs"]
    assert step.cooldown_counter == sched["cooldown_counter"]
    assert f32(step.best) == info["best_float32"]


@pytest.mark.parametrize("scenario, ckpt, epoch", CHECKPOINTS)
def test_cli_on_checkpoint_and_run_dir(scenario: str, ckpt: str, epoch: int) -> None:
    """plateau-trace CKPT RUN_DIR exits 0, also with --check (no warning-level finding)."""
    from click.testing import CliRunner

    from plateau_forensics.cli import main

    for extra in ([], ["--check"]):
        result = CliRunner().invoke(main, [str(TB / scenario / ckpt), str(TB / scenario / "run"), *extra])
        assert result.exit_code == 0, result.output
