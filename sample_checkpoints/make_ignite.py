"""Regenerate the pytorch-ignite samples in ``ignite/`` by running real ignite training.

Usage: ``python sample_checkpoints/make_ignite.py [OUTDIR] [--only SCENARIO ...]``
(default OUTDIR: ``ignite/`` next to this script; default: every scenario).

Each scenario is a real ignite ``Engine`` trainer (``create_supervised_trainer``) of a tiny MLP (8-16-1 ReLU,
SGD, MSE on seeded synthetic regression data) with an evaluator (``create_supervised_evaluator`` with ignite's
``Loss`` metric as ``val_loss``) run at every ``EPOCH_COMPLETED``; the evaluator's ``COMPLETED`` event calls a
real ``ReduceLROnPlateauScheduler`` (which wraps torch's ``ReduceLROnPlateau``: its state nests torch's under
``scheduler``). Checkpoints are written by ignite's own ``Checkpoint`` handler with a ``DiskSaver`` at every
``EPOCH_COMPLETED`` (after that epoch's evaluation, so after the plateau step), ``n_saved=None``; a few are kept.
The log is a CSV the script writes from the evaluator's metrics (``epoch,val_loss,lr``, ``repr`` floats).

Scenarios (one sub-folder each; the ground truth is in ``<scenario>/truth.json``):

* ``plain``: 16 epochs, ``patience=1, factor=0.5, cooldown=1, threshold=0.02`` and the user's ``min_lr=0.02``
  with the default ``param_group_index=None``: ignite replaces that ``min_lr`` by 0 (the lr goes below 0.02);
  ``checkpoint_8.pt`` and ``checkpoint_16.pt`` kept.
* ``group_index``: ``param_group_index=0`` with ``min_lr=0.02``: the floor is kept.

ignite's ``ReduceLROnPlateauScheduler`` assigns its own bound method to the torch scheduler's ``_reduce_lr``
attribute, so ``state_dict()["scheduler"]`` holds that bound method and pickling it pickles the ignite scheduler
object with its optimizer and the model's parameters: ``torch.load(weights_only=True)`` refuses these files (the
script asserts so); plateau-forensics reads them without running any of it.

``truth.json`` holds ``live`` (``_truth.py``'s format), recorded from the live torch scheduler inside the ignite
one: every plateau step, the lr each logged epoch trained with, and which file was saved when.
"""

from __future__ import annotations

import _pin_cpu  # noqa: F401 - must run before torch loads (see _pin_cpu.py)

# isort: split

import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import ignite
import torch
from ignite.engine import Events, create_supervised_evaluator, create_supervised_trainer
from ignite.handlers import Checkpoint, DiskSaver
from ignite.handlers.param_scheduler import ReduceLROnPlateauScheduler
from ignite.metrics import Loss
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _truth import Recorder, dumps  # noqa: E402 - the sibling module

N_FEATURES = 8
N_TRAIN = 64
N_VAL = 64
BATCH_SIZE = 16
SEED = 5
DATA_SEED = 1
LR = 0.05
MAX_EPOCHS = 16
SCHED = dict(mode="min", patience=1, factor=0.5, cooldown=1, threshold=0.02)
USER_MIN_LR = 0.02
VERSIONS = {"torch": torch.__version__, "ignite": ignite.__version__}
SCENARIOS: dict[str, dict[str, Any]] = {
    "plain": {"param_group_index": None, "keep": (8, 16)},
    "group_index": {"param_group_index": 0, "keep": (16,)},
}


def data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(N_FEATURES, generator=torch.Generator().manual_seed(DATA_SEED))
    x = torch.randn(n, N_FEATURES, generator=g)
    return TensorDataset(x, (x @ w + torch.randn(n, generator=g)).unsqueeze(-1))


def run(name: str, out: Path) -> dict[str, Any]:
    cfg = SCENARIOS[name]
    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    torch.manual_seed(SEED)
    model = nn.Sequential(nn.Linear(N_FEATURES, 16), nn.ReLU(), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = nn.MSELoss()
    trainer = create_supervised_trainer(model, optimizer, loss_fn)
    evaluator = create_supervised_evaluator(model, metrics={"val_loss": Loss(loss_fn)})
    scheduler = ReduceLROnPlateauScheduler(optimizer, metric_name="val_loss",
                                           param_group_index=cfg["param_group_index"], min_lr=USER_MIN_LR,
                                           **SCHED)
    evaluator.add_event_handler(Events.COMPLETED, scheduler)
    rec = Recorder()
    rec.watch(scheduler.scheduler)
    train_loader = DataLoader(data(N_TRAIN, 11), batch_size=BATCH_SIZE, shuffle=True,
                              generator=torch.Generator().manual_seed(SEED))
    val_loader = DataLoader(data(N_VAL, 12), batch_size=N_VAL)
    rows: list[str] = ["epoch,val_loss,lr"]
    epoch_lr: dict[int, list[float]] = {}

    @trainer.on(Events.EPOCH_STARTED)
    def _lr(engine: Any) -> None:
        epoch_lr[engine.state.epoch] = [float(g["lr"]) for g in optimizer.param_groups]

    @trainer.on(Events.EPOCH_COMPLETED)
    def _evaluate(engine: Any) -> None:
        e = engine.state.epoch
        rec.row(e, epoch_lr[e])  # before the evaluation: the plateau step reads this row
        evaluator.run(val_loader)
        v = evaluator.state.metrics["val_loss"]
        rows.append(f"{e},{v!r},{epoch_lr[e][0]!r}")

    to_save = {"model": model, "optimizer": optimizer, "lr_scheduler": scheduler, "trainer": trainer}
    saver = DiskSaver(str(folder / "checkpoints"), require_empty=False)
    handler = Checkpoint(to_save, saver, n_saved=None, global_step_transform=lambda e, _: e.state.epoch)
    original = saver.__call__

    class Saver(DiskSaver):
        pass

    def save(checkpoint: Any, filename: str, metadata: Any = None) -> None:
        original(checkpoint, filename, metadata)
        rec.saved(f"checkpoints/{filename}")

    handler.save_handler = type("RecordingSaver", (), {"__call__": lambda self, c, f, m=None: save(c, f, m),
                                                       "remove": saver.remove})()
    trainer.add_event_handler(Events.EPOCH_COMPLETED, handler)  # after _evaluate: after the plateau step
    trainer.run(train_loader, max_epochs=MAX_EPOCHS)

    keep = {f"checkpoints/checkpoint_{e}.pt" for e in cfg["keep"]}
    for p in (folder / "checkpoints").iterdir():
        if f"checkpoints/{p.name}" not in keep:
            p.unlink()
    rec.forget_checkpoints(keep)
    (folder / "log.csv").write_text("\n".join(rows) + "\n")
    for file in keep:  # what the issue says: torch's safe loader refuses these files
        try:
            torch.load(folder / file, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any refusal is the expected outcome
            first = str(exc).splitlines()[0]
        else:
            raise AssertionError(f"{file}: torch.load(weights_only=True) read it")
    truth = {
        "scenario": name,
        "versions": VERSIONS,
        "setup": {"scheduler": {**SCHED, "min_lr": USER_MIN_LR, "param_group_index": cfg["param_group_index"]},
                  "lr": LR, "max_epochs": MAX_EPOCHS},
        "log": "log.csv",
        "weights_only_refuses": first,
        "live": rec.as_json(),
    }
    (folder / "truth.json").write_text(dumps(truth))
    return truth


def main(argv: list[str]) -> None:
    only = argv[argv.index("--only") + 1:] if "--only" in argv else list(SCENARIOS)
    args = [a for a in argv if not a.startswith("--") and a not in only]
    out = Path(args[0]) if args else Path(__file__).resolve().parent / "ignite"
    warnings.simplefilter("ignore")
    for name in only:
        t = run(name, out)
        print(name, len(t["live"]["steps"]["row"]), "steps;", t["weights_only_refuses"][:100])


if __name__ == "__main__":
    main(sys.argv[1:])
