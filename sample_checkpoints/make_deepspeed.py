"""Regenerate the DeepSpeed fixtures in ``sample_checkpoints/deepspeed/`` from real DeepSpeed runs on CPU.

Usage: ``python sample_checkpoints/make_deepspeed.py [OUTDIR]`` (default: ``deepspeed/`` beside this file).

One process (``DS_ACCELERATOR=cpu``, gloo, world size 1) trains the 8-16-1 ReLU MLP of ``make_samples.py``
(client SGD, lr 0.05, MSE, batch 16, 8 optimizer steps per epoch, 10 epochs) through a real
``deepspeed.initialize`` engine (ZeRO stage 0): ``engine(x)``, ``engine.backward(loss)``, ``engine.step()``;
``engine.save_checkpoint(run)`` writes ``run/global_step<N>/mp_rank_00_model_states.pt`` and ``run/latest``,
copied out unchanged. Each scenario also writes ``train_log.csv`` (``epoch,train_loss,val_loss,lr``, ``repr``
floats, lr = the lr the epoch's first step used), the log its author would keep.

Scenarios:

* ``batch_size_metric/``: the ``ReduceLROnPlateau(patience=4, factor=0.5, min_lr=1e-7)`` is passed to
  ``deepspeed.initialize(lr_scheduler=...)``. ``engine.step()`` calls ``lr_scheduler.step()``, which raises
  ``TypeError`` for the missing metric, and DeepSpeed calls ``step(train_batch_size)``: 80 plateau steps on
  the value 16, ``best == 16.0``, ``last_epoch == global_steps``, the lr halved every 5 optimizer steps (15
  cuts, 0.05 -> 1.5e-6). The validation loss is never seen. Checkpoints: ``global_step40`` (epoch 5) and
  ``global_step80`` (``latest``). The live truth has one row per optimizer step (what the scheduler read).
  ``min_lr`` is set below the lr the 80 steps reach: the checkpoint has no initial lr (a client optimizer's
  lr is in no ``ds_config``), so the lrs before it are the saved lr scaled back through the cuts, which a
  floor reached on the way would make unknowable.
* ``plateau_outside/``: the fix: the scheduler stays out of the engine; the loop calls
  ``scheduler.step(val_loss)`` once per epoch and saves it with
  ``engine.save_checkpoint(run, client_state={"plateau": scheduler.state_dict(), "epoch": epoch})`` (its
  ``lr_scheduler`` key is None). One row per epoch; a clean run.

DeepSpeed's CPU accelerator JIT-compiles its shared-memory all-reduce op (``deepspeed_shm_comm``, g++ + ninja,
~90 s here, cached in ``~/.cache/torch_extensions``; a killed build leaves a ``lock`` file there that hangs
every later build). One process has no peer to share memory with, so the generator marks that op incompatible
in DeepSpeed's own ``deepspeed.ops.__compatible_ops__`` before the engine starts (DeepSpeed then uses plain
gloo; its engine, scheduler and checkpoint code run unmodified), and points ``TORCH_EXTENSIONS_DIR`` at a
private temporary directory, so that no JIT build can wait on a stale lock in the user's cache.
``PF_DEEPSPEED_SHM_OP=1`` keeps the op (built in that private directory: slow). Facts asserted on the written
files (read back with ``torch.load(weights_only=True)``) are listed in ``check_batch_size_metric`` /
``check_outside``.

Determinism: ``_pin_cpu.py`` before torch, one thread, seeded model and shuffles.
"""

from __future__ import annotations

import _pin_cpu  # noqa: F401 - must run before torch loads (see _pin_cpu.py)

# isort: split

import csv
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.update(MASTER_ADDR="127.0.0.1", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _truth import Recorder, dumps  # noqa: E402
from make_samples import N_TRAIN, make_data, make_model  # noqa: E402

DATA = dict(data_seed=4, noise=1.0, model_seed=3)
LR = 0.05
BATCH = 16
EPOCHS = 10
STEPS_PER_EPOCH = N_TRAIN // BATCH
SCHEDULER = dict(mode="min", factor=0.5, patience=4, min_lr=1e-7)
DS_CONFIG = {
    "train_batch_size": BATCH,
    "train_micro_batch_size_per_gpu": BATCH,
    "gradient_accumulation_steps": 1,
    "steps_per_print": 10**9,
    "zero_optimization": {"stage": 0},
}
SAVE_AT_EPOCHS = (5, 10)
SCENARIOS: dict[str, str] = {
    "batch_size_metric": "the ReduceLROnPlateau passed to deepspeed.initialize: stepped with "
    "step(train_batch_size) on every optimizer step; best == 16.0, last_epoch == global_steps, lr cut every "
    "5 steps",
    "plateau_outside": "the ReduceLROnPlateau kept out of the engine, stepped once per epoch with val_loss "
    "and saved in client_state: a clean run",
}
SCHEDULER_KEYS = (
    "factor",
    "patience",
    "cooldown",
    "threshold",
    "threshold_mode",
    "mode",
    "eps",
    "min_lrs",
    "last_epoch",
    "_last_lr",
    "best",
    "num_bad_epochs",
    "cooldown_counter",
)


def prepare_deepspeed(extensions: Path) -> Any:
    """Import deepspeed with the shared-memory comm op off (one process); JIT builds go to ``extensions``."""
    # a private build cache: a lock left in ~/.cache/torch_extensions by a killed build cannot hang this run
    os.environ["TORCH_EXTENSIONS_DIR"] = str(extensions)
    import deepspeed
    import deepspeed.ops

    if os.environ.get("PF_DEEPSPEED_SHM_OP") != "1":
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    return deepspeed


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return nn.functional.mse_loss(model(x), y).item()


def train(ds: Any, work: Path, name: str) -> dict[str, Any]:
    """Train one scenario in ``work/name``; return the live record, the log rows and the saved tags."""
    inside = name == "batch_size_metric"
    data = make_data(DATA["data_seed"], DATA["noise"])
    model = make_model(DATA["model_seed"])
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **SCHEDULER)
    engine, ds_optimizer, _, ds_scheduler = ds.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler if inside else None, config=dict(DS_CONFIG)
    )
    assert ds_optimizer is optimizer and (ds_scheduler is scheduler) == inside
    rec = Recorder()
    rec.watch(scheduler)
    run = work / name
    rows: list[list[Any]] = []
    tags: list[str] = []
    for epoch in range(1, EPOCHS + 1):
        epoch_lr = float(optimizer.param_groups[0]["lr"])
        perm = torch.randperm(
            N_TRAIN, generator=torch.Generator().manual_seed(DATA["data_seed"] * 1000 + epoch)
        )
        engine.train()
        total = 0.0
        for start in range(0, N_TRAIN, BATCH):
            idx = perm[start : start + BATCH]
            if (
                inside
            ):  # every optimizer step is a plateau step: one live row each, with the lr it trained with
                rec.row(engine.global_steps + 1, [float(g["lr"]) for g in optimizer.param_groups])
            loss = nn.functional.mse_loss(engine(data.x_train[idx]), data.y_train[idx])
            engine.backward(loss)
            engine.step()
            total += loss.item() * len(idx)
        val_loss = evaluate(engine.module, data.x_val, data.y_val)
        rows.append([epoch, total / N_TRAIN, val_loss, epoch_lr])
        if not inside:
            rec.row(epoch, [epoch_lr])
            scheduler.step(val_loss)
        if epoch in SAVE_AT_EPOCHS:
            client = {} if inside else {"plateau": scheduler.state_dict(), "epoch": epoch}
            engine.save_checkpoint(str(run), client_state=client)
            tag = f"global_step{engine.global_steps}"
            rec.saved(tag)
            tags.append(tag)
    with open(run / "train_log.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["epoch", "train_loss", "val_loss", "lr"])
        w.writerows([e, repr(t), repr(v), repr(lr)] for e, t, v, lr in rows)
    return {"live": rec.as_json(), "tags": tags, "global_steps": engine.global_steps}


def refuses_weights_only(path: Path) -> bool:
    try:
        torch.load(path, weights_only=True)
    except Exception:  # torch raises UnpicklingError (or others) for disallowed globals
        return True
    return False


def _states(run: Path, tag: str) -> dict[str, Any]:
    files = sorted(p.name for p in (run / tag).iterdir())
    assert files == ["mp_rank_00_model_states.pt"], files
    import zipfile

    with zipfile.ZipFile(run / tag / files[0]) as z:
        assert {n.split("/", 1)[0] for n in z.namelist()} == {"mp_rank_00_model_states"}
    return torch.load(run / tag / files[0], weights_only=True)


def check_batch_size_metric(run: Path, tags: list[str], rec: dict[str, Any]) -> dict[str, Any]:
    """Each checkpoint: best == train_batch_size, last_epoch == global_steps, the state a fresh scheduler
    stepped that many times with the batch size reaches (lr included), and the lr cut every patience+1
    steps."""
    out = {}
    for tag in tags:
        sd = _states(run, tag)
        sched = sd["lr_scheduler"]
        assert sd["ds_config"]["train_batch_size"] == BATCH and sd["skipped_steps"] == 0
        assert sched["best"] == float(BATCH) and sched["last_epoch"] == sd["global_steps"], sched
        p = nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=LR)
        replay = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **SCHEDULER)
        for _ in range(sd["global_steps"]):
            replay.step(BATCH)
        for key in ("last_epoch", "best", "num_bad_epochs", "cooldown_counter", "_last_lr"):
            assert replay.state_dict()[key] == sched[key], (key, replay.state_dict()[key], sched[key])
        assert [g["lr"] for g in sd["optimizer"]["param_groups"]] == sched["_last_lr"]
        out[tag] = {
            "global_steps": sd["global_steps"],
            "skipped_steps": sd["skipped_steps"],
            "ds_version": sd["ds_version"],
            "ds_config": sd["ds_config"],
            "scheduler": {k: sched[k] for k in SCHEDULER_KEYS},
            "optimizer_lrs": [g["lr"] for g in sd["optimizer"]["param_groups"]],
        }
    steps = rec["live"]["steps"]
    assert set(steps["metric"]) == {float(BATCH)} and len(steps["metric"]) == rec["global_steps"]
    lrs = [lr[0] for lr in steps["lr"]]
    cuts = [i + 1 for i in range(len(lrs)) if lrs[i] < (steps["lr_before"][i][0])]
    # the first step improves on inf, then patience + 1 bad steps per cut, every cut applied (no floor)
    period = SCHEDULER["patience"] + 1
    assert cuts == list(range(period + 1, rec["global_steps"] + 1, period)), cuts
    assert lrs[-1] == LR * SCHEDULER["factor"] ** len(cuts) and lrs[-1] > SCHEDULER["min_lr"], lrs[-1]
    return out


def check_outside(run: Path, tags: list[str], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each checkpoint: lr_scheduler None, the client state's plateau state = val_loss stepped once per
    epoch."""
    out = {}
    for tag in tags:
        sd = _states(run, tag)
        assert sd["lr_scheduler"] is None and set(sd) >= {"plateau", "epoch", "global_steps", "ds_config"}
        sched = sd["plateau"]
        assert sched["last_epoch"] == sd["epoch"] and sd["global_steps"] == sd["epoch"] * STEPS_PER_EPOCH
        p = nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=LR)
        replay = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **SCHEDULER)
        for r in rows[: sd["epoch"]]:
            replay.step(r["val_loss"])
        for key in ("last_epoch", "best", "num_bad_epochs", "cooldown_counter", "_last_lr"):
            assert replay.state_dict()[key] == sched[key], (key, replay.state_dict()[key], sched[key])
        out[tag] = {
            "epoch": sd["epoch"],
            "global_steps": sd["global_steps"],
            "ds_version": sd["ds_version"],
            "scheduler": {k: sched[k] for k in SCHEDULER_KEYS},
            "optimizer_lrs": [g["lr"] for g in sd["optimizer"]["param_groups"]],
        }
    return out


def read_rows(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        return [
            {"epoch": int(r["epoch"]), "val_loss": float(r["val_loss"]), "lr": float(r["lr"])}
            for r in csv.DictReader(f)
        ]


def main(argv: list[str]) -> None:
    """Train every scenario, copy the run directories to OUTDIR with truth.json, print a summary."""
    out = (Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent / "deepspeed").resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ["MASTER_PORT"] = str(_free_port())
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory(prefix="make_deepspeed_") as tmp:
        ds = prepare_deepspeed(Path(tmp) / "torch_extensions")
        import logging

        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        print(
            f"torch {torch.__version__}, deepspeed {ds.__version__}, "
            f"accelerator {os.environ['DS_ACCELERATOR']}"
        )
        for name, description in SCENARIOS.items():
            got = train(ds, Path(tmp), name)
            src, dest = Path(tmp) / name, out / name
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(src, dest)
            assert (dest / "latest").read_text() == got["tags"][-1]
            rows = read_rows(dest / "train_log.csv")
            if name == "batch_size_metric":
                checkpoints = check_batch_size_metric(dest, got["tags"], got)
            else:
                checkpoints = check_outside(dest, got["tags"], rows)
            truth = {
                "scenario": name,
                "description": description,
                "versions": {"torch": torch.__version__, "deepspeed": ds.__version__},
                "ds_config": DS_CONFIG,
                "setup": {
                    "optimizer": "SGD",
                    "lr": LR,
                    "batch": BATCH,
                    "epochs": EPOCHS,
                    "steps_per_epoch": STEPS_PER_EPOCH,
                    "scheduler": SCHEDULER,
                },
                # the judge's log: None = the checkpoint alone (its own steps); the user's: train_log.csv
                "log": None if name == "batch_size_metric" else "train_log.csv",
                "user_log": "train_log.csv",
                "latest": got["tags"][-1],
                "checkpoints": checkpoints,
                "live": got["live"],
            }
            (dest / "truth.json").write_text(dumps(truth), encoding="ascii")
            print(f"{name}/: {len(got['live']['steps']['row'])} plateau steps; latest = {got['tags'][-1]}")
            for tag, info in checkpoints.items():
                s = info["scheduler"]
                print(
                    f"  {tag}: last_epoch={s['last_epoch']} best={s['best']!r} num_bad={s['num_bad_epochs']} "
                    f"lr={info['optimizer_lrs']}"
                )
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv)
