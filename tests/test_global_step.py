"""A checkpoint's ``global_step`` pins how many epochs were trained, so a log that starts mid-run can still
tell a resume that lost a step from one that did not (issue 9).

Real runs: a real ``ReduceLROnPlateau`` stepped on a chosen metric sequence, a real ``torch.save`` of the
resume checkpoint (after the step, or before it: the resumed process then never takes that step) and of the
final one, and only the resumed process's log given. The truth is how the run was made; the tool is asked
which story it reads.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import plateau_forensics as pf  # noqa: E402 - after importorskip
from plateau_forensics import stories  # noqa: E402

EPOCHS, RESUME_AFTER, BATCHES = 30, 11, 8
# falling, then plateaus: the scheduler reduces a few times, before and after the resume
# full-precision values, as a real loss prints with repr (a fixed seed, not training output)
METRICS = [1.0 / (1 + e) for e in range(8)]
METRICS += [0.11 + 0.004 * random.Random(e).random() for e in range(8, EPOCHS)]


def _objects() -> tuple[object, object]:
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2, cooldown=1)
    return opt, sched


def _run(folder: Path, *, lost: bool, global_step: bool) -> tuple[Path, Path]:
    """Process 0 trains epochs 0..RESUME_AFTER and saves (before that epoch's step when ``lost``); process 1
    loads the checkpoint and trains to the end, logging each epoch's lr before its step."""
    opt, sched = _objects()
    saved = None
    for e in range(RESUME_AFTER + 1):
        if e == RESUME_AFTER and lost:
            saved = {"scheduler": sched.state_dict(), "optimizer": opt.state_dict()}
        sched.step(METRICS[e])
    if saved is None:
        saved = {"scheduler": sched.state_dict(), "optimizer": opt.state_dict()}
    opt, sched = _objects()
    sched.load_state_dict(saved["scheduler"])
    opt.load_state_dict(saved["optimizer"])
    log = folder / "log.csv"
    with log.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "val_loss", "lr"])
        for e in range(RESUME_AFTER + 1, EPOCHS):
            w.writerow([e, repr(METRICS[e]), repr(opt.param_groups[0]["lr"])])
            sched.step(METRICS[e])
    final = {"epoch": EPOCHS - 1, "scheduler": sched.state_dict(), "optimizer": opt.state_dict()}
    if global_step:
        final["global_step"] = EPOCHS * BATCHES
    ckpt = folder / "final.pt"
    torch.save(final, ckpt)
    return ckpt, log


def _named(verdict: stories.Verdict) -> list[set[str]]:
    return [set(verdict.story), *map(set, verdict.alternatives)]


@pytest.mark.parametrize("lost", [False, True], ids=["clean-resume", "lost-step"])
def test_global_step_tells_a_lost_step(tmp_path: Path, lost: bool) -> None:
    ckpt, log = _run(tmp_path, lost=lost, global_step=True)
    v = pf.trace(ckpt, log).verdict
    assert "log-starts-mid-run" in v.story
    assert ("resume-skipped-step" in v.story) is lost
    # no story the tool names reads the resume the other way
    assert all(("resume-skipped-step" in s) is lost for s in _named(v)), _named(v)


def test_without_global_step_a_lost_step_stays_open(tmp_path: Path) -> None:
    """The log does not say whether it counts epochs from 0 or 1: a lost step under one reading is none under
    the other, so both are named."""
    ckpt, log = _run(tmp_path, lost=True, global_step=False)
    named = _named(pf.trace(ckpt, log).verdict)
    assert any("resume-skipped-step" in s for s in named)
    assert any("resume-skipped-step" not in s for s in named)


def test_without_global_step_every_step_taken_is_decided(tmp_path: Path) -> None:
    """A last_epoch one above the last label is every epoch's step, labels from 0: no reading loses one."""
    ckpt, log = _run(tmp_path, lost=False, global_step=False)
    v = pf.trace(ckpt, log).verdict
    assert not any("resume-skipped-step" in s for s in _named(v)), _named(v)


def test_epochs_trained(tmp_path: Path) -> None:
    ckpt, _ = _run(tmp_path, lost=False, global_step=True)
    ck = pf.load_checkpoint(ckpt)
    assert stories.epochs_trained(ck) == EPOCHS  # epoch 29 counted from 0, 240 steps of 8
    for epoch, step, want in ((29, 29 * 8, 29), (29, 29 * 30, None), (29, 0, None), (29.5, 240, None)):
        saved = torch.load(ckpt, weights_only=True)
        saved.update(epoch=epoch, global_step=step)
        torch.save(saved, tmp_path / "x.pt")
        assert stories.epochs_trained(pf.load_checkpoint(tmp_path / "x.pt")) == want, (epoch, step)
