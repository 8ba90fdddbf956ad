"""The HF Accelerate fixtures in ``sample_checkpoints/accelerate/`` are read safely and tell their story.

Each scenario's truth.json holds ``live``, what make_accelerate.py recorded from the main process's real
scheduler while two gloo processes trained. The fact tests run on the committed directories and on a fresh
regeneration (once per session: two processes are slow to start); nothing compares weights, rng states or
numbers between the two (another CPU trains to other last bits).
"""

from __future__ import annotations

import builtins
import importlib.util
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
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
from plateau_forensics.cli import main  # noqa: E402

ACCELERATE = SAMPLES / "accelerate"
SCENARIOS = ("two_processes", "one_step_per_eval")
CHECKPOINTS = [
    f"{s}/{c.relative_to(ACCELERATE / s).as_posix()}"
    for s in SCENARIOS
    for c in sorted((ACCELERATE / s / "checkpoints").iterdir())
]
#: files of a save_state() directory that must never be opened: the per-process rng pickles and the weights
CLOSED = ("random_states_0.pkl", "random_states_1.pkl", "model.safetensors")
CAN_TRAIN = all(importlib.util.find_spec(m) is not None for m in ("accelerate", "safetensors"))


@pytest.fixture(scope="session")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh ``make_accelerate.py`` run on this machine (two real gloo processes)."""
    if not CAN_TRAIN:
        pytest.skip("regenerating the Accelerate fixtures needs accelerate and safetensors")
    return regenerate("make_accelerate.py", tmp_path_factory.mktemp("accelerate"))


@pytest.fixture(scope="module", params=["committed", "regenerated"])
def folder(request: pytest.FixtureRequest) -> Path:
    """The committed directories, then a regeneration: the fact tests hold for both."""
    return ACCELERATE if request.param == "committed" else request.getfixturevalue("regenerated")


def truth(folder: Path, scenario: str) -> dict[str, Any]:
    return read_truth(folder / scenario / "truth.json")


def split(ckpt: str) -> tuple[str, str]:
    scenario, _, rel = ckpt.partition("/")
    return scenario, rel


def _run(args: list[str]) -> Any:
    return CliRunner().invoke(main, args)


# ------------------------------------------------------------------------------ the files


def test_regenerated_folders_are_the_committed_ones(regenerated: Path) -> None:
    """make_accelerate.py writes the committed scenarios, directories and file names, and nothing else."""

    def listing(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*"))

    assert listing(regenerated) == listing(ACCELERATE)
    assert len(CHECKPOINTS) == 4


def test_fixture_stays_small() -> None:
    """All Accelerate fixture files together stay under 300 KB."""
    assert sum(p.stat().st_size for p in ACCELERATE.rglob("*") if p.is_file()) < 300_000


@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_save_state_layout(folder: Path, ckpt: str) -> None:
    """Each .bin is a torch.save zip rooted at its stem; one random_states pickle per process, which
    torch.load(weights_only=True) refuses (so a safe reader must leave it closed)."""
    d = folder / ckpt
    assert {p.name for p in d.iterdir()} == {"scheduler.bin", "optimizer.bin", *CLOSED}
    for name in ("scheduler.bin", "optimizer.bin"):
        with zipfile.ZipFile(d / name) as z:
            assert {n.split("/", 1)[0] for n in z.namelist()} == {name.removesuffix(".bin")}
    for name in CLOSED[:2]:
        with pytest.raises(pickle.UnpicklingError):
            torch.load(d / name, weights_only=True)


@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_last_epoch_is_steps_per_call_times_evaluations(folder: Path, ckpt: str) -> None:
    """scheduler.bin's last_epoch is (2 processes or 1) x the evaluations logged before the save."""
    scenario, rel = split(ckpt)
    t = truth(folder, scenario)
    live = Live.of(t)
    saved = live.checkpoint(rel)
    sched = torch.load(folder / ckpt / "scheduler.bin", weights_only=True)
    assert sched["last_epoch"] == t["steps_per_call"] * (saved.row + 1)
    assert t["steps_per_call"] == (2 if scenario == "two_processes" else 1)


# ------------------------------------------------------------------------------ load_checkpoint


@pytest.mark.parametrize("loader", ["builtin", "torch"])
@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_load_checkpoint_reads_the_directory(folder: Path, ckpt: str, loader: str) -> None:
    """load_checkpoint on a save_state() directory: accelerate, scheduler.bin's state, optimizer.bin's lr, 2
    processes."""
    ck = pf.load_checkpoint(folder / ckpt, loader=loader)
    sched = torch.load(folder / ckpt / "scheduler.bin", weights_only=True)
    opt = torch.load(folder / ckpt / "optimizer.bin", weights_only=True)
    assert (ck.framework, ck.key_path, ck.processes) == ("accelerate", "scheduler.bin", 2)
    assert ck.optimizer_lrs == tuple(g["lr"] for g in opt["param_groups"])
    assert (ck.state.last_epoch, ck.state.best, ck.state.num_bad_epochs, ck.state.cooldown_counter) == (
        sched["last_epoch"],
        sched["best"],
        sched["num_bad_epochs"],
        sched["cooldown_counter"],
    )
    assert (ck.config.patience, ck.config.factor) == (3, 0.5)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the base name of every file opened from Python; opening one of CLOSED fails the test."""
    return spy_on_opens(monkeypatch, CLOSED)


@pytest.mark.parametrize("loader", ["builtin", "torch"])
def test_never_opens_rng_states_or_weights(opened: list[str], loader: str) -> None:
    """Reading and tracing opens scheduler.bin and optimizer.bin, never random_states or the weights."""
    d = ACCELERATE / "two_processes"
    pf.load_checkpoint(d / "checkpoints/checkpoint_1", loader=loader)
    pf.trace(d / "checkpoints/checkpoint_0", d / "metrics.csv", loader=loader)
    assert {"scheduler.bin", "optimizer.bin"} <= set(opened)
    assert not set(opened) & set(CLOSED)


def test_poisoned_rng_states_never_run(tmp_path: Path) -> None:
    """random_states_<rank>.pkl files that run code when unpickled are left alone by readers and the CLI."""

    class Payload:
        def __init__(self, marker: Path) -> None:
            self.marker = marker

        def __reduce__(self) -> tuple[Any, ...]:
            return (builtins.open, (str(self.marker), "w"))  # unpickling creates the marker file

    src = ACCELERATE / "two_processes"
    ckpt = tmp_path / "state"
    shutil.copytree(src / "checkpoints/checkpoint_1", ckpt)
    markers = [tmp_path / f"{rank}.ran" for rank in (0, 1)]
    for rank, marker in enumerate(markers):
        torch.save(Payload(marker), ckpt / f"random_states_{rank}.pkl")
    for loader in ("builtin", "torch"):
        pf.load_checkpoint(ckpt, loader=loader)
    assert _run([str(ckpt), str(src / "metrics.csv")]).exit_code == 0
    assert not any(m.exists() for m in markers)


def test_recognised_by_content_not_by_name(tmp_path: Path) -> None:
    """Any folder name works; without the per-process rng files, or with a scheduler.bin that is not a
    save_state() zip, the folder is no Accelerate directory (one Error: line, exit 1)."""
    src = ACCELERATE / "one_step_per_eval/checkpoints/checkpoint_1"
    renamed = tmp_path / "anything"
    shutil.copytree(src, renamed)
    assert pf.load_checkpoint(renamed).framework == "accelerate"
    no_ranks = tmp_path / "no_ranks"
    shutil.copytree(src, no_ranks)
    for p in no_ranks.glob("random_states_*.pkl"):
        p.unlink()
    foreign = tmp_path / "foreign"
    shutil.copytree(src, foreign)
    sd = torch.load(src / "scheduler.bin", weights_only=True)
    for name in (
        "scheduler.bin",
        "optimizer.bin",
    ):  # root "archive", as torch.save writes it under another name
        (foreign / name).unlink()
    torch.save(sd, tmp_path / "x.pt")
    (tmp_path / "x.pt").rename(foreign / "scheduler.bin")
    for d in (no_ranks, foreign):
        with pytest.raises(pf.CheckpointError, match="no training stack"):
            pf.load_checkpoint(d)
        result = _run([str(d)])
        assert (result.exit_code, len(result.stderr.strip().splitlines())) == (1, 1), result.output
        assert result.stderr.startswith("Error: ")


def test_several_schedulers_are_listed_and_chosen(tmp_path: Path) -> None:
    """scheduler.bin and scheduler_1.bin both plateau: listed (exit 1); --scheduler scheduler_1.bin picks."""
    src = ACCELERATE / "two_processes/checkpoints/checkpoint_0"
    d = tmp_path / "two"
    shutil.copytree(src, d)
    sd = torch.load(src / "scheduler.bin", weights_only=True)
    torch.save({**sd, "patience": 7}, d / "scheduler_1.bin")  # root "scheduler_1", as Accelerate writes it
    with pytest.raises(pf.AmbiguousSchedulerState, match=r"scheduler\.bin, scheduler_1\.bin"):
        pf.load_checkpoint(d)
    result = _run([str(d)])
    assert result.exit_code == 1 and "--scheduler" in result.stderr
    ck = pf.load_checkpoint(d, "scheduler_1.bin")
    assert (ck.key_path, ck.config.patience) == ("scheduler_1.bin", 7)
    with pytest.raises(pf.SchedulerStateNotFound, match="scheduler_2.bin"):
        pf.load_checkpoint(d, "scheduler_2.bin")


def test_registered_plateau_state_in_a_custom_checkpoint(tmp_path: Path) -> None:
    """A plateau scheduler kept out of prepare and registered for checkpointing is read from
    custom_checkpoint_0.pkl (no scheduler.bin), and no Accelerate multi-step finding applies."""
    src = ACCELERATE / "one_step_per_eval"
    d = tmp_path / "custom"
    shutil.copytree(src / "checkpoints/checkpoint_1", d)
    sd = torch.load(d / "scheduler.bin", weights_only=True)
    (d / "scheduler.bin").unlink()
    torch.save(sd, d / "custom_checkpoint_0.pkl")
    ck = pf.load_checkpoint(d)
    assert (ck.framework, ck.key_path) == ("accelerate", "custom_checkpoint_0.pkl")
    t = pf.trace(d, src / "metrics.csv")
    assert warnings(t) == []


# ------------------------------------------------------------------------------ the story


@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_tool_tells_the_recorded_truth(folder: Path, ckpt: str) -> None:
    """The tool's placement, every replayed step and its findings agree with the live record."""
    scenario, rel = split(ckpt)
    assert_tool_tells_the_truth(folder / scenario, truth(folder, scenario), rel, f"accelerate/{scenario}")


@pytest.mark.parametrize("rel", ["checkpoints/checkpoint_0", "checkpoints/checkpoint_1"])
def test_two_processes_named_with_the_accelerate_fix(folder: Path, rel: str) -> None:
    """With 2 processes the story is steps-per-row with k = 2, and Accelerate is named with its own fix."""
    d = folder / "two_processes"
    t = pf.trace(d / rel, d / "metrics.csv")
    spr = named(t, "steps-per-row")
    assert spr is not None and spr.evidence["k"] == 2
    acc = named(t, "accelerate-steps-per-process")
    assert acc is not None and acc.severity == "warning"
    assert (acc.evidence["processes"], acc.evidence["steps_per_row"]) == (2, 2)
    fix = next(f.fix for f in t.findings if f.code == "accelerate-steps-per-process")
    assert "step_scheduler_with_optimizer=False" in fix and "split_batches=True" in fix


def test_cli_check_exit_codes(folder: Path) -> None:
    """plateau-trace DIR metrics.csv --check: 3 for the two-step run, 0 for the one-step-per-call run."""
    for scenario, code in (("two_processes", 3), ("one_step_per_eval", 0)):
        d = folder / scenario
        result = _run([str(d / "checkpoints/checkpoint_1"), str(d / "metrics.csv"), "--check"])
        assert result.exit_code == code, result.output
        assert ("accelerate-steps-per-process" in result.stdout) == (code == 3)


def test_one_process_hint_changes_nothing(tmp_path: Path) -> None:
    """The directory with one process's rng file: no Accelerate finding (k = 2 is not its process count)."""
    src = ACCELERATE / "two_processes"
    d = tmp_path / "one"
    shutil.copytree(src / "checkpoints/checkpoint_1", d)
    (d / "random_states_1.pkl").unlink()
    t = pf.trace(d, src / "metrics.csv")
    assert named(t, "accelerate-steps-per-process") is None
    assert named(t, "steps-per-row") is not None  # last_epoch = 2 x rows still says so


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_truth_is_the_logged_run(folder: Path, scenario: str) -> None:
    """One recorded row per logged epoch; each row's metric stepped steps_per_call times in a row."""
    t = truth(folder, scenario)
    live = Live.of(t)
    k = t["steps_per_call"]
    assert [r.epoch for r in live.rows] == list(range(1, t["setup"]["epochs"] + 1))
    assert [s.row for s in live.steps] == [r for r in range(len(live.rows)) for _ in range(k)]
    assert [c.saved for c in live.checkpoints] == ["after_step", "after_step"]
