"""LRScheduler states found by shape in real ``torch.save`` files (builtin reader and ``--loader torch``),
with key paths, next to the plateau state; engines rebuilt from them continue exactly as the live torch
schedulers do."""

from __future__ import annotations

import warnings

import pytest
import torch
from test_schedules_oracle import (
    _build_torch,
    assert_same,
    assert_same_groups,
    our_step,
    plain,
    torch_optimizer,
)

from plateau_forensics import schedules as S
from plateau_forensics.loader import find_plateau_states, read_tree
from plateau_forensics.schedules.checkpoints import LAMBDA_KINDS, restore

KINDS = [
    ("StepLR", {"step_size": 3, "gamma": 0.5}),
    ("MultiStepLR", {"milestones": [2, 5, 5], "gamma": 0.5}),
    ("ConstantLR", {"factor": 0.5, "total_iters": 4}),
    ("LinearLR", {"start_factor": 0.1, "total_iters": 5}),
    ("ExponentialLR", {"gamma": 0.9}),
    ("PolynomialLR", {"total_iters": 9, "power": 2.0}),
    ("CosineAnnealingLR", {"T_max": 6, "eta_min": 1e-4}),
    ("CosineAnnealingWarmRestarts", {"T_0": 3, "T_mult": 2, "eta_min": 1e-5}),
    ("CyclicLR", {"base_lr": 5e-5, "max_lr": 1e-4, "step_size_up": 5, "mode": "exp_range", "gamma": 0.5}),
    ("OneCycleLR", {"max_lr": 0.1, "total_steps": 30, "three_phase": True}),
    ("LambdaLR", {"lr_lambda": "0.95 ** epoch"}),
    ("MultiplicativeLR", {"lr_lambda": "0.95"}),
    (
        "SequentialLR",
        {
            "schedulers": [
                ("LinearLR", {"start_factor": 0.1, "total_iters": 3}),
                ("CosineAnnealingLR", {"T_max": 10}),
            ],
            "milestones": [3],
        },
    ),
    (
        "ChainedScheduler",
        {
            "schedulers": [
                ("ConstantLR", {"factor": 0.5, "total_iters": 2}),
                ("ExponentialLR", {"gamma": 0.9}),
            ]
        },
    ),
]
IDS = [k for k, _ in KINDS]


def _train(desc, steps: int, lr_dtype=None):
    """A real optimizer, a ReduceLROnPlateau built first, then the scheduler; ``steps`` epochs of the compound
    loop."""
    opt = torch_optimizer([0.1, 0.01], [lr_dtype, lr_dtype])
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sched = _build_torch(desc, opt)
        for _ in range(steps):
            opt.step()
            plateau.step(1.0)
            sched.step()
    return opt, plateau, sched


@pytest.mark.parametrize("loader", ["builtin", "torch"])
@pytest.mark.parametrize("desc", KINDS, ids=IDS)
def test_found_by_shape_with_key_path(tmp_path, desc, loader) -> None:
    """A checkpoint dict with model, optimizer, plateau and scheduler states: the scheduler is found at its
    key path with its kind; the plateau state is the loader's (not listed here)."""
    opt, plateau, sched = _train(desc, 4)
    path = tmp_path / "ckpt.pt"
    torch.save(
        {
            "epoch": 4,
            "model": {"w": torch.zeros(2)},
            "optimizer": opt.state_dict(),
            "plateau": plateau.state_dict(),
            "warmup_or_schedule": sched.state_dict(),
        },
        path,
    )
    tree = read_tree(path, loader=loader)
    found = S.find_schedulers(tree)
    want = LAMBDA_KINDS if desc[0] in ("LambdaLR", "MultiplicativeLR") else desc[0]
    assert [(f.key_path, f.kind) for f in found] == [("warmup_or_schedule", want)]
    assert [p for p, _ in find_plateau_states(tree)] == ["plateau"]


def test_lightning_style_list_and_nested_children(tmp_path) -> None:
    """States in a list (Lightning's ``lr_schedulers``) keep their indices; a SequentialLR's children are
    listed only with ``nested=True``, under ``_schedulers[i]``."""
    opt, plateau, seq = _train(KINDS[12], 2)
    step = torch.optim.lr_scheduler.StepLR(opt, 2)
    path = tmp_path / "lightning.ckpt"
    torch.save({"lr_schedulers": [plateau.state_dict(), seq.state_dict(), step.state_dict()]}, path)
    tree = read_tree(path)
    assert [(f.key_path, f.kind) for f in S.find_schedulers(tree)] == [
        ("lr_schedulers[1]", "SequentialLR"),
        ("lr_schedulers[2]", "StepLR"),
    ]
    assert [(f.key_path, f.kind) for f in S.find_schedulers(tree, nested=True)] == [
        ("lr_schedulers[1]", "SequentialLR"),
        ("lr_schedulers[1]._schedulers[0]", "LinearLR"),
        ("lr_schedulers[1]._schedulers[1]", "CosineAnnealingLR"),
        ("lr_schedulers[2]", "StepLR"),
    ]


def test_pickled_scheduler_object_named_by_its_class(tmp_path) -> None:
    """``torch.save(scheduler)`` (the whole object, read without running it): the kind is its class's name."""
    opt, _, sched = _train(("CosineAnnealingWarmRestarts", {"T_0": 4}), 3)
    path = tmp_path / "whole.pt"
    torch.save({"sched": sched}, path)
    found = S.find_schedulers(read_tree(path))
    assert [(f.key_path, f.kind) for f in found] == [("sched", "CosineAnnealingWarmRestarts")]
    assert found[0].state["T_cur"] == 3


def test_tensor_lr_states_become_tensor_values(tmp_path) -> None:
    """A state saved with float32 tensor lrs reads back as TensorLR values with their dtype."""
    _, _, sched = _train(("StepLR", {"step_size": 2}), 3, lr_dtype="float32")
    path = tmp_path / "t.pt"
    torch.save(sched.state_dict(), path)
    (f,) = S.find_schedulers(read_tree(path))
    from plateau_forensics.schedules.checkpoints import plain as ours_plain

    state = ours_plain(f.state)
    assert state["_last_lr"] == [S.TensorLR(float(v), "float32") for v in sched._last_lr]


@pytest.mark.parametrize("loader", ["builtin", "torch"])
@pytest.mark.parametrize("desc", KINDS, ids=IDS)
def test_restored_engine_continues_like_torch(tmp_path, desc, loader) -> None:
    """An engine rebuilt from the saved state (and the saved optimizer's lrs) continues step for step as the
    live torch scheduler does, state_dict and lrs bit for bit."""
    topt, _, sched = _train(desc, 5)
    path = tmp_path / "ckpt.pt"
    torch.save({"optimizer": topt.state_dict(), "scheduler": sched.state_dict()}, path)
    tree = read_tree(path, loader=loader)
    (found,) = S.find_schedulers(tree)
    kind = desc[0] if found.kind == LAMBDA_KINDS else found.kind
    groups = tree["optimizer"]["param_groups"]
    mopt = S.Optimizer([g["lr"] for g in groups], momentum=0.9, initial_lrs=[g["initial_lr"] for g in groups])
    for g, saved in zip(mopt.param_groups, groups, strict=True):
        for key in ("max_lr", "min_lr", "max_momentum", "base_momentum", "momentum"):
            if key in saved:
                g[key] = saved[key]
    lam = desc[1].get("lr_lambda")
    if desc[0] == "SequentialLR" or desc[0] == "ChainedScheduler":
        lam = None
    ours = restore(kind, found.state, lr_lambda=lam).bind(mopt)
    assert mopt.lrs == tuple(g["lr"] for g in groups)  # loading touches no lr
    assert_same(ours.state_dict(), sched.state_dict(), "restored")
    for i in range(6):
        topt.step()
        mopt.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            sched.step()
        assert our_step(ours) is None
        assert_same(ours.state_dict(), sched.state_dict(), f"step {i}")
        assert_same_groups(mopt, topt, f"step {i}")


def test_lambda_without_its_function_says_so() -> None:
    """A LambdaLR state has ``lr_lambdas: [None]``: stepping a rebuilt one without an expression is a clear
    error."""
    mopt = S.Optimizer([0.1], initial_lrs=[0.1])
    saved = S.LambdaLR(lr_lambda="0.9 ** epoch").bind(S.Optimizer([0.1])).state_dict()
    assert saved["lr_lambdas"] == [None]
    s = restore("LambdaLR", saved).bind(mopt)
    with pytest.raises(S.ScheduleConfigError, match="not in the checkpoint"):
        s.step()
    with pytest.raises(S.ScheduleConfigError, match="same state"):
        restore(LAMBDA_KINDS, saved)


def test_plain_values_from_a_plain_state_dict() -> None:
    """find_schedulers also takes a live ``state_dict()`` (no file): plain dicts are trees too."""
    opt = torch_optimizer([0.1])
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [3, 6])
    found = S.find_schedulers({"a": {"b": sched.state_dict()}})
    assert [(f.key_path, f.kind) for f in found] == [("a.b", "MultiStepLR")]
    assert plain(found[0].state["milestones"]) == plain(sched.milestones)
