"""The fastai rule set against real fastai 2.8.12: its ``ReduceLROnPlateau`` inside a real ``Learner``, and
the
``history.csv`` fixtures that real fastai training wrote (``sample_checkpoints/make_fastai.py``).

fastai cannot be a pinned test requirement: ``pip install fastai==2.8.12`` pulls torchvision and spaCy, and
with them torch 2.14.1 and CUDA (``pip install --dry-run``); it installs with ``--no-deps`` beside the pure
requirements the test extra pins (see README "Rule sets"). Without it the tests that need the real library
skip, and the committed fixtures are still judged by their recorded truth.

The oracle runs fastai's own callback in a real ``Learner`` (real ``Recorder``, real fastai ``Optimizer``):
the
Hypothesis test calls the callback's ``before_fit``/``after_epoch`` the way ``Learner.fit`` does, with the
metric put where the Recorder puts it (``recorder.values[-1]``), because a trained model cannot produce
chosen metric sequences; ``test_full_fit_loop`` shows on scripted metrics that a real ``learn.fit`` gives the
same as that direct drive.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from plateau_forensics.cli import ExitStatus, main
from plateau_forensics.engine import Event
from plateau_forensics.errors import ConfigError, LossLogError
from plateau_forensics.fastai_rules import FastaiConfig, configure, read_history, read_log, replay, run_fastai
from plateau_forensics.rulesets import replay_log

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_checkpoints" / "fastai"
SCENARIOS = ["defaults", "keep_best"]


def _decode(x: Any) -> Any:
    if isinstance(x, str) and x in ("inf", "-inf", "nan"):
        return float(x)
    if isinstance(x, list):
        return [_decode(v) for v in x]
    if isinstance(x, dict):
        return {k: _decode(v) for k, v in x.items()}
    return x


def same(a: float, b: float) -> bool:
    """Equal floats, NaN equal to NaN."""
    return (math.isnan(a) and math.isnan(b)) or a == b


# -- the oracle: fastai's callback in a real Learner ------------------------------------------------------
def _tracker() -> Any:
    """``fastai.callback.tracker`` (with fastai's learner and data modules), or skip when fastai is absent.

    Importing fastai runs ``torch.jit.script`` in fastai's own modules, which warns under torch 2.13.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        mod = pytest.importorskip("fastai.callback.tracker")
        import fastai.data.core  # noqa: F401
        import fastai.learner  # noqa: F401
        import fastai.losses  # noqa: F401
    return mod


@pytest.fixture(scope="module")
def fastai_learner() -> Any:
    """A real ``Learner`` (tiny model, CPU) whose Recorder, optimizer and callbacks the oracle uses."""
    _tracker()
    import torch
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.losses import MSELossFlat
    from fastai.optimizer import SGD

    data = [(torch.zeros(2), torch.zeros(())) for _ in range(4)]
    dls = DataLoaders.from_dsets(data, data, bs=2, device="cpu", num_workers=0)
    learn = Learner(dls, torch.nn.Linear(2, 1), loss_func=MSELossFlat(), opt_func=SGD)
    learn.create_opt()
    return learn


def fastai_replay(learn: Any, kwargs: dict[str, Any], fits: list[tuple[list[float], float]],
                  monitor: str = "valid_loss") -> list[dict[str, Any]]:
    """Real ``ReduceLROnPlateau(**kwargs)``: per fit ``(metrics, lr)``, ``Learner.fit``'s
    ``set_hypers(lr=...)``
    and ``before_fit``, then per epoch the Recorder's ``values`` row and the callback's ``after_epoch``."""
    import contextlib
    import io

    from fastai.callback.tracker import ReduceLROnPlateau

    cb = ReduceLROnPlateau(monitor=monitor, **kwargs)
    cb.learn = learn
    names = ["epoch", "train_loss", "valid_loss", *(["accuracy"] if monitor == "accuracy" else []), "time"]
    learn.recorder.metric_names = names
    snaps = []
    for metrics, lr in fits:
        learn.opt.set_hypers(lr=lr)
        learn.recorder.values = []
        cb.before_fit()
        for epoch, m in enumerate(metrics):
            learn.epoch = epoch
            row = [0.0] * (len(names) - 2)
            row[names.index(monitor) - 1] = m
            learn.recorder.values.append(row)
            with contextlib.redirect_stdout(io.StringIO()):  # "Epoch N: reducing lr to ..."
                cb.after_epoch()
            snaps.append({"best": float(cb.best), "wait": cb.wait, "lr": [float(h["lr"]) for h in learn.opt.hypers],
                          "new_best": cb.new_best})
    return snaps


POOL = [0.0, -0.0, 1.0, 0.5, 0.4999, 0.9999, 1.0 + 1e-12, 1.0 - 1e-12, 2.0, -1.0, 1e300, 1e-300, 0.1, 0.1 + 1e-3]


@st.composite
def metric_runs(draw: st.DrawFn) -> list[list[float]]:
    """One to three fits of 1-8 epochs each: ties, near-ties, NaN and inf."""
    fits = []
    for _ in range(draw(st.integers(1, 3))):
        seq: list[float] = []
        for _ in range(draw(st.integers(1, 8))):
            kind = draw(st.sampled_from(["pool", "special", "range", "repeat"] if seq else ["pool", "range"]))
            if kind == "pool":
                seq.append(draw(st.sampled_from(POOL)))
            elif kind == "special":
                seq.append(draw(st.sampled_from([math.nan, math.inf, -math.inf])))
            elif kind == "range":
                seq.append(draw(st.floats(-2, 2)))
            else:
                seq.append(draw(st.sampled_from(seq)) + draw(st.sampled_from([0.0, 1e-3, -1e-3, 1e-9])))
        fits.append(seq)
    return fits


fastai_kwargs = st.fixed_dictionaries({
    "patience": st.integers(0, 3), "factor": st.sampled_from([10.0, 2.0, 3.0, 1.5, 7.0]),
    "min_delta": st.sampled_from([0.0, 0.0, 1e-3, -1e-3, 0.5]), "min_lr": st.sampled_from([0, 0.0, 1e-3, 0.05]),
    "reset_on_fit": st.booleans(),
})


@settings(max_examples=int(os.environ.get("PF_FASTAI_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(fastai_kwargs, metric_runs(), st.sampled_from(["valid_loss", "accuracy"]),
       st.lists(st.sampled_from([0.1, 0.3, 1e-3, 0.07]), min_size=3, max_size=3))
@example({"patience": 1, "factor": 10.0, "min_delta": 0.0, "min_lr": 0.05, "reset_on_fit": False},
         [[1.0, 1.0, 1.0, 1.0], [2.0, 0.5]], "valid_loss", [0.1, 0.3, 0.1])  # min_lr stops it; best kept
def test_replay_matches_real_fastai(fastai_learner: Any, kwargs: dict[str, Any], fits: list[list[float]],
                                    monitor: str, lrs: list[float]) -> None:
    """``run_fastai`` equals the real callback's ``best``, ``wait`` and the optimizer's lr after every epoch."""
    real = fastai_replay(fastai_learner, kwargs, list(zip(fits, lrs, strict=False)), monitor)
    starts, n = [], 0
    for f in fits[:-1]:
        n += len(f)
        starts.append(n)
    t = run_fastai(FastaiConfig(monitor=monitor, **kwargs), [m for f in fits for m in f], [lrs[0]], fits=starts,
                   fit_lrs=[[v] for v in lrs[1:len(fits)]])
    for i, (mine, theirs) in enumerate(zip(t.steps, real, strict=True)):
        assert same(mine.best, theirs["best"]) and mine.state["wait"] == theirs["wait"], (i, mine.reason)
        assert list(mine.lr) == theirs["lr"], (i, mine.reason)
        assert (mine.event is Event.IMPROVED) == theirs["new_best"], (i, mine.reason)


def test_full_fit_loop(fastai_learner: Any) -> None:
    """A real ``learn.fit`` with the metric scripted into the Recorder gives what the direct drive gives."""
    from fastai.callback.core import Callback
    from fastai.callback.tracker import ReduceLROnPlateau

    script = iter([1.0, 0.9, 0.9, 0.95, 0.8, 0.8, 2.0, 1.0, 1.0, 1.0])

    class Script(Callback):
        order = 55  # after the Recorder (50), before ReduceLROnPlateau (62)

        def after_epoch(self) -> None:
            self.recorder.values[-1][1] = next(script)

    cb = ReduceLROnPlateau(patience=1, min_delta=0.01)
    seen: list[tuple[float, int, float]] = []

    class Watch(Callback):
        order = 63

        def after_epoch(self) -> None:
            seen.append((float(cb.best), cb.wait, float(self.opt.hypers[-1]["lr"])))

    learn = fastai_learner
    learn.recorder.metric_names = ["epoch", "train_loss", "valid_loss", "time"]
    with learn.no_bar(), learn.no_logging():
        learn.fit(6, 0.3, cbs=[cb, Script(), Watch()])
        learn.fit(4, 0.3, cbs=[cb, Script(), Watch()])
    t = run_fastai(FastaiConfig(patience=1, min_delta=0.01), [1.0, 0.9, 0.9, 0.95, 0.8, 0.8, 2.0, 1.0, 1.0, 1.0],
                   [0.3], fits=[6])
    assert seen == [(s.best, s.state["wait"], s.lr[0]) for s in t.steps]
    assert any(s.event is Event.REDUCED for s in t.steps)


# -- the fixtures: judged by the truth recorded from the live callback ------------------------------------
def judge(folder: Path) -> None:
    """What the tool reports on ``folder/history.csv`` (API and CLI) against ``folder/truth.json``."""
    truth = _decode(json.loads((folder / "truth.json").read_text()))
    cb = truth["callback"]
    options = {"patience": str(cb["patience"]), "factor": repr(cb["factor"]), "min_lr": repr(float(cb["min_lr"])),
               "reset_on_fit": str(cb["reset_on_fit"]), "min_delta": repr(abs(cb["min_delta"])),
               "fit_lrs": ",".join(repr(f["lr"][0]) for f in truth["fits"])}
    log = read_log(folder / "history.csv")
    assert log is not None and len(log) == len(truth["epochs"])
    assert [f["first_epoch"] for f in truth["fits"][1:]] == list(log.boundaries)
    cfg = configure({}, options, monitor="valid_loss")
    assert ("min" if cb["comp"] == "less" else "max") == cfg.direction
    t = replay(cfg, log, [truth["fits"][0]["lr"][0]])
    for i, (s, e) in enumerate(zip(t.steps, truth["epochs"], strict=True)):
        assert same(s.metric, e["value"]) and s.epoch == e["epoch"] and s.state["fit"] == e["fit"], i
        assert same(s.best, e["best"]) and s.state["wait"] == e["wait"], (i, s.reason)
        assert list(s.lr) == e["lr"] and list(s.lr_in) == e["lr_before"], (i, s.reason)
    r = CliRunner().invoke(main, [str(folder / "history.csv"), "--rules", "fastai", "--format", "json", "--lr",
                                  repr(truth["fits"][0]["lr"][0]),
                                  *(a for k, v in options.items() for a in ("--rule-option", f"{k}={v}"))])
    assert ExitStatus.OK == r.exit_code, r.output
    steps = json.loads(r.stdout)["steps"]
    assert [e["lr"] for e in truth["epochs"]] == [s["lr"] for s in steps]
    assert [e["wait"] for e in truth["epochs"]] == [s["wait"] for s in steps]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_committed_fixture(scenario: str) -> None:
    """The committed history.csv replays to what real fastai did, epoch by epoch, through the API and the CLI."""
    judge(SAMPLES / scenario)


def test_fixtures_cover_the_rules() -> None:
    """The committed truth has several fits, reductions, a reduction min_lr stopped, NaN and a best carried
    across fits: what the judge checks is not vacuous."""
    d = _decode(json.loads((SAMPLES / "defaults" / "truth.json").read_text()))
    k = _decode(json.loads((SAMPLES / "keep_best" / "truth.json").read_text()))
    assert len(d["fits"]) == 2 and any(e["lr"] != e["lr_before"] for e in d["epochs"])
    assert d["fits"][1]["best"] == math.inf  # reset_on_fit
    assert k["fits"][1]["best"] == k["epochs"][k["fits"][1]["first_epoch"] - 1]["best"] != math.inf
    assert any(math.isnan(e["value"]) for e in k["epochs"])
    assert any(e["lr"] == e["lr_before"] == [k["callback"]["min_lr"]] and e["wait"] == 0 and
               e["value"] != e["best"] for e in k["epochs"])


def test_compare_on_fixture() -> None:
    """``--compare fastai,torch`` on the committed history.csv: the first divergence is the first epoch where
    real fastai's lr (the truth) and a real torch scheduler stepped on the same values (no reset per fit) differ."""
    from torch_oracle import make_scheduler

    truth = _decode(json.loads((SAMPLES / "defaults" / "truth.json").read_text()))
    lr0 = truth["fits"][0]["lr"][0]
    r = CliRunner().invoke(main, [str(SAMPLES / "defaults" / "history.csv"), "--lr", repr(lr0), "--patience", "1",
                                  "--compare", "fastai,torch"])
    assert ExitStatus.OK == r.exit_code, r.output
    opt, sched = make_scheduler([lr0], {"patience": 1})
    first = None
    for i, e in enumerate(truth["epochs"]):
        sched.step(e["value"])
        if first is None and not math.isclose(opt.param_groups[0]["lr"], e["lr"][0], rel_tol=1e-5):
            first = e["epoch"]
    assert first is not None and f"first divergence: epoch {first} (fastai lr " in r.stdout


def test_regenerated_fixture(tmp_path: Path) -> None:
    """``make_fastai.py`` run again writes files that the judge accepts by their own fresh truth.

    It runs in this process (fastai is imported already; a fresh interpreter spends ~10 s importing it).
    """
    import contextlib
    import importlib.util
    import io

    _tracker()
    spec = importlib.util.spec_from_file_location("make_fastai", ROOT / "sample_checkpoints" / "make_fastai.py")
    assert spec is not None and spec.loader is not None
    sys.path.insert(0, str(ROOT / "sample_checkpoints"))  # its _pin_cpu
    try:
        gen = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(gen)
        with contextlib.redirect_stdout(io.StringIO()):
            gen.main([str(tmp_path), "--only", "keep_best"])
    finally:
        sys.path.remove(str(ROOT / "sample_checkpoints"))
    judge(tmp_path / "keep_best")


# -- configuration and history.csv ----------------------------------------------------------------------
class TestConfig:
    """fastai's names and defaults; torch-named values mapped or refused."""

    def test_defaults_are_fastai_defaults(self) -> None:
        """Every default equals the installed fastai's constructor's (``comp=None`` is mode auto)."""
        import inspect

        ReduceLROnPlateau = _tracker().ReduceLROnPlateau  # noqa: N806

        sig = {k: p.default for k, p in inspect.signature(ReduceLROnPlateau.__init__).parameters.items() if k != "self"}
        mine = FastaiConfig().to_dict()
        assert sig.pop("comp") is None and mine.pop("mode") == "auto"
        assert sig == mine

    def test_auto_mode_is_the_name_rule(self) -> None:
        """'loss' or 'error' in the name minimises, anything else maximises (checked on the real tracker)."""
        import numpy as np

        tracker = _tracker()
        for monitor in ("valid_loss", "train_loss", "error_rate", "accuracy", "val_acc", "f1"):
            real = tracker.ReduceLROnPlateau(monitor=monitor).comp
            assert ("min" if real is np.less else "max") == FastaiConfig(monitor=monitor).direction, monitor

    def test_torch_names(self) -> None:
        """torch's factor 0.1 is fastai's divisor 10; abs threshold is min_delta; options win."""
        cfg = configure({"factor": 0.5, "patience": 3, "threshold": 0.01, "threshold_mode": "abs", "mode": "max",
                         "min_lr": (0.001,)}, {}, monitor="valid_loss")
        assert (2.0, 3, 0.01, "max", 0.001) == (cfg.factor, cfg.patience, cfg.min_delta, cfg.mode, cfg.min_lr)
        assert 10.0 == configure({"factor": 0.5}, {"factor": "10"}, monitor="valid_loss").factor
        for typed, opts, words in (({"cooldown": 2}, {}, "no cooldown"), ({"eps": 1e-8}, {}, "no eps"),
                                   ({"threshold": 0.01}, {}, "relative"), ({}, {"cooldown": "1"}, "no argument"),
                                   ({}, {"reset_on_fit": "maybe"}, "true or false"),
                                   ({"min_lr": (0.1, 0.2)}, {}, "one min_lr")):
            with pytest.raises(ConfigError, match=words):
                configure(typed, opts, monitor="valid_loss")

    def test_division_not_multiplication(self) -> None:
        """The lr is divided: 0.2 / 10 is 0.02, where torch's 0.2 * 0.1 is 0.020000000000000004."""
        t = run_fastai(FastaiConfig(), [1.0, 1.0], [0.2])
        assert (0.02,) == t.steps[-1].lr
        assert 0.020000000000000004 == replay_log("torch", [1.0, 1.0], given={"patience": 0}, lr=[0.2]).lrs[0]


class TestHistory:
    """Reading ``history.csv``: one header per fit; other files are not claimed."""

    def test_headers_are_fits(self, tmp_path: Path) -> None:
        """Each repeated header starts a fit; epochs restart at 0 and stay as logged."""
        p = tmp_path / "h.csv"
        p.write_text("epoch,train_loss,valid_loss,time\n0,1.0,0.5,00:00\n1,1.0,0.6,00:00\n"
                     "epoch,train_loss,valid_loss,time\n0,1.0,0.7,00:01\n")
        log = read_history(p)
        assert ((0, 1, 0), (0.5, 0.6, 0.7), (2,), (2, 3, 5)) == (log.epochs, log.metrics, log.boundaries, log.lines)
        t = replay_log("fastai", str(p), lr=[0.1])
        assert [0, 0, 1] == [s.state["fit"] for s in t.steps] and t.steps[2].lr == (0.1,)

    def test_one_fit(self, tmp_path: Path) -> None:
        """``CSVLogger()`` without ``append`` writes one header: one fit, no boundaries."""
        p = tmp_path / "h.csv"
        p.write_text("epoch,train_loss,valid_loss,accuracy,time\n0,1.0,0.5,0.7,00:00\n1,1.0,0.6,0.8,00:00\n")
        log = read_history(p, metric="accuracy")
        assert ((), (0.7, 0.8), "accuracy") == (log.boundaries, log.metrics, log.metric_column)
        assert "max" == configure({}, {}, monitor=log.metric_column).direction

    def test_not_fastai(self, tmp_path: Path) -> None:
        """A CSV whose first line is not the Recorder's header is left to the ordinary reader."""
        p = tmp_path / "l.csv"
        p.write_text("epoch,val_loss\n1,0.5\n")
        assert read_log(p) is None and read_log([1.0]) is None

    @pytest.mark.parametrize(("text", "words"), [
        ("epoch,train_loss,valid_loss,time\n0,1.0,x,00:00\n", "is not a number"),
        ("epoch,train_loss,valid_loss,time\n0,1.0\n", "2 cells for 4 columns"),
        ("epoch,train_loss,valid_loss,time\n0,1,1,0\nepoch,train_loss,valid_loss,accuracy,time\n", "other columns"),
    ], ids=["text", "short", "header-changes"])
    def test_refused(self, tmp_path: Path, text: str, words: str) -> None:
        """What the reader refuses, in one line naming the file line."""
        p = tmp_path / "h.csv"
        p.write_text(text)
        with pytest.raises(LossLogError, match=words):
            read_history(p)

    def test_cli_refuses_epoch_column(self) -> None:
        """--epoch-column is not fastai's: a usage error, not a silent different reading."""
        r = CliRunner().invoke(main, [str(SAMPLES / "defaults" / "history.csv"), "--rules", "fastai",
                                      "--epoch-column", "train_loss"])
        assert ExitStatus.USAGE == r.exit_code and "drop --epoch-column" in r.stderr


def test_import_is_light() -> None:
    """``import plateau_forensics.fastai_rules`` loads neither fastai, torch, numpy nor pandas."""
    code = "import sys, plateau_forensics.fastai_rules; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert not {"fastai", "torch", "numpy", "pandas", "tabulate"} & set(out.stdout.split())
