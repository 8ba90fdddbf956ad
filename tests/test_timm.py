"""timm, with real timm: the fixtures its own ``PlateauLRScheduler`` wrote, and the timm replay against it.

``sample_checkpoints/timm/`` was written by ``make_timm.py`` with timm 1.0.31's scheduler code (imported without
``timm/__init__.py``, see ``sample_checkpoints/_timm_import.py``); the fact tests run on the committed folders and
on a fresh regeneration and judge the tool by the truth recorded from the live scheduler, never by numbers that
come out of training. The differential tests step real ``PlateauLRScheduler`` objects next to
``plateau_forensics.stacks.timm.replay`` over random configurations and metric sequences.
"""

from __future__ import annotations

import functools
import math
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from fixture_truth import (  # noqa: E402 - after importorskip
    SAMPLES,
    Live,
    assert_tool_tells_the_truth,
    named,
    read_truth,
    regenerate,
)

sys.path.insert(0, str(SAMPLES))
import _timm_import  # noqa: E402 - the generator's helper, shared

if _timm_import.timm_folder() is not None:
    _timm_import.import_timm("scheduler.plateau_lr")  # registers the bare packages; timm/__init__ never runs
plateau_lr = pytest.importorskip("timm.scheduler.plateau_lr")

from click.testing import CliRunner  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import plateau_forensics as pf  # noqa: E402
from plateau_forensics.cli import main  # noqa: E402
from plateau_forensics.stacks import timm as timm_stack  # noqa: E402
from plateau_forensics.state import PlateauConfig  # noqa: E402

TIMM = SAMPLES / "timm"
SCENARIOS = ("defaults", "min_mode", "warmup", "noise", "resumed")
CHECKPOINTS = [(s, c["file"]) for s in SCENARIOS for c in read_truth(TIMM / s / "truth.json")["live"]["checkpoints"]]


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh ``make_timm.py`` run on this machine (real training with timm's scheduler)."""
    return regenerate("make_timm.py", tmp_path_factory.mktemp("timm"))


@pytest.fixture(scope="module", params=["committed", "regenerated"])
def folder(request: pytest.FixtureRequest) -> Path:
    """The committed folders, then a regeneration: the fact tests hold for both."""
    return TIMM if request.param == "committed" else request.getfixturevalue("regenerated")


def truth(folder: Path, scenario: str) -> dict[str, Any]:
    return read_truth(folder / scenario / "truth.json")


@functools.lru_cache(maxsize=None)
def trace(folder: Path, scenario: str, file: str) -> Any:
    """The tool on one checkpoint, judged by the truth (the hyperparameters a user would give); run once."""
    return assert_tool_tells_the_truth(folder / scenario, truth(folder, scenario), file, f"timm/{scenario}")


# ------------------------------------------------------------------------------ the fixtures


def test_regenerated_files_are_the_committed_ones(regenerated: Path) -> None:
    """make_timm.py writes the committed scenarios and file names, and nothing else."""
    def listing(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*"))

    assert listing(regenerated) == listing(TIMM)


def test_fixture_stays_small() -> None:
    """All timm fixture files together stay under 200 KB."""
    assert sum(p.stat().st_size for p in TIMM.rglob("*") if p.is_file()) < 200_000


def test_truth_names_real_timm() -> None:
    """The committed fixtures were written by the pinned timm release, whose scheduler CI installs."""
    for s in SCENARIOS:
        assert truth(TIMM, s)["versions"]["timm"] == _timm_import.TIMM_VERSION


@pytest.mark.parametrize(("scenario", "file"), CHECKPOINTS, ids=[f"{s}:{f}" for s, f in CHECKPOINTS])
def test_checkpoint_is_timms_layout(folder: Path, scenario: str, file: str) -> None:
    """CheckpointSaver's keys, PlateauLRScheduler.state_dict() = best + last_epoch, initial_lr in the groups."""
    ck = torch.load(folder / scenario / file, weights_only=True)
    assert {"epoch", "arch", "state_dict", "optimizer", "version", "metric"} <= set(ck)
    assert set(ck["scheduler"]) == {"best", "last_epoch"} and ck["version"] == 2
    assert all("initial_lr" in g for g in ck["optimizer"]["param_groups"])


@pytest.mark.parametrize("loader", ["builtin", "torch"])
@pytest.mark.parametrize(("scenario", "file"), CHECKPOINTS, ids=[f"{s}:{f}" for s, f in CHECKPOINTS])
def test_load_checkpoint_gives_timms_view(folder: Path, scenario: str, file: str, loader: str) -> None:
    """The stack is timm by content; what the partial state lacks is timm's constructor defaults."""
    ck = pf.load_checkpoint(folder / scenario / file, loader=loader)
    raw = torch.load(folder / scenario / file, weights_only=True)
    assert ck.framework == "timm" and ck.partial
    assert (ck.state.best, ck.state.last_epoch) == (raw["scheduler"]["best"], raw["scheduler"]["last_epoch"])
    assert ck.config == timm_stack.TIMM_DEFAULTS  # mode='max', factor 0.1, patience 10, ...
    assert ck.epoch == raw["epoch"] and ck.initial_lrs == (raw["optimizer"]["param_groups"][0]["initial_lr"],)


def test_recognised_by_content_not_name(tmp_path: Path) -> None:
    """A timm checkpoint under another name is timm's; a plain torch file named like timm's is not."""
    src = TIMM / "min_mode" / "last.pth.tar"
    shutil.copyfile(src, tmp_path / "model.pt")
    assert pf.load_checkpoint(tmp_path / "model.pt").framework == "timm"
    shutil.copyfile(SAMPLES / "clean.pt", tmp_path / "checkpoint-3.pth.tar")
    assert pf.load_checkpoint(tmp_path / "checkpoint-3.pth.tar").framework == "torch"


# ------------------------------------------------------------------------------ the tool against the truth


@pytest.mark.parametrize(("scenario", "file"), CHECKPOINTS, ids=[f"{s}:{f}" for s, f in CHECKPOINTS])
def test_tool_tells_the_recorded_truth(folder: Path, scenario: str, file: str) -> None:
    """Every step, the checkpoint's place and the findings agree with what timm's scheduler really did."""
    trace(folder, scenario, file)


def test_defaults_is_a_mode_mismatch(folder: Path) -> None:
    """timm's default mode='max' fed the eval loss: a mode-mismatch warning, and the lr cut while improving."""
    t = trace(folder, "defaults", "last.pth.tar")
    assert truth(folder, "defaults")["timm_kwargs"]["mode"] == "max"
    f = named(t, "mode-mismatch")
    assert f is not None and f.severity == "warning" and t.config.mode == "max"
    assert named(t, "optimizer-not-restored") is None


@pytest.mark.parametrize("scenario", ["defaults", "min_mode", "noise"])
def test_last_epoch_is_the_next_epoch(folder: Path, scenario: str) -> None:
    """After epoch e's step(e + 1, metric) last_epoch is e + 1: the offset is -1, the file saved before its step."""
    t = trace(folder, scenario, "last.pth.tar")
    live = Live.of(truth(folder, scenario))
    assert all(s.last_epoch == s.epoch + 1 for s in live.steps)
    assert t.alignment.epoch_offset == -1
    assert named(t, "saved-before-step") is not None


def test_warmup_is_read_from_the_log(folder: Path) -> None:
    """The warm-up found in the logged lrs is the one the run was built with; its rows are not plateau steps."""
    tr = truth(folder, "warmup")
    t = trace(folder, "warmup", "last.pth.tar")
    f = named(t, "timm-warmup")
    assert f is not None
    kw = tr["timm_kwargs"]
    assert (f.evidence["warmup_t"], f.evidence["warmup_lr_init"]) == (kw["warmup_t"], kw["warmup_lr_init"])
    assert f.evidence["epochs"] == list(range(kw["warmup_t"]))
    assert min(s.epoch for s in t.steps) == kw["warmup_t"]


@pytest.mark.parametrize("file", ["checkpoint-12.pth.tar", "last.pth.tar"])
def test_noise_is_replayed_exactly(folder: Path, file: str) -> None:
    """The noisy epochs are the run's noise range, each epoch's noise the one the live run drew."""
    tr = truth(folder, "noise")
    t = trace(folder, "noise", file)
    f = named(t, "timm-noise")
    assert f is not None
    lo, hi = tr["timm_kwargs"]["noise_range_t"]
    assert f.evidence["epochs"] == list(range(lo, hi)) and f.evidence["noise_seed"] == 42
    live = Live.of(tr)
    for e, x, n in zip(f.evidence["epochs"], f.evidence["plateau_lrs"], f.evidence["noise"], strict=True):
        trained = live.rows[e].lr[0]
        assert x + x * n == trained  # timm: lr + lr * noise, the lr the epoch trained with


def test_resume_skips_the_checkpoint_epoch(folder: Path) -> None:
    """timm resumes at epoch + 1 from a checkpoint saved before its step: that epoch's metric is never stepped."""
    tr = truth(folder, "resumed")
    t = trace(folder, "resumed", tr["resume"]["run_b_checkpoint"])
    f = named(t, "resume-skipped-step")
    assert f is not None and f.severity == "info"
    live = Live.of(tr)
    assert [s.epoch for s in live.steps_of_scheduler(1)][0] == tr["resume"]["start_epoch"]


def test_cli_on_a_timm_run() -> None:
    """plateau-trace names the stack and the mode mismatch, and --check exits 3 on it."""
    d = TIMM / "defaults"
    r = CliRunner().invoke(main, [str(d / "last.pth.tar"), str(d / "summary.csv")])
    assert r.exit_code == 0, r.output
    assert "(timm)" in r.stdout and "[mode-mismatch]" in r.stdout and "mode=max" in r.stdout
    r = CliRunner().invoke(main, [str(d / "last.pth.tar"), str(d / "summary.csv"), "--check"])
    assert r.exit_code == 3


def test_stack_module_imports_neither_torch_nor_timm() -> None:
    """The timm stack is pure Python: timm is only the oracle here and in the generator."""
    code = ("import sys, plateau_forensics.stacks.timm; "
            "print(sorted(m for m in ('torch', 'timm', 'numpy', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------ differential: replay vs timm

METRICS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                    st.sampled_from([0.5, 1.0, 1.0, 2.0]), st.floats(0.0, 2.0))


@st.composite
def timm_setups(draw: st.DrawFn) -> tuple[timm_stack.TimmPlateau, float, list[tuple[int, float | None]]]:
    """A random PlateauLRScheduler configuration, initial lr and train.py-like call sequence."""
    cfg = PlateauConfig(mode=draw(st.sampled_from(["min", "max"])), factor=draw(st.sampled_from([0.1, 0.5, 0.8, 0.0])),
                        patience=draw(st.integers(-1, 4)), threshold=draw(st.sampled_from([0.0, 1e-4, 0.1, 1.5])),
                        cooldown=draw(st.integers(0, 3)), min_lr=draw(st.sampled_from([0.0, 1e-3, 0.02])))
    noise_range = draw(st.one_of(st.none(), st.integers(0, 12),
                                 st.tuples(st.integers(0, 6), st.integers(6, 16))))
    p = timm_stack.TimmPlateau(
        cfg, warmup_t=draw(st.integers(0, 4)), warmup_lr_init=draw(st.sampled_from([0.0, 1e-3, 0.2])),
        noise_range_t=noise_range, noise_type=draw(st.sampled_from(["normal", "uniform"])),
        noise_pct=draw(st.sampled_from([0.67, 0.1, 1e-3])), noise_std=draw(st.sampled_from([1.0, 0.5, 3.0])),
        noise_seed=draw(st.integers(0, 2**40)))
    lr = draw(st.sampled_from([0.1, 0.05, 0.3, 1.0]))
    n = draw(st.integers(1, 24))
    start = draw(st.integers(0, 3))
    calls: list[tuple[int, float | None]] = [(start, None)] if start else []  # a resume: step(start_epoch)
    calls += [(e + 1, draw(METRICS)) for e in range(start, start + n)]
    return p, lr, calls


def _real(p: timm_stack.TimmPlateau, lr: float) -> tuple[Any, Any]:
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(params, lr=lr)
    r = p.noise_range_t
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        s = plateau_lr.PlateauLRScheduler(
            opt, decay_rate=p.config.factor, patience_t=p.config.patience, threshold=p.config.threshold,
            cooldown_t=p.config.cooldown, warmup_t=p.warmup_t, warmup_lr_init=p.warmup_lr_init,
            lr_min=p.config.min_lr, mode=p.config.mode, noise_range_t=list(r) if isinstance(r, tuple) else r,
            noise_type=p.noise_type, noise_pct=p.noise_pct, noise_std=p.noise_std, noise_seed=p.noise_seed)
    return opt, s


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timm_setups())
def test_replay_matches_real_timm(setup: tuple[timm_stack.TimmPlateau, float, list[Any]]) -> None:
    """Every lr and every counter of the wrapped scheduler equal real timm's, call by call (NaN/inf included)."""
    p, lr, calls = setup
    opt, real = _real(p, lr)
    start, steps = timm_stack.replay(p, calls, [lr])
    assert start == tuple(g["lr"] for g in opt.param_groups)
    for (epoch, metric), mine in zip(calls, steps, strict=True):
        real.step(epoch, metric)
        inner = real.lr_scheduler
        assert mine.lrs == tuple(g["lr"] for g in opt.param_groups), (epoch, metric)
        assert _same(mine.state.best, float(inner.best))
        assert (mine.state.num_bad_epochs, mine.state.cooldown_counter, mine.state.last_epoch) == (
            inner.num_bad_epochs, inner.cooldown_counter, inner.last_epoch)
        restore = real.restore_lr if real.restore_lr is not None else [g["lr"] for g in opt.param_groups]
        assert mine.plateau_lrs == tuple(restore)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**63 - 1), st.sampled_from(["normal", "uniform"]), st.sampled_from([0.67, 0.05, 2.0]),
       st.sampled_from([1.0, 0.3]))
def test_noise_is_torchs_generator(seed: int, kind: str, pct: float, std: float) -> None:
    """timm's _calculate_noise (torch.Generator per epoch) and ours agree bit for bit, resampling included."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        s = plateau_lr.PlateauLRScheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1),
                                          noise_type=kind, noise_pct=pct, noise_std=std, noise_seed=0)
    p = timm_stack.TimmPlateau(noise_type=kind, noise_pct=pct, noise_std=std, noise_seed=0)
    assert timm_stack.noise(p, seed) == s._calculate_noise(seed)
