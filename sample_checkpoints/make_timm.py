"""Regenerate the timm fixtures in ``timm/`` by training with timm's own ``PlateauLRScheduler``.

Usage: ``python sample_checkpoints/make_timm.py [OUTDIR] [--only SCENARIO ...]`` (default OUTDIR: ``timm/``
next to this script; default: every scenario). Needs ``pip install --no-deps timm==1.0.31``.

timm's scheduler code is imported without running ``timm/__init__.py`` (``_timm_import.py``): the scheduler that
runs is timm's ``timm/scheduler/plateau_lr.py``, unmodified, and the log is written by timm's own
``timm.utils.summary.update_summary``. Each scenario trains the 8-16-1 ReLU MLP of ``make_samples.py`` (SGD,
MSE on its seeded regression set) with the loop of timm's ``train.py``, per 0-based epoch::

    train_metrics = train_one_epoch(...)
    eval_metrics = validate(...)                                  # {"loss": ...}
    update_summary(epoch, train_metrics, eval_metrics, "summary.csv", lr=mean of the group lrs)
    saver.save_checkpoint(epoch, metric=eval_metrics["loss"])     # saved BEFORE the scheduler step
    lr_scheduler.step(epoch + 1, eval_metrics["loss"])

Checkpoints have the layout of timm 1.0.31's ``CheckpointSaver._save`` (``epoch``, ``arch``, ``optimizer``,
``version`` 2, ``state_dict``, ``metric``, ``saver``; no ``args``: the saver was built without them), plus what a
user adds to keep the scheduler: ``scheduler`` = ``PlateauLRScheduler.state_dict()``, which is only ``best`` and
``last_epoch`` (timm issue #871). Files are named as the saver names them (``checkpoint-<epoch>.pth.tar``,
``last.pth.tar``); only a few are kept so the folder stays small. timm's ``CheckpointSaver`` class itself cannot be
imported here (``timm/utils/model.py`` imports torchvision), so its ``_save`` is mirrored key for key.

Scenarios (one sub-folder each, ground truth in ``<scenario>/truth.json``):

* ``defaults``: ``PlateauLRScheduler(optimizer)``: timm's defaults, ``mode='max'`` fed the eval loss, so every
  falling loss is a bad epoch and the lr is cut every 11 epochs.
* ``min_mode``: ``mode='min', decay_rate=0.5, patience_t=2, cooldown_t=1, lr_min=1e-3``.
* ``warmup``: as ``min_mode`` with ``warmup_t=3, warmup_lr_init=0.005``: epochs 0-2 train with timm's linear
  warm-up lrs and are never fed to the wrapped torch scheduler, whose ``last_epoch`` is ``epoch - 3``.
* ``noise``: as ``min_mode`` with ``noise_range_t=(8, 16)`` (normal noise, ``noise_pct`` 0.67, seed 42): epochs
  8-15 train with ``lr * (1 + n)``, ``n`` drawn from ``torch.Generator().manual_seed(42 + epoch)``.
* ``resumed``: run A (``run_a/``) trains epochs 0-11 with ``min_mode``'s settings; run B (``run_b/``) resumes as
  timm's ``train.py`` does: model and optimizer from ``run_a/checkpoint-11.pth.tar``, ``start_epoch = epoch + 1``,
  a new ``PlateauLRScheduler`` (whose constructor sets every group's lr back to its ``initial_lr``), the saved
  ``best``/``last_epoch`` loaded with ``load_state_dict``, ``lr_scheduler.step(start_epoch)`` with no metric; then
  epochs 12-23 into a new output folder. Epoch 11's eval loss never reaches run B's scheduler (the checkpoint holds
  the state before its step), and ``num_bad_epochs``/``cooldown_counter`` restart at 0.

``truth.json`` holds the facts the generator checked and ``live``: what the wrapped torch scheduler really did,
recorded from the live objects (``_truth.py``): every ``step()`` with the state after it, the lr every logged row
trained with (warm-up and noise included), which file was saved when. The tests judge the tool against it, for the
committed fixtures and for a fresh regeneration alike; nothing compares two runs' numbers.

Determinism: CPU pins before torch loads (``_pin_cpu.py``), one thread, seeded data, model and shuffles: a rerun on
the same machine writes the same numbers; another CPU trains to other last bits, so no test compares them.
"""

from __future__ import annotations

import _pin_cpu  # noqa: F401 - must run before torch loads (see _pin_cpu.py)

# isort: split

import os
import shutil
import sys
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timm_import import import_timm, plateau_scheduler_class, timm_version  # noqa: E402
from _truth import Recorder, dumps  # noqa: E402
from make_samples import evaluate, make_data, make_model, train_epoch  # noqa: E402

DATA_SEED, NOISE, MODEL_SEED = 3, 1.0, 5
LR = 0.05
EPOCHS = 24
#: timm's PlateauLRScheduler defaults (timm/scheduler/plateau_lr.py, 1.0.31)
TIMM_DEFAULTS = dict(decay_rate=0.1, patience_t=10, threshold=1e-4, cooldown_t=0, warmup_t=0, warmup_lr_init=0.0,
                     lr_min=0.0, mode="max", noise_range_t=None, noise_type="normal", noise_pct=0.67,
                     noise_std=1.0, noise_seed=None)
MIN_MODE = dict(mode="min", decay_rate=0.5, patience_t=2, cooldown_t=1, lr_min=1e-3)
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "min_mode": MIN_MODE,
    "warmup": {**MIN_MODE, "warmup_t": 3, "warmup_lr_init": 0.005},
    "noise": {**MIN_MODE, "noise_range_t": (8, 16)},
    "resumed": MIN_MODE,
}
#: kept checkpoint files per scenario (epochs), besides last.pth.tar
KEEP = {"defaults": (15,), "min_mode": (9,), "warmup": (10,), "noise": (12,)}
RESUME_AT = 11  # run A's last epoch: run B resumes from checkpoint-11.pth.tar at epoch 12


def torch_names(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The wrapped ReduceLROnPlateau's arguments (torch's names) for PlateauLRScheduler kwargs."""
    k = {**TIMM_DEFAULTS, **kwargs}
    return {"mode": k["mode"], "factor": k["decay_rate"], "patience": k["patience_t"], "threshold": k["threshold"],
            "threshold_mode": "rel", "cooldown": k["cooldown_t"], "min_lr": k["lr_min"], "eps": 1e-8}


def new_scheduler(optimizer: torch.optim.Optimizer, kwargs: dict[str, Any]) -> Any:
    """timm's own PlateauLRScheduler (its deprecation FutureWarning silenced: it is the point of the fixture)."""
    cls = plateau_scheduler_class()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*PlateauLRScheduler is deprecated.*")
        return cls(optimizer, **kwargs)


def checkpoint_state(model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, metric: float,
                     scheduler: Any, saver: dict[str, Any]) -> dict[str, Any]:
    """timm 1.0.31 ``CheckpointSaver._save``'s dict (args=None, no amp scaler, no task, no EMA), plus the user's
    ``scheduler`` key."""
    save_state: dict[str, Any] = {
        "epoch": epoch,
        "arch": type(model).__name__.lower(),
        "optimizer": optimizer.state_dict(),
        "version": 2,  # version < 2 increments epoch before save
    }
    save_state["state_dict"] = model.state_dict()
    if metric is not None:
        save_state["metric"] = metric
    save_state["saver"] = saver
    save_state["scheduler"] = scheduler.state_dict()  # the user's addition: {'best', 'last_epoch'}
    return save_state


class Saver:
    """The files and bookkeeping of timm's CheckpointSaver (decreasing metric), told to the recorder."""

    def __init__(self, folder: Path, root: Path, rec: Recorder) -> None:
        self.folder, self.root, self.rec = folder, root, rec
        self.history: list[tuple[str, float]] = []
        self.best: tuple[int, float] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, metric: float,
             scheduler: Any) -> None:
        saver = {"checkpoint_files": list(self.history), "best_epoch": self.best and self.best[0],
                 "best_metric": self.best and self.best[1], "pending": (epoch, metric)}
        state = checkpoint_state(model, optimizer, epoch, metric, scheduler, saver)
        for name in ("last.pth.tar", f"checkpoint-{epoch}.pth.tar"):
            torch.save(state, self.folder / name)
            self.rec.saved((self.folder / name).relative_to(self.root).as_posix())
        self.history.append((f"checkpoint-{epoch}.pth.tar", metric))
        if self.best is None or metric < self.best[1]:
            self.best = (epoch, metric)


def train(folder: Path, root: Path, rec: Recorder, kwargs: dict[str, Any], epochs: range,
          resume: Path | None = None) -> Any:
    """timm's train.py loop over ``epochs`` (0-based); with ``resume``, timm's resume of that checkpoint first."""
    update_summary = import_timm("utils.summary").update_summary
    data = make_data(DATA_SEED, NOISE)
    model = make_model(MODEL_SEED)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    start_epoch = epochs.start
    if resume is not None:  # timm.models.resume_checkpoint: model, optimizer, resume_epoch = epoch + 1 (version 2)
        ckpt = torch.load(resume, weights_only=True)
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        assert ckpt["version"] > 1 and ckpt["epoch"] + 1 == start_epoch, (ckpt["epoch"], start_epoch)
    scheduler = new_scheduler(optimizer, kwargs)  # train.py builds the scheduler after the resume
    if resume is not None:
        scheduler.load_state_dict(ckpt["scheduler"])  # the user's line: only best and last_epoch come back
    rec.watch(scheduler.lr_scheduler, restored_from=None if resume is None else resume.relative_to(root).as_posix())
    if resume is not None and start_epoch > 0:
        scheduler.step(start_epoch)  # train.py: lr_scheduler.step(start_epoch), no metric
    saver = Saver(folder, root, rec)
    summary = folder / "summary.csv"
    for epoch in epochs:
        lrs = [float(g["lr"]) for g in optimizer.param_groups]  # the lr this epoch trains with
        train_loss = train_epoch(model, optimizer, data, shuffle_seed=1000 + epoch)
        eval_loss = evaluate(model, data)
        assert [float(g["lr"]) for g in optimizer.param_groups] == lrs
        update_summary(epoch, OrderedDict(loss=train_loss), OrderedDict(loss=eval_loss), filename=str(summary),
                       lr=sum(lrs) / len(lrs), write_header=epoch == epochs.start)
        rec.row(epoch, lrs)
        saver.save(model, optimizer, epoch, eval_loss, scheduler)
        scheduler.step(epoch + 1, eval_loss)  # train.py: lr_scheduler.step(epoch + 1, latest_metric)
    return scheduler


def prune(folder: Path, keep: set[str], rec: Recorder, root: Path) -> None:
    """Delete the checkpoint files not in ``keep`` (names in ``folder``) and their records."""
    for p in folder.glob("*.pth.tar"):
        if p.name not in keep:
            p.unlink()
    rec.forget_checkpoints({c["file"] for c in rec.checkpoints if (root / c["file"]).exists()})


def read_summary(path: Path) -> list[dict[str, float]]:
    """summary.csv rows as floats (the test reads it again with the csv module)."""
    import csv

    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def facts(root: Path, file: str) -> dict[str, Any]:
    """What a kept checkpoint holds, read back with torch.load(weights_only=True)."""
    ck = torch.load(root / file, weights_only=True)
    groups = ck["optimizer"]["param_groups"]
    return {"file": file, "keys": list(ck), "epoch": ck["epoch"], "version": ck["version"], "arch": ck["arch"],
            "metric": ck["metric"], "scheduler": ck["scheduler"], "optimizer_lrs": [g["lr"] for g in groups],
            "initial_lrs": [g["initial_lr"] for g in groups]}


def make(out: Path, name: str) -> dict[str, Any]:
    """Train scenario ``name`` into ``out/name`` and write its truth.json."""
    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    rec = Recorder()
    kwargs = SCENARIOS[name]
    if name == "resumed":
        train(folder / "run_a", folder, rec, kwargs, range(0, RESUME_AT + 1))
        prune(folder / "run_a", {f"checkpoint-{RESUME_AT}.pth.tar"}, rec, folder)
        sched = train(folder / "run_b", folder, rec, kwargs, range(RESUME_AT + 1, EPOCHS),
                      resume=folder / "run_a" / f"checkpoint-{RESUME_AT}.pth.tar")
        prune(folder / "run_b", {f"checkpoint-{RESUME_AT + 4}.pth.tar", "last.pth.tar"}, rec, folder)
        logs: Any = ["run_a/summary.csv", "run_b/summary.csv"]
    else:
        sched = train(folder, folder, rec, kwargs, range(EPOCHS))
        prune(folder, {*(f"checkpoint-{e}.pth.tar" for e in KEEP[name]), "last.pth.tar"}, rec, folder)
        logs = "summary.csv"
    live = rec.as_json()
    kept = sorted(c["file"] for c in rec.checkpoints)
    ck_facts = [facts(folder, f) for f in kept]
    rows = [r for log in ([logs] if isinstance(logs, str) else logs) for r in read_summary(folder / log)]

    # the facts the stack module relies on, checked on the written files
    steps = live["steps"]
    for f in ck_facts:
        assert set(f["scheduler"]) == {"best", "last_epoch"}, f  # PlateauLRScheduler.state_dict()
        assert f["keys"] == ["epoch", "arch", "optimizer", "version", "state_dict", "metric", "saver", "scheduler"]
        assert f["initial_lrs"] == [LR], f  # timm's Scheduler writes initial_lr into every group
        rec_ck = next(c for c in rec.checkpoints if c["file"] == f["file"])
        assert rec_ck["saved"] == "before_step" and rec_ck["epoch"] == f["epoch"], rec_ck
    assert [r["epoch"] for r in rows] == list(range(EPOCHS)), rows
    assert [r["lr"] for r in rows] == [lr[0] for lr in live["rows"]["lr"]]
    warmup_t = kwargs.get("warmup_t", 0)
    stepped = [live["rows"]["epoch"][r] for r in steps["row"]]
    if name != "resumed":
        # warm-up epochs (epoch + 1 <= warmup_t) never step the wrapped scheduler: last_epoch = epoch + 1 - warmup_t
        assert stepped == list(range(warmup_t, EPOCHS)), stepped
        assert steps["last_epoch"] == [e + 1 - warmup_t for e in stepped]
    else:
        assert RESUME_AT in stepped and stepped.count(RESUME_AT) == 1  # run A stepped it; run B starts after it
    reductions = [live["rows"]["epoch"][r] for r, a, b in zip(steps["row"], steps["lr_before"], steps["lr"],
                                                            strict=True) if b[0] < a[0]]
    assert len(reductions) >= 2, (name, reductions)
    truth = {
        "scenario": name,
        "versions": {"torch": torch.__version__, "timm": timm_version()},
        "timm_kwargs": {**TIMM_DEFAULTS, **kwargs},
        # the wrapped torch scheduler's hyperparameters, by PlateauConfig's names (the tests' --patience etc.)
        "setup": {"scheduler": torch_names(kwargs), "initial_lr": LR},
        "log": logs,
        "reductions_at_epochs": reductions,
        "checkpoints": ck_facts,
        "final_state": sched.state_dict(),
    }
    if name == "resumed":
        b = next(f for f in ck_facts if f["file"].startswith("run_b/"))
        truth["resume"] = {"from": f"run_a/checkpoint-{RESUME_AT}.pth.tar", "start_epoch": RESUME_AT + 1,
                           "skipped_metric_epoch": RESUME_AT, "run_b_initial_lr": live["rows"]["lr"][RESUME_AT + 1],
                           "run_b_checkpoint": b["file"]}
    (folder / "truth.json").write_text(dumps({**truth, "live": live}), encoding="ascii")
    print(f"{name:9s} reductions at epochs {reductions}; kept {kept}")
    return truth


def main(argv: list[str]) -> None:
    """Write the scenarios into OUTDIR (default: ``timm/`` next to this script)."""
    args = argv[1:]
    only: list[str] = []
    if "--only" in args:
        i = args.index("--only")
        only, args = args[i + 1:], args[:i]
    unknown = [s for s in only if s not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    out = Path(args[0]).resolve() if args else Path(__file__).resolve().parent / "timm"
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, timm {timm_version()}, CPU {torch.backends.cpu.get_cpu_capability()}, "
          f"pid {os.getpid()}")
    t0 = time.perf_counter()
    for name in only or list(SCENARIOS):
        make(out, name)
    print(f"done in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main(sys.argv)
