"""Each logged column's precision, read from how its numbers were written, and the interval of each value."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import plateau_forensics as pf
from plateau_forensics.precision import EXACT, column_precision, float32_precision


def truths(n: int = 200, seed: int = 0) -> list[float]:
    """Loss-like values over several magnitudes (what the interval must contain after rounding)."""
    rnd = random.Random(seed)
    return [rnd.uniform(0.0001, 3.0) * 10 ** rnd.choice([-3, -1, 0, 0, 0]) for _ in range(n)]


@pytest.mark.parametrize("fmt", [".4f", ".6f", ".3f", ".4g", ".6g", "round4", ".3e"])
def test_interval_contains_the_value_that_was_printed(fmt: str) -> None:
    """Whatever fixed format printed a column, every printed value's interval contains the true value."""
    values = truths()
    if fmt == "round4":
        texts = [repr(round(v, 4)) for v in values]
    else:
        texts = [format(v, fmt) for v in values]
    p = column_precision(texts)
    assert not p.exact
    for i, (v, t) in enumerate(zip(values, texts, strict=True)):
        lo, hi = p.interval(i, float(t))
        assert lo <= v <= hi, (t, v)


def test_interval_width_matches_the_format() -> None:
    """A 4-decimal column stands for +-5e-5 around each value, not more."""
    p = column_precision(["0.4143", "0.4100", "1.2345"])
    assert p.description == "4 decimals"
    lo, hi = p.interval(0, 0.4143)
    assert 0.41425 - 1e-15 <= lo <= 0.41425 and 0.41435 <= hi <= 0.41435 + 1e-15


@pytest.mark.parametrize("texts", [
    [repr(v) for v in truths(20)],
    ["0.30410611629486084", "0.5", "0.25"],
    ["1.0", "0.9", "0.85", "0.8"],
])
def test_exact_columns(texts: list[str]) -> None:
    """repr columns, and short values with no fixed-format pattern, are exact."""
    assert column_precision(texts).exact


def test_lr_columns_are_read_as_printed() -> None:
    """An lr column of short reprs is at least 3 significant digits; padding says a fixed format was used."""
    p = column_precision(["0.01", "0.005", "0.0025"], lr=True)
    lo, hi = p.interval(0, 0.01)
    assert lo > 0.005 * 1.5 and hi < 0.0101 and p.assumed
    fixed = column_precision(["0.010000", "0.005000"], lr=True)
    assert fixed.description == "6 decimals" and not fixed.assumed


def test_float32_interval_is_the_rounding_interval() -> None:
    """A float32 value stands for every double that rounds to it."""
    import struct

    v = struct.unpack("<f", struct.pack("<f", 0.04000000000000001))[0]
    lo, hi = float32_precision([v]).interval(0, v)
    assert lo <= 0.04000000000000001 <= hi and hi - lo < 1e-8


def test_read_losses_records_precision(tmp_path: Path) -> None:
    """A CSV printed with 4 decimals and a JSON Lines log printed with repr read as such."""
    (tmp_path / "a.csv").write_text("epoch,val_loss,lr\n1,0.4143,0.01\n2,0.4100,0.005\n")
    log = pf.read_losses(tmp_path / "a.csv")
    assert log.precision_of("val_loss").description == "4 decimals"
    lines = [json.dumps({"epoch": i, "val_loss": v}) for i, v in enumerate(truths(5), 1)]
    (tmp_path / "b.jsonl").write_text("\n".join(lines) + "\n")
    assert pf.read_losses(tmp_path / "b.jsonl").precision_of("val_loss") is EXACT
    (tmp_path / "c.jsonl").write_text('{"epoch": 1, "val_loss": 0.4143}\n{"epoch": 2, "val_loss": 0.4100}\n')
    assert pf.read_losses(tmp_path / "c.jsonl").precision_of("val_loss").description == "4 decimals"
