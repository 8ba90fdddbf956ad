"""The scheduler engines against real torch 2.13: every group's lr (and momentum) and ``state_dict()`` after
every step, for random configurations, param groups, tensor lrs, ``step(epoch)`` calls, resumes and
wrappers."""

from __future__ import annotations

import math
import os
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_schedules_oracle import (
    LAMBDAS,
    MULTIPLIERS,
    assert_same,
    assert_same_groups,
    build_ours,
    build_torch,
    order_warnings,
    our_optimizer,
    our_step,
    torch_optimizer,
    torch_step,
)

from plateau_forensics import schedules as S

FAST = settings(
    max_examples=int(os.environ.get("PF_SCHEDULE_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

gammas = st.floats(0.05, 1.0)
factors = st.floats(0.0, 1.0)


@st.composite
def leaf(draw: st.DrawFn, kinds: tuple[str, ...] | None = None) -> tuple[str, dict]:
    """A random configuration of one scheduler (torch's argument names)."""
    names = kinds or (
        "StepLR",
        "MultiStepLR",
        "ConstantLR",
        "LinearLR",
        "ExponentialLR",
        "PolynomialLR",
        "CosineAnnealingLR",
        "CosineAnnealingWarmRestarts",
        "CyclicLR",
        "OneCycleLR",
        "LambdaLR",
        "MultiplicativeLR",
    )
    name = draw(st.sampled_from(names))
    if name == "StepLR":
        kw = {"step_size": draw(st.integers(1, 6)), "gamma": draw(gammas)}
    elif name == "MultiStepLR":
        kw = {"milestones": draw(st.lists(st.integers(0, 14), max_size=4)), "gamma": draw(gammas)}
    elif name == "ConstantLR":
        kw = {"factor": draw(st.floats(0.01, 1.0)), "total_iters": draw(st.integers(0, 8))}
    elif name == "LinearLR":
        kw = {
            "start_factor": draw(st.floats(0.001, 1.0)),
            "end_factor": draw(factors),
            "total_iters": draw(st.integers(1, 8)),
        }
    elif name == "ExponentialLR":
        kw = {"gamma": draw(st.floats(0.5, 1.0))}
    elif name == "PolynomialLR":
        kw = {"total_iters": draw(st.integers(1, 10)), "power": draw(st.floats(0.1, 3.0))}
    elif name == "CosineAnnealingLR":
        kw = {"T_max": draw(st.integers(1, 10)), "eta_min": draw(st.sampled_from([0.0, 1e-5, 1e-3]))}
    elif name == "CosineAnnealingWarmRestarts":
        kw = {
            "T_0": draw(st.integers(1, 6)),
            "T_mult": draw(st.integers(1, 3)),
            "eta_min": draw(st.sampled_from([0.0, 1e-5])),
        }
    elif name == "CyclicLR":
        kw = {
            "base_lr": draw(st.floats(1e-5, 0.01)),
            "max_lr": draw(st.floats(0.01, 0.2)),
            "step_size_up": draw(st.integers(1, 6)),
            "step_size_down": draw(st.none() | st.integers(1, 6)),
            "mode": draw(st.sampled_from(["triangular", "triangular2", "exp_range"])),
            "gamma": draw(st.floats(0.5, 1.0)),
            "cycle_momentum": draw(st.booleans()),
        }
    elif name == "OneCycleLR":
        kw = {
            "max_lr": draw(st.floats(0.01, 1.0)),
            "total_steps": draw(st.integers(2, 30)),
            "pct_start": draw(st.floats(0.05, 0.95)),
            "anneal_strategy": draw(st.sampled_from(["cos", "linear"])),
            "three_phase": draw(st.booleans()),
            "div_factor": draw(st.sampled_from([25.0, 10.0])),
            "final_div_factor": draw(st.sampled_from([1e4, 100.0])),
            "cycle_momentum": draw(st.booleans()),
        }
    elif name == "LambdaLR":
        kw = {"lr_lambda": draw(st.sampled_from(sorted(LAMBDAS)))}
    else:
        kw = {"lr_lambda": draw(st.sampled_from(sorted(MULTIPLIERS)))}
    return name, kw


groups = st.lists(st.floats(1e-4, 1.0), min_size=1, max_size=3)
dtype = st.sampled_from([None, None, "float32", "float16", "bfloat16", "float64"])


def _compare_run(desc, lrs, dtypes, plan, adam=False, initial_lrs=None):
    """Build ``desc`` in torch and in the engines on matching optimizers, step both by ``plan``, compare each
    time."""
    topt = torch_optimizer(lrs, dtypes, adam=adam, initial_lrs=initial_lrs)
    mopt = our_optimizer(lrs, dtypes, adam=adam, initial_lrs=initial_lrs)
    warned: list[str] = []
    try:
        theirs = build_torch(desc, topt, warned)
    except (
        Exception
    ) as exc:  # torch refused the configuration: so must the engine, with the same exception type
        with pytest.raises((S.ScheduleConfigError, S.TorchRaises)) as info:
            build_ours(desc).bind(mopt)
        assert info.value.kind == type(exc).__name__, (exc, info.value)
        return
    ours = build_ours(desc).bind(mopt)
    assert_same(ours.state_dict(), theirs.state_dict(), "after construction")
    assert_same_groups(mopt, topt, "after construction")
    for i, epoch in enumerate(plan):
        topt.step()
        mopt.step()
        exc = torch_step(theirs, epoch, warned)
        mine = our_step(ours, epoch)
        assert order_warnings(warned) == sum("before `optimizer.step()`" in m for _, m in mopt.warnings)
        if exc is not None:
            assert mine is not None, f"step {i}: torch raised {exc!r}, the engine did not"
            assert mine.kind == type(exc).__name__, (exc, mine)
            return
        assert mine is None, f"step {i}: the engine raised {mine}, torch did not"
        assert_same(ours.state_dict(), theirs.state_dict(), f"after step {i} ({epoch=})")
        assert_same_groups(mopt, topt, f"after step {i} ({epoch=})")
        assert_same(ours.get_last_lr(), theirs.get_last_lr(), f"get_last_lr after step {i}")


plans = st.lists(st.none(), min_size=0, max_size=40)


@FAST
@given(leaf(), groups, st.data(), plans, st.booleans())
def test_step_matches_torch(desc, lrs, data, plan, adam) -> None:
    """``step()`` (the chainable formula) gives torch's lrs, momenta and state_dict after every step."""
    dtypes = [data.draw(dtype) for _ in lrs]
    _compare_run(desc, lrs, dtypes, plan, adam=adam)


@FAST
@given(
    leaf(
        (
            "StepLR",
            "MultiStepLR",
            "ConstantLR",
            "LinearLR",
            "ExponentialLR",
            "PolynomialLR",
            "CosineAnnealingLR",
            "CosineAnnealingWarmRestarts",
            "LambdaLR",
            "CyclicLR",
            "OneCycleLR",
        )
    ),
    groups,
    st.lists(st.none() | st.integers(0, 20), max_size=25),
)
def test_step_epoch_matches_torch(desc, lrs, plan) -> None:
    """The deprecated ``step(epoch)`` (the closed form where torch has one) mixed with ``step()`` matches
    torch."""
    _compare_run(desc, lrs, None, plan)


@FAST
@given(
    st.integers(1, 6),
    st.integers(1, 3),
    groups,
    st.lists(st.floats(0, 40, allow_nan=False).map(lambda x: round(x, 2)), max_size=25),
)
def test_warm_restarts_fractional_epochs(t0, t_mult, lrs, epochs) -> None:
    """CosineAnnealingWarmRestarts stepped with fractional epochs (per batch) matches torch, T_cur and T_i
    included."""
    _compare_run(
        ("CosineAnnealingWarmRestarts", {"T_0": t0, "T_mult": t_mult, "eta_min": 1e-6}), lrs, None, epochs
    )


@st.composite
def wrapper(draw: st.DrawFn) -> tuple[str, dict]:
    """A SequentialLR or ChainedScheduler of 1-3 random children (sometimes nested one level)."""
    children = draw(st.lists(leaf() | st.deferred(lambda: _nested()), min_size=1, max_size=3))
    if draw(st.booleans()):
        milestones = sorted(
            draw(st.lists(st.integers(0, 15), min_size=len(children) - 1, max_size=len(children) - 1))
        )
        return "SequentialLR", {"schedulers": children, "milestones": milestones}
    return "ChainedScheduler", {"schedulers": children}


@st.composite
def _nested(draw: st.DrawFn) -> tuple[str, dict]:
    kids = draw(st.lists(leaf(), min_size=1, max_size=2))
    if draw(st.booleans()):
        return "ChainedScheduler", {"schedulers": kids}
    return "SequentialLR", {
        "schedulers": kids,
        "milestones": sorted(
            draw(st.lists(st.integers(0, 10), min_size=len(kids) - 1, max_size=len(kids) - 1))
        ),
    }


@FAST
@given(wrapper(), groups, plans)
def test_sequential_and_chained_match_torch(desc, lrs, plan) -> None:
    """SequentialLR and ChainedScheduler (children built first, in order; nested too) match torch at every
    step."""
    _compare_run(desc, lrs, None, plan)


@FAST
@given(leaf(), groups, st.integers(0, 12), plans, st.booleans())
def test_resume_with_last_epoch(desc, lrs, last_epoch, plan, has_initial) -> None:
    """A scheduler built with ``last_epoch=N``: torch's KeyError without ``initial_lr`` in the groups, else
    its lrs."""
    name, kw = desc
    desc = (name, {**kw, "last_epoch": last_epoch})
    initial = [lr * 2 for lr in lrs] if has_initial else None
    _compare_run(desc, lrs, None, plan, initial_lrs=initial)


def test_missing_initial_lr_is_torchs_key_error() -> None:
    """Resuming with ``last_epoch=5`` on an optimizer without ``initial_lr`` raises torch's KeyError,
    named."""
    with pytest.raises(S.TorchRaises) as info:
        S.StepLR(step_size=2, last_epoch=5).bind(S.Optimizer([0.1]))
    assert info.value.kind == "KeyError"
    assert "initial_lr" in str(info.value) and "param_groups[0]" in str(info.value)
    topt = torch_optimizer([0.1])
    with pytest.raises(KeyError):
        torch.optim.lr_scheduler.StepLR(topt, step_size=2, last_epoch=5)


def test_one_cycle_past_total_steps() -> None:
    """OneCycleLR stepped past ``total_steps`` raises torch's ValueError with torch's message."""
    s = S.OneCycleLR(max_lr=0.1, total_steps=3).bind(S.Optimizer([0.1]))
    for _ in range(3):
        s.step()
    with pytest.raises(S.TorchRaises) as info:
        s.step()
    assert info.value.kind == "ValueError"
    assert "Tried to step 4 times. The specified number of total steps is 3" in str(info.value)


@pytest.mark.parametrize(
    "name,kw",
    [
        ("CosineAnnealingLR", {"T_max": 7, "eta_min": 1e-4}),
        ("LinearLR", {"start_factor": 0.3, "total_iters": 9}),
        ("PolynomialLR", {"total_iters": 11, "power": 0.7}),
        ("ExponentialLR", {"gamma": 0.93}),
    ],
    ids=["cosine", "linear", "polynomial", "exponential"],
)
def test_chainable_and_closed_forms_differ_in_the_last_bits(name, kw) -> None:
    """torch's chainable and closed forms give different floats for the same epoch; the engines reproduce
    both."""

    def run(closed: bool, engine: bool) -> list[float]:
        opt = our_optimizer([0.1]) if engine else torch_optimizer([0.1])
        s = getattr(S, name)(**kw).bind(opt) if engine else getattr(torch.optim.lr_scheduler, name)(opt, **kw)
        out = []
        for e in range(1, 12):
            opt.step()
            (our_step if engine else torch_step)(s, e if closed else None)
            out.append(float(opt.param_groups[0]["lr"]))
        return out

    chain_t, closed_t = run(False, False), run(True, False)
    assert chain_t != closed_t  # torch itself: the two forms differ
    assert run(False, True) == chain_t
    assert run(True, True) == closed_t


@pytest.mark.parametrize(
    "desc,epochs",
    [
        (("MultiStepLR", {"milestones": [100, 210], "gamma": 0.1}), 300),
        (
            (
                "CyclicLR",
                {"base_lr": 5e-5, "max_lr": 1e-4, "step_size_up": 5, "mode": "exp_range", "gamma": 0.5},
            ),
            60,
        ),
        (("CosineAnnealingWarmRestarts", {"T_0": 10, "T_mult": 1, "eta_min": 1e-5}), 100),
        (("CosineAnnealingWarmRestarts", {"T_0": 10, "T_mult": 2}), 100),
        (("LambdaLR", {"lr_lambda": "0.95 ** epoch"}), 100),
        (("StepLR", {"step_size": 10, "gamma": 0.5}), 100),
        (("CosineAnnealingLR", {"T_max": 50, "eta_min": 0}), 200),
        (("OneCycleLR", {"max_lr": 0.01, "epochs": 10, "steps_per_epoch": 10}), 100),
    ],
    ids=[
        "multistep-seed001",
        "cyclic-seed002",
        "warm-restarts-seed002",
        "warm-restarts-tmult2",
        "lambda-seed002",
        "step-seed002",
        "cosine-seed002",
        "onecycle",
    ],
)
def test_seed_note_parameters_over_long_runs(desc, epochs) -> None:
    """The schedulers with the seed notes' parameters match torch over long runs (accumulated rounding
    included)."""
    _compare_run(desc, [1e-4] if desc[0] != "OneCycleLR" else [0.001], None, [None] * epochs)


def test_state_dict_loads_into_torch() -> None:
    """An engine's ``state_dict()`` loaded into a real torch scheduler continues exactly as the engine
    does."""
    kw = {"T_0": 3, "T_mult": 2, "eta_min": 1e-4}
    mopt, topt = our_optimizer([0.1, 0.3]), torch_optimizer([0.1, 0.3])
    ours = S.CosineAnnealingWarmRestarts(**kw).bind(mopt)
    for _ in range(5):
        mopt.step()
        ours.step()
    for g, lr in zip(topt.param_groups, mopt.lrs, strict=True):
        g["lr"] = lr
        g["initial_lr"] = 0.1 if lr is mopt.lrs[0] else 0.3
    theirs = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(topt, **kw)
    theirs.load_state_dict(ours.state_dict())
    for g, lr in zip(topt.param_groups, mopt.lrs, strict=True):
        g["lr"] = lr
    for i in range(8):
        mopt.step()
        topt.step()
        ours.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            theirs.step()
        assert_same(ours.state_dict(), theirs.state_dict(), f"step {i}")
        assert_same([g["lr"] for g in mopt.param_groups], [g["lr"] for g in topt.param_groups], f"lr {i}")


def test_unbound_scheduler_is_a_spec() -> None:
    """A scheduler without an optimizer is a spec: binding gives independent schedulers, stepping it is an
    error."""
    spec = S.ExponentialLR(gamma=0.5)
    a, b = spec.bind(S.Optimizer([1.0])), spec.bind(S.Optimizer([1.0]))
    a.step()
    assert a.get_last_lr() == [0.5] and b.get_last_lr() == [1.0]
    with pytest.raises(S.ScheduleConfigError, match="not attached"):
        spec.step()
    assert spec.label == "ExponentialLR(gamma=0.5)"


def test_step_before_optimizer_step_warns_like_torch() -> None:
    """``scheduler.step()`` before any ``optimizer.step()`` records torch's warning once, as torch warns
    once."""
    opt = S.Optimizer([0.1])
    s = S.StepLR(step_size=2, optimizer=opt)
    s.step()
    s.step()
    assert [m for _, m in opt.warnings if "before `optimizer.step()`" in m] != []
    assert len(opt.warnings) == 1
    topt = torch_optimizer([0.1])
    ts = torch.optim.lr_scheduler.StepLR(topt, step_size=2)
    with pytest.warns(UserWarning, match="before `optimizer.step"):
        ts.step()


@pytest.mark.parametrize("value", [0, 0.0, -1.0, math.inf])
def test_constant_factor_edges(value) -> None:
    """ConstantLR's factor at and past its bounds: torch's ValueError, or its ZeroDivisionError at
    total_iters."""
    _compare_run(("ConstantLR", {"factor": value, "total_iters": 2}), [0.1], None, [None] * 4)


@pytest.mark.parametrize("scale_mode", ["cycle", "iterations"])
def test_cyclic_custom_scale_fn_as_text(scale_mode) -> None:
    """CyclicLR with a custom ``scale_fn`` (text of ``x``; a lambda for torch) matches torch in both modes."""
    kw = {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 3, "scale_mode": scale_mode}
    mopt, topt = our_optimizer([0.1, 0.2]), torch_optimizer([0.1, 0.2])
    ours = S.CyclicLR(**kw, scale_fn="0.5 ** x").bind(mopt)
    theirs = torch.optim.lr_scheduler.CyclicLR(topt, **kw, scale_fn=lambda x: 0.5**x)
    for i in range(20):
        mopt.step()
        topt.step()
        ours.step()
        theirs.step()
        assert_same(ours.state_dict(), theirs.state_dict(), f"step {i}")
        assert_same_groups(mopt, topt, f"step {i}")


def test_one_lambda_per_group() -> None:
    """LambdaLR with one lambda per param group (a list) applies each to its group, as torch does."""
    texts = ["0.95 ** epoch", "epoch // 3"]
    mopt, topt = our_optimizer([0.1, 0.2]), torch_optimizer([0.1, 0.2])
    ours = S.LambdaLR(lr_lambda=texts).bind(mopt)
    theirs = torch.optim.lr_scheduler.LambdaLR(topt, lr_lambda=[LAMBDAS[t] for t in texts])
    for i in range(10):
        mopt.step()
        topt.step()
        ours.step()
        theirs.step()
        assert_same(ours.state_dict(), theirs.state_dict(), f"step {i}")
        assert_same_groups(mopt, topt, f"step {i}")
    with pytest.raises(S.ScheduleConfigError, match="Expected 2 lr_lambdas, but got 1"):
        S.LambdaLR(lr_lambda=texts[:1]).bind(our_optimizer([0.1, 0.2]))
