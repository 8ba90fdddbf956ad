"""pytorch-ignite: ``ReduceLROnPlateauScheduler`` checkpoints against their truth, and the ignite replay
against the real class.

The fixtures in ``sample_checkpoints/ignite/`` (``make_ignite.py``: a real ``Engine`` trainer and evaluator,
a real ``ReduceLROnPlateauScheduler``, ignite's own ``Checkpoint`` handler) are judged by the truth their
generator recorded from the live scheduler, through the API and the CLI, committed and freshly regenerated
alike; no number from training is asserted. The replay of an ignite state (``stacks/ignite.py``'s view: the
reduced group, its floor, ``min_lr`` replaced by 0) is differential-tested with Hypothesis against ignite
0.5.5's own scheduler.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import shutil
import subprocess
import sys
import tempfile
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
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import plateau_forensics as pf
from plateau_forensics.cli import main
from plateau_forensics.loader import read_tree
from plateau_forensics.torchfile import Opaque

IGNITE = SAMPLES / "ignite"
CKPTS = sorted(p.relative_to(IGNITE).as_posix() for p in IGNITE.rglob("checkpoint_*.pt"))
HAVE_IGNITE = importlib.util.find_spec("ignite") is not None and importlib.util.find_spec("torch") is not None
NEEDS_IGNITE = pytest.mark.skipif(not HAVE_IGNITE, reason="pytorch-ignite is not installed (the test extra)")


#: make_ignite.py, started now: it spends most of its ~10 s importing torch and ignite
_REGEN = Background("make_ignite.py") if HAVE_IGNITE else None


@pytest.fixture(scope="module")
def regenerated() -> Path:
    """A fresh ``make_ignite.py`` run (every scenario) in a temporary directory."""
    if _REGEN is None:
        pytest.skip("pytorch-ignite is not installed (the test extra)")
    return _REGEN.result()




def _fixture(ckpt: str) -> tuple[Path, dict[str, Any], str, str]:
    scenario, file = ckpt.split("/", 1)
    return IGNITE / scenario, read_truth(IGNITE / scenario / "truth.json"), file, f"ignite/{scenario}"


class TestFixtures:
    """``plateau-trace checkpoint_N.pt log.csv`` on ignite's own files says what the run did."""

    @pytest.mark.parametrize("ckpt", CKPTS, ids=CKPTS)
    def test_committed_checkpoint_tells_the_truth(self, ckpt: str) -> None:
        """API: each step, the placement and the expected findings, judged by the recorded truth."""
        folder, truth, file, key = _fixture(ckpt)
        t = assert_tool_tells_the_truth(folder, truth, file, key)
        assert t.checkpoint.framework == "ignite"

    @pytest.mark.parametrize("ckpt", CKPTS, ids=CKPTS)
    def test_committed_checkpoint_through_the_cli(self, ckpt: str) -> None:
        """CLI (``--format json``): the same judge on what a user reads."""
        folder, truth, file, key = _fixture(ckpt)
        r = CliRunner().invoke(main, [str(folder / file), str(folder / truth["log"]), "--format", "json"])
        assert r.exit_code == 0, r.output
        found = judge(json_view(json.loads(r.stdout)), truth, file, expected(key, file))
        assert not found, "\n".join(found)

    def test_regenerated_runs_tell_the_truth(self, regenerated: Path) -> None:
        """A fresh run of every scenario on this machine, judged by its own fresh truth."""
        scenarios = sorted(p.name for p in regenerated.iterdir())
        assert scenarios == ["group_index", "plain"]
        for name in scenarios:
            folder = regenerated / name
            truth = read_truth(folder / "truth.json")
            for c in Live.of(truth).checkpoints:
                assert_tool_tells_the_truth(folder, truth, c.file, f"ignite/{name}")

    def test_min_lr_replaced_by_zero_is_named(self) -> None:
        """plain: ignite was given min_lr=0.02 with param_group_index=None; the run went below it (the truth),
        and the tool names the replaced floor; group_index kept its floor and is not told so."""
        plain = read_truth(IGNITE / "plain" / "truth.json")
        given_floor = plain["setup"]["scheduler"]["min_lr"]
        assert plain["setup"]["scheduler"]["param_group_index"] is None
        assert min(lr for s in Live.of(plain).steps for lr in s.lr) < given_floor
        t = pf.trace(IGNITE / "plain" / "checkpoints" / "checkpoint_16.pt", IGNITE / "plain" / "log.csv")
        f = next(f for f in t.findings if f.code == "ignite-min-lr-dropped")
        assert f.evidence["param_group_index"] is None and f.evidence["min_lrs"] == [0]
        assert t.config.min_lr == 0.0

        kept = read_truth(IGNITE / "group_index" / "truth.json")
        floor = kept["setup"]["scheduler"]["min_lr"]
        assert min(lr for s in Live.of(kept).steps for lr in s.lr) == floor  # the run reached its floor
        folder = IGNITE / "group_index"
        t = pf.trace(folder / "checkpoints" / "checkpoint_16.pt", folder / "log.csv")
        assert "ignite-min-lr-dropped" not in {f.code for f in t.findings}
        assert t.config.min_lr in (floor, (floor,))

    def test_wrapper_state_is_found_by_content(self, tmp_path: Path) -> None:
        """Renamed file and folder: the same stack, the same findings (nothing comes from a name)."""
        src = IGNITE / "plain" / "checkpoints" / "checkpoint_8.pt"
        dst = tmp_path / "run" / "model_best.bin"
        dst.parent.mkdir()
        shutil.copy(src, dst)
        a = pf.trace(src, IGNITE / "plain" / "log.csv")
        b = pf.trace(dst, IGNITE / "plain" / "log.csv")
        assert b.checkpoint.framework == "ignite"
        assert [f.code for f in a.findings] == [f.code for f in b.findings]


class TestPickledSchedulerObject:
    """ignite's bound ``_reduce_lr`` pickles its scheduler object: torch refuses the file, our reader does not
    run it."""

    @NEEDS_IGNITE
    @pytest.mark.parametrize("ckpt", CKPTS, ids=CKPTS)
    def test_weights_only_refuses(self, ckpt: str) -> None:
        """Real torch: ``torch.load(weights_only=True)`` refuses each committed file, naming ``getattr``."""
        import torch

        with pytest.raises(Exception, match="getattr") as info:
            torch.load(IGNITE / ckpt, weights_only=True)
        assert "Weights only load failed" in str(info.value)

    @NEEDS_IGNITE
    def test_loader_torch_is_refused_in_one_line(self) -> None:
        """``--loader torch`` (torch.load, weights_only=True) cannot read it: exit 1, one ``Error:`` line."""
        ckpt = IGNITE / CKPTS[0]
        r = CliRunner().invoke(main, [str(ckpt), str(IGNITE / CKPTS[0].split("/")[0] / "log.csv"),
                                      "--loader", "torch"])
        assert 1 == r.exit_code and isinstance(r.exception, SystemExit)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(f"Error: {ckpt}: torch.load(weights_only=True) refused it")

    @pytest.mark.parametrize("ckpt", CKPTS, ids=CKPTS)
    def test_read_inert(self, ckpt: str) -> None:
        """The built-in reader keeps the ignite scheduler object and the bound method as inert records."""
        tree = read_tree(IGNITE / ckpt)
        bound = tree["lr_scheduler"]["scheduler"]["_reduce_lr"]
        assert isinstance(bound, Opaque) and type(bound).name == "builtins.getattr"
        assert type(bound.args[0]).name == "ignite.handlers.param_scheduler.ReduceLROnPlateauScheduler"
        t = pf.trace(IGNITE / ckpt, IGNITE / ckpt.split("/")[0] / "log.csv")
        f = next(f for f in t.findings if f.code == "pickled-scheduler-object")
        assert f.severity == "info" and "weights_only=True" in f.message

    def test_nothing_runs(self) -> None:
        """A fresh interpreter traces a fixture without importing ignite or torch (nothing in it ran)."""
        code = ("import sys, plateau_forensics as pf; "
                f"t = pf.trace({str(IGNITE / 'plain/checkpoints/checkpoint_8.pt')!r}, "
                f"{str(IGNITE / 'plain/log.csv')!r}); "
                "print(t.checkpoint.framework, sorted(m for m in ('ignite', 'torch') if m in sys.modules))")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.split() == ["ignite", "[]"]


# ------------------------------------------------------------------------------------ against real ignite

METRICS = st.one_of(st.floats(-3, 3, allow_nan=False, width=64),
                    st.sampled_from([0.0, 1.0, 1.0001, 2.0, math.inf, -math.inf, math.nan]))


def _ignite() -> tuple[type, type]:
    """ignite's ``Engine`` and ``ReduceLROnPlateauScheduler`` (importing ignite warns about torch.jit.script
    under torch 2.13)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # imports only: a framework's own deprecation noise
        from ignite.engine import Engine
        from ignite.handlers.param_scheduler import ReduceLROnPlateauScheduler
    return Engine, ReduceLROnPlateauScheduler


@st.composite
def scenarios(draw: Any) -> dict[str, Any]:
    """An optimizer of 1-3 groups, an ignite scheduler configuration and a metric sequence."""
    n = draw(st.integers(1, 3))
    index = draw(st.one_of(st.none(), st.integers(0, n - 1)))
    kw = {"mode": draw(st.sampled_from(["min", "max"])), "factor": draw(st.sampled_from([0.1, 0.5, 0.9])),
          "patience": draw(st.integers(0, 3)), "threshold": draw(st.sampled_from([0.0, 1e-4, 0.1])),
          "threshold_mode": draw(st.sampled_from(["rel", "abs"])), "cooldown": draw(st.integers(0, 2)),
          "eps": draw(st.sampled_from([1e-8, 0.0, 1e-3]))}
    min_lr = draw(st.one_of(st.none(), st.sampled_from([0.0, 1e-3, 0.02, 0.05])))
    if min_lr is not None:
        kw["min_lr"] = min_lr
    metrics = draw(st.lists(METRICS, min_size=1, max_size=10))
    return {"lrs": draw(st.lists(st.sampled_from([0.1, 0.05, 0.01]), min_size=n, max_size=n)), "index": index,
            "kw": kw, "metrics": metrics, "save_after": draw(st.integers(1, len(metrics)))}


@NEEDS_IGNITE
@example(sc={"lrs": [0.1, 0.1], "index": 1, "metrics": [1.0, 2.0, 3.0, 4.0], "save_after": 4,
             "kw": {"mode": "min", "factor": 0.1, "patience": 0, "threshold": 1e-4, "threshold_mode": "rel",
                    "cooldown": 0, "eps": 1e-8, "min_lr": 0.05}})
@example(sc={"lrs": [0.1, 0.05, 0.01], "index": None, "metrics": [1.0, 2.0, math.nan, 3.0, 0.5, 0.6],
             "save_after": 3,
             "kw": {"mode": "min", "factor": 0.5, "patience": 1, "threshold": 0.1, "threshold_mode": "abs",
                    "cooldown": 1, "eps": 1e-8, "min_lr": 0.02}})
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios())
def test_replay_equals_real_ignite(sc: dict[str, Any]) -> None:
    """A checkpoint of the real scheduler saved after one of its steps, traced with the run's log (every
    group's lr), replays each step as ignite took it: best, counters and the lr of the group(s) it reduces."""
    import torch

    Engine, ReduceLROnPlateauScheduler = _ignite()  # noqa: N806 - the classes under test

    n, index = len(sc["lrs"]), sc["index"]
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(n)]
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, sc["lrs"], strict=True)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = ReduceLROnPlateauScheduler(opt, metric_name="val_loss", param_group_index=index, **sc["kw"])
    evaluator = Engine(lambda engine, batch: None)
    rows, real = [], []
    saved = io.BytesIO()
    for v in sc["metrics"]:
        rows.append([g["lr"] for g in opt.param_groups])
        evaluator.state.metrics = {"val_loss": v}
        sched(evaluator)  # what Events.COMPLETED calls
        torch_sched = sched.scheduler
        real.append((float(torch_sched.best), torch_sched.num_bad_epochs, torch_sched.cooldown_counter,
                     tuple(g["lr"] for g in opt.param_groups)))
        if len(real) == sc["save_after"]:  # what a Checkpoint handler after the evaluation writes
            torch.save({"lr_scheduler": sched.state_dict(), "optimizer": opt.state_dict()}, saved)
    if index is not None:  # the oracle itself: the other groups are never touched
        assert all(r[3][g] == sc["lrs"][g] for r in real for g in range(n) if g != index)
    log: dict[str, list[Any]] = {"epoch": list(range(1, len(rows) + 1)), "val_loss": list(sc["metrics"])}
    for g in range(n):
        log[f"lr_{g}"] = [r[g] for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.pt"
        path.write_bytes(saved.getvalue())
        t = pf.trace(path, log)
    assert t.checkpoint.framework == "ignite"
    assert len(t.steps) == len(real), [f.message for f in t.findings]
    for i, (s, (best, nb, cd, lrs)) in enumerate(zip(t.steps, real, strict=True)):
        group_lrs = lrs if index is None else (lrs[index],)
        mine = (s.best, s.num_bad_epochs, s.cooldown_counter, tuple(s.lr))
        same_best = s.best == best or (math.isnan(s.best) and math.isnan(best))
        assert mine[1:] == (nb, cd, group_lrs) and same_best, (i, mine, (best, nb, cd, group_lrs))


@NEEDS_IGNITE
def test_ignite_replaces_min_lr() -> None:
    """The rule the finding names, from ignite itself: param_group_index=None gives torch min_lr=0 (an int);
    an index above 0 floors its group at min_lrs[0], and the tool's view of such a checkpoint says so."""
    import torch

    Engine, ReduceLROnPlateauScheduler = _ignite()  # noqa: N806 - the classes under test

    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    opt = torch.optim.SGD([{"params": [params[0]], "lr": 0.1}, {"params": [params[1]], "lr": 0.1}])
    assert ReduceLROnPlateauScheduler(opt, "m", min_lr=0.02).scheduler.min_lrs == [0, 0]
    sched = ReduceLROnPlateauScheduler(opt, "m", param_group_index=1, min_lr=0.05, patience=0)
    assert sched.scheduler.min_lrs == [0, 0.05]
    e = Engine(lambda engine, batch: None)
    real = []
    for v in (1.0, 2.0, 3.0):
        e.state.metrics = {"m": v}
        sched(e)
        real.append((opt.param_groups[1]["lr"],))
    assert real[-1][0] < 0.05  # the given floor did not hold
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.pt"
        torch.save({"lr_scheduler": sched.state_dict(), "optimizer": opt.state_dict()}, path)
        t = pf.trace(path, {"epoch": [1, 2, 3], "val_loss": [1.0, 2.0, 3.0]}, lr=[0.1])
    f = next(f for f in t.findings if f.code == "ignite-min-lr-dropped")
    assert f.evidence["param_group_index"] == 1 and f.evidence["floor_in_effect"] == 0
    assert [s.lr for s in t.steps] == real
