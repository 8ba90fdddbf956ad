"""The replay engine against real torch: differential property tests, run-length tables, reasons."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch_oracle import make_scheduler, same, same_tuple, snapshot

from plateau_forensics.engine import Event, extend, run
from plateau_forensics.state import PlateauConfig, from_state_dict

# A small pool of values makes ties (threshold=0 -> bad epoch) and exact repeats frequent.
POOL = [0.0, -0.0, 1.0, 0.5, 0.4999, 0.49995, -1.0, -0.95, 2.0, 1e-9, 1e300]
metric_values = st.one_of(
    st.sampled_from(POOL),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.floats(min_value=-3, max_value=3),
)


@st.composite
def scenarios(draw: st.DrawFn) -> dict:
    """A random scheduler config, param groups, metric sequence and a resume point."""
    n_groups = draw(st.integers(1, 3))
    lrs = draw(st.lists(st.sampled_from([1.0, 0.5, 0.1, 0.05, 1e-3, 1e-7, 3e-8, 0.0]), min_size=n_groups,
                        max_size=n_groups))
    if draw(st.booleans()):
        min_lr = draw(st.sampled_from([0.0, 1e-3, 0.01, 0.2, 1e-9]))
    else:
        min_lr = draw(st.lists(st.sampled_from([0.0, 1e-3, 0.01, 0.3]), min_size=n_groups, max_size=n_groups))
    kwargs = {
        "mode": draw(st.sampled_from(["min", "max"])),
        "factor": draw(st.sampled_from([0.1, 0.5, 0.8, 0.999, 0.0, -0.5, 0.3333333333333333])),
        "patience": draw(st.integers(-1, 5)),
        "threshold": draw(st.sampled_from([0.0, 1e-4, 0.01, 0.1, 0.5, 1.0, 1.5])),
        "threshold_mode": draw(st.sampled_from(["rel", "abs"])),
        "cooldown": draw(st.integers(-1, 4)),
        "min_lr": min_lr,
        "eps": draw(st.sampled_from([0.0, 1e-8, 1e-3, -1e-3])),
    }
    metrics = draw(st.lists(metric_values, min_size=0, max_size=40))
    resume_at = draw(st.integers(0, len(metrics)))
    return {"lrs": lrs, "kwargs": kwargs, "metrics": metrics, "resume_at": resume_at}


def config_of(kwargs: dict) -> PlateauConfig:
    """The engine's config for torch constructor kwargs."""
    return PlateauConfig(**kwargs)


def assert_step_equals(trace_step, snap: dict, where: str) -> None:
    """Every field of a replayed step equals torch's after the same step."""
    assert trace_step.last_epoch == snap["last_epoch"], where
    assert same(trace_step.best, snap["best"]), where
    assert trace_step.num_bad_epochs == snap["num_bad_epochs"], where
    assert trace_step.cooldown_counter == snap["cooldown_counter"], where
    assert same_tuple(trace_step.lr, snap["lr"]), where
    assert same_tuple(trace_step.lr, snap["_last_lr"]), where


class TestDifferential:
    """The engine equals torch 2.13 on every field at every step."""

    @settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(scenarios())
    def test_fresh_replay_matches_torch(self, sc: dict) -> None:
        """A fresh replay matches a fresh torch scheduler step by step, NaN/inf/ties/suppression included."""
        opt, sched = make_scheduler(sc["lrs"], sc["kwargs"])
        trace = run(config_of(sc["kwargs"]), sc["metrics"], sc["lrs"])
        for i, m in enumerate(sc["metrics"]):
            sched.step(m)
            assert_step_equals(trace.steps[i], snapshot(opt, sched), f"step {i}")
        assert tuple(trace.final.min_lrs) == tuple(sched.min_lrs)

    @settings(max_examples=2000, deadline=None)
    @given(scenarios())
    def test_resume_from_state_dict_matches_torch(self, sc: dict) -> None:
        """Replaying from a mid-run ``state_dict()`` plus the optimizer lrs continues exactly like torch."""
        opt, sched = make_scheduler(sc["lrs"], sc["kwargs"])
        k = sc["resume_at"]
        for m in sc["metrics"][:k]:
            sched.step(m)
        config, state = from_state_dict(sched.state_dict())
        assert config == config_of(sc["kwargs"])
        lrs_now = tuple(float(g["lr"]) for g in opt.param_groups)
        trace = run(config, sc["metrics"][k:], lrs_now, state=state)
        for i, m in enumerate(sc["metrics"][k:]):
            sched.step(m)
            assert_step_equals(trace.steps[i], snapshot(opt, sched), f"step {k + i}")
        assert trace.to_state_dict().keys() == sched.state_dict().keys()

    @settings(max_examples=800, deadline=None)
    @given(scenarios(), st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]))
    def test_tensor_lrs_round_like_torch(self, sc: dict, dtype: torch.dtype) -> None:
        """Tensor lrs (torch >= 2.10) are rounded to their dtype on every reduction, as ``fill_`` does."""
        opt, sched = make_scheduler(sc["lrs"], sc["kwargs"], lr_dtype=dtype)
        start_lrs = tuple(float(g["lr"]) for g in opt.param_groups)
        name = str(dtype).removeprefix("torch.")
        trace = run(config_of(sc["kwargs"]), sc["metrics"], start_lrs, lr_dtypes=[name] * len(start_lrs))
        for i, m in enumerate(sc["metrics"]):
            sched.step(m)
            assert_step_equals(trace.steps[i], snapshot(opt, sched), f"step {i}")


# Run-length tables in torch's own test style: the patience arithmetic can be checked by eye
# (a reduction on bad epoch patience+1; cooldown c mutes the c steps after it). Each is also run through torch.
TABLES = [
    pytest.param(
        {"patience": 5}, [1.0] * 2 + [1.5] * 12, [0.1] * (1 + 5) + [0.1 * 0.1] * (1 + 5) + [0.1 * 0.1 * 0.1] * 2,
        id="patience5-reduce-on-6th-bad",
    ),
    pytest.param(
        {"patience": 2, "cooldown": 3, "factor": 0.8}, [1.0] + [2.0] * 12,
        [0.1] * (1 + 2) + [0.1 * 0.8] * (3 + 3) + [0.1 * 0.8 * 0.8] * 4,
        id="seed000-patience2-cooldown3",
    ),
    pytest.param(
        {"patience": 0, "min_lr": 0.05, "factor": 0.1}, [1.0] * 4, [0.1] + [0.05] * 3,
        id="floor-holds-lr",
    ),
    pytest.param(
        {"patience": 1, "mode": "max"}, [1.0, 2.0, 3.0, 3.0, 3.0, 4.0], [0.1] * 4 + [0.1 * 0.1] * 2,
        id="max-mode",
    ),
    pytest.param(
        {"patience": 1}, [1.0, math.nan, math.nan, 0.5, math.nan], [0.1] * 2 + [0.1 * 0.1] * 3,
        id="nan-is-bad",
    ),
]


@pytest.mark.parametrize(("kwargs", "metrics", "expected"), TABLES)
def test_run_length_tables(kwargs: dict, metrics: list[float], expected: list[float]) -> None:
    """The lr after each step follows the hand-derived run lengths, and torch agrees."""
    trace = run(PlateauConfig(**kwargs), metrics, [0.1])
    assert [s.lr[0] for s in trace.steps] == expected
    opt, sched = make_scheduler([0.1], kwargs)
    torch_lrs = []
    for m in metrics:
        sched.step(m)
        torch_lrs.append(opt.param_groups[0]["lr"])
    assert torch_lrs == expected


class TestReasons:
    """Each step says why, in the words of the seed's hand trace."""

    def test_reduction_line(self) -> None:
        """A reduction names the bar, the patience overflow, the lr change and the counter resets."""
        trace = run(PlateauConfig(patience=2, cooldown=3, factor=0.8), [0.5309, 0.54, 0.54, 0.5312], [0.000328])
        line = trace.steps[3].explain()
        assert line == (
            "4: bad (0.5312 >= 0.5308 needed) num_bad 2->3 > patience 2: lr 0.000328->0.0002624, "
            "cooldown 0->3, num_bad 3->0"
        )
        assert trace.steps[3].event is Event.REDUCED

    def test_cooldown_line(self) -> None:
        """A bad step during cooldown shows the increment being zeroed."""
        trace = run(PlateauConfig(patience=0, cooldown=2), [1.0, 2.0, 2.0], [0.1])
        assert trace.steps[2].reason == "bad (2 >= 0.9999 needed) num_bad 0->1, in cooldown: cooldown 2->1, num_bad 1->0"
        assert trace.steps[2].event is Event.COOLDOWN

    def test_suppressed_at_floor(self) -> None:
        """A reduction due at the floor is reported as suppressed, and still starts cooldown."""
        trace = run(PlateauConfig(patience=0, min_lr=0.1, cooldown=1), [1.0, 2.0], [0.1])
        step = trace.steps[1]
        assert step.event is Event.SUPPRESSED
        assert "reduction due but suppressed (lr 0.1 at min_lr 0.1)" in step.reason
        assert step.cooldown_counter == 1

    def test_suppressed_by_eps(self) -> None:
        """A reduction smaller than eps is reported as an eps suppression."""
        trace = run(PlateauConfig(patience=0, eps=1e-8), [1.0, 2.0], [1e-8])
        assert "<= eps 1e-08" in trace.steps[1].reason

    def test_nan_reason(self) -> None:
        """A NaN metric is a bad epoch and says so."""
        trace = run(PlateauConfig(patience=3), [1.0, math.nan], [0.1])
        assert trace.steps[1].reason.startswith("bad (nan is never better) num_bad 0->1")


class TestForecast:
    """The closed-form forecast equals what the engine does when fed nothing but bad epochs."""

    @settings(max_examples=300, deadline=None)
    @given(scenarios())
    def test_forecast_matches_bad_epochs(self, sc: dict) -> None:
        """Feeding NaN (never better) reduces exactly at the forecast step, to the forecast lrs."""
        cfg = config_of(sc["kwargs"])
        trace = run(cfg, sc["metrics"], sc["lrs"])
        fc = trace.forecast()
        extend(trace, [math.nan] * fc.steps_until_reduction)
        events = [s.event for s in trace.steps[len(sc["metrics"]):]]
        assert events[-1] in (Event.REDUCED, Event.SUPPRESSED)
        assert all(e not in (Event.REDUCED, Event.SUPPRESSED) for e in events[:-1])
        assert same_tuple(trace.lrs, fc.lr_to)
