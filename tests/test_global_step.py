"""A checkpoint's ``global_step`` pins how many epochs were trained, so a log that starts mid-run can still
tell a resume that lost a step from one that did not (issue 9).

Real runs: a real ``ReduceLROnPlateau`` stepped on a chosen metric sequence, a real ``torch.save`` of the
resume checkpoint (after the step, or before it: the resumed process then never takes that step) and of the
final one, and only the resumed process's log given. The truth is how the run was made; the tool is asked
which story it reads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from plateau_run import EPOCHS, METRICS, objects, resumed, state, train  # noqa: E402

import plateau_forensics as pf  # noqa: E402 - after importorskip
from plateau_forensics import stories  # noqa: E402

RESUME_AFTER, BATCHES = 11, 8


def _run(folder: Path, *, lost: bool, global_step: bool) -> tuple[Path, Path]:
    """Process 0 trains epochs 0..RESUME_AFTER and saves (before that epoch's step when ``lost``); process 1
    loads the checkpoint and trains to the end, logging each epoch's lr before its step."""
    opt, sched = objects()
    train(opt, sched, range(RESUME_AFTER))
    saved = state(opt, sched) if lost else None
    sched.step(METRICS[RESUME_AFTER])
    opt, sched = resumed(saved or state(opt, sched))
    log = folder / "log.csv"
    train(opt, sched, range(RESUME_AFTER + 1, EPOCHS), log=log)
    final = {"epoch": EPOCHS - 1, **state(opt, sched)}
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
