"""The same real run logged in the shapes other tools export gives the same trace."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from conftest import SAMPLES

import plateau_forensics as pf


def _rows() -> list[dict[str, str]]:
    with open(SAMPLES / "seed000.csv") as f:
        return list(csv.DictReader(f))


def _wandb_export(path: Path) -> Path:
    """The seed000 log as a W&B history export: ``_step``, ``_runtime``, slash-named metrics."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["_step", "_runtime", "train/loss", "val/loss", "lr"])
        for i, r in enumerate(_rows()):
            w.writerow([r["epoch"], f"{1.5 * i:.3f}", r["train_loss"], r["val_loss"], r["lr"]])
    return path


def _jsonl(path: Path) -> Path:
    """The seed000 log as JSON Lines, values as JSON numbers (read back exactly)."""
    with open(path, "w") as f:
        for r in _rows():
            f.write(json.dumps({"epoch": int(r["epoch"]), "val_loss": float(r["val_loss"]), "lr": float(r["lr"])}) + "\n")
    return path


def _signature(t: pf.Trace) -> tuple:
    return (t.alignment.epoch, t.alignment.epoch_offset, [(s.epoch, s.best, s.num_bad_epochs, s.cooldown_counter, s.lr)
                                                           for s in t.steps], [f.code for f in t.findings])


def test_wandb_export_and_jsonl_equal_csv(tmp_path: Path) -> None:
    """CSV, a W&B-style export (``_step``, ``val/loss``) and JSON Lines of one run trace identically."""
    reference = _signature(pf.trace(SAMPLES / "seed000.pt", SAMPLES / "seed000.csv"))
    wandb = pf.trace(SAMPLES / "seed000.pt", _wandb_export(tmp_path / "wandb.csv"))
    assert wandb.log.metric_column == "val/loss" and wandb.log.epoch_column == "_step"
    assert _signature(wandb) == reference
    assert _signature(pf.trace(SAMPLES / "seed000.pt", _jsonl(tmp_path / "log.jsonl"))) == reference
