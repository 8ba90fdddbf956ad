"""Tests for reading loss logs: exact floats, column detection, interleaved rows, errors and anomalies.

Every file is written for real into ``tmp_path``; error messages are compared whole.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from plateau_forensics import logtable, losses
from plateau_forensics.errors import LossLogError
from plateau_forensics.losses import LossLog, column_precision_of, read_losses
from plateau_forensics.precision import column_precision

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


# -- issue 14: strict numbers, files that are not logs, limits; issue 10: fast paths equal the plain rules

FORMATS = ["{!r}", "{:.4f}", "{:.2f}", "{:.6g}", "{:.3e}", "{:.17e}", "{:.20f}", "{:.25g}", "{:g}", "{:.0f}"]


def strict_float(text: str) -> float | None:
    """What a log reader should read as a number: float() of ASCII text without '_', no overflow to inf."""
    if not text.strip() or not text.isascii() or "_" in text:
        return None
    try:
        x = float(text)
    except ValueError:
        return None
    if math.isinf(x) and text.strip().lstrip("+-").lower() not in ("inf", "infinity"):
        return None
    return x


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(
    st.lists(
        st.tuples(
            st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True), st.sampled_from(FORMATS)
        ),
        min_size=1,
        max_size=300,
    )
)
def test_plain_csv_c_parser_is_bit_exact(tmp_path: Path, cells: list[tuple[float, str]]) -> None:
    """pandas' C parser on a plain numeric CSV gives float() of each text bit for bit, in every format."""
    texts = [
        t for t in (fmt.format(v) for v, fmt in cells) if math.isfinite(float(t))
    ]  # .3e may round to inf
    assume(texts)
    path = write(tmp_path, "epoch,val_loss\n" + "".join(f"{i},{t}\n" for i, t in enumerate(texts)))
    assert logtable.load(path, "auto", None).text_reader is not None  # the plain path read it
    assert [bits(float(t)) for t in texts] == [bits(m) for m in read_losses(path).metrics]


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=150)
@given(st.text(alphabet="0123456789.eE+-infatyINFATY x", min_size=1, max_size=9))
def test_csv_reads_a_cell_as_float_reads_it(tmp_path: Path, text: str) -> None:
    """A cell is a number exactly when strict float() reads it, with the same bits, whichever path "
    "reads it."""
    for extra in ("", ",a"):  # a text column sends the file down the cell-by-cell path
        header = "epoch,val_loss" + (",phase" if extra else "")
        path = write(tmp_path, f"{header}\n0,0.5{extra}\n1,{text}{extra}\n")
        want = strict_float(text)
        if want is None and text.strip():
            with pytest.raises(LossLogError, match="line 3, column 'val_loss'"):
                read_losses(path)
            continue
        log = read_losses(path)
        got = log.metrics[1:]
        assert ([bits(want)] if want is not None else []) == [bits(x) for x in got]


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=40)
@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True), min_size=1, max_size=200)
)
def test_jsonl_floats_are_bit_exact(tmp_path: Path, values: list[float]) -> None:
    """JSON Lines numbers read back bit-identical to what json.dumps wrote."""
    path = write(
        tmp_path,
        "".join(json.dumps({"epoch": i, "val_loss": v}) + "\n" for i, v in enumerate(values)),
        "log.jsonl",
    )
    assert [bits(v) for v in values] == [bits(m) for m in read_losses(path).metrics]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "log.csv",
            "epoch,val_loss\n0,1\n1,1_000\n",
            "{p}: line 3, column 'val_loss': '1_000' is not a number (a '_' digit separator, which a "
            "log writer "
            "never prints)",
        ),
        (
            "log.csv",
            "epoch,val_loss\n0,1\n1,\u0661\u0662\n",
            "{p}: line 3, column 'val_loss': '\u0661\u0662' is not a number (written with non-ASCII "
            "characters; "
            "only ASCII digits are read as numbers)",
        ),
        (
            "log.csv",
            "epoch,val_loss\n0,1\n1,\uff11\uff12\n",
            "{p}: line 3, column 'val_loss': '\uff11\uff12' is not a number (written with non-ASCII "
            "characters; "
            "only ASCII digits are read as numbers)",
        ),
        (
            "log.csv",
            "epoch,val_loss\n\u0661,1\n",
            "{p}: line 2, column 'epoch': '\u0661' is not a number (written with non-ASCII characters; "
            "only ASCII "
            "digits are read as numbers)",
        ),
        (
            "log.csv",
            "epoch,val_loss\n0,1e999\n",
            "{p}: line 2, column 'val_loss': '1e999' is not a number (beyond a float's range)",
        ),
        (
            "log.jsonl",
            '{"epoch": 0, "val_loss": "1_000"}\n',
            "{p}: line 1, column 'val_loss': '1_000' is not a number (a '_' digit separator, which a "
            "log writer "
            "never prints)",
        ),
        (
            "log.jsonl",
            '{"epoch": 0, "val_loss": 1e999}\n',
            "{p}: line 1, column 'val_loss': '1e999' is not a number (beyond a float's range)",
        ),
        (
            "log.jsonl",
            '{"epoch": 0, "val_loss": ' + "9" * 400 + "}\n",
            "{p}: line 1, column 'val_loss': an integer of 1,329 bits is not a number (beyond a float's "
            "range)",
        ),
        (
            "train.log",
            "epoch 1: val_loss=0.5\nepoch 2: val_loss=1_000\n",
            "{p}: line 2, column 'val_loss': '1_000' is not a number (a '_' digit separator, which a "
            "log writer "
            "never prints)",
        ),
        (
            "train.log",
            "epoch 1: val_loss=0.5\nepoch 2: val_loss=\u0660.\u0665\n",
            "{p}: line 2, column 'val_loss': '\u0660.\u0665' is not a number (written with non-ASCII "
            "characters; "
            "only ASCII digits are read as numbers)",
        ),
    ],
    ids=[
        "underscore",
        "arabic-indic",
        "full-width",
        "arabic-epoch",
        "overflow",
        "json-underscore",
        "json-overflow",
        "json-huge-int",
        "text-underscore",
        "text-arabic",
    ],
)
def test_numbers_float_reads_but_a_log_never_writes(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    """Digit separators, non-ASCII digits and finite literals beyond a float are errors naming the cell."""
    path = write(tmp_path, text, name)
    with pytest.raises(LossLogError) as info:
        read_losses(path)
    assert message.format(p=path) == str(info.value)


def test_other_columns_with_strict_non_numbers_are_left_out(tmp_path: Path) -> None:
    """A '1_000' outside the metric, epoch and lr columns keeps that column out of `columns`."""
    log = read_losses(write(tmp_path, "epoch,val_loss,steps,acc\n0,1,1_000,0.5\n1,2,2_000,0.6\n"))
    assert {"acc": (0.5, 0.6)} == dict(log.columns)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "epoch,val_loss,lr,LR\n0,1,0.1,0.2\n",
            "{p}: columns 'lr' and 'LR' both read as the lr of param group 0 (choose with --lr-column, "
            "once per group)",
        ),
        (
            "epoch,val_loss,lr_0,lr-0\n0,1,0.1,0.2\n",
            "{p}: columns 'lr_0' and 'lr-0' both read as the lr of param group 0 (choose with "
            "--lr-column, once per "
            "group)",
        ),
        (
            "epoch,Epoch,val_loss\n0,0,1\n",
            "{p}: columns epoch, Epoch all read as the epoch column 'epoch' (choose one with --epoch-column)",
        ),
    ],
    ids=["lr-LR", "lr_0-lr-0", "epoch-Epoch"],
)
def test_names_that_normalise_alike_are_ambiguous(tmp_path: Path, text: str, message: str) -> None:
    """Two columns that name the same lr group or the epoch up to case and separators are an error."""
    path = write(tmp_path, text)
    with pytest.raises(LossLogError) as info:
        read_losses(path)
    assert message.format(p=path) == str(info.value)
    chosen = read_losses(path, lr_columns=["lr"]) if "LR" in text else None
    assert chosen is None or ("lr",) == chosen.lr_columns


@pytest.mark.parametrize("extra", ["", ",phase"], ids=["plain", "with-text-column"])
def test_truncated_last_row_is_reported_and_not_read(tmp_path: Path, extra: str) -> None:
    """A last row with fewer fields than the header (a crash while writing) is an anomaly and not an entry."""
    cell = ",train" if extra else ""
    path = write(tmp_path, f"epoch,val_loss,lr{extra}\n1,0.5,0.1{cell}\n2,0.4,0.1{cell}\n\n3,0.3")
    log = read_losses(path)
    assert ((1, 2), (0.5, 0.4), (2, 3)) == (log.epochs, log.metrics, log.lines)
    n_fields = 4 if extra else 3
    assert [
        (
            "truncated-row",
            f"{path}: line 5, the last row, has 2 of {n_fields} fields: it was cut short (a "
            "crash while it was written?) and is not read",
        )
    ] == [(a.kind, a.message) for a in log.anomalies]
    assert "truncated-row" in {a.kind for a in log.pick_rows([1]).anomalies}  # about the file: kept


def test_short_rows_are_reported_and_read_as_not_logged(tmp_path: Path) -> None:
    """Rows with fewer fields than the header before the last one are reported; their missing fields "
    "are empty."""
    path = write(tmp_path, "epoch,val_loss,lr\n1,0.5\n2,0.4,0.1\r\n3,0.3,0.1\n")
    log = read_losses(path)
    assert ((None,), (0.1,), (0.1,)) == log.lrs
    assert [
        ("lr-missing", "no 'lr' logged for epoch 1 (line 2)"),
        (
            "short-rows",
            f"{path}: line 2 has fewer fields than the header's 3: the missing fields are read as not logged",
        ),
    ] == [(a.kind, a.message) for a in log.anomalies]


def test_duplicate_json_keys(tmp_path: Path) -> None:
    """A key named twice with one value is an anomaly (read once); with two values it is an error."""
    same = write(
        tmp_path, '{"epoch": 0, "val_loss": 0.5}\n{"epoch": 1, "val_loss": 0.4, "val_loss": 0.4}\n', "a.jsonl"
    )
    log = read_losses(same)
    assert (0.5, 0.4) == log.metrics
    assert [
        (
            "duplicate-keys",
            f"{same}: line 2 names a key twice in one JSON object, with the same value both "
            "times (read once)",
        )
    ] == [(a.kind, a.message) for a in log.anomalies]
    other = write(tmp_path, '{"epoch": 0, "val_loss": 0.5, "epoch": 7}\n', "b.jsonl")
    with pytest.raises(LossLogError) as info:
        read_losses(other)
    assert (
        f"{other}: line 1 names 'epoch' twice, with different values (0 and 7): which one was logged?"
        == str(info.value)
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"val_loss": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
            "{p}: line 1 is nested too deeply for a log line",
        ),
        (
            '{"val_loss": ' + '{"a": ' * 30_000 + "1" + "}" * 30_001 + "\n",
            "{p}: line 1 is nested too deeply for a log line",
        ),
        (
            '{"epoch": ' + "1" * 5000 + ', "val_loss": 1}\n',
            "{p}: line 1 holds an integer too long to read (over 4,300 digits)",
        ),
        ('{"val_loss": 1}\n{"val_loss": 1} {}\n', "{p}: line 2 is not valid JSON (Extra data)"),
        ('{"val_loss": 1}\n\v{"val_loss": 1}\n', "{p}: line 2 is not valid JSON (Expecting value)"),
    ],
    ids=["deep-list", "deep-object", "huge-int", "extra-data", "vertical-tab"],
)
def test_hostile_json_lines(tmp_path: Path, text: str, message: str) -> None:
    """Deep nesting, integers over Python's digit limit and trailing data are one-line errors."""
    path = write(tmp_path, text, "log.jsonl")
    with pytest.raises(LossLogError) as info:
        read_losses(path)
    assert message.format(p=path) == str(info.value)


def test_quoted_cells_are_cut(tmp_path: Path) -> None:
    """An error quoting a 10,000-character cell shows 80 characters of it and its length."""
    path = write(tmp_path, "epoch,val_loss\n0," + "x" * 10_000 + "\n")
    with pytest.raises(LossLogError) as info:
        read_losses(path)
    assert f"{path}: line 2, column 'val_loss': '{'x' * 80}'... (10,000 characters) is not a number" == str(
        info.value
    )


def test_column_listings_are_cut(tmp_path: Path) -> None:
    """A message listing columns shows about 600 characters of names, each cut at 80, then how many more."""
    names = [f"c{i}" + "y" * 100 for i in range(30)]
    path = write(tmp_path, ",".join(names) + "\n" + ",".join("1" * 30) + "\n")
    with pytest.raises(LossLogError) as info:
        read_losses(path)
    shown = ", ".join(f"{n[:80]}... ({len(n)} characters)" for n in names[:6])
    assert (
        f"{path}: no validation-loss column; columns are: {shown} and 24 more (choose one with --metric)"
        == str(info.value)
    )


def _run_isolated(code: str) -> str:
    """Run ``code`` in a fresh interpreter with a 20 s timeout (a blocking read must not hang the suite)."""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=Path(__file__).parents[1],
    )
    return out.stdout.strip()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO (no writer: a read would block forever) is refused at once, through the API and the CLI."""
    fifo = tmp_path / "log.csv"
    os.mkfifo(fifo)
    code = (
        "from plateau_forensics.losses import read_losses\n"
        f"try:\n    read_losses({str(fifo)!r})\nexcept Exception as e:\n    print(type(e).__name__, e)"
    )
    assert (
        f"LossLogError {fifo}: not a regular file (a FIFO); a loss log is read only from a file"
        == _run_isolated(code)
    )
    cli = (
        "from click.testing import CliRunner\nfrom plateau_forensics.cli import main\n"
        f"r = CliRunner().invoke(main, [{str(fifo)!r}])\nprint(r.exit_code, r.stderr.strip())"
    )
    assert (
        f"1 Error: {fifo}: not a regular file (a FIFO); a loss log is read only from a file"
        == _run_isolated(cli)
    )


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_devices_and_directories_are_refused(tmp_path: Path) -> None:
    """/dev/zero (it never ends) and a directory are refused before a byte is read."""
    with pytest.raises(
        LossLogError,
        match=r"^/dev/zero: not a regular file \(a character device\); a loss log "
        r"is read only from a file$",
    ):
        read_losses("/dev/zero")
    with pytest.raises(LossLogError, match=r"cannot read the file \(Is a directory\)$"):
        read_losses(tmp_path)


@pytest.mark.parametrize(
    ("limit", "value", "text", "message"),
    [
        (
            "MAX_LOG_BYTES",
            40,
            "epoch,val_loss\n" + "0,1\n" * 10,
            "{p}: 55 bytes, over the 40 bytes limit for a loss log",
        ),
        (
            "MAX_LINE_BYTES",
            20,
            "epoch,val_loss\n0,1\n0," + "1" * 30 + "\n" + "0,1\n" * 5,
            "{p}: line 3 is longer than 20 bytes (the limit for one line of a loss log)",
        ),
        (
            "MAX_LINES",
            5,
            "epoch,val_loss\n" + "0,1\n" * 10,
            "{p}: 11 lines, over the 5 lines a loss log may have",
        ),
        ("MAX_COLUMNS", 3, "a,b,c,val_loss\n1,2,3,4\n", "{p}: 4 columns (the limit is 3)"),
        (
            "MAX_CELLS",
            10,
            "epoch,val_loss\n" + "0,1\n" * 10,
            "{p}: 11 lines x 2 columns, over the 10 cells a loss log may have",
        ),
        (
            "MAX_VALUES",
            20,
            "epoch,val_loss,lr\n" + "".join(f"{i},1,0.1\n" for i in range(6)),
            "{p}: 6 entries x 4 numbers each (metric, epoch, line, 1 lr and 0 other columns) is over "
            "the 20 numbers a "
            "loss log may hold",
        ),
        (
            "MAX_JSON_LINES",
            3,
            '{"val_loss": 1}\n' * 4,
            "{p}: 4 lines, over the 3 lines a JSON Lines log may have",
        ),
        (
            "MAX_PRINTED_LINES",
            3,
            "epoch 1: val_loss=1\n" * 4,
            "{p}: 4 lines, over the 3 lines a printed log may have",
        ),
    ],
    ids=["bytes", "line", "lines", "columns", "cells", "values", "json-lines", "printed-lines"],
)
def test_limits_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: str, value: int, text: str, message: str
) -> None:
    """Each reader limit, when exceeded, gives one error that names it."""
    monkeypatch.setattr(logtable, limit, value)
    monkeypatch.setattr(losses, limit, value, raising=False)
    path = write(tmp_path, text)
    with pytest.raises(LossLogError) as info:
        read_losses(path)
    assert message.format(p=path) == str(info.value)


def test_too_many_json_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """JSON objects that name more keys than the column limit are refused."""
    monkeypatch.setattr(logtable, "MAX_COLUMNS", 3)
    path = write(tmp_path, '{"val_loss": 1, "a": 1}\n{"val_loss": 1, "b": 1, "c": 1}\n', "log.jsonl")
    with pytest.raises(LossLogError, match=r"more than 3 columns \(the limit\)$"):
        read_losses(path)


def test_wide_header_is_refused_before_parsing(tmp_path: Path) -> None:
    """A CSV with 250,000 columns is refused by its header (with long names, by its first line's length)."""
    path = write(tmp_path, ",".join(["a"] * 250_000) + ",val_loss\n")
    with pytest.raises(LossLogError, match=r": 250,001 columns \(the limit is 10,000\)$"):
        read_losses(path)


# -- the vectorized paths against the plain rules ---------------------------------------------------------
TEXT_FORMATS = [
    "{:.4f}",
    "{:.2f}",
    "{:.6f}",
    "{:.4g}",
    "{:.3g}",
    "{:g}",
    "{:.2e}",
    "{:.4e}",
    "{!r}",
    "{:.1f}",
    "{:.0f}",
]


@st.composite
def text_columns(draw: st.DrawFn) -> list[str | None]:
    """A column as a log might print it: one or two formats (Keras mixes fixed and exponent), repeats, "
    "gaps."""
    formats = draw(st.lists(st.sampled_from(TEXT_FORMATS), min_size=1, max_size=2))
    pool = draw(st.lists(st.floats(min_value=1e-7, max_value=50, allow_nan=False), min_size=1, max_size=8))
    out: list[str | None] = []
    for _ in range(draw(st.integers(1, 60))):
        kind = draw(st.integers(0, 19))
        if kind == 0:
            out.append(None)
        elif kind == 1:
            out.append(draw(st.sampled_from(["nan", "inf", "0", "1", "0.0100", "1.00e-02"])))
        else:
            out.append(draw(st.sampled_from(formats)).format(draw(st.sampled_from(pool))))
    return out


@settings(deadline=None, max_examples=250)
@given(text_columns(), st.booleans())
def test_precision_by_distinct_texts_equals_column_precision(texts: list[str | None], lr: bool) -> None:
    """Counting each distinct text once gives column_precision's result, halfwidths and all."""
    want, got = column_precision(texts, lr=lr), column_precision_of(texts, lr=lr)
    assert (want.kind, want.description, want.assumed) == (got.kind, got.description, got.assumed)
    assert [bits(h) for h in want.halfwidths] == [bits(h) for h in got.halfwidths]


@pytest.mark.parametrize("kind", ["plain", "cells", "jsonl"])
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=25)
@given(metric=text_columns(), lr=text_columns())
def test_file_precision_equals_column_precision_of_its_texts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, metric: list[str | None], lr: list[str | None]
) -> None:
    """A file's precision, read in small runs, equals column_precision of the texts of its entries."""
    monkeypatch.setattr(logtable, "_CHUNK_CELLS", 7)  # runs of a few rows: every boundary is crossed
    n = min(len(metric), len(lr))
    metric, lr = metric[:n], lr[:n]
    if all(m is None for m in metric):
        metric[0] = "0.5"
    if kind == "jsonl":
        text = "".join(
            json.dumps(
                {
                    "epoch": i,
                    **({"val_loss": m} if m is not None else {}),
                    **({"lr": v} if v is not None else {}),
                }
            )
            + "\n"
            for i, (m, v) in enumerate(zip(metric, lr, strict=False))
        )
    else:
        phase = ",p" if kind == "cells" else ""
        text = f"epoch,val_loss,lr{',phase' if phase else ''}\n" + "".join(
            f"{i},{m or ''},{v or ''}{phase}\n" for i, (m, v) in enumerate(zip(metric, lr, strict=False))
        )
    path = write(tmp_path, text, f"log.{'jsonl' if kind == 'jsonl' else 'csv'}")
    log = read_losses(path)
    entries = [i for i, m in enumerate(metric) if m is not None]
    want_m = column_precision([metric[i] for i in entries])
    got_m = log.precision_of("val_loss")
    assert (want_m.description, [bits(h) for h in want_m.halfwidths]) == (
        got_m.description,
        [bits(h) for h in got_m.halfwidths],
    )
    if log.lr_columns:
        sources = [
            max((j for j in range(prev + 1, i + 1) if lr[j] is not None), default=None)
            for prev, i in zip([-1, *entries[:-1]], entries, strict=False)
        ]
        want_l = column_precision([None if j is None else lr[j] for j in sources], lr=True)
        got_l = log.precision_of("lr")
        assert (want_l.description, [bits(h) for h in want_l.halfwidths]) == (
            got_l.description,
            [bits(h) for h in got_l.halfwidths],
        )


def reference_sources(
    present: list[bool], entries: list[int], labels: list[float | None] | None
) -> list[int]:
    """The rule in words, row by row: the entry's own row, else back to the previous entry, else (with labels,
    only rows of the entry's label) forward to the next entry."""
    out = []
    for k, r in enumerate(entries):
        lo = entries[k - 1] if k else -1
        hi = entries[k + 1] if k + 1 < len(entries) else len(present)
        near = [r, *range(r - 1, lo, -1)] + ([] if labels is None else [*range(r + 1, hi)])
        if labels is not None:
            near = [j for j in near if labels[j] is not None and labels[j] == labels[r]]
        out.append(next((j for j in near if present[j]), -1))
    return out


@settings(deadline=None, max_examples=300)
@given(
    st.lists(
        st.tuples(st.booleans(), st.booleans(), st.one_of(st.none(), st.integers(0, 3))),
        min_size=1,
        max_size=40,
    ),
    st.booleans(),
)
def test_source_rows_follow_the_rule(rows: list[tuple[bool, bool, int | None]], with_labels: bool) -> None:
    """The vectorized search for each entry's row of a column equals the row-by-row rule."""
    entries = [i for i, (entry, _, _) in enumerate(rows) if entry]
    if not entries:
        return
    present = [p for _, p, _ in rows]
    labels = [None if lab is None else float(lab) for _, _, lab in rows]
    for i in entries:
        labels[i] = labels[i] if labels[i] is not None else 0.0  # an entry always has a finite epoch
    lab = np.array([np.nan if v is None else v for v in labels]) if with_labels else None
    got = losses._source_rows(np, np.array(present), np.array(entries), lab, len(rows)).tolist()
    assert reference_sources(present, entries, labels if with_labels else None) == got


def make_log(epochs: list[int | float], metrics: list[float], lrs: list[float | None]) -> LossLog:
    """A LossLog built directly, for the anomaly finders."""
    n = len(epochs)
    return LossLog(
        "x.csv",
        "val_loss",
        "epoch",
        ("lr",),
        tuple(epochs),
        tuple(metrics[:n]),
        tuple((v,) for v in lrs[:n]),
        tuple(range(2, n + 2)),
        {},
        (),
    )


@settings(deadline=None, max_examples=150)
@given(
    st.lists(st.one_of(st.integers(0, 12), st.sampled_from([2.5, 7.5])), min_size=1, max_size=60),
    st.lists(st.sampled_from([0.5, math.nan, math.inf, 0.25]), min_size=60, max_size=60),
    st.lists(st.sampled_from([0.1, None]), min_size=60, max_size=60),
)
def test_vectorized_anomalies_equal_the_loop(
    epochs: list[int | float], metrics: list[float], lrs: list[float | None]
) -> None:
    """Anomalies found with numpy (long logs) equal those found entry by entry."""
    log = make_log(epochs, metrics, lrs)
    assert losses._anomalies(log, vectorized=False) == losses._anomalies(log, vectorized=True)


@settings(deadline=None, max_examples=200)
@given(st.lists(st.integers(0, 15), min_size=1, max_size=60))
def test_vectorized_surviving_history_equals_the_loop(epochs: list[int]) -> None:
    """The last run's entries, found with numpy, are those a backward scan keeps."""
    log = make_log(epochs, [0.5] * len(epochs), [0.1] * len(epochs))
    keep, floor = [], math.inf
    for i in reversed(range(len(epochs))):
        if epochs[i] < floor:
            keep.append(i)
            floor = epochs[i]
    old = losses._VECTOR_MIN
    losses._VECTOR_MIN = 0
    try:
        survived, dropped = log.surviving_history()
    finally:
        losses._VECTOR_MIN = old
    assert sorted(keep) == [i for i in range(len(epochs)) if i not in dropped]
    assert tuple(epochs[i] for i in sorted(keep)) == survived.epochs


def test_lr_rows_keep_bits(tmp_path: Path) -> None:
    """Equal lr rows share a tuple but -0.0, 0.0 and a missing lr stay apart."""
    path = write(
        tmp_path,
        "epoch,val_loss,lr\n"
        + "".join(f"{i},1,{v}\n" for i, v in enumerate(["0.0", "-0.0", "0.0", "", "-0.0"])),
    )
    log = read_losses(path)
    assert ["0.0", "-0.0", "0.0", "None", "-0.0"] == [repr(r[0]) for r in log.lrs]
    assert log.lrs[0] is log.lrs[2]


LINE_ENDINGS = ["\n", "\r\n", "\r"]


@pytest.mark.parametrize("end", LINE_ENDINGS, ids=["lf", "crlf", "cr"])
def test_line_endings_and_small_runs_read_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, end: str
) -> None:
    """LF, CRLF and CR files, read in runs of any size, give the same entries, lines and columns."""
    text = LIGHTNING.replace("\n", end)
    whole = read_losses(write(tmp_path, text))
    monkeypatch.setattr(logtable, "_CHUNK_CELLS", 5)
    small = read_losses(write(tmp_path, text, "small.csv"))
    want = read_losses(write(tmp_path, LIGHTNING, "lf.csv"))
    for log in (whole, small):
        assert (want.epochs, want.metrics, want.lrs, want.lines, dict(want.columns), want.skipped_lines) == (
            log.epochs,
            log.metrics,
            log.lrs,
            log.lines,
            dict(log.columns),
            log.skipped_lines,
        )


def test_a_repeated_header_is_named(tmp_path: Path) -> None:
    """A CSV appended by a second run that wrote its header again (fastai's history.csv, ``open(..., "a")``):
    the error names the line as a repeated header and what to do, not a cell that "is not a number"."""
    p = tmp_path / "log.csv"
    p.write_text("epoch,val_loss,lr\n1,0.5,0.1\n2,0.4,0.1\nepoch,val_loss,lr\n3,0.3,0.1\n")
    with pytest.raises(LossLogError, match=r"line 4 repeats the header .*split it there"):
        read_losses(p)
    p.write_text("epoch,val_loss,lr\n1,0.5,0.1\n2,oops,0.1\n")
    with pytest.raises(LossLogError, match=r"line 3, column 'val_loss': 'oops' is not a number"):
        read_losses(p)
