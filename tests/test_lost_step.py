"""A run that saves its checkpoint before the epoch's ``scheduler.step()`` and resumes at the next epoch loses
that step (issue 9): the whole run in one log, the resume not visible in it, the checkpoint the one it resumed
from.

Real runs: a real ``ReduceLROnPlateau`` stepped on a chosen metric sequence, a real ``torch.save`` before the
resume epoch's step, a second process that loads it and goes on at the next epoch. Whether the lost step shows
at all is asked of real torch (the same run without the loss logs other lrs); where it shows, the tool must say
that the step was lost at this checkpoint, saved before its step, and nothing else: a lost step at a resume
the inputs do not show, with this checkpoint read as saved after its step, needs two save conventions in one
run. Where it does not show, no mistake may be named. Given only the resumed process's log with the lr
logged after each step, a first step that reduced shows the lr before the log as that lr / factor
(``worlds.undo_reduction``, checked against torch's own reduction in ``test_inferred_lrs``).
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


def _resumed_log_only(folder: Path, epoch: int, *, optimizer: bool = True) -> tuple[Path, Path, bool]:
    """Save before ``epoch``'s step, resume at ``epoch + 1`` logging the lr after each step, save the final
    checkpoint before the last epoch's step; only the resumed process's log is given. Also: whether the
    resumed process's first step reduced the lr."""
    opt, sched = objects()
    for e in range(epoch):
        sched.step(METRICS[e])
    opt, sched = resumed({"epoch": epoch, **state(opt, sched)}, optimizer=optimizer)
    rows, first_reduced = [], None
    ckpt = folder / "final.pt"
    for e in range(epoch + 1, EPOCHS):
        before = opt.param_groups[0]["lr"]
        if e == EPOCHS - 1:
            torch.save({"epoch": e, **state(opt, sched)}, ckpt)
        sched.step(METRICS[e])
        if first_reduced is None:
            first_reduced = opt.param_groups[0]["lr"] < before
        rows.append([e, repr(METRICS[e]), repr(opt.param_groups[0]["lr"])])
    log = folder / "log_1.csv"
    with log.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "val_loss", "lr"])
        w.writerows(rows)
    return ckpt, log, bool(first_reduced)


@pytest.mark.parametrize("optimizer", [True, False], ids=["optimizer-restored", "optimizer-not-restored"])
@pytest.mark.parametrize("epoch", [17, 21, 25])
def test_a_resumed_log_whose_first_step_reduced_reads_as_lr_after(tmp_path: Path, epoch: int,
                                                                   optimizer: bool) -> None:
    """The first row's lr is after a reduction, so the lr before the log is that lr / factor: a log that starts
    mid-run must allow it (the tool had read the lr as logged before the step and missed the run), for a
    resume that restored the optimizer and for one that started a fresh one (the stories compose)."""
    ckpt, log, first_reduced = _resumed_log_only(tmp_path, epoch, optimizer=optimizer)
    assert first_reduced
    v = pf.trace(ckpt, log).verdict
    truth = {"log-starts-mid-run", "lr-logged-after-step", "resume-skipped-step", "saved-before-step"}
    if not optimizer:
        truth.add("optimizer-not-restored")
    assert "lr-logged-after-step" in v.story, v.story
    assert truth in [set(v.story), *map(set, v.alternatives)], (v.story, v.alternatives)


def test_a_frame_of_a_trace_with_unknown_lrs(tmp_path: Path) -> None:
    """A hand edit of the lr (another writer: the optimizer's lr is not the scheduler's ``_last_lr``) and a log
    without an lr column: only the checkpoint's lr is known, and ``Trace.to_frame`` shows the others empty (it
    raised a TypeError on them)."""
    pytest.importorskip("pandas")
    opt, sched = objects()
    rows = []
    for e in range(EPOCHS):
        sched.step(METRICS[e])
        rows.append([e, repr(METRICS[e])])
    opt.param_groups[0]["lr"] *= 0.3  # code outside the scheduler, after its last step (its _last_lr differs)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"epoch": EPOCHS - 1, **state(opt, sched)}, ckpt)
    log = tmp_path / "log.csv"
    with log.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "val_loss"])
        w.writerows(rows)
    t = pf.trace(ckpt, log)
    assert t.lr_unknown  # when that writer acted before is not in the inputs
    df = t.to_frame()
    assert len(df) == len(t)
    assert [i for i in range(len(df)) if df["lr"].isna()[i]] == sorted(t.lr_unknown)
