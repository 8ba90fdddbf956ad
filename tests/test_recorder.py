"""The flight recorder on live torch schedulers: every recorded line is what the real scheduler held, exactly.

The truth is read from the live torch objects by the test loop itself, next to the recorder; real torch is
the oracle, and the CLI's ``--explain`` is the reference for the words.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
from torch.optim.lr_scheduler import ReduceLROnPlateau  # noqa: E402

import plateau_forensics as pf  # noqa: E402
from plateau_forensics.cli import main  # noqa: E402
from plateau_forensics.errors import ConfigError, RecordingError  # noqa: E402
from plateau_forensics.recorder import current_rank, is_recording, read_recording, record  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "sample_checkpoints"
SEED_SCHED = {"factor": 0.8, "patience": 2, "cooldown": 3}  # seed000.truth.json "setup"


def make(lrs: list[float] | None = None, tensor_lr: bool = False, **kw: Any) -> tuple[Any, Any]:
    """A real SGD optimizer (one group per lr) and a real ReduceLROnPlateau on it."""
    lrs = lrs or [0.1]
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))],
               "lr": torch.tensor(lr) if tensor_lr else lr} for lr in lrs]
    opt = torch.optim.SGD(groups)
    return opt, ReduceLROnPlateau(opt, **kw)


def live(sched: Any, opt: Any) -> dict[str, Any]:
    """The state a test reads from the live objects, independently of the recorder."""
    return {"best": sched.best, "num_bad_epochs": sched.num_bad_epochs,
            "cooldown_counter": sched.cooldown_counter, "last_epoch": sched.last_epoch,
            "lr": tuple(float(g["lr"]) for g in opt.param_groups)}


def drive(sched: Any, opt: Any, metrics: list[float]) -> list[dict[str, Any]]:
    """Step the real scheduler over ``metrics``; per step, the lr before and the live state after."""
    truth = []
    for m in metrics:
        before = tuple(float(g["lr"]) for g in opt.param_groups)
        sched.step(m)
        truth.append({**live(sched, opt), "lr_in": before, "metric": float(m)})
    return truth


def same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))


def seed_rows() -> list[tuple[int, float]]:
    """(epoch, val_loss) of seed000.csv from epoch 11, where the run's last scheduler took its first step."""
    with open(SAMPLES / "seed000.csv", newline="") as f:
        return [(int(r["epoch"]), float(r["val_loss"])) for r in csv.DictReader(f) if int(r["epoch"]) >= 11]


# ------------------------------------------------------------------------------------ exactness

metric_values = st.one_of(st.floats(0.0, 2.0), st.floats(-1.0, 0.0),
                          st.sampled_from([0.5, 0.5, 1.0, math.nan, math.inf, -math.inf]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    metrics=st.lists(metric_values, min_size=1, max_size=30),
    mode=st.sampled_from(["min", "max"]),
    patience=st.integers(-1, 3),
    cooldown=st.integers(0, 3),
    factor=st.sampled_from([0.1, 0.5, 0.8]),
    threshold_mode=st.sampled_from(["rel", "abs"]),
    lrs=st.lists(st.sampled_from([0.1, 0.05, 1e-3]), min_size=1, max_size=3),
    min_lr=st.sampled_from([0.0, 1e-3, 0.04]),
)
def test_every_line_is_the_live_state(tmp_path_factory: pytest.TempPathFactory, metrics: list[float],
                                      mode: str, patience: int, cooldown: int, factor: float,
                                      threshold_mode: str, lrs: list[float], min_lr: float) -> None:
    """For random configs and metrics (NaN, inf, ties), each recorded step is the live scheduler's state."""
    path = tmp_path_factory.mktemp("rec") / "plateau.jsonl"
    opt, sched = make(lrs, mode=mode, patience=patience, cooldown=cooldown, factor=factor,
                      threshold_mode=threshold_mode, min_lr=min_lr)
    with record(sched, opt, path, explain=True, logger=logging.getLogger("test.silent")):
        truth = drive(sched, opt, metrics)
    rec = read_recording(path)
    assert len(rec) == len(truth)
    for step, t in zip(rec.steps, truth, strict=True):
        assert same_float(step.metric, t["metric"])
        assert step.lr_in == t["lr_in"] and step.lr == t["lr"]
        assert same_float(step.best, t["best"])
        assert (step.num_bad_epochs, step.cooldown_counter, step.last_epoch) == (
            t["num_bad_epochs"], t["cooldown_counter"], t["last_epoch"])
    assert rec.verify() == []
    log = pf.read_losses(path)  # the same file is an ordinary loss log
    assert all(same_float(a, t["metric"]) for a, t in zip(log.metrics, truth, strict=True))
    assert log.epochs == tuple(t["last_epoch"] for t in truth)
    assert [row[0] for row in log.lrs] == [t["lr_in"][0] for t in truth]


def test_tensor_lrs_replay_in_their_dtype(tmp_path: Path) -> None:
    """Tensor lrs (float32, torch >= 2.10 rounds each new lr into them) are recorded and replayed exactly."""
    opt, sched = make([0.5, 0.3], tensor_lr=True, patience=0, factor=0.3)
    with record(sched, opt, tmp_path / "p.jsonl"):
        truth = drive(sched, opt, [1.0, 1.0, 1.0, 1.0])
    rec = read_recording(tmp_path / "p.jsonl")
    assert rec.segments[0].raw["lr_dtypes"] == ["float32", "float32"]
    assert [s.lr for s in rec.steps] == [t["lr"] for t in truth]
    assert truth[-1]["lr"][0] != 0.5 * 0.3 ** 3  # float32 rounding is real: the check below means something
    assert rec.verify() == []


def test_changed_hyperparameters_are_replayed_with_the_new_values(tmp_path: Path) -> None:
    """Code that assigns ``scheduler.patience`` or the counters mid-run is written into the next line."""
    opt, sched = make(patience=3)
    with record(sched, opt, tmp_path / "p.jsonl"):
        truth = drive(sched, opt, [1.0, 1.1, 1.2])
        sched.patience = 0
        sched.num_bad_epochs = 0
        truth += drive(sched, opt, [1.3, 1.4])
    rec = read_recording(tmp_path / "p.jsonl")
    assert [s.lr for s in rec.steps] == [t["lr"] for t in truth]
    assert rec.steps[3].config["patience"] == 0 and rec.steps[3].before[1] == 0
    assert truth[3]["lr"] != truth[2]["lr"]  # patience 0 reduced at once: the replay must see the new value
    assert rec.verify() == ["line 5: the counters changed between two steps (before epoch 4: (1.0, 0, 0, 3))"]


# ------------------------------------------------------------------------------------ the words


def test_reduction_line_in_the_seeds_words(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The seed run's reductions are logged at the epochs torch reduced; epoch 35 in the issue's words."""
    rows = seed_rows()
    opt, sched = make([0.0015], **SEED_SCHED)
    epoch = {"now": 0}
    caplog.set_level(logging.INFO, logger="plateau_forensics")
    with record(sched, opt, tmp_path / "p.jsonl", epoch=lambda: epoch["now"]):
        reduced = []
        for e, v in rows:
            epoch["now"] = e
            before = opt.param_groups[0]["lr"]
            sched.step(v)
            if opt.param_groups[0]["lr"] != before:
                reduced.append(e)
    lines = [r.getMessage() for r in caplog.records if r.name == "plateau_forensics"]
    assert [int(line.split(":")[0].removeprefix("epoch ")) for line in lines] == reduced
    assert ("epoch 35: val_loss 0.4186 not below 0.4143 for 3 epochs (patience 2): lr 0.0012 -> 0.00096, "
            "cooldown 3") in lines


def test_explain_lines_are_the_clis_explain(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With ``explain=True`` each step logs the line ``plateau-trace --explain`` prints for the same log."""
    rows = seed_rows()
    log = tmp_path / "seed.csv"
    log.write_text("epoch,val_loss\n" + "".join(f"{e},{v!r}\n" for e, v in rows), encoding="ascii")
    opt, sched = make([0.0015], **SEED_SCHED)
    epoch = {"now": 0}
    caplog.set_level(logging.INFO, logger="plateau_forensics")
    with record(sched, opt, None, epoch=lambda: epoch["now"], explain=True):
        for e, v in rows:
            epoch["now"] = e
            sched.step(v)
    ours = [r.getMessage() for r in caplog.records if not r.getMessage().startswith("epoch ")]
    out = CliRunner().invoke(main, [str(log), "--lr", "0.0015", "--patience", "2", "--cooldown", "3",
                                    "--factor", "0.8", "--explain"])
    assert out.exit_code == 0, out.output
    cli = [line for line in out.output.splitlines() if line[:1].isdigit()]
    assert len(ours) == len(rows) and ours == cli


def test_verbose_prints_the_lost_line(capsys: pytest.CaptureFixture[str]) -> None:
    """``verbose=True`` prints each reduction, as torch's removed ``verbose=True`` did."""
    opt, sched = make(patience=0, factor=0.5)
    with record(sched, opt, None, verbose=True):
        sched.step(1.0)
        sched.step(2.0)
    assert capsys.readouterr().out == ("epoch 2: val_loss 2 not below 0.9999 for 1 epoch (patience 0): lr "
                                       "0.1 -> 0.05, cooldown 0\n")


def test_suppressed_reduction_says_why(caplog: pytest.LogCaptureFixture) -> None:
    """A reduction due at ``min_lr`` changes no lr: said once, with the floor, then at DEBUG till lr moves."""
    opt, sched = make([0.01], patience=0, factor=0.5, min_lr=0.01)
    caplog.set_level(logging.DEBUG, logger="plateau_forensics")
    with record(sched, opt, None):
        sched.step(1.0)
        sched.step(2.0)
        sched.step(3.0)  # due again: the same news, told at DEBUG only
        opt.param_groups[0]["lr"] = 0.02  # another writer moves the lr: the next reduction is news again
        sched.step(4.0)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "epoch 2: val_loss 2 not below 0.9999 for 1 epoch (patience 0): reduction due but "
                 "suppressed, lr stays 0.01 (lr 0.01 at min_lr 0.01), cooldown 0"),
        ("DEBUG", "epoch 3: val_loss 3 not below 0.9999 for 1 epoch (patience 0): reduction due but "
                  "suppressed, lr stays 0.01 (lr 0.01 at min_lr 0.01), cooldown 0"),
        ("INFO", "epoch 4: val_loss 4 not below 0.9999 for 1 epoch (patience 0): lr 0.02 -> 0.01, "
                 "cooldown 0")]


# ------------------------------------------------------------------------------------ one instance only


def test_only_this_instance_changes(tmp_path: Path) -> None:
    """The recorded scheduler's state_dict, pickle and class stay torch's; another scheduler is untouched."""
    opt, sched = make(patience=1)
    opt2, other = make(patience=1)
    keys = list(sched.state_dict())
    rec = record(sched, opt, tmp_path / "p.jsonl")
    sched.step(1.0)
    other.step(1.0)
    assert isinstance(sched, ReduceLROnPlateau) and type(other) is ReduceLROnPlateau
    assert list(sched.state_dict()) == keys
    torch.save({"scheduler": sched.state_dict()}, tmp_path / "ck.pt")
    assert torch.load(tmp_path / "ck.pt", weights_only=True)["scheduler"]["last_epoch"] == 1
    assert type(pickle.loads(pickle.dumps(sched))) is ReduceLROnPlateau
    with pytest.raises(ConfigError, match="already recorded"):
        record(sched, opt, tmp_path / "q.jsonl")
    rec.close()
    assert type(sched) is ReduceLROnPlateau
    sched.step(1.0)
    assert len(read_recording(tmp_path / "p.jsonl")) == 1  # nothing after close()


def test_refuses_what_it_cannot_record(tmp_path: Path) -> None:
    """Another optimizer, a non-plateau scheduler and a metric named like a recorded key are refused."""
    opt, sched = make()
    opt2, _ = make()
    with pytest.raises(ConfigError, match="not the one the scheduler steps"):
        record(sched, opt2, tmp_path / "p.jsonl")
    with pytest.raises(ConfigError, match="needs a torch ReduceLROnPlateau"):
        record(torch.optim.lr_scheduler.StepLR(opt, 2), opt, tmp_path / "p.jsonl")
    for name in ("lr", "epoch", "best", "lr_head"):
        with pytest.raises(ConfigError, match="metric name"):
            record(sched, opt, tmp_path / "p.jsonl", metric=name)
    assert not (tmp_path / "p.jsonl").exists()


def test_load_state_dict_is_recorded_with_what_it_replaced(tmp_path: Path) -> None:
    """A load on a recorded scheduler writes a line with the constructor's values the checkpoint replaced."""
    opt, sched = make(patience=1, factor=0.5)
    drive(sched, opt, [1.0, 1.1, 1.2])
    saved = sched.state_dict()
    opt2, resumed = make(patience=5, factor=0.5)
    with record(resumed, opt2, tmp_path / "p.jsonl") as rec:
        resumed.load_state_dict(saved)
        truth = drive(resumed, opt2, [1.3])
    assert [dict(e.overridden) for e in rec.loads] == [{"patience": (5, 1)}]
    back = read_recording(tmp_path / "p.jsonl")
    assert back.loads[0].overridden == {"patience": (5, 1)}
    assert back.steps[0].before == (saved["best"], saved["num_bad_epochs"], saved["cooldown_counter"],
                                    saved["last_epoch"])
    assert back.steps[0].last_epoch == truth[0]["last_epoch"] == 4
    assert back.verify() == []


def test_appended_runs_are_segments_and_checkpoints_are_found(tmp_path: Path) -> None:
    """Two runs appending to one file are two segments; a saved state is found by equality, in its own."""
    path = tmp_path / "p.jsonl"
    opt, sched = make(patience=1, factor=0.5)
    with record(sched, opt, path):
        drive(sched, opt, [1.0, 0.9, 0.95, 0.97])
    saved = sched.state_dict()
    opt2, resumed = make(patience=1, factor=0.5)
    with record(resumed, opt2, path):
        resumed.load_state_dict(saved)
        drive(resumed, opt2, [0.96, 0.8])
    rec = read_recording(path)
    assert [s.segment for s in rec.steps] == [0, 0, 0, 0, 1, 1]
    hits = rec.find(saved)
    assert [(s.segment, s.last_epoch) for s in hits] == [(0, 4)]
    assert rec.steps[4].before == (saved["best"], saved["num_bad_epochs"], saved["cooldown_counter"], 4)


# ------------------------------------------------------------------------------------ the file


def test_cli_reads_the_recording_as_a_log(tmp_path: Path) -> None:
    """``plateau-trace CKPT plateau.jsonl`` places a checkpoint saved mid-run after the step it followed."""
    rows = seed_rows()
    opt, sched = make([0.0015], **SEED_SCHED)
    epoch = {"now": 0}
    saved_at = 33
    with record(sched, opt, tmp_path / "plateau.jsonl", epoch=lambda: epoch["now"]):
        for e, v in rows:
            epoch["now"] = e
            sched.step(v)
            if e == saved_at:
                torch.save({"scheduler": sched.state_dict(), "optimizer": opt.state_dict()},
                           tmp_path / "ck.pt")
    assert is_recording(tmp_path / "plateau.jsonl") and not is_recording(SAMPLES / "seed000.csv")
    out = CliRunner().invoke(main, [str(tmp_path / "ck.pt"), str(tmp_path / "plateau.jsonl"), "--format",
                                    "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["alignment"]["epoch"] == saved_at
    found = read_recording(tmp_path / "plateau.jsonl").find(pf.load_checkpoint(tmp_path / "ck.pt"))
    assert [s.epoch for s in found] == [saved_at]


def test_non_finite_values_are_standard_json(tmp_path: Path) -> None:
    """NaN and inf are written as strings (standard JSON) and read back as the same floats."""
    opt, sched = make(mode="max")
    with record(sched, opt, tmp_path / "p.jsonl"):
        drive(sched, opt, [math.nan, math.inf, -math.inf])
    for line in (tmp_path / "p.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    rec = read_recording(tmp_path / "p.jsonl")
    assert math.isnan(rec.steps[0].metric) and rec.steps[0].best == -math.inf
    assert rec.steps[1].metric == math.inf == rec.steps[1].best
    assert math.isnan(pf.read_losses(tmp_path / "p.jsonl").metrics[0])


HEADER = ('{"plateau_recording": {"version": 1, "rules": "torch", "metric": "val_loss", "rank": 0, '
          '"config": {}, "state": {"best": "inf", "num_bad_epochs": 0, "cooldown_counter": 0, '
          '"last_epoch": 0}}}\n')


@pytest.mark.parametrize("text, message", [
    ('{"epoch": 1, "val_loss": 0.5}\n', "line 1 comes before any 'plateau_recording' header"),
    ("", "the file is empty"),
    (HEADER + '{"epoch": 1,\n', "line 2 is not valid JSON"),
    (HEADER + '{"epoch": 1, "val_loss": "low", "lr": 0.1}\n', "line 2: 'best' is None, not a number"),
    ('{"plateau_recording": {"version": 7}}\n', "recording format version 7"),
], ids=["no-header", "empty", "bad-json", "missing-value", "version"])
def test_bad_recordings_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    """A damaged recording raises one RecordingError naming the line; nothing is guessed."""
    path = tmp_path / "p.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RecordingError) as err:
        read_recording(path)
    assert message in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------ ranks, failures, imports


def test_ranks_write_their_own_file_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 0 writes the path; another rank writes only to a ``{rank}`` path; ``$RANK`` gives the rank."""
    opt, sched = make()
    quiet = record(sched, opt, tmp_path / "p.jsonl", rank=1)
    sched.step(1.0)
    assert not quiet.active and not (tmp_path / "p.jsonl").exists()
    monkeypatch.setenv("RANK", "3")
    assert current_rank() == 3
    with record(sched, opt, tmp_path / "p.rank{rank}.jsonl") as rec:
        sched.step(1.0)
    assert rec.rank == 3 and read_recording(tmp_path / "p.rank3.jsonl").steps[0].rank == 3


def test_a_full_disk_stops_the_recording_not_the_training(caplog: pytest.LogCaptureFixture) -> None:
    """Writing to /dev/full fails: the error is logged once, and the scheduler steps as without a recorder."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    opt, sched = make(patience=0, factor=0.5)
    opt2, plain = make(patience=0, factor=0.5)
    with record(sched, opt, "/dev/full") as rec:
        truth = drive(sched, opt, [1.0, 2.0, 3.0])
    assert isinstance(rec.failed, OSError)
    assert [r.levelname for r in caplog.records if "stopped recording" in r.getMessage()] == ["ERROR"]
    assert truth == drive(plain, opt2, [1.0, 2.0, 3.0])


def test_modules_import_no_framework() -> None:
    """Importing the recorder, the guard and the callbacks loads neither torch, pandas nor a framework."""
    code = ("import sys, plateau_forensics.recorder, plateau_forensics.guard, plateau_forensics.callbacks\n"
            "print(' '.join(sorted(m for m in ('torch', 'pandas', 'lightning', 'transformers', 'keras') "
            "if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
