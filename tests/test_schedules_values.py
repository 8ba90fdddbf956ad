"""Tensor lrs: ``TensorLR`` arithmetic equals torch's 0-dim tensor arithmetic (CPU) for every dtype and
operator the scheduler formulas use, and ``fill_`` rounding."""

from __future__ import annotations

import math
import os

import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_schedules_oracle import DTYPES

from plateau_forensics.schedules.values import TensorLR, filled, round_to

FAST = settings(max_examples=int(os.environ.get("PF_SCHEDULE_EXAMPLES", "60")) * 10, deadline=None)
values = (
    st.floats(-10, 10, allow_nan=False) | st.floats(1e-8, 1e-3) | st.sampled_from([0.0, -0.0, 0.1, 1 / 3])
)
dtypes = st.sampled_from(sorted(DTYPES))


def _ours_vs_torch(ours: TensorLR, theirs: torch.Tensor) -> None:
    assert ours.dtype == str(theirs.dtype).removeprefix("torch.")
    want = theirs.item()
    assert ours.value == want or (math.isnan(ours.value) and math.isnan(want)), (ours, want)
    assert math.copysign(1, ours.value) == math.copysign(1, want) or math.isnan(want)


@FAST
@given(values, values, dtypes, st.sampled_from(["+", "-", "*", "/", "r+", "r-", "r*"]))
@example(0.0, 0.0007188320144740966, "float16", "+")  # float32(y) is a float16 midpoint: torch rounds via float32
def test_tensor_with_python_number(x, y, dtype, op) -> None:
    """``tensor op number`` and ``number op tensor`` round as torch's kernels do (scalar cast rules per
    operator)."""
    t = torch.tensor(x, dtype=DTYPES[dtype])
    ours = TensorLR(t.item(), dtype)
    if op == "/" and y == 0:
        y = 0.5
    fns = {
        "+": lambda a: a + y,
        "-": lambda a: a - y,
        "*": lambda a: a * y,
        "/": lambda a: a / y,
        "r+": lambda a: y + a,
        "r-": lambda a: y - a,
        "r*": lambda a: y * a,
    }
    _ours_vs_torch(fns[op](ours), fns[op](t))


@FAST
@given(values, values, dtypes, dtypes, st.sampled_from(["+", "-", "*", "/"]))
def test_tensor_with_tensor(x, y, da, db, op) -> None:
    """Two tensor lrs (a group's lr and its base_lr) combine in the promoted dtype, as torch's 0-dim tensors
    do."""
    a, b = torch.tensor(x, dtype=DTYPES[da]), torch.tensor(y, dtype=DTYPES[db])
    if op == "/" and b.item() == 0:
        b = torch.tensor(0.5, dtype=DTYPES[db])
    oa, ob = TensorLR(a.item(), da), TensorLR(b.item(), db)
    fns = {"+": lambda p, q: p + q, "-": lambda p, q: p - q, "*": lambda p, q: p * q, "/": lambda p, q: p / q}
    _ours_vs_torch(fns[op](oa, ob), fns[op](a, b))


@FAST
@given(values, st.floats(-1e6, 1e6, allow_nan=False), dtypes)
def test_fill_rounds_like_torch(x, y, dtype) -> None:
    """Writing a Python float into a tensor lr (``fill_``) rounds it to the dtype as torch does."""
    t = torch.tensor(x, dtype=DTYPES[dtype])
    ours = filled(TensorLR(t.item(), dtype), y)
    t.fill_(y)
    _ours_vs_torch(ours, t)
    assert filled(0.1, y) == y  # a float lr is replaced, not rounded


def test_division_by_zero_is_ieee() -> None:
    """A tensor divided by zero is inf or nan, as in torch, never ZeroDivisionError."""
    for x in (1.0, -1.0, 0.0):
        _ours_vs_torch(TensorLR(x, "float32") / 0.0, torch.tensor(x) / 0.0)
    assert round_to("float64")(0.1) == 0.1
