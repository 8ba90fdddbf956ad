"""Lrs worked back from the checkpoint when the log has no lr column: exact where shown, unknown where not.

Without an lr column the lrs before the checkpoint are inferred back from the optimizer's saved lr through the
replayed reductions. A reduction is ``max(lr * factor, min_lr)``, applied only when it changes the lr by more
than ``eps``: at the floor the lr before it is not one value, so it must be shown as unknown, and elsewhere
the inverse must be the float torch started from, not ``lr / factor`` (which can differ in the last bit).
The oracle is a real torch ``ReduceLROnPlateau`` whose lr is read after every step.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import plateau_forensics as pf  # noqa: E402
from plateau_forensics.worlds import undo_reduction  # noqa: E402


def _live(
    lr: float, factor: float, min_lr: float, patience: int, metrics: list[float], folder: Path
) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=factor, patience=patience, min_lr=min_lr)
    after = []
    for m in metrics:
        sched.step(m)
        after.append(opt.param_groups[0]["lr"])
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, folder / "ck.pt")
    (folder / "log.csv").write_text(
        "epoch,val_loss\n" + "".join(f"{i},{m!r}\n" for i, m in enumerate(metrics, 1))
    )
    return after


def test_the_floor_is_not_worked_back(tmp_path: Path) -> None:
    """lr 0.1, factor 0.5, floor 0.03, patience 0, a constant metric: 0.1, 0.05, 0.03, 0.03, ... The lrs before
    the floor was reached cannot be told from a checkpoint at 0.03 (0.05 or 0.06 both end there)."""
    live = _live(0.1, 0.5, 0.03, 0, [1.0] * 6, tmp_path)
    records = pf.trace(tmp_path / "ck.pt", tmp_path / "log.csv").to_records()
    shown = [r["lr"][0] if r["lr"] is not None else None for r in records]
    assert shown[-1] == live[-1]
    assert all(s is None or s == v for s, v in zip(shown, live, strict=True))
    assert shown[:2] == [None, None]  # not 0.24 / 0.12: the real lrs were 0.1 and 0.05


@settings(max_examples=int(os.environ.get("PF_LR_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lr=st.sampled_from([0.1, 0.01, 3e-4, 1.0, 0.7, 1e-3, 2e-7, 3e-8]),
    factor=st.sampled_from([0.1, 0.5, 0.3, 0.9, 0.2]),
    floor=st.sampled_from([0.0, 1e-4, 1e-3, 0.05]),
    patience=st.integers(0, 2),
    metrics=st.lists(st.sampled_from([1.0, 0.9, 0.8, 1.1, 0.5, math.inf, math.nan]), min_size=3, max_size=14),
)
def test_inferred_lrs_are_torch_lrs_or_unknown(
    tmp_path_factory: pytest.TempPathFactory,
    lr: float,
    factor: float,
    floor: float,
    patience: int,
    metrics: list[float],
) -> None:
    folder = tmp_path_factory.mktemp("run")
    live = _live(lr, factor, floor, patience, metrics, folder)
    records = pf.trace(folder / "ck.pt", folder / "log.csv").to_records()
    assert len(records) == len(live)
    for r, v in zip(records, live, strict=True):
        if r["lr"] is not None:
            assert r["lr"][0] == v, (r["epoch"], r["lr"], v)


@settings(max_examples=300, deadline=None)
@given(x=st.floats(1e-8, 10.0), factor=st.floats(0.01, 0.99), floor=st.sampled_from([0.0, 1e-6, 1e-3]))
def test_undo_reduction_inverts_torch_arithmetic(x: float, factor: float, floor: float) -> None:
    """Whatever ``undo_reduction`` returns, reducing it as torch does gives the lr back; when the reduction
    did not hit the floor it returns the start lr exactly (or None if another float gives the same)."""
    after = max(x * factor, floor)
    if x - after <= 1e-8:
        return  # torch would not have reduced
    got = undo_reduction((after,), factor, (floor,), 1e-8)
    if after <= floor:
        assert got is None
    elif got is not None:
        assert max(got[0] * factor, floor) == after and got[0] == x
