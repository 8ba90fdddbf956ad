"""Another scheduler saved beside the plateau one explains the lr changes it made, judged on live torch runs.

Each run steps a real ReduceLROnPlateau and a second torch scheduler on one optimizer (the compound order of
PyTorch's tests: optimizer.step(), plateau.step(metric), other.step()), saves both states with torch.save, and
records the lr of every epoch and which scheduler changed it, from the live objects.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch

import plateau_forensics as pf

T = torch.optim.lr_scheduler


def run(
    tmp: Path,
    make_other: Any,
    *,
    save_at: int = 9,
    n: int = 30,
    lr_after: bool = False,
    seed: int = 1,
    log_other: Any = None,
) -> dict[str, Any]:
    """A real run; ``log_other`` (when given) is the scheduler whose lrs the log shows instead (another run)."""
    rng = random.Random(seed)
    metrics = [1.0 / (1 + i * 0.1) + rng.random() * 0.05 for i in range(n)]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    plateau = T.ReduceLROnPlateau(opt, patience=2, factor=0.5)
    other = make_other(opt)
    rows, states, other_changes = [], [], []
    for i, m in enumerate(metrics):
        before = opt.param_groups[0]["lr"]
        opt.step()
        plateau.step(m)
        mid = opt.param_groups[0]["lr"]
        other.step()
        after = opt.param_groups[0]["lr"]
        if after != mid:
            other_changes.append(i)
        rows.append((i, m, after if lr_after else before))
        states.append(
            (float(plateau.best), plateau.num_bad_epochs, plateau.cooldown_counter, plateau.last_epoch)
        )
        if i == save_at:
            torch.save(
                {
                    "epoch": i,
                    "optimizer": opt.state_dict(),
                    "scheduler": plateau.state_dict(),
                    "warmup_or_decay": other.state_dict(),
                },
                tmp / "ck.pt",
            )
    (tmp / "log.csv").write_text("epoch,val_loss,lr\n" + "".join(f"{e},{m!r},{lr!r}\n" for e, m, lr in rows))
    return {"states": states, "other_changes": other_changes}


CASES = {
    "steplr": lambda opt: T.StepLR(opt, step_size=8, gamma=0.5),
    "multistep": lambda opt: T.MultiStepLR(opt, milestones=[5, 12, 12, 20], gamma=0.5),
    "linear-warmup": lambda opt: T.LinearLR(opt, start_factor=0.1, total_iters=5),
    "exponential": lambda opt: T.ExponentialLR(opt, gamma=0.97),
    "cosine": lambda opt: T.CosineAnnealingLR(opt, T_max=12, eta_min=1e-3),
    "warm-restarts": lambda opt: T.CosineAnnealingWarmRestarts(opt, T_0=6, T_mult=2, eta_min=1e-3),
}


@pytest.mark.parametrize("lr_after", [False, True], ids=["lr-before", "lr-after"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_saved_scheduler_explains_the_whole_run(tmp_path: Path, case: str, lr_after: bool) -> None:
    """Rebuilt from its saved state and replayed from the first row: no external-lr-change, the changes it
    made at the epochs torch's scheduler made them, and the plateau's counters torch's at every step."""
    truth = run(tmp_path, CASES[case], lr_after=lr_after)
    t = pf.trace(tmp_path / "ck.pt", tmp_path / "log.csv")
    codes = [f.code for f in t.findings]
    assert "external-lr-change" not in codes and not t.verdict.ambiguous, (codes, t.verdict)
    assert t.verdict.story == (("lr-logged-after-step",) if lr_after else ())
    assert "scheduler-stepped-before-optimizer" not in codes
    (f,) = [f for f in t.findings if f.code == "another-scheduler"]
    made = sorted({c[0] for c in f.evidence["changes"]})
    assert made == truth["other_changes"]
    got = [(s.best, s.num_bad_epochs, s.cooldown_counter, s.last_epoch) for s in t.steps]
    assert got == truth["states"]


def _step_first_run(tmp: Path, make_other: Any, n: int = 30, save_at: int = 9) -> dict[str, Any]:
    """The other scheduler stepped at the start of each epoch, before optimizer.step() (torch warns); the lr
    logged is the one the epoch trains with; the plateau steps at the end."""
    rng = random.Random(3)
    metrics = [1.0 / (1 + i * 0.1) + rng.random() * 0.05 for i in range(n)]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    plateau = T.ReduceLROnPlateau(opt, patience=2, factor=0.5)
    other = make_other(opt)
    rows, states, reductions = [], [], 0
    for i, m in enumerate(metrics):
        if i == 0:
            with pytest.warns(UserWarning, match="before `optimizer.step"):
                other.step()
        else:
            other.step()
        rows.append((i, m, opt.param_groups[0]["lr"]))
        opt.step()
        before = opt.param_groups[0]["lr"]
        plateau.step(m)
        reductions += opt.param_groups[0]["lr"] != before
        states.append(
            (float(plateau.best), plateau.num_bad_epochs, plateau.cooldown_counter, plateau.last_epoch)
        )
        if i == save_at:
            torch.save(
                {
                    "epoch": i,
                    "optimizer": opt.state_dict(),
                    "scheduler": plateau.state_dict(),
                    "other": other.state_dict(),
                },
                tmp / "ck.pt",
            )
    (tmp / "log.csv").write_text("epoch,val_loss,lr\n" + "".join(f"{e},{m!r},{lr!r}\n" for e, m, lr in rows))
    return {"states": states, "reductions": reductions}


@pytest.mark.parametrize("case", ["steplr", "cosine", "linear-warmup"])
def test_a_scheduler_stepped_before_the_optimizer(tmp_path: Path, case: str) -> None:
    """Stepped before optimizer.step(): with plateau reductions in the run only that order explains the log:
    a warning naming it, no external-lr-change, the plateau's counters torch's at every step."""
    truth = _step_first_run(tmp_path, CASES[case])
    assert truth["reductions"] > 0  # what tells this order from the lr logged after the step
    t = pf.trace(tmp_path / "ck.pt", tmp_path / "log.csv")
    codes = {f.code: f.severity for f in t.findings}
    assert codes.get("scheduler-stepped-before-optimizer") == "warning", codes
    assert "external-lr-change" not in codes and "lr-logged-after-step" not in codes
    assert t.verdict.story == ("scheduler-stepped-before-optimizer",)
    got = [(s.best, s.num_bad_epochs, s.cooldown_counter, s.last_epoch) for s in t.steps]
    assert got == truth["states"]


def test_a_different_scheduler_in_the_log_is_not_explained(tmp_path: Path) -> None:
    """The checkpoint's StepLR (step 8) is not the one that wrote the log (step 5): the saved state does not
    match the replay at the checkpoint, so no another-scheduler claim; the lr changes stay unexplained."""
    run(tmp_path, lambda opt: T.StepLR(opt, step_size=5, gamma=0.5))
    log = (tmp_path / "log.csv").read_text()
    run(tmp_path, CASES["steplr"])  # the checkpoint from the step-8 run
    (tmp_path / "log.csv").write_text(log)
    t = pf.trace(tmp_path / "ck.pt", tmp_path / "log.csv")
    codes = {c for s in (t.verdict.story, *t.verdict.alternatives) for c in s}
    assert "another-scheduler" not in [f.code for f in t.findings]
    assert "external-lr-change" in codes


def test_onecycle_continued_after_the_checkpoint(tmp_path: Path) -> None:
    """OneCycleLR's state lacks its constructor's max_lr: only the rows after the checkpoint are replayed
    (restored from the saved state, with the optimizer groups' max_lr/initial_lr), and a note says so."""
    run(tmp_path, lambda opt: T.OneCycleLR(opt, max_lr=0.2, total_steps=40))
    t = pf.trace(tmp_path / "ck.pt", tmp_path / "log.csv")
    (note,) = [n for n in t.notes if "also holds OneCycleLR" in n]
    assert "reproduces all 20 logged lrs after the checkpoint" in note


def test_no_other_scheduler_leaves_the_stories_alone(tmp_path: Path) -> None:
    """A plain run with a hand-set lr change and only the plateau state saved: still external-lr-change."""
    truth = run(tmp_path, CASES["steplr"])
    ck = torch.load(tmp_path / "ck.pt", weights_only=True)
    del ck["warmup_or_decay"]
    torch.save(ck, tmp_path / "ck.pt")
    t = pf.trace(tmp_path / "ck.pt", tmp_path / "log.csv")
    assert truth["other_changes"]
    assert "external-lr-change" in {c for s in (t.verdict.story, *t.verdict.alternatives) for c in s}
