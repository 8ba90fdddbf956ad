"""Regenerate the TensorBoard fixtures in ``sample_checkpoints/tensorboard/`` from real training runs.

Usage: ``python sample_checkpoints/make_tensorboard.py [OUTDIR]`` (default: ``tensorboard/`` next to it).

Each scenario trains the 8-16-1 ReLU MLP of ``make_samples.py`` on its seeded synthetic regression set
with Adam and a real ``torch.optim.lr_scheduler.ReduceLROnPlateau`` stepped once per epoch, and logs
with ``torch.utils.tensorboard.SummaryWriter.add_scalar`` at ``step = epoch`` (1-based): the training
loss, the validation loss the scheduler was stepped with, and the lr used *during* the epoch (read
before ``scheduler.step``). Checkpoints are plain ``torch.save`` dicts
(``epoch, model, optimizer, scheduler, val_loss``) saved after that epoch's ``scheduler.step``.

The validation loss is the sample-weighted mean of per-batch ``loss.item()`` values, a Python float
(float64) that is in general *not* a float32 value, while TensorBoard stores every scalar as float32:
the logged value is the stepped value rounded to float32, and the checkpoint's ``best`` (float64)
equals no logged value exactly, only after rounding to float32. The lr is float64 too (0.005 is read
back as 0.004999999888241291). The generator checks that a real scheduler stepped with the float32
values takes the same decisions as the real run.

Scenarios (``<name>/run/`` holds the event files, ``<name>/truth.json`` what the generator checked):

* ``plain/``: one run, 25 epochs, tags ``val_loss``, ``lr``, ``train_loss``; ``ckpt_epoch20.pt``.
* ``crash_purge/``: run A logs epochs 1..15 and saves ``ckpt_epoch12.pt``, then dies. Run B restores
  model, optimizer and scheduler from it but not the RNG (its data order restarts from the seed, as a
  script that calls ``torch.manual_seed(0)`` at start does), opens ``SummaryWriter(run,
  purge_step=13)`` and logs 13..25, saving ``ckpt_epoch20.pt``. Two event files in one directory;
  TensorBoard's ``EventAccumulator`` purges run A's steps 13..15 (they differ from run B's), a raw
  reader sees them twice.
* ``slash_tags/``: one run like ``plain`` (another data seed) with the tags ``Loss/train``,
  ``Loss/val`` and ``LR``; ``ckpt_epoch20.pt``.

Event file names embed time, host and pid; the generator renames each file to a fixed name
(``events.out.tfevents.<fixed time>.fixture.<run>.0``, still sorted in writing order, which is the
order TensorBoard loads them in). The wall times inside the events differ between runs.

``truth.json`` also holds ``live``: what the real scheduler did while the runs trained, recorded from the
live objects (``_truth.py``: every step's state, the lr each logged epoch used, where each checkpoint was
saved; ``precision`` is ``float32``, as the event files store scalars). The tests judge the tool against
it, for the committed fixtures and a fresh regeneration alike; nothing compares two runs' numbers (a
rerun on another CPU trains to other last bits).
"""

from __future__ import annotations

import _pin_cpu  # noqa: F401 - must run before torch loads (see _pin_cpu.py)

# isort: split

import copy
import shutil
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.tensorboard import SummaryWriter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _truth import Recorder, dumps
from make_samples import BATCH_SIZE, N_TRAIN, N_VAL, Data, make_data, make_model

VAL_BATCH = 32
EPOCHS = 25
#: scheduler.state_dict() keys copied to truth.json (mode_worse is inf: not JSON)
SCHEDULER_KEYS = ("factor", "patience", "cooldown", "threshold", "threshold_mode", "mode", "eps", "min_lrs",
                  "default_min_lr", "last_epoch", "_last_lr", "best", "num_bad_epochs", "cooldown_counter")
FIXED_TIMES = (1700000000, 1700003600)  # file-name times of run A and run B (sorted = writing order)


def f32(x: float) -> float:
    """``x`` rounded to float32 and widened back, as TensorBoard stores and reads a scalar."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


@dataclass
class Run:
    """Model, optimizer, scheduler and the per-run shuffle generator of one training process."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: ReduceLROnPlateau
    shuffle: torch.Generator
    logged: dict[str, dict[int, float]] = field(default_factory=lambda: {"train": {}, "val": {}, "lr": {}})


CONFIG = dict(lr=5e-3, model_seed=0, noise=1.0, shuffle_seed=0)
SCHED = dict(mode="min", factor=0.5, patience=2, cooldown=1)


def new_run(cfg: dict[str, Any]) -> Run:
    """A fresh process: model from its seed, Adam, the scheduler, and the data-order generator, seeded."""
    model = make_model(cfg["model_seed"])
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    shuffle = torch.Generator().manual_seed(cfg["shuffle_seed"])
    return Run(model, optimizer, ReduceLROnPlateau(optimizer, **SCHED), shuffle)


def train_epoch(run: Run, data: Data) -> float:
    """One epoch of mini-batch Adam; the data order comes from the run's generator (not saved on resume)."""
    run.model.train()
    perm = torch.randperm(N_TRAIN, generator=run.shuffle)
    total = 0.0
    for start in range(0, N_TRAIN, BATCH_SIZE):
        idx = perm[start : start + BATCH_SIZE]
        loss = nn.functional.mse_loss(run.model(data.x_train[idx]), data.y_train[idx])
        run.optimizer.zero_grad()
        loss.backward()
        run.optimizer.step()
        total += loss.item() * len(idx)
    return total / N_TRAIN


def evaluate(run: Run, data: Data) -> float:
    """The validation MSE as the sample-weighted mean of per-batch ``loss.item()``: float64, not float32."""
    run.model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, N_VAL, VAL_BATCH):
            x, y = data.x_val[start : start + VAL_BATCH], data.y_val[start : start + VAL_BATCH]
            total += nn.functional.mse_loss(run.model(x), y).item() * len(x)
    return total / N_VAL


def checkpoint(run: Run, epoch: int, val_loss: float) -> dict[str, Any]:
    """The plain-torch checkpoint layout, saved after the epoch's ``scheduler.step``."""
    return {
        "epoch": epoch,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "val_loss": val_loss,
    }


def train(
    run: Run, data: Data, writer: SummaryWriter, tags: dict[str, str], first: int, last: int,
    save: dict[int, Path], rec: Recorder,
) -> None:
    """Train epochs ``first..last``, log three scalars at ``step=epoch``, save at the epochs in ``save``.

    ``rec`` records each row and every step of ``run.scheduler`` as they happen.
    """
    rec.watch(run.scheduler)
    for epoch in range(first, last + 1):
        lr = run.optimizer.param_groups[0]["lr"]  # the lr used during this epoch
        train_loss = train_epoch(run, data)
        val_loss = evaluate(run, data)
        rec.row(epoch, [float(g["lr"]) for g in run.optimizer.param_groups])
        run.scheduler.step(val_loss)
        writer.add_scalar(tags["train"], train_loss, epoch)
        writer.add_scalar(tags["val"], val_loss, epoch)
        writer.add_scalar(tags["lr"], lr, epoch)
        writer.flush()  # a crash loses what is still queued; these runs flush every epoch
        for key, value in (("train", train_loss), ("val", val_loss), ("lr", lr)):
            run.logged[key][epoch] = value
        if epoch in save:
            torch.save(checkpoint(run, epoch, val_loss), save[epoch])
            rec.saved(save[epoch].name)


def open_writer(run_dir: Path, **kwargs: Any) -> tuple[SummaryWriter, set[Path]]:
    """A SummaryWriter on ``run_dir`` and the event files that existed before it (to find the new one)."""
    before = set(run_dir.glob("events.out.tfevents.*")) if run_dir.exists() else set()
    return SummaryWriter(log_dir=str(run_dir), **kwargs), before


def close_and_rename(writer: SummaryWriter, run_dir: Path, before: set[Path], index: int) -> str:
    """Close the writer and give its event file a fixed name (TensorBoard only needs the prefix)."""
    writer.close()
    (new,) = set(run_dir.glob("events.out.tfevents.*")) - before
    name = f"events.out.tfevents.{FIXED_TIMES[index]}.fixture.{index + 1}.0"
    new.rename(run_dir / name)
    return name


def accumulated(path: Path, tags: dict[str, str]) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard shows: ``EventAccumulator`` (all scalars kept, orphaned data purged) per tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    return {key: [(e.step, e.value) for e in acc.Scalars(tag)] for key, tag in tags.items()}


def raw_scalars(path: Path, tag: str) -> list[tuple[int, float]]:
    """Every ``(step, value)`` event of ``tag`` in one event file, read record by record (no purging).

    The legacy loader yields the events as written (``simple_value``); the newer one migrates them to tensors.
    """
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    events = LegacyEventFileLoader(str(path)).Load()
    return [(ev.step, v.simple_value) for ev in events for v in ev.summary.value if v.tag == tag]


def torch_replay(values: list[float], lr: float, upto: int) -> tuple[dict[str, Any], list[float]]:
    """A real ReduceLROnPlateau stepped with ``values[:upto]``: its state, and the lr used in every epoch."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    sched = ReduceLROnPlateau(opt, **SCHED)
    used, state = [], None
    for i, v in enumerate(values):
        used.append(opt.param_groups[0]["lr"])
        sched.step(v)
        if i + 1 == upto:
            state = copy.deepcopy(sched.state_dict())
    return state, used


def check(
    name: str, run_dir: Path, tags: dict[str, str], stepped: dict[str, dict[int, float]],
    ckpts: dict[int, Path], lr0: float,
) -> dict[str, Any]:
    """Assert what TensorBoard reads back and the float32 facts; return the checked truth."""
    shown = accumulated(run_dir, tags)
    steps = list(range(1, EPOCHS + 1))
    for key in tags:
        assert [s for s, _ in shown[key]] == steps, (name, key, shown[key])
        assert [v for _, v in shown[key]] == [f32(stepped[key][s]) for s in steps], (name, key)
    val64 = [stepped["val"][s] for s in steps]
    val32 = [v for _, v in shown["val"]]
    lr32 = [v for _, v in shown["lr"]]
    out_ckpts = {}
    for epoch, path in ckpts.items():
        ck = torch.load(path, weights_only=True)
        sd = ck["scheduler"]
        assert ck["epoch"] == epoch and sd["last_epoch"] == epoch, (name, epoch, sd["last_epoch"])
        # the scheduler saw float64 values; a replay over the float32 ones takes the same decisions
        exact, used64 = torch_replay(val64, lr0, epoch)
        rounded, used32 = torch_replay(val32, lr0, epoch)
        for key in ("last_epoch", "best", "num_bad_epochs", "cooldown_counter", "_last_lr"):
            assert exact[key] == sd[key], (name, key, exact[key], sd[key])
        for key in ("last_epoch", "num_bad_epochs", "cooldown_counter", "_last_lr"):
            assert rounded[key] == sd[key], (name, key, rounded[key], sd[key])
        assert used32 == used64 and [f32(v) for v in used64] == lr32, (name, used32, used64)
        assert rounded["best"] == f32(sd["best"]), (rounded["best"], sd["best"])
        assert sd["best"] not in val32 and f32(sd["best"]) in val32, "no logged value equals the float64 best"
        assert ck["optimizer"]["param_groups"][0]["lr"] == sd["_last_lr"][0]
        out_ckpts[path.name] = {
            "epoch": epoch,
            "val_loss": ck["val_loss"],
            "scheduler": {k: sd[k] for k in SCHEDULER_KEYS},
            "best_float32": f32(sd["best"]),
            "optimizer_lrs": [g["lr"] for g in ck["optimizer"]["param_groups"]],
        }
    _, used = torch_replay(val64, lr0, EPOCHS)
    changes = [s for s, a, b in zip(steps[1:], used[:-1], used[1:], strict=True) if a != b]
    assert len(changes) >= 2, (name, changes)
    return {
        "tags": tags,
        "steps": steps,
        "val_loss": val32,
        "lr": lr32,
        "train_loss": [v for _, v in shown["train"]],
        "val_loss_stepped": val64,
        "lr_used": [stepped["lr"][s] for s in steps],
        "lr_change_steps": changes,
        "checkpoints": out_ckpts,
    }


def make_single(
    out: Path, name: str, data_seed: int, tags: dict[str, str], description: str
) -> dict[str, Any]:
    """One uninterrupted 25-epoch run with a checkpoint at epoch 20."""
    dest = out / name
    run_dir = dest / "run"
    data = make_data(data_seed, CONFIG["noise"])
    run = new_run(CONFIG)
    writer, before = open_writer(run_dir)
    ckpts = {20: dest / "ckpt_epoch20.pt"}
    rec = Recorder(precision="float32")
    train(run, data, writer, tags, 1, EPOCHS, ckpts, rec)
    files = [close_and_rename(writer, run_dir, before, 0)]
    truth = {"scenario": name, "description": description, "data_seed": data_seed, "config": CONFIG,
             "scheduler_kwargs": SCHED, "event_files": files, "log": "run"}
    truth |= check(name, run_dir, tags, run.logged, ckpts, CONFIG["lr"])
    truth["live"] = rec.as_json()
    return truth


def make_crash_purge(out: Path) -> dict[str, Any]:
    """Run A (1..15, ckpt 12) crashes; run B resumes from ckpt 12 with ``purge_step=13`` and logs 13..25."""
    name, data_seed = "crash_purge", 1
    dest = out / name
    run_dir = dest / "run"
    tags = {"train": "train_loss", "val": "val_loss", "lr": "lr"}
    data = make_data(data_seed, CONFIG["noise"])

    run_a = new_run(CONFIG)
    rec = Recorder(precision="float32")
    writer, before = open_writer(run_dir)
    train(run_a, data, writer, tags, 1, 15, {12: dest / "ckpt_epoch12.pt"}, rec)
    files = [close_and_rename(writer, run_dir, before, 0)]  # the crash: nothing after epoch 15 was written

    run_b = new_run(CONFIG)  # a new process: same seeds, so the data order restarts instead of continuing
    ck = torch.load(dest / "ckpt_epoch12.pt", weights_only=True)
    run_b.model.load_state_dict(ck["model"])
    run_b.optimizer.load_state_dict(ck["optimizer"])
    run_b.scheduler.load_state_dict(ck["scheduler"])
    writer, before = open_writer(run_dir, purge_step=ck["epoch"] + 1)
    train(run_b, data, writer, tags, 13, EPOCHS, {20: dest / "ckpt_epoch20.pt"}, rec)
    files.append(close_and_rename(writer, run_dir, before, 1))

    surviving = {k: {**{e: v for e, v in run_a.logged[k].items() if e <= 12}, **run_b.logged[k]}
                 for k in tags}
    description = ("run A logs 1..15 and saves ckpt_epoch12.pt, then crashes; run B resumes from it (model, "
                   "optimizer, scheduler; not the RNG) with SummaryWriter(purge_step=13) and logs 13..25, "
                   "saving ckpt_epoch20.pt")
    truth = {"scenario": name, "description": description, "data_seed": data_seed, "config": CONFIG,
             "scheduler_kwargs": SCHED, "event_files": files, "log": "run"}
    ckpts = {12: dest / "ckpt_epoch12.pt", 20: dest / "ckpt_epoch20.pt"}
    truth |= check(name, run_dir, tags, surviving, ckpts, CONFIG["lr"])

    # What a raw reader sees: run A's 13..15 and run B's 13..25 both; they differ.
    raw = [raw_scalars(run_dir / f, "val_loss") for f in files]
    assert [s for s, _ in raw[0]] == list(range(1, 16)) and [s for s, _ in raw[1]] == list(range(13, 26))
    purged = [(s, v) for s, v in raw[0] if s >= 13]
    assert all(v != truth["val_loss"][s - 1] for s, v in purged), purged
    assert [v for _, v in raw[0][:12]] == truth["val_loss"][:12]
    truth["purged"] = {
        "steps": [s for s, _ in purged],
        "val_loss": [v for _, v in purged],
        "lr": [v for s, v in raw_scalars(run_dir / files[0], "lr") if s >= 13],
        "train_loss": [v for s, v in raw_scalars(run_dir / files[0], "train_loss") if s >= 13],
    }
    truth["raw_val_loss_events"] = sum(len(r) for r in raw)
    truth["live"] = rec.as_json()
    return truth


def main(argv: list[str]) -> None:
    """Write every scenario into ``argv[1]`` (default: ``tensorboard/`` next to this script)."""
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent / "tensorboard"
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    for name in ("plain", "crash_purge", "slash_tags"):
        if (out / name).exists():
            shutil.rmtree(out / name)
    plain_tags = {"train": "train_loss", "val": "val_loss", "lr": "lr"}
    slash_tags = {"train": "Loss/train", "val": "Loss/val", "lr": "LR"}
    truths = {
        "plain": make_single(out, "plain", 0, plain_tags, "one uninterrupted 25-epoch run; tags val_loss, "
                             "lr, train_loss; ckpt_epoch20.pt"),
        "crash_purge": make_crash_purge(out),
        "slash_tags": make_single(out, "slash_tags", 2, slash_tags, "one uninterrupted 25-epoch run; tags "
                                  "Loss/val, LR, Loss/train; ckpt_epoch20.pt"),
    }
    for name, truth in truths.items():
        (out / name / "truth.json").write_text(dumps(truth), encoding="ascii")
        print(f"{name}/: event files {truth['event_files']}; lr changes at steps {truth['lr_change_steps']}")
        for ck, info in truth["checkpoints"].items():
            s = info["scheduler"]
            print(f"  {ck}: last_epoch={s['last_epoch']} best={s['best']!r} "
                  f"(float32 {info['best_float32']!r}) num_bad={s['num_bad_epochs']} "
                  f"cooldown={s['cooldown_counter']} lr={info['optimizer_lrs']}")
        if "purged" in truth:
            print(f"  purged by TensorBoard: steps {truth['purged']['steps']} of {truth['event_files'][0]}")


if __name__ == "__main__":
    main(sys.argv)
