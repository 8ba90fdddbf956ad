"""The DeepSpeed fixtures in ``sample_checkpoints/deepspeed/`` are read safely and tell their story.

``make_deepspeed.py`` trains a tiny MLP through a real ``deepspeed.initialize`` engine on CPU (one gloo
process) and records ``live`` from the real ``ReduceLROnPlateau``: in ``batch_size_metric`` the scheduler
was passed to DeepSpeed, which steps it with ``step(train_batch_size)`` on every optimizer step; in
``plateau_outside`` the user steps it once per epoch with the validation loss (the fix). The checkpoints are
judged by that truth through the API and the CLI, committed and freshly regenerated alike; no number that
comes out of training is asserted.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
from fixture_truth import (  # noqa: E402 - after importorskip
    SAMPLES,
    Background,
    Live,
    ToolFinding,
    ToolStep,
    ToolView,
    expected,
    judge,
    named,
    problems,
    read_truth,
    trace_fixture,
    view,
)

import plateau_forensics as pf  # noqa: E402
from plateau_forensics import torchfile  # noqa: E402
from plateau_forensics.cli import main  # noqa: E402

DEEPSPEED = SAMPLES / "deepspeed"
SCENARIOS = ("batch_size_metric", "plateau_outside")
TAGS = ("global_step40", "global_step80")
CHECKPOINTS = [f"{s}/{t}" for s in SCENARIOS for t in TAGS]
STATES = "mp_rank_00_model_states.pt"
HAVE_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
#: The generator's wall time on the 2-core dev machine is ~15-25 s (one process, no op build); generous here.
REGENERATE_TIMEOUT = 300


#: make_deepspeed.py, started now: importing DeepSpeed takes most of its time
_REGEN = Background("make_deepspeed.py") if HAVE_DEEPSPEED else None


@pytest.fixture(scope="module")
def regenerated() -> Path:
    """A fresh ``make_deepspeed.py`` run on this machine (real DeepSpeed 0.19.8, CPU accelerator, gloo)."""
    if _REGEN is None:
        pytest.skip(
            "deepspeed is not installed: regenerating needs `pip install deepspeed==0.19.8` (test extra)"
        )
    return _REGEN.result(REGENERATE_TIMEOUT)


@pytest.fixture(scope="module", params=["committed", "regenerated"])
def folder(request: pytest.FixtureRequest) -> Path:
    """The committed run directories, then a regeneration: every fact test holds for both."""
    return DEEPSPEED if request.param == "committed" else request.getfixturevalue("regenerated")


def truth(folder: Path, scenario: str) -> dict[str, Any]:
    return read_truth(folder / scenario / "truth.json")


def saved(folder: Path, ckpt: str) -> dict[str, Any]:
    """The model-states file as torch itself reads it (weights_only: the oracle for what is in it)."""
    return torch.load(folder / ckpt / STATES, weights_only=True)


def plateau_of(sd: Mapping[str, Any]) -> Mapping[str, Any]:
    """The plateau state a scenario saved: DeepSpeed's lr_scheduler, or the user's client_state key."""
    return sd["lr_scheduler"] if sd["lr_scheduler"] is not None else sd["plateau"]


def _run(args: list[str]) -> Any:
    return CliRunner().invoke(main, args)


# ------------------------------------------------------------------------------ the files


def test_regenerated_folders_are_the_committed_ones(regenerated: Path) -> None:
    """make_deepspeed.py writes the committed scenarios, tags and file names, and nothing else."""

    def listing(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*"))

    assert listing(regenerated) == listing(DEEPSPEED)


def test_fixture_stays_small() -> None:
    """All DeepSpeed fixture files together stay under 100 KB (a tiny model; no optimizer partitions)."""
    assert sum(p.stat().st_size for p in DEEPSPEED.rglob("*") if p.is_file()) < 100_000


@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_save_checkpoint_layout(folder: Path, ckpt: str) -> None:
    """Each tag holds one torch.save zip rooted at its stem, written by DeepSpeed (ds_version, ds_config);
    the run directory's ``latest`` names the last tag."""
    scenario, _, tag = ckpt.partition("/")
    assert [p.name for p in (folder / ckpt).iterdir()] == [STATES]
    with zipfile.ZipFile(folder / ckpt / STATES) as z:
        assert {n.split("/", 1)[0] for n in z.namelist()} == {STATES.removesuffix(".pt")}
    sd = saved(folder, ckpt)
    assert sd["ds_version"] == truth(folder, scenario)["versions"]["deepspeed"]
    assert sd["global_steps"] == int(tag.removeprefix("global_step"))
    assert (folder / scenario / "latest").read_text() == TAGS[-1]


@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_saved_state_is_what_deepspeed_stepped(folder: Path, ckpt: str) -> None:
    """batch_size_metric: best is the train batch size and last_epoch is global_steps (one plateau step per
    optimizer step); plateau_outside: DeepSpeed holds no scheduler and last_epoch is the epochs logged."""
    scenario, _, _ = ckpt.partition("/")
    sd = saved(folder, ckpt)
    live = Live.of(truth(folder, scenario))
    at = live.steps[live.checkpoint(ckpt.partition("/")[2]).state_step]
    state = plateau_of(sd)
    assert (state["last_epoch"], state["best"], state["num_bad_epochs"]) == (
        at.last_epoch,
        at.best,
        at.num_bad_epochs,
    )
    if scenario == "batch_size_metric":
        assert state["best"] == float(sd["ds_config"]["train_batch_size"])
        assert state["last_epoch"] == sd["global_steps"] - sd["skipped_steps"]
        assert {s.metric for s in live.steps} == {float(sd["ds_config"]["train_batch_size"])}
    else:
        assert sd["lr_scheduler"] is None
        assert state["last_epoch"] == sd["epoch"] < sd["global_steps"]


# ------------------------------------------------------------------------------ load_checkpoint


@pytest.mark.parametrize("loader", ["builtin", "torch"])
@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_load_checkpoint_reads_the_tag_directory(folder: Path, ckpt: str, loader: str) -> None:
    """load_checkpoint on a tag directory: deepspeed, the plateau state, the optimizer lr and the engine's
    counters, as torch.load reads them."""
    sd = saved(folder, ckpt)
    state = plateau_of(sd)
    ck = pf.load_checkpoint(folder / ckpt, loader=loader)
    key = "lr_scheduler" if sd["lr_scheduler"] is not None else "plateau"
    assert (ck.framework, ck.key_path, ck.tag) == ("deepspeed", f"{STATES}:{key}", ckpt.partition("/")[2])
    assert (ck.state.last_epoch, ck.state.best, ck.state.num_bad_epochs, ck.state.cooldown_counter) == (
        state["last_epoch"],
        state["best"],
        state["num_bad_epochs"],
        state["cooldown_counter"],
    )
    assert ck.optimizer_lrs == tuple(g["lr"] for g in sd["optimizer"]["param_groups"])
    assert (ck.global_steps, ck.skipped_steps, ck.train_batch_size, ck.ds_version) == (
        sd["global_steps"],
        sd["skipped_steps"],
        sd["ds_config"]["train_batch_size"],
        sd["ds_version"],
    )
    assert (ck.config.patience, ck.config.factor) == (state["patience"], state["factor"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_run_directory_reads_the_latest_tag(folder: Path, scenario: str) -> None:
    """The run directory is read through its ``latest`` file, the same state as that tag directory."""
    run = pf.load_checkpoint(folder / scenario)
    tag = pf.load_checkpoint(folder / scenario / (folder / scenario / "latest").read_text())
    assert run.key_path == f"{TAGS[-1]}/{tag.key_path}"
    assert (run.state, run.optimizer_lrs, run.global_steps) == (
        tag.state,
        tag.optimizer_lrs,
        tag.global_steps,
    )


def test_latest_names_the_tag_not_the_folder_name(tmp_path: Path) -> None:
    """Any folder and tag names work (``latest``'s content says which tag); a ``latest`` naming a path
    outside the run, or a model-states file that torch.save wrote under another name, is no DeepSpeed
    checkpoint (one Error: line, exit 1)."""
    run = tmp_path / "anything"
    shutil.copytree(DEEPSPEED / "batch_size_metric", run)
    (run / TAGS[0]).rename(run / "my_tag")
    (run / "latest").write_text("my_tag")
    shutil.rmtree(run / TAGS[1])
    ck = pf.load_checkpoint(run)
    assert (ck.framework, ck.tag, ck.global_steps) == ("deepspeed", "my_tag", 40)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "latest").write_text("../anything/my_tag")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    torch.save(saved(DEEPSPEED, f"batch_size_metric/{TAGS[0]}"), foreign / "x.pt")  # zip root "x"
    (foreign / "x.pt").rename(foreign / STATES)
    for d in (outside, foreign):
        with pytest.raises(pf.CheckpointError):
            pf.load_checkpoint(d)
        result = _run([str(d)])
        assert (result.exit_code, len(result.stderr.strip().splitlines())) == (1, 1), result.output
        assert result.stderr.startswith("Error: ")


def test_weights_are_never_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading and tracing a model-states file reads no tensor bytes (the module's weights stay closed)."""
    monkeypatch.setattr(torchfile._Source, "read", lambda *a: pytest.fail("tensor bytes were read"))
    for scenario in SCENARIOS:
        pf.load_checkpoint(DEEPSPEED / scenario)
        pf.trace(DEEPSPEED / scenario / TAGS[0], DEEPSPEED / scenario / "train_log.csv")
    assert named(pf.trace(DEEPSPEED / "batch_size_metric"), "deepspeed-batch-size-metric") is not None


# ------------------------------------------------------------------------------ the story, through the API


@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_tool_tells_the_recorded_truth(folder: Path, ckpt: str) -> None:
    """pf.trace on each tag directory (with the log its truth names: none = the checkpoint alone): every
    step, the placement and the findings agree with the live record."""
    scenario, _, tag = ckpt.partition("/")
    t = truth(folder, scenario)
    expect = expected(f"deepspeed/{scenario}", tag)
    tr = trace_fixture(folder / scenario, t, tag, expect)
    assert problems(tr, t, tag, expect) == []
    if t["log"] is None:  # the checkpoint alone: exactly the steps up to its own
        assert len(tr.steps) == Live.of(t).checkpoint(tag).state_step + 1


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_run_directory_tells_the_truth_of_latest(folder: Path, scenario: str) -> None:
    """pf.trace on the run directory is judged as the checkpoint ``latest`` names."""
    t = truth(folder, scenario)
    latest = t["latest"]
    expect = expected(f"deepspeed/{scenario}", latest)
    log = folder / scenario / t["log"] if t["log"] else None
    assert judge(view(pf.trace(folder / scenario, log)), t, latest, expect) == []


def test_batch_size_metric_named_with_the_fix(folder: Path) -> None:
    """The finding carries the evidence (best = batch size, last_epoch = global_steps) and the fix: step the
    plateau scheduler yourself on the validation metric, not through deepspeed.initialize."""
    d = folder / "batch_size_metric"
    t = truth(folder, "batch_size_metric")
    live = Live.of(t)
    tr = pf.trace(d)
    f = next(f for f in tr.findings if f.code == "deepspeed-batch-size-metric")
    batch, patience = t["ds_config"]["train_batch_size"], t["setup"]["scheduler"]["patience"]
    assert f.severity == "warning"
    assert (f.evidence["train_batch_size"], f.evidence["best"], f.evidence["steps_reproduced"]) == (
        batch,
        float(batch),
        len(live.steps),
    )
    assert f.evidence["cut_every_steps"] == patience + 1
    assert f.evidence["reductions_due"] == len(live.reductions())
    assert "deepspeed.initialize" in f.fix and "scheduler.step(val_loss)" in f.fix
    assert tr.log is not None and tr.log.metric_column == "train_batch_size"


def test_user_log_keeps_the_finding(folder: Path) -> None:
    """Given the user's train_log.csv, the finding still stands and says the logged val_loss was not used."""
    d = folder / "batch_size_metric"
    tr = pf.trace(d, d / "train_log.csv")
    f = named(tr, "deepspeed-batch-size-metric")
    assert f is not None and "'val_loss' was never passed to step()" in f.message


def test_plateau_stepped_by_the_user_has_no_deepspeed_finding(folder: Path) -> None:
    """The fix: a plateau scheduler kept out of the engine and saved in client_state gets no finding, with
    its log or alone."""
    d = folder / "plateau_outside"
    for tr in (pf.trace(d, d / "train_log.csv"), pf.trace(d / TAGS[0]), pf.trace(d)):
        assert named(tr, "deepspeed-batch-size-metric") is None


def test_a_constant_that_is_not_the_batch_size_is_no_finding(tmp_path: Path) -> None:
    """A saved state with best = batch size but last_epoch != global_steps is not DeepSpeed's call."""
    sd = saved(DEEPSPEED, f"batch_size_metric/{TAGS[1]}")
    d = tmp_path / "tag"
    d.mkdir()
    sd["global_steps"] += 8  # as if 8 steps had not stepped the scheduler
    torch.save(sd, d / STATES)  # torch.save roots the zip at the file's stem, as DeepSpeed's save does
    ck = pf.load_checkpoint(d)
    assert (ck.framework, ck.batch_size_steps, ck.log_history) == ("deepspeed", None, None)
    assert named(pf.trace(d), "deepspeed-batch-size-metric") is None


def test_skipped_steps_are_not_plateau_steps(tmp_path: Path) -> None:
    """fp16 overflows skip the scheduler step: with skipped_steps = k and global_steps raised by k the state
    is still DeepSpeed's batch-size stepping, rebuilt as last_epoch steps counted without the skipped ones."""
    sd = saved(DEEPSPEED, f"batch_size_metric/{TAGS[0]}")
    sd["global_steps"] += 3
    sd["skipped_steps"] = 3
    d = tmp_path / "tag"
    d.mkdir()
    torch.save(sd, d / STATES)
    ck = pf.load_checkpoint(d)
    steps = sd["lr_scheduler"]["last_epoch"]
    assert (ck.batch_size_steps, len(ck.log_history)) == (steps, steps)
    assert all("global_step" not in row for row in ck.log_history)  # which steps overflowed is not saved
    f = named(pf.trace(d), "deepspeed-batch-size-metric")
    assert f is not None and (f.evidence["global_steps"], f.evidence["skipped_steps"]) == (steps + 3, 3)


@pytest.mark.parametrize(
    ("ds_config", "dp", "expected_size"),
    [
        ({"train_batch_size": 32, "train_micro_batch_size_per_gpu": 4}, 2, 32),
        ({"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2}, 3, 24),
        ({"train_micro_batch_size_per_gpu": 4}, 2, 8),
        ({"train_micro_batch_size_per_gpu": 4}, None, None),
        ({}, 1, None),
        (None, 1, None),
    ],
    ids=["given", "micro-x-gas-x-dp", "gas-default-1", "no-dp-size", "nothing", "no-config"],
)
def test_train_batch_size_as_deepspeed_derives_it(ds_config: Any, dp: Any, expected_size: Any) -> None:
    """ds_config's train_batch_size, else micro batch x gradient accumulation x data-parallel size
    (DeepSpeed's own rule when the config leaves it out); unknown when a factor is missing."""
    from plateau_forensics.stacks.deepspeed import train_batch_size

    assert train_batch_size(ds_config, dp) == expected_size


# ------------------------------------------------------------------------------ the story, through the CLI


def _cli_view(out: Mapping[str, Any]) -> ToolView:
    """The judge's view of ``plateau-trace --format json``: steps, placement and findings."""
    a = out["alignment"]
    steps = []
    lr_before = tuple(a["initial_lrs"]) if a and a.get("initial_lrs") else ()
    for s in out["steps"]:
        lr = tuple(s["lr"]) if s["lr"] is not None else ()
        steps.append(
            ToolStep(
                epoch=s["epoch"],
                steps_taken=s["last_epoch"],
                metric=s["metric"],
                best=math.inf if s["best"] == "inf" else s["best"],
                num_bad_epochs=s["num_bad_epochs"],
                cooldown_counter=s["cooldown_counter"],
                lr_in=lr_before,
                lr=lr,
                known=s["event"] is not None,
                lr_known=s["lr"] is not None and bool(lr_before),
            )
        )
        lr_before = lr
    at = None
    if a and a.get("scheduler_step") is not None:
        at = next(
            (
                i
                for i, s in enumerate(out["steps"])
                if s["last_epoch"] == a["scheduler_step"] and s["epoch"] == a["epoch"]
            ),
            None,
        )
    findings = tuple(
        ToolFinding(
            f["code"],
            f["severity"],
            f["epoch"],
            f["message"],
            tuple(dict.fromkeys(c for st in f["evidence"].get("stories", ()) for c in st))
            if f["code"] == "ambiguous"
            else (f["code"],),
            f["evidence"],
        )
        for f in out["findings"]
    )
    return ToolView(tuple(steps), at, None if a is None else a.get("epoch"), findings)


@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_cli_json_tells_the_recorded_truth(folder: Path, ckpt: str) -> None:
    """plateau-trace TAGDIR [LOG] --format json: every step, the placement and the findings, judged."""
    scenario, _, tag = ckpt.partition("/")
    t = truth(folder, scenario)
    args = [str(folder / ckpt)] + ([str(folder / scenario / t["log"])] if t["log"] else [])
    result = _run([*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    assert judge(_cli_view(json.loads(result.stdout)), t, tag, expected(f"deepspeed/{scenario}", tag)) == []


def test_cli_check_exit_codes(folder: Path) -> None:
    """plateau-trace RUN --check: 3 with the DeepSpeed finding and its fix printed, 0 for the fixed run."""
    bad = _run([str(folder / "batch_size_metric"), "--check"])
    assert bad.exit_code == 3, bad.output
    assert "[deepspeed-batch-size-metric]" in bad.stdout and "deepspeed.initialize" in bad.stdout
    good = folder / "plateau_outside"
    ok = _run([str(good), str(good / "train_log.csv"), "--check"])
    assert ok.exit_code == 0, ok.output
    assert "deepspeed-batch-size-metric" not in ok.stdout


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_truth_is_the_logged_run(folder: Path, scenario: str) -> None:
    """batch_size_metric: one live row and one step per optimizer step, 8 per epoch, on the batch size;
    plateau_outside: one row and one step per epoch on that epoch's val_loss."""
    t = truth(folder, scenario)
    live = Live.of(t)
    setup = t["setup"]
    per_row = setup["steps_per_epoch"] if scenario == "batch_size_metric" else 1
    assert len(live.rows) == len(live.steps) == setup["epochs"] * per_row
    assert [s.row for s in live.steps] == list(range(len(live.rows)))
    assert [c.saved for c in live.checkpoints] == ["after_step", "after_step"]
    if scenario == "plateau_outside":
        import csv

        with open(folder / scenario / "train_log.csv", newline="") as f:
            logged = [float(r["val_loss"]) for r in csv.DictReader(f)]
        assert [s.metric for s in live.steps] == logged
