"""The recorder and guard callbacks in real training runs of Lightning, the HF Trainer and Keras (torch).

Each framework trains a tiny model on CPU in its own subprocess (one short run and a resume each, started
together so that they share the two cores), with two callbacks: ours, and a truth callback that reads the live
scheduler (or Keras callback) itself. The tests compare the recording with that truth, and the resume verdicts
with what the framework really did; nothing compares numbers between machines, and the framework warnings
stay in the subprocess.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import plateau_forensics as pf  # noqa: E402
from plateau_forensics.recorder import read_recording  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 300

LIGHTNING = r'''
"""Lightning driver: a fit with the recorder callback, then a fit(ckpt_path=...) resume, another patience."""
import json, logging, sys, warnings
from pathlib import Path
out = Path(sys.argv[1])
import logging
_h = logging.FileHandler(out / "lines.txt", encoding="utf-8")
_h.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
_lg = logging.getLogger("plateau_forensics")
_lg.addHandler(_h)
_lg.setLevel(logging.INFO)
_lg.propagate = False
import torch
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
import plateau_forensics as pf

logging.getLogger("lightning").setLevel(logging.ERROR)
g = torch.Generator().manual_seed(1)
x, y = torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g)
vx, vy = torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g)

class Module(L.LightningModule):
    def __init__(self, patience=1):
        super().__init__()
        self.patience = patience
        self.net = nn.Linear(4, 1)
    def training_step(self, batch, i):
        return nn.functional.mse_loss(self.net(batch[0]), batch[1])
    def validation_step(self, batch, i):
        self.log("val_loss", nn.functional.mse_loss(self.net(batch[0]), batch[1]))
    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.2)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=self.patience, factor=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}

class Truth(L.Callback):
    """What the live scheduler held: the val_loss each epoch and the state after each plateau step."""
    def __init__(self):
        self.rows = []
    def on_train_epoch_start(self, trainer, m):
        self._snap(trainer)
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]
    def on_validation_epoch_end(self, trainer, m):
        if not trainer.sanity_checking:
            val = float(trainer.callback_metrics["val_loss"])
            self.rows.append({"epoch": trainer.current_epoch, "val": val, "lr_in": self.lr})
    def on_train_end(self, trainer, m):
        self._snap(trainer)
    def _snap(self, trainer):
        s = trainer.lr_scheduler_configs[0].scheduler
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        state = [s.best, s.num_bad_epochs, s.cooldown_counter, s.last_epoch, lr]
        if self.rows and "after" not in self.rows[-1]:
            self.rows[-1]["after"] = state

def fit(epochs, ckpt=None, patience=1, **cb):
    L.seed_everything(0, verbose=False)
    truth = Truth()
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=out,
                        log_every_n_steps=1,
                        callbacks=[ModelCheckpoint(dirpath=out / "ckpts", save_top_k=-1, filename="{epoch}"),
                                   truth, pf.lightning_callback(out / "plateau.jsonl", **cb)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Module(patience), DataLoader(TensorDataset(x, y), batch_size=16),
                    DataLoader(TensorDataset(vx, vy), batch_size=64), ckpt_path=ckpt)
    resume = [str(w.message) for w in caught if issubclass(w.category, pf.ResumeWarning)]
    return truth.rows, resume

first, w1 = fit(6, explain=True)
second, w2 = fit(9, ckpt=out / "ckpts" / "epoch=3.ckpt", patience=3, action="warn")
(out / "truth.json").write_text(json.dumps({"first": first, "second": second, "warnings": [w1, w2]}))
'''

HF = r'''
"""HF driver: a Trainer run with the recorder callback, then a resume with another lr_scheduler_kwargs."""
import json, os, sys, warnings
from pathlib import Path
out = Path(sys.argv[1])
import logging
_h = logging.FileHandler(out / "lines.txt", encoding="utf-8")
_h.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
_lg = logging.getLogger("plateau_forensics")
_lg.addHandler(_h)
_lg.setLevel(logging.INFO)
_lg.propagate = False
import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.utils import logging as hf_logging
import plateau_forensics as pf
hf_logging.set_verbosity_error()
g = torch.Generator().manual_seed(1)
x, y = torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g)
vx, vy = torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g)

class Rows(torch.utils.data.Dataset):
    def __init__(self, x, y): self.x, self.y = x, y
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return {"x": self.x[i], "labels": self.y[i]}

class Net(nn.Module):
    def __init__(self):
        super().__init__(); self.lin = nn.Linear(4, 1)
    def forward(self, x, labels=None):
        out = self.lin(x)
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}

class Truth(TrainerCallback):
    """The eval_loss of each evaluation and the live scheduler state after its step (saved right after it)."""
    def __init__(self): self.rows = []
    def on_evaluate(self, args, state, control, metrics=None, optimizer=None, **kw):
        self.rows.append({"epoch": state.epoch, "val": metrics["eval_loss"],
                          "lr_in": [g["lr"] for g in optimizer.param_groups]})
    def on_save(self, args, state, control, lr_scheduler=None, optimizer=None, **kw):
        s = lr_scheduler
        self.rows[-1]["after"] = [s.best, s.num_bad_epochs, s.cooldown_counter, s.last_epoch,
                                  [g["lr"] for g in optimizer.param_groups]]

def train(epochs, resume=None, patience=1, **cb):
    torch.manual_seed(0)
    truth = Truth()
    args = TrainingArguments(output_dir=str(out / "run"), learning_rate=0.2, weight_decay=0.1,
                             lr_scheduler_type="reduce_lr_on_plateau",
                             lr_scheduler_kwargs={"patience": patience, "factor": 0.5},
                             per_device_train_batch_size=16, per_device_eval_batch_size=64,
                             num_train_epochs=epochs, eval_strategy="epoch", save_strategy="epoch",
                             logging_strategy="epoch", report_to=[],
                             use_cpu=True, seed=0, disable_tqdm=True, dataloader_num_workers=0)
    trainer = Trainer(model=Net(), args=args, train_dataset=Rows(x, y), eval_dataset=Rows(vx, vy),
                      callbacks=[truth, pf.hf_callback(out / "plateau.jsonl", **cb)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train(resume_from_checkpoint=resume)
    return truth.rows, [str(w.message) for w in caught if issubclass(w.category, pf.ResumeWarning)]

first, w1 = train(6)
second, w2 = train(8, resume=str(out / "run" / "checkpoint-12"), patience=2, action="warn")
(out / "truth.json").write_text(json.dumps({"first": first, "second": second, "warnings": [w1, w2]}))
'''

KERAS = r'''
"""Keras driver: two fits of a tiny model with keras.callbacks.ReduceLROnPlateau and the recorder callback."""
import json, os, sys
os.environ["KERAS_BACKEND"] = "torch"
from pathlib import Path
out = Path(sys.argv[1])
import logging
_h = logging.FileHandler(out / "lines.txt", encoding="utf-8")
_h.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
_lg = logging.getLogger("plateau_forensics")
_lg.addHandler(_h)
_lg.setLevel(logging.INFO)
_lg.propagate = False
import numpy as np
import keras
import plateau_forensics as pf
keras.utils.set_random_seed(0)
rng = np.random.default_rng(1)
x, y = rng.normal(size=(64, 4)).astype("float32"), rng.normal(size=(64, 1)).astype("float32")
vx, vy = rng.normal(size=(64, 4)).astype("float32"), rng.normal(size=(64, 1)).astype("float32")
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.2), loss="mse")
plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", patience=1, factor=0.5, cooldown=1,
                                            min_delta=1e-3)

class Truth(keras.callbacks.Callback):
    """Placed after the plateau callback: the live state after each epoch's on_epoch_end."""
    def __init__(self): super().__init__(); self.rows = []
    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch, "val": float(logs["val_loss"]),
                          "lr_in": float(logs["learning_rate"]),
                          "after": [plateau.best, plateau.wait, plateau.cooldown_counter,
                                    float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))]})

rec = pf.keras_callback(plateau, out / "plateau.jsonl", explain=True)
fits = []
for epochs in (7, 4):
    truth = Truth()
    model.fit(x, y, validation_data=(vx, vy), epochs=epochs, batch_size=16, verbose=0,
              callbacks=[rec, plateau, truth])
    fits.append(truth.rows)
model.fit(x, y, validation_data=(vx, vy), epochs=1, batch_size=16, verbose=0, callbacks=[rec])  # no plateau
rec.close()
(out / "truth.json").write_text(json.dumps({"fits": fits}))
'''

DRIVERS = {"lightning": (LIGHTNING, "lightning"), "hf": (HF, "transformers"), "keras": (KERAS, "keras")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """All three framework runs, started at once; name -> (output folder, returncode, stderr)."""
    # offline: without a network the hub and telemetry calls of transformers wait for timeouts
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "torch", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    procs = {}
    for name, (source, module) in DRIVERS.items():
        if importlib.util.find_spec(module) is None:
            continue
        out = tmp_path_factory.mktemp(name)
        script = out / "drive.py"
        script.write_text(source, encoding="utf-8")
        procs[name] = (out, subprocess.Popen([sys.executable, str(script), str(out)], cwd=out, env=env,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    done = {}
    for name, (out, proc) in procs.items():
        _, err = proc.communicate(timeout=TIMEOUT)
        done[name] = (out, proc.returncode, err)
    return done


def run(runs: dict[str, Any], name: str) -> tuple[Path, dict[str, Any]]:
    """The output folder and truth.json of one framework run (skipped when the framework is missing)."""
    if name not in runs:
        pytest.skip(f"{DRIVERS[name][1]} is not installed")
    out, code, err = runs[name]
    assert code == 0, err[-3000:]
    return out, json.loads((out / "truth.json").read_text())


def lines(out: Path) -> list[str]:
    return (out / "lines.txt").read_text(encoding="utf-8").splitlines()


def assert_steps_are_the_truth(steps: list[Any], rows: list[dict[str, Any]], epoch_shift: float = 0) -> None:
    """Each recorded step equals what the truth callback read from the live objects (exact floats)."""
    assert [s.epoch for s in steps] == [r["epoch"] + epoch_shift for r in rows]
    for s, r in zip(steps, rows, strict=True):
        after = r["after"]
        lr_in = r["lr_in"] if isinstance(r["lr_in"], list) else [r["lr_in"]]
        lr_out = after[-1] if isinstance(after[-1], list) else [after[-1]]
        assert s.metric == r["val"] and list(s.lr_in) == lr_in and list(s.lr) == lr_out
        assert (s.best, s.num_bad_epochs, s.cooldown_counter) == tuple(after[:3])
        if len(after) == 5:
            assert s.last_epoch == after[3]


def reduced_epochs(rows: list[dict[str, Any]], shift: float = 0) -> list[str]:
    """The epochs (as the lines print them) whose step changed the lr, from the truth."""
    out = []
    for r in rows:
        before = r["lr_in"] if isinstance(r["lr_in"], list) else [r["lr_in"]]
        after = r["after"][-1] if isinstance(r["after"][-1], list) else [r["after"][-1]]
        if before != after:
            e = r["epoch"] + shift
            out.append(str(int(e)) if float(e).is_integer() else str(e))
    return out


def reduction_epochs(out: Path) -> list[str]:
    return [line.split(":")[0].removeprefix("INFO epoch ") for line in lines(out)
            if line.startswith("INFO epoch ")]


# ------------------------------------------------------------------------------------ Lightning


def test_lightning_recording_is_what_lightning_did(runs: dict[str, Any]) -> None:
    """Lightning's own steps, fit then resume, are recorded exactly; the load shows the replaced patience."""
    out, truth = run(runs, "lightning")
    rec = read_recording(out / "plateau.jsonl")
    assert [s.rules for s in rec.segments] == ["torch", "torch"] and rec.metric == "val_loss"
    assert_steps_are_the_truth([s for s in rec.steps if s.segment == 0], truth["first"])
    assert_steps_are_the_truth([s for s in rec.steps if s.segment == 1], truth["second"])
    assert [dict(ld.overridden) for ld in rec.loads] == [{"patience": (3, 1)}]
    assert rec.verify() == []
    assert reduction_epochs(out) == reduced_epochs(truth["first"]) + reduced_epochs(truth["second"])
    assert reduced_epochs(truth["first"]), "the run must reduce the lr at least once"
    explained = [line for line in lines(out) if line[5:6].isdigit()]
    assert len(explained) == len(truth["first"])  # explain=True in the first fit: one line per step
    assert not [line for line in lines(out) if line.startswith("WARNING")]


def test_lightning_resume_guard_names_both_mistakes(runs: dict[str, Any]) -> None:
    """The resume with patience=3 warns of the override and Lightning's lost step, as the recording shows."""
    out, truth = run(runs, "lightning")
    first, second = truth["warnings"]
    assert first == []
    codes = [w.split("] ")[0].split("[")[-1] for w in second]
    assert codes == ["hyperparameters-overridden", "saved-before-step"]
    rec = read_recording(out / "plateau.jsonl")
    ck = pf.load_checkpoint(out / "ckpts" / "epoch=3.ckpt")
    # saved inside epoch 3, after epoch 2's step
    assert [(s.segment, s.epoch) for s in rec.find(ck)] == [(0, 2)]
    resumed = [s for s in rec.steps if s.segment == 1]
    assert resumed[0].epoch == 4  # epoch 3 was never stepped
    assert resumed[0].last_epoch == ck.state.last_epoch + 1
    uninterrupted = {s.epoch: s.last_epoch for s in rec.steps if s.segment == 0}
    assert resumed[0].last_epoch == uninterrupted[4] - 1


def test_lightning_checkpoints_hold_nothing_of_ours(runs: dict[str, Any]) -> None:
    """Lightning's checkpoints load with weights_only=True and hold torch's own scheduler keys only."""
    out, _ = run(runs, "lightning")
    ck = torch.load(out / "ckpts" / "epoch=5.ckpt", weights_only=True)
    plain = torch.optim.lr_scheduler.ReduceLROnPlateau(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))]))
    assert sorted(ck["lr_schedulers"][0]) == sorted(plain.state_dict())


# ------------------------------------------------------------------------------------ Hugging Face


def test_hf_recording_is_what_the_trainer_did(runs: dict[str, Any]) -> None:
    """The Trainer's plateau steps (two param groups, epoch labels) are recorded exactly, run and resume."""
    out, truth = run(runs, "hf")
    rec = read_recording(out / "plateau.jsonl")
    assert rec.metric == "eval_loss" and len(rec.segments) == 2
    assert_steps_are_the_truth([s for s in rec.steps if s.segment == 0], truth["first"])
    assert_steps_are_the_truth([s for s in rec.steps if s.segment == 1], truth["second"])
    assert rec.verify() == []
    assert reduction_epochs(out) == reduced_epochs(truth["first"]) + reduced_epochs(truth["second"])
    assert reduced_epochs(truth["first"]), "the run must reduce the lr at least once"


def test_hf_resume_guard_reports_the_override_only(runs: dict[str, Any]) -> None:
    """Resuming with patience=2 in lr_scheduler_kwargs is reported; the Trainer's own order loses no step."""
    out, truth = run(runs, "hf")
    first, second = truth["warnings"]
    assert first == [] and len(second) == 1 and "[hyperparameters-overridden]" in second[0]
    assert "patience=2 -> 1" in second[0]
    rec = read_recording(out / "plateau.jsonl")
    ck = pf.load_checkpoint(out / "run" / "checkpoint-12")
    found = rec.find(ck)
    assert [(s.segment, s.epoch) for s in found] == [(0, 3.0)]  # HF saves after the evaluation's step
    resumed = [s for s in rec.steps if s.segment == 1]
    assert resumed[0].before == (found[0].best, found[0].num_bad_epochs, found[0].cooldown_counter,
                                 found[0].last_epoch)


# ------------------------------------------------------------------------------------ Keras


def test_keras_recording_is_what_the_callback_did(runs: dict[str, Any]) -> None:
    """Each fit is a segment under Keras's rules, equal to the live callback's state after every epoch."""
    out, truth = run(runs, "keras")
    rec = read_recording(out / "plateau.jsonl")
    assert [s.rules for s in rec.segments] == ["keras", "keras"]
    assert [s.state["best"] for s in rec.segments] == [None, None]  # Keras 3.15 resets best at each fit
    for seg, rows in enumerate(truth["fits"]):
        assert_steps_are_the_truth([s for s in rec.steps if s.segment == seg], rows, epoch_shift=1)
    assert rec.verify() == []
    reduced = [e for rows in truth["fits"] for e in reduced_epochs(rows, shift=1)]
    assert reduced and reduction_epochs(out) == reduced
    explained = [line for line in lines(out) if line[5:6].isdigit()]
    assert len(explained) == sum(map(len, truth["fits"]))
    # the third fit ran without the plateau callback: said, and no empty segment written
    assert [line for line in lines(out) if line.startswith("WARNING")] == [
        "WARNING plateau_forensics: 1 epochs and no ReduceLROnPlateau step recorded: is the plateau callback "
        "in fit(callbacks=...), and does it find its monitor 'val_loss' in the logs?"]


def test_keras_metrics_are_exact_floats(runs: dict[str, Any]) -> None:
    """The recorded val_loss is the float Keras logged, bit for bit, and a loss log reads it the same."""
    out, truth = run(runs, "keras")
    log = pf.read_losses(out / "plateau.jsonl")
    assert list(log.metrics) == [r["val"] for rows in truth["fits"] for r in rows]
    assert all(math.isfinite(m) for m in log.metrics)
