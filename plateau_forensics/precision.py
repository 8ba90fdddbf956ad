"""How precisely a log wrote its numbers, and the interval each logged value stands for.

A log printed with ``f"{val_loss:.4f}"`` says ``0.4143``: the value the scheduler saw lies in
``[0.41425, 0.41435]``. Comparisons the interval cannot decide are undecidable, never guessed; a value
written with ``repr`` (15 or more significant digits somewhere in the column) is exact.

Rules, per column (only text cells carry precision; numbers from JSON or Python objects are exact):
    * exact: a value has >= 12 significant digits (``repr`` of a float), the column holds no text, or nothing
      says a fixed format wrote it (no padding zeros, and no decimals or significant-digit count that most
      values share): ``1.0, 0.9, 0.85`` typed by hand are the values themselves.
    * otherwise each value stands for an interval whose half-width is half a unit in its last place,
      under the more generous of two readings: the column's most decimals (``.4f``, ``round(x, 4)``) and its
      most significant digits (``.4g``, ``%g``), so ``0.43`` in a ``round(x, 4)`` column stands for
      ``0.43 +- 5e-5`` and ``0.01`` in a ``%g`` column for at least ``+- 5e-7``. Formats that drop trailing
      zeros print fewer digits than they kept; a file that mixes formats is read one file at a time.
    * float32: values that TensorBoard stored as float32 stand for the float32 rounding interval.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Precision", "column_precision", "concat", "float32_precision", "EXACT"]

_NUMBER = re.compile(r"\s*[+-]?(?P<int>\d*)(?:\.(?P<frac>\d*))?(?:[eE](?P<exp>[+-]?\d+))?\s*")


@dataclass(frozen=True)
class Precision:
    """The precision of one logged column.

    Attributes:
        kind: ``exact``, ``decimals``, ``significant`` or ``float32``.
        description: words for a report, e.g. ``4 decimals``.
        halfwidths: per value, half the width of the interval it stands for (0.0 for exact values);
            empty for an exact column.
    """

    kind: str
    description: str
    halfwidths: tuple[float, ...] = ()
    #: the interval is a conservative assumption (an lr column printed without a visible format), not a
    #: rounding the text shows
    assumed: bool = False

    @property
    def exact(self) -> bool:
        """Every value is what the run computed, bit for bit."""
        return self.kind == "exact"

    def pick(self, indices: Sequence[int]) -> Precision:
        """The precision of the values at ``indices`` (for a log with rows dropped or reordered)."""
        if not self.halfwidths:
            return self
        return Precision(self.kind, self.description, tuple(self.halfwidths[i] for i in indices), self.assumed)

    def interval(self, i: int, value: float) -> tuple[float, float]:
        """The interval value ``i`` stands for (``(value, value)`` when exact or non-finite)."""
        if not self.halfwidths or not math.isfinite(value):
            return value, value
        h = self.halfwidths[i]
        if h == 0.0:
            return value, value
        # one ulp of slack each side: the bounds are computed in floating point, and must never exclude the truth
        return math.nextafter(value - h, -math.inf), math.nextafter(value + h, math.inf)


EXACT = Precision("exact", "exact (full precision)")


def _digits(text: str) -> tuple[int, int, int, bool] | None:
    """(significant digits, position of the last digit as a power of ten, decimals printed after the point,
    exponent notation) of a number's text."""
    m = _NUMBER.fullmatch(text)
    if m is None or not (m["int"] or m["frac"]):
        return None
    whole, frac, exp = m["int"] or "", m["frac"] or "", int(m["exp"] or 0)
    digits = (whole + frac).lstrip("0")
    sig = len(digits) if digits else 1
    return sig, exp - len(frac), len(frac), m["exp"] is not None


def _groups(parsed: Sequence[tuple[int, int, int, bool] | None]) -> dict[bool, tuple[int, int]]:
    """Per notation (fixed, exponent): the most decimals after the point and the most significant digits."""
    out: dict[bool, tuple[int, int]] = {}
    for d in parsed:
        if d is None:
            continue
        dec, sig = out.get(d[3], (0, 0))
        out[d[3]] = (max(dec, d[2]), max(sig, d[0]))
    return out


def _half(value: float, d: tuple[int, int, int, bool], groups: dict[bool, tuple[int, int]], min_sig: int = 0
          ) -> float:
    """Half a unit in the last place the value's format printed, read from its notation's column statistics:
    fixed notation by its most decimals (``.4f``) or significant digits (``.4g``), exponent notation by its
    most mantissa decimals (``.4e``)."""
    dec, sig = groups[d[3]]
    sig = max(sig, min_sig)
    v = abs(value)
    exponent = math.floor(math.log10(v)) if v > 0 and math.isfinite(v) else 0
    by_significant = 10.0 ** (exponent - sig + 1)
    by_decimals = 10.0 ** (exponent - dec) if d[3] else 10.0 ** -dec
    return max(by_decimals, by_significant) / 2


def column_precision(texts: Sequence[str | None], *, lr: bool = False) -> Precision:
    """The precision of a column from the text of its cells (None: a cell that was not text).

    Example:
        >>> column_precision(["0.4143", "0.4100"]).description
        '4 decimals'
        >>> column_precision(["0.30410611629486084", "0.5"]).exact
        True
    """
    parsed = [_digits(t) if isinstance(t, str) else None for t in texts]
    known = [d for d in parsed if d is not None]
    if not known or max(d[0] for d in known) >= 12:
        return EXACT
    groups = _groups(parsed)
    if lr:
        return _lr_precision(texts, parsed, groups)
    if not _looks_rounded(texts, known):
        return EXACT
    halves = [0.0 if d is None else _half(float(t), d, groups) for t, d in zip(texts, parsed)]  # type: ignore[arg-type]
    return Precision(*_describe(known), tuple(halves))


def _describe(known: Sequence[tuple[int, int, int, bool]]) -> tuple[str, str]:
    fixed = [d for d in known if not d[3]]
    if fixed and len(fixed) == len(known):
        max_dec = max(d[2] for d in fixed)
        if sum(1 for d in fixed if d[2] == max_dec) * 5 >= len(fixed) * 4:
            return "decimals", f"{max_dec} decimals"
    max_sig = max(d[0] for d in known)
    return "significant", f"{max_sig} significant digits"


def _looks_rounded(texts: Sequence[str | None], known: Sequence[tuple[int, int, int, bool]]) -> bool:
    """A fixed format wrote the column: padding zeros (``0.4100``), or most values with the same number of
    decimals (``.4f``, ``round(x, 4)``) or significant digits (``.4g``). Short values without such a pattern
    (``1.0, 0.9, 0.85``, typed by hand or computed exactly) are taken as exact."""
    if any(isinstance(t, str) and _pads(t) for t in texts):
        return True
    n = len(known)
    max_dec = max(d[2] for d in known)
    max_sig = max(d[0] for d in known)
    same_dec = sum(1 for d in known if d[2] == max_dec)
    same_sig = sum(1 for d in known if d[0] == max_sig)
    return (max_dec >= 2 and same_dec * 5 >= n * 4) or (max_sig >= 3 and same_sig * 5 >= n * 4)


def _lr_precision(texts: Sequence[str | None], parsed: Sequence[tuple[int, int, int, bool] | None],
                  groups: dict[bool, tuple[int, int]]) -> Precision:
    """An lr column: lrs are printed with ``repr`` or ``%g`` far more often than rounded to a few decimals, and a
    short value such as ``0.01`` is usually exact. Only padding (``0.010000``, ``1.00e-02``) says that a fixed
    number of decimals was printed; otherwise at least 3 significant digits are assumed."""
    known = [d for d in parsed if d is not None]
    fixed = [d for d in known if not d[3]]
    same_decimals = (len(fixed) >= 3 and len({t for t, d in zip(texts, parsed) if d is not None and not d[3]}) >= 2
                     and len({d[2] for d in fixed}) == 1 and fixed[0][2] >= 4)  # .4f of several lrs: 0.0025, 0.0013
    padded = same_decimals or any(isinstance(t, str) and _pads(t) for t in texts)
    halves = []
    for t, d in zip(texts, parsed):
        if d is None:
            halves.append(0.0)
        elif padded:
            halves.append(_half(float(t), d, groups))  # type: ignore[arg-type]
        else:
            v = abs(float(t))  # type: ignore[arg-type]
            exponent = math.floor(math.log10(v)) if v > 0 and math.isfinite(v) else 0
            halves.append(10.0 ** (exponent - max(groups[d[3]][1], 3) + 1) / 2)
    kind, description = _describe(known) if padded else ("significant", f"at least {max(max(d[0] for d in known), 3)} significant digits")
    return Precision(kind, description, tuple(halves), assumed=not padded)


def _pads(text: str) -> bool:
    """The number was printed with trailing zeros after the point (a fixed format such as ``.6f`` or ``.2e``)."""
    mantissa = text.strip().lower().split("e")[0]
    return "." in mantissa and len(mantissa.split(".")[1]) > 1 and mantissa.endswith("0")


def concat(parts: Sequence[tuple[Precision, int]]) -> Precision:
    """The precision of logs joined one after another: ``(precision, number of values)`` per log."""
    if all(p.exact for p, _ in parts):
        return EXACT
    halves: list[float] = []
    for p, n in parts:
        halves.extend(p.halfwidths if p.halfwidths else (0.0,) * n)
    kinds = {p.description for p, _ in parts if not p.exact}
    mixed = len(kinds) > 1
    description = " / ".join(sorted(kinds)) if mixed else kinds.pop()
    return Precision("mixed" if mixed else next(p.kind for p, _ in parts if not p.exact), description,
                     tuple(halves), assumed=all(p.assumed for p, _ in parts if not p.exact))


def float32_precision(values: Sequence[float | None]) -> Precision:
    """Values stored as float32 (TensorBoard scalars): each stands for its float32 rounding interval."""
    halves = []
    for v in values:
        if v is None or not math.isfinite(v) or v == 0.0:  # None: a value not logged on that row
            halves.append(0.0)
            continue
        m, e = math.frexp(abs(v))  # abs(v) = m * 2**e, 0.5 <= m < 1; float32 has a 24-bit significand
        halves.append(2.0 ** (e - 24) / 2)
    return Precision("float32", "float32", tuple(halves))
