"""The samples in ``sample_checkpoints/`` tell their stories: committed and freshly regenerated alike.

A regenerated sample is judged by what it means (the truth make_samples.py recorded from the live
scheduler, and what the tool says about it), never by comparing its numbers with the committed ones.
"""

from __future__ import annotations

import copy
import csv
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from fixture_truth import SAMPLES, Live, assert_tool_tells_the_truth, read_truth, regenerate  # noqa: E402
from torch.optim.lr_scheduler import ReduceLROnPlateau  # noqa: E402
from torch_oracle import assert_same  # noqa: E402 - after importorskip

NAMES = ["seed000", "clean", "forgot_scheduler", "two_groups"]
#: checkpoint -> (sample whose truth and log it belongs to, key of its scheduler state)
CHECKPOINTS = {
    "seed000.pt": ("seed000", "scheduler"),
    "clean.pt": ("clean", "scheduler_state_dict"),
    "forgot_scheduler.pt": ("forgot_scheduler", "lr_scheduler"),
    "two_groups.pt": ("two_groups", "scheduler"),
    "legacy_format.pt": ("clean", "scheduler_state_dict"),
}
FILES = sorted([*CHECKPOINTS, *(f"{n}.csv" for n in NAMES), *(f"{n}.truth.json" for n in NAMES)])


# ------------------------------------------------------------------------------------ the two folders


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh ``make_samples.py`` run (on this machine's CPU: its numbers may differ from the committed)."""
    return regenerate("make_samples.py", tmp_path_factory.mktemp("samples"))


@pytest.fixture(scope="module", params=["committed", "regenerated"])
def folder(request: pytest.FixtureRequest) -> Path:
    """The committed samples, then a regeneration: every test below holds for both."""
    return SAMPLES if request.param == "committed" else request.getfixturevalue("regenerated")


def load(name: str, folder: Path) -> dict:
    return torch.load(folder / name, weights_only=True)


def truth(folder: Path, name: str) -> dict:
    return read_truth(folder / f"{name}.truth.json")


def read_log(name: str, folder: Path) -> tuple[list[str], list[int], list[float], list[list[float]]]:
    """Return (header, epochs, val_losses, lrs per row) of a loss log, read with ``csv``."""
    with open(folder / name, newline="") as f:
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
    optimizer = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs, strict=False)])
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


# ------------------------------------------------------------------------------------ regeneration


def test_regeneration_writes_the_committed_files(regenerated: Path) -> None:
    """make_samples.py writes exactly the committed sample files (by name: their numbers may differ)."""
    assert sorted(p.name for p in regenerated.iterdir()) == FILES
    assert set(FILES) <= {p.name for p in SAMPLES.iterdir()}


# ------------------------------------------------------------------------------------ truth against the tool


@pytest.mark.parametrize("ckpt", sorted(CHECKPOINTS))
def test_tool_tells_the_recorded_truth(folder: Path, ckpt: str) -> None:
    """The tool's alignment, every replayed step and its findings agree with what the live run recorded."""
    name = CHECKPOINTS[ckpt][0]
    assert_tool_tells_the_truth(folder, truth(folder, name), ckpt, f"samples/{name}")


@pytest.mark.parametrize("name", NAMES)
def test_truth_is_the_logged_run(folder: Path, name: str) -> None:
    """The recorded rows are the CSV's rows (epoch, every group's lr); each step read its row's val_loss."""
    live = Live.of(truth(folder, name))
    _, epochs, val, lrs = read_log(f"{name}.csv", folder)
    assert [r.epoch for r in live.rows] == epochs
    assert [list(r.lr) for r in live.rows] == lrs
    assert [s.metric for s in live.steps] == [val[s.row] for s in live.steps]
    assert [s.row for s in live.steps] == list(range(len(epochs)))  # one step per row


@pytest.mark.parametrize("ckpt", sorted(CHECKPOINTS))
def test_checkpoint_holds_the_recorded_state(folder: Path, ckpt: str) -> None:
    """Each checkpoint file holds the state of the step the truth says it was saved after."""
    name, key = CHECKPOINTS[ckpt]
    live = Live.of(truth(folder, name))
    saved = live.checkpoint(ckpt)
    step = live.steps[saved.state_step]
    sd = load(ckpt, folder)[key]
    assert saved.saved == "after_step" and step.row == saved.row
    assert (sd["last_epoch"], sd["best"], sd["num_bad_epochs"], sd["cooldown_counter"]) == (
        step.last_epoch, step.best, step.num_bad_epochs, step.cooldown_counter)
    assert tuple(sd["_last_lr"]) == step.lr


# ------------------------------------------------------------------------------------ stories, from the truth


def test_seed000_story_from_truth(folder: Path) -> None:
    """seed000: a fresh scheduler from epoch 11 wrote the epoch-33 checkpoint, 10 steps behind the loop."""
    t = truth(folder, "seed000")
    live = Live.of(t)
    assert len(live.schedulers) == 2
    b = live.steps_of_scheduler(1)
    assert b[0].epoch == t["resume_epoch"] == 11
    fresh = {"last_epoch": 0, "best": float("inf"), "num_bad_epochs": 0, "cooldown_counter": 0}
    assert live.start(1) == fresh
    a_end = live.steps_of_scheduler(0)[-1]
    assert (a_end.last_epoch, a_end.epoch) == (10, 10)
    saved = live.steps[live.checkpoint("seed000.pt").state_step]
    assert (saved.epoch, saved.scheduler, saved.last_epoch) == (33, 1, 33 - 10)
    # After the checkpoint nothing improves, so reductions come every cooldown + patience + 1 = 6 epochs.
    late = [s for s in live.reductions() if s.epoch > 33]
    assert len(late) >= 3 and {b.epoch - a.epoch for a, b in zip(late, late[1:], strict=False)} == {6}
    assert {s.best for s in live.steps if s.epoch >= 33} == {saved.best}


def test_clean_story_from_truth(folder: Path) -> None:
    """clean: one scheduler for 30 epochs, saved after epoch 20's step, with at least two reductions."""
    live = Live.of(truth(folder, "clean"))
    assert len(live.schedulers) == 1 and len(live.steps) == 30
    for ckpt in ("clean.pt", "legacy_format.pt"):
        saved = live.checkpoint(ckpt)
        assert (saved.epoch, saved.saved, live.steps[saved.state_step].last_epoch) == (20, "after_step", 20)
    assert len(live.reductions()) >= 2


def test_forgot_scheduler_story_from_truth(folder: Path) -> None:
    """forgot_scheduler: run B's scheduler starts fresh mid-plateau, so its lrs leave the restored run's."""
    t = truth(folder, "forgot_scheduler")
    live = Live.of(t)
    saved = live.steps[live.checkpoint("forgot_scheduler.pt").state_step]
    assert saved.epoch == t["checkpoint_epoch"] == 12 and saved.lr[0] < t["setup"]["lr"]
    assert saved.num_bad_epochs > 0 or saved.cooldown_counter > 0  # mid-way to the next decision
    assert live.steps_of_scheduler(1)[0].epoch == t["resume_epoch"] == 13
    assert live.start(1)["best"] == float("inf") and live.start(1)["last_epoch"] == 0
    logged = [list(r.lr) for r in live.rows[12:]]
    cf = t["counterfactual"]
    assert cf["epochs"] == [r.epoch for r in live.rows[12:]]
    assert logged != cf["lr"], "the forgotten scheduler must change the lr story"
    first = next(e for e, a, b in zip(cf["epochs"], logged, cf["lr"], strict=False) if a != b)
    assert first == t["first_differing_epoch"]


def test_two_groups_story_from_truth(folder: Path) -> None:
    """two_groups: the head group stops at its min_lr floor while the backbone group keeps being reduced."""
    t = truth(folder, "two_groups")
    live = Live.of(t)
    floor = t["setup"]["scheduler"]["min_lr"][1]
    assert all(len(r.lr) == 2 for r in live.rows)
    assert live.rows[0].lr[1] > floor and live.rows[-1].lr[1] == floor
    head_done = max(live.lr_changes(1))
    assert [e for e in live.lr_changes(0) if e > head_done]  # reductions continue for group 0 only
    assert live.steps[live.checkpoint("two_groups.pt").state_step].epoch == 25


# ------------------------------------------------------------------------------ stories, replayed by torch


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_checkpoint_loads_weights_only_with_plateau_state(folder: Path, name: str) -> None:
    """Each checkpoint loads with weights_only=True; its plateau state matches its optimizer."""
    ckpt = load(name, folder)
    sd = ckpt[CHECKPOINTS[name][1]]
    assert {"best", "num_bad_epochs", "cooldown_counter", "last_epoch"} <= set(sd)
    optimizer = ckpt.get("optimizer", ckpt.get("optimizer_state_dict"))
    assert sd["_last_lr"] == [group["lr"] for group in optimizer["param_groups"]]


def test_seed000_story(folder: Path) -> None:
    """seed000: a fresh scheduler from loop epoch 11 explains last_epoch == 23 at the epoch-33 checkpoint."""
    hparams = dict(mode="min", factor=0.8, patience=2, cooldown=3)
    resume_epoch, save_epoch = 11, 33
    ckpt = load("seed000.pt", folder)
    sd = ckpt["scheduler"]
    assert ckpt["epoch"] == save_epoch
    assert sd["last_epoch"] == save_epoch - (resume_epoch - 1)
    assert (sd["patience"], sd["cooldown"], sd["factor"], sd["mode"]) == (2, 3, 0.8, "min")
    assert (sd["threshold"], sd["threshold_mode"]) == (1e-4, "rel")

    _, epochs, val, lrs = read_log("seed000.csv", folder)
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
    spacing = {b - a for a, b in zip(late, late[1:], strict=False)}
    assert spacing == {hparams["cooldown"] + hparams["patience"] + 1}


def test_clean_story(folder: Path) -> None:
    """clean: an uninterrupted run whose epoch-20 scheduler state is the replay of epochs 1..20."""
    hparams = dict(mode="min", factor=0.5, patience=3, cooldown=1, threshold=1e-3, threshold_mode="abs")
    ckpt = load("clean.pt", folder)
    keys = ["epoch", "model_state_dict", "optimizer_state_dict", "scheduler_state_dict", "val_loss"]
    assert list(ckpt) == keys
    assert ckpt["epoch"] == 20 and ckpt["scheduler_state_dict"]["last_epoch"] == 20
    _, epochs, val, lrs = read_log("clean.csv", folder)
    assert epochs == list(range(1, 31))
    used, _ = replay(val, lrs[0], **hparams)
    assert used == lrs and len(changes(lrs, epochs)) >= 2
    _, state = replay(val[:20], lrs[0], **hparams)
    assert_same(state, ckpt["scheduler_state_dict"], "scheduler")
    assert ckpt["val_loss"] == val[19]


def test_legacy_format_is_clean_in_the_old_serialization(folder: Path) -> None:
    """legacy_format.pt is a non-zip (legacy pickle) file with exactly clean.pt's content (one save)."""
    assert not zipfile.is_zipfile(folder / "legacy_format.pt")
    assert zipfile.is_zipfile(folder / "clean.pt")
    assert_same(load("legacy_format.pt", folder), load("clean.pt", folder))


def test_forgot_scheduler_story(folder: Path) -> None:
    """forgot_scheduler: the logged LRs after epoch 12 follow a fresh scheduler, not the saved one."""
    hparams = dict(mode="min", factor=0.5, patience=2, cooldown=2)
    ckpt = load("forgot_scheduler.pt", folder)
    sd = ckpt["lr_scheduler"]
    assert ckpt["epoch"] == 12 and sd["last_epoch"] == 12
    _, epochs, val, lrs = read_log("forgot_scheduler.csv", folder)
    assert epochs == list(range(1, 31))
    assert sd["_last_lr"][0] < lrs[0][0]  # already reduced when saved
    assert sd["num_bad_epochs"] > 0 or sd["cooldown_counter"] > 0  # and mid-way to the next decision
    _, state_a = replay(val[:12], lrs[0], **hparams)
    assert_same(state_a, sd, "lr_scheduler")
    fresh, _ = replay(val[12:], sd["_last_lr"], **hparams)
    assert fresh == lrs[12:]
    restored, _ = replay(val[12:], sd["_last_lr"], state=sd, **hparams)
    assert restored != lrs[12:]


def test_two_groups_story(folder: Path) -> None:
    """two_groups: the head group stops at its min_lr while the backbone group keeps being reduced."""
    ckpt = load("two_groups.pt", folder)
    sd = ckpt["scheduler"]
    assert ckpt["epoch"] == 25 and sd["last_epoch"] == 25
    assert len(sd["min_lrs"]) == 2 and len(ckpt["optimizer"]["param_groups"]) == 2
    assert (sd["patience"], sd["factor"]) == (1, 0.5)
    header, epochs, val, lrs = read_log("two_groups.csv", folder)
    assert header == ["epoch", "train_loss", "val_loss", "lr_0", "lr_1"] and epochs == list(range(1, 31))
    used, _ = replay(val, lrs[0], mode="min", factor=0.5, patience=1, min_lr=sd["min_lrs"])
    assert used == lrs
    _, state = replay(val[:25], lrs[0], mode="min", factor=0.5, patience=1, min_lr=sd["min_lrs"])
    assert_same(state, sd, "scheduler")
    floor = sd["min_lrs"][1]
    assert lrs[-1][1] == floor and lrs[0][1] > floor
    head_done = max(changes(lrs, epochs, 1))
    assert [e for e in changes(lrs, epochs, 0) if e > head_done]  # reductions continue for group 0 only
