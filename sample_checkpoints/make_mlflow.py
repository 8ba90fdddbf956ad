"""Regenerate the MLflow fixtures in ``sample_checkpoints/mlflow/`` from real training runs.

Usage: ``python sample_checkpoints/make_mlflow.py [OUTDIR]`` (default: ``mlflow/`` next to it).

Two runs of the 8-16-1 ReLU MLP of ``make_samples.py`` (Adam, a real ``ReduceLROnPlateau`` stepped once per
epoch), each logged with the real MLflow client (``MlflowClient``) to two stores at once: the sqlite store
``mlflow.db`` (MLflow's default) and the file store ``mlruns/`` (``MLFLOW_ALLOW_FILE_STORE=true``: MLflow
3 keeps it in maintenance mode). Both stores hold both runs, in the experiment ``plateau``:

* ``plain``: 20 epochs; ``log_metrics({"train_loss", "val_loss", "lr"}, step=epoch)`` after each epoch, with
  the lr used *during* the epoch (read before ``scheduler.step``); ``plain_epoch15.pt`` (``epoch, model,
  optimizer, scheduler, val_loss``) saved after epoch 15's step.
* ``messy``: 20 epochs with what real logs do: ``lr`` logged per optimizer step (``step`` = batches so far)
  while ``val_loss`` is logged per epoch; the evaluation of epoch 6 gives NaN (stepped and logged as NaN:
  MLflow's sqlite store keeps it as ``value 0, is_nan 1``); epoch 9's ``val_loss`` is never logged (the
  scheduler still steps); epoch 12's is logged twice (a retried call). No checkpoint.

``truth.json`` holds, per run: both stores' run ids, what the generator logged (``logged``: per key, the
``[step, value]`` pairs in logging order), what MLflow's own client reads back from each store
(``mlflow_read``), the values passed to ``scheduler.step`` (``stepped``), and for ``plain`` the live record of
``_truth.py`` (``live``: every step's state, the lr each logged epoch used, where the checkpoint was saved).
The tests judge the tool against it, for the committed fixtures and a fresh regeneration alike. Run ids,
timestamps and absolute paths inside the stores differ between regenerations.
"""

from __future__ import annotations

import _pin_cpu  # noqa: F401 - must run before torch loads (see _pin_cpu.py)

# isort: split

import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3 refuses the file store without it
# never the cwd's mlruns/: the clients name their stores
os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///unused.db")
os.environ["GIT_PYTHON_REFRESH"] = "quiet"  # MLflow probes git for source tags; the fixture needs none

import torch
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _truth import Recorder, dumps
from make_samples import BATCH_SIZE, N_TRAIN, Data, make_data, make_model

EPOCHS = 20
CONFIG = dict(data_seed=3, noise=1.0, model_seed=1, lr=5e-3)
SCHED = dict(mode="min", factor=0.5, patience=2, cooldown=1)
SAVE_EPOCH = 15
NAN_EPOCH, UNLOGGED_EPOCH, TWICE_EPOCH = 6, 9, 12
SCHEDULER_KEYS = ("factor", "patience", "cooldown", "threshold", "threshold_mode", "mode", "eps", "min_lrs",
                  "default_min_lr", "last_epoch", "_last_lr", "best", "num_bad_epochs", "cooldown_counter")


def enc(v: float) -> float | str:
    """A float for JSON: NaN / inf as the strings ``fixture_truth.decode`` reads back."""
    return v if math.isfinite(v) else repr(v)


class Stores:
    """The two MLflow stores of the fixture and a client on each; ``log`` writes to both."""

    def __init__(self, out: Path) -> None:
        from mlflow.tracking import MlflowClient

        self.clients = {"sqlite": MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}"),
                        "file": MlflowClient(tracking_uri=(out / "mlruns").as_uri())}
        self.experiments = {k: c.create_experiment("plateau") for k, c in self.clients.items()}

    def start(self, name: str) -> dict[str, str]:
        return {k: c.create_run(self.experiments[k], run_name=name).info.run_id
                for k, c in self.clients.items()}

    def log(self, ids: dict[str, str], step: int, **metrics: float) -> None:
        """``log_metrics(metrics, step=step)`` on both stores."""
        self.log_points(ids, [(key, float(v), int(time.time() * 1000), step) for key, v in metrics.items()])

    def log_points(self, ids: dict[str, str], points: list[tuple[str, float, int, int]]) -> None:
        """One ``log_batch`` of ``(key, value, timestamp, step)`` points on both stores."""
        from mlflow.entities import Metric

        for k, c in self.clients.items():
            c.log_batch(ids[k], metrics=[Metric(key, v, ts, step) for key, v, ts, step in points])

    def describe(self, ids: dict[str, str], out: Path) -> None:
        """The run's setup as params (both stores) and as an artifact, ``setup.json`` (the file store keeps
        artifacts in the run folder; a file-store run folder without ``params/`` and ``artifacts/`` is not a
        run to MLflow, and git keeps no empty folder)."""
        import json

        from mlflow.entities import Param

        params = {**{k: str(v) for k, v in SCHED.items()}, "lr": str(CONFIG["lr"]), "epochs": str(EPOCHS)}
        for k, c in self.clients.items():
            c.log_batch(ids[k], params=[Param(key, v) for key, v in params.items()])
        setup = out / "setup.json"
        setup.write_text(json.dumps({"config": CONFIG, "scheduler": SCHED}, sort_keys=True) + "\n")
        self.clients["file"].log_artifact(ids["file"], str(setup))
        setup.unlink()

    def finish(self, ids: dict[str, str]) -> None:
        for k, c in self.clients.items():
            c.set_terminated(ids[k])

    def read(self, ids: dict[str, str], keys: list[str]) -> dict[str, dict[str, list[list[Any]]]]:
        """What MLflow's own client reads back: per store, per key, ``[step, value]`` in its order."""
        return {k: {key: [[m.step, enc(m.value)] for m in c.get_metric_history(ids[k], key)] for key in keys}
                for k, c in self.clients.items()}


def batches(model: nn.Module, optimizer: torch.optim.Optimizer, data: Data, shuffle_seed: int):
    """One epoch of mini-batch training (``make_samples.train_epoch``), yielding after each optimizer step."""
    model.train()
    perm = torch.randperm(N_TRAIN, generator=torch.Generator().manual_seed(shuffle_seed))
    for start in range(0, N_TRAIN, BATCH_SIZE):
        idx = perm[start : start + BATCH_SIZE]
        loss = nn.functional.mse_loss(model(data.x_train[idx]), data.y_train[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        yield loss.item() * len(idx)


def evaluate(model: nn.Module, data: Data) -> float:
    model.eval()
    with torch.no_grad():
        return nn.functional.mse_loss(model(data.x_val), data.y_val).item()


def train(stores: Stores, out: Path, name: str) -> dict[str, Any]:
    data = make_data(CONFIG["data_seed"], CONFIG["noise"])
    model = make_model(CONFIG["model_seed"])
    optimizer = torch.optim.Adam(model.parameters(), lr=CONFIG["lr"])
    scheduler = ReduceLROnPlateau(optimizer, **SCHED)
    messy = name == "messy"
    rec = Recorder()
    if not messy:
        rec.watch(scheduler)
    ids = stores.start(name)
    stores.describe(ids, out)
    logged: dict[str, list[list[Any]]] = {"train_loss": [], "val_loss": [], "lr": []}
    stepped: list[float | str] = []
    global_step = 0
    for epoch in range(1, EPOCHS + 1):
        lr = optimizer.param_groups[0]["lr"]  # the lr used during this epoch
        total = 0.0
        per_batch = []  # messy: the lr after each optimizer step, sent in one log_batch per epoch
        for part in batches(model, optimizer, data, shuffle_seed=100 * CONFIG["data_seed"] + epoch):
            total += part
            global_step += 1
            if messy:
                now = int(time.time() * 1000)
                per_batch.append(("lr", optimizer.param_groups[0]["lr"], now, global_step))
                logged["lr"].append([global_step, optimizer.param_groups[0]["lr"]])
        if per_batch:
            stores.log_points(ids, per_batch)
        train_loss = total / N_TRAIN
        val_loss = evaluate(model, data)
        if messy and epoch == NAN_EPOCH:
            val_loss = math.nan  # the evaluation diverged: the training script steps and logs what it got
        if not messy:
            rec.row(epoch, [float(g["lr"]) for g in optimizer.param_groups])
        scheduler.step(val_loss)
        stepped.append(enc(val_loss))
        metrics = {"train_loss": train_loss, "val_loss": val_loss} if messy else \
            {"train_loss": train_loss, "val_loss": val_loss, "lr": lr}
        if messy and epoch == UNLOGGED_EPOCH:
            metrics.pop("val_loss")
        stores.log(ids, epoch, **metrics)
        if messy and epoch == TWICE_EPOCH:
            stores.log(ids, epoch, val_loss=val_loss)  # a retried call logs it again
        for key, v in metrics.items():
            logged[key].append([epoch, enc(v)])
        if messy and epoch == TWICE_EPOCH:
            logged["val_loss"].append([epoch, enc(val_loss)])
        if not messy and epoch == SAVE_EPOCH:
            file = f"{name}_epoch{epoch}.pt"
            torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "val_loss": val_loss}, out / file)
            rec.saved(file)
    stores.finish(ids)
    read = stores.read(ids, list(logged))
    for store, keys in read.items():  # MLflow reads back what was logged, NaN included, in logging order
        for key, pairs in keys.items():
            assert pairs == logged[key], (name, store, key, pairs[:5], logged[key][:5])
    truth: dict[str, Any] = {"run_ids": ids, "logged": logged, "mlflow_read": read, "stepped": stepped}
    if not messy:
        ck = torch.load(out / f"{name}_epoch{SAVE_EPOCH}.pt", weights_only=True)
        sd = ck["scheduler"]
        assert sd["last_epoch"] == SAVE_EPOCH
        truth["checkpoint"] = {"file": f"{name}_epoch{SAVE_EPOCH}.pt",
                               "scheduler": {k: sd[k] for k in SCHEDULER_KEYS}}
        lrs = [v for _, v in logged["lr"]]
        assert len(set(lrs)) >= 3, ("the plain run should reduce its lr at least twice", lrs)
        truth["live"] = rec.as_json()
    else:
        assert "nan" in stepped and len(logged["val_loss"]) == EPOCHS
    return truth


def main(argv: list[str]) -> None:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent / "mlflow"
    if out.exists():
        for child in ("mlflow.db", "mlruns", "truth.json", "plain_epoch15.pt"):
            p = out / child
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    stores = Stores(out)
    runs = {name: train(stores, out, name) for name in ("plain", "messy")}
    import mlflow

    truth = {
        "mlflow_version": mlflow.__version__, "torch_version": torch.__version__,
        "description": __doc__.split("\n\n")[2].replace("\n", " "),
        "config": CONFIG, "scheduler_kwargs": SCHED, "epochs": EPOCHS,
        "messy": {"nan_epoch": NAN_EPOCH, "unlogged_epoch": UNLOGGED_EPOCH, "twice_epoch": TWICE_EPOCH,
                  "batches_per_epoch": N_TRAIN // BATCH_SIZE},
        "stores": {"sqlite": "mlflow.db", "file": "mlruns"},
        "runs": runs,
    }
    (out / "truth.json").write_text(dumps(truth, expand=4), encoding="ascii")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv)
