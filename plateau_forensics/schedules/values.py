"""Tensor learning rates (torch >= 2.10) as immutable values that round like torch's 0-dim tensor arithmetic.

A scheduler formula such as ``group["lr"] * gamma`` runs unchanged on a ``TensorLR``: the operators below give
what torch computes for a 0-dim tensor of that dtype (checked against torch in
tests/test_schedules_values.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from plateau_forensics.engine import rounder

#: dtypes a tensor lr may have, widest first (0-dim tensor promotion picks the wider one)
DTYPES = ("float64", "float32", "bfloat16", "float16")
_REDUCED = ("bfloat16", "float16")


def _identity(x: float) -> float:
    return x


def round_to(dtype: str) -> Callable[[float], float]:
    """The rounding of a Python float stored into a tensor of ``dtype`` (``fill_``, ``torch.tensor``)."""
    r = rounder(dtype)
    return r if r is not None else _identity


_R32 = round_to("float32")


def _promote(a: str, b: str) -> str:
    if a == b:
        return a
    if "float64" in (a, b):
        return "float64"
    return "float32"  # float32 with a reduced type, or float16 with bfloat16


def _scalar_divide(x: float, y: float) -> float:
    """IEEE division as a tensor kernel does it: x/0 is +-inf or nan, never ZeroDivisionError."""
    if y == 0.0:
        if x == 0.0 or math.isnan(x):
            return math.nan
        return math.copysign(math.inf, x) * math.copysign(1.0, y)
    return x / y


@dataclass(frozen=True)
class TensorLR:
    """A 0-dim floating tensor holding an lr: its value (a Python float, exactly representable) and dtype.

    Arithmetic with a Python number follows torch's CPU kernels: for ``*`` and ``/`` the number is cast to the
    op's compute type (float32 for float32/float16/bfloat16), for ``+`` and ``-`` to the tensor's own dtype;
    the result is rounded to the tensor's dtype. Two tensors promote to the wider dtype. A number divided by a
    tensor is left out: torch computes it another way, and no scheduler formula does it.
    """

    value: float
    dtype: str

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"tensor lr dtype {self.dtype!r}: use one of {', '.join(DTYPES)}")

    def __float__(self) -> float:
        return self.value

    def __repr__(self) -> str:
        return f"tensor({self.value!r}, dtype={self.dtype})"

    def item(self) -> float:
        """The value, as ``Tensor.item()`` gives it."""
        return self.value

    def _binary(self, other: Any, op: str, reflected: bool = False) -> TensorLR:
        if isinstance(other, TensorLR):
            dtype = _promote(self.dtype, other.dtype)
            y = other.value
        elif isinstance(other, (int, float)) and not isinstance(other, complex):
            dtype = self.dtype
            y = float(other)
            if dtype != "float64":
                y = round_to(dtype)(y) if op in "+-" and dtype in _REDUCED else _R32(y)
        else:
            return NotImplemented  # type: ignore[no-any-return]
        x = self.value
        if reflected:
            x, y = y, x
        if op == "+":
            z = x + y
        elif op == "-":
            z = x - y
        elif op == "*":
            z = x * y
        else:
            z = _scalar_divide(x, y)
        if dtype != "float64":
            z = _R32(z)  # the float32 compute type, then the storage dtype
        return TensorLR(round_to(dtype)(z), dtype)

    def __add__(self, other: Any) -> TensorLR:
        return self._binary(other, "+")

    def __radd__(self, other: Any) -> TensorLR:
        return self._binary(other, "+", reflected=True)

    def __sub__(self, other: Any) -> TensorLR:
        return self._binary(other, "-")

    def __rsub__(self, other: Any) -> TensorLR:
        return self._binary(other, "-", reflected=True)

    def __mul__(self, other: Any) -> TensorLR:
        return self._binary(other, "*")

    def __rmul__(self, other: Any) -> TensorLR:
        return self._binary(other, "*", reflected=True)

    def __truediv__(self, other: Any) -> TensorLR:
        return self._binary(other, "/")


def filled(old: Any, new: Any) -> Any:
    """torch's ``_update_param_group_val``: a tensor lr keeps its dtype (``fill_`` rounds), a number is
    replaced."""
    if isinstance(old, TensorLR):
        return TensorLR(round_to(old.dtype)(float(new)), old.dtype)
    return new


def as_float(v: Any) -> float:
    """An lr as a Python float (a tensor lr's value)."""
    return float(v)
