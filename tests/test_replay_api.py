"""``pf.replay``'s issue-11 arguments (with_schedulers, lr_dtypes, step_epochs, events) against live torch loops."""

from __future__ import annotations

import random
import warnings
from typing import Any

import pytest
import torch

import plateau_forensics as pf
from torch_oracle import make_scheduler, same, same_tuple

T = torch.optim.lr_scheduler


def plateau_truth(opt: torch.optim.Optimizer, sched: Any) -> tuple[Any, ...]:
    return (float(sched.best), sched.num_bad_epochs, sched.cooldown_counter, sched.last_epoch,
            tuple(float(g["lr"]) for g in opt.param_groups))


def replayed(s: pf.Step) -> tuple[Any, ...]:
    return (s.best, s.num_bad_epochs, s.cooldown_counter, s.last_epoch, tuple(float(v) for v in s.lr))


def assert_same_run(t: pf.Trace, truth: list[tuple[Any, ...]]) -> None:
    assert len(t) == len(truth)
    for i, (s, want) in enumerate(zip(t.steps, truth, strict=True)):
        got = replayed(s)
        assert same(got[0], want[0]) and got[1:4] == want[1:4] and same_tuple(got[4], want[4]), (i, got, want)


def metrics(n: int, rng: random.Random) -> list[float]:
    return [rng.choice([1.0, 0.9, 1.1, 0.95, float("nan"), 0.5 - 0.01 * i]) for i in range(n)]


@pytest.mark.parametrize("seed", range(8))
def test_with_schedulers_is_the_compound_loop(seed: int) -> None:
    """Plateau first, then StepLR / ExponentialLR / LinearLR built on the same optimizer; each epoch the
    plateau steps on the metric, then the others in list order: the lrs and the plateau's counters are torch's."""
    rng = random.Random(seed)
    kw = {"patience": rng.randint(0, 3), "factor": rng.choice([0.1, 0.5]), "cooldown": rng.randint(0, 2)}
    ms = metrics(30, rng)
    opt, sched = make_scheduler([0.1, 0.02], kw)
    others = [T.StepLR(opt, step_size=4, gamma=0.7), T.ExponentialLR(opt, gamma=0.97),
              T.LinearLR(opt, start_factor=0.5, total_iters=5)]
    truth = []
    for m in ms:
        opt.step()
        sched.step(m)
        for o in others:
            o.step()
        truth.append(plateau_truth(opt, sched))
    t = pf.replay(ms, pf.PlateauConfig(**kw), lrs=[0.1, 0.02], with_schedulers=[
        pf.schedules.StepLR(step_size=4, gamma=0.7), pf.schedules.ExponentialLR(gamma=0.97),
        pf.schedules.LinearLR(start_factor=0.5, total_iters=5)])
    # the plateau's step comes first each epoch: its counters are read after the whole epoch, as in torch
    got = [(s.best, s.num_bad_epochs, s.cooldown_counter, s.last_epoch) for s in t.steps]
    assert all(same(g[0], w[0]) and g[1:] == w[1:4] for g, w in zip(got, truth, strict=True))
    assert [tuple(v) for v in t.timeline.lrs[1:]] == [w[4] for w in truth]  # row 0: the constructors'


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_tensor_lrs_per_group(dtype: str) -> None:
    """A tensor lr in group 0 only: its lr is the dtype's nearest value (0.1 given), and torch rounds its
    reductions to the tensor's dtype."""
    ms = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": torch.tensor(0.1, dtype=getattr(torch, dtype))},
              {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.1}]
    opt = torch.optim.SGD(groups, lr=0.1)
    sched = T.ReduceLROnPlateau(opt, patience=1, factor=0.3)
    truth = []
    for m in ms:
        sched.step(m)
        truth.append(plateau_truth(opt, sched))
    t = pf.replay(ms, pf.PlateauConfig(patience=1, factor=0.3), lrs=[0.1, 0.1], lr_dtypes=[dtype, None])
    assert_same_run(t, truth)
    assert t.steps[-1].lr[0] != t.steps[-1].lr[1]  # the rounding shows


def test_step_epochs_set_last_epoch() -> None:
    """The deprecated step(metric, epoch): last_epoch jumps to the given epoch, as torch's does."""
    ms = [1.0, 0.9, 0.9, 0.9, 0.9, 0.8]
    given = [None, 10, None, 3, None, None]
    opt, sched = make_scheduler([0.1], {"patience": 1})
    truth = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m, e in zip(ms, given, strict=True):
            sched.step(m) if e is None else sched.step(m, e)
            truth.append(plateau_truth(opt, sched))
    t = pf.replay(ms, pf.PlateauConfig(patience=1), lrs=[0.1], step_epochs=given)
    assert_same_run(t, truth)
    assert [w[3] for w in truth] == [s.last_epoch for s in t.steps]


def test_add_param_group_mid_run() -> None:
    """A param group added before step 3 (and its min_lr appended): later reductions act on both groups."""
    ms = [1.0] * 12
    opt, sched = make_scheduler([0.1], {"patience": 1, "min_lr": 1e-3})
    truth = []
    for i, m in enumerate(ms):
        if i == 3:
            opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.05})
            sched.min_lrs.append(1e-4)
        sched.step(m)
        truth.append(plateau_truth(opt, sched))
    t = pf.replay(ms, pf.PlateauConfig(patience=1, min_lr=1e-3), lrs=[0.1],
                  events=[pf.AddParamGroup(at_step=3, lr=0.05, min_lr=1e-4)])
    assert t.error is None
    assert_same_run(t, truth)


def test_add_param_group_where_torch_raises() -> None:
    """With a per-group min_lr list, a group added without its min_lr: torch raises at the next reduction;
    the replay stops there and says what torch raises."""
    ms = [1.0] * 8
    opt, sched = make_scheduler([0.1], {"patience": 1, "min_lr": [1e-3]})
    done = 0
    with pytest.raises(RuntimeError) as raised:
        for i, m in enumerate(ms):
            if i == 3:
                opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.05})
            sched.step(m)
            done += 1
    t = pf.replay(ms, pf.PlateauConfig(patience=1, min_lr=(1e-3,)), lrs=[0.1],
                  events=[pf.AddParamGroup(at_step=3, lr=0.05)])
    assert len(t) == done
    assert "min_lrs" in str(raised.value)
    assert t.error is not None and "RuntimeError" in t.error and "min_lrs" in t.error


def test_plain_replay_is_still_the_engine_trace() -> None:
    """Without the new arguments ``pf.replay`` returns the plain ``Trace`` (no composition overhead)."""
    t = pf.replay([1.0, 1.1], pf.PlateauConfig(patience=0), lrs=[0.1])
    assert type(t) is pf.Trace
