"""The uncertain-evidence replay against real torch: exact inputs give torch's state; rounded inputs keep it.

With exact metrics and a known start there is one world per step and it must be torch's state bit for
bit. With a log rounded to a few decimals the true state (torch stepping the unrounded values) must always
be among the surviving worlds, so "determined" never means "wrong".
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_replay import scenarios
from torch_oracle import make_scheduler, same, same_tuple, snapshot

from plateau_forensics.precision import column_precision
from plateau_forensics.state import PlateauConfig, from_state_dict
from plateau_forensics.worlds import Anchor, Op, fresh_world, simulate, unknown_worlds


def ops_for(cfg: PlateauConfig, values, intervals, lrs) -> list[Op]:
    """One op per metric, the first starting from a fresh scheduler over ``lrs``."""
    start = fresh_world(cfg, lrs, len(lrs))
    out = []
    for i, (v, (lo, hi)) in enumerate(zip(values, intervals, strict=True)):
        init = (lambda _p, w=start: [(w, -1)]) if i == 0 else None
        out.append(Op(i, v, lo, hi, i - 1, label=i + 1, init=init))
    return out


class TestExact:
    """Exact evidence: one world per step, equal to torch's state."""

    @settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(scenarios())
    def test_one_world_equal_to_torch(self, sc: dict) -> None:
        """Every step of an exact replay has a single determined world whose every field is torch's."""
        kwargs, metrics, lrs = sc["kwargs"], sc["metrics"], sc["lrs"]
        cfg = PlateauConfig(**kwargs)
        opt, sched = make_scheduler(lrs, kwargs)
        sim = simulate(cfg, ops_for(cfg, metrics, [(m, m) for m in metrics], lrs))
        for i, m in enumerate(metrics):
            try:
                sched.step(m)
            except RuntimeError:
                assert i in sim.errors
                break
            snap = snapshot(opt, sched)
            w = sim.determined(i)
            assert w is not None and len(sim.after[i]) == 1, f"step {i}"
            assert same(w.best_lo, snap["best"]) and same(w.best_hi, snap["best"]), f"step {i}"
            assert (w.nb, w.cd) == (snap["num_bad_epochs"], snap["cooldown_counter"]), f"step {i}"
            assert same_tuple(w.lrs, snap["lr"]), f"step {i}"


def _walk(start: float, steps: list[float]) -> list[float]:
    out, x = [], start
    for f in steps:
        x *= f
        out.append(x)
    return out


class TestRounded:
    """A rounded log: the truth always survives, and determined states are the truth."""

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.lists(st.sampled_from([0.97, 1.0, 1.00004, 0.99996, 1.0002, 0.9998, 1.03]), min_size=1, max_size=40),
        st.integers(0, 3), st.integers(0, 2), st.sampled_from([1e-4, 1e-3, 0.0]), st.sampled_from(["rel", "abs"]),
        st.sampled_from([2, 3, 4, 6]), st.sampled_from(["min", "max"]),
    )
    def test_truth_among_the_worlds(self, walk, patience, cooldown, threshold, tmode, decimals, mode) -> None:
        """Torch stepping the unrounded values ends every step in a world the rounded log allows; where the
        simulation says the state is determined, it is torch's."""
        metrics = _walk(0.5, walk)
        kwargs = {"mode": mode, "factor": 0.5, "patience": patience, "cooldown": cooldown,
                  "threshold": threshold, "threshold_mode": tmode}
        cfg = PlateauConfig(**kwargs)
        texts = [f"{m:.{decimals}f}" for m in metrics]
        prec = column_precision(texts)
        printed = [float(t) for t in texts]
        intervals = [prec.interval(i, v) for i, v in enumerate(printed)]
        assert all(lo <= m <= hi for m, (lo, hi) in zip(metrics, intervals, strict=True))
        opt, sched = make_scheduler([0.1], kwargs)
        sim = simulate(cfg, ops_for(cfg, printed, intervals, [0.1]))
        for i, m in enumerate(metrics):
            sched.step(m)
            snap = snapshot(opt, sched)
            truth = (snap["num_bad_epochs"], snap["cooldown_counter"], snap["lr"])
            alive = sim.alive(i)
            assert any((w.nb, w.cd, w.lrs) == truth and w.best_lo <= snap["best"] <= w.best_hi for w in alive), i
            d = sim.determined(i)
            if d is not None:
                assert (d.nb, d.cd, d.lrs) == truth, i

    def test_undecidable_comparison_is_marked(self) -> None:
        """``0.4143`` against a best printed ``0.4143`` cannot be decided at 4 decimals: both outcomes remain."""
        cfg = PlateauConfig(patience=0, factor=0.5)
        prec = column_precision(["0.4143", "0.4143"])
        intervals = [prec.interval(i, 0.4143) for i in range(2)]
        sim = simulate(cfg, ops_for(cfg, [0.4143, 0.4143], intervals, [0.1]))
        assert sim.undecided == [False, True]
        assert sim.determined(1) is None
        assert {w.lrs for w in sim.alive(1)} == {(0.1,), (0.05,)}

    def test_lr_evidence_decides(self) -> None:
        """The logged lr of the next epoch removes the world it contradicts, so the step becomes determined."""
        cfg = PlateauConfig(patience=0, factor=0.5)
        prec = column_precision(["0.4143", "0.4143", "0.4000"])
        values = [0.4143, 0.4143, 0.4]
        intervals = [prec.interval(i, v) for i, v in enumerate(values)]
        ops = ops_for(cfg, values, intervals, [0.1])
        ops[2] = Op(2, 0.4, *intervals[2], 1, label=3, lr_in=((0.05, 0.05),))
        sim = simulate(cfg, ops)
        d = sim.determined(1)
        assert d is not None and d.lrs == (0.05,) and sim.external == []


class TestUnknownStart:
    """A log that starts mid-run: every state is possible until the evidence narrows it."""

    def test_checkpoint_anchor_fixes_the_state(self) -> None:
        """Unknown counters before the log; the checkpoint after row 3 pins them, and the rows after it are exact."""
        kwargs = {"patience": 2, "cooldown": 1, "factor": 0.5}
        cfg = PlateauConfig(**kwargs)
        history = [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0]
        opt, sched = make_scheduler([0.1], kwargs)
        snaps = []
        for m in history:
            sched.step(m)
            snaps.append(snapshot(opt, sched))
        seen = history[3:]  # the log starts after row 3
        worlds = unknown_worlds(cfg, [snaps[2]["lr"][0]], 1)
        ops = [Op(i, m, m, m, i - 1, label=i + 4, init=(lambda _p: [(w, -1) for w in worlds]) if i == 0 else None)
               for i, m in enumerate(seen)]
        _, checkpoint = from_state_dict(_state_after(history[:5], kwargs))
        sim = simulate(cfg, ops, anchor=Anchor(1, checkpoint, (snaps[4]["lr"][0],)))
        assert sim.anchor_mismatch == ()
        for i in range(1, len(seen)):
            w = sim.determined(i)
            snap = snaps[i + 3]
            assert w is not None and (w.nb, w.cd, w.lrs) == (snap["num_bad_epochs"], snap["cooldown_counter"],
                                                            snap["lr"]), i
            assert same(w.best_lo, snap["best"]), i


def _state_after(metrics: list[float], kwargs: dict) -> dict:
    opt, sched = make_scheduler([0.1], kwargs)
    for m in metrics:
        sched.step(m)
    return sched.state_dict()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_metrics_are_exact(value: float) -> None:
    """NaN and infinities are points, never intervals: a NaN is a bad epoch in every world."""
    prec = column_precision(["0.5000", "nan" if value != value else ("inf" if value > 0 else "-inf")])
    assert prec.interval(1, value)[0] == prec.interval(1, value)[1] or value != value
