"""MMEngine: ``ReduceOnPlateauLR``'s rules against the real class, and the fixtures against their truth.

The rules (``plateau_forensics.mmengine_rules.simulate``) are differential-tested against mmengine's own
scheduler with Hypothesis: random configurations and metric sequences (NaN, +-inf, values around int(1e9),
ints), as Python floats, numpy float32 and float32 tensors, with ``begin``/``end`` windows. The fixtures in
``sample_checkpoints/mmengine/`` (``make_mmengine.py``: a real ``Runner``) are judged by the truth their
generator recorded from the live scheduler, committed and freshly regenerated alike; no number from training
is asserted.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fixture_truth import (
    SAMPLES,
    Background,
    Live,
    assert_tool_tells_the_truth,
    expected,
    json_view,
    judge,
    read_truth,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import plateau_forensics as pf
from plateau_forensics import api
from plateau_forensics import mmengine_rules as mm
from plateau_forensics.cli import main
from plateau_forensics.loader import read_tree
from plateau_forensics.stacks.mmengine import history

MMENGINE = SAMPLES / "mmengine"
CKPTS = sorted(p.relative_to(MMENGINE).as_posix() for p in MMENGINE.rglob("epoch_*.pth"))
HAVE_MMENGINE = importlib.util.find_spec("mmengine") is not None


#: make_mmengine.py --only plain, started now: a real Runner spends most of its ~20 s importing (2 cores)
_REGEN = Background("make_mmengine.py", "--only", "plain") if HAVE_MMENGINE and importlib.util.find_spec(
    "torch") is not None else None


@pytest.fixture(scope="module")
def regenerated() -> Path:
    """A fresh ``make_mmengine.py --only plain`` run (a real MMEngine Runner; OpenCV may be absent)."""
    if _REGEN is None:
        pytest.skip("mmengine is not installed (pip install mmengine-lite)")
    return _REGEN.result()




@pytest.fixture(scope="module")
def mmengine_scheduler() -> type:
    """mmengine's ``ReduceOnPlateauLR`` (its import warns about torch.jit.script under torch 2.13)."""
    if not HAVE_MMENGINE:
        pytest.skip("mmengine is not installed (pip install mmengine-lite)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # imports only: a framework's own deprecation noise
        from mmengine.optim.scheduler import ReduceOnPlateauLR
    return ReduceOnPlateauLR


def _scalars(path: Path, key: str) -> list[tuple[int, float]]:
    """``vis_data/scalars.json``'s validation rows: (``step``, value of ``key``), read with json alone."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r["step"], r[key]) for r in rows if key in r]


class TestFixtures:
    """``plateau-trace epoch_N.pth`` alone replays the run from its message hub, as the truth says it went."""

    @pytest.mark.parametrize("ckpt", CKPTS, ids=CKPTS)
    def test_committed_checkpoint_tells_the_truth(self, ckpt: str) -> None:
        """API: every committed checkpoint, each step, the placement and the expected findings."""
        scenario, file = ckpt.split("/", 1)
        folder = MMENGINE / scenario
        truth = read_truth(folder / "truth.json")
        t = assert_tool_tells_the_truth(folder, truth, file, f"mmengine/{scenario}")
        assert t.checkpoint.framework == "mmengine"

    @pytest.mark.parametrize("ckpt", CKPTS, ids=CKPTS)
    def test_committed_checkpoint_through_the_cli(self, ckpt: str) -> None:
        """CLI: ``plateau-trace epoch_N.pth --format json`` (no log: the message hub is it), same judge."""
        scenario, file = ckpt.split("/", 1)
        folder = MMENGINE / scenario
        truth = read_truth(folder / "truth.json")
        r = CliRunner().invoke(main, [str(folder / file), "--format", "json"])
        assert r.exit_code == 0, r.output
        d = json.loads(r.stdout)
        assert d["log"]["source"].endswith("message_hub.log_scalars['val/val_loss']")
        found = judge(json_view(d), truth, file, expected(f"mmengine/{scenario}", file))
        assert not found, "\n".join(found)

    def test_regenerated_run_tells_the_truth(self, regenerated: Path) -> None:
        """A fresh run on this machine is judged by its own truth."""
        folder = regenerated / "plain"
        truth = read_truth(folder / "truth.json")
        files = [c.file for c in Live.of(truth).checkpoints]
        assert files and all((folder / f).is_file() for f in files)
        for f in files:
            assert_tool_tells_the_truth(folder, truth, f, "mmengine/plain")

    @pytest.mark.parametrize("ckpt", CKPTS, ids=CKPTS)
    def test_message_hub_history_is_every_evaluation(self, ckpt: str) -> None:
        """The HistoryBuffer read from inert records holds the raw value of every validation run before the
        file was saved: the plateau steps and those outside begin/end (the truth's ``unused``)."""
        scenario, file = ckpt.split("/", 1)
        truth = read_truth(MMENGINE / scenario / "truth.json")
        live = Live.of(truth)
        saved = live.checkpoint(file)
        hub = read_tree(MMENGINE / ckpt)["message_hub"]
        values = history(hub["log_scalars"]["val/val_loss"])
        given = sorted([(s.row, s.metric) for s in live.steps] + [(u["row"], u["metric"])
                                                                   for u in truth["live"]["unused"]])
        assert values == [m for row, m in given if row <= saved.row]

    @pytest.mark.parametrize("scenario", ["plain", "begin"])
    def test_window(self, scenario: str) -> None:
        """begin <= _global_step < end: the validations outside it are not in the trace; end = max_epochs."""
        truth = read_truth(MMENGINE / scenario / "truth.json")
        live = Live.of(truth)
        t = pf.trace(MMENGINE / scenario / "epoch_16.pth")
        assert [s.epoch for s in t.steps] == [s.epoch for s in live.steps]
        outside = sorted(u["global_step"] for u in truth["live"]["unused"])
        setup = truth["setup"]["scheduler"]
        assert outside == [g for g in range(1, truth["setup"]["max_epochs"] + 1)
                           if not setup.get("begin", 0) <= g < setup["end"]]
        window = next(f for f in t.findings if f.code == "mmengine-window")
        assert (window.evidence["begin"], window.evidence["end"]) == (setup.get("begin", 0), setup["end"])
        assert window.evidence["last_step"] == truth["live"]["mmengine_steps"][-1]["last_step"]
        assert "reached end" in window.message

    def test_scalars_json_as_the_metric_is_a_warning(self) -> None:
        """scalars.json's val_loss is a window-10 mean: fed as the log (API and CLI), the tool warns and
        counts the rows that are the mean and not the raw value, as json and the truth's raw values do."""
        folder = MMENGINE / "plain"
        truth = read_truth(folder / "truth.json")
        raw = {s.epoch: s.metric for s in Live.of(truth).steps}
        epochs = sorted(raw)
        logged = dict(_scalars(folder / "scalars.json", "val_loss"))
        means = 0
        for k, e in enumerate(epochs):
            window = [raw[x] for x in epochs[max(0, k - 9): k + 1]]
            if logged[e] != raw[e] and math.isclose(logged[e], sum(window) / len(window), rel_tol=1e-9):
                means += 1
        assert means > 0  # the file really is smoothed
        t = pf.trace(folder / "epoch_16.pth", folder / "scalars.json", epoch_column="step")  # val rows: step
        f = next(f for f in t.findings if f.code == "smoothed-metric")
        assert f.severity == "warning"
        assert (f.evidence["smoothed"], f.evidence["rows"]) == (means, len(epochs))
        r = CliRunner().invoke(main, [str(folder / "epoch_16.pth"), str(folder / "scalars.json"),
                                      "--epoch-column", "step", "--format", "json"])
        assert r.exit_code == 0, r.output
        codes = {(f["code"], f["severity"]) for f in json.loads(r.stdout)["findings"]}
        assert ("smoothed-metric", "warning") in codes

    def test_raw_values_as_the_metric_are_not_smoothed(self, tmp_path: Path) -> None:
        """The same column name with the raw values (the truth's) is no smoothed-metric warning."""
        folder = MMENGINE / "plain"
        steps = Live.of(read_truth(folder / "truth.json")).steps
        log = tmp_path / "raw.csv"
        log.write_text("epoch,val_loss\n" + "".join(f"{s.epoch},{s.metric!r}\n" for s in steps))
        t = pf.trace(folder / "epoch_16.pth", log)
        assert "smoothed-metric" not in {f.code for f in t.findings}

    def test_no_torch_version_finding(self) -> None:
        """MMEngine's own state class dates no torch release; meta.epoch is the checkpoint's epoch."""
        t = pf.trace(MMENGINE / "plain" / "epoch_8.pth")
        assert "torch-version" not in {f.code for f in t.findings}
        assert t.checkpoint.framework == "mmengine"
        assert t.checkpoint.epoch == read_tree(MMENGINE / "plain" / "epoch_8.pth")["meta"]["epoch"]

    def test_found_by_content(self, tmp_path: Path) -> None:
        """Renamed (no epoch_N, no .pth): the same stack, steps and findings."""
        dst = tmp_path / "model.bin"
        shutil.copy(MMENGINE / "plain" / "epoch_8.pth", dst)
        a, b = pf.trace(MMENGINE / "plain" / "epoch_8.pth"), pf.trace(dst)
        assert b.checkpoint.framework == "mmengine"
        assert [(s.epoch, s.best, s.lr) for s in a.steps] == [(s.epoch, s.best, s.lr) for s in b.steps]
        assert [f.code for f in a.findings] == [f.code for f in b.findings]


# ------------------------------------------------------------------------------------ the rules

#: around MMEngine's initial best: int(1e9), its rel bars 1e9 * (1 -+ threshold), ints and floats alike
NEAR_INF = [10**9, 10**9 - 1, 10**9 + 1, 1e9, math.nextafter(1e9, 0), math.nextafter(1e9, math.inf),
            999_900_000, 999_900_000.0, math.nextafter(999_900_000.0, 0),
            math.nextafter(999_900_000.0, math.inf),
            1_000_100_000.0, 2e9, -1e9, -(10**9), -999_900_000.0, -1_000_100_000.0]
VALUES = st.one_of(
    st.floats(-3, 3, allow_nan=False, width=64),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1, 3, 0.5]),
    st.sampled_from(NEAR_INF),
)
CONFIGS = st.builds(
    mm.MMEngineConfig, monitor=st.just("m"), rule=st.sampled_from(["less", "greater"]),
    factor=st.sampled_from([0.0, 0.1, 0.5, 0.8]), patience=st.integers(0, 3),
    threshold=st.sampled_from([0.0, 1e-4, 0.1, 1.0, 2.0]), threshold_rule=st.sampled_from(["rel", "abs"]),
    cooldown=st.integers(0, 2), min_value=st.sampled_from([0.0, 1e-3, 0.02]),
    eps=st.sampled_from([0.0, 1e-8, 1e-3]), begin=st.integers(0, 2), end=st.sampled_from([3, 5, 8, mm.INF]))


def _drive(sched: Any, values: list[Any], gaps: list[int], kind: str) -> list[tuple[Any, ...]]:
    """Run a real ``ReduceOnPlateauLR`` as the Runner does: ``gap`` metric-less ``step()`` calls
    (``after_train_epoch``; 2 when ``val_interval=2``), then ``step(metrics)`` (``after_val_epoch``)."""
    import numpy as np
    import torch

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy's float32 overflow cast of a huge bar
        for v, gap in zip(values, gaps, strict=True):
            for _ in range(gap):
                sched.step()
            m = v if kind == "python" else (np.float32(v) if kind == "numpy-float32"
                                            else torch.tensor(float(v), dtype=torch.float32))
            sched.step({"m": m})
            out.append((float(sched.best), sched.num_bad_epochs, sched.cooldown_counter, sched.last_step,
                        sched._global_step, sched.optimizer.param_groups[0]["lr"]))
    return out


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return a[1:] == b[1:] and (a[0] == b[0] or (math.isnan(a[0]) and math.isnan(b[0])))


class TestRulesAgainstMMEngine:
    """``simulate`` equals mmengine's ``ReduceOnPlateauLR`` after every call, as the Runner drives it."""

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(cfg=CONFIGS, data=st.data(), kind=st.sampled_from(["python", "numpy-float32", "tensor-float32"]))
    def test_differential(self, mmengine_scheduler: type, cfg: mm.MMEngineConfig, data: Any,
                          kind: str) -> None:
        """best, num_bad_epochs, cooldown_counter, last_step, _global_step and the lr, call by call, with
        validations every epoch or every other one, inside and outside ``[begin, end)``."""
        import torch

        values = data.draw(st.lists(VALUES, min_size=1, max_size=12), label="values")
        n = len(values)
        gaps = data.draw(st.lists(st.integers(1, 2), min_size=n, max_size=n), label="gaps")
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        real = _drive(mmengine_scheduler(opt, **cfg.to_dict()), values, gaps, kind)
        global_steps = [sum(gaps[: i + 1]) for i in range(len(gaps))]
        sim = mm.simulate(cfg, values, [0.1], global_steps=global_steps,
                          metric_type="python" if kind == "python" else "float32")
        mine = [(float(s.best), s.num_bad_epochs, s.cooldown_counter, s.last_step, s.global_step, s.lr[0])
                for s in sim.steps]
        for i, (r, s) in enumerate(zip(real, mine, strict=True)):
            assert _same(r, s), (i, r, s)
        assert [s.used for s in sim.steps] == [cfg.begin <= g < cfg.end for g in global_steps]

    @settings(max_examples=80, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(cfg=CONFIGS, values=st.lists(VALUES, min_size=1, max_size=12))
    def test_engine_replay_equals_mmengine(self, mmengine_scheduler: type, cfg: mm.MMEngineConfig,
                                           values: list[Any]) -> None:
        """``--rules mmengine`` (``api.replay_mmengine``: the package's engine from int(1e9)) on Python-float
        metrics equals the real scheduler every epoch (torch's names mapped by hand: less = min, ...)."""
        import torch

        full = mm.MMEngineConfig(**{**cfg.to_dict(), "begin": 0, "end": mm.INF})
        values = [float(v) for v in values]
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        real = _drive(mmengine_scheduler(opt, **full.to_dict()), values, [1] * len(values), "python")
        config = pf.PlateauConfig(mode="min" if cfg.rule == "less" else "max", factor=cfg.factor,
                                  patience=cfg.patience, threshold=cfg.threshold,
                                  threshold_mode=cfg.threshold_rule, cooldown=cfg.cooldown,
                                  min_lr=cfg.min_value, eps=cfg.eps)
        log = {"epoch": list(range(1, len(values) + 1)), "val_loss": values}
        t = api.replay_mmengine(log, config, lr=[0.1])
        mine = [(e.best, e.num_bad_epochs, e.cooldown_counter, e.last_epoch - 1, i + 1, e.lr[0])
                for i, e in enumerate(t.steps)]
        for i, (r, s) in enumerate(zip(real, mine, strict=True)):
            assert _same(r, s), (i, r, s)

    def test_rules_differ_from_torch_at_the_initial_best(self, mmengine_scheduler: type) -> None:
        """A first metric of 2e9 improves on torch's inf but not on MMEngine's int(1e9) (the real class)."""
        import torch

        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        real = _drive(mmengine_scheduler(opt, monitor="m", patience=0), [2e9], [1], "python")
        assert real[0][0] == mm.INF and real[0][-1] < 0.1  # a bad epoch, reduced at patience 0
        sim = mm.simulate(mm.MMEngineConfig(patience=0), [2e9], [0.1])
        assert not sim.steps[0].improved and sim.steps[0].best == mm.INF
        assert pf.replay([2e9], pf.PlateauConfig(patience=0), lrs=[0.1]).steps[0].best == 2e9


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

    def test_rules_mmengine_replays_the_real_run(self, tmp_path: Path) -> None:
        """``--rules mmengine`` over the run's raw validation values, with the hyperparameters it was built
        with (MMEngine's names given as torch's), shows every plateau step the real scheduler took."""
        folder = MMENGINE / "plain"
        truth = read_truth(folder / "truth.json")
        live = Live.of(truth)
        setup = truth["setup"]["scheduler"]
        log = tmp_path / "raw.csv"
        log.write_text("epoch,val_loss\n" + "".join(f"{s.epoch},{s.metric!r}\n" for s in live.steps))
        r = CliRunner().invoke(main, [
            str(log), "--rules", "mmengine", "--lr", repr(truth["setup"]["lr"]), "--format", "json",
            "--mode", {"less": "min", "greater": "max"}[setup["rule"]], "--patience", str(setup["patience"]),
            "--factor", repr(setup["factor"]), "--cooldown", str(setup["cooldown"]),
            "--threshold", repr(setup["threshold"])])
        assert r.exit_code == 0, r.output
        steps = json.loads(r.stdout)["steps"]
        assert [(s["epoch"], s["best"], s["num_bad_epochs"], s["cooldown_counter"], s["lr"], s["last_epoch"])
                for s in steps] == [(s.epoch, s.best, s.num_bad_epochs, s.cooldown_counter, list(s.lr),
                                     s.last_epoch) for s in live.steps]

    def test_rules_mmengine_mode_auto_is_refused(self, tmp_path: Path) -> None:
        """MMEngine has no mode 'auto': one line, no traceback."""
        log = tmp_path / "log.csv"
        log.write_text("epoch,val_loss\n1,1.0\n")
        r = CliRunner().invoke(main, [str(log), "--lr", "0.1", "--rules", "mmengine", "--mode", "auto"])
        assert r.exit_code == 2 and isinstance(r.exception, SystemExit)
        assert "Error: --mode auto" in r.output and "Traceback" not in r.output


class TestFloat32Metric:
    """A metric handed over as a float32 tensor is compared in float32 by MMEngine (no float cast)."""

    def test_float32_best_is_named_where_it_decides(self, mmengine_scheduler: type, tmp_path: Path) -> None:
        """Real objects: the same values as float32 tensors and as Python floats part at the bar
        1 * (1 - 1e-4); a checkpoint in the Runner's layout (MessageHub state, scheduler state) gets
        ``mmengine-float32`` at the epoch where the two real schedulers part."""
        import struct

        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # imports only: a framework's own deprecation noise
            from mmengine.logging import MessageHub
        just_below = struct.unpack("<f", struct.pack("<f", 0.9999))[0]  # float32(0.9999) < 0.9999 in float64
        values = [1.0, just_below, 0.5]
        runs = {}
        for kind in ("tensor-float32", "python"):
            opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
            sched = mmengine_scheduler(opt, monitor="m", patience=0, factor=0.5, threshold=1e-4)
            runs[kind] = (sched, _drive(sched, values, [1] * len(values), kind))
        pairs = zip(runs["tensor-float32"][1], runs["python"][1], strict=True)
        parts = [i + 1 for i, (a, b) in enumerate(pairs) if a[1:] != b[1:]]
        assert parts  # the oracle: the real class decides differently for float32 tensors
        sched = runs["tensor-float32"][0]
        hub = MessageHub.get_instance("pf-test-float32")
        for v in values:
            hub.update_scalar("val/m", torch.tensor(v, dtype=torch.float32))
        path = tmp_path / "epoch_3.pth"
        state = {"meta": {"epoch": 3}, "message_hub": hub.state_dict(),
                 "optimizer": sched.optimizer.state_dict(), "param_schedulers": [sched.state_dict()]}
        torch.save(state, path)
        t = pf.trace(path)
        assert t.checkpoint.framework == "mmengine" and t.checkpoint.state.best_dtype == "float32"
        f = next(f for f in t.findings if f.code == "mmengine-float32")
        assert f.severity == "warning" and f.epoch == parts[0]

    def test_python_floats_are_not_named(self) -> None:
        """The committed Runner fixtures hand over Python floats: no float32 finding."""
        t = pf.trace(MMENGINE / "plain" / "epoch_16.pth")
        assert t.checkpoint.state.best_dtype is None
        assert "mmengine-float32" not in {f.code for f in t.findings}


class TestOtherParams:
    """MMEngine's plateau machine also schedules other values (``ReduceOnPlateauMomentum``)."""

    def test_momentum_scheduler_is_not_replayed_as_the_lr(self, mmengine_scheduler: type,
                                                          tmp_path: Path) -> None:
        """A real ``ReduceOnPlateauMomentum`` state is refused (one line, naming it); beside a
        ``ReduceOnPlateauLR`` the lr one is chosen with ``--scheduler`` and replays as the real one went."""
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # imports only: a framework's own deprecation noise
            from mmengine.optim.scheduler import ReduceOnPlateauMomentum
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
        momentum = ReduceOnPlateauMomentum(opt, monitor="m", patience=0)
        lr = mmengine_scheduler(opt, monitor="m", patience=1)
        for v in (1.0, 2.0, 3.0, 4.0):
            for s in (momentum, lr):
                s.step()
            for s in (momentum, lr):
                s.step({"m": v})
        only = tmp_path / "momentum.pth"
        torch.save({"meta": {"epoch": 4}, "optimizer": opt.state_dict(),
                    "param_schedulers": [momentum.state_dict()]}, only)
        r = CliRunner().invoke(main, [str(only)])
        assert 1 == r.exit_code
        assert r.stderr.strip().splitlines() == [
            f"Error: {only}:param_schedulers[0]: MMEngine's plateau scheduler of 'momentum' (param_name), "
            "not of the lr; plateau-forensics replays lr schedulers (ReduceOnPlateauLR)"]
        both = tmp_path / "both.pth"
        torch.save({"meta": {"epoch": 4}, "optimizer": opt.state_dict(),
                    "param_schedulers": [momentum.state_dict(), lr.state_dict()]}, both)
        t = pf.trace(both, scheduler="param_schedulers[1]")
        assert t.checkpoint.framework == "mmengine"
        assert (t.checkpoint.state.best, t.checkpoint.state.num_bad_epochs, t.checkpoint.optimizer_lrs) == (
            lr.best, lr.num_bad_epochs, (opt.param_groups[0]["lr"],))
