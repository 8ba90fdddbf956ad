"""The HF Trainer fixtures in ``sample_checkpoints/hf/`` are read safely and tell their story.

Each scenario's truth.json holds ``live``, what make_hf.py recorded from the real scheduler while the
Trainer ran. The fact tests below run on the committed folders and on a fresh regeneration; nothing
compares weights, rng states or numbers between the two (another CPU trains to other last bits).
"""

from __future__ import annotations

import builtins
import importlib.util
import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from fixture_truth import (
    SAMPLES,
    Live,
    assert_tool_tells_the_truth,
    named,
    read_truth,
    regenerate,
    spy_on_opens,  # noqa: E402 - after importorskip
    warnings,
)

import plateau_forensics as pf  # noqa: E402

HF = SAMPLES / "hf"
SCENARIOS = ("epoch", "eval_steps")
CHECKPOINTS = [f"{s}/{c.name}" for s in SCENARIOS for c in sorted((HF / s).glob("checkpoint-*"))]
#: files of a checkpoint folder that are pickles needing weights_only=False: never to be opened
PICKLES = ("training_args.bin", "rng_state.pth")
CAN_TRAIN = all(importlib.util.find_spec(m) is not None
                for m in ("transformers", "accelerate", "safetensors"))


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh ``make_hf.py`` run on this machine (real Trainer training)."""
    if not CAN_TRAIN:
        pytest.skip("regenerating the HF fixtures needs transformers, accelerate and safetensors")
    return regenerate("make_hf.py", tmp_path_factory.mktemp("hf"))


@pytest.fixture(scope="module", params=["committed", "regenerated"])
def folder(request: pytest.FixtureRequest) -> Path:
    """The committed folders, then a regeneration: the fact tests hold for both."""
    return HF if request.param == "committed" else request.getfixturevalue("regenerated")


def trainer_state(ckpt: str, folder: Path = HF) -> dict[str, Any]:
    return json.loads((folder / ckpt / "trainer_state.json").read_text())


def truth(folder: Path, scenario: str) -> dict[str, Any]:
    return read_truth(folder / scenario / "truth.json")


def evals(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in history if "eval_loss" in e]


def lr_used_per_eval(history: list[dict[str, Any]]) -> list[float]:
    """Per evaluation, the ``learning_rate`` of the last train log entry since the previous evaluation."""
    out, current = [], None
    for entry in history:
        current = entry.get("learning_rate", current)
        if "eval_loss" in entry:
            out.append(current)
    return out






# ------------------------------------------------------------------------------ regeneration


def test_regenerated_folders_are_the_committed_ones(regenerated: Path) -> None:
    """make_hf.py writes the committed scenarios, checkpoint folders and file names, and nothing else."""
    def listing(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*"))

    assert listing(regenerated) == listing(HF)
    assert len(CHECKPOINTS) == 4


def test_fixture_stays_small() -> None:
    """All HF fixture files together stay under 400 KB."""
    assert sum(p.stat().st_size for p in HF.rglob("*") if p.is_file()) < 400_000


# ------------------------------------------------------------------------------ the facts the fixture shows


@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_last_epoch_counts_evaluations(folder: Path, ckpt: str) -> None:
    """scheduler.pt's last_epoch equals the number of eval_loss entries in the checkpoint's trainer_state."""
    sched = torch.load(folder / ckpt / "scheduler.pt", weights_only=True)
    state = trainer_state(ckpt, folder)
    ev = evals(state["log_history"])
    assert sched["last_epoch"] == len(ev)
    assert ev[-1]["step"] == state["global_step"] == int(ckpt.rsplit("-", 1)[1])
    assert state["log_history"][-1] is ev[-1]  # saved right after its own evaluation


@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_pickles_refuse_weights_only(folder: Path, ckpt: str) -> None:
    """training_args.bin and rng_state.pth need weights_only=False, so a safe reader must leave them alone."""
    for name in PICKLES:
        with pytest.raises(pickle.UnpicklingError):
            torch.load(folder / ckpt / name, weights_only=True)


# ------------------------------------------------------------------------------ load_checkpoint


@pytest.mark.parametrize("loader", ["builtin", "torch"])
@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_load_checkpoint_reads_the_folder(folder: Path, ckpt: str, loader: str) -> None:
    """load_checkpoint on checkpoint-N/ gives hf-trainer, both param groups' lrs, trainer_state's counters."""
    ck = pf.load_checkpoint(folder / ckpt, loader=loader)
    sched = torch.load(folder / ckpt / "scheduler.pt", weights_only=True)
    opt = torch.load(folder / ckpt / "optimizer.pt", weights_only=True)
    state = trainer_state(ckpt, folder)
    assert ck.framework == "hf-trainer"
    assert ck.optimizer_lrs == tuple(g["lr"] for g in opt["param_groups"]) and len(ck.optimizer_lrs) == 2
    assert ck.global_step == state["global_step"]
    assert ck.epoch == state["epoch"]
    assert (ck.state.last_epoch, ck.state.best, ck.state.num_bad_epochs, ck.state.cooldown_counter) == (
        sched["last_epoch"], sched["best"], sched["num_bad_epochs"], sched["cooldown_counter"])
    assert (ck.config.patience, ck.config.factor) == (1, 0.5)  # lr_scheduler_kwargs reached the scheduler


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the base name of every file opened from Python; opening a pickle of PICKLES fails the test."""
    return spy_on_opens(monkeypatch, PICKLES)


@pytest.mark.parametrize("loader", ["builtin", "torch"])
def test_load_checkpoint_never_opens_the_pickles(opened: list[str], loader: str) -> None:
    """load_checkpoint reads scheduler.pt but never opens training_args.bin or rng_state.pth."""
    pf.load_checkpoint(HF / "epoch" / "checkpoint-72", loader=loader)
    assert "scheduler.pt" in opened  # the spy sees the reader's opens
    assert not set(opened) & set(PICKLES)


def test_trace_and_cli_never_open_the_pickles(opened: list[str]) -> None:
    """trace() and plateau-trace on a checkpoint folder never open training_args.bin or rng_state.pth."""
    from click.testing import CliRunner

    from plateau_forensics.cli import main

    pf.trace(HF / "eval_steps" / "checkpoint-44")
    result = CliRunner().invoke(main, [str(HF / "eval_steps" / "checkpoint-80")])
    assert result.exit_code == 0, result.output
    assert "trainer_state.json" in opened and not set(opened) & set(PICKLES)


def test_poisoned_pickles_never_run(tmp_path: Path) -> None:
    """A folder whose training_args.bin and rng_state.pth run code when unpickled is read harmlessly."""
    from click.testing import CliRunner

    from plateau_forensics.cli import main

    class Payload:
        def __init__(self, marker: Path) -> None:
            self.marker = marker

        def __reduce__(self) -> tuple[Any, ...]:
            return (builtins.open, (str(self.marker), "w"))  # unpickling creates the marker file

    ckpt = tmp_path / "checkpoint-72"
    shutil.copytree(HF / "epoch" / "checkpoint-72", ckpt)
    markers = []
    for name in PICKLES:
        marker = tmp_path / f"{name}.ran"
        (ckpt / name).write_bytes(pickle.dumps(Payload(marker)))
        markers.append(marker)
    for loader in ("builtin", "torch"):
        pf.load_checkpoint(ckpt, loader=loader)
    pf.trace(ckpt)
    assert CliRunner().invoke(main, [str(ckpt)]).exit_code == 0
    assert not any(m.exists() for m in markers)


# ------------------------------------------------------------------------------ trace: log_history is the log


@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_trace_alone_replays_log_history(folder: Path, ckpt: str) -> None:
    """trace(checkpoint-N/) alone replays trainer_state.json's eval_loss entries, one step per evaluation."""
    ev = evals(trainer_state(ckpt, folder)["log_history"])
    t = pf.trace(folder / ckpt)
    assert list(t.metrics) == [e["eval_loss"] for e in ev]
    assert len(t) == len(ev)
    assert list(t.epochs) == [e["epoch"] for e in ev]


@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_trace_alone_aligns_at_the_last_evaluation(folder: Path, ckpt: str) -> None:
    """The checkpoint sits after its last evaluation's step (HF saves after stepping), with no warning."""
    ev = evals(trainer_state(ckpt, folder)["log_history"])
    t = pf.trace(folder / ckpt)
    assert t.alignment is not None
    assert t.alignment.index == len(ev) - 1
    assert t.alignment.epoch == ev[-1]["epoch"]
    assert t.alignment.consistent
    assert t.alignment.lr_matches  # the replayed lr at that row is optimizer.pt's
    assert named(t, "saved-before-step") is None
    assert warnings(t) == []


@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_trace_alone_lrs_match_log_history(folder: Path, ckpt: str) -> None:
    """The replayed lr of each evaluation equals log_history's learning_rate and ends at optimizer.pt's."""
    history = trainer_state(ckpt, folder)["log_history"]
    t = pf.trace(folder / ckpt)
    used = lr_used_per_eval(history)
    assert [s.lr_in[0] for s in t.steps] == used  # learning_rate is param_groups[0]['lr']
    assert {len(s.lr_in) for s in t.steps} == {2}  # the replay carries both of the Trainer's groups
    opt = torch.load(folder / ckpt / "optimizer.pt", weights_only=True)
    sched = torch.load(folder / ckpt / "scheduler.pt", weights_only=True)
    assert t.lrs == tuple(g["lr"] for g in opt["param_groups"])
    last = t.steps[len(t) - 1]
    assert (last.best, last.num_bad_epochs, last.cooldown_counter, last.last_epoch) == (
        sched["best"], sched["num_bad_epochs"], sched["cooldown_counter"], sched["last_epoch"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_earlier_checkpoint_in_the_full_log_history(folder: Path, scenario: str) -> None:
    """The first checkpoint placed in the last one's log_history aligns there and predicts every later lr."""
    first, last = sorted((folder / scenario).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    history = json.loads((last / "trainer_state.json").read_text())["log_history"]
    n_first = len(evals(json.loads((first / "trainer_state.json").read_text())["log_history"]))
    t = pf.trace(first, history)
    assert t.alignment.index == n_first - 1
    assert warnings(t) == []
    assert [s.lr_in[0] for s in t.steps] == lr_used_per_eval(history)
    final = torch.load(last / "optimizer.pt", weights_only=True)["param_groups"]
    assert t.lrs == tuple(g["lr"] for g in final)


@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_cli_on_a_checkpoint_folder(folder: Path, ckpt: str) -> None:
    """plateau-trace CHECKPOINT_DIR exits 0, and 0 with --check too (no warning-level finding)."""
    from click.testing import CliRunner

    from plateau_forensics.cli import main

    for args in ([str(folder / ckpt)], [str(folder / ckpt), "--check"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output


# ------------------------------------------------------------------------------ truth against the tool


@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_tool_tells_the_recorded_truth(folder: Path, ckpt: str) -> None:
    """On a checkpoint folder alone, the tool's alignment, steps and findings agree with the live record."""
    scenario, _, name = ckpt.partition("/")
    assert_tool_tells_the_truth(folder / scenario, truth(folder, scenario), name, f"hf/{scenario}")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_truth_is_the_logged_run(folder: Path, scenario: str) -> None:
    """One recorded row per eval entry of the last checkpoint's log_history; each step read that eval_loss."""
    live = Live.of(truth(folder, scenario))
    last = max((folder / scenario).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    history = trainer_state(f"{scenario}/{last.name}", folder)["log_history"]
    ev = evals(history)
    assert [r.epoch for r in live.rows] == [e["epoch"] for e in ev]
    assert [s.metric for s in live.steps] == [e["eval_loss"] for e in ev]
    assert [r.lr[0] for r in live.rows] == lr_used_per_eval(history)  # learning_rate is group 0's
    assert {len(set(r.lr)) for r in live.rows} == {1}  # the two groups share one lr


def test_epoch_story_from_truth(folder: Path) -> None:
    """epoch: a step per evaluation; checkpoint-72 has a bad evaluation pending, checkpoint-160 a new cut."""
    live = Live.of(truth(folder, "epoch"))
    assert [s.row for s in live.steps] == list(range(20))
    assert [r.epoch for r in live.rows] == [float(e) for e in range(1, 21)]
    mid, end = (live.steps[live.checkpoint(c).state_step] for c in ("checkpoint-72", "checkpoint-160"))
    assert (mid.epoch, mid.last_epoch, mid.num_bad_epochs) == (9.0, 9, 1)
    assert end is live.steps[-1] and end.lr[0] < end.lr_before[0]  # saved right after a reduction ...
    assert end.lr[0] < live.rows[-1].lr[0]  # ... which no logged learning_rate shows
    assert len(live.reductions()) >= 2


def test_eval_steps_story_from_truth(folder: Path) -> None:
    """eval_steps: two evaluations per epoch, so last_epoch counts evaluations (11 at epoch 5.5)."""
    t = truth(folder, "eval_steps")
    live = Live.of(t)
    assert [r.epoch for r in live.rows] == [k / 2 for k in range(1, 21)]
    mid = live.steps[live.checkpoint("checkpoint-44").state_step]
    assert (mid.epoch, mid.last_epoch) == (5.5, 11)
    assert live.checkpoint("checkpoint-80").state_step == len(live.steps) - 1
    assert len(live.reductions()) >= 2
