"""A log that starts right after the checkpoint it resumed from, with the lr logged after each step (issue 9):
what the resume did to the optimizer shows in the log's first lr against the checkpoint's.

Real runs: a real ``ReduceLROnPlateau`` stepped on a chosen metric sequence, a real ``torch.save`` of the
checkpoint the second process resumed from; only the second process's log is given, its lr read after each
``step()``. A resume that restored the optimizer, or one that set the lr to the value it already had, reads
the same as a clean resume, so the tool must not name a forgotten optimizer; a fresh optimizer (back at the
initial lr, above the checkpoint's) must be named.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from plateau_run import EPOCHS, LR, objects, resumed, state, train  # noqa: E402

import plateau_forensics as pf  # noqa: E402 - after importorskip

RESUME_AFTER = 16


def _run(folder: Path, *, fresh_optimizer: bool) -> tuple[Path, Path, float]:
    opt, sched = objects()
    train(opt, sched, range(RESUME_AFTER + 1))
    ckpt = folder / "ckpt.pt"
    torch.save({"epoch": RESUME_AFTER, **state(opt, sched)}, ckpt)
    saved = torch.load(ckpt, weights_only=True)
    opt, sched = resumed(saved, optimizer=not fresh_optimizer)
    log = folder / "log.csv"
    train(opt, sched, range(RESUME_AFTER + 1, EPOCHS), log=log, lr_after=True)
    return ckpt, log, saved["optimizer"]["param_groups"][0]["lr"]


def test_a_restored_optimizer_is_not_read_as_a_fresh_one(tmp_path: Path) -> None:
    ckpt, log, ck_lr = _run(tmp_path, fresh_optimizer=False)
    assert ck_lr < LR  # the run reduced before the checkpoint, so a fresh optimizer would show
    v = pf.trace(ckpt, log).verdict
    assert {"log-starts-mid-run", "lr-logged-after-step"} <= set(v.story)
    named = [set(v.story), *map(set, v.alternatives)]
    assert not any("optimizer-not-restored" in s or "lr-overwritten" in s for s in named), named


def test_a_fresh_optimizer_is_named(tmp_path: Path) -> None:
    """Its first step reduces the initial lr, so the first row (after that step) shows the checkpoint's lr:
    the fresh optimizer shows only in the counters' reading of that reduction (found with lr-after logs,
    where the tool had named a forgotten scheduler instead)."""
    ckpt, log, ck_lr = _run(tmp_path, fresh_optimizer=True)
    with log.open() as fh:
        first_lr = float(next(csv.DictReader(fh))["lr"])
    assert ck_lr < LR and first_lr < LR  # the first step reduced the fresh optimizer's lr
    v = pf.trace(ckpt, log).verdict
    assert "optimizer-not-restored" in v.story and "scheduler-not-restored" not in v.story, v.story


@pytest.mark.parametrize("lr_after", [False, True], ids=["lr-before", "lr-after"])
def test_steps_per_row_from_the_checkpoints_epoch(tmp_path: Path, lr_after: bool) -> None:
    """Two ``step()`` calls per epoch, the log starting right after an early checkpoint: only the checkpoint's
    ``last_epoch`` against its ``epoch`` says so (it holds fewer steps than the log has rows)."""
    resume_after = 5
    opt, sched = objects()
    train(opt, sched, range(resume_after + 1), k=2)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"epoch": resume_after, **state(opt, sched)}, ckpt)
    assert sched.state_dict()["last_epoch"] < EPOCHS - resume_after - 1  # fewer steps than logged rows
    log = tmp_path / "log.csv"
    train(opt, sched, range(resume_after + 1, EPOCHS), k=2, log=log, lr_after=lr_after)
    assert sched.state_dict()["last_epoch"] == 2 * EPOCHS  # the run really stepped twice per epoch
    v = pf.trace(ckpt, log).verdict
    assert "steps-per-row" in v.story, (v.story, v.alternatives)
    assert ("lr-logged-after-step" in v.story) is lr_after


def _mid_run_k2(folder: Path) -> tuple[Path, Path]:
    """Two ``step()`` calls per epoch; the final checkpoint and only the resumed process's log."""
    opt, sched = objects()
    train(opt, sched, range(RESUME_AFTER + 1), k=2)
    opt, sched = resumed(state(opt, sched))
    log = folder / "log.csv"
    train(opt, sched, range(RESUME_AFTER + 1, EPOCHS), k=2, log=log)
    ckpt = folder / "final.pt"
    torch.save({"epoch": EPOCHS - 1, **state(opt, sched)}, ckpt)
    assert sched.state_dict()["last_epoch"] == 2 * EPOCHS
    return ckpt, log


def test_steps_per_row_in_a_log_that_starts_mid_run(tmp_path: Path) -> None:
    """The checkpoint's ``last_epoch`` counts the epochs before the log too, so k comes from the
    checkpoint's epoch, not from the log's rows."""
    v = pf.trace(*_mid_run_k2(tmp_path)).verdict
    assert {"steps-per-row", "log-starts-mid-run"} <= set(v.story), (v.story, v.alternatives)


def test_steps_per_row_in_a_log_that_starts_mid_run_needs_no_lr_change(tmp_path: Path) -> None:
    """The plain k-per-row reading from an unknown state explains every lr; the per-batch (stale) one needs
    an lr change at the first row."""
    v = pf.trace(*_mid_run_k2(tmp_path)).verdict
    assert "external-lr-change" not in v.story
