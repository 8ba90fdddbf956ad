"""Regenerate the Lightning samples in ``lightning/`` by running real PyTorch Lightning training.

Usage: ``python sample_checkpoints/make_lightning.py [OUTDIR] [--only SCENARIO ...]``
(default OUTDIR: ``lightning/`` next to this script; default: every scenario).

Each scenario is a real ``lightning.Trainer.fit`` of a tiny LightningModule (the 8-16-1 ReLU MLP of
``make_samples.py``, Adam, MSE on seeded synthetic regression data) whose ``configure_optimizers``
returns a real ``torch.optim.lr_scheduler.ReduceLROnPlateau`` in Lightning's scheduler dict. Logging
is Lightning's own ``CSVLogger`` (``csv_logs/version_N/metrics.csv`` + ``hparams.yaml``) with a
``LearningRateMonitor(logging_interval="epoch")``; checkpoints are Lightning's own ``ModelCheckpoint``
files (``csv_logs/version_N/checkpoints/epoch={epoch}-step={step}.ckpt`` and ``last.ckpt``). Only a few
checkpoints per run are kept (the rest are deleted) so the folder stays small.

Scenarios (one sub-folder each; the ground truth is in ``<scenario>/truth.json`` and ``lightning/README.md``):

* ``plain``: 20 epochs, uninterrupted, epoch-interval plateau scheduler.
* ``resumed``: 12 epochs, then ``fit(ckpt_path=<epoch=11 checkpoint>)`` to 24 epochs (version_1).
* ``step_interval``: ``interval="step", frequency=4`` (2 steps per 8-batch epoch) with one
  validation per epoch, ``strict=False``: the scheduler re-reads the stale val_loss.
* ``missing_monitor_nonstrict``: ``monitor="val_loss_typo", strict=False``: the scheduler never steps.

Every Lightning fact the package relies on (FORMATS.md section 2) is asserted on the written files,
read back with ``torch.load(weights_only=True)``, and printed.

``truth.json`` also holds ``live``: what the real scheduler did while Lightning trained, recorded from
the live objects (``_truth.py``) by a callback and a wrapper around ``trainer.save_checkpoint``: every
plateau step's state and the ``val_loss`` row it read, the lr every group used in each epoch (read at
the epoch's start, as ``LearningRateMonitor`` logs it), and which file was saved when. The tests judge
the tool against it, for the committed fixtures and a fresh regeneration alike.

Determinism: the CPU kernels are pinned before torch is imported (``_pin_cpu.py``), one thread,
``L.seed_everything`` and ``Trainer(deterministic=True)``: a rerun on the same machine writes the same
numbers. Another CPU or math library trains to other last bits, so no test compares two runs' numbers;
checkpoint bytes also hold absolute paths.
"""

from __future__ import annotations

import _pin_cpu  # noqa: F401 - must run before torch loads (see _pin_cpu.py)

# isort: split

import csv
import logging
import math
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _truth import Recorder, dumps  # noqa: E402 - the sibling module

N_FEATURES = 8
N_TRAIN = 128
N_VAL = 128
BATCH_SIZE = 16  # 8 training batches per epoch; validation is one full batch
SEED = 7
DATA_SEED = 1
NOISE = 1.0
LR = 0.01
SCHED = dict(mode="min", patience=2, factor=0.5, cooldown=1)  # threshold: torch default (1e-4 rel)
LOGGER_NAME = "csv_logs"
VERSIONS = {"torch": torch.__version__, "lightning": L.__version__}


# --------------------------------------------------------------------------------------------------
# data and module


def make_data(seed: int = DATA_SEED, noise: float = NOISE) -> tuple[TensorDataset, TensorDataset]:
    """The seeded regression set of make_samples.py: uniform inputs, linear target, uniform-sum noise."""
    g = torch.Generator().manual_seed(seed)
    n = N_TRAIN + N_VAL
    x = torch.rand(n, N_FEATURES, generator=g) * 2.0 - 1.0
    eps = torch.rand(n, generator=g) + torch.rand(n, generator=g) + torch.rand(n, generator=g) - 1.5
    y = (1.5 * x[:, 0] - x[:, 1] + 0.5 * x[:, 2] + noise * eps).unsqueeze(1)
    return TensorDataset(x[:N_TRAIN], y[:N_TRAIN]), TensorDataset(x[N_TRAIN:], y[N_TRAIN:])


class PlateauModule(L.LightningModule):
    """The 8-16-1 MLP; ``configure_optimizers`` returns Adam + ReduceLROnPlateau in Lightning's dict form."""

    def __init__(
        self,
        lr: float = LR,
        monitor: str = "val_loss",
        interval: str = "epoch",
        frequency: int = 1,
        strict: bool = True,
        patience: int = SCHED["patience"],
        factor: float = SCHED["factor"],
        cooldown: int = SCHED["cooldown"],
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(N_FEATURES, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y), on_step=False, on_epoch=True)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        opt = torch.optim.Adam(self.parameters(), lr=hp.lr)
        sched = ReduceLROnPlateau(
            opt, mode="min", patience=hp.patience, factor=hp.factor, cooldown=hp.cooldown
        )
        return {
            "optimizer": opt,
            "lr_scheduler": {
                "scheduler": sched,
                "monitor": hp.monitor,
                "interval": hp.interval,
                "frequency": hp.frequency,
                "strict": hp.strict,
            },
        }


def loaders() -> tuple[DataLoader, DataLoader]:
    train, val = make_data()
    g = torch.Generator().manual_seed(SEED)  # the shuffle order, independent of the global RNG
    return (
        DataLoader(train, batch_size=BATCH_SIZE, shuffle=True, generator=g, num_workers=0),
        DataLoader(val, batch_size=N_VAL, shuffle=False, num_workers=0),
    )


class Record(L.Callback):
    """Tells a ``Recorder`` which scheduler Lightning steps, each validation row and the lr it trained with.

    It holds no state Lightning would save (``state_dict`` stays empty), so checkpoints are unchanged.
    """

    def __init__(self, rec: Recorder, restored_from: str | None = None) -> None:
        self.rec = rec
        self.restored_from = restored_from
        self.epoch_lrs: list[float] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # with fit(ckpt_path=...), Lightning has loaded the scheduler state by now
        self.rec.watch(trainer.lr_scheduler_configs[0].scheduler, self.restored_from)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_lrs = [float(g["lr"]) for g in trainer.optimizers[0].param_groups]

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:  # the sanity check logs no row
            self.rec.row(trainer.current_epoch, self.epoch_lrs)


def record_saves(trainer: L.Trainer, rec: Recorder, root: Path) -> None:
    """Record every file ``trainer.save_checkpoint`` writes (ModelCheckpoint saves through it)."""
    save = trainer.save_checkpoint

    def save_checkpoint(filepath: Any, *args: Any, **kwargs: Any) -> None:
        save(filepath, *args, **kwargs)
        rec.saved(Path(filepath).resolve().relative_to(root.resolve()).as_posix())

    trainer.save_checkpoint = save_checkpoint  # type: ignore[method-assign]


def make_trainer(
    save_dir: Path,
    max_epochs: int,
    rec: Recorder | None = None,
    restored_from: str | None = None,
    **kwargs: Any,
) -> L.Trainer:
    """A quiet, deterministic CPU trainer with CSVLogger, LearningRateMonitor and ModelCheckpoint."""
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        deterministic=True,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=4,
        logger=CSVLogger(save_dir, name=LOGGER_NAME),
        callbacks=[
            LearningRateMonitor(logging_interval="epoch"),
            ModelCheckpoint(save_top_k=-1, every_n_epochs=1, save_last=True, filename="{epoch}-{step}"),
            *([Record(rec, restored_from)] if rec is not None else []),
        ],
        **kwargs,
    )
    if rec is not None:
        record_saves(trainer, rec, save_dir)
    return trainer


def fit(
    save_dir: Path,
    max_epochs: int,
    module_kwargs: dict[str, Any] | None = None,
    ckpt_path: Path | None = None,
    rec: Recorder | None = None,
    **trainer_kwargs: Any,
) -> tuple[L.Trainer, list[str]]:
    """Seed, build, fit (recording into ``rec``); return the trainer and the warnings Lightning raised."""
    L.seed_everything(SEED, workers=True, verbose=False)
    model = PlateauModule(**(module_kwargs or {}))
    source = None
    if ckpt_path is not None:
        source = Path(ckpt_path).resolve().relative_to(save_dir.resolve()).as_posix()
    trainer = make_trainer(save_dir, max_epochs, rec, source, **trainer_kwargs)
    train, val = loaders()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, train, val, ckpt_path=str(ckpt_path) if ckpt_path is not None else None)
    return trainer, [str(w.message) for w in caught]


# --------------------------------------------------------------------------------------------------
# reading what was written


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def ckpt_facts(path: Path, root: Path) -> dict[str, Any]:
    """The checkpoint fields the package reads, as torch.load(weights_only=True) returns them."""
    ck = load(path)
    sd = ck["lr_schedulers"][0]
    progress = ck["loops"]["fit_loop"]["epoch_loop.scheduler_progress"]["total"]
    return {
        "file": path.relative_to(root).as_posix(),
        "epoch": ck["epoch"],
        "global_step": ck["global_step"],
        "last_epoch": sd["last_epoch"],
        "best": sd["best"],
        "num_bad_epochs": sd["num_bad_epochs"],
        "cooldown_counter": sd["cooldown_counter"],
        "_last_lr": sd["_last_lr"],
        "optimizer_lrs": [g["lr"] for g in ck["optimizer_states"][0]["param_groups"]],
        "scheduler_progress_completed": progress["completed"],
        "n_lr_schedulers": len(ck["lr_schedulers"]),
        "pytorch-lightning_version": ck["pytorch-lightning_version"],
    }


def read_metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def val_rows(rows: list[dict[str, str]]) -> list[tuple[int, int, float]]:
    """(epoch, step, val_loss) of every row that logs val_loss."""
    return [(int(r["epoch"]), int(r["step"]), float(r["val_loss"])) for r in rows if r.get("val_loss")]


def lr_rows(rows: list[dict[str, str]]) -> list[tuple[int, float]]:
    """(step, lr) of every LearningRateMonitor row (logged at epoch start, epoch cell empty)."""
    return [(int(r["step"]), float(r["lr-Adam"])) for r in rows if r.get("lr-Adam")]


def torch_replay(values: list[float], lr: float = LR, state: dict | None = None) -> tuple[list[float], dict]:
    """Step a real ReduceLROnPlateau over ``values``; return (lr used before each step, final state)."""
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=lr)
    sched = ReduceLROnPlateau(opt, **SCHED)
    if state is not None:
        sched.load_state_dict(dict(state))
        opt.param_groups[0]["lr"] = lr
    used = []
    for v in values:
        used.append(opt.param_groups[0]["lr"])
        sched.step(v)
    return used, sched.state_dict()


def changes(values: list[float]) -> list[int]:
    """Indexes whose value differs from the previous one (epochs where the lr changed)."""
    return [i for i in range(1, len(values)) if values[i] != values[i - 1]]


def same_state(a: dict, b: dict) -> bool:
    keys = ("last_epoch", "best", "num_bad_epochs", "cooldown_counter", "_last_lr")
    return all(a[k] == b[k] for k in keys)


def prune(version_dir: Path, keep: set[str]) -> None:
    """Delete every checkpoint of a run except ``keep`` (file names)."""
    for p in (version_dir / "checkpoints").iterdir():
        if p.name not in keep:
            p.unlink()


def write_truth(folder: Path, truth: dict[str, Any], rec: Recorder, keep: set[str]) -> None:
    """Write ``truth.json``: the checked facts, and ``rec``'s record of the kept checkpoints as ``live``."""
    rec.forget_checkpoints(keep)
    assert sorted(c["file"] for c in rec.checkpoints) == sorted(keep), (rec.checkpoints, keep)
    (folder / "truth.json").write_text(dumps({**truth, "live": rec.as_json()}), encoding="ascii")


def show(name: str, facts: list[dict[str, Any]]) -> None:
    print(f"[{name}]")
    for f in facts:
        print(
            f"  {f['file']}: epoch={f['epoch']} global_step={f['global_step']} last_epoch={f['last_epoch']} "
            f"best={f['best']!r} num_bad={f['num_bad_epochs']} cooldown={f['cooldown_counter']} "
            f"lr={f['optimizer_lrs']} progress={f['scheduler_progress_completed']}"
        )


# --------------------------------------------------------------------------------------------------
# scenarios


def make_plain(out: Path, epochs: int = 20) -> dict[str, Any]:
    """20 epochs uninterrupted; keep epoch=9, epoch=19 and last.ckpt."""
    folder = out / "plain"
    rec = Recorder()
    trainer, _ = fit(folder, epochs, rec=rec)
    vdir = folder / LOGGER_NAME / "version_0"
    steps_per_epoch = trainer.num_training_batches
    mid, end = epochs // 2 - 1, epochs - 1
    keep = {
        f"epoch={mid}-step={(mid + 1) * steps_per_epoch}.ckpt",
        f"epoch={end}-step={(end + 1) * steps_per_epoch}.ckpt",
        "last.ckpt",
    }
    prune(vdir, keep)
    shutil.copyfile(vdir / "metrics.csv", folder / "metrics.csv")

    rows = read_metrics(vdir / "metrics.csv")
    vals = val_rows(rows)
    lrs = lr_rows(rows)
    facts = [ckpt_facts(vdir / "checkpoints" / name, folder) for name in sorted(keep)]
    by_epoch = {f["epoch"]: f for f in facts if not f["file"].endswith("last.ckpt")}
    last = next(f for f in facts if f["file"].endswith("last.ckpt"))

    # FORMATS.md section 2 facts, observed on these files
    assert [e for e, _, _ in vals] == list(range(epochs)), vals
    assert len(lrs) == epochs and [s for s, _ in lrs] == [e * steps_per_epoch for e in range(epochs)], lrs
    for e, f in by_epoch.items():
        assert f["global_step"] == (e + 1) * steps_per_epoch, f
        # saved BEFORE epoch e's plateau step: e steps taken (epochs 0..e-1), best ignores epoch e's val_loss
        assert f["last_epoch"] == e == f["scheduler_progress_completed"], f
        used, state = torch_replay([v for _, _, v in vals[:e]])
        assert same_state(state, {**f, "_last_lr": f["_last_lr"]}), (state, f)
        assert f["optimizer_lrs"] == f["_last_lr"] == state["_last_lr"], f
        assert f["optimizer_lrs"][0] == lrs[e][1], (f, lrs[e])  # = the lr logged at epoch e's start
    assert {k: v for k, v in last.items() if k != "file"} == {
        k: v for k, v in by_epoch[end].items() if k != "file"
    }, "last.ckpt duplicates the latest epoch checkpoint"
    # the lr row logged at each epoch start is the lr used during that epoch = a torch replay of val_loss
    used, _ = torch_replay([v for _, _, v in vals])
    assert [lr for _, lr in lrs] == used, (lrs, used)
    lr_changes = changes([lr for _, lr in lrs])  # rows are epochs 0..epochs-1
    assert len(lr_changes) >= 2, f"val_loss must plateau so that the lr is reduced: {lr_changes}"
    show("plain", facts)
    truth = {
        "scenario": "plain",
        "description": f"{epochs} epochs uninterrupted; interval='epoch'. A checkpoint of epoch E was saved "
        "before "
        "epoch E's plateau step: last_epoch == E (steps for epochs 0..E-1), best ignores E's val_loss.",
        "versions": VERSIONS,
        "max_epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "scheduler": {
            **SCHED,
            "threshold": 1e-4,
            "threshold_mode": "rel",
            "interval": "epoch",
            "frequency": 1,
            "monitor": "val_loss",
            "strict": True,
        },
        "initial_lr": LR,
        "metrics_csv": "metrics.csv",
        "lightning_metrics_csv": f"{LOGGER_NAME}/version_0/metrics.csv",
        "log": "metrics.csv",
        "val_rows": len(vals),
        "lr_rows": len(lrs),
        "logged_lr_changes_at_epochs": lr_changes,
        "checkpoints": facts,
    }
    last = rec.steps[-1]
    assert last["lr"][0] < last["lr_before"][0], "the last epoch's step cuts the lr (a cut no file holds)"
    write_truth(folder, truth, rec, {f["file"] for f in facts})
    return truth


def make_resumed(out: Path, first: int = 12, total: int = 24) -> dict[str, Any]:
    """Run 1: epochs 0..first-1; run 2: fit(ckpt_path=epoch=first-1 ckpt) to ``total`` epochs (version_1)."""
    folder = out / "resumed"
    rec = Recorder()
    t1, _ = fit(folder, first, rec=rec)
    spe = t1.num_training_batches
    v0, v1 = folder / LOGGER_NAME / "version_0", folder / LOGGER_NAME / "version_1"
    src_epoch = first - 1
    src = v0 / "checkpoints" / f"epoch={src_epoch}-step={first * spe}.ckpt"
    assert src.is_file(), src
    t2, _ = fit(folder, total, ckpt_path=src, rec=rec)
    assert t2.logger.version == 1, t2.logger.version

    mid2 = (first + total) // 2 - 1
    keep0 = {src.name}
    keep1 = {
        f"epoch={first}-step={(first + 1) * spe}.ckpt",
        f"epoch={mid2}-step={(mid2 + 1) * spe}.ckpt",
        f"epoch={total - 1}-step={total * spe}.ckpt",
        "last.ckpt",
    }
    prune(v0, keep0)
    prune(v1, keep1)

    rows0, rows1 = read_metrics(v0 / "metrics.csv"), read_metrics(v1 / "metrics.csv")
    vals0, vals1 = val_rows(rows0), val_rows(rows1)
    lrs0, lrs1 = lr_rows(rows0), lr_rows(rows1)
    facts = [ckpt_facts(v0 / "checkpoints" / n, folder) for n in sorted(keep0)]
    facts += [ckpt_facts(v1 / "checkpoints" / n, folder) for n in sorted(keep1)]
    src_facts = facts[0]

    assert [e for e, _, _ in vals0] == list(range(first)), vals0
    assert src_facts["epoch"] == src_epoch and src_facts["last_epoch"] == src_epoch, src_facts
    # run 2 starts with epoch `first` (the checkpoint's epoch is not retrained nor re-validated)
    assert [e for e, _, _ in vals1] == list(range(first, total)), vals1
    assert lrs1[0][0] == first * spe, lrs1  # version_1's first row: the lr row at the resumed step
    # the checkpoint epoch's val_loss is never fed to the scheduler: last_epoch == epoch - 1 from then on
    run2 = [f for f in facts[1:] if not f["file"].endswith("last.ckpt")]
    for f in run2:
        assert f["last_epoch"] == f["epoch"] - 1, f
        assert f["global_step"] == (f["epoch"] + 1) * spe, f
        values = [v for _, _, v in vals0[:src_epoch]] + [v for e, _, v in vals1 if e < f["epoch"]]
        _, state = torch_replay(values)
        assert same_state(state, f), (state, f)
        _, uninterrupted = torch_replay([v for _, _, v in vals0] + [v for e, _, v in vals1 if e < f["epoch"]])
        f["uninterrupted_replay_last_epoch"] = uninterrupted["last_epoch"]
    # the lr each run-2 epoch used = replay of all val rows except the skipped one
    skipped = [v for _, _, v in vals0[:src_epoch]] + [v for _, _, v in vals1]
    used, _ = torch_replay(skipped)
    logged = [lr for _, lr in lrs0] + [lr for _, lr in lrs1]
    assert logged[:first] == used[:first] and logged[first:] == used[src_epoch:], (logged, used)
    all_vals = [v for _, _, v in vals0] + [v for _, _, v in vals1]
    would, _ = torch_replay(all_vals)
    diverges = next((i for i, (a, b) in enumerate(zip(logged, would, strict=True)) if a != b), None)
    show("resumed", facts)
    truth = {
        "scenario": "resumed",
        "description": f"Run 1 (version_0) trains epochs 0..{src_epoch}; run 2 (version_1) is "
        f"Trainer(max_epochs={total}).fit(model, ckpt_path='{src.name}') and trains epochs "
        f"{first}..{total - 1}. Lightning does not step the plateau scheduler for the checkpoint's "
        f"epoch {src_epoch} when restarting, so epoch {src_epoch}'s val_loss is never fed to "
        "it: every run-2 checkpoint has last_epoch == epoch - 1 (an uninterrupted run: == epoch).",
        "versions": VERSIONS,
        "max_epochs": [first, total],
        "steps_per_epoch": spe,
        "scheduler": {
            **SCHED,
            "threshold": 1e-4,
            "threshold_mode": "rel",
            "interval": "epoch",
            "frequency": 1,
            "monitor": "val_loss",
            "strict": True,
        },
        "initial_lr": LR,
        "resume_from": src_facts["file"],
        "resume_epoch": src_epoch,
        "skipped_step_val_loss_epoch": src_epoch,
        "metrics_csv": [f"{LOGGER_NAME}/version_0/metrics.csv", f"{LOGGER_NAME}/version_1/metrics.csv"],
        "log": [f"{LOGGER_NAME}/version_0/metrics.csv", f"{LOGGER_NAME}/version_1/metrics.csv"],
        "val_rows": [len(vals0), len(vals1)],
        "val_epochs": [[vals0[0][0], vals0[-1][0]], [vals1[0][0], vals1[-1][0]]],
        "lr_rows": [len(lrs0), len(lrs1)],
        "logged_lr_changes_at_epochs": changes(logged),  # rows are epochs 0..total-1
        "uninterrupted_replay_lr_changes_at_epochs": changes(would),
        "first_epoch_where_lr_differs_from_uninterrupted_replay": diverges,
        "checkpoints": facts,
    }
    write_truth(folder, truth, rec, {f["file"] for f in facts})
    return truth


def make_step_interval(out: Path, epochs: int = 12, frequency: int = 4) -> dict[str, Any]:
    """interval='step', frequency=4: two plateau steps per 8-batch epoch, one validation per epoch."""
    folder = out / "step_interval"
    kwargs = dict(interval="step", frequency=frequency, strict=False)

    # With strict=True this configuration crashes at the first step: no validation has run yet.
    probe = out / ".probe_step_interval"
    try:
        fit(probe, 1, dict(kwargs, strict=True))
    except MisconfigurationException as exc:
        crash = str(exc).splitlines()[0]
    else:
        raise AssertionError("interval='step' with strict=True should crash before the first validation")
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    assert "ReduceLROnPlateau conditioned on metric val_loss which is not available" in crash, crash

    rec = Recorder()
    trainer, caught = fit(folder, epochs, kwargs, rec=rec)
    spe = trainer.num_training_batches
    per_epoch = spe // frequency
    missing = [w for w in caught if "which is not available but strict is set to `False`" in w]
    vdir = folder / LOGGER_NAME / "version_0"
    keep = {
        f"epoch={e}-step={(e + 1) * spe}.ckpt" for e in (epochs // 2 - 1, epochs - 1)
    }  # last.ckpt: a duplicate
    prune(vdir, keep)
    shutil.copyfile(vdir / "metrics.csv", folder / "metrics.csv")
    rows = read_metrics(vdir / "metrics.csv")
    vals, lrs = val_rows(rows), lr_rows(rows)
    facts = [ckpt_facts(vdir / "checkpoints" / n, folder) for n in sorted(keep)]
    assert [e for e, _, _ in vals] == list(range(epochs)), vals
    assert len(missing) == per_epoch - 1, (
        caught
    )  # only the steps before the very first validation are skipped
    # The real step sequence: val_loss of epoch i is read by the step right after that validation (last batch
    # of epoch i) and re-read, stale, by the per_epoch-1 steps of epoch i+1 before its validation.
    steps = [v for _, _, v in vals for _ in range(per_epoch)]
    for f in facts:
        e = f["epoch"]
        # With val_check_interval=1.0 ModelCheckpoint saves at on_train_epoch_end, i.e. AFTER the plateau step
        # that follows epoch e's validation (step-interval plateau schedulers step inside the batch loop).
        assert f["last_epoch"] == per_epoch * e + 1 == f["scheduler_progress_completed"], f
        _, state = torch_replay(steps[: per_epoch * e + 1])
        assert same_state(state, f), (state, f)
        assert f["optimizer_lrs"] == state["_last_lr"], (f, state)
    used, _ = torch_replay(steps)
    # the epoch-start lr row = the lr before epoch e's first step = after per_epoch*(e-1)+1 steps
    assert [lr for _, lr in lrs] == [used[0]] + [used[per_epoch * (e - 1) + 1] for e in range(1, epochs)], (
        lrs,
        used,
    )
    once, _ = torch_replay([v for _, _, v in vals])
    show("step_interval", facts)
    truth = {
        "scenario": "step_interval",
        "description": f"interval='step', frequency={frequency} with {spe} batches per epoch and one "
        "validation at "
        f"each epoch end: {per_epoch} plateau steps per val_loss row. The first step (epoch 0, batch "
        f"{frequency}) came before any validation and was skipped (strict=False, RuntimeWarning); "
        "every later step between validations re-read the stale val_loss, so each val_loss is "
        f"stepped {per_epoch} times (once right after its validation, then {per_epoch - 1} more "
        "stale time(s) in the next epoch). With val_check_interval=1.0 ModelCheckpoint saves at "
        "train-epoch end, AFTER the step that follows epoch E's validation: a checkpoint of "
        f"epoch E has last_epoch == {per_epoch}*E + 1 (rows 0..E-1 stepped {per_epoch} times, "
        "row E once). With strict=True the same run crashes at that first step.",
        "versions": VERSIONS,
        "max_epochs": epochs,
        "steps_per_epoch": spe,
        "scheduler": {
            **SCHED,
            "threshold": 1e-4,
            "threshold_mode": "rel",
            "interval": "step",
            "frequency": frequency,
            "monitor": "val_loss",
            "strict": False,
        },
        "initial_lr": LR,
        "steps_per_val_row": per_epoch,
        "checkpoint_last_epoch_formula": f"{per_epoch}*epoch + 1",
        "skipped_steps_before_first_validation": len(missing),
        "strict_true_error": crash,
        "metrics_csv": "metrics.csv",
        "log": "metrics.csv",
        "val_rows": len(vals),
        "lr_rows": len(lrs),
        "logged_lr_changes_at_epochs": changes([lr for _, lr in lrs]),
        "once_per_row_replay_lr_changes_at_epochs": changes(once),
        "checkpoints": facts,
    }
    write_truth(folder, truth, rec, {f["file"] for f in facts})
    return truth


def make_missing_monitor(out: Path, epochs: int = 16) -> dict[str, Any]:
    """monitor='val_loss_typo', strict=False: every plateau step is skipped with a RuntimeWarning."""
    folder = out / "missing_monitor_nonstrict"
    rec = Recorder()
    trainer, caught = fit(folder, epochs, dict(monitor="val_loss_typo", strict=False), rec=rec)
    spe = trainer.num_training_batches
    missing = [w for w in caught if "conditioned on metric val_loss_typo which is not available" in w]
    vdir = folder / LOGGER_NAME / "version_0"
    keep = {f"epoch={epochs - 1}-step={epochs * spe}.ckpt"}  # last.ckpt: a duplicate
    prune(vdir, keep)
    shutil.copyfile(vdir / "metrics.csv", folder / "metrics.csv")
    rows = read_metrics(vdir / "metrics.csv")
    vals, lrs = val_rows(rows), lr_rows(rows)
    facts = [ckpt_facts(vdir / "checkpoints" / n, folder) for n in sorted(keep)]
    assert len(missing) == epochs, caught
    assert "val_loss_typo" not in rows[0], list(rows[0])
    assert [e for e, _, _ in vals] == list(range(epochs)), vals
    assert {lr for _, lr in lrs} == {LR}, lrs
    for f in facts:
        assert f["last_epoch"] == 0 and f["best"] == math.inf and f["num_bad_epochs"] == 0, f
        assert f["scheduler_progress_completed"] == 0 and f["optimizer_lrs"] == [LR], f
    would, _ = torch_replay([v for _, _, v in vals])
    show("missing_monitor_nonstrict", facts)
    truth = {
        "scenario": "missing_monitor_nonstrict",
        "description": "monitor='val_loss_typo' (never logged) with strict=False: at every epoch end "
        "Lightning "
        "warns (RuntimeWarning) and skips the plateau step, so last_epoch stays 0, best stays inf "
        f"and the lr stays {LR} while the epochs advance.",
        "versions": VERSIONS,
        "max_epochs": epochs,
        "steps_per_epoch": spe,
        "scheduler": {
            **SCHED,
            "threshold": 1e-4,
            "threshold_mode": "rel",
            "interval": "epoch",
            "frequency": 1,
            "monitor": "val_loss_typo",
            "strict": False,
        },
        "initial_lr": LR,
        "skipped_steps": len(missing),
        "warning": missing[0],
        "metrics_csv": "metrics.csv",
        "log": "metrics.csv",
        "metrics_csv_columns": list(rows[0]),
        "val_rows": len(vals),
        "lr_rows": len(lrs),
        "lr_changes_if_val_loss_were_monitored": changes(would),
        "checkpoints": facts,
    }
    write_truth(folder, truth, rec, {f["file"] for f in facts})
    return truth


MAKERS = {
    "plain": make_plain,
    "resumed": make_resumed,
    "step_interval": make_step_interval,
    "missing_monitor_nonstrict": make_missing_monitor,
}


def quiet() -> None:
    """Silence Lightning's info logs and the warnings this tiny CPU setup triggers by design."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*conditioned on metric .* which is not available.*")


def main(argv: list[str]) -> None:
    """Write the scenarios into OUTDIR (default: ``lightning/`` next to this script) and print their facts."""
    args = argv[1:]
    only: list[str] = []
    if "--only" in args:
        i = args.index("--only")
        only, args = args[i + 1 :], args[:i]
    unknown = [s for s in only if s not in MAKERS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; choose from {list(MAKERS)}")
    out = Path(args[0]).resolve() if args else Path(__file__).resolve().parent / "lightning"
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    quiet()
    t0 = time.perf_counter()
    for name in only or list(MAKERS):
        shutil.rmtree(
            out / name, ignore_errors=True
        )  # a fresh CSVLogger dir: version_0 (and version_1) again
        MAKERS[name](out)
    print(f"done in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main(sys.argv)
