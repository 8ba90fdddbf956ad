"""Hugging Face Trainer cells of the scenario matrix: real ``transformers.Trainer`` runs, live truth.

``lr_scheduler_type="reduce_lr_on_plateau"``: the Trainer builds a real ReduceLROnPlateau (AdamW, decay and
no-decay param groups) and steps it after each evaluation with ``eval_loss``. A callback attaches the step
recorder to that instance at ``on_train_begin``, logs every ``on_log`` entry to a JSON Lines file (the user's
own log, next to the checkpoints' ``trainer_state.json``) and can stop the run at an epoch (the first process
of a ``resume_from_checkpoint`` resume). Every kept checkpoint's ``scheduler.pt`` is asserted equal to the
recorded state at its save.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import matrix_torch as mt
import torch
from matrix_record import StepRecorder, json_float, lrs_of, mark_discarded, plateau_state
from torch import nn

PATIENCE, FACTOR = 2, 0.5
COMMON = dict(
    learning_rate=mt.LR,
    weight_decay=0.1,
    lr_scheduler_type="reduce_lr_on_plateau",
    lr_scheduler_kwargs={"patience": PATIENCE, "factor": FACTOR, "cooldown": 2},
    per_device_train_batch_size=16,
    per_device_eval_batch_size=128,
    report_to=[],
    seed=0,
    use_cpu=True,
    save_total_limit=None,
    disable_tqdm=True,
    dataloader_num_workers=0,
)
EPOCH_ARGS = dict(eval_strategy="epoch", save_strategy="epoch", logging_strategy="epoch")
STEPS_ARGS = dict(
    eval_strategy="steps",
    eval_steps=4,
    save_strategy="steps",
    save_steps=4,
    logging_strategy="steps",
    logging_steps=4,
)


class RegressionSet(torch.utils.data.Dataset):
    """Rows as the dicts a Trainer collates: ``{"x": (8,), "labels": (1,)}``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


class TinyRegressor(nn.Module):
    """The 8-16-1 ReLU MLP with the Trainer's calling convention."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(mt.N_FEATURES, 16)
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        logits = self.head(torch.relu(self.backbone(x)))
        return {"loss": None if labels is None else nn.functional.mse_loss(logits, labels), "logits": logits}


def _callback(rec: StepRecorder, process: int, log_path: Path, stop_at_epoch: float | None, saves: list):
    from transformers import TrainerCallback

    class Witness(TrainerCallback):
        """Attach the recorder, write the user's JSON Lines log, record saves, stop at an epoch."""

        def on_train_begin(self, args, state, control, lr_scheduler=None, **kw):  # noqa: ANN001
            rec.process = process
            rec.epoch_fn = lambda: state.epoch
            rec.on_step = lambda entry: entry.update(global_step=state.global_step)
            rec.attach(lr_scheduler)
            self.optimizer = kw.get("optimizer")

        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({**logs, "step": state.global_step}) + "\n")

        def on_save(self, args, state, control, **kw):  # noqa: ANN001
            saves.append(
                {
                    "process": process,
                    "global_step": state.global_step,
                    "history_index": len(rec.history) - 1,
                    "opt_lr": lrs_of(self.optimizer),
                }
            )

        def on_epoch_end(self, args, state, control, **kw):  # noqa: ANN001
            if stop_at_epoch is not None and state.epoch >= stop_at_epoch:
                control.should_training_stop = True  # the process is stopped here (a crash, a time limit)

    return Witness()


class Scenario:
    """Trainer runs sharing an output directory, a recorder and the user's log folder."""

    def __init__(self, runs: Path, name: str) -> None:
        self.name, self.dir = name, runs / name
        self.dir.mkdir(parents=True)
        self.rec = StepRecorder()
        self.saves: list[dict] = []
        self.processes: list[dict] = []

    def train(
        self, args: dict, epochs: int, stop_at_epoch: float | None = None, resume: str | None = None
    ) -> None:
        from transformers import PrinterCallback, Trainer, TrainingArguments

        process = len(self.processes)
        log = self.dir / f"log_{process}.jsonl"
        d = mt.make_data()
        torch.manual_seed(0)
        model = TinyRegressor()
        cwd = os.getcwd()
        os.chdir(self.dir)  # a relative output_dir: no machine path in trainer_state.json
        try:
            targs = TrainingArguments(output_dir="out", num_train_epochs=epochs, **COMMON, **args)
            trainer = Trainer(
                model=model,
                args=targs,
                train_dataset=RegressionSet(d.x_train, d.y_train),
                eval_dataset=RegressionSet(d.x_val, d.y_val),
                callbacks=[_callback(self.rec, process, log, stop_at_epoch, self.saves)],
            )
            trainer.remove_callback(PrinterCallback)
            trainer.train(resume_from_checkpoint=resume)
        finally:
            os.chdir(cwd)
        self.processes.append({"index": process, "log": log, "resumed_from": resume})

    def checkpoint(self, step: int) -> Path:
        return self.dir / "out" / f"checkpoint-{step}"

    def save_record(self, step: int) -> dict:
        """The recorded save of ``checkpoint-<step>``, checked against its scheduler.pt and optimizer.pt."""
        rec = [s for s in self.saves if s["global_step"] == step][-1]
        folder = self.checkpoint(step)
        saved = plateau_state(torch.load(folder / "scheduler.pt", weights_only=True))
        assert saved == self.rec.history[rec["history_index"]]["state_after"], (folder, saved)
        opt = torch.load(folder / "optimizer.pt", weights_only=True)
        assert [g["lr"] for g in opt["param_groups"]] == rec["opt_lr"], folder
        return rec


def eval_rows(entries: list[dict], history: list[dict], process_of_step) -> list[dict[str, Any]]:  # noqa: ANN001
    """One truth row per eval entry of an HF log (log_history or the user's JSON Lines copy of it)."""
    rows, lr_tok = [], None
    for e in entries:
        if "learning_rate" in e:
            lr_tok = e["learning_rate"]
        if "eval_loss" not in e:
            continue
        p = process_of_step(e["step"])
        steps = [i for i, h in enumerate(history) if h["process"] == p and h["global_step"] == e["step"]]
        assert len(steps) == 1 and history[steps[0]]["metric"] == e["eval_loss"], (e, steps)
        h = history[steps[0]]
        assert lr_tok is None or lr_tok == h["lr_before"][0], (e, lr_tok, h)
        rows.append(
            {
                "epoch": e["epoch"],
                "process": p,
                "step": e["step"],
                "val_loss": e["eval_loss"],
                "lr_used": h["lr_before"],
                "lr_end": h["lr_after"],
                "steps": steps,
                "superseded": False,
                "logged": {
                    "eval_loss": repr(e["eval_loss"]),
                    "learning_rate": None if lr_tok is None else repr(lr_tok),
                },
            }
        )
        lr_tok = None
    return rows


def write_cell(
    root: Path,
    sc: Scenario,
    name: str,
    step: int,
    logs: list[int],
    position: str,
    stories: set[str],
    description: str,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Copy ``checkpoint-<step>`` (and the given JSON Lines logs) into the cell and write truth.json."""
    folder = root / "hf" / sc.name / name
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(sc.checkpoint(step), folder / f"checkpoint-{step}")
    for p in logs:
        shutil.copyfile(sc.processes[p]["log"], folder / sc.processes[p]["log"].name)
    save = sc.save_record(step)
    hi = save["history_index"]
    history = sc.rec.history
    starts = {
        p["index"]: min(h["global_step"] for h in history if h["process"] == p["index"]) for p in sc.processes
    }

    def process_of_step(s: int) -> int:
        return max(p for p, first in starts.items() if first <= s)

    if logs:
        entries = [json.loads(line) for p in logs for line in sc.processes[p]["log"].read_text().splitlines()]
    else:
        entries = json.loads((sc.checkpoint(step) / "trainer_state.json").read_text())["log_history"]
    rows = eval_rows(entries, history, process_of_step)
    for r in rows:
        r["after_checkpoint"] = min(r["steps"]) > hi
        r["determinable"] = {"state": True, "lr": True} if r["after_checkpoint"] else None  # exact values
        r["best_logged"] = None
    ck_proc = history[hi]["process"]
    processes = [
        {
            "index": p["index"],
            "first_epoch": min(h["epoch"] for h in history if h["process"] == p["index"]),
            "last_epoch": max(h["epoch"] for h in history if h["process"] == p["index"]),
            "scheduler": "restored" if p["resumed_from"] else "fresh",
            "optimizer": "restored" if p["resumed_from"] else "fresh",
            "weights": "restored" if p["resumed_from"] else "fresh",
            "resumed_from": p["resumed_from"],
            "resumed_from_history_index": (
                sc.save_record(int(p["resumed_from"].split("-")[-1]))["history_index"]
                if p["resumed_from"]
                else None
            ),
            "log_files": [p["log"].name],
        }
        for p in sc.processes
        if p["index"] <= max([ck_proc, *logs])
    ]
    kw = COMMON["lr_scheduler_kwargs"]
    truth = {
        "cell": f"hf/{sc.name}/{name}",
        "stack": "hf",
        "stories": sorted(stories),
        "expected_ambiguous_with": [],
        "description": description,
        "params": {"family": sc.name, **params, "fed_column": "eval_loss", "key_layout": "hf"},
        "scheduler": {
            "mode": "min",
            "factor": kw["factor"],
            "patience": kw["patience"],
            "threshold": 1e-4,
            "threshold_mode": "rel",
            "cooldown": kw["cooldown"],
            "min_lr": 0.0,
            "eps": 1e-8,
        },
        "initial_lr": [mt.LR, mt.LR],
        "log_style": {
            "format": "jsonl" if logs else "trainer_state",
            "float": "repr",
            "lr": "before",
            "lr_float": "repr",
            "epoch_base": 1,
            "files": "per-process",
            "text": None,
            "lr_name": "learning_rate",
            "writer": "HF Trainer log entries",
            "given": "last" if logs and logs[0] > 0 else "all",
        },
        "logs": [sc.processes[p]["log"].name for p in logs],
        "checkpoint": f"checkpoint-{step}",
        "checkpoint_position": position,
        "processes": processes,
        "history": [h for h in history if h["process"] <= max([ck_proc, *logs])],
        "rows": rows,
        "checkpoint_at": {
            "process": ck_proc,
            "epoch": history[hi]["epoch"],
            "after_step": True,
            "history_index": hi,
            "optimizer_lr": save["opt_lr"],
            "global_step": step,
        },
        "versions": {"torch": torch.__version__, "transformers": _version()},
    }
    mark_discarded(truth)
    (folder / "truth.json").write_text(json.dumps(json_float(truth), indent=1) + "\n", encoding="utf-8")
    return truth


def _version() -> str:
    import transformers

    return transformers.__version__


def positions(sc: Scenario, process: int = 0) -> dict[str, int]:
    """Global steps of checkpoints standing for each position, read from the live steps (saved after them)."""
    steps = [h for h in sc.rec.history if h["process"] == process]
    saved = {s["global_step"] for s in sc.saves if s["process"] == process}
    reduced = [
        h["global_step"] for h in steps if h["lr_after"] != h["lr_before"] and h["global_step"] in saved
    ]
    cool = [
        h["global_step"]
        for h in steps
        if h["lr_after"] == h["lr_before"]
        and h["global_step"] in saved
        and h["state_after"]["cooldown_counter"] > 0
    ]
    last = max(h["global_step"] for h in steps)
    out = {"early": sorted(saved)[2], "final": last}
    if [s for s in reduced if s < last]:
        out["after-reduction"] = [s for s in reduced if s < last][0]
    if [s for s in cool if s < last]:
        out["in-cooldown"] = [s for s in cool if s < last][0]
    return out


def make(root: Path, quick: bool) -> dict[str, Any]:
    """Every HF cell (fewer with ``quick``); returns the summary for matrix.json."""
    import logging

    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    runs = Path(tempfile.mkdtemp(prefix="matrix_hf_"))
    cells, trainings = [], 0
    try:
        sc = Scenario(runs, "eval-per-epoch")
        sc.train(EPOCH_ARGS, 20)
        trainings += 1
        epoch_positions = positions(sc)
        for position, step in epoch_positions.items():
            for logs, suffix in (([], "own-log"), ([0], "jsonl")):
                cells.append(
                    write_cell(
                        root,
                        sc,
                        f"{position}.{suffix}",
                        step,
                        logs,
                        position,
                        set(),
                        "eval/save/log per epoch, 20 epochs of 8 steps; the scheduler steps "
                        "after each evaluation, before the save.",
                        {"checkpoint_step": step},
                    )["cell"]
                )
        sc = Scenario(runs, "eval-steps")
        sc.train(STEPS_ARGS, 20)
        trainings += 1
        for position, step in positions(sc).items():
            for logs, suffix in (([], "own-log"), ([0], "jsonl")):
                cells.append(
                    write_cell(
                        root,
                        sc,
                        f"{position}.{suffix}",
                        step,
                        logs,
                        position,
                        set(),
                        "eval/save/log every 4 of 8 steps (2 evaluations per epoch), 20 epochs: "
                        "last_epoch counts evaluations.",
                        {"checkpoint_step": step},
                    )["cell"]
                )
        for position in ("after-reduction", "in-cooldown")[: 1 if quick else 2]:
            step = epoch_positions[position]
            epoch = step // 8
            sc = Scenario(runs, f"resume-from-checkpoint-{position}")
            sc.train(EPOCH_ARGS, 20, stop_at_epoch=epoch)
            sc.train(EPOCH_ARGS, 20, resume=f"out/checkpoint-{step}")
            trainings += 2
            final = max(s["global_step"] for s in sc.saves)
            desc = (
                f"Process 0 stopped after epoch {epoch} (checkpoint-{step}); process 1 is "
                f"trainer.train(resume_from_checkpoint='checkpoint-{step}') to epoch 20."
            )
            params = {"resume_after_epoch": epoch, "resume_position": position}
            for name, ck, logs, extra, pos in (
                ("final.own-log", final, [], set(), "final"),
                ("final.jsonl", final, [0, 1], set(), "final"),
                ("resume.jsonl", step, [0, 1], set(), position),
                ("final.jsonl-process-1-only", final, [1], {"log-starts-mid-run"}, "final"),
            ):
                cells.append(write_cell(root, sc, name, ck, logs, pos, extra, desc, params)["cell"])
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    return {
        "cells": len(cells),
        "trainings": trainings,
        "seconds": round(time.perf_counter() - t0, 2),
        "refused": [],
        "cell_names": cells,
    }
