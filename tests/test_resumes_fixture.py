"""The resume scenarios in ``sample_checkpoints/resumes/`` tell their stories, committed and regenerated.

Each scenario.json holds ``live``: what make_resumes.py recorded from the real scheduler while the runs
trained. The tool is judged against it, and each story is asserted from it, for the committed folders
and for a fresh regeneration (whose numbers may differ in the last bits on another CPU).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from fixture_truth import (  # noqa: E402 - after importorskip
    SAMPLES,
    Live,
    LiveStep,
    ToolFinding,
    ToolStep,
    ToolView,
    assert_tool_tells_the_truth,
    expected,
    judge,
    read_truth,
    regenerate,
)

RESUMES = SAMPLES / "resumes"
SCENARIOS = sorted(p.name for p in RESUMES.iterdir() if p.is_dir())
FILES = ("ckpt.pt", "log.csv", "scenario.json")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh ``make_resumes.py`` run on this machine."""
    return regenerate("make_resumes.py", tmp_path_factory.mktemp("resumes"))


@pytest.fixture(scope="module", params=["committed", "regenerated"])
def folder(request: pytest.FixtureRequest) -> Path:
    """The committed scenarios, then a regeneration: every test below holds for both."""
    return RESUMES if request.param == "committed" else request.getfixturevalue("regenerated")


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def read_log(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def state_of(step: LiveStep) -> dict[str, Any]:
    return {"last_epoch": step.last_epoch, "best": step.best, "num_bad_epochs": step.num_bad_epochs,
            "cooldown_counter": step.cooldown_counter}


# ------------------------------------------------------------------------------------ folders and files


def test_regenerated_folders_are_the_committed_ones(regenerated: Path) -> None:
    """make_resumes.py writes exactly the committed scenario folders, each with its three files."""
    assert len(SCENARIOS) == 21
    assert sorted(p.name for p in regenerated.iterdir()) == SCENARIOS
    for name in SCENARIOS:
        assert sorted(p.name for p in (RESUMES / name).iterdir()) == sorted(FILES)
        assert sorted(p.name for p in (regenerated / name).iterdir()) == sorted(FILES)


@pytest.mark.parametrize("name", SCENARIOS)
def test_ground_truth_matches_checkpoint_and_log(folder: Path, name: str) -> None:
    """scenario.json names a finding and its checkpoint/resume epochs agree with ckpt.pt and log.csv."""
    info = read_truth(folder / name / "scenario.json")
    ckpt = load(folder / name / "ckpt.pt")
    assert name.startswith(info["finding"]) and info["description"]
    assert list(ckpt)[:4] == ["epoch", "model", "optimizer", "scheduler"]
    assert info["checkpoint_epoch"] == ckpt["epoch"]
    lines = (folder / name / "log.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,train_loss,val_loss,")
    epochs = [int(line.split(",")[0]) for line in lines[1:]]
    assert ckpt["epoch"] in epochs
    if info["resume_epoch"] is not None:
        assert info["resume_epoch"] == info["checkpoint_epoch"] + 1 and info["resume_epoch"] in epochs


@pytest.mark.parametrize("name", SCENARIOS)
def test_truth_is_the_logged_run(folder: Path, name: str) -> None:
    """The recorded rows are log.csv's rows (epoch, every group's lr) and each step read its row's metric."""
    info = read_truth(folder / name / "scenario.json")
    live = Live.of(info)
    rows = read_log(folder / name / "log.csv")
    lr_cols = [c for c in rows[0] if c.startswith("lr")]
    assert [r.epoch for r in live.rows] == [int(r["epoch"]) for r in rows]
    assert [list(r.lr) for r in live.rows] == [[float(r[c]) for c in lr_cols if r[c]] for r in rows]
    column = info.get("stepped_with", "val_loss")
    logged = [float(rows[s.row][column]) for s in live.steps]
    stepped = [s.metric for s in live.steps]
    assert all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(logged, stepped, strict=True))


@pytest.mark.parametrize("name", SCENARIOS)
def test_checkpoint_holds_the_recorded_state(folder: Path, name: str) -> None:
    """ckpt.pt's scheduler state is the state after the step the truth says it holds (as far as saved)."""
    info = read_truth(folder / name / "scenario.json")
    live = Live.of(info)
    step = live.steps[live.checkpoint("ckpt.pt").state_step]
    sd = load(folder / name / "ckpt.pt")["scheduler"]
    base = -1 if info.get("torch_version") == "<=1.3" else 0  # torch <= 1.3 counted last_epoch from -1
    assert sd["last_epoch"] == step.last_epoch + base and sd["best"] == step.best
    for key in ("num_bad_epochs", "cooldown_counter"):
        assert sd.get(key, getattr(step, key)) == getattr(step, key), key  # a partial state lacks them
    if "_last_lr" in sd:
        assert tuple(sd["_last_lr"]) == step.lr


def test_resumes_stay_small() -> None:
    """All scenario files together stay under 300 KB."""
    assert sum(p.stat().st_size for p in RESUMES.rglob("*") if p.is_file()) < 300_000


# ------------------------------------------------------------------------------------ truth against the tool


@pytest.mark.parametrize("name", SCENARIOS)
def test_tool_tells_the_recorded_truth(folder: Path, name: str) -> None:
    """The tool's alignment, every replayed step and its findings agree with what the live run recorded."""
    assert_tool_tells_the_truth(folder / name, read_truth(folder / name / "scenario.json"), "ckpt.pt",
                                f"resumes/{name}")


def perfect_report(info: dict, file: str, codes: dict[str, str]) -> ToolView:
    """What a tool that got everything right would report: the live steps, placed where the file was saved."""
    live = Live.of(info)
    steps = tuple(ToolStep(s.epoch, s.last_epoch, s.metric, s.best, s.num_bad_epochs, s.cooldown_counter,
                           live.rows[s.row].lr, s.lr, True, True) for s in live.steps)
    at = live.checkpoint(file).state_step
    findings = tuple(ToolFinding(c, sev, None, c, (c,)) for c, sev in codes.items())
    return ToolView(steps, at, None if at is None else live.steps[at].epoch, findings)


def test_the_judge_catches_a_wrong_report() -> None:
    """The judge is not vacuous: it passes a perfect report and catches each kind of wrong one."""
    info = read_truth(RESUMES / "scheduler-not-restored" / "scenario.json")
    expect = expected("resumes/scheduler-not-restored")
    good = perfect_report(info, "ckpt.pt", dict(expect.codes))
    assert judge(good, info, "ckpt.pt", expect) == []

    def wrong(**change: Any) -> list[str]:
        return judge(dataclasses.replace(good, **change), info, "ckpt.pt", expect)

    steps = list(good.steps)
    miscounted = dataclasses.replace(steps[5], num_bad_epochs=steps[5].num_bad_epochs + 1)
    bad_count = [*steps[:5], miscounted, *steps[6:]]
    assert any("num_bad_epochs" in p for p in wrong(steps=tuple(bad_count)))
    other_lr = [*steps[:3], dataclasses.replace(steps[3], lr=(steps[3].lr[0] * 2,)), *steps[4:]]
    assert any("lr after" in p for p in wrong(steps=tuple(other_lr)))
    invented = [*steps, dataclasses.replace(steps[-1], steps_taken=steps[-1].steps_taken + 1)]
    assert any("no step the run took" in p for p in wrong(steps=tuple(invented)))
    assert any("leaves out" in p for p in wrong(steps=tuple(steps[:3] + steps[4:]),
                                                  alignment_index=good.alignment_index - 1))
    assert any("placed at" in p for p in wrong(alignment_index=good.alignment_index - 1))
    assert any("missing" in p for p in wrong(findings=()))
    extra = ToolFinding("nan-metric", "warning", None, "?", ("nan-metric",))
    assert any("unexpected warning [nan-metric]" in p for p in wrong(findings=(*good.findings, extra)))
    both = ToolFinding("ambiguous", "warning", None, "?", ("scheduler-not-restored", "lr-overwritten"))
    assert any("unexpected warning [ambiguous]" in p for p in wrong(findings=(both,)))


# ------------------------------------------------------------------------------------ stories, from the truth


def saved_step(live: Live) -> LiveStep:
    return live.steps[live.checkpoint("ckpt.pt").state_step]


def resumed_start(info: dict, live: Live) -> dict[str, Any]:
    """Run B's scheduler (the second object): its first step is at the resume epoch; its state before it."""
    assert len(live.schedulers) == 2
    assert live.steps_of_scheduler(1)[0].epoch == info["resume_epoch"]
    return dict(live.start(1))


FRESH = {"last_epoch": 0, "best": math.inf, "num_bad_epochs": 0, "cooldown_counter": 0}


def first_drop_after(live: Live, epoch: int, rows: Any = None) -> float | None:
    return next((e for e in live.lr_changes(rows=rows) if e > epoch), None)


def story_clean_resume(info: dict, live: Live, folder: Path) -> None:
    assert resumed_start(info, live) == state_of(saved_step(live))  # everything restored
    assert info["logged_lr_changes"] == info["correct_lr_changes"] == live.lr_changes()
    assert len([e for e in live.lr_changes() if e >= info["checkpoint_epoch"]]) >= 2


def story_scheduler_not_restored(info: dict, live: Live, folder: Path) -> None:
    saved = saved_step(live)
    assert saved.num_bad_epochs > 0 or saved.cooldown_counter > 0
    assert saved.lr[0] < info["setup"]["lr"]
    assert resumed_start(info, live) == FRESH
    e = info["checkpoint_epoch"]
    logged = first_drop_after(live, e)
    correct = next(x for x in info["correct_lr_changes"] if x > e)
    assert logged == info["first_lr_drop_logged"] > correct == info["first_lr_drop_correct"]


def story_optimizer_not_restored(info: dict, live: Live, folder: Path) -> None:
    saved = saved_step(live)
    assert resumed_start(info, live) == state_of(saved)  # the scheduler was restored
    first = live.rows[info["checkpoint_epoch"]]
    assert first.epoch == info["resume_epoch"]
    assert first.lr[0] == info["initial_lr"] == info["first_resumed_lr"]
    assert first.lr[0] != saved.lr[0] == info["checkpoint_lr"]


def story_lr_overwritten(info: dict, live: Live, folder: Path) -> None:
    saved = saved_step(live)
    assert resumed_start(info, live) == state_of(saved)
    after = [r.lr[0] for r in live.rows[info["checkpoint_epoch"]:]]
    assert after[0] == info["lr_set_to"] and after[0] not in (saved.lr[0], info["initial_lr"])
    assert all(any(math.isclose(lr, info["lr_set_to"] * 0.5**k) for k in range(8)) for lr in after)


def story_partial_state(info: dict, live: Live, folder: Path) -> None:
    saved = saved_step(live)
    start = resumed_start(info, live)
    assert (start["best"], start["last_epoch"]) == (saved.best, saved.last_epoch)
    assert (start["num_bad_epochs"], start["cooldown_counter"]) == (0, 0)
    assert info["lost"] == {"num_bad_epochs": saved.num_bad_epochs,
                            "cooldown_counter": saved.cooldown_counter}
    assert saved.num_bad_epochs > 0
    assert first_drop_after(live, info["checkpoint_epoch"]) == info["first_lr_drop_logged"] > info[
        "first_lr_drop_correct"]


def story_hyperparameters_overridden(info: dict, live: Live, folder: Path) -> None:
    assert resumed_start(info, live) == state_of(saved_step(live))
    cuts = [s for s in live.reductions() if s.scheduler == 1]
    assert cuts and all(s.lr[0] == s.lr_before[0] * info["effective"]["factor"] for s in cuts)
    assert info["expected"]["factor"] != info["effective"]["factor"]
    assert info["intended_lr_changes"] != live.lr_changes()


def story_defaults_in_effect(info: dict, live: Live, folder: Path) -> None:
    assert len(live.schedulers) == 1
    assert max(s.num_bad_epochs for s in live.steps) == info["effective"]["patience"] == 10
    cuts = live.reductions()
    assert cuts and all(s.lr[0] == s.lr_before[0] * 0.1 for s in cuts)
    assert info["expected"]["patience"] < 10


def story_epoch_offset(info: dict, live: Live, folder: Path) -> None:
    warm = info["offset"]
    assert live.steps[0].epoch == warm + 1 and live.start(0) == FRESH  # no step during the warm-up
    assert [r.lr[0] for r in live.rows[:warm]] == [info["setup"]["lr"] * e / warm for e in range(1, warm + 1)]
    assert saved_step(live).last_epoch == info["checkpoint_epoch"] - warm == info["saved_last_epoch"]


def story_steps_per_row(info: dict, live: Live, folder: Path) -> None:
    k = info["k"]
    assert all(len(live.steps_of_row(r.index)) == k for r in live.rows)
    assert saved_step(live).last_epoch == k * info["checkpoint_epoch"] == info["saved_last_epoch"]
    assert info["once_per_row_lr_changes"] != live.lr_changes()


def story_wrong_metric(info: dict, live: Live, folder: Path) -> None:
    rows = read_log(folder / "log.csv")
    for s in live.steps:
        assert s.metric == float(rows[s.row]["train_loss"]) != float(rows[s.row]["val_loss"])
    assert saved_step(live).best == info["saved_best"]
    assert live.lr_changes() == info["logged_lr_changes"] != info["val_loss_lr_changes"]


def story_mode_mismatch(info: dict, live: Live, folder: Path) -> None:
    acc = [s.metric for s in live.steps]
    e = info["checkpoint_epoch"]
    assert info["setup"]["scheduler"]["mode"] == "min" and acc[e - 1] > acc[0] and max(acc) > acc[0] + 0.1
    assert len([s for s in live.reductions() if s.epoch <= e]) >= 3  # cut while the accuracy rises


def story_rel_threshold_nonpositive(info: dict, live: Live, folder: Path) -> None:
    assert all(s.metric < 0 for s in live.steps)
    rose = [b.epoch for a, b in zip(live.steps, live.steps[1:], strict=False) if b.best > a.best]
    assert rose == info["worse_counted_as_better"] and rose
    assert live.reductions() == [] and info["abs_mode_lr_changes"]


def _decided(live: Live, cooldown: int) -> list[float]:
    """Epochs whose step decided a reduction (cooldown_counter is set to cooldown only then)."""
    return [s.epoch for s in live.steps if s.cooldown_counter == cooldown]


def story_lr_at_floor(info: dict, live: Live, folder: Path) -> None:
    floor = info["min_lr"]
    decided = _decided(live, info["setup"]["scheduler"]["cooldown"])
    assert decided == info["reductions_decided_at_end_of"]
    suppressed = [s.epoch for s in live.steps if s.epoch in decided and s.lr == s.lr_before]
    assert suppressed == info["suppressed_at_end_of"]
    assert [d for d in suppressed if d < info["checkpoint_epoch"]]
    reached = next(r.epoch for r in live.rows if r.lr[0] == floor)
    assert reached == info["floor_reached_epoch"]
    assert all(r.lr[0] == floor for r in live.rows if r.epoch >= reached)
    assert len(live.reductions()) == 3


def story_external_lr_change(info: dict, live: Live, folder: Path) -> None:
    warm, lr0 = info["warmup_epochs"], info["setup"]["lr"]
    assert [r.lr[0] for r in live.rows[: len(warm)]] == [lr0 * e / len(warm) for e in warm]
    hand = info["external_change_epoch"]
    before = live.steps_of_row(hand - 2)[-1]  # the step after the previous epoch
    assert before.lr == before.lr_before  # that step did not cut it ...
    assert live.rows[hand - 1].lr[0] == before.lr[0] * info["external_factor"]  # ... the hand did
    assert _decided(live, info["setup"]["scheduler"]["cooldown"]) == info["reductions_decided_at_end_of"]


def story_nan_metric(info: dict, live: Live, folder: Path) -> None:
    nan = [s.epoch for s in live.steps if math.isnan(s.metric)]
    assert nan == info["nan_epochs"]
    decided = _decided(live, info["setup"]["scheduler"]["cooldown"])
    for s in live.steps:
        if s.epoch in nan:
            prev = live.steps[s.index - 1]
            assert s.best == prev.best
            assert s.num_bad_epochs == prev.num_bad_epochs + 1 or s.epoch in decided
    assert nan[-1] in decided and math.isfinite(saved_step(live).best)
    assert {str(s.epoch): s.num_bad_epochs for s in live.steps
            if str(s.epoch) in info["num_bad_epochs_after"]} == info["num_bad_epochs_after"]


def story_min_lrs_mismatch(info: dict, live: Live, folder: Path) -> None:
    add = info["added_group_epoch"]
    assert all(len(r.lr) == (3 if r.epoch >= add else 2) for r in live.rows)
    assert len(saved_step(live).lr) == 3
    if info["raises_at_epoch"] is not None:
        (raised,) = live.raised
        assert live.rows[raised["row"]].epoch == info["raises_at_epoch"] == live.rows[-1].epoch
        assert "number of param groups" in raised["error"]
    else:
        assert live.raised == ()
        first = next(s for s in live.reductions() if s.epoch > info["checkpoint_epoch"])
        assert first.epoch == info["min_lrs_rebuilt_at_end_of"]
        assert all(a < b for a, b in zip(first.lr, first.lr_before, strict=True))  # all 3 groups reduced


def story_duplicate_epochs(info: dict, live: Live, folder: Path) -> None:
    labels = [r.epoch for r in live.rows]
    assert [e for e in set(labels) if labels.count(e) == 2] == info["duplicated"]
    assert resumed_start(info, live) == state_of(saved_step(live))
    assert live.steps_of_scheduler(0)[-1].epoch == info["crashed_after_epoch"]
    for epoch in info["duplicated"]:  # both copies were stepped, with different values
        twice = [s for s in live.steps if s.epoch == epoch]
        assert len(twice) == 2 and twice[0].scheduler == 0 and twice[1].scheduler == 1
        assert twice[0].metric != twice[1].metric


def story_saved_before_step(info: dict, live: Live, folder: Path) -> None:
    ck = live.checkpoint("ckpt.pt")
    assert (ck.epoch, ck.saved) == (info["checkpoint_epoch"], "before_step")
    held, missed = live.steps[ck.state_step], live.steps[ck.state_step + 1]
    assert held.epoch == ck.epoch - info["steps_behind"] and missed.epoch == ck.epoch
    assert held.last_epoch == info["saved_last_epoch"]
    fields = ("best", "num_bad_epochs", "cooldown_counter", "lr")
    changed = [k for k in fields if getattr(held, k) != getattr(missed, k)]
    assert changed == info["changed_by_missing_step"]


def story_torch_version(info: dict, live: Live, folder: Path) -> None:
    held = saved_step(live)
    assert held.last_epoch == info["steps_taken"] == held.epoch
    assert info["saved_last_epoch"] == info["steps_taken"] - (1 if info["torch_version"] == "<=1.3" else 0)


STORIES: dict[str, Callable[[dict, Live, Path], None]] = {
    "clean-resume": story_clean_resume,
    "scheduler-not-restored": story_scheduler_not_restored,
    "optimizer-not-restored": story_optimizer_not_restored,
    "lr-overwritten": story_lr_overwritten,
    "partial-state": story_partial_state,
    "hyperparameters-overridden": story_hyperparameters_overridden,
    "defaults-in-effect": story_defaults_in_effect,
    "epoch-offset": story_epoch_offset,
    "steps-per-row": story_steps_per_row,
    "wrong-metric": story_wrong_metric,
    "mode-mismatch": story_mode_mismatch,
    "rel-threshold-nonpositive": story_rel_threshold_nonpositive,
    "lr-at-floor": story_lr_at_floor,
    "external-lr-change": story_external_lr_change,
    "nan-metric": story_nan_metric,
    "min-lrs-mismatch": story_min_lrs_mismatch,
    "min-lrs-mismatch-scalar": story_min_lrs_mismatch,
    "duplicate-epochs": story_duplicate_epochs,
    "saved-before-step": story_saved_before_step,
    "torch-version": story_torch_version,
    "torch-version-2.5": story_torch_version,
}


def test_every_scenario_has_a_story() -> None:
    """Each committed folder has its story check (and the expectation table covers it)."""
    assert sorted(STORIES) == SCENARIOS
    assert all(expected(f"resumes/{name}") is not None for name in SCENARIOS)


@pytest.mark.parametrize("name", SCENARIOS)
def test_story_from_truth(folder: Path, name: str) -> None:
    """The run recorded in scenario.json is the story the scenario was written to tell."""
    info = read_truth(folder / name / "scenario.json")
    STORIES[name](info, Live.of(info), folder / name)
