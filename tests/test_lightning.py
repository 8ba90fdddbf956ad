"""Lightning samples in sample_checkpoints/lightning/ regenerate identically; plateau_forensics explains them.

No test imports lightning: the generator runs in a subprocess, and checkpoints are read with
``torch.load(weights_only=True)`` or the package's loaders, so no Lightning warning filter is needed.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torch_oracle import assert_same  # noqa: E402 - after importorskip

import plateau_forensics as pf  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LIGHTNING = ROOT / "sample_checkpoints" / "lightning"
SCRIPT = ROOT / "sample_checkpoints" / "make_lightning.py"
SCENARIOS = ("plain", "resumed", "step_interval", "missing_monitor_nonstrict")
CKPTS = sorted(p.relative_to(LIGHTNING).as_posix() for p in LIGHTNING.rglob("*.ckpt"))

PLAIN = LIGHTNING / "plain"
RESUMED = LIGHTNING / "resumed" / "csv_logs"
STEP = LIGHTNING / "step_interval"
MISSING = LIGHTNING / "missing_monitor_nonstrict"


# ------------------------------------------------------------------------------------ helpers


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def truth(scenario: str) -> dict:
    return json.loads((LIGHTNING / scenario / "truth.json").read_text())


def ckpt_truth(rel: str) -> dict:
    """The ``truth.json`` entry of a committed checkpoint (path relative to ``lightning/``)."""
    scenario, _, inner = rel.partition("/")
    return next(c for c in truth(scenario)["checkpoints"] if c["file"] == inner)


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


def codes(t) -> dict[str, object]:
    return {f.code: f for f in t.findings}


def warnings_of(t) -> list[str]:
    return [f"[{f.code}] {f.message}" for f in t.findings if f.severity == "warning"]




def comparable(ck: dict) -> dict:
    """The checkpoint content that does not depend on where it was written (no paths, no versions)."""
    return {
        "epoch": ck["epoch"],
        "global_step": ck["global_step"],
        "lr_schedulers": ck["lr_schedulers"],
        "param_groups": [o["param_groups"] for o in ck["optimizer_states"]],
        "scheduler_progress": ck["loops"]["fit_loop"]["epoch_loop.scheduler_progress"],
    }


# ------------------------------------------------------------------------------------ regeneration


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    if importlib.util.find_spec("lightning") is None:
        pytest.skip("lightning is not installed")
    out = tmp_path_factory.mktemp("lightning")
    subprocess.run([sys.executable, str(SCRIPT), str(out)], check=True, capture_output=True, timeout=300)
    return out


def test_regenerated_files_match(regenerated: Path) -> None:
    """make_lightning.py rewrites the committed files; CSVs, hparams.yaml, truth.json byte for byte."""

    def files(root: Path) -> list[str]:
        return sorted(
            p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != "README.md"
        )

    assert sorted(p.name for p in regenerated.iterdir()) == sorted(SCENARIOS)
    assert files(regenerated) == files(LIGHTNING)
    for rel in files(LIGHTNING):
        if not rel.endswith(".ckpt"):
            assert (regenerated / rel).read_bytes() == (LIGHTNING / rel).read_bytes(), rel


@pytest.mark.parametrize("rel", CKPTS)
def test_regenerated_checkpoints_match(regenerated: Path, rel: str) -> None:
    """Each regenerated checkpoint holds bit-identical scheduler, optimizer lrs and counters."""
    assert_same(comparable(load(regenerated / rel)), comparable(load(LIGHTNING / rel)), rel)


def test_committed_sizes() -> None:
    """The Lightning samples stay small (< 400 KB in all)."""
    total = sum(p.stat().st_size for p in LIGHTNING.rglob("*") if p.is_file())
    assert total < 400_000, total


# ------------------------------------------------------------------------------------ loader


@pytest.mark.parametrize("rel", CKPTS)
def test_load_checkpoint_finds_lightning_state(rel: str) -> None:
    """load_checkpoint reads lr_schedulers[0], optimizer_states[0] and the counters."""
    path = LIGHTNING / rel
    raw = load(path)
    want = ckpt_truth(rel)
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
def test_plain_saved_before_step(name: str) -> None:
    """A plain epoch-E checkpoint aligns after row E-1, warning-free, replaying the logged lr."""
    ckpt = PLAIN / "csv_logs" / "version_0" / "checkpoints" / name
    t = pf.trace(ckpt, PLAIN / "metrics.csv")
    ck_epoch = load(ckpt)["epoch"]
    assert t.alignment.epoch == ck_epoch - 1
    found = codes(t)
    assert "saved-before-step" in found and found["saved-before-step"].severity == "info"
    assert found["saved-before-step"].evidence["checkpoint_epoch"] == ck_epoch
    assert warnings_of(t) == []
    rows = logged(PLAIN / "metrics.csv")
    assert [e for e, _, _ in rows] == list(range(20))
    assert replayed_lrs(t) == {e: lr for e, lr, _ in rows}
    assert [s.metric for s in t.steps] == [v for _, _, v in rows]


# ------------------------------------------------------------------------------------ resumed


@pytest.mark.parametrize("name", ["epoch=17-step=144.ckpt", "epoch=23-step=192.ckpt"])
def test_resumed_explains_skipped_step(name: str) -> None:
    """Over both logs, a run-2 checkpoint aligns and the unstepped epoch 11 is named."""
    ckpt = RESUMED / "version_1" / "checkpoints" / name
    logs = [RESUMED / "version_0" / "metrics.csv", RESUMED / "version_1" / "metrics.csv"]
    t = pf.trace(ckpt, logs)
    ck = load(ckpt)
    assert ck["lr_schedulers"][0]["last_epoch"] == ck["epoch"] - 1
    assert t.alignment.epoch == ck["epoch"] - 1 and t.alignment.consistent
    found = codes(t)
    assert "resume-skipped-step" in found, sorted(found)
    assert found["resume-skipped-step"].epoch == 11
    assert "saved-before-step" in found
    assert "overlapping-logs" not in found and "duplicate-epochs" not in found
    assert warnings_of(t) == []
    rows = logged(logs[0]) + logged(logs[1])
    assert [e for e, _, _ in rows] == list(range(24))
    lrs = replayed_lrs(t)
    assert set(lrs) >= set(range(24)) - {11}
    assert lrs == {e: lr for e, lr, _ in rows if e in lrs}


def test_resumed_cli_two_logs() -> None:
    """``plateau-trace CKPT LOG0 LOG1`` reports the skipped step and no warning."""
    from click.testing import CliRunner

    from plateau_forensics.cli import main

    args = [
        str(RESUMED / "version_1" / "checkpoints" / "epoch=23-step=192.ckpt"),
        str(RESUMED / "version_0" / "metrics.csv"),
        str(RESUMED / "version_1" / "metrics.csv"),
        "--check",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "[resume-skipped-step]" in result.output
    assert not [line for line in result.output.splitlines() if line.startswith("warning")], result.output


# ------------------------------------------------------------------------------------ step interval


@pytest.mark.parametrize("name", ["epoch=5-step=48.ckpt", "epoch=11-step=96.ckpt"])
def test_step_interval_steps_per_row(name: str) -> None:
    """Two plateau steps per val_loss row (one stale) are reported as steps-per-row, k=2."""
    ckpt = STEP / "csv_logs" / "version_0" / "checkpoints" / name
    ck = load(ckpt)
    assert ck["lr_schedulers"][0]["last_epoch"] == 2 * ck["epoch"] + 1
    t = pf.trace(ckpt, STEP / "metrics.csv")
    found = codes(t)
    assert "steps-per-row" in found, sorted(found)
    assert found["steps-per-row"].evidence["k"] == 2
    assert t.alignment.epoch == ck["epoch"]  # the state already holds this epoch's val_loss (read once)
    assert t.alignment.lr_matches is True
    assert "saved-before-step" not in found
    assert [w for w in warnings_of(t) if not w.startswith("[steps-per-row]")] == []


# ------------------------------------------------------------------------------------ missing monitor


def test_missing_monitor_never_stepped() -> None:
    """A scheduler that never stepped (last_epoch 0) over 16 logged epochs is a warning."""
    ckpt = MISSING / "csv_logs" / "version_0" / "checkpoints" / "epoch=15-step=128.ckpt"
    sd = load(ckpt)["lr_schedulers"][0]
    assert sd["last_epoch"] == 0 and sd["best"] == math.inf
    t = pf.trace(ckpt, MISSING / "metrics.csv")
    found = codes(t)
    assert "scheduler-never-stepped" in found, sorted(found)
    assert found["scheduler-never-stepped"].severity == "warning"
    rows = logged(MISSING / "metrics.csv")
    assert len(rows) == 16 and {lr for _, lr, _ in rows} == {0.01}
