"""Tests for reading loss logs: exact floats, column detection, interleaved rows, errors and anomalies.

Every file is written for real into ``tmp_path``; error messages are compared whole.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plateau_forensics.errors import LossLogError
from plateau_forensics.losses import read_losses

LIGHTNING = """epoch,lr-SGD,step,train_loss_epoch,train_loss_step,val_loss
,0.05,0,,,
0,,3,,0.9516035318374634,
0,,7,,,1.0971468687057495
0,,7,1.319546103477478,,
,0.005,8,,,
1,,11,,0.8,
1,,15,,,0.9
1,,15,1.1,,
"""


def write(tmp_path: Path, text: str, name: str = "log.csv") -> Path:
    """Write ``text`` to a file in ``tmp_path`` and return its path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def bits(x: float) -> bytes:
    """Return the IEEE-754 bytes of ``x``, so -0.0 and NaN payloads compare exactly."""
    return struct.pack("<d", x)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True), min_size=1))
def test_repr_round_trip_is_bit_identical(tmp_path: Path, values: list[float]) -> None:
    """Finite floats (subnormals and -0.0 included) written with repr read back bit-identical."""
    path = write(tmp_path, "epoch,val_loss\n" + "".join(f"{i},{v!r}\n" for i, v in enumerate(values)))
    assert [bits(v) for v in values] == [bits(v) for v in read_losses(path).metrics]


def test_nan_literals_are_entries_and_empty_cells_are_not(tmp_path: Path) -> None:
    """NaN/inf literals are real entries while empty and blank cells are rows that do not log the metric."""
    path = write(tmp_path, "epoch,val_loss\n0,nan\n0,\n1,inf\n1,  \n2,-inf\n3,NaN\n4,Infinity\n")
    log = read_losses(path)
    assert (0, 1, 2, 3, 4) == log.epochs
    assert (2, 4, 6, 7, 8) == log.lines
    assert (3, 5) == log.skipped_lines
    assert ["nan", "inf", "-inf", "nan", "inf"] == [repr(m) for m in log.metrics]
    [anomaly] = log.anomalies
    assert "non-finite-metric" == anomaly.kind
    assert (0, 1, 2, 3, 4) == anomaly.rows
    assert "val_loss is not finite at epochs 0, 1, 2, 3, 4 (lines 2, 4, 6, 7, 8)" == anomaly.message


def test_lightning_interleaved_csv(tmp_path: Path) -> None:
    """Lightning's interleaved rows give one entry per val_loss, with that epoch's LR and train loss."""
    log = read_losses(write(tmp_path, LIGHTNING))
    assert ("val_loss", "epoch", ("lr-SGD",)) == (log.metric_column, log.epoch_column, log.lr_columns)
    assert (0, 1) == log.epochs
    assert (1.0971468687057495, 0.9) == log.metrics
    assert ((0.05,), (0.005,)) == log.lrs
    assert (4, 8) == log.lines
    assert (2, 3, 5, 6, 7, 9) == log.skipped_lines
    assert {"step": (7.0, 15.0), "train_loss_epoch": (1.319546103477478, 1.1),
            "train_loss_step": (0.9516035318374634, 0.8)} == dict(log.columns)
    assert () == log.anomalies


def test_hf_jsonl_with_missing_keys_and_nan(tmp_path: Path) -> None:
    """JSON Lines rows without the metric key are not entries; NaN and "nan" values are; 19.0 becomes 19."""
    rows = [{"epoch": 19.0, "learning_rate": 0.05, "loss": 0.2556, "step": 152},
            {"epoch": 19.0, "eval_loss": 0.34097084403038025, "step": 152},
            {"epoch": 20.0, "learning_rate": 0.04000000000000001, "loss": 0.25, "step": 160},
            {"epoch": 20.0, "eval_loss": float("nan"), "step": 160},
            {"epoch": 20.5, "eval_loss": "nan", "eval_runtime": None, "step": 164}]
    path = write(tmp_path, "\n".join(json.dumps(r) for r in rows) + "\n\n", name="log.csv")
    log = read_losses(path)
    assert ("eval_loss", "epoch", ("learning_rate",)) == (log.metric_column, log.epoch_column, log.lr_columns)
    assert (19, 20, 20.5) == log.epochs
    assert isinstance(log.epochs[0], int) and isinstance(log.epochs[2], float)
    assert 0.34097084403038025 == log.metrics[0] and math.isnan(log.metrics[1]) and math.isnan(log.metrics[2])
    assert ((0.05,), (0.04000000000000001,), (None,)) == log.lrs
    assert (2, 4, 5) == log.lines
    assert {"loss": (0.2556, 0.25, None), "step": (152.0, 160.0, 164.0)} == dict(log.columns)
    assert ["non-finite-metric", "lr-missing"] == [a.kind for a in log.anomalies]
    assert "no 'learning_rate' logged for epoch 20.5 (line 5)" == log.anomalies[1].message


@pytest.mark.parametrize(
    ("header", "metric", "epoch"),
    [
        ("epoch,valid_loss,val_loss,step", "val_loss", "epoch"),
        ("Epoch,Loss/val,train_loss", "Loss/val", "Epoch"),
        ("step,val_loss_step,val_loss_epoch", "val_loss_epoch", "step"),
        ("global_step,eval/loss,eval/runtime", "eval/loss", "global_step"),
        ("_step,iter,my_val_loss", "my_val_loss", "_step"),
        ("ep,Validation Loss,x", "Validation Loss", "ep"),
        ("iteration,loss_valid", "loss_valid", "iteration"),
    ],
    ids=["exact-beats-order", "normalised", "epoch-suffix", "eval-slash", "pattern", "spaces", "iteration"],
)
def test_column_detection(tmp_path: Path, header: str, metric: str, epoch: str) -> None:
    """The metric and epoch columns are detected by normalised name, in priority order."""
    row = ",".join(["1"] * len(header.split(",")))
    log = read_losses(write(tmp_path, f"{header}\n{row}\n"))
    assert (metric, epoch) == (log.metric_column, log.epoch_column)


def test_lr_columns_in_param_group_order(tmp_path: Path) -> None:
    """`lr-SGD` is group 0 and `lr-SGD/pg1`, `lr-SGD/pg2` follow; another optimizer's LR is a plain column."""
    path = write(tmp_path, "lr-SGD/pg2,lr-Adam,lr-SGD/pg1,val_loss,lr-SGD\n0.3,9,0.2,1.5,0.1\n")
    log = read_losses(path)
    assert ("lr-SGD", "lr-SGD/pg1", "lr-SGD/pg2") == log.lr_columns
    assert ((0.1, 0.2, 0.3),) == log.lrs
    assert {"lr-Adam": (9.0,)} == dict(log.columns)
    explicit = read_losses(write(tmp_path, "val_loss,lr_1,lr_0\n1,2,3\n"), lr_columns=["lr_1", "lr_0"])
    assert ("lr_1", "lr_0") == explicit.lr_columns


def test_resume_duplicates_and_surviving_history(tmp_path: Path) -> None:
    """A resume appended to the log is reported, and surviving_history keeps the last run's rows."""
    epochs = [0, 1, 2, 3, 4, 2, 3, 4, 5]
    path = write(tmp_path, "epoch,val_loss\n" + "".join(f"{e},{i / 10}\n" for i, e in enumerate(epochs)))
    log = read_losses(path)
    assert [
        ("duplicate-epochs", (2, 5), "epoch 2 appears 2 times (lines 4, 7)"),
        ("duplicate-epochs", (3, 6), "epoch 3 appears 2 times (lines 5, 8)"),
        ("duplicate-epochs", (4, 7), "epoch 4 appears 2 times (lines 6, 9)"),
        ("unsorted-epochs", (4, 5), "epoch goes back from 4 to 2 (lines 6, 7)"),
    ] == [(a.kind, a.rows, a.message) for a in log.anomalies]
    survived, dropped = log.surviving_history()
    assert (2, 3, 4) == dropped
    assert (0, 1, 2, 3, 4, 5) == survived.epochs
    assert (0.0, 0.1, 0.5, 0.6, 0.7, 0.8) == survived.metrics
    assert (2, 3, 7, 8, 9, 10) == survived.lines
    assert () == survived.anomalies
    assert 9 == len(log)


def test_gaps_are_reported_only_for_epoch_columns(tmp_path: Path) -> None:
    """Integer epochs 5 then 8 are a gap; steps 7 then 15 are not."""
    log = read_losses(write(tmp_path, "epoch,val_loss\n4,1\n5,1\n8,1\n8.5,1\n"))
    assert [("epoch-gap", (1, 2), (5, 8), "epoch jumps from 5 to 8, 2 missing (lines 3, 4)")] == [
        (a.kind, a.rows, a.epochs, a.message) for a in log.anomalies]
    assert () == read_losses(write(tmp_path, "step,val_loss\n7,1\n15,1\n")).anomalies


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("epoch,val_loss\n0,1\n1,abc\n", {}, "{p}: line 3, column 'val_loss': 'abc' is not a number"),
        ("epoch,val_loss\n0,1\none,2\n", {}, "{p}: line 3, column 'epoch': 'one' is not a number"),
        ("val_loss,lr\n1,0.1\n2,1e-3x\n", {}, "{p}: line 3, column 'lr': '1e-3x' is not a number"),
        ("epoch,val_loss\ninf,1\n", {}, "{p}: line 2, column 'epoch': 'inf' is not a finite number"),
        ("epoch,val_loss\n,1\n", {}, "{p}: line 2, column 'epoch' is empty on a row that logs 'val_loss' "
                                     "(choose another with --epoch-column)"),
        ("epoch,loss,acc\n0,1,2\n", {},
         "{p}: no validation-loss column; columns are: epoch, loss, acc (choose one with --metric)"),
        ("val_loss_a,val_loss_b\n1,2\n", {},
         "{p}: several validation-loss columns: val_loss_a, val_loss_b (choose one with --metric)"),
        ("epoch,val_loss\n0,1\n", {"metric": "valid"},
         "{p}: no column 'valid'; columns are: epoch, val_loss (choose one with --metric)"),
        ("epoch,val_loss\n0,1\n", {"epoch_column": "it"},
         "{p}: no column 'it'; columns are: epoch, val_loss (choose one with --epoch-column)"),
        ("epoch,val_loss\n0,\n", {}, "{p}: column 'val_loss' has no values"),
        ("a,val_loss,a\n1,2,3\n", {}, "{p}: column 'a' appears more than once in the header"),
        ("\nepoch,val_loss\n0,1\n1,2,3\n", {},
         "{p}: not a well-formed CSV file (Expected 2 fields in line 4, saw 3)"),
        (" \n", {}, "{p}: the file is empty"),
        ('{"val_loss": 1}\n{"val_loss": \n', {}, "{p}: line 2 is not valid JSON (Expecting value)"),
        ('{"val_loss": 1}\n[1]\n', {}, "{p}: line 2 is not a JSON object"),
        ('{"epoch": 1, "val_loss": [1]}\n', {}, "{p}: line 1, column 'val_loss': [1] is not a number"),
    ],
    ids=["metric-text", "epoch-text", "lr-text", "epoch-inf", "epoch-empty", "no-metric", "several", "absent",
         "absent-epoch", "no-values", "duplicate-header", "ragged", "empty-file", "bad-json", "json-list",
         "json-nested"],
)
def test_error_messages(tmp_path: Path, text: str, kwargs: dict[str, str], message: str) -> None:
    """Each unusable log raises LossLogError with one exact line naming the file, line and column."""
    path = write(tmp_path, text)
    with pytest.raises(LossLogError) as info:
        read_losses(path, **kwargs)
    assert message.format(p=path) == str(info.value)


def test_missing_file_and_mapping_lengths(tmp_path: Path) -> None:
    """A missing file and a ragged mapping raise one-line errors."""
    with pytest.raises(LossLogError, match=r"^.*nope\.csv: no such file$"):
        read_losses(tmp_path / "nope.csv")
    with pytest.raises(LossLogError) as info:
        read_losses({"epoch": [0, 1], "val_loss": [1.0]})
    assert "<mapping>: columns have different lengths (epoch: 2, val_loss: 1)" == str(info.value)


def test_other_non_numeric_columns_are_left_out(tmp_path: Path) -> None:
    """A text column is excluded from `columns` instead of failing the read."""
    log = read_losses(write(tmp_path, "epoch\tval_loss\tphase\tacc\n0\t1\ttrain\t0.5\n", name="log.tsv"))
    assert {"acc": (0.5,)} == dict(log.columns)


def test_format_override(tmp_path: Path) -> None:
    """The format is guessed from the content, not the name, and fmt= overrides the guess."""
    path = write(tmp_path, '\n{"val_loss": 2}\n', name="log.csv")
    assert (2,) == read_losses(path).lines
    with pytest.raises(LossLogError, match="no validation-loss column"):
        read_losses(path, fmt="csv")
    with pytest.raises(LossLogError, match="line 1 is not valid JSON"):
        read_losses(write(tmp_path, "val_loss\n1\n", name="log.jsonl"), fmt="jsonl")


def test_sequence_mapping_and_records() -> None:
    """Plain sequences, mappings and lists of row dicts use 0-based rows and None for "not logged"."""
    seq = read_losses([0.5, None, float("nan"), 0.25])
    assert ("<sequence>", "metric", None) == (seq.source, seq.metric_column, seq.epoch_column)
    assert ((1, 2, 3), (0, 2, 3), (1,)) == (seq.epochs, seq.lines, seq.skipped_lines)
    assert "metric is not finite at epoch 2 (row 2)" == seq.anomalies[0].message
    mapping = read_losses({"epoch": [0, 1], "val/loss": [1.0, 0.5], "lr": [0.1, 0.01]})
    assert ((0, 1), ((0.1,), (0.01,))) == (mapping.epochs, mapping.lrs)
    records = read_losses([{"epoch": 1.0, "eval_loss": 0.3}, {"epoch": 2.0, "eval_loss": 0.2}])
    assert ("<records>", (1, 2)) == (records.source, records.epochs)


def test_dataframe_input() -> None:
    """A DataFrame's NaN means "not logged"; a DataFrame of strings keeps "nan" as a real value."""
    import io

    import pandas as pd

    text = "epoch,lr-SGD,step,val_loss\n,0.05,0,\n0,,7,1.5\n1,,15,nan\n"
    log = read_losses(pd.read_csv(io.StringIO(text)))
    assert ("<DataFrame>", (0,), (1.5,), ((0.05,),)) == (log.source, log.epochs, log.metrics, log.lrs)
    assert (0, 2) == log.skipped_lines
    exact = read_losses(pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False))
    assert (0, 1) == exact.epochs and math.isnan(exact.metrics[1])
    series = read_losses(pd.Series([0.3, 0.2], name="val_loss"))
    assert ("val_loss", (1, 2)) == (series.metric_column, series.epochs)


def test_import_pulls_in_no_pandas_or_numpy() -> None:
    """Importing the module in a fresh interpreter loads neither pandas nor numpy."""
    code = "import sys, plateau_forensics.losses; print(sorted({'pandas', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True,
                         text=True, check=True)
    assert "[]\n" == out.stdout
