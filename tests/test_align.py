"""Placing a checkpoint in its log: found rows, inferred initial lrs, restarts, old torch states."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch
from conftest import SAMPLES
from torch_oracle import make_scheduler

import plateau_forensics as pf
from plateau_forensics.align import align, infer_initial_lrs
from plateau_forensics.state import PlateauConfig, from_state_dict


def without_lr_column(src: Path, dst: Path) -> Path:
    """Copy a sample log, dropping its lr column(s) (values kept byte for byte)."""
    with open(src, newline="") as f:
        rows = list(csv.reader(f))
    keep = [i for i, h in enumerate(rows[0]) if not h.startswith("lr")]
    with open(dst, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([[r[i] for i in keep] for r in rows])
    return dst


def test_seed_story_without_lr_column(tmp_path: Path) -> None:
    """With no lr column the checkpoint is still placed at epoch 33, and the initial lr is inferred exactly."""
    log = without_lr_column(SAMPLES / "seed000.csv", tmp_path / "seed.csv")
    t = pf.trace(SAMPLES / "seed000.pt", log)
    assert (t.alignment.epoch, t.alignment.epoch_offset, t.alignment.start_index) == (33, 10, 10)
    assert t.alignment.initial_lrs_source == "inferred"
    with open(SAMPLES / "seed000.csv") as f:
        logged = [float(r["lr"]) for r in csv.DictReader(f)]
    assert t.alignment.initial_lrs == (logged[10],)  # the lr used during epoch 11, the scheduler's first step
    assert any("inferred" in n for n in t.notes)


def test_inference_reproduces_saved_lr() -> None:
    """Undoing k reductions of 0.8 gives lrs whose forward replay reproduces the saved lr bit for bit."""
    cfg = PlateauConfig(patience=0, factor=0.8)
    metrics = [1.0, 2.0, 2.0, 2.0]
    forward = pf.replay(metrics, cfg, lrs=[0.0015]).lrs
    guess, exact = infer_initial_lrs(cfg, metrics, forward)
    assert exact and guess == (0.0015,)


def test_no_row_matches(tmp_path: Path) -> None:
    """A log that never reproduces the saved state gives a null alignment and a note, not an error."""
    _, sched = make_scheduler([0.1], {"patience": 2})
    for m in (5.0, 5.0, 5.0):
        sched.step(m)
    torch.save({"scheduler": sched.state_dict()}, tmp_path / "c.pt")
    (tmp_path / "l.csv").write_text("epoch,val_loss\n1,1.0\n2,0.9\n3,0.8\n")
    t = pf.trace(tmp_path / "c.pt", tmp_path / "l.csv")
    assert t.alignment.epoch is None and t.alignment.candidates == ()
    assert len(t) == 3 and any("no row" in n for n in t.notes)


def test_every_row_of_a_fresh_run_is_a_candidate_only_where_lr_agrees(tmp_path: Path) -> None:
    """Rows whose counters repeat the saved ones but whose lr differs are not candidates."""
    t = pf.trace(SAMPLES / "clean.pt", SAMPLES / "clean.csv")
    assert t.alignment.candidates == (20,)
    assert t.alignment.lr_matches is True


def test_torch_1_3_state_counts_from_minus_one() -> None:
    """A state in torch <= 1.3's key order without _last_lr has a -1-based last_epoch (n steps -> n-1)."""
    raw = {"factor": 0.1, "min_lrs": [0.0], "patience": 1, "verbose": False, "cooldown": 0, "cooldown_counter": 0,
           "mode": "min", "threshold": 1e-4, "threshold_mode": "rel", "best": 0.5, "num_bad_epochs": 1,
           "mode_worse": math.inf, "eps": 1e-8, "last_epoch": 2}
    _, state = from_state_dict(raw)
    assert state.last_epoch_base == -1 and state.steps == 3
    cfg, _ = from_state_dict(raw)
    a = align(cfg, state, [0.7, 0.5, 0.6, 0.4], [1, 2, 3, 4], saved_lrs=[0.1])
    assert a.epoch == 3 and a.start_index == 0  # three steps: epochs 1-3


def test_modern_state_counts_from_zero() -> None:
    """A torch 2.13 state is 0-based: last_epoch equals the number of steps."""
    _, sched = make_scheduler([0.1], {})
    for m in (1.0, 2.0):
        sched.step(m)
    _, state = from_state_dict(sched.state_dict())
    assert state.last_epoch_base == 0 and state.steps == 2
