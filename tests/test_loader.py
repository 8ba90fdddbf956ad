"""Finding the plateau state in real torch.save files, whatever their layout, with both loaders."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import SAMPLES
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_oracle import make_scheduler, same, snapshot

import plateau_forensics as pf
from plateau_forensics.engine import run

SAMPLE_FILES = sorted(p.name for p in SAMPLES.glob("*.pt"))


@dataclass
class RunConfig:
    """A user's config class: the reader must keep it inert, never import this module."""

    lr: float = 0.1


def stepped(patience: int = 2, lrs: tuple[float, ...] = (0.1,), metrics: tuple[float, ...] = (1.0, 2.0, 2.0, 2.0),
            **kw: object) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.ReduceLROnPlateau]:
    """A real optimizer and scheduler after a few steps (one reduction with the defaults)."""
    opt, sched = make_scheduler(list(lrs), {"patience": patience, **kw})
    for m in metrics:
        sched.step(m)
    return opt, sched


class TestSamples:
    """The shipped samples load identically through both readers."""

    @pytest.mark.parametrize("name", SAMPLE_FILES, ids=SAMPLE_FILES)
    def test_builtin_equals_torch_loader(self, name: str) -> None:
        """The torch-free reader and torch.load(weights_only=True) give equal Checkpoints."""
        a = pf.load_checkpoint(SAMPLES / name)
        b = pf.load_checkpoint(SAMPLES / name, loader="torch")
        assert a == b
        assert a.loader == "builtin" and b.loader == "torch"

    @pytest.mark.parametrize("name", SAMPLE_FILES, ids=SAMPLE_FILES)
    def test_state_equals_torch_load(self, name: str) -> None:
        """Every saved scheduler value equals what torch.load returns for the same key path."""
        ck = pf.load_checkpoint(SAMPLES / name)
        tree = torch.load(SAMPLES / name, weights_only=True)
        raw = tree[ck.key_path] if ck.key_path else tree
        assert ck.raw.keys() == raw.keys()
        for k, v in raw.items():
            assert ck.raw[k] == v, k


class TestLayouts:
    """The state is found by shape wherever it sits, and its key path is reported."""

    def test_bare_state_dict(self, tmp_path: Path) -> None:
        """A file holding just ``scheduler.state_dict()`` has the root as key path."""
        opt, sched = stepped()
        torch.save(sched.state_dict(), tmp_path / "s.pt")
        ck = pf.load_checkpoint(tmp_path / "s.pt")
        assert ck.key_path == "" and ck.optimizer_lrs is None
        assert ck.lrs == (opt.param_groups[0]["lr"],)  # from _last_lr
        assert ck.state.num_bad_epochs == sched.num_bad_epochs

    def test_lightning_style_lists(self, tmp_path: Path) -> None:
        """``lr_schedulers[1]`` pairs with ``optimizer_states[1]``."""
        o1, s1 = stepped(lrs=(0.1,))
        o2, s2 = stepped(lrs=(0.7, 0.3), patience=5)
        torch.save({"epoch": 4, "global_step": 40, "optimizer_states": [o1.state_dict(), o2.state_dict()],
                    "lr_schedulers": [s1.state_dict(), s2.state_dict()]}, tmp_path / "l.ckpt")
        ck = pf.load_checkpoint(tmp_path / "l.ckpt", scheduler="lr_schedulers[1]")
        assert ck.optimizer_key_path == "optimizer_states[1]"
        assert ck.optimizer_lrs == (0.7, 0.3)
        assert (ck.epoch, ck.global_step, ck.framework) == (4, 40, "lightning")
        with pytest.raises(pf.AmbiguousSchedulerState) as exc:
            pf.load_checkpoint(tmp_path / "l.ckpt")
        assert exc.value.candidates == ["lr_schedulers[0]", "lr_schedulers[1]"]

    def test_deep_nesting_and_inert_objects(self, tmp_path: Path) -> None:
        """State under nested keys is found next to an argparse.Namespace and a user dataclass, neither run."""
        opt, sched = stepped()
        obj = {"args": argparse.Namespace(lr=0.1), "cfg": RunConfig(), "train": {"sched": {"inner": sched.state_dict()}},
               "optimizer": opt.state_dict()}
        torch.save(obj, tmp_path / "n.pt")
        ck = pf.load_checkpoint(tmp_path / "n.pt")
        assert ck.key_path == "train.sched.inner"
        assert ck.optimizer_key_path == "optimizer"

    def test_pickled_scheduler_object(self, tmp_path: Path) -> None:
        """A whole pickled ReduceLROnPlateau (with its optimizer) is read without running it."""
        opt, sched = stepped(lrs=(0.5, 0.05))
        torch.save({"sched": sched}, tmp_path / "o.pt")
        ck = pf.load_checkpoint(tmp_path / "o.pt")
        assert ck.key_path == "sched"
        assert ck.optimizer_key_path == "sched.optimizer"
        assert ck.optimizer_lrs == tuple(g["lr"] for g in opt.param_groups)
        assert ck.state.num_bad_epochs == sched.num_bad_epochs and ck.config.patience == 2

    def test_partial_timm_state(self, tmp_path: Path) -> None:
        """A state with only best and last_epoch is accepted, flagged partial, with the missing keys listed."""
        torch.save({"epoch": 7, "scheduler": {"best": 0.25, "last_epoch": 7}}, tmp_path / "t.pth.tar")
        ck = pf.load_checkpoint(tmp_path / "t.pth.tar")
        assert ck.partial
        assert {"num_bad_epochs", "cooldown_counter", "patience"} <= set(ck.state.missing)

    def test_hf_checkpoint_directory(self, tmp_path: Path) -> None:
        """A checkpoint-N/ directory: scheduler.pt, optimizer.pt and trainer_state.json; other files
        untouched."""
        opt, sched = stepped(lrs=(0.05, 0.05))
        d = tmp_path / "checkpoint-160"
        d.mkdir()
        torch.save(sched.state_dict(), d / "scheduler.pt")
        torch.save(opt.state_dict(), d / "optimizer.pt")
        (d / "trainer_state.json").write_text(json.dumps({"epoch": 20.0, "global_step": 160, "log_history": []}))
        (d / "training_args.bin").write_bytes(b"\x80\x04 this would be unsafe to unpickle")
        ck = pf.load_checkpoint(d)
        assert ck.framework == "hf-trainer" and ck.key_path == "scheduler.pt"
        assert ck.optimizer_lrs == tuple(g["lr"] for g in opt.param_groups)
        assert (ck.epoch, ck.global_step) == (20.0, 160)

    def test_not_found_lists_top_level(self, tmp_path: Path) -> None:
        """Without a plateau state the error names the top-level keys."""
        torch.save({"model": {}, "step": 3}, tmp_path / "m.pt")
        with pytest.raises(pf.SchedulerStateNotFound, match="top level holds: model, step"):
            pf.load_checkpoint(tmp_path / "m.pt")


class TestTensorValues:
    """Tensor values replay the way torch 2.13 treats them after load_state_dict."""

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
    @pytest.mark.parametrize("mode", ["min", "max"])
    @pytest.mark.parametrize("threshold_mode", ["rel", "abs"])
    def test_tensor_best_compares_in_its_dtype(self, tmp_path: Path, dtype: torch.dtype, mode: str,
                                              threshold_mode: str) -> None:
        """A torch-1.0-style tensor best (loaded into 2.13) is compared in the tensor's dtype until
        replaced."""
        opt, sched = make_scheduler([0.1], {"patience": 1, "mode": mode, "threshold_mode": threshold_mode,
                                            "threshold": 0.1})
        sd = sched.state_dict()
        sd["best"] = torch.tensor(0.3, dtype=dtype)
        torch.save({"scheduler": sd}, tmp_path / "tb.pt")
        ck = pf.load_checkpoint(tmp_path / "tb.pt")
        assert ck.state.best_dtype == str(dtype).removeprefix("torch.")
        # values straddling the float32/float64 bar so the dtype decides
        bar64 = 0.3 * 0.9 if (mode, threshold_mode) == ("min", "rel") else None
        near = [0.27, 0.2699999, 0.27000001, 0.4, 0.2, 0.33, 0.33000001, 0.19999999, 0.4000001, 0.1]
        if bar64 is not None:
            near = [bar64, math.nextafter(bar64, 0), *near]
        sched.load_state_dict(torch.load(tmp_path / "tb.pt", weights_only=True)["scheduler"])
        trace = pf.replay(near, state=ck, lrs=[0.1])
        for i, m in enumerate(near):
            sched.step(m)
            snap = snapshot(opt, sched)
            assert same(trace.steps[i].best, snap["best"]), i
            assert trace.steps[i].num_bad_epochs == snap["num_bad_epochs"], i
            assert trace.steps[i].lr == snap["lr"], i

    def test_tensor_lr_rounds_to_float32(self, tmp_path: Path) -> None:
        """A tensor lr is read with its dtype, and the replay's reductions round like fill_()."""
        opt, sched = make_scheduler([0.5], {"patience": 0, "factor": 0.1}, lr_dtype=torch.float32)
        sched.step(1.0)
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp_path / "tl.pt")
        ck = pf.load_checkpoint(tmp_path / "tl.pt")
        assert ck.lr_dtypes == ("float32",)
        metrics = [2.0, 2.0, 2.0]
        trace = pf.replay(metrics, state=ck)
        for i, m in enumerate(metrics):
            sched.step(m)
            assert trace.steps[i].lr == (float(opt.param_groups[0]["lr"]),)
        assert trace.steps[0].lr == (0.05000000074505806,)


def test_replay_from_pickled_scheduler_matches_torch(tmp_path: Path) -> None:
    """Continuing from a pickled scheduler object's state equals continuing the real scheduler."""
    opt, sched = stepped(lrs=(0.5, 0.05), patience=1, cooldown=2, min_lr=[0.1, 0.0])
    torch.save(sched, tmp_path / "o.pt")
    ck = pf.load_checkpoint(tmp_path / "o.pt")
    metrics = [3.0, 0.5, 0.6, 0.6, math.nan, 0.6, 0.6, 0.6, 0.6]
    trace = run(ck.config, metrics, ck.lrs, state=ck.state)
    for i, m in enumerate(metrics):
        sched.step(m)
        s = trace.steps[i]
        snap = snapshot(opt, sched)
        assert (s.last_epoch, s.num_bad_epochs, s.cooldown_counter, s.lr) == (
            snap["last_epoch"], snap["num_bad_epochs"], snap["cooldown_counter"], snap["lr"])


class TestRealValues:
    """Values real training scripts save load as torch loads them."""

    def test_dtype_and_class_values(self, tmp_path: Path) -> None:
        """A dtype value (torch.load reads it) and a config holding a class are values, not a traceback."""
        opt, sched = stepped()
        torch.save({"dtype": torch.float32, "scheduler": sched.state_dict()}, tmp_path / "d.pt")
        assert torch.load(tmp_path / "d.pt", weights_only=True)["dtype"] is torch.float32
        assert pf.load_checkpoint(tmp_path / "d.pt").neutralised == ("torch.float32",)
        torch.save({"config": {"optimizer_class": torch.optim.Adam, "dtype": torch.bfloat16},
                    "scheduler": sched.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "c.pt")
        ck = pf.load_checkpoint(tmp_path / "c.pt")
        assert ck.key_path == "scheduler" and ck.state.num_bad_epochs == sched.num_bad_epochs
        assert ck.neutralised == ("torch.optim.adam.Adam", "torch.bfloat16")

    def test_shared_state_is_one_candidate(self, tmp_path: Path) -> None:
        """One state dict referenced from two keys (pickle's memo) is one object: found once, at its first
        path."""
        opt, sched = stepped()
        sd = sched.state_dict()
        torch.save({"scheduler": sd, "backup": {"scheduler": sd}}, tmp_path / "s.pt")
        ck = pf.load_checkpoint(tmp_path / "s.pt")
        assert ck.key_path == "scheduler" and ck.candidates == ("scheduler",)

    def test_module_state_dict_metadata(self, tmp_path: Path) -> None:
        """model.state_dict()'s OrderedDict keeps its _metadata attribute, as torch.load gives it."""
        from plateau_forensics.torchfile import read_torch_file

        model = torch.nn.Linear(2, 1)
        torch.save(model.state_dict(), tmp_path / "m.pt")
        ours, theirs = read_torch_file(tmp_path / "m.pt"), torch.load(tmp_path / "m.pt", weights_only=True)
        assert ours._metadata == theirs._metadata and list(ours) == list(theirs)


class TestBadValues:
    """A value torch's scheduler cannot hold is a bad file: CheckpointValueError (exit 1) naming the key."""

    @pytest.mark.parametrize(("key", "value", "message"), [
        ("factor", 1.0, r"scheduler\.factor is 1\.0; torch requires factor < 1\.0"),
        ("mode", "bogus", r"scheduler\.mode is 'bogus'; torch knows 'min' and 'max'"),
        ("threshold_mode", "x" * 10_000, r"scheduler\.threshold_mode is 'x+\.\.\.x+'; torch knows"),
        ("patience", "2", r"scheduler\.patience holds '2', not a number"),
        ("best", None, r"scheduler\.best holds None, not a number"),
        ("min_lrs", [2**1100], r"scheduler\.min_lrs\[0\] holds an integer of 1101 bits, too large for a "
                               r"float"),
        ("last_epoch", 2**70, r"scheduler\.last_epoch is 1180591620717411303424: out of range for a counter"),
    ], ids=["factor", "mode", "long-threshold-mode", "patience", "best-none", "min-lrs-huge",
            "last-epoch-huge"])
    def test_value_error_names_the_key(self, tmp_path: Path, key: str, value: object, message: str) -> None:
        """The error is typed, names the key, quotes at most 80 characters, and is one line."""
        _, sched = stepped()
        sd = sched.state_dict()
        sd[key] = value
        torch.save({"scheduler": sd}, tmp_path / "v.pt")
        with pytest.raises(pf.CheckpointError) as info:
            pf.load_checkpoint(tmp_path / "v.pt")
        assert type(info.value).__name__ == "CheckpointValueError"
        assert re.search(message, str(info.value)) and len(str(info.value)) < 300, str(info.value)

    def test_cli_exit_code_is_1(self, tmp_path: Path) -> None:
        """plateau-trace on a checkpoint with factor >= 1 exits 1 (bad file), not 2 (usage)."""
        from click.testing import CliRunner

        from plateau_forensics.cli import main

        _, sched = stepped()
        sd = sched.state_dict()
        sd["factor"] = 1.5
        torch.save(sd, tmp_path / "f.pt")
        result = CliRunner().invoke(main, [str(tmp_path / "f.pt")])
        assert result.exit_code == 1 and result.stderr.startswith("Error: ")
        assert "factor is 1.5" in result.stderr

    @pytest.mark.parametrize(("content", "message"), [
        (b"[1, 2]", "the top level is a JSON list, not an object"),
        (b'{"epoch": "5"}', "epoch is '5', not a number"),
        (b'{"global_step": 1.5}', "global_step is 1.5, not an integer"),
        (b"[" * 100_000, "not readable JSON"),
        (b'{"log_history": [1, 2]}', "log_history is not a list of objects"),
    ], ids=["list", "string-epoch", "float-step", "deep", "history-of-numbers"])
    def test_hf_trainer_state(self, tmp_path: Path, content: bytes, message: str) -> None:
        """A broken trainer_state.json is a one-line CheckpointError naming the file."""
        opt, sched = stepped()
        d = tmp_path / "checkpoint-1"
        d.mkdir()
        torch.save(sched.state_dict(), d / "scheduler.pt")
        (d / "trainer_state.json").write_bytes(content)
        with pytest.raises(pf.CheckpointError, match=re.escape(message)) as info:
            pf.load_checkpoint(d)
        assert str(info.value).startswith(str(d / "trainer_state.json")) and "\n" not in str(info.value)


def sanity_codes(sd: dict[str, object], tmp_path: Path, **tree: object) -> list[str]:
    """Save ``sd`` (and ``tree``) with torch.save, load it, and return the sanity codes in order."""
    from plateau_forensics.sanity import check_checkpoint

    torch.save({"scheduler": sd, **tree}, tmp_path / "x.pt")
    return [code for code, *_ in check_checkpoint(pf.load_checkpoint(tmp_path / "x.pt"))]


class TestSanity:
    """States torch loads but its step() never writes become sanity problems; real states give none."""

    @settings(max_examples=60, deadline=None)
    @given(patience=st.integers(0, 4), cooldown=st.integers(0, 3), factor=st.sampled_from([0.1, 0.5, 0.9]),
           mode=st.sampled_from(["min", "max"]), threshold_mode=st.sampled_from(["rel", "abs"]),
           metrics=st.lists(st.one_of(st.floats(-2, 2), st.just(math.nan)), min_size=0, max_size=25))
    def test_real_runs_have_no_problems(self, patience: int, cooldown: int, factor: float, mode: str,
                                        threshold_mode: str, metrics: list[float]) -> None:
        """After every step of a real scheduler, its state_dict() passes every sanity rule."""
        from plateau_forensics.loader import checkpoint_from_tree
        from plateau_forensics.sanity import check_checkpoint

        opt, sched = make_scheduler([0.1, 0.01], {"patience": patience, "cooldown": cooldown,
                                                  "factor": factor, "mode": mode,
                                                  "threshold_mode": threshold_mode})
        for m in metrics:
            sched.step(m)
            tree = {"scheduler": sched.state_dict(), "optimizer": opt.state_dict()}
            ck = checkpoint_from_tree(tree, "live")
            assert check_checkpoint(ck) == [], sched.state_dict()

    @pytest.mark.parametrize(("change", "code"), [
        ({"factor": math.nan}, "impossible-factor"), ({"factor": -0.5}, "impossible-factor"),
        ({"eps": 1.5}, "impossible-eps"), ({"cooldown_counter": 5}, "impossible-counter"),
        ({"num_bad_epochs": 9}, "impossible-counter"), ({"num_bad_epochs": -1}, "impossible-counter"),
        ({"best": math.nan}, "impossible-best"), ({"patience": 2.5}, "impossible-patience"),
        ({"threshold": -1e-4}, "impossible-threshold"), ({"min_lrs": [-0.1]}, "impossible-min-lrs"),
        ({"mode_worse": -math.inf}, "inconsistent-mode-worse"),
        ({"num_bad_epochs": 1, "cooldown_counter": 1, "cooldown": 2}, "impossible-counter"),
    ], ids=["factor-nan", "factor-negative", "eps-1.5", "cooldown-counter", "nb-over-patience", "nb-negative",
            "best-nan", "patience-fraction", "threshold-negative", "min-lrs-negative", "mode-worse",
            "bad-in-cooldown"])
    def test_impossible_value(self, tmp_path: Path, change: dict[str, object], code: str) -> None:
        """Each impossible value loads (torch would load it too) and is reported with its code."""
        _, sched = stepped(patience=3, cooldown=2)
        sd = sched.state_dict()
        assert sanity_codes(dict(sd), tmp_path) == []
        sd.update(change)
        assert code in sanity_codes(sd, tmp_path)
        assert torch.load(tmp_path / "x.pt", weights_only=True)["scheduler"]["patience"] == sd["patience"]

    def test_neutralised_and_hostile_globals(self, tmp_path: Path) -> None:
        """A config object is an info; os.system in the file is a warning naming it; nothing runs."""
        _, sched = stepped()
        target = tmp_path / "pwned"

        class Pwn:
            def __reduce__(self) -> tuple[object, ...]:
                return (os.system, (f"touch {target}",))

        namespace = argparse.Namespace(lr=0.1)
        assert sanity_codes(sched.state_dict(), tmp_path, args=namespace) == ["neutralised-globals"]
        assert sanity_codes(sched.state_dict(), tmp_path, evil=Pwn()) == ["hostile-globals"]
        assert not target.exists()
