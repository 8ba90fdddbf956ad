"""Lightning cells of the scenario matrix: real ``lightning.Trainer.fit`` runs, truth from the live scheduler.

The LightningModule is the 8-16-1 MLP with Adam and a real ReduceLROnPlateau in Lightning's scheduler dict;
Lightning's own CSVLogger (with LearningRateMonitor) writes the logs and ModelCheckpoint the checkpoints. The
scheduler instance records every step (``matrix_record``), a callback records every checkpoint save, so each
cell's truth comes from the live objects; every checkpoint file's saved scheduler state is asserted equal to
the recorded state at its save.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import matrix_evidence as ev
import matrix_torch as mt
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from matrix_record import StepRecorder, json_float, lrs_of, mark_discarded, plateau_state
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import DataLoader, TensorDataset

SEED = 7
BATCH = 16  # 8 training batches per epoch
SCHED = dict(
    mode="min", factor=0.5, patience=2, threshold=1e-4, threshold_mode="rel", cooldown=2, min_lr=0.0, eps=1e-8
)
LOGGER = "csv_logs"
LR_COL = "lr-Adam"


class PlateauModule(L.LightningModule):
    """The 8-16-1 MLP; ``configure_optimizers`` returns Adam + ReduceLROnPlateau in Lightning's dict form."""

    recorder: StepRecorder | None = None

    def __init__(
        self,
        monitor: str = "val_loss",
        interval: str = "epoch",
        frequency: int = 1,
        strict: bool = True,
        train_on_epoch: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(mt.N_FEATURES, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        # train_on_epoch=False is self.log's default in training_step: "train_loss" is the step's loss
        self.log("train_loss", loss, on_step=True, on_epoch=self.hparams.train_on_epoch)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y), on_step=False, on_epoch=True)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        opt = torch.optim.Adam(self.parameters(), lr=mt.LR)
        sched = ReduceLROnPlateau(opt, **SCHED)
        if self.recorder is not None:
            self.recorder.attach(sched)
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


class Witness(Callback):
    """Records, from the live trainer, the lr at each epoch start and the step count at each save."""

    def __init__(self, rec: StepRecorder, process: int, saves: list[dict], starts: dict) -> None:
        self.rec, self.process, self.saves, self.starts = rec, process, saves, starts

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.starts[(self.process, trainer.current_epoch)] = lrs_of(trainer.optimizers[0])

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.saves.append(
            {
                "process": self.process,
                "epoch": trainer.current_epoch,
                "global_step": trainer.global_step,
                "history_index": len(self.rec.history) - 1,
                "opt_lr": lrs_of(trainer.optimizers[0]),
            }
        )


def loaders() -> tuple[DataLoader, DataLoader]:
    d = mt.make_data()
    g = torch.Generator().manual_seed(SEED)
    return (
        DataLoader(TensorDataset(d.x_train, d.y_train), batch_size=BATCH, shuffle=True, generator=g),
        DataLoader(TensorDataset(d.x_val, d.y_val), batch_size=mt.N_VAL),
    )


class Scenario:
    """One folder of Lightning runs sharing a logger directory (version_0, version_1, ...) and a recorder."""

    def __init__(self, runs: Path, name: str) -> None:
        self.dir = runs / name
        self.dir.mkdir(parents=True)
        self.name = name
        self.rec = StepRecorder()
        self.saves: list[dict] = []
        self.starts: dict[tuple[int, int], list[float]] = {}
        self.processes: list[dict] = []

    def fit(
        self,
        max_epochs: int,
        weights_from: Path | None = None,
        ckpt_path: Path | None = None,
        **module_kwargs: Any,
    ) -> L.Trainer:
        """One training process: a new Trainer (a weights-only resume loads ``weights_from`` first)."""
        process = len(self.processes)
        L.seed_everything(SEED, workers=True, verbose=False)
        model = (
            PlateauModule.load_from_checkpoint(weights_from)
            if weights_from
            else PlateauModule(**module_kwargs)
        )
        model.recorder = self.rec
        trainer = L.Trainer(
            max_epochs=max_epochs,
            accelerator="cpu",
            devices=1,
            deterministic=True,
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=4,
            logger=CSVLogger(self.dir, name=LOGGER),
            callbacks=[
                LearningRateMonitor(logging_interval="epoch"),
                ModelCheckpoint(save_top_k=-1, every_n_epochs=1, save_last=True, filename="{epoch}-{step}"),
                Witness(self.rec, process, self.saves, self.starts),
            ],
        )
        self.rec.process = process
        self.rec.epoch_fn = lambda: trainer.current_epoch
        train, val = loaders()
        trainer.fit(model, train, val, ckpt_path=str(ckpt_path) if ckpt_path else None)
        self.processes.append(
            {
                "index": process,
                "version": trainer.logger.version,
                "ckpt_path": ckpt_path,
                "weights_only": weights_from is not None,
                "weights_from": weights_from,
                "spe": trainer.num_training_batches,
            }
        )
        return trainer

    def version_dir(self, process: int) -> Path:
        return self.dir / LOGGER / f"version_{self.processes[process]['version']}"

    def ckpt(self, process: int, epoch: int) -> Path:
        """The ``epoch=E-step=S.ckpt`` file that process saved for ``epoch``."""
        found = sorted((self.version_dir(process) / "checkpoints").glob(f"epoch={epoch}-step=*.ckpt"))
        assert len(found) == 1, found
        return found[0]

    def save_record(self, path: Path, process: int) -> dict:
        """The recorded save of this checkpoint file, checked against the file's own content."""
        ck = torch.load(path, weights_only=True)
        rec = [
            s
            for s in self.saves
            if s["process"] == process and s["epoch"] == ck["epoch"] and s["global_step"] == ck["global_step"]
        ][-1]
        saved = plateau_state(ck["lr_schedulers"][0])
        hi = rec["history_index"]
        live = (
            self.rec.history[hi]["state_after"]
            if hi >= 0 and self.rec.history[hi]["process"] == process
            else None
        )
        if live is None:  # no step of this process yet: a fresh (or just restored) state
            assert saved["last_epoch"] == 0 or self.processes[process]["ckpt_path"], (path, saved)
        else:
            assert saved == live, (path, saved, live)
        assert [g["lr"] for g in ck["optimizer_states"][0]["param_groups"]] == rec["opt_lr"], path
        return rec


def read_metrics(path: Path, process: int) -> list[dict[str, Any]]:
    """The val rows of a CSVLogger metrics.csv: epoch, val_loss, the lr row logged at that epoch's start."""
    with open(path, newline="") as f:
        lines = list(csv.DictReader(f))
    out, lr_tok = [], None
    train_epoch = {int(r["epoch"]): r["train_loss_epoch"] for r in lines if r.get("train_loss_epoch")}
    train_last = {
        int(r["epoch"]): r["train_loss"] for r in lines if r.get("train_loss")
    }  # last step's, in order
    for r in lines:
        if r.get(LR_COL):
            lr_tok = r[LR_COL]
        if r.get("val_loss"):
            e = int(r["epoch"])
            out.append(
                {
                    "epoch": e,
                    "process": process,
                    "val_loss": float(r["val_loss"]),
                    "logged": {
                        "val_loss": r["val_loss"],
                        "lr": lr_tok,
                        **({"train_loss_epoch": train_epoch[e]} if e in train_epoch else {}),
                        **({"train_loss": train_last[e]} if e in train_last else {}),
                    },
                }
            )
    return out


# --------------------------------------------------------------------------------------------------
# cells


def positions(sc: Scenario, process: int = 0) -> dict[str, int]:
    """Checkpoint epochs of ``process`` standing for each position, read from its live steps."""
    steps = [h for h in sc.rec.history if h["process"] == process]
    epochs = sorted({h["epoch"] for h in steps})
    reduced = [e for e in epochs if any(h["lr_after"] != h["lr_before"] for h in steps if h["epoch"] == e)]
    cool = [
        e
        for e in epochs
        if e not in reduced
        and [h for h in steps if h["epoch"] == e][-1]["state_after"]["cooldown_counter"] > 0
    ]
    last = max(epochs)
    out = {"early": 3, "final": last}
    if [e for e in reduced if 4 <= e <= last - 3]:
        out["after-reduction"] = [e for e in reduced if 4 <= e <= last - 3][0]
    if [e for e in cool if e <= last - 3]:
        out["in-cooldown"] = [e for e in cool if e <= last - 3][0]
    return out


def _rows_read(history: list[dict], process: int, metrics_csv: Path, fed_column: str) -> dict[int, float]:
    """For each step of ``process`` (history index), the epoch of the row whose value it read: the last step of
    epoch E reads row E when it was fed that row's value (it ran after E's validation); every other step of
    epoch E reads the latest validation before it, row E - 1."""
    values = {r["epoch"]: r["logged"].get(fed_column) for r in read_metrics(metrics_csv, process)}
    mine = [i for i, h in enumerate(history) if h["process"] == process]
    last_of = {history[i]["epoch"]: i for i in mine}
    out: dict[int, float] = {}
    for i in mine:
        e = history[i]["epoch"]
        own = values.get(e)
        if last_of[e] == i and own is not None and float(own) == history[i]["metric"]:
            out[i] = e
        else:
            out[i] = e - 1
    return out


def unseen_resume_twins(sc: Scenario, stories: set[str], c_proc: int, logs: list[int]) -> list[list[str]]:
    """Stories that differ from the cell's only in what the unseen resume did to the lr (as
    ``matrix_cells.unseen_resume_twins`` says for plain torch): only logs of processes after a resume are
    given, and the checkpoint is one of theirs, so nothing in the inputs comes from before that resume (a
    Lightning checkpoint keeps no lr history). What the resume did to the optimizer shows only as the lr the
    log starts with. Whether it lost a step is not among them: the checkpoint's ``global_step`` pins that."""
    first = min(logs, default=0)
    if first == 0 or c_proc < first or not sc.processes[first]["ckpt_path"] or sc.processes[first]["weights_only"]:
        return []
    lr_codes = {"optimizer-not-restored", "lr-overwritten"}
    base = set(stories) - lr_codes
    twins = [base, base | {"optimizer-not-restored"}, base | {"lr-overwritten"}]
    return [sorted(t) for t in twins if t != set(stories)]


def write_cell(
    root: Path,
    sc: Scenario,
    name: str,
    stories: set[str],
    ckpt: tuple[int, Path],
    logs: list[int],
    position: str,
    params: dict[str, Any],
    description: str,
    fed_column: str = "val_loss",
) -> dict[str, Any]:
    """Copy the given checkpoint and metrics.csv files into the cell folder and write its truth.json."""
    folder = root / "lightning" / sc.name / name
    folder.mkdir(parents=True, exist_ok=True)
    c_proc, c_path = ckpt
    rel = lambda p: p.relative_to(sc.dir).as_posix()  # noqa: E731
    for p in [c_path] + [sc.version_dir(i) / "metrics.csv" for i in logs]:
        (folder / rel(p)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, folder / rel(p))
    save = sc.save_record(c_path, c_proc)
    hi = save["history_index"]
    involved = sorted({c_proc, *logs, *(i for i in range(c_proc + 1))})
    history = [h for h in sc.rec.history if h["process"] in involved]
    assert history == sc.rec.history[: len(history)], "processes of a cell are a prefix of the scenario's"
    ck_epoch_steps = [
        i for i, h in enumerate(history) if h["process"] == c_proc and h["epoch"] == save["epoch"]
    ]
    rows = []
    for p in logs:
        read = _rows_read(history, p, sc.version_dir(p) / "metrics.csv", fed_column)
        for r in read_metrics(sc.version_dir(p) / "metrics.csv", p):
            # a row's steps are the ones that read its value (as the tool labels them), not the ones that ran
            # during its epoch: with interval='step' the stale steps of epoch E+1 still read row E
            steps = [i for i, h in enumerate(history) if h["process"] == p and read[i] == r["epoch"]]
            live_lr = sc.starts[(p, r["epoch"])]
            assert r["logged"]["lr"] is not None and [float(r["logged"]["lr"])] == live_lr, (p, r, live_lr)
            for i in steps:  # every step of the row was fed this row's value of the fed column
                assert history[i]["metric"] == float(r["logged"][fed_column]), (r, history[i])
            proc = sc.processes[p]
            after = bool(steps) and min(steps) > hi
            lineage_known = p == c_proc or (proc["ckpt_path"] == c_path) or proc["weights_only"] or p > c_proc
            rows.append(
                {
                    **r,
                    "lr_used": live_lr,
                    "lr_end": history[steps[-1]]["lr_after"] if steps else live_lr,
                    "steps": steps,
                    "superseded": False,
                    "after_checkpoint": after,
                    "determinable": {"state": lineage_known, "lr": lineage_known} if after else None,
                    "best_logged": None,
                    "file": rel(sc.version_dir(p) / "metrics.csv"),
                }
            )
    processes = []
    for i in involved:
        pr = sc.processes[i]
        src = pr["ckpt_path"]
        processes.append(
            {
                "index": i,
                "first_epoch": min(h["epoch"] for h in history if h["process"] == i),
                "last_epoch": max(h["epoch"] for h in history if h["process"] == i),
                "scheduler": "restored" if src else "fresh",
                "optimizer": "restored" if src else "fresh",
                "weights": "restored" if (src or pr["weights_only"]) else "fresh",
                "resumed_from": rel(src)
                if src
                else (rel(pr["weights_from"]) if pr["weights_only"] else None),
                "resumed_from_history_index": sc.save_record(src, i - 1)["history_index"] if src else None,
                "log_files": [rel(sc.version_dir(i) / "metrics.csv")],
            }
        )
    truth = {
        "cell": f"lightning/{sc.name}/{name}",
        "stack": "lightning",
        "stories": sorted(stories),
        "expected_ambiguous_with": unseen_resume_twins(sc, stories, c_proc, logs),
        "description": description,
        "params": {"family": sc.name, **params, "fed_column": fed_column, "key_layout": "lightning"},
        "scheduler": SCHED,
        "initial_lr": [mt.LR],
        "log_style": {
            "format": "csv",
            "float": "repr",
            "lr": "before",
            "lr_float": "repr",
            "epoch_base": 0,
            "files": "per-process",
            "text": None,
            "lr_name": LR_COL,
            "writer": "lightning CSVLogger",
            "given": "last" if logs and logs[0] > 0 else "all",
        },
        "logs": [rel(sc.version_dir(i) / "metrics.csv") for i in logs],
        "checkpoint": rel(c_path),
        "checkpoint_position": position,
        "processes": processes,
        "history": history,
        "rows": rows,
        "checkpoint_at": {
            "process": c_proc,
            "epoch": save["epoch"],
            "after_step": all(i <= hi for i in ck_epoch_steps),
            "history_index": hi if hi >= 0 else None,
            "optimizer_lr": save["opt_lr"],
            "global_step": save["global_step"],
        },
        "versions": {"torch": torch.__version__, "lightning": L.__version__},
    }
    mark_discarded(truth)
    why = story_refusal(truth)
    if why is not None:
        shutil.rmtree(folder)
        return {"cell": truth["cell"], "refused": why}
    (folder / "truth.json").write_text(json.dumps(json_float(truth), indent=1) + "\n", encoding="utf-8")
    return truth


def story_refusal(t: dict[str, Any]) -> str | None:
    """Why the cell's stories do not show in its inputs (None: they do), from the live records in ``t``."""
    hist, stories, ck = t["history"], set(t["stories"]), t["checkpoint_at"]
    if "saved-before-step" in stories and ck["after_step"]:
        return "the checkpoint holds its epoch's step"
    if "steps-per-row" in stories and not any(len(r["steps"]) > 1 for r in t["rows"]):
        return "no row was stepped more than once"
    if "log-starts-mid-run" in stories and min(r["epoch"] for r in t["rows"]) == 0:
        return "the given log starts at epoch 0"
    if "weights-only-resume" in stories and [r["epoch"] for r in t["rows"] if r["process"] == 1][:1] != [0]:
        return "the new run does not start at epoch 0"
    if "resume-skipped-step" in stories:
        p1 = [i for i, h in enumerate(hist) if h["process"] == 1]
        src = t["processes"][1]["resumed_from_history_index"]
        skipped = [h["metric"] for h in hist if h["process"] == 0 and h["epoch"] == hist[src + 1]["epoch"]]
        state = hist[src]["state_after"]
        if not ev.story_shows(t, p1, skipped + [hist[i]["metric"] for i in p1], state, hist[src]["lr_after"]):
            return "taking the skipped step would change nothing the inputs show"
    if "wrong-metric" in stories:
        rows = [r for r in t["rows"] if r["process"] == 0]
        lineage = [i for r in rows for i in r["steps"]]
        if not ev.story_shows(t, lineage, [r["val_loss"] for r in rows], None, None):
            return "feeding val_loss would give the same lrs and checkpoint"
    return None


def quiet() -> None:
    """Silence Lightning's info logs and the warnings this tiny CPU set-up triggers by design."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*conditioned on metric .* which is not available.*")
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings(
        "ignore", message=r".*The dirpath has changed from.*"
    )  # fit(ckpt_path), by design
    warnings.filterwarnings(
        "ignore", message=r".*isinstance\(treespec, LeafSpec\).*"
    )  # lightning vs torch 2.13


def make(root: Path, quick: bool) -> dict[str, Any]:
    """Every Lightning cell (fewer with ``quick``); returns the summary for matrix.json."""
    t0 = time.perf_counter()
    quiet()
    runs = Path(tempfile.mkdtemp(prefix="matrix_lightning_"))
    cells: list[str] = []
    fits = 0
    sbs, rss = "saved-before-step", "resume-skipped-step"

    # plain run: each checkpoint is saved before its epoch's step
    plain = Scenario(runs, "plain")
    plain.fit(20)
    fits += 1
    pos = positions(plain)
    for position, e in pos.items():
        t = write_cell(
            root,
            plain,
            f"{position}.e{e}",
            {sbs},
            (0, plain.ckpt(0, e)),
            [0],
            position,
            {"checkpoint_epoch": e},
            "20 epochs uninterrupted; Lightning saves epoch E's checkpoint before epoch E's plateau step.",
        )
        cells.append(t["cell"] if "refused" not in t else t)

    # weights-only resume: load_from_checkpoint + a new Trainer.fit (version_1 of the same logger dir)
    e = pos.get("after-reduction", pos["early"])
    src = plain.ckpt(0, e)
    plain.name = "weights-only-resume"
    plain.fit(12, weights_from=src)
    fits += 1
    for position, (proc, ep) in {"after-reduction": (0, e), "final": (1, 11)}.items():
        t = write_cell(
            root,
            plain,
            f"{position}.{'resume' if proc == 0 else 'final'}",
            {sbs, "weights-only-resume"},
            (proc, plain.ckpt(proc, ep)),
            [0, 1],
            position,
            {"resume_after_epoch": e},
            f"20 epochs, then PlateauModule.load_from_checkpoint(epoch={e}) and a new Trainer.fit of 12 "
            "epochs: a new run from epoch 0 with a fresh optimizer and scheduler (version_1).",
        )
        cells.append(t["cell"] if "refused" not in t else t)

    # fit(ckpt_path) resumes: the checkpoint epoch's step is never taken
    for position in ("after-reduction", "in-cooldown")[: 1 if quick else 2]:
        e = pos[position]
        sc = Scenario(runs, f"fit-ckpt-path-{position}")
        sc.fit(e + 1)
        sc.fit(20, ckpt_path=sc.ckpt(0, e))
        fits += 2
        desc = (
            f"Run 1 trains epochs 0..{e} (version_0); run 2 is fit(ckpt_path='epoch={e}-...ckpt') to "
            "20 epochs "
            "(version_1): the checkpoint was saved before epoch {e}'s step, which run 2 never takes."
        )
        params = {"resume_after_epoch": e, "resume_position": position}
        for name, ck, logs, extra in (
            ("resume", (0, sc.ckpt(0, e)), [0, 1], set()),
            ("final", (1, sc.ckpt(1, 19)), [0, 1], set()),
            ("final.version_1-only", (1, sc.ckpt(1, 19)), [1], {"log-starts-mid-run"}),
            ("resume.version_1-only", (0, sc.ckpt(0, e)), [1], {"log-starts-mid-run"}),
        ):
            pos_name = "final" if name.startswith("final") else position
            t = write_cell(root, sc, name, {sbs, rss} | extra, ck, logs, pos_name, params, desc)
            cells.append(t["cell"] if "refused" not in t else t)

    # interval='step', frequency=4: two plateau steps per epoch, the first one stale
    sc = Scenario(runs, "interval-step")
    sc.fit(12, interval="step", frequency=4, strict=False)
    fits += 1
    for position, e in positions(sc).items():
        t = write_cell(
            root,
            sc,
            f"{position}.e{e}",
            {"steps-per-row"},
            (0, sc.ckpt(0, e)),
            [0],
            position,
            {"k": 2, "stale": True, "checkpoint_epoch": e},
            "interval='step', frequency=4, strict=False: 2 plateau steps per 8-batch epoch; the first "
            "(batch 4) re-reads the previous epoch's val_loss, the one before any validation is skipped.",
        )
        cells.append(t["cell"] if "refused" not in t else t)

    # monitor='train_loss' logged with self.log's training_step default (on_step only): the last step's loss
    sc = Scenario(runs, "monitor-train-loss")
    sc.fit(20, monitor="train_loss", train_on_epoch=False)
    fits += 1
    for position, e in positions(sc).items():
        t = write_cell(
            root,
            sc,
            f"{position}.e{e}",
            {sbs, "wrong-metric"},
            (0, sc.ckpt(0, e)),
            [0],
            position,
            {"checkpoint_epoch": e, "fed_rows": "train_loss of the epoch's last training step"},
            "monitor='train_loss', logged with self.log('train_loss', loss) (on_step only): the "
            "scheduler is fed the epoch's last step loss, which metrics.csv has on that step's row, "
            "while val_loss is logged too.",
            fed_column="train_loss",
        )
        cells.append(t["cell"] if "refused" not in t else t)
    shutil.rmtree(runs, ignore_errors=True)
    refused = [c for c in cells if isinstance(c, dict)]
    names = [c for c in cells if not isinstance(c, dict)]
    return {
        "cells": len(names),
        "trainings": fits,
        "seconds": round(time.perf_counter() - t0, 2),
        "refused": refused,
        "cell_names": names,
    }
