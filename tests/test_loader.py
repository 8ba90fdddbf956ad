"""Finding the plateau state in real torch.save files, whatever their layout, with both loaders."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import SAMPLES
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
        """A checkpoint-N/ directory: scheduler.pt, optimizer.pt and trainer_state.json; other files untouched."""
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
        """A torch-1.0-style tensor best (loaded into 2.13) is compared in the tensor's dtype until replaced."""
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
