"""MMEngine: ``ReduceOnPlateauLR``'s rules against the real class, and the fixtures against their truth.

The rules (``plateau_forensics.mmengine_rules.simulate``) are differential-tested against mmengine's own
scheduler with Hypothesis: random configurations and metric sequences (NaN, +-inf, values around int(1e9),
ints), as Python floats, numpy float32 and float32 tensors, with ``begin``/``end`` windows. The fixtures in
``sample_checkpoints/mmengine/`` (``make_mmengine.py``: a real ``Runner``) are judged by the truth their generator
recorded from the live scheduler, committed and freshly regenerated alike; no number from training is asserted.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fixture_truth import SAMPLES, Live, assert_tool_tells_the_truth, read_truth
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import plateau_forensics as pf
from plateau_forensics import mmengine_rules as mm
from plateau_forensics.cli import main
from plateau_forensics.loader import read_tree
from plateau_forensics.stacks.mmengine import history

MMENGINE = SAMPLES / "mmengine"
CKPTS = sorted(p.relative_to(MMENGINE).as_posix() for p in MMENGINE.rglob("epoch_*.pth"))
HAVE_MMENGINE = importlib.util.find_spec("mmengine") is not None


def _start_regeneration() -> tuple[subprocess.Popen[str], Path] | None:
    """Start ``make_mmengine.py --only plain`` now, at collection: a real Runner spends most of its ~20 s
    importing, and runs beside the tests that do not need it (2 cores)."""
    if not HAVE_MMENGINE or importlib.util.find_spec("torch") is None:
        return None
    out = Path(tempfile.mkdtemp(prefix="pf-mmengine-"))
    cmd = [sys.executable, str(SAMPLES / "make_mmengine.py"), str(out), "--only", "plain"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), out


_REGEN = _start_regeneration()


@pytest.fixture(scope="module")
def regenerated() -> Iterator[Path]:
    """A fresh ``make_mmengine.py --only plain`` run (a real MMEngine Runner; OpenCV may be absent)."""
    if _REGEN is None:
        pytest.skip("mmengine is not installed (pip install mmengine-lite)")
    proc, out = _REGEN
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    yield out
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def mmengine_scheduler() -> type:
    """mmengine's ``ReduceOnPlateauLR`` (its import warns about torch.jit.script under torch 2.13)."""
    if not HAVE_MMENGINE:
        pytest.skip("mmengine is not installed (pip install mmengine-lite)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from mmengine.optim.scheduler import ReduceOnPlateauLR
    return ReduceOnPlateauLR


class TestFixtures:
    """``plateau-trace epoch_N.pth`` alone replays the run from its message hub, as the truth says it went."""

    @pytest.mark.parametrize("ckpt", CKPTS, ids=CKPTS)
    def test_committed_checkpoint_tells_the_truth(self, ckpt: str) -> None:
        """Every committed checkpoint: each step, the placement and the expected findings."""
        scenario, file = ckpt.split("/", 1)
        folder = MMENGINE / scenario
        assert_tool_tells_the_truth(folder, read_truth(folder / "truth.json"), file, f"mmengine/{scenario}")

    def test_regenerated_run_tells_the_truth(self, regenerated: Path) -> None:
        """A fresh run on this machine is judged by its own truth."""
        folder = regenerated / "plain"
        truth = read_truth(folder / "truth.json")
        for c in Live.of(truth).checkpoints:
            assert_tool_tells_the_truth(folder, truth, c.file, "mmengine/plain")

    def test_message_hub_history_is_every_evaluation(self) -> None:
        """The HistoryBuffer read from inert records holds the raw value of every validation the run made."""
        folder = MMENGINE / "plain"
        live = Live.of(read_truth(folder / "truth.json"))
        hub = read_tree(folder / "epoch_16.pth")["message_hub"]
        values = history(hub["log_scalars"]["val/val_loss"])
        assert [s.metric for s in live.steps] == values  # 15 validations, all plateau steps
        assert len(read_truth(folder / "truth.json")["live"]["unused"]) == 1  # epoch 16's, after end

    def test_last_validation_is_never_a_step(self) -> None:
        """end = max_epochs: the window finding says so, and the trace ends at epoch 15."""
        t = pf.trace(MMENGINE / "plain" / "epoch_16.pth")
        assert t.steps[-1].epoch == 15
        window = next(f for f in t.findings if f.code == "mmengine-window")
        assert window.evidence["end"] == 16 and "reached end" in window.message

    def test_scalars_json_as_the_metric_is_a_warning(self) -> None:
        """scalars.json's val_loss is a window-10 mean: fed as the log, the tool warns and shows how many rows."""
        folder = MMENGINE / "plain"
        t = pf.trace(folder / "epoch_16.pth", folder / "scalars.json", epoch_column="step")  # val rows: step
        f = next(f for f in t.findings if f.code == "smoothed-metric")
        assert f.severity == "warning" and f.evidence["smoothed"] >= 1

    def test_no_torch_version_finding(self) -> None:
        """MMEngine's own state class dates no torch release."""
        t = pf.trace(MMENGINE / "plain" / "epoch_8.pth")
        assert "torch-version" not in {f.code for f in t.findings}
        assert t.checkpoint.framework == "mmengine" and t.checkpoint.epoch == 8


# ------------------------------------------------------------------------------------ the rules

VALUES = st.one_of(
    st.floats(-3, 3, allow_nan=False, width=64),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e9, 2e9, 999_900_000.0, -1e9, 0.0, 1, 3, 10**9]),
)
CONFIGS = st.builds(
    mm.MMEngineConfig, monitor=st.just("m"), rule=st.sampled_from(["less", "greater"]),
    factor=st.sampled_from([0.0, 0.1, 0.5, 0.8]), patience=st.integers(0, 3),
    threshold=st.sampled_from([0.0, 1e-4, 0.1, 1.0, 2.0]), threshold_rule=st.sampled_from(["rel", "abs"]),
    cooldown=st.integers(0, 2), min_value=st.sampled_from([0.0, 1e-3, 0.02]), eps=st.sampled_from([0.0, 1e-8, 1e-3]),
    begin=st.integers(0, 3), end=st.sampled_from([4, 8, mm.INF]))


class TestRulesAgainstMMEngine:
    """``simulate`` equals mmengine's ``ReduceOnPlateauLR`` after every call, as the Runner drives it."""

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(cfg=CONFIGS, values=st.lists(VALUES, min_size=1, max_size=12),
           kind=st.sampled_from(["python", "numpy-float32", "tensor-float32"]))
    def test_differential(self, mmengine_scheduler: type, cfg: mm.MMEngineConfig, values: list[float],
                          kind: str) -> None:
        """best, num_bad_epochs, cooldown_counter, last_step and the lr, call by call."""
        import numpy as np
        import torch

        ReduceOnPlateauLR = mmengine_scheduler  # noqa: N806 - the class under test

        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        sched = ReduceOnPlateauLR(opt, **cfg.to_dict())
        real = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's float32 overflow cast of a huge bar
            for v in values:
                sched.step()  # ParamSchedulerHook.after_train_epoch
                m = v if kind == "python" else (np.float32(v) if kind == "numpy-float32"
                                                else torch.tensor(float(v), dtype=torch.float32))
                sched.step({"m": m})  # after_val_epoch
                real.append((float(sched.best), sched.num_bad_epochs, sched.cooldown_counter, sched.last_step,
                             opt.param_groups[0]["lr"]))
        sim = mm.simulate(cfg, values, [0.1], metric_type="python" if kind == "python" else "float32")
        mine = [(float(s.best), s.num_bad_epochs, s.cooldown_counter, s.last_step, s.lr[0]) for s in sim.steps]
        for r, s in zip(real, mine, strict=True):
            assert r[1:] == s[1:]
            assert r[0] == s[0] or (math.isnan(r[0]) and math.isnan(s[0]))

    def test_rules_differ_from_torch_at_the_initial_best(self) -> None:
        """A first metric of 2e9 improves on torch's inf but not on MMEngine's int(1e9)."""
        sim = mm.simulate(mm.MMEngineConfig(patience=0), [2e9], [0.1])
        assert not sim.steps[0].improved and sim.steps[0].best == mm.INF
        assert pf.replay([2e9], pf.PlateauConfig(patience=0), lrs=[0.1]).steps[0].best == 2e9


@settings(max_examples=100, deadline=None)
@given(cfg=CONFIGS, values=st.lists(VALUES, min_size=1, max_size=12))
def test_engine_replay_equals_simulate(cfg: mm.MMEngineConfig, values: list[float]) -> None:
    """The package's engine with ``torch_config`` replays Python floats exactly as ``simulate`` (in the window)."""
    full = mm.MMEngineConfig(**{**cfg.to_dict(), "begin": 0, "end": mm.INF})
    values = [float(v) for v in values]
    sim = mm.simulate(full, values, [0.1])
    t = pf.replay(values, mm.torch_config(full), lrs=[0.1])
    for s, e in zip(sim.steps, t.steps, strict=True):
        assert (s.num_bad_epochs, s.cooldown_counter, s.lr, s.last_step + 1) == (
            e.num_bad_epochs, e.cooldown_counter, e.lr, e.last_epoch)
        assert s.best == e.best or (math.isnan(s.best) and math.isnan(e.best))


class TestCli:
    """``--rules mmengine`` replays a log from MMEngine's initial best."""

    def test_rules_mmengine(self, tmp_path: Path) -> None:
        """A first value above 1e9 is a bad epoch under MMEngine's rules, an improvement under torch's."""
        log = tmp_path / "log.csv"
        log.write_text("epoch,val_loss\n1,2e9\n2,1.5e9\n")
        r = CliRunner().invoke(main, [str(log), "--lr", "0.1", "--patience", "0", "--rules", "mmengine",
                                      "--format", "json"])
        assert r.exit_code == 0, r.output
        steps = json.loads(r.stdout)["steps"]
        assert [s["event"] for s in steps] == ["reduced", "reduced"]

    def test_rules_mmengine_refuses_a_checkpoint(self) -> None:
        """The checkpoint already says its rules: a usage error, one line."""
        r = CliRunner().invoke(main, [str(MMENGINE / "plain" / "epoch_8.pth"), "--rules", "mmengine"])
        assert r.exit_code == 2 and "drop --rules" in r.output

    def test_checkpoint_alone(self) -> None:
        """``plateau-trace epoch_N.pth`` prints the replay with the message hub as its log."""
        r = CliRunner().invoke(main, [str(MMENGINE / "plain" / "epoch_16.pth"), "--width", "100"])
        assert r.exit_code == 0, r.output
        assert "(mmengine)" in r.stdout and "saved-before-step" in r.stdout
