"""A resume that a printed log shows only by a line (``Resuming from ckpt.pt``) is placed there.

Real torch runs (a real ``ReduceLROnPlateau`` and SGD optimizer stepped on a fixed metric sequence; the truth is
read from the live scheduler after every step) resumed at epoch 20 with the scheduler restored or not, printed
the way Keras prints (4 decimals, the epoch on its own line) with the resume shown only by a ``Resuming from``
line: the epochs continue, no new file. The tool must tell the story and, from the resume on, every state the
truth holds (the printed metric stands for its rounding interval, so ``best`` is compared as printed).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import plateau_forensics as pf  # noqa: E402

# a metric that improves, plateaus and improves again: reductions before and after the resume
METRICS = [
    1.2564,
    0.982,
    0.6879,
    0.4382,
    0.3302,
    0.3498,
    0.3251,
    0.2999,
    0.293,
    0.2955,
    0.2873,
    0.2821,
    0.2933,
    0.2941,
    0.2945,
    0.2797,
    0.2756,
    0.2798,
    0.2807,
    0.2849,
    0.2828,
    0.2821,
    0.2806,
    0.2813,
    0.2816,
    0.2795,
    0.2809,
    0.283,
    0.2833,
    0.2832,
]
RESUME = 20  # the checkpoint is saved after epoch 20's step; the second process runs epochs 21..30


def _run(folder: Path, restore: bool, marker: bool) -> list[dict]:
    """Train (step the real scheduler) in two processes' worth of objects; write ckpt.pt and train.log."""
    kw = {"mode": "min", "factor": 0.5, "patience": 2, "cooldown": 2}
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.01)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kw)
    lines, truth = ["Training 8-16-1 MLP on cpu"], []
    for epoch, m in enumerate(METRICS, 1):
        if epoch == RESUME + 1:
            ck = torch.load(folder / "ckpt.pt", weights_only=True)
            p2 = torch.nn.Parameter(torch.zeros(1))
            opt = torch.optim.SGD([p2], lr=0.01)
            opt.load_state_dict(ck["optimizer"])
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kw)
            if restore:
                sched.load_state_dict(ck["lr_scheduler"])
            if marker:
                lines.append("Resuming from ckpt.pt")
        lr = opt.param_groups[0]["lr"]
        lines += [
            f"Epoch {epoch}/30",
            f"16/16 - 0s 2ms/step - loss: 0.5000 - val_loss: {m:.4f} - learning_rate: {lr:.4f}",
        ]
        sched.step(m)
        truth.append(
            {
                "best": sched.best,
                "num_bad_epochs": sched.num_bad_epochs,
                "cooldown_counter": sched.cooldown_counter,
                "lr": opt.param_groups[0]["lr"],
            }
        )
        if epoch == RESUME:
            torch.save(
                {"epoch": epoch, "optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict()},
                folder / "ckpt.pt",
            )
            lines.append("Saving checkpoint to ckpt.pt")
    (folder / "train.log").write_text("\n".join(lines) + "\n")
    return truth


@pytest.mark.parametrize("restore", [True, False], ids=["restored", "scheduler-not-restored"])
def test_a_resume_shown_by_a_line_is_placed_there(tmp_path: Path, restore: bool) -> None:
    truth = _run(tmp_path, restore, marker=True)
    t = pf.trace(tmp_path / "ckpt.pt", tmp_path / "train.log")
    want = () if restore else ("scheduler-not-restored",)
    assert tuple(t.verdict.story) == want and not t.verdict.alternatives
    warnings = {f.code for f in t.findings if f.severity == "warning"}
    assert ("scheduler-not-restored" in warnings) == (not restore)
    records = t.to_records()
    assert [r["epoch"] for r in records] == list(range(1, 31))
    for epoch in range(RESUME + 1, 31):
        rec, live = records[epoch - 1], truth[epoch - 1]
        assert rec["num_bad_epochs"] == live["num_bad_epochs"], epoch
        assert rec["cooldown_counter"] == live["cooldown_counter"], epoch
        assert rec["best"] is not None and f"{rec['best']:.4f}" == f"{live['best']:.4f}", epoch
        assert math.isclose(
            rec["lr"][0] if isinstance(rec["lr"], list) else rec["lr"], live["lr"], rel_tol=0, abs_tol=0
        ), epoch


def test_without_the_line_the_resume_point_is_open(tmp_path: Path) -> None:
    """The same forgotten scheduler without the line: the story still comes out, but where the silent resume
    happened is not decided by anything, so the rows it leaves open are unknown (no made-up state)."""
    _run(tmp_path, False, marker=False)
    t = pf.trace(tmp_path / "ckpt.pt", tmp_path / "train.log")
    assert "scheduler-not-restored" in {
        s for story in (t.verdict.story, *t.verdict.alternatives) for s in story
    }
    records = t.to_records()
    open_rows = [r["epoch"] for r in records if r["best"] is None]
    assert open_rows and all(e > RESUME for e in open_rows)  # the rows a resume anywhere there would explain


def test_rows_the_resume_point_leaves_open_keep_the_lr_every_reading_gives(tmp_path: Path) -> None:
    """Where the readings that place the silent resume elsewhere leave another best or counters but the same lr
    (no reduction between the places), the lr is still shown, and it is the live one."""
    truth = _run(tmp_path, False, marker=False)
    t = pf.trace(tmp_path / "ckpt.pt", tmp_path / "train.log")
    records = t.to_records()
    open_rows = [i for i, r in enumerate(records) if r["best"] is None]
    shown = [i for i in open_rows if r_lr(records[i]) is not None]
    assert shown  # some open rows keep their lr
    for i in shown:
        assert r_lr(records[i]) == truth[i]["lr"], records[i]["epoch"]


def r_lr(record: dict) -> float | None:
    lr = record["lr"]
    return lr[0] if isinstance(lr, list) else lr
