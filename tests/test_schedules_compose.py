"""Other schedulers stepping the same optimizer as a ReduceLROnPlateau, against PyTorch's compound loop:
PyTorch's five ``test_compound_reduce_lr_on_plateau*`` setups (with real assertions), param groups added
mid-run, tensor lrs, the deprecated ``step(metric, epoch)``, and random compositions."""

from __future__ import annotations

import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_schedules_engines import leaf
from test_schedules_oracle import assert_same, assert_same_groups, build_ours, floats_of, torch_compose

from plateau_forensics import schedules as S
from plateau_forensics.state import PlateauConfig, to_state_dict

FAST = settings(
    max_examples=int(os.environ.get("PF_SCHEDULE_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _config(kw: dict) -> PlateauConfig:
    return PlateauConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in kw.items()})


def _check(t: S.ComposedTrace, oracle: dict) -> None:
    """Every epoch torch completed: the plateau's state_dict, every group's lr, each other scheduler's
    state_dict."""
    cfg = t.config
    assert len(t.plateau_states) == len(oracle["plateau"])
    for i, (st_, theirs) in enumerate(zip(t.plateau_states, oracle["plateau"], strict=True)):
        assert_same(floats_of(to_state_dict(cfg, st_)), floats_of(theirs), f"plateau after epoch {i}")
    rows = t.timeline.lrs
    for i, theirs in enumerate(oracle["lrs"]):
        # row i + 1 is the lr epoch i + 1 trains with: a group added before that epoch is already in it
        assert_same(
            list(rows[i + 1][: len(theirs)]),
            [v[1] if isinstance(v, tuple) else float(v) for v in theirs],
            f"lrs after epoch {i}",
        )
    assert len(t.scheduler_states) >= len(oracle["others"])
    for i, theirs in enumerate(oracle["others"]):
        assert_same(list(t.scheduler_states[i]), theirs, f"other schedulers after epoch {i}")
    if oracle["error"] is None:
        assert t.error is None, t.error
        assert_same_groups(t.optimizer, oracle["optimizer"], "at the end")
    else:
        e, _, exc = oracle["error"]
        assert t.error is not None and t.error.startswith(f"torch raises {type(exc).__name__}"), (
            t.error,
            exc,
        )
        assert t.error.endswith(f"(epoch {e + 1})"), t.error


def _both(metrics, plateau, lrs, others, **kw):
    ours = S.replay_composed(
        metrics,
        _config(plateau),
        lrs=lrs,
        with_schedulers=[build_ours(d) for d in others],
        momentum=0.9,
        **kw,
    )
    events = [(ev.at_step, ev.lr, ev.min_lr, ev.lr_dtype) for ev in kw.get("events", ())]
    oracle = torch_compose(
        metrics,
        plateau,
        lrs,
        others,
        lr_dtypes=kw.get("lr_dtypes"),
        step_epochs=kw.get("step_epochs"),
        events=events,
    )
    _check(ours, oracle)
    return ours


# -- PyTorch's five compound setups: SGD with two groups, both lrs set to 0.5 (0.05 in the fourth) ----------
def _after(t: S.ComposedTrace) -> list[float]:
    """Group 0's lr after each epoch's steps."""
    return [row[0] for row in t.timeline.lrs[1:]]


def test_compound_plateau1_step_lr() -> None:
    """Metrics fall by 0.0167 > threshold 0.01 every epoch, so only StepLR(3, 0.1) moves the lr: 0.5 *
    0.1**((i+1)//3)."""
    metrics = [10 - i * 0.0167 for i in range(10)]
    plateau = {"threshold_mode": "abs", "mode": "min", "threshold": 0.01, "patience": 5, "cooldown": 5}
    t = _both(metrics, plateau, [0.5, 0.5], [("StepLR", {"gamma": 0.1, "step_size": 3})])
    assert [s.event.value for s in t.steps] == ["improved"] * 10
    assert _after(t) == pytest.approx([0.5 * 0.1 ** ((i + 1) // 3) for i in range(10)], rel=1e-12)


def _reductions(t: S.ComposedTrace) -> list[int]:
    return [i for i, s in enumerate(t.steps) if s.event.value == "reduced"]


def test_compound_plateau2_multistep() -> None:
    """Improvements need a 0.1 drop (7 epochs of 0.0165): the plateau cuts at epochs 6, 13, 20 and MultiStepLR
    after steps 3, 8, 12, each by 0.1."""
    metrics = [10 - i * 0.0165 for i in range(22)]
    plateau = {"patience": 5, "cooldown": 0, "threshold_mode": "abs", "mode": "min", "threshold": 0.1}
    t = _both(metrics, plateau, [0.5, 0.5], [("MultiStepLR", {"gamma": 0.1, "milestones": [3, 8, 12]})])
    assert _reductions(t) == [6, 13, 20]
    expected = [
        0.5 * 0.1 ** (sum(r <= i for r in (6, 13, 20)) + sum(m <= i + 1 for m in (3, 8, 12)))
        for i in range(22)
    ]
    assert _after(t) == pytest.approx(expected, rel=1e-12)


def test_compound_plateau3_exponential() -> None:
    """ExponentialLR(0.1) shrinks the lr so fast that both plateau reductions (epochs 8 and 19, max mode) are
    below eps=1e-8 and suppressed: the lr is 0.5 * 0.1**(i+1)."""
    metrics = [-0.8] * 2 + [-0.234] * 20
    plateau = {"mode": "max", "patience": 5, "cooldown": 5, "threshold_mode": "abs"}
    t = _both(metrics, plateau, [0.5, 0.5], [("ExponentialLR", {"gamma": 0.1})])
    assert [i for i, s in enumerate(t.steps) if s.event.value == "suppressed"] == [8, 19]
    assert _reductions(t) == []
    assert _after(t) == pytest.approx([0.5 * 0.1 ** (i + 1) for i in range(22)], rel=1e-12)


def test_compound_plateau4_cosine() -> None:
    """1.025**4 > 1.1, so every fourth epoch improves (max/rel 0.1, patience 3): no reduction, the lr is
    CosineAnnealingLR(T_max=10, eta_min=1e-10)'s."""
    metrics = [1.5 * (1.025**i) for i in range(10)]
    plateau = {"mode": "max", "patience": 3, "threshold_mode": "rel", "threshold": 0.1}
    t = _both(metrics, plateau, [0.05, 0.05], [("CosineAnnealingLR", {"T_max": 10, "eta_min": 1e-10})])
    assert _reductions(t) == []
    eta = 1e-10
    assert _after(t) == pytest.approx(
        [eta + (0.05 - eta) * (1 + math.cos(math.pi * (i + 1) / 10)) / 2 for i in range(10)],
        rel=1e-9,
        abs=1e-15,
    )


def test_compound_plateau5_linear_warmup() -> None:
    """A LinearLR warm-up (0.4 -> 1 over 4 steps) under the plateau cuts of setup 2 (epochs 6, 13, 20)."""
    metrics = [10 - i * 0.0165 for i in range(22)]
    plateau = {"patience": 5, "cooldown": 0, "threshold_mode": "abs", "mode": "min", "threshold": 0.1}
    t = _both(metrics, plateau, [0.5, 0.5], [("LinearLR", {"start_factor": 0.4, "total_iters": 4})])
    assert t.timeline.lrs[0] == pytest.approx((0.2, 0.2))  # the constructor's start_factor
    assert _reductions(t) == [6, 13, 20]
    expected = [
        0.5 * (0.4 + 0.15 * min(i + 1, 4)) * 0.1 ** sum(r <= i for r in (6, 13, 20)) for i in range(22)
    ]
    assert _after(t) == pytest.approx(expected, rel=1e-12)


# -- param groups added mid-run (PyTorch's test_add_param_group_*) -------------------------------------------
@pytest.mark.parametrize("min_lr,append", [(0.0, None), ([1e-5, 1e-4], 1e-6)], ids=["scalar", "list"])
def test_add_param_group_does_not_break_plateau(min_lr, append) -> None:
    """A group (lr 0.05) added before epoch 8: the plateau reduces every group at epochs 6 and 17 (the new one
    at 17)."""
    metrics = [1] * 7 + [0.6] + [0.5] * 12
    plateau = {
        "mode": "min",
        "threshold_mode": "rel",
        "threshold": 0.1,
        "patience": 5,
        "cooldown": 5,
        "min_lr": min_lr,
    }
    t = _both(metrics, plateau, [0.5, 0.5], [], events=[S.AddParamGroup(at_step=8, lr=0.05, min_lr=append)])
    assert t.error is None
    assert _reductions(t) == [6, 17]
    assert _after(t) == pytest.approx([0.5] * 6 + [0.05] * 11 + [0.005] * 3)
    assert [row[2] for row in t.timeline.lrs[9:]] == pytest.approx([0.05] * 9 + [0.005] * 3)


def test_add_param_group_errors_plateau() -> None:
    """A list min_lr and a group added without its floor: the first reduction raises torch's RuntimeError."""
    plateau = {
        "mode": "min",
        "threshold_mode": "rel",
        "threshold": 1e-5,
        "patience": 0,
        "cooldown": 0,
        "min_lr": [1e-5, 1e-4],
    }
    t = _both([1, 1.3, 1.4], plateau, [0.5, 0.5], [], events=[S.AddParamGroup(at_step=0, lr=0.05)])
    assert len(t) == 1 and t.error is not None and "RuntimeError" in t.error


def test_add_param_group_breaks_a_cosine_beside_it() -> None:
    """CosineAnnealingLR's chainable formula runs per group, but at step T_max + 1 it zips its base_lrs with
    the groups: a group added at epoch 4 makes torch raise ValueError at epoch 6, and the engine too."""
    t = _both(
        [1.0] * 8,
        {"patience": 10},
        [0.1],
        [("CosineAnnealingLR", {"T_max": 5})],
        events=[S.AddParamGroup(at_step=3, lr=0.05)],
    )
    assert t.error is not None and "ValueError" in t.error and t.error.endswith("(epoch 6)")
    assert len(t) == 6


def test_step_lr_keeps_working_after_add_param_group() -> None:
    """StepLR multiplies every group's current lr, so an added group is decayed too (torch does the same)."""
    t = _both(
        [1.0] * 8,
        {"patience": 10},
        [0.1],
        [("StepLR", {"step_size": 2})],
        events=[S.AddParamGroup(at_step=2, lr=0.05)],
    )
    assert t.error is None
    assert [row[1] for row in t.timeline.lrs[3:]] == pytest.approx(
        [0.05, 0.005, 0.005, 0.0005, 0.0005, 0.00005]
    )


# -- tensor lrs and step(metric, epoch) ----------------------------------------------------------------------
def test_tensor_lrs_per_group() -> None:
    """lr_dtypes=["float32", None]: group 0 is a float32 tensor (rounded by every writer), group 1 a float."""
    metrics = [10 - i * 0.0165 for i in range(22)]
    plateau = {"patience": 5, "threshold_mode": "abs", "threshold": 0.1}
    t = _both(
        metrics,
        plateau,
        [0.3, 0.3],
        [("CosineAnnealingLR", {"T_max": 9, "eta_min": 1e-4})],
        lr_dtypes=["float32", None],
    )
    assert t.optimizer.lr_dtypes == ("float32", None)
    assert any(a[0] != a[1] for a in t.timeline.lrs[1:])  # float32 rounding makes the groups differ


def test_deprecated_step_with_epoch() -> None:
    """``plateau.step(metric, epoch)`` sets last_epoch to the epoch given (0-based here), as torch does."""
    metrics = [1.0, 0.9, 0.95, 0.97, 0.99]
    t = _both(metrics, {"patience": 1}, [0.1], [], step_epochs=[0, 1, 2, 3, 4])
    assert [s.last_epoch for s in t.steps] == [0, 1, 2, 3, 4]
    assert t.final.last_epoch == 4


def test_warmup_then_plateau_alone() -> None:
    """The by-hand warm-up loop (``if epoch < 5: warmup.step() else: plateau.step(val)``) is expressible."""
    metrics = [1.0] * 5 + [0.9, 0.8, 0.85, 0.86, 0.87, 0.88]
    t = S.replay_composed(
        metrics,
        PlateauConfig(patience=1, factor=0.5),
        lrs=[0.1],
        with_schedulers=[S.Stepped(S.LinearLR(start_factor=0.1, total_iters=5), epochs=range(5))],
        plateau_epochs=range(5, 11),
    )
    lrs = [row[0] for row in t.timeline.lrs]
    assert lrs[0] == pytest.approx(0.01) and lrs[5] == pytest.approx(0.1)
    assert len(t) == 6 and t.epochs[0] == 6
    assert _reductions(t) == [3, 5]  # patience 1: two bad epochs after the best at 0.8, twice
    writers = [{c.writer for c in ch} for ch in t.timeline.changes]
    assert writers[1] == {"LinearLR(start_factor=0.1)"} and "ReduceLROnPlateau" in writers[9]


def test_per_batch_scheduler_beside_plateau() -> None:
    """A OneCycleLR stepped per batch (4 per epoch) beside a per-epoch plateau: timeline rows are batches."""
    t = S.replay_composed(
        [1.0, 0.9, 0.8],
        PlateauConfig(patience=1),
        lrs=[0.1],
        with_schedulers=[S.Stepped(S.OneCycleLR(max_lr=0.1, total_steps=12), per_epoch=4)],
    )
    assert t.error is None
    assert t.timeline.epochs[:5] == [1, 1.25, 1.5, 1.75, 2]
    assert len(t.timeline) == 13  # 12 batches, then the lr after the last step
    mopt = S.Optimizer([0.1])
    solo = S.OneCycleLR(max_lr=0.1, total_steps=12).bind(mopt)
    want = [mopt.lrs[0]]
    for _ in range(12):
        solo.step()
        want.append(mopt.lrs[0])
    assert [row[0] for row in t.timeline.lrs] == want


# -- random compositions -------------------------------------------------------------------------------------
metric = st.floats(-10, 10, allow_nan=False) | st.just(math.nan) | st.sampled_from([0.5, 1.0])


@st.composite
def plateau_kwargs(draw: st.DrawFn) -> dict:
    """A random ReduceLROnPlateau configuration (torch's arguments)."""
    kw = {
        "mode": draw(st.sampled_from(["min", "max"])),
        "factor": draw(st.sampled_from([0.1, 0.5, 0.8])),
        "patience": draw(st.integers(0, 3)),
        "threshold": draw(st.sampled_from([1e-4, 0.01, 0.1])),
        "threshold_mode": draw(st.sampled_from(["rel", "abs"])),
        "cooldown": draw(st.integers(0, 2)),
        "eps": draw(st.sampled_from([1e-8, 0.0])),
    }
    if draw(st.booleans()):
        kw["min_lr"] = draw(st.sampled_from([0.0, 1e-3]))
    return kw


@FAST
@given(
    plateau_kwargs(),
    st.lists(st.floats(1e-3, 1.0), min_size=1, max_size=2),
    st.lists(leaf(), max_size=2),
    st.lists(metric, max_size=25),
    st.data(),
)
def test_random_compositions_match_torch(plateau, lrs, others, metrics, data) -> None:
    """Random plateau configs with 0-2 other schedulers, metrics with NaN and ties, tensor lrs, added groups
    and step(metric, epoch): every epoch equals torch's compound loop."""
    dtypes = [data.draw(st.sampled_from([None, None, "float32", "float16"])) for _ in lrs]
    kw: dict = {"lr_dtypes": dtypes}
    if metrics and data.draw(st.booleans()):
        kw["events"] = [
            S.AddParamGroup(
                at_step=data.draw(st.integers(0, len(metrics) - 1)),
                lr=0.05,
                min_lr=data.draw(st.none() | st.just(1e-6)),
                lr_dtype=data.draw(st.sampled_from([None, "float32"])),
            )
        ]
        if isinstance(plateau.get("min_lr"), float) and data.draw(st.booleans()):
            plateau["min_lr"] = [plateau["min_lr"]] * len(lrs)
    if metrics and data.draw(st.booleans()):
        kw["step_epochs"] = [data.draw(st.none() | st.integers(0, 30)) for _ in metrics]
    try:
        _both(metrics, plateau, lrs, others, **kw)
    except (S.ScheduleConfigError, S.TorchRaises) as exc:
        # the engines refused to build the schedulers: torch's constructors must refuse them, the same way
        with pytest.raises(Exception) as theirs:
            torch_compose(metrics, plateau, lrs, others, lr_dtypes=dtypes)
        assert type(theirs.value).__name__ == exc.kind
