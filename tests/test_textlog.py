"""Printed training logs (terminal output) read as key/value rows with the epoch from the line."""

from __future__ import annotations

from pathlib import Path

import pytest

import plateau_forensics as pf
from plateau_forensics.errors import LossLogError
from plateau_forensics.textlog import TextLogParser

KERAS = """Epoch 1/3
8/8 ━━━━━━━━━━━━━━━━━━━━ 0s 2ms/step - loss: 0.5123 - val_loss: 0.4876 - learning_rate: 0.0010
Epoch 2/3
\r1/8 ━━━ 0s - loss: 0.6\r8/8 ━━━━━━━━━━━━━━━━━━━━ 0s 2ms/step - loss: 0.5023 - val_loss: 0.4776 - learning_rate: 0.0010
Epoch 2: ReduceLROnPlateau reducing learning rate to 0.0005000000237487257.
Epoch 3/3
8/8 ━━━━━━━━━━━━━━━━━━━━ 0s 2ms/step - loss: 0.4923 - val_loss: 0.4801 - learning_rate: 5.0000e-04
"""


@pytest.mark.parametrize("text, epochs, metrics, lrs", [
    ("Training...\nEpoch 12/50 - loss: 0.5100 - val_loss: 0.4321 - lr: 0.001\nSaving checkpoint\n"
     "Epoch 13/50 - loss: 0.5000 - val_loss: 0.4300 - lr: 0.001\n", (12, 13), (0.4321, 0.43), (0.001, 0.001)),
    ("epoch 3: train_loss=0.5123 val_loss=0.43 lr=1e-3\nepoch 4: train_loss=0.5023 val_loss=0.4321 lr=5e-4\n",
     (3, 4), (0.43, 0.4321), (1e-3, 5e-4)),
    (KERAS, (1, 2, 3), (0.4876, 0.4776, 0.4801), (0.001, 0.001, 0.0005)),
])
def test_printed_logs(tmp_path: Path, text: str, epochs: tuple, metrics: tuple, lrs: tuple) -> None:
    """Each printed format gives the epochs of its lines, the val loss and the lr column."""
    (tmp_path / "train.log").write_text(text)
    log = pf.read_losses(tmp_path / "train.log")
    assert log.epochs == epochs and log.metrics == metrics
    assert tuple(r[0] for r in log.lrs) == lrs


def test_printed_log_precision(tmp_path: Path) -> None:
    """A log printed with 4 decimals is read as 4 decimals."""
    (tmp_path / "t.log").write_text("".join(f"Epoch {i}/9 - val_loss: {0.5 - i / 100:.4f}\n" for i in range(1, 9)))
    assert pf.read_losses(tmp_path / "t.log").precision_of("val_loss").description == "4 decimals"


def test_key_printed_twice_is_an_error(tmp_path: Path) -> None:
    """Two different values for one key on one line is ambiguous: an error naming the line."""
    (tmp_path / "t.log").write_text("epoch 1: val_loss=0.5 val_loss=0.6\nepoch 2: val_loss=0.4\n")
    with pytest.raises(LossLogError, match="line 1 prints 'val_loss' twice"):
        pf.read_losses(tmp_path / "t.log")


def test_csv_is_not_mistaken_for_text(tmp_path: Path) -> None:
    """A CSV header keeps the file a CSV."""
    (tmp_path / "l.csv").write_text("epoch,val_loss\n1,0.5\n2,0.4\n")
    assert pf.read_losses(tmp_path / "l.csv").metrics == (0.5, 0.4)


def test_long_lines_are_read_not_skipped(tmp_path: Path) -> None:
    """A 200,000-character line (a progress bar without carriage returns) still gives its pairs."""
    (tmp_path / "t.log").write_text("epoch 1: val_loss=0.5\nepoch 2: " + "#" * 200_000 + " val_loss=0.4\n")
    assert (1, 2) == pf.read_losses(tmp_path / "t.log").epochs


def test_separators_and_foreign_digits_are_captured() -> None:
    """Values with '_' or non-ASCII digits are captured whole, so the reader can refuse them as numbers."""
    parser = TextLogParser("t.log")
    cells = parser.feed(1, "epoch 3: val_loss=1_000 lr=\u0660.\u0661")
    assert {"val_loss": "1_000", "lr": "\u0660.\u0661", "epoch": "3"} == cells
    assert parser.feed(2, "Saving checkpoint to run_5_layers") is None
    assert ["epoch", "val_loss", "lr"] == parser.header()


def test_printed_log_read_in_small_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a printed log a few rows at a time gives the same log as reading it at once."""
    from plateau_forensics import logtable

    (tmp_path / "t.log").write_text(KERAS * 3)
    whole = pf.read_losses(tmp_path / "t.log")
    monkeypatch.setattr(logtable, "_CHUNK_CELLS", 2)
    small = pf.read_losses(tmp_path / "t.log")
    assert (whole.epochs, whole.metrics, whole.lrs, whole.lines, whole.anomalies) == (
        small.epochs, small.metrics, small.lrs, small.lines, small.anomalies)


RESTART_LINES = [
    "Resuming from ckpt_e5.pt",
    "Restoring states from the checkpoint path at /runs/x/epoch=4.ckpt",
    "Restored all states from the checkpoint at /runs/x/epoch=4.ckpt",
    "Continuing training from checkpoint, will skip to saved global_step",
    "=> loading checkpoint 'model_best.pth.tar'",
    "Loading weights from ckpt_e5.pt",
    "Training resumed at epoch 6",
]
NOT_RESTART_LINES = [
    "Restoring model weights from the end of the best epoch: 12.",  # Keras EarlyStopping, not a resume
    "Saving checkpoint to ckpt_e5.pt",
    "resume=None",
    "Resume: False",
    "We resume the discussion later",
]


@pytest.mark.parametrize("line", RESTART_LINES)
def test_a_printed_resume_line_is_a_restart(tmp_path: Path, line: str) -> None:
    """A line saying the process resumed from a checkpoint marks a resume before the next row; the same line
    before the first row or after the last marks nothing (there is no row it separates)."""
    rows = [f"Epoch {i}/9 - loss: 0.5 - val_loss: {0.5 - i / 100:.4f} - lr: 0.001" for i in range(1, 9)]
    text = "\n".join([line, *rows[:5], line, line, *rows[5:], line]) + "\n"
    (tmp_path / "t.log").write_text(text)
    log = pf.read_losses(tmp_path / "t.log")
    assert log.epochs == tuple(range(1, 9))
    assert log.boundaries == (5,)


@pytest.mark.parametrize("line", NOT_RESTART_LINES)
def test_other_lines_are_not_restarts(tmp_path: Path, line: str) -> None:
    rows = [f"Epoch {i}/9 - loss: 0.5 - val_loss: {0.5 - i / 100:.4f}" for i in range(1, 9)]
    (tmp_path / "t.log").write_text("\n".join([*rows[:4], line, *rows[4:]]) + "\n")
    assert pf.read_losses(tmp_path / "t.log").boundaries == ()


def test_stitched_logs_keep_their_own_restarts(tmp_path: Path) -> None:
    """Two printed logs given in order: the second file's start and the restart printed inside the first are
    both resumes."""
    a = [f"Epoch {i}/9 - val_loss: {0.5 - i / 100:.4f}" for i in range(1, 7)]
    (tmp_path / "a.log").write_text("\n".join([*a[:3], "Resuming from ckpt_e3.pt", *a[3:]]) + "\n")
    (tmp_path / "b.log").write_text("".join(f"Epoch {i}/9 - val_loss: {0.5 - i / 100:.4f}\n" for i in (7, 8)))
    from plateau_forensics.losses import stitch

    log = stitch([pf.read_losses(tmp_path / "a.log"), pf.read_losses(tmp_path / "b.log")])
    assert log.boundaries == (3, 6)
