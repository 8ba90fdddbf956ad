"""The optax rule set against the real ``optax.contrib.reduce_on_plateau`` (optax 0.2.8, CPU jax)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from plateau_forensics.engine import Event
from plateau_forensics.errors import ConfigError
from plateau_forensics.optax_rules import OptaxConfig, configure, from_torch, rules_runner, run_optax
from plateau_forensics.state import PlateauConfig

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
np = pytest.importorskip("numpy")
jnp = jax.numpy

#: Metric sequences are this long: the oracle is one jitted scan per configuration, compiled once for all
#: the sequences of that configuration (a new shape would compile again).
N = 24
F32_MAX = 3.4028234663852886e38


def optax_states(kwargs: dict[str, Any], sequences: list[list[float]]) -> list[dict[str, list[Any]]]:
    """The real transformation's state after every update, for each sequence (one jitted scan, compiled once).

    Each sequence runs unbatched, as a training loop runs the transformation: under ``jax.vmap`` XLA's CPU
    backend vectorises the average's division and rounds some float32 results differently (seen: batch 1
    gives 0.96362024, batch 2 0.96362030 for the same values), which no unbatched program computes.
    """
    tx = optax.contrib.reduce_on_plateau(**kwargs)
    params = jnp.zeros((), jnp.float32)

    def body(state: Any, value: Any) -> tuple[Any, Any]:
        _, state = tx.update(params, state, value=value)
        return state, state

    run = jax.jit(lambda vs: jax.lax.scan(body, tx.init(params), vs)[1])
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, as jnp.astype does
        values = np.asarray(sequences, dtype=np.float64).astype(np.float32)
    outs = [jax.device_get(run(v)) for v in values]
    return [{k: [v.item() for v in getattr(out, k)] for k in out._fields} for out in outs]


def test_eager_jit_and_replay_agree() -> None:
    """Eager optax, the unbatched jitted scan and ``run_optax`` agree where a vmapped scan (batch 2) does not."""
    seq = [0.9640058875083923, 0.9639093905190528, 0.9639094869196415, 0.9639094869196415, 0.9639093905190528,
           0.9630418241616554]
    kw = {"factor": 0.001, "cooldown": 3, "atol": 0.0, "min_scale": 0.001, "patience": 0, "accumulation_size": 3,
          "rtol": 1e-07}
    tx = optax.contrib.reduce_on_plateau(**kw)
    params = jnp.zeros((), jnp.float32)
    state = tx.init(params)
    for v in seq:  # eager, one update at a time
        _, state = tx.update(params, state, value=v)
    eager = state.best_value.item()
    assert [eager] == [optax_states(kw, [seq])[0]["best_value"][-1]] == [run_optax(OptaxConfig(**kw), seq).steps[-1].best]


POOL = [0.0, -0.0, 1.0, 0.5, 0.9999, 0.99990004, 1e-3, 2.0, -1.0, -0.5, 1e30, -1e30, F32_MAX, 1e39, 1e-45,
        1e-40, 3.0000001]
NUDGES = [0.0, 1e-7, -1e-7, 2**-24, -(2**-24), 1e-4, -1e-4, 1e-9]


@st.composite
def sequence(draw: st.DrawFn) -> list[float]:
    """N values rich in ties, float32-only ties, values near ``(1 - rtol) * best``, NaN and inf."""
    seq: list[float] = []
    for _ in range(N):
        kinds = ["pool", "special", "range", "any"] + (["repeat", "nudge", "nudge"] if seq else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "pool":
            v = draw(st.sampled_from(POOL))
        elif kind == "special":
            v = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        elif kind == "range":
            v = draw(st.floats(min_value=-3, max_value=3, width=32))
        elif kind == "any":
            v = draw(st.floats(allow_nan=True, allow_infinity=True))
        else:
            ref = draw(st.sampled_from(seq))
            scale = abs(ref) if math.isfinite(ref) and ref != 0 else 1.0
            v = ref if kind == "repeat" else ref * (1 - draw(st.sampled_from([1e-4, 1e-3, 0.0]))) + \
                draw(st.sampled_from(NUDGES)) * scale
        seq.append(v)
    return seq


optax_kwargs = st.fixed_dictionaries({
    "factor": st.sampled_from([0.1, 0.5, 0.9, 0.3333333333333333, 1e-3]),
    "patience": st.integers(0, 4),
    "rtol": st.sampled_from([1e-4, 0.0, 0.1, 1.0, 1e-7]),
    "atol": st.sampled_from([0.0, 0.0, 1e-3, 0.1]),
    "cooldown": st.integers(-1, 3),
    "accumulation_size": st.sampled_from([1, 1, 1, 2, 3]),
    "min_scale": st.sampled_from([0.0, 0.0, 1e-3, 0.5]),
}).filter(lambda k: k["rtol"] > 0 or k["atol"] > 0)

STATE_KEYS = ("scale", "best_value", "plateau_count", "cooldown_count", "count", "avg_value")


def same(a: float, b: float) -> bool:
    """Bit-equal floats, NaN equal to NaN."""
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b)) \
        or (a == b == 0.0 and False)


def assert_matches(kwargs: dict[str, Any], seqs: list[list[float]]) -> None:
    real = optax_states(kwargs, seqs)
    for seq, r in zip(seqs, real, strict=True):
        t = run_optax(OptaxConfig(**kwargs), seq)
        for i, s in enumerate(t.steps):
            for k in STATE_KEYS:
                mine, theirs = s.state[k], r[k][i]
                ok = mine == theirs if isinstance(theirs, int) else (
                    (math.isnan(mine) and math.isnan(theirs)) or mine == theirs)
                assert ok, f"step {i + 1} {k}: mine {mine!r}, optax {theirs!r} ({s.reason}); {seq[: i + 1]}"
            assert s.lr == (s.state["scale"],)


# 20 configurations x 4 sequences x 24 updates (PF_OPTAX_EXAMPLES=300 for a long run); one compile each
@settings(max_examples=int(os.environ.get("PF_OPTAX_EXAMPLES", "20")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(optax_kwargs, st.lists(sequence(), min_size=4, max_size=4))
@example({"factor": 0.1, "patience": 0, "rtol": 1e-4, "atol": 0.0, "cooldown": 0, "accumulation_size": 1,
          "min_scale": 0.0}, [[1.0, 0.5, 0.5, 2.0] * 6] * 4)  # patience 0: reduce on an *improvement*
def test_replay_matches_real_optax(kwargs: dict[str, Any], seqs: list[list[float]]) -> None:
    """``run_optax`` equals the real transformation's state (every field) after every update, bit for bit."""
    assert_matches(kwargs, seqs)


class TestRules:
    """optax's rules, named (checked against the real transformation too)."""

    def test_reduces_one_evaluation_before_torch(self) -> None:
        """``plateau_count == patience`` fires on the patience-th bad evaluation; torch needs one more."""
        seq = [1.0] + [1.0] * (N - 1)
        t = run_optax(OptaxConfig(patience=2), seq)
        assert [Event.IMPROVED, Event.BAD, Event.REDUCED] == [s.event for s in t.steps[:3]]
        assert_matches({"patience": 2}, [seq])

    def test_patience_zero_reduces_on_improvement_only(self) -> None:
        """With patience 0 the count equals patience only after an improvement: those steps reduce."""
        seq = [1.0, 0.5, 0.5, 0.5, 0.2] + [0.2] * (N - 5)
        t = run_optax(OptaxConfig(patience=0), seq)
        assert [Event.REDUCED, Event.REDUCED, Event.BAD, Event.BAD, Event.REDUCED] == [s.event for s in t.steps[:5]]
        assert_matches({"patience": 0}, [seq])

    def test_averaging(self) -> None:
        """With ``accumulation_size=3`` only every third value evaluates, on the float32 mean."""
        seq = [1.0, 2.0, 4.0] * (N // 3)
        t = run_optax(OptaxConfig(patience=1, accumulation_size=3), seq)
        assert [None, None, Event.IMPROVED, None, None, Event.REDUCED] == [s.event for s in t.steps[:6]]
        assert t.steps[2].best == pytest.approx(7 / 3)
        assert_matches({"patience": 1, "accumulation_size": 3}, [seq])

    def test_float32_best(self) -> None:
        """``best_value`` is float32: 0.1 is stored as 0.10000000149011612."""
        assert run_optax(OptaxConfig(), [0.1]).steps[0].best == 0.10000000149011612

    def test_config_errors_are_optax_errors(self) -> None:
        """Every ValueError optax raises at construction is a ConfigError with its words."""
        for kw in ({"factor": 1.0}, {"factor": 0.0}, {"rtol": -1.0}, {"rtol": 0.0, "atol": 0.0}, {"rtol": 1.5}):
            with pytest.raises(ValueError) as real:
                optax.contrib.reduce_on_plateau(**kw)
            with pytest.raises(ConfigError) as mine:
                OptaxConfig(**kw)
            assert str(real.value) == str(mine.value)

    def test_defaults_are_optax_defaults(self) -> None:
        """Every default equals the installed optax's."""
        import inspect

        sig = inspect.signature(optax.contrib.reduce_on_plateau)
        assert {k: p.default for k, p in sig.parameters.items()} == OptaxConfig().to_dict()
        assert optax.__version__ == "0.2.8"


class TestFromTorch:
    """Torch-named command-line values become optax's arguments."""

    def test_threshold_modes(self) -> None:
        """A relative threshold is rtol; an absolute one is atol with rtol 0."""
        assert {"rtol": 0.01} == from_torch({"threshold": 0.01})
        assert {"rtol": 0.0, "atol": 0.01} == from_torch({"threshold": 0.01, "threshold_mode": "abs"})

    @pytest.mark.parametrize(("given", "words"), [({"mode": "max"}, "only minimises"), ({"eps": 0.0}, "no eps"),
                                                  ({"min_lr": 0.1}, "min_scale")])
    def test_what_optax_lacks(self, given: dict[str, Any], words: str) -> None:
        """max mode, eps and min_lr have no optax counterpart: ConfigError."""
        with pytest.raises(ConfigError, match=words):
            from_torch(given)

    def test_native_options_win(self) -> None:
        """``--rule-option`` values are optax's own names and override the torch-named ones."""
        cfg = configure({"patience": 3}, {"patience": "5", "accumulation_size": "2"}, monitor="val_loss")
        assert (5, 2) == (cfg.patience, cfg.accumulation_size)
        with pytest.raises(ConfigError, match="no argument 'warmup'"):
            configure({}, {"warmup": "1"}, monitor="val_loss")

    def test_runner(self) -> None:
        """``rules_runner`` replays a torch config under optax's rules for ``pf.compare``."""
        t = rules_runner()([1.0, 1.0, 1.0], [1, 2, 3], PlateauConfig(patience=2), [0.1])
        assert [0.1, 0.1, 0.1 * 0.10000000149011612] == [s.lr[0] for s in t.steps]


def test_import_is_light() -> None:
    """``import plateau_forensics.optax_rules`` loads neither jax, numpy, pandas nor tabulate."""
    code = "import sys, plateau_forensics.optax_rules; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert not {"jax", "optax", "numpy", "pandas", "tabulate", "torch"} & set(out.stdout.split())


class TestCli:
    """``--rules optax`` and ``--compare`` from the command line, judged by the real optax and real torch."""

    METRICS = [1.0, 0.9, 0.9, 0.9, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5]

    def _log(self, tmp_path: Any) -> str:
        p = tmp_path / "plateau.csv"
        p.write_text("epoch,val_loss\n" + "".join(f"{i + 1},{m!r}\n" for i, m in enumerate(self.METRICS)))
        return str(p)

    def _optax_lrs(self, kwargs: dict[str, Any], lr: float) -> list[float]:
        return [lr * s for s in optax_states(kwargs, [self.METRICS])[0]["scale"]]

    def test_rules_optax_json(self, tmp_path: Any) -> None:
        """--rules optax --format json: every step's lr is the base lr times the real transformation's scale."""
        import json

        from click.testing import CliRunner

        from plateau_forensics.cli import ExitStatus, main

        r = CliRunner().invoke(main, [self._log(tmp_path), "--rules", "optax", "--lr", "0.1", "--patience", "2",
                                      "--rule-option", "cooldown=1", "--format", "json"])
        assert ExitStatus.OK == r.exit_code, r.output
        obj = json.loads(r.stdout)
        assert "optax" == obj["rules"] and 1 == obj["config"]["cooldown"]
        assert self._optax_lrs({"patience": 2, "cooldown": 1}, 0.1) == [s["lr"][0] for s in obj["steps"]]

    def test_compare_four(self, tmp_path: Any) -> None:
        """--compare torch,keras,optax,fastai: one column group each, optax's first divergence from torch
        where the real optax and the real torch scheduler first disagree."""
        from click.testing import CliRunner
        from torch_oracle import make_scheduler

        from plateau_forensics.cli import ExitStatus, main

        r = CliRunner().invoke(main, [self._log(tmp_path), "--lr", "0.1", "--patience", "2", "--compare",
                                      "torch,keras,optax,fastai"])
        assert ExitStatus.OK == r.exit_code, r.output
        opt, sched = make_scheduler([0.1], {"patience": 2, "threshold": 1e-4, "threshold_mode": "abs"})
        torch_lrs = []
        for m in self.METRICS:
            sched.step(m)
            torch_lrs.append(opt.param_groups[0]["lr"])
        optax_lrs = self._optax_lrs({"patience": 2}, 0.1)
        first = next(i for i, (a, b) in enumerate(zip(torch_lrs, optax_lrs, strict=True))
                     if not math.isclose(a, b, rel_tol=1e-5))
        assert f"optax vs torch: first divergence: epoch {first + 1} " in r.stdout
        header = r.stdout.splitlines()[0]
        assert all(f"{n} lr" in header for n in ("torch", "keras", "optax", "fastai"))
        assert 3 == sum(line.startswith(("keras vs", "optax vs", "fastai vs")) for line in r.stdout.splitlines())
        # each library's own defaults fill what was not typed, and a mode auto shows what it resolved to
        assert "fastai  monitor=val_loss mode=auto(min) min_delta=0.0 patience=2 factor=10.0" in r.stdout
        assert "optax   factor=0.1 patience=2 rtol=0.0001" in r.stdout

    @pytest.mark.parametrize(("args", "words"), [
        (["--compare", "torch"], "two or more"), (["--compare", "torch,torch"], "two or more"),
        (["--compare", "torch,jax"], "unknown rules 'jax'"), (["--rules", "optax", "--mode", "max"], "only minimises"),
        (["--rules", "optax", "--min-delta", "0.1"], "rtol/atol"),
        (["--rules", "optax", "--rule-option", "warmup=3"], "no argument 'warmup'"),
        (["--compare", "torch,optax", "--rule-option", "keras.min_delta=1"], "not among the rule sets"),
    ], ids=["one", "repeat", "unknown", "max", "min-delta", "option", "prefix"])
    def test_usage_errors(self, tmp_path: Any, args: list[str], words: str) -> None:
        """What optax cannot do, or a bad --compare list, is one Error: line with exit 2."""
        from click.testing import CliRunner

        from plateau_forensics.cli import ExitStatus, main

        r = CliRunner().invoke(main, [self._log(tmp_path), *args])
        assert ExitStatus.USAGE == r.exit_code and words in r.stderr and "Traceback" not in r.output, r.output
