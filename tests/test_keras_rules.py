"""The Keras rule set against the real ``keras.callbacks.ReduceLROnPlateau`` (torch backend) and torch."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere

import functools  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from typing import Any  # noqa: E402

import keras  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch_oracle import make_scheduler, same  # noqa: E402

from plateau_forensics.engine import Event, run  # noqa: E402
from plateau_forensics.errors import ConfigError  # noqa: E402
from plateau_forensics.keras_rules import (  # noqa: E402
    METRIC_DIRECTIONS,
    KerasConfig,
    KerasTrace,
    configure,
    first_divergence,
    float32,
    from_torch,
    legacy_auto_mode,
    render_side_by_side,
    replay,
    resolve_mode,
    rules_runner,
    run_keras,
)
from plateau_forensics.state import PlateauConfig  # noqa: E402

# Keras's own on_epoch_end reads the lr with convert_to_numpy, whose np.array(Variable) warns under numpy 2.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

F32_MAX = 3.4028234663852886e38


# -- the oracle: the real callback, driven directly --------------------------------------------------
@functools.cache
def _model() -> keras.Model:
    """One tiny compiled model whose optimizer lr the callbacks read and write."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    return model


def keras_replay(kwargs: dict[str, Any], metrics: list[float], lr: float,
                 monitor: str = "val_loss") -> list[dict[str, Any]]:
    """Run the real callback over ``metrics``; after each epoch snapshot its attributes, the lr and the event.

    The event is read from Keras itself: ``_is_improvement`` and ``_reduce_optimizer_lr`` are wrapped on
    the instance to record what they returned.
    """
    model = _model()
    model.optimizer.learning_rate = lr
    cb = keras.callbacks.ReduceLROnPlateau(monitor=monitor, **kwargs)
    cb.set_model(model)
    seen: dict[str, bool] = {}
    is_improvement, reduce_lr = cb._is_improvement, cb._reduce_optimizer_lr

    def spy_improvement(current: Any, best: Any) -> bool:
        seen["improved"] = bool(is_improvement(current, best))
        return seen["improved"]

    def spy_reduce(optimizer: Any, epoch: int, name: str = "") -> bool:
        seen["reduced"] = reduce_lr(optimizer, epoch, name)
        return seen["reduced"]

    cb._is_improvement, cb._reduce_optimizer_lr = spy_improvement, spy_reduce
    cb.on_train_begin()
    snaps = []
    for epoch, m in enumerate(metrics):
        seen.clear()
        logs = {monitor: m}
        cb.on_epoch_end(epoch, logs)
        if seen["improved"]:
            event = Event.IMPROVED
        elif "reduced" in seen:
            event = Event.REDUCED if seen["reduced"] else Event.SUPPRESSED
        elif cb.in_cooldown():
            event = Event.COOLDOWN
        else:
            event = Event.BAD
        snaps.append({"best": cb.best, "wait": cb.wait, "cooldown_counter": cb.cooldown_counter,
                      "lr": model.optimizer.learning_rate.value.item(), "lr_in": logs["learning_rate"],
                      "event": event})
    return snaps


def torch_lrs(kwargs: dict[str, Any], metrics: list[float], lr: float) -> list[float]:
    """The lr after each ``step()`` of a real torch scheduler."""
    opt, sched = make_scheduler([lr], kwargs)
    out = []
    for m in metrics:
        sched.step(m)
        out.append(opt.param_groups[0]["lr"])
    return out


# -- differential: every field after every epoch, bit for bit ------------------------------------------
POOL = [0.0, -0.0, 1.0, 0.5, 0.4999, 0.49995, 0.9999, 1.0 + 1e-9, 1.0 - 1e-9, 0.99999999999, 0.5 + 2**-30,
        0.1, 0.1 + 1e-10, 1e-9, -1.0, -0.95, 2.0, 1e300, -1e300, F32_MAX, F32_MAX * (1 + 2**-25),
        F32_MAX * (1 + 2**-23), 1e-45, 1e-46]
NUDGES = [0.0, 1e-9, -1e-9, 1e-12, -1e-12, 2**-24, -(2**-24), 2**-25, -(2**-25), 2**-26, -(2**-26)]


@st.composite
def metric_sequences(draw: st.DrawFn) -> list[float]:
    """Metric logs rich in ties, NaN/inf, float32-only ties and values on the ``min_delta`` edge of others."""
    n = draw(st.integers(0, 30))
    seq: list[float] = []
    for _ in range(n):
        kinds = ["pool", "special", "any", "range"] + (["repeat", "edge", "tie32"] * 2 if seq else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "pool":
            v = draw(st.sampled_from(POOL))
        elif kind == "special":
            v = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        elif kind == "any":
            v = draw(st.floats(allow_nan=True, allow_infinity=True, width=64))
        elif kind == "range":
            v = draw(st.floats(min_value=-3, max_value=3))
        else:
            ref = draw(st.sampled_from(seq))
            scale = abs(ref) if math.isfinite(ref) and ref != 0 else 1.0
            nudge = draw(st.sampled_from(NUDGES)) * scale
            if kind == "repeat":
                v = ref
            elif kind == "tie32":  # equal to ref in float32 (mostly), not in float64
                v = ref + nudge
            else:  # exactly min_delta away from ref, give or take a float32 ulp or a float64 crumb
                delta = draw(st.sampled_from([1e-4, 0.01, 0.1]))
                v = ref + draw(st.sampled_from([-1.0, 1.0])) * delta + nudge
        seq.append(v)
    return seq


keras_kwargs = st.fixed_dictionaries({
    "mode": st.sampled_from(["min", "max", "min", "max", "auto"]),
    "factor": st.sampled_from([0.1, 0.5, 0.8, 0.0, 0.3333333333333333]),
    "patience": st.integers(0, 5),
    "cooldown": st.integers(0, 4),
    "min_delta": st.sampled_from([0.0, 1e-4, 0.01, 0.1, -0.01]),
    "min_lr": st.sampled_from([0.0, 1e-3, 0.01]),
})
initial_lrs = st.sampled_from([0.1, 1.0, 0.05, 0.01, 1e-3, 0.3333333333333333, 0.01 + 1e-12])


def assert_same_step(mine: Any, real: dict[str, Any], where: str) -> None:
    """One replayed step equals the real callback's state after the same epoch, bit for bit."""
    assert same(mine.best, real["best"]), where
    assert mine.wait == real["wait"] == mine.num_bad_epochs, where
    assert mine.cooldown_counter == real["cooldown_counter"], where
    assert same(mine.lr[0], real["lr"]), where
    assert same(mine.lr_in[0], real["lr_in"]), where
    assert mine.event is real["event"], where


# 600 examples run in about 8 s here (one Keras epoch is ~0.1 ms; most time is Hypothesis's own);
# PF_KERAS_EXAMPLES=5000 for a long run.
@settings(max_examples=int(os.environ.get("PF_KERAS_EXAMPLES", "600")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(keras_kwargs, metric_sequences(), initial_lrs)
@example({"mode": "min", "factor": 0.1, "patience": 1, "cooldown": 0, "min_delta": 1e-4, "min_lr": 0.0},
         [1.320359230041504, 1.320259167222757], 0.1)  # float64 sum then float32: improvement
@example({"mode": "min", "factor": 0.1, "patience": 1, "cooldown": 2, "min_delta": 0.0, "min_lr": 0.01},
         [math.nan, 0.5, 0.4, 0.3, 0.2, 0.1], 0.1)  # NaN first blocks every improvement
def test_replay_matches_real_keras(kwargs: dict[str, Any], metrics: list[float], lr: float) -> None:
    """``run_keras`` equals the real callback on best, wait, cooldown, lr, logged lr and event each epoch."""
    trace = run_keras(KerasConfig(**kwargs), metrics, lr)
    real = keras_replay(kwargs, metrics, lr)
    assert len(trace) == len(real)
    for i, (step, snap) in enumerate(zip(trace.steps, real, strict=True)):
        assert_same_step(step, snap, f"epoch {i + 1}: {step.reason}")


# -- float32 and None details, named ----------------------------------------------------------------
class TestFloat32AndBest:
    """The details that make Keras differ from a float64 reading of its source."""

    def test_sum_in_float64_then_compared_in_float32(self) -> None:
        """``current + min_delta`` is summed in float64 and only then rounded, as the real callback does."""
        best, current, d = 1.320359230041504, 1.320259167222757, 1e-4
        assert float32(current + d) < float32(best)  # what Keras computes: an improvement
        assert not float32(float32(current) + float32(d)) < float32(best)  # a float32 sum would say no
        trace = run_keras(KerasConfig(patience=3, min_delta=d), [best, current], 0.1)
        assert trace.steps[1].event is Event.IMPROVED
        real = keras_replay({"patience": 3, "min_delta": d}, [best, current], 0.1)
        assert real[1]["event"] is Event.IMPROVED

    def test_float32_tie_is_not_an_improvement(self) -> None:
        """0.99999999999 is not below 1.0 in float32, and the reason says float64 would disagree."""
        metrics = [1.0, 0.99999999999]
        step = run_keras(KerasConfig(patience=3, min_delta=0), metrics, 0.1).steps[1]
        assert step.event is Event.BAD
        assert step.reason == (
            "bad (0.99999999999 not < 1 in float32; float64 would call it an improvement) "
            "wait 0->1 (patience 3)"
        )
        assert keras_replay({"patience": 3, "min_delta": 0}, metrics, 0.1)[1]["wait"] == 1

    def test_best_keeps_the_unrounded_value(self) -> None:
        """``best`` is the logged Python float (0.1), not its float32 rounding; the lr is float32."""
        trace = run_keras(KerasConfig(), [0.1], 0.1)
        real = keras_replay({}, [0.1], 0.1)
        assert trace.steps[0].best == 0.1 == real[0]["best"]
        assert trace.steps[0].lr == (float32(0.1),) == (real[0]["lr"],)
        assert float32(0.1) != 0.1

    def test_nan_first_blocks_every_improvement(self) -> None:
        """A NaN first metric becomes ``best`` and nothing ever beats it; torch just counts it as bad."""
        metrics = [math.nan, 0.5, 0.4, 0.3]
        trace = run_keras(KerasConfig(patience=5, mode="min"), metrics, 0.1)
        assert [s.event.value for s in trace.steps] == ["improved", "bad", "bad", "bad"]
        assert [s["wait"] for s in keras_replay({"patience": 5, "mode": "min"}, metrics, 0.1)] == [0, 1, 2, 3]
        torch_trace = run(PlateauConfig(patience=5), metrics, [0.1])
        assert [s.event.value for s in torch_trace.steps] == ["bad", "improved", "improved", "improved"]

    def test_at_min_lr_nothing_happens(self) -> None:
        """At ``min_lr`` Keras neither reduces nor starts cooldown, so ``wait`` grows; torch resets both."""
        kwargs = {"patience": 1, "cooldown": 2, "min_lr": 0.05, "mode": "min", "min_delta": 0.0}
        metrics = [1.0] * 6
        trace = run_keras(KerasConfig(**kwargs), metrics, 0.1)
        real = keras_replay(kwargs, metrics, 0.1)
        assert [s.wait for s in trace.steps] == [s["wait"] for s in real] == [0, 0, 0, 1, 2, 3]
        cooldowns = [0, 2, 1, 0, 0, 0]
        assert [s.cooldown_counter for s in trace.steps] == [s["cooldown_counter"] for s in real] == cooldowns
        assert [s.event for s in trace.steps][3:] == [Event.SUPPRESSED] * 3
        assert "reduction due but lr 0.05 is not above min_lr 0.05 (float32)" in trace.steps[3].reason
        torch_trace = run(PlateauConfig(patience=0, cooldown=2, min_lr=0.05, threshold=0), metrics, [0.1])
        assert [s.cooldown_counter for s in torch_trace.steps] == [0, 2, 1, 0, 2, 1]


# -- the teaching point: run-length tables, against real torch and real Keras ----------------------
# lr 1.0 and factor 0.5 keep every lr exact in float32 and float64, so the tables compare with ==.
TEACHING = [
    pytest.param({"patience": 1}, {"patience": 0}, 6, [1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125],
                 id="keras-p1-is-torch-p0"),
    pytest.param({"patience": 0}, {"patience": 0}, 6, [1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125],
                 id="keras-p0-is-keras-p1"),
    pytest.param({"patience": 3}, {"patience": 2}, 11, [1.0] * (1 + 2) + [0.5] * 3 + [0.25] * 3 + [0.125] * 2,
                 id="keras-p3-is-torch-p2"),
    pytest.param({"patience": 5}, {"patience": 4}, 13, [1.0] * (1 + 4) + [0.5] * 5 + [0.25] * 3,
                 id="keras-p5-is-torch-p4"),
    pytest.param({"patience": 2, "cooldown": 1}, {"patience": 1, "cooldown": 0}, 8,
                 [1.0] * (1 + 1) + [0.5] * 2 + [0.25] * 2 + [0.125] * 2, id="keras-cooldown1-does-nothing"),
    pytest.param({"patience": 2, "cooldown": 3}, {"patience": 1, "cooldown": 2}, 11,
                 [1.0] * (1 + 1) + [0.5] * (2 + 2) + [0.25] * (2 + 2) + [0.125],
                 id="keras-cooldown3-is-torch-2"),
]


@pytest.mark.parametrize(("keras_kw", "torch_kw", "n", "expected"), TEACHING)
def test_teaching_tables(keras_kw: dict, torch_kw: dict, n: int, expected: list[float]) -> None:
    """On a plateau Keras (patience p, cooldown c) reduces where torch (p-1, c-1) does; all three agree."""
    metrics = [1.0] * n  # the first epoch sets best, every later one ties: a bad epoch under min_delta 0
    keras_kw = {**keras_kw, "factor": 0.5, "min_delta": 0.0, "mode": "min"}
    torch_kw = {**torch_kw, "factor": 0.5, "threshold": 0.0, "threshold_mode": "abs"}
    assert [s.lr[0] for s in run_keras(KerasConfig(**keras_kw), metrics, 1.0).steps] == expected
    assert [s["lr"] for s in keras_replay(keras_kw, metrics, 1.0)] == expected
    assert torch_lrs(torch_kw, metrics, 1.0) == expected


def test_cooldown_one_matters_in_torch_only() -> None:
    """torch's cooldown=1 mutes one epoch after a reduction; Keras's cooldown=1 equals cooldown=0."""
    metrics = [1.0] * 8
    torch_kw = {"patience": 1, "factor": 0.5, "threshold": 0.0, "threshold_mode": "abs"}
    assert torch_lrs({**torch_kw, "cooldown": 1}, metrics, 1.0) != torch_lrs(torch_kw, metrics, 1.0)
    keras_kw = {"patience": 2, "factor": 0.5, "min_delta": 0.0, "mode": "min"}
    assert [s["lr"] for s in keras_replay({**keras_kw, "cooldown": 1}, metrics, 1.0)] == \
        [s["lr"] for s in keras_replay(keras_kw, metrics, 1.0)]


GRID = [k / 4 for k in range(-8, 13)]  # exact in float32, so only the rules differ, not the rounding


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 5), st.integers(0, 4), st.sampled_from(["min", "max"]), st.sampled_from([0.0, 0.5]),
       st.lists(st.sampled_from(GRID), max_size=30))
def test_keras_p_c_is_torch_p_minus_1_c_minus_1(patience: int, cooldown: int, mode: str, delta: float,
                                                 metrics: list[float]) -> None:
    """On finite float32-exact metrics real Keras (p, c) gives real torch (max(p,1)-1, max(c,1)-1)'s lrs."""
    keras_kw = {"patience": patience, "cooldown": cooldown, "mode": mode, "min_delta": delta, "factor": 0.5}
    torch_kw = {"patience": max(patience, 1) - 1, "cooldown": max(cooldown, 1) - 1, "mode": mode,
                "threshold": delta, "threshold_mode": "abs", "factor": 0.5, "eps": 0.0}
    expected = torch_lrs(torch_kw, metrics, 1.0)
    assert [s["lr"] for s in keras_replay(keras_kw, metrics, 1.0)] == expected
    assert [s.lr[0] for s in run_keras(KerasConfig(**keras_kw), metrics, 1.0).steps] == expected


# -- comparison helpers ---------------------------------------------------------------------------------
class TestCompare:
    """``first_divergence`` and ``render_side_by_side`` for ``--compare torch,keras``."""

    def test_same_numbers_diverge_at_keras_first_reduction(self) -> None:
        """With the same patience Keras reduces one epoch early, and that epoch is reported and marked."""
        cfg = PlateauConfig(patience=2, threshold=0.0, threshold_mode="abs")
        metrics = [1.0] + [2.0] * 6
        t, k = run(cfg, metrics, [0.1]), run_keras(from_torch(cfg), metrics, 0.1)
        assert first_divergence(t, k) == 3
        text = render_side_by_side(t, k)
        rows = text.splitlines()
        assert rows[0].split()[:4] == ["epoch", "metric", "torch", "lr"]
        assert rows[4].startswith("3 ") and rows[4].rstrip().endswith("<< diverge")
        assert sum("<< diverge" in r for r in rows) == 1
        assert rows[-1] == "first divergence: epoch 3 (torch lr 0.1->0.1 [bad], keras lr 0.1->0.01 [reduced])"

    def test_shifted_patience_never_diverges(self) -> None:
        """Keras patience p+1 against torch patience p agrees at every epoch, float32 rounding aside."""
        cfg = PlateauConfig(patience=2, threshold=0.0, threshold_mode="abs", factor=0.1)
        metrics = [1.0] + [2.0] * 20
        k = run_keras(KerasConfig(patience=3, min_delta=0.0, mode="min"), metrics, 0.1)
        t = run(cfg, metrics, [0.1])
        assert first_divergence(t, k) is None
        text = render_side_by_side(t, k, "markdown")
        assert text.endswith("no divergence: the lr agrees after every one of 21 epochs")
        assert text.splitlines()[1].startswith("|---")

    def test_labels_come_from_the_torch_trace(self) -> None:
        """The divergence is reported with the log's epoch labels."""
        cfg = PlateauConfig(patience=0, threshold=0.0, threshold_mode="abs")
        metrics, epochs = [1.0, 2.0, 2.0], [10, 11, 12]
        t = run(cfg, metrics, [0.1], epochs=epochs)
        k = run_keras(from_torch(cfg), metrics, 0.1, epochs=epochs)
        assert first_divergence(t, k) is None  # patience 0 fires on the first bad epoch under both rules
        k1 = run_keras(KerasConfig(patience=2, min_delta=0.0, mode="min"), metrics, 0.1, epochs=epochs)
        assert first_divergence(t, k1) == 11


# -- configuration ----------------------------------------------------------------------------------------
class TestConfig:
    """Keras's names, defaults and mode resolution; conversion from torch's configuration."""

    def test_defaults_are_keras_defaults(self) -> None:
        """Every default equals the installed Keras constructor's."""
        real = keras.callbacks.ReduceLROnPlateau()
        cfg = KerasConfig()
        assert (cfg.monitor, cfg.factor, cfg.patience, cfg.mode, cfg.min_delta, cfg.cooldown, cfg.min_lr) == (
            real.monitor, real.factor, real.patience, real.mode, real.min_delta, real.cooldown, real.min_lr)
        assert keras.version() == "3.15.1"

    @pytest.mark.parametrize(("monitor", "expected"), [("val_loss", "min"), ("loss", "min")])
    def test_auto_mode_for_loss(self, monitor: str, expected: str) -> None:
        """``auto`` resolves to min for exactly ``loss`` after one ``val_`` prefix, as Keras does."""
        assert KerasConfig(monitor=monitor).direction == expected
        keras_replay({}, [1.0, 0.5], 0.1, monitor=monitor)  # Keras accepts it too

    @pytest.mark.parametrize("monitor", ["val_my_loss", "val_accuracy", "acc"])
    def test_auto_mode_unresolvable(self, monitor: str) -> None:
        """Any other name needs an explicit mode: ConfigError here, ValueError in Keras at the first epoch."""
        with pytest.raises(ConfigError, match="pass mode 'min' or 'max'"):
            KerasConfig(monitor=monitor)
        with pytest.raises(ValueError, match="isn't able to automatically determine"):
            keras_replay({}, [1.0], 0.1, monitor=monitor)
        assert KerasConfig(monitor=monitor, mode="max").direction == "max"

    def test_metric_direction_and_legacy_rule(self) -> None:
        """A compiled metric's direction resolves ``auto``; the <=3.10 rule is "acc" in the name -> max."""
        assert resolve_mode("val_accuracy", metric_direction="up") == "max"
        assert resolve_mode("val_loss", metric_direction="up") == "max"  # Keras checks metrics after the name
        assert legacy_auto_mode("val_acc") == "max"
        assert legacy_auto_mode("val_my_loss") == "min"

    def test_unknown_mode_and_big_factor(self) -> None:
        """An unknown mode warns with Keras's words and falls back to auto; ``factor >= 1`` is a ConfigError."""
        with pytest.warns(UserWarning, match="mode 'foo' is unknown, fallback to auto mode") as mine:
            cfg = KerasConfig(mode="foo")  # type: ignore[arg-type]
        with pytest.warns(UserWarning, match="mode 'foo' is unknown, fallback to auto mode") as theirs:
            real = keras.callbacks.ReduceLROnPlateau(mode="foo")
        assert str(theirs[0].message) == str(mine[0].message)
        assert (real.mode, "min") == (cfg.mode, cfg.direction)
        with pytest.warns(UserWarning, match="unknown"), pytest.raises(ConfigError, match="pass mode 'min'"):
            KerasConfig(monitor="val_my_score", mode="up")  # type: ignore[arg-type]  # auto, then unresolvable
        with pytest.raises(ConfigError, match="factor >= 1.0"):
            KerasConfig(factor=1.0)
        with pytest.raises(ValueError, match="factor >= 1.0"):
            keras.callbacks.ReduceLROnPlateau(factor=1.0)

    def test_min_delta_sign_is_ignored(self) -> None:
        """``min_delta=-0.01`` behaves like 0.01, as Keras stores ``abs(min_delta)``."""
        metrics = [1.0, 0.995, 0.98]
        a = run_keras(KerasConfig(patience=5, min_delta=-0.01, mode="min"), metrics, 0.1)
        b = run_keras(KerasConfig(patience=5, min_delta=0.01, mode="min"), metrics, 0.1)
        events = [Event.IMPROVED, Event.BAD, Event.IMPROVED]
        assert [s.event for s in a.steps] == [s.event for s in b.steps] == events

    def test_from_torch_maps_names_one_to_one(self) -> None:
        """Patience, cooldown, factor, mode, min_lr are copied as they are; an abs threshold is min_delta."""
        cfg = PlateauConfig(mode="max", factor=0.5, patience=3, threshold=0.01, threshold_mode="abs",
                            cooldown=2, min_lr=(1e-3,), eps=0.0)
        assert from_torch(cfg) == KerasConfig(monitor="val_loss", factor=0.5, patience=3, mode="max",
                                              min_delta=0.01, cooldown=2, min_lr=1e-3)

    def test_from_torch_relative_threshold(self) -> None:
        """A relative threshold has no Keras counterpart unless ``min_delta`` is given (zero is allowed)."""
        with pytest.raises(ConfigError, match="--min-delta"):
            from_torch(PlateauConfig())
        assert from_torch(PlateauConfig(), min_delta=0.001).min_delta == 0.001
        assert from_torch(PlateauConfig(threshold=0.0)).min_delta == 0.0

    def test_from_torch_per_group_min_lr(self) -> None:
        """Different per-group ``min_lr`` values cannot become Keras's single ``min_lr``."""
        with pytest.raises(ConfigError, match="one min_lr"):
            from_torch(PlateauConfig(threshold_mode="abs", min_lr=(0.0, 0.1)))


# -- the records ---------------------------------------------------------------------------------------------
def _compiled(metric: str) -> keras.Model:
    """A tiny model compiled with ``metrics=[metric]`` and evaluated once, so its metrics are built."""
    np = pytest.importorskip("numpy")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse", metrics=[metric])
    with warnings.catch_warnings():  # shape advice from metrics built on a 1-unit output
        warnings.simplefilter("ignore")
        model.evaluate(np.zeros((2, 1)), np.zeros((2, 1)), verbose=0)
    return model


class TestAutoMode:
    """``mode='auto'`` resolved as real Keras 3.15 resolves it on a model that compiled the metric."""

    def test_directions_table_is_keras(self) -> None:
        """``METRIC_DIRECTIONS`` is every built-in metric's ``_direction`` by its logged name, read from Keras."""
        import inspect

        from keras.src.metrics import ALL_OBJECTS_DICT

        real: dict[str, str] = {}
        for name in [*sorted(k for k in ALL_OBJECTS_DICT if k == k.lower()), "acc"]:
            try:
                model = _compiled(name)
            except (ValueError, TypeError, NotImplementedError, RuntimeError):  # needs arguments or shapes
                continue
            for group in model.metrics:
                for m in getattr(group, "metrics", []):
                    if getattr(m, "_direction", None):
                        real[m.name] = m._direction
        for obj in vars(keras.metrics).values():
            if inspect.isclass(obj) and issubclass(obj, keras.metrics.Metric):
                try:
                    m = obj()
                except (ValueError, TypeError):
                    continue
                if getattr(m, "_direction", None) and m.name.rpartition("_")[2] != "1":  # auc_1: a 2nd auc
                    real[m.name] = m._direction
        assert real == METRIC_DIRECTIONS

    @pytest.mark.parametrize(("monitor", "metric", "mode"), [
        ("val_accuracy", "accuracy", "max"), ("val_acc", "acc", "max"), ("val_mae", "mae", "min"),
        ("auc", "auc", "max"), ("val_loss", "accuracy", "min"),
    ], ids=["val_accuracy", "val_acc", "val_mae", "auc", "val_loss"])
    def test_configure_resolves_like_keras(self, monitor: str, metric: str, mode: str) -> None:
        """``configure`` with no mode gives Keras's auto and the same replay as the real callback on a
        model that compiled ``metric``."""
        metrics = [0.5, 0.6, 0.6, 0.4, 0.4, 0.4, 0.7, 0.7]
        cfg = configure({"patience": 1}, {}, monitor=monitor)
        assert ("auto", mode) == (cfg.mode, cfg.direction)
        model = _compiled(metric)
        cb = keras.callbacks.ReduceLROnPlateau(monitor=monitor, patience=1)
        cb.set_model(model)
        cb.on_train_begin()
        log = type("Log", (), {"metrics": metrics, "epochs": list(range(len(metrics)))})()
        t = replay(cfg, log, [0.1])
        for i, (m, s) in enumerate(zip(metrics, t.steps, strict=True)):
            cb.on_epoch_end(i, {monitor: m})
            assert (cb.wait, model.optimizer.learning_rate.value.item()) == (s.wait, s.lr[0]), i
        assert ("min" if cb.monitor_op is keras.ops.less else "max") == mode
        assert any("mode auto" in n for n in t.notes)

    def test_unresolvable_auto(self) -> None:
        """A name Keras cannot classify is a ConfigError (Keras: ValueError at the first epoch)."""
        with pytest.raises(ConfigError, match="pass mode 'min' or 'max'"):
            configure({}, {}, monitor="val_my_score")
        with pytest.raises(ValueError, match="isn't able to automatically determine"):
            keras_replay({}, [1.0], 0.1, monitor="val_my_score")
        assert "max" == configure({}, {"metric_direction": "up"}, monitor="val_my_score").direction

    def test_cli_mode_auto(self, tmp_path: Any) -> None:
        """``--rules keras --mode auto`` on a val_accuracy log: maximised, the real callback's lrs; torch refuses."""
        import json

        from click.testing import CliRunner

        from plateau_forensics.cli import ExitStatus, main

        metrics = [0.5, 0.6, 0.6, 0.55, 0.7, 0.7, 0.7]
        log = tmp_path / "acc.csv"
        log.write_text("epoch,val_accuracy\n" + "".join(f"{i + 1},{m!r}\n" for i, m in enumerate(metrics)))
        args = [str(log), "--metric", "val_accuracy", "--lr", "0.1", "--patience", "1", "--mode", "auto"]
        r = CliRunner().invoke(main, [*args, "--rules", "keras", "--format", "json"])
        assert ExitStatus.OK == r.exit_code, r.output
        model = _compiled("accuracy")
        model.optimizer.learning_rate = 0.1
        cb = keras.callbacks.ReduceLROnPlateau(monitor="val_accuracy", patience=1)
        cb.set_model(model)
        cb.on_train_begin()
        real = []
        for i, m in enumerate(metrics):
            cb.on_epoch_end(i, {"val_accuracy": m})
            real.append(model.optimizer.learning_rate.value.item())
        assert real == [s["lr"][0] for s in json.loads(r.stdout)["steps"]]
        assert ("auto", "max") == (json.loads(r.stdout)["config"]["mode"], "max" if cb.monitor_op is keras.ops.greater
                                   else "min")
        r = CliRunner().invoke(main, args)
        assert ExitStatus.USAGE == r.exit_code and "--mode auto is the rule of keras, fastai" in r.stderr
        other = tmp_path / "score.csv"
        other.write_text(log.read_text().replace("val_accuracy", "val_my_score"))
        r = CliRunner().invoke(main, [str(other), "--metric", "val_my_score", "--rules", "keras"])
        assert ExitStatus.USAGE == r.exit_code and "pass mode 'min' or 'max'" in r.stderr  # Keras: ValueError
        r = CliRunner().invoke(main, [str(other), "--metric", "val_my_score", "--rules", "keras", "--rule-option",
                                      "metric_direction=up", "--format", "json"])
        assert ExitStatus.OK == r.exit_code and "max" == KerasConfig(**{
            k: v for k, v in json.loads(r.stdout)["config"].items()}, metric_direction="up").direction

    def test_cli_unknown_mode_warns(self, tmp_path: Any) -> None:
        """``--rule-option mode=foo`` under Keras: one ``Warning:`` line in Keras's words, then the auto replay."""
        from click.testing import CliRunner

        from plateau_forensics.cli import ExitStatus, main

        log = tmp_path / "l.csv"
        log.write_text("epoch,val_loss\n1,1.0\n2,1.0\n")
        r = CliRunner().invoke(main, [str(log), "--rules", "keras", "--rule-option", "mode=foo"])
        assert ExitStatus.OK == r.exit_code, r.output
        assert "Warning: ReduceLROnPlateau mode 'foo' is unknown, fallback to auto mode.\n" == r.stderr
        assert "mode=auto(min)" in r.stdout

    def test_configure_maps_and_refuses(self) -> None:
        """torch names map 1:1; a relative threshold, eps and an unknown option are ConfigErrors."""
        cfg = configure({"factor": 0.5, "patience": 3, "cooldown": 2, "min_lr": (1e-3,), "threshold": 0.01,
                         "threshold_mode": "abs", "mode": "min"}, {}, monitor="val_loss")
        assert (0.5, 3, 2, 1e-3, 0.01, "min") == (cfg.factor, cfg.patience, cfg.cooldown, cfg.min_lr,
                                                  cfg.min_delta, cfg.mode)
        assert 1e-4 == configure({}, {}, monitor="val_loss").min_delta  # Keras's default
        assert 0.3 == configure({"threshold": 0.01, "threshold_mode": "abs"}, {"min_delta": "0.3"},
                                monitor="loss").min_delta
        for typed, opts, words in (({"threshold": 0.01}, {}, "relative"), ({"eps": 0.0}, {}, "no eps"),
                                   ({}, {"warmup": "1"}, "no argument 'warmup'"),
                                   ({}, {"patience": "x"}, "not an integer")):
            with pytest.raises(ConfigError, match=words):
                configure(typed, opts, monitor="val_loss")


class TestTrace:
    """The shape of ``KerasTrace`` and its steps."""

    def test_reason_of_a_reduction(self) -> None:
        """A reduction states the float32 test, the patience reached, the lr change and the counter resets."""
        trace = run_keras(KerasConfig(patience=2, cooldown=3), [0.51, 0.53, 0.52], 0.1)
        assert trace.steps[2].reason == (
            "bad (0.52 + 0.0001 not < 0.51 in float32) wait 1->2 >= patience 2: lr 0.1->0.01, cooldown 0->3, "
            "wait 2->0"
        )

    def test_reason_in_cooldown_runs_in_keras_order(self) -> None:
        """The cooldown decrement comes first; the epoch whose decrement reaches 0 already counts as bad."""
        trace = run_keras(KerasConfig(patience=1, cooldown=2, min_delta=0), [1.0, 1.0, 1.0, 1.0], 0.1)
        assert [s.reason for s in trace.steps[2:]] == [
            "cooldown 2->1; bad (1 not < 1 in float32), in cooldown (1 left): wait stays 0",
            "cooldown 1->0; bad (1 not < 1 in float32) wait 0->1 >= patience 1: lr 0.01->0.001, "
            "cooldown 0->2, wait 1->0",
        ]
        assert [s.event for s in trace.steps[2:]] == [Event.COOLDOWN, Event.REDUCED]

    def test_fields_and_reductions(self) -> None:
        """Steps carry ``wait`` (also ``num_bad_epochs``) and float32 lr 1-tuples; traces name their rules."""
        trace = run_keras(KerasConfig(patience=1, min_lr=0.05), [1.0, 2.0, 2.0], 0.1, epochs=[5, 6, 7])
        assert trace.rules == "keras" and len(trace) == 3 and trace.epochs == (5, 6, 7)
        s = trace.steps[1]
        expected = (6, 0, 0, (float32(0.05),), (float32(0.1),))
        assert (s.epoch, s.wait, s.num_bad_epochs, s.lr, s.lr_in) == expected
        assert [r.event for r in trace.reductions()] == [Event.REDUCED, Event.SUPPRESSED]
        assert trace.steps[-1].as_dict()["num_bad_epochs"] == 1
        assert trace.final.wait == 1 and trace.lrs == (float32(0.05),)
        with pytest.raises(ConfigError, match="2 epoch labels for 3 metrics"):
            run_keras(KerasConfig(), [1.0, 2.0, 3.0], 0.1, epochs=[1, 2])


class TestRunner:
    """``rules_runner`` plugs the Keras rules into ``compare.register_rules``."""

    def test_runner_converts_and_replays(self) -> None:
        """The runner replays a torch config as ``from_torch`` + ``run_keras`` do, with the log's labels."""
        cfg = PlateauConfig(patience=1, threshold_mode="abs", threshold=0.0)
        t = rules_runner()([1.0, 2.0, 2.0], [3, 4, 5], cfg, [0.1])
        assert isinstance(t, KerasTrace) and t.epochs == (3, 4, 5)
        direct = run_keras(from_torch(cfg), [1.0, 2.0, 2.0], 0.1)
        assert [s.lr for s in t.steps] == [s.lr for s in direct.steps]
        assert rules_runner(min_delta=0.5)([1.0], [1], PlateauConfig(), [0.1]).config.min_delta == 0.5

    def test_runner_needs_one_lr(self) -> None:
        """Param groups with different lrs cannot run under Keras's single lr."""
        with pytest.raises(ConfigError, match="one optimizer lr"):
            rules_runner()([1.0], [1], PlateauConfig(threshold=0.0), [0.1, 0.2])

    def test_to_dict_builds_the_real_callback(self) -> None:
        """``KerasConfig.to_dict()`` is accepted by the real constructor and round-trips its attributes."""
        cfg = KerasConfig(monitor="loss", factor=0.5, patience=3, mode="max", min_delta=-0.01, cooldown=2,
                          min_lr=1e-3)
        real = keras.callbacks.ReduceLROnPlateau(**cfg.to_dict())
        assert (real.monitor, real.factor, real.patience, real.mode, real.min_delta, real.cooldown,
                real.min_lr) == ("loss", 0.5, 3, "max", 0.01, 2, 1e-3)


def test_import_is_light() -> None:
    """``import plateau_forensics.keras_rules`` loads neither keras, torch, numpy, pandas nor tabulate."""
    code = "import sys, plateau_forensics.keras_rules; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "KERAS_BACKEND": "torch"})
    assert not {"keras", "torch", "numpy", "pandas", "tabulate"} & set(out.stdout.split())
