"""Long logs (over ``LONG_LOG_ROWS`` rows): the plain story on the engine, judged against live torch runs.

Each run is a real ReduceLROnPlateau stepped row by row; its states are recorded from the live objects and
the log and checkpoint are what such a run writes (``torch.save`` of the scheduler and optimizer states).
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from torch_oracle import lrs_of, make_scheduler, same

import plateau_forensics as pf
from plateau_forensics.longlog import LONG_LOG_ROWS
from plateau_forensics.report import forecast_sentence

ROWS = LONG_LOG_ROWS + 1000
KW = {"patience": 10, "factor": 0.97, "cooldown": 2}


def metrics(n: int, seed: int) -> list[float]:
    """A noisy falling curve with long plateaus: many reductions, improvements between them."""
    rng = random.Random(seed)
    m, out = 1.0, []
    for i in range(n):
        m = m * (0.9997 if i % 400 < 150 else 1.0) + rng.random() * 1e-3 - 5e-4
        out.append(m)
    return out


def run_torch(values: list[float], *, lr_logged_after: bool = False, external_at: int | None = None,
              save_at: int | None = None, restore: bool = True, ckpt: Path | None = None) -> dict[str, Any]:
    """Step a real scheduler over ``values``; returns the rows to log and the live states after each step."""
    opt, sched = make_scheduler([0.1], KW)
    rows, truth = [], []
    for i, v in enumerate(values):
        if external_at is not None and i == external_at:
            for g in opt.param_groups:
                g["lr"] = g["lr"] * 0.3
        lr_before = lrs_of(opt)[0]
        sched.step(v)
        rows.append((i, v, lrs_of(opt)[0] if lr_logged_after else lr_before))
        truth.append((float(sched.best), sched.num_bad_epochs, sched.cooldown_counter, lrs_of(opt)[0]))
        if save_at is not None and i == save_at:
            assert ckpt is not None
            torch.save({"epoch": i, "optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict()}, ckpt)
            state = torch.load(ckpt, weights_only=True)
            opt, sched = make_scheduler([0.1], KW)  # the resumed process
            opt.load_state_dict(state["optimizer"])
            if restore:
                sched.load_state_dict(state["lr_scheduler"])
    return {"rows": rows, "truth": truth}


def write_log(path: Path, rows: list[tuple[int, float, float]]) -> Path:
    path.write_text("epoch,val_loss,lr\n" + "".join(f"{e},{m!r},{lr!r}\n" for e, m, lr in rows))
    return path


def assert_steps_are_torch(t: pf.Trace, truth: list[tuple[float, int, int, float]]) -> None:
    assert len(t) == len(truth)
    for i, (best, nb, cd, lr) in enumerate(truth):
        s = t.step(i, explain=False)
        assert s.known and s.lr_known, i
        assert (same(s.best, best), s.num_bad_epochs, s.cooldown_counter, s.lr[0]) == (True, nb, cd, lr), i


@pytest.fixture(scope="module")
def values() -> list[float]:
    return metrics(ROWS, seed=7)


class TestTeaching:
    """A long log alone, hyperparameters given."""

    def test_clean_log_every_step_is_torch(self, tmp_path: Path, values: list[float]) -> None:
        """The lr logged before step: a clean verdict, each step equal to the live scheduler's."""
        run = run_torch(values)
        t = pf.trace(None, write_log(tmp_path / "log.csv", run["rows"]), config=pf.PlateauConfig(**KW))
        assert t.verdict.story == () and not t.verdict.ambiguous
        lrs = [row[3] for row in run["truth"]]
        assert sum(1 for b, a in zip(lrs, lrs[1:], strict=False) if a < b) > 5  # reductions happened
        assert_steps_are_torch(t, run["truth"])
        assert any("long log" in n for n in t.notes)

    def test_lr_logged_after_step(self, tmp_path: Path, values: list[float]) -> None:
        """The lr logged after step() reads as such (not as an outside writer), the steps still torch's."""
        run = run_torch(values, lr_logged_after=True)
        t = pf.trace(None, write_log(tmp_path / "log.csv", run["rows"]), config=pf.PlateauConfig(**KW))
        assert ("lr-logged-after-step",) == t.verdict.story and not t.verdict.ambiguous
        assert "lr-logged-after-step" in [f.code for f in t.findings]
        assert "external-lr-change" not in [f.code for f in t.findings]
        assert_steps_are_torch(t, run["truth"])

    def test_outside_writer_is_ambiguous_not_a_story(self, tmp_path: Path, values: list[float]) -> None:
        """Code that scales the lr mid-run: the fast path does not pick a cause; it says what would decide,
        and the state from the first unexplained row on is unknown (the forecast too)."""
        at = ROWS // 2
        run = run_torch(values, external_at=at)
        t = pf.trace(None, write_log(tmp_path / "log.csv", run["rows"]), config=pf.PlateauConfig(**KW))
        v = t.verdict
        assert v.ambiguous and "external-lr-change" in [c[0] for c in (v.story, *v.alternatives)]
        assert "--full-search" in v.decide
        (amb,) = [f for f in t.findings if f.code == "ambiguous"]
        assert amb.epoch == at and amb.severity == "warning"
        assert t.step(at - 1, explain=False).known and not t.step(at, explain=False).known
        assert "unknown" in forecast_sentence(t)
        for i in range(at):  # before the outside write the run is determined, and torch's
            best, nb, cd, lr = run["truth"][i]
            s = t.step(i, explain=False)
            assert (same(s.best, best), s.num_bad_epochs, s.cooldown_counter, s.lr[0]) == (True, nb, cd, lr)

    def test_full_search_runs_the_stories(self, tmp_path: Path, values: list[float]) -> None:
        """--full-search takes the stories' path: no long-log note, the same clean verdict."""
        run = run_torch(values)
        t = pf.trace(None, write_log(tmp_path / "log.csv", run["rows"]), config=pf.PlateauConfig(**KW),
                     full_search=True)
        assert not any("long log" in n for n in t.notes)
        assert t.verdict.story == () and not t.verdict.ambiguous
        assert_steps_are_torch(t, run["truth"])


class TestWithCheckpoint:
    """A long log and the checkpoint saved in the middle of it."""

    def test_restored_resume(self, tmp_path: Path, values: list[float]) -> None:
        """A resume that restored everything: placed at the saved row, clean, every step torch's."""
        save = ROWS // 2
        ck = tmp_path / "ck.pt"
        run = run_torch(values, save_at=save, ckpt=ck)
        t = pf.trace(ck, write_log(tmp_path / "log.csv", run["rows"]))
        assert t.alignment is not None and t.alignment.epoch == save
        assert t.verdict.story == () and not t.verdict.ambiguous
        assert_steps_are_torch(t, run["truth"])

    def test_scheduler_not_restored_is_not_called_clean(self, tmp_path: Path, values: list[float]) -> None:
        """The resumed process forgot the scheduler's state: its lrs disagree with a continued replay, and
        the fast path says so (ambiguous, scheduler-not-restored a candidate) instead of a clean story."""
        save = ROWS // 2
        ck = tmp_path / "ck.pt"
        carried = run_torch(values, save_at=save, ckpt=ck)
        run = run_torch(values, save_at=save, ckpt=ck, restore=False)
        assert [r[2] for r in run["rows"]] != [r[2] for r in carried["rows"]]  # the mistake shows in the log
        t = pf.trace(ck, write_log(tmp_path / "log.csv", run["rows"]))
        v = t.verdict
        assert v.ambiguous and ("scheduler-not-restored",) in (v.story, *v.alternatives)
        assert not t.step(len(t) - 1, explain=False).known

    def test_checkpoint_not_in_the_plain_replay(self, tmp_path: Path, values: list[float]) -> None:
        """A checkpoint from another run: its counters are not where its last_epoch falls; ambiguous, all
        unknown, the reason in the alignment note."""
        ck = tmp_path / "ck.pt"
        other = [v * 1.5 + 0.1 * math.sin(i) for i, v in enumerate(values)]
        run_torch(other, save_at=ROWS // 3, ckpt=ck)
        run = run_torch(values)
        t = pf.trace(ck, write_log(tmp_path / "log.csv", run["rows"]))
        assert t.verdict.ambiguous and t.alignment is not None and t.alignment.epoch is None
        assert not t.step(0, explain=False).known


def test_cli_full_search_flag(tmp_path: Path, values: list[float]) -> None:
    """``--full-search`` reaches the API: the long-log note is there without it and gone with it."""
    from click.testing import CliRunner

    from plateau_forensics.cli import main

    log = write_log(tmp_path / "log.csv", run_torch(values)["rows"])
    args = [str(log), "--patience", "10", "--factor", "0.97", "--cooldown", "2"]
    plain = CliRunner().invoke(main, args)
    full = CliRunner().invoke(main, [*args, "--full-search"])
    assert 0 == plain.exit_code == full.exit_code, plain.output + full.output
    assert "long log (" in plain.output and "long log (" not in full.output
