"""The committed samples in ``sample_checkpoints/`` regenerate identically and tell their stories."""

from __future__ import annotations

import copy
import csv
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch.optim.lr_scheduler import ReduceLROnPlateau  # noqa: E402
from torch_oracle import assert_same  # noqa: E402 - after importorskip

SAMPLES = Path(__file__).resolve().parent.parent / "sample_checkpoints"
SCRIPT = SAMPLES / "make_samples.py"
CHECKPOINTS = ["seed000.pt", "clean.pt", "forgot_scheduler.pt", "two_groups.pt", "legacy_format.pt"]
LOGS = ["seed000.csv", "clean.csv", "forgot_scheduler.csv", "two_groups.csv"]
SCHEDULER_KEY = {
    "seed000.pt": "scheduler",
    "clean.pt": "scheduler_state_dict",
    "forgot_scheduler.pt": "lr_scheduler",
    "two_groups.pt": "scheduler",
    "legacy_format.pt": "scheduler_state_dict",
}


# ------------------------------------------------------------------------------------ helpers


def load(name: str, folder: Path = SAMPLES) -> dict:
    return torch.load(folder / name, weights_only=True)


def read_log(name: str) -> tuple[list[str], list[int], list[float], list[list[float]]]:
    """Return (header, epochs, val_losses, lrs per row) of a committed loss log."""
    with open(SAMPLES / name, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    lr_cols = [i for i, col in enumerate(header) if col.startswith("lr")]
    return (
        header,
        [int(r[0]) for r in body],
        [float(r[header.index("val_loss")]) for r in body],
        [[float(r[i]) for i in lr_cols] for r in body],
    )




def replay(val_losses, lrs, state=None, **kwargs):
    """Step a real ReduceLROnPlateau over ``val_losses``; return (LR used each epoch, final state)."""
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
    optimizer = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)])
    scheduler = ReduceLROnPlateau(optimizer, **kwargs)
    if state is not None:
        scheduler.load_state_dict(copy.deepcopy(state))
    used = []
    for value in val_losses:
        used.append([group["lr"] for group in optimizer.param_groups])
        scheduler.step(value)
    return used, scheduler.state_dict()


def changes(lrs: list[list[float]], epochs: list[int], group: int = 0) -> list[int]:
    return [epochs[i] for i in range(1, len(lrs)) if lrs[i][group] != lrs[i - 1][group]]


# ------------------------------------------------------------------------------------ reproducibility


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("samples")
    subprocess.run([sys.executable, str(SCRIPT), str(out)], check=True, capture_output=True, timeout=300)
    return out


@pytest.mark.parametrize("name", LOGS)
def test_regenerated_log_is_byte_identical(regenerated: Path, name: str) -> None:
    """Running make_samples.py again writes exactly the committed CSV bytes."""
    assert (SAMPLES / name).read_bytes() == (regenerated / name).read_bytes()


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_regenerated_checkpoint_has_identical_contents(regenerated: Path, name: str) -> None:
    """Running make_samples.py again writes a checkpoint whose loaded contents equal the committed one."""
    assert_same(load(name), load(name, regenerated))


# ------------------------------------------------------------------------------------ stories


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_checkpoint_loads_weights_only_with_plateau_state(name: str) -> None:
    """Each committed checkpoint loads with weights_only=True; its plateau state matches its optimizer."""
    ckpt = load(name)
    sd = ckpt[SCHEDULER_KEY[name]]
    assert {"best", "num_bad_epochs", "cooldown_counter", "last_epoch"} <= set(sd)
    optimizer = ckpt.get("optimizer", ckpt.get("optimizer_state_dict"))
    assert sd["_last_lr"] == [group["lr"] for group in optimizer["param_groups"]]


def test_seed000_story() -> None:
    """seed000: a fresh scheduler from loop epoch 11 explains last_epoch == 23 at the epoch-33 checkpoint."""
    hparams = dict(mode="min", factor=0.8, patience=2, cooldown=3)
    resume_epoch, save_epoch = 11, 33
    ckpt = load("seed000.pt")
    sd = ckpt["scheduler"]
    assert ckpt["epoch"] == save_epoch
    assert sd["last_epoch"] == save_epoch - (resume_epoch - 1)
    assert (sd["patience"], sd["cooldown"], sd["factor"], sd["mode"]) == (2, 3, 0.8, "min")
    assert (sd["threshold"], sd["threshold_mode"]) == (1e-4, "rel")

    _, epochs, val, lrs = read_log("seed000.csv")
    assert epochs == list(range(1, 50))
    # Run A (1..10) ran its own scheduler; run B restarted one at epoch 11 with the restored LR.
    used_a, state_a = replay(val[:10], lrs[0], **hparams)
    assert used_a == lrs[:10] and lrs[10] == state_a["_last_lr"]
    used_b, _ = replay(val[10:], lrs[10], **hparams)
    assert used_b == lrs[10:]
    _, state_b = replay(val[10:save_epoch], lrs[10], **hparams)
    assert_same(state_b, sd, "scheduler")
    # After the checkpoint nothing improves, so drops come every cooldown + patience + 1 epochs.
    late = [e for e in changes(lrs, epochs) if e > save_epoch]
    assert len(late) >= 3
    assert {b - a for a, b in zip(late, late[1:])} == {hparams["cooldown"] + hparams["patience"] + 1}


def test_clean_story() -> None:
    """clean: an uninterrupted run whose epoch-20 scheduler state is the replay of epochs 1..20."""
    hparams = dict(mode="min", factor=0.5, patience=3, cooldown=1, threshold=1e-3, threshold_mode="abs")
    ckpt = load("clean.pt")
    keys = ["epoch", "model_state_dict", "optimizer_state_dict", "scheduler_state_dict", "val_loss"]
    assert list(ckpt) == keys
    assert ckpt["epoch"] == 20 and ckpt["scheduler_state_dict"]["last_epoch"] == 20
    _, epochs, val, lrs = read_log("clean.csv")
    assert epochs == list(range(1, 31))
    used, _ = replay(val, lrs[0], **hparams)
    assert used == lrs and len(changes(lrs, epochs)) >= 2
    _, state = replay(val[:20], lrs[0], **hparams)
    assert_same(state, ckpt["scheduler_state_dict"], "scheduler")
    assert ckpt["val_loss"] == val[19]


def test_legacy_format_is_clean_in_the_old_serialization() -> None:
    """legacy_format.pt is a non-zip (legacy pickle) file with exactly clean.pt's content."""
    assert not zipfile.is_zipfile(SAMPLES / "legacy_format.pt")
    assert zipfile.is_zipfile(SAMPLES / "clean.pt")
    assert_same(load("legacy_format.pt"), load("clean.pt"))


def test_forgot_scheduler_story() -> None:
    """forgot_scheduler: the logged LRs after epoch 12 follow a fresh scheduler, not the saved one."""
    hparams = dict(mode="min", factor=0.5, patience=2, cooldown=2)
    ckpt = load("forgot_scheduler.pt")
    sd = ckpt["lr_scheduler"]
    assert ckpt["epoch"] == 12 and sd["last_epoch"] == 12
    _, epochs, val, lrs = read_log("forgot_scheduler.csv")
    assert epochs == list(range(1, 31))
    assert sd["_last_lr"][0] < lrs[0][0]  # already reduced when saved
    assert sd["num_bad_epochs"] > 0 or sd["cooldown_counter"] > 0  # and mid-way to the next decision
    _, state_a = replay(val[:12], lrs[0], **hparams)
    assert_same(state_a, sd, "lr_scheduler")
    fresh, _ = replay(val[12:], sd["_last_lr"], **hparams)
    assert fresh == lrs[12:]
    restored, _ = replay(val[12:], sd["_last_lr"], state=sd, **hparams)
    assert restored != lrs[12:]


def test_two_groups_story() -> None:
    """two_groups: the head group stops at its min_lr while the backbone group keeps being reduced."""
    ckpt = load("two_groups.pt")
    sd = ckpt["scheduler"]
    assert ckpt["epoch"] == 25 and sd["last_epoch"] == 25
    assert len(sd["min_lrs"]) == 2 and len(ckpt["optimizer"]["param_groups"]) == 2
    assert (sd["patience"], sd["factor"]) == (1, 0.5)
    header, epochs, val, lrs = read_log("two_groups.csv")
    assert header == ["epoch", "train_loss", "val_loss", "lr_0", "lr_1"] and epochs == list(range(1, 31))
    used, _ = replay(val, lrs[0], mode="min", factor=0.5, patience=1, min_lr=sd["min_lrs"])
    assert used == lrs
    _, state = replay(val[:25], lrs[0], mode="min", factor=0.5, patience=1, min_lr=sd["min_lrs"])
    assert_same(state, sd, "scheduler")
    floor = sd["min_lrs"][1]
    assert lrs[-1][1] == floor and lrs[0][1] > floor
    head_done = max(changes(lrs, epochs, 1))
    assert [e for e in changes(lrs, epochs, 0) if e > head_done]  # reductions continue for group 0 only
