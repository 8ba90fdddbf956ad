"""A run that saves its checkpoint before the epoch's ``scheduler.step()`` and resumes at the next epoch loses
that step (issue 9): the whole run in one log, the resume not visible in it, the checkpoint the one it resumed
from.

Real runs: a real ``ReduceLROnPlateau`` stepped on a chosen metric sequence, a real ``torch.save`` before the
resume epoch's step, a second process that loads it and goes on at the next epoch. Whether the lost step shows
at all is asked of real torch (the same run without the loss logs other lrs); where it shows, the tool must say
that the step was lost at this checkpoint, saved before its step, and nothing else: a lost step at a resume
the inputs do not show, with this checkpoint read as saved after its step, needs two save conventions in one
run. Where it does not show, no mistake may be named.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from plateau_run import EPOCHS, METRICS, objects, resumed, state  # noqa: E402

import plateau_forensics as pf  # noqa: E402 - after importorskip


def _lrs(resume_epoch: int | None) -> list[float]:
    """The lr every epoch trained with, one process, the step of ``resume_epoch`` left out (None: none)."""
    opt, sched = objects()
    out = []
    for e in range(EPOCHS):
        out.append(opt.param_groups[0]["lr"])
        if e != resume_epoch:
            sched.step(METRICS[e])
    return out


def _run(folder: Path, epoch: int) -> tuple[Path, Path]:
    """Train to ``epoch``, save before its step, resume in a new process at ``epoch + 1``; one log."""
    opt, sched = objects()
    rows = []
    for e in range(epoch):
        rows.append([e, repr(METRICS[e]), repr(opt.param_groups[0]["lr"])])
        sched.step(METRICS[e])
    rows.append([epoch, repr(METRICS[epoch]), repr(opt.param_groups[0]["lr"])])
    ckpt = folder / "ckpt.pt"
    torch.save({"epoch": epoch, **state(opt, sched)}, ckpt)
    opt, sched = resumed(torch.load(ckpt, weights_only=True))
    for e in range(epoch + 1, EPOCHS):
        rows.append([e, repr(METRICS[e]), repr(opt.param_groups[0]["lr"])])
        sched.step(METRICS[e])
    log = folder / "log.csv"
    with log.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "val_loss", "lr"])
        w.writerows(rows)
    return ckpt, log


@pytest.mark.parametrize("epoch", [10, 11, 16, 19, 20, 23, 24])
def test_a_lost_step_is_placed_at_the_checkpoint_it_came_from(tmp_path: Path, epoch: int) -> None:
    ckpt, log = _run(tmp_path, epoch)
    with log.open() as fh:
        logged = [float(r["lr"]) for r in csv.DictReader(fh)]
    assert logged == _lrs(epoch) != _lrs(None)  # the run lost that step, and the lrs show it
    v = pf.trace(ckpt, log).verdict
    assert set(v.story) == {"resume-skipped-step", "saved-before-step"} and not v.alternatives, \
        (v.story, v.alternatives)


@pytest.mark.parametrize("epoch", [4, 12, 26])
def test_a_lost_step_nothing_shows_names_no_mistake(tmp_path: Path, epoch: int) -> None:
    ckpt, log = _run(tmp_path, epoch)
    assert _lrs(epoch) == _lrs(None)  # the same lrs with or without that step
    v = pf.trace(ckpt, log).verdict
    assert set(v.story) <= {"resume-skipped-step", "saved-before-step"}, v.story
