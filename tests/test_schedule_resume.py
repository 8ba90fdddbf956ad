"""Resume findings for the other schedulers a checkpoint saves (``plateau_forensics.schedule_resume``).

Each scenario is a real torch loop: a real ``ReduceLROnPlateau`` and a real second scheduler on one SGD
optimizer, the mistake made the way a script makes it, the checkpoint written with ``torch.save`` and the log
as the script prints it. What torch itself does (raises at the next step, the live ``base_lrs``, ``T_cur``) is
recorded from the live objects and checked first, so each test is judged against torch, not against the tool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import plateau_forensics as pf  # noqa: E402

lrs_mod = torch.optim.lr_scheduler
METRICS = [1.0, 0.8, 0.7, 0.72, 0.71, 0.73, 0.69, 0.7, 0.71, 0.72, 0.68, 0.7, 0.71, 0.7, 0.69, 0.7]


def _opt(lr: float = 0.1) -> Any:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _write_log(folder: Path, rows: list[tuple[int, float, float]]) -> Path:
    path = folder / "log.csv"
    path.write_text("epoch,val_loss,lr\n" + "".join(f"{e},{m!r},{lr!r}\n" for e, m, lr in rows))
    return path


def _codes(t: Any) -> dict[str, str]:
    return {f.code: f.severity for f in t.findings}


def _epochs(opt: Any, plateau: Any, epochs: range, rows: list[tuple[int, float, float]], *after: Any
            ) -> None:
    """Train ``epochs`` (1-based) as the loop does: log the lr the epoch trains with, ``optimizer.step()``,
    ``plateau.step(metric)``, then each scheduler of ``after`` (after its own optimizer's step, if another)."""
    for e in epochs:
        rows.append((e, METRICS[e - 1], opt.param_groups[0]["lr"]))
        opt.step()
        plateau.step(METRICS[e - 1])
        for s in after:
            if s.optimizer is not opt:
                s.optimizer.step()
            s.step()


def _save(folder: Path, opt: Any, plateau: Any, **others: Any) -> Path:
    """``torch.save`` of the optimizer, the plateau scheduler and ``others`` by key, as ``ck.pt``."""
    path = folder / "ck.pt"
    state = {"optimizer": opt.state_dict(), "plateau": plateau.state_dict()}
    torch.save({**state, **{k: s.state_dict() for k, s in others.items()}}, path)
    return path


def _one_cycle_run(folder: Path, epochs: int, extended_by: int) -> tuple[Path, Path, bool]:
    """OneCycleLR over ``epochs`` per-epoch steps beside the plateau; the checkpoint at the end; a resume that
    extends the run by ``extended_by`` epochs (rows logged until torch raises)."""
    opt = _opt()
    plateau = lrs_mod.ReduceLROnPlateau(opt, patience=2)
    cycle = lrs_mod.OneCycleLR(opt, max_lr=0.1, total_steps=epochs)
    rows: list[tuple[int, float, float]] = []
    _epochs(opt, plateau, range(1, epochs + 1), rows, cycle)  # then last_epoch == total_steps: torch's most
    _save(folder, opt, plateau, cycle=cycle)
    raised = False
    if extended_by:
        ck = torch.load(folder / "ck.pt", weights_only=True)
        opt2 = _opt()
        opt2.load_state_dict(ck["optimizer"])
        plateau2 = lrs_mod.ReduceLROnPlateau(opt2, patience=2)
        plateau2.load_state_dict(ck["plateau"])
        cycle2 = lrs_mod.OneCycleLR(opt2, max_lr=0.1, total_steps=epochs + extended_by)
        cycle2.load_state_dict(ck["cycle"])  # the saved total_steps wins: the extension is lost
        for e in range(epochs + 1, epochs + extended_by + 1):
            rows.append((e, METRICS[e - 1], opt2.param_groups[0]["lr"]))
            opt2.step()
            plateau2.step(METRICS[e - 1])
            try:
                cycle2.step()
            except ValueError as exc:
                raised = "Tried to step" in str(exc)
                break
    return folder / "ck.pt", _write_log(folder, rows), raised


def test_one_cycle_exhausted_and_the_log_goes_on(tmp_path: Path) -> None:
    (tmp_path / "extended").mkdir()
    (tmp_path / "ended").mkdir()
    ck, log, raised = _one_cycle_run(tmp_path / "extended", 10, 3)
    assert raised  # torch: the loaded OneCycleLR cannot step past its saved total_steps
    assert (
        _codes(pf.trace(ck, log)).get("scheduler-will-raise") == "warning"
    )  # the log shows the resumed epoch
    ck, log, _ = _one_cycle_run(tmp_path / "ended", 10, 0)
    assert _codes(pf.trace(ck, log)).get("scheduler-will-raise") == "info"  # only a resume would raise


def test_one_cycle_with_steps_left_raises_nothing(tmp_path: Path) -> None:
    opt = _opt()
    plateau = lrs_mod.ReduceLROnPlateau(opt, patience=2)
    cycle = lrs_mod.OneCycleLR(opt, max_lr=0.1, total_steps=30)
    rows: list[tuple[int, float, float]] = []
    _epochs(opt, plateau, range(1, 11), rows, cycle)
    t = pf.trace(_save(tmp_path, opt, plateau, cycle=cycle), _write_log(tmp_path, rows))
    assert "scheduler-will-raise" not in _codes(t)


def _built_after_reduction(folder: Path, correct: bool) -> tuple[Path, Path, float]:
    """A first run with the plateau only (it reduces the lr); the resume adds a StepLR, built after loading the
    optimizer (base_lrs take the reduced lr) or, correctly, from the original lr."""
    opt = _opt()
    plateau = lrs_mod.ReduceLROnPlateau(opt, patience=1, factor=0.5)
    rows: list[tuple[int, float, float]] = []
    _epochs(opt, plateau, range(1, 9), rows)
    saved_opt, saved_plateau = opt.state_dict(), plateau.state_dict()
    opt2 = _opt()
    if correct:
        step = lrs_mod.StepLR(opt2, step_size=50, gamma=0.5)  # initial_lr = the original 0.1
        opt2.load_state_dict(saved_opt)
    else:
        opt2.load_state_dict(saved_opt)
        step = lrs_mod.StepLR(opt2, step_size=50, gamma=0.5)  # initial_lr = the reduced lr
    plateau2 = lrs_mod.ReduceLROnPlateau(opt2, patience=1, factor=0.5)
    plateau2.load_state_dict(saved_plateau)
    _epochs(opt2, plateau2, range(9, 13), rows, step)
    return _save(folder, opt2, plateau2, step=step), _write_log(folder, rows), step.base_lrs[0]


@pytest.mark.parametrize("correct", [False, True], ids=["built-after-loading", "built-first"])
def test_base_lrs_from_the_reduced_lr(tmp_path: Path, correct: bool) -> None:
    ck, log, base = _built_after_reduction(tmp_path, correct)
    assert (base < 0.1) == (not correct)  # torch: built after loading, base_lrs is the reduced lr
    t = pf.trace(ck, log)
    assert ("base-lrs-below-logged-lr" in _codes(t)) == (not correct)


@pytest.mark.parametrize("per_batch", [4, 1])
def test_a_scheduler_stepped_per_batch(tmp_path: Path, per_batch: int) -> None:
    opt = _opt()
    plateau = lrs_mod.ReduceLROnPlateau(opt, patience=2)
    cosine = lrs_mod.CosineAnnealingLR(opt, T_max=200)
    rows = []
    for e in range(1, 11):
        rows.append((e, METRICS[e - 1], opt.param_groups[0]["lr"]))
        for _ in range(per_batch):
            opt.step()
            cosine.step()
        plateau.step(METRICS[e - 1])
    t = pf.trace(_save(tmp_path, opt, plateau, cosine=cosine), _write_log(tmp_path, rows))
    got = [f for f in t.findings if f.code == "scheduler-steps-per-row"]
    if per_batch == 1:
        assert not got
    else:
        assert len(got) == 1 and got[0].evidence["k"] == cosine.last_epoch // plateau.last_epoch == per_batch


@pytest.mark.parametrize("restored", [False, True])
def test_warm_restarts_rebuilt_at_a_resume(tmp_path: Path, restored: bool) -> None:
    """Resumed after 7 epochs: with load_state_dict (clean) or rebuilt with last_epoch=6 (T_cur restarts
    from 6 with T_i = T_0, not where the cycle was)."""
    opt = _opt()
    plateau = lrs_mod.ReduceLROnPlateau(opt, patience=3)
    warm = lrs_mod.CosineAnnealingWarmRestarts(opt, T_0=3, T_mult=2)
    rows: list[tuple[int, float, float]] = []
    _epochs(opt, plateau, range(1, 8), rows, warm)
    saved = {"optimizer": opt.state_dict(), "plateau": plateau.state_dict(), "warm": warm.state_dict()}
    opt2 = _opt()
    opt2.load_state_dict(saved["optimizer"])
    plateau2 = lrs_mod.ReduceLROnPlateau(opt2, patience=3)
    plateau2.load_state_dict(saved["plateau"])
    if restored:
        warm2 = lrs_mod.CosineAnnealingWarmRestarts(opt2, T_0=3, T_mult=2)
        warm2.load_state_dict(saved["warm"])
    else:
        warm2 = lrs_mod.CosineAnnealingWarmRestarts(opt2, T_0=3, T_mult=2, last_epoch=warm.last_epoch - 1)
    _epochs(opt2, plateau2, range(8, 11), rows, warm2)
    ck = _save(tmp_path, opt2, plateau2, warm=warm2)
    fresh = lrs_mod.CosineAnnealingWarmRestarts(_opt(), T_0=3, T_mult=2)
    for _ in range(warm2.last_epoch):
        fresh.optimizer.step()
        fresh.step()
    assert ((fresh.T_cur, fresh.T_i) == (warm2.T_cur, warm2.T_i)) == restored  # torch's own objects
    t = pf.trace(ck, _write_log(tmp_path, rows))
    assert ("warm-restarts-t-cur-reset" in _codes(t)) == (not restored)


def test_optimizer_state_without_initial_lr(tmp_path: Path) -> None:
    """The StepLR state saved beside an optimizer it never ran on (its groups have no initial_lr): torch
    raises KeyError when a scheduler is built with last_epoch=N on that optimizer."""
    opt = _opt()
    plateau = lrs_mod.ReduceLROnPlateau(opt, patience=2)
    step = lrs_mod.StepLR(_opt(), step_size=3)
    rows: list[tuple[int, float, float]] = []
    _epochs(opt, plateau, range(1, 7), rows, step)
    ck = _save(tmp_path, opt, plateau, step=step)
    resumed = _opt()
    resumed.load_state_dict(torch.load(ck, weights_only=True)["optimizer"])
    with pytest.raises(KeyError, match="initial_lr"):
        lrs_mod.StepLR(resumed, step_size=3, last_epoch=step.last_epoch)
    t = pf.trace(ck, _write_log(tmp_path, rows))
    assert "initial-lr-missing" in _codes(t)


def test_a_clean_composed_run_has_none_of_these(tmp_path: Path) -> None:
    opt = _opt()
    plateau = lrs_mod.ReduceLROnPlateau(opt, patience=2)
    step = lrs_mod.StepLR(opt, step_size=4, gamma=0.5)
    rows: list[tuple[int, float, float]] = []
    _epochs(opt, plateau, range(1, 13), rows, step)
    t = pf.trace(_save(tmp_path, opt, plateau, step=step), _write_log(tmp_path, rows))
    ours = {
        "scheduler-will-raise",
        "base-lrs-below-logged-lr",
        "scheduler-steps-per-row",
        "warm-restarts-t-cur-reset",
        "initial-lr-missing",
    }
    assert not ours & set(_codes(t))
