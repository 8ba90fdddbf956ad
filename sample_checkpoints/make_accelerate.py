"""Regenerate the HF Accelerate fixtures in ``sample_checkpoints/accelerate/`` from real 2-process runs.

Usage: ``python sample_checkpoints/make_accelerate.py [OUTDIR]`` (default: ``accelerate/`` beside this file).

Two CPU processes (forked by ``torch.multiprocessing``, gloo, the env:// rendezvous Accelerate reads) train
the 8-16-1 ReLU MLP of ``make_samples.py`` (SGD, MSE, batch 8 per process) on its seeded synthetic regression
set with a real ``accelerate.Accelerator(cpu=True)``: model, optimizer, both dataloaders and a real
``torch.optim.lr_scheduler.ReduceLROnPlateau`` go through ``accelerator.prepare``. After each epoch every
process evaluates its shard, ``gather_for_metrics`` makes the validation MSE the same on both, and every
process calls the prepared scheduler's ``step(val_loss)`` once. The main process writes
``metrics.csv`` (``epoch,train_loss,val_loss,lr``: ``repr`` floats, lr = the lr the epoch trained with) and
``accelerator.save_state()`` writes the checkpoint directories (``ProjectConfiguration`` with
``automatic_checkpoint_naming``: ``checkpoints/checkpoint_0``, ``checkpoint_1``), copied out unchanged.

Scenarios (one sub-folder each, both trained in the same two processes):

* ``two_processes/``: the default ``Accelerator``. ``AcceleratedScheduler.step`` steps the wrapped scheduler
  once per process, so each evaluation is 2 plateau steps and ``last_epoch = 2 x evaluations``; the repeat
  of a value is never better than itself, so it is a bad epoch and the lr falls about twice as early.
* ``one_step_per_eval/``: ``Accelerator(step_scheduler_with_optimizer=False)``: the prepared scheduler steps
  once per call, ``last_epoch`` = evaluations, a clean run.

Facts asserted on the written files (read back with ``torch.load(weights_only=True)``): each ``.bin`` is a zip
whose internal root is its stem; ``random_states_<rank>.pkl`` exists for both ranks and refuses
``weights_only=True`` (numpy's rng state), so a safe reader leaves it closed; ``scheduler.bin``'s
``last_epoch`` is ``steps per call x evaluations``; a real ``ReduceLROnPlateau`` stepped that many times per
logged ``val_loss`` reproduces the saved state and ``optimizer.bin``'s lr.

``truth.json`` holds ``live``: what the main process's real scheduler did (``_truth.py``: every step with the
row it read, the lr each row trained with, which directory was saved when). The tests judge the tool by it
for the committed fixtures and a fresh regeneration alike; nothing compares two runs' numbers or bytes.
Determinism: ``_pin_cpu.py`` before torch, one thread per process, seeded model and shuffles.
"""

from __future__ import annotations

import _pin_cpu  # noqa: F401 - must run before torch loads (see _pin_cpu.py)

# isort: split

import csv
import importlib
import json
import os
import shutil
import socket
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _truth import Recorder, dumps  # noqa: E402
from make_samples import make_data, make_model  # noqa: E402

NUM_PROCESSES = 2
DATA = dict(data_seed=3, noise=1.0, model_seed=1)
LR = 0.05
BATCH_PER_PROCESS = 8
EPOCHS = 16
SCHEDULER = dict(mode="min", factor=0.5, patience=3)
SAVE_AT = (8, 16)  # epochs after whose step save_state() runs: checkpoint_0, checkpoint_1
SCENARIOS: dict[str, dict[str, Any]] = {
    "two_processes": dict(
        accelerator={},
        steps_per_call=NUM_PROCESSES,
        description="the default Accelerator with 2 processes: the prepared ReduceLROnPlateau takes 2 steps "
        "per "
        "step(val_loss) call, so last_epoch = 2 x evaluations and the repeats count as bad epochs",
    ),
    "one_step_per_eval": dict(
        accelerator={"step_scheduler_with_optimizer": False},
        steps_per_call=1,
        description="Accelerator(step_scheduler_with_optimizer=False) with 2 processes: one plateau step per "
        "evaluation, a clean run",
    ),
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train(rank: int, work: Path, name: str, port: int) -> None:
    """One process of one scenario: train, evaluate, step, save; the main process logs and records truth."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed

    scenario = SCENARIOS[name]
    project = work / name
    accelerator = Accelerator(
        cpu=True,
        project_config=ProjectConfiguration(
            project_dir=str(project), automatic_checkpoint_naming=True, total_limit=None
        ),
        **scenario["accelerator"],
    )
    assert accelerator.num_processes == NUM_PROCESSES and accelerator.process_index == rank
    set_seed(DATA["model_seed"])  # python, numpy and torch: the random_states files are the same on a rerun
    data = make_data(DATA["data_seed"], DATA["noise"])
    model = make_model(DATA["model_seed"])
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **SCHEDULER)
    train_dl = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data.x_train, data.y_train),
        batch_size=BATCH_PER_PROCESS,
        shuffle=True,
        generator=torch.Generator().manual_seed(DATA["data_seed"]),
    )
    val_dl = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data.x_val, data.y_val), batch_size=32
    )
    model, optimizer, train_dl, val_dl, prepared = accelerator.prepare(
        model, optimizer, train_dl, val_dl, scheduler
    )
    main = accelerator.is_main_process
    rec = Recorder()
    if main:
        rec.watch(
            scheduler
        )  # the torch object inside the AcceleratedScheduler: each of its steps is recorded
    rows: list[list[Any]] = []
    saved: list[str] = []
    for epoch in range(1, EPOCHS + 1):
        lrs = [float(g["lr"]) for g in optimizer.param_groups]
        model.train()
        total, count = torch.zeros(()), 0
        for x, y in train_dl:
            loss = nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            accelerator.backward(loss)
            optimizer.step()
            total, count = total + loss.detach() * len(x), count + len(x)
        train_loss = float(accelerator.reduce(total, "sum")) / float(
            accelerator.reduce(torch.tensor(count), "sum")
        )
        model.eval()
        errors = []
        with torch.no_grad():
            for x, y in val_dl:
                errors.append(accelerator.gather_for_metrics((model(x) - y).pow(2)))
        val_loss = torch.cat(errors).mean().item()  # the same on every process: gathered before the mean
        if main:
            rec.row(epoch, lrs)
            rows.append([epoch, train_loss, val_loss, lrs[0]])
        prepared.step(val_loss)
        if epoch in SAVE_AT:
            out = accelerator.save_state()
            if main:
                rel = Path(out).resolve().relative_to(project.resolve()).as_posix()
                rec.saved(rel)
                saved.append(rel)
    accelerator.wait_for_everyone()
    if main:
        with open(project / "metrics.csv", "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["epoch", "train_loss", "val_loss", "lr"])
            w.writerows([e, repr(t), repr(v), repr(lr)] for e, t, v, lr in rows)
        (project / "live.json").write_text(dumps({"live": rec.as_json(), "saved": saved}), encoding="ascii")
    accelerator.free_memory()


def worker(rank: int, work: str, port: int) -> None:
    """A spawned process: the env:// rendezvous, then every scenario in turn."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(NUM_PROCESSES),
        LOCAL_WORLD_SIZE=str(NUM_PROCESSES),
    )
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")  # torch/accelerate deprecation chatter from the child processes
    for name in SCENARIOS:
        train(rank, Path(work), name, port)
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def refuses_weights_only(path: Path) -> bool:
    """True when ``torch.load(weights_only=True)`` refuses the file."""
    try:
        torch.load(path, weights_only=True)
    except Exception:  # torch raises UnpicklingError (or others) for disallowed globals
        return True
    return False


def check_directory(ckpt: Path, rows: list[dict[str, Any]], steps_per_call: int) -> dict[str, Any]:
    """Assert the save_state() facts on one directory; return its truth entry."""
    files = sorted(p.name for p in ckpt.iterdir())
    assert {"scheduler.bin", "optimizer.bin", "model.safetensors"} <= set(files), files
    assert [f"random_states_{r}.pkl" for r in range(NUM_PROCESSES)] == [
        f for f in files if f.startswith("random_states_")
    ]
    for name in ("scheduler.bin", "optimizer.bin"):
        with zipfile.ZipFile(ckpt / name) as z:
            assert {n.split("/", 1)[0] for n in z.namelist()} == {Path(name).stem}, z.namelist()
    assert all(refuses_weights_only(ckpt / f) for f in files if f.startswith("random_states_"))
    sched = torch.load(ckpt / "scheduler.bin", weights_only=True)
    opt = torch.load(ckpt / "optimizer.bin", weights_only=True)
    opt_lrs = [g["lr"] for g in opt["param_groups"]]
    n = sched["last_epoch"] // steps_per_call
    assert sched["last_epoch"] == steps_per_call * n and 0 < n <= len(rows), (sched["last_epoch"], len(rows))
    # a real scheduler stepped steps_per_call times per logged val_loss reproduces the saved state and lr
    p = nn.Parameter(torch.zeros(1))
    replay_opt = torch.optim.SGD([p], lr=LR)
    replay = torch.optim.lr_scheduler.ReduceLROnPlateau(replay_opt, **SCHEDULER)
    for r in rows[:n]:
        for _ in range(steps_per_call):
            replay.step(r["val_loss"])
    for key in ("last_epoch", "best", "num_bad_epochs", "cooldown_counter", "_last_lr"):
        assert replay.state_dict()[key] == sched[key], (key, replay.state_dict()[key], sched[key])
    assert [g["lr"] for g in replay_opt.param_groups] == opt_lrs == sched["_last_lr"], opt_lrs
    return {
        "files": files,
        "evaluations": n,
        "scheduler": {k: sched[k] for k in SCHEDULER_KEYS},
        "optimizer_lrs": opt_lrs,
    }


def read_rows(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        return [
            {"epoch": int(r["epoch"]), "val_loss": float(r["val_loss"]), "lr": float(r["lr"])}
            for r in csv.DictReader(f)
        ]


def main(argv: list[str]) -> None:
    """Train every scenario in two processes, copy the directories and logs to OUTDIR, write truth.json."""
    import accelerate

    out = (Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent / "accelerate").resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, accelerate {accelerate.__version__}, {NUM_PROCESSES} gloo processes")
    with tempfile.TemporaryDirectory(prefix="make_accelerate_") as tmp:
        work = Path(tmp)
        # Forked, not spawned: the children inherit the imports (the first optimizer imports torch._dynamo,
        # ~6 s per process on this 2-core machine), so a regeneration takes seconds, not a minute.
        importlib.import_module("torch._dynamo")
        importlib.import_module("accelerate.utils")
        torch.multiprocessing.start_processes(
            worker, args=(str(work), _free_port()), nprocs=NUM_PROCESSES, join=True, start_method="fork"
        )
        for name, scenario in SCENARIOS.items():
            src, dest = work / name, out / name
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            shutil.copy2(src / "metrics.csv", dest / "metrics.csv")
            recorded = json.loads((src / "live.json").read_text())
            rows = read_rows(dest / "metrics.csv")
            checkpoints = {}
            for rel in recorded["saved"]:
                shutil.copytree(src / rel, dest / rel)
                checkpoints[rel] = check_directory(dest / rel, rows, scenario["steps_per_call"])
            k = scenario["steps_per_call"]
            live = recorded["live"]
            assert len(live["steps"]["row"]) == k * len(rows), "steps_per_call plateau steps per evaluation"
            assert [checkpoints[r]["evaluations"] for r in recorded["saved"]] == list(SAVE_AT)
            reductions = [rows[i]["epoch"] for i in range(1, len(rows)) if rows[i]["lr"] != rows[i - 1]["lr"]]
            truth = {
                "scenario": name,
                "description": scenario["description"],
                "versions": {"torch": torch.__version__, "accelerate": accelerate.__version__},
                "num_processes": NUM_PROCESSES,
                "accelerator": scenario["accelerator"],
                "steps_per_call": k,
                "data": DATA,
                "setup": {
                    "optimizer": "SGD",
                    "lr": LR,
                    "batch_per_process": BATCH_PER_PROCESS,
                    "epochs": EPOCHS,
                    "scheduler": SCHEDULER,
                },
                "log": "metrics.csv",
                "checkpoints": checkpoints,
                "logged_lr_changes_at_epochs": reductions,
                "random_states_refuse_weights_only": True,
                "live": live,
            }
            (dest / "truth.json").write_text(dumps(truth), encoding="ascii")
            print(f"{name}/: {k} plateau step(s) per evaluation, logged lr changes at epochs {reductions}")
            for rel, info in checkpoints.items():
                s = info["scheduler"]
                print(
                    f"  {rel}: evaluations={info['evaluations']} last_epoch={s['last_epoch']} "
                    f"best={s['best']!r} num_bad={s['num_bad_epochs']} lr={info['optimizer_lrs']}"
                )


if __name__ == "__main__":
    main(sys.argv)
