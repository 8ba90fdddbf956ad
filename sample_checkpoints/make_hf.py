"""Regenerate the Hugging Face Trainer fixtures in ``sample_checkpoints/hf/`` from real ``Trainer`` runs.

Usage: ``python sample_checkpoints/make_hf.py [OUTDIR]`` (default: ``hf/`` next to this script).

Each scenario is a real ``transformers.Trainer`` run (no hub download: the model is built from code) with
``lr_scheduler_type="reduce_lr_on_plateau"``: an 8-16-1 ReLU MLP (``forward(x, labels=None)`` returns
``{"loss", "logits"}``) on the seeded synthetic regression set of ``make_samples.py``, AdamW, and the
Trainer's own decay / no-decay param groups. The run trains in a temporary folder; two checkpoint
folders are copied out unchanged (every file the Trainer wrote, ``training_args.bin`` included: it is a
pickle that ``plateau_forensics`` must never open), next to a ``truth.json`` with what the generator
read back (``torch.load(weights_only=True)`` and ``json``) and checked.

Scenarios:

* ``epoch/``: ``eval_strategy = save_strategy = logging_strategy = "epoch"`` for 20 epochs of 8 optimizer
  steps; checkpoints ``checkpoint-72`` (epoch 9, one bad evaluation pending) and ``checkpoint-160``
  (the last, saved right after a reduction that no logged ``learning_rate`` shows).
* ``eval_steps/``: ``eval_strategy = save_strategy = logging_strategy = "steps"`` every 4 optimizer
  steps (two evaluations per epoch) for 10 epochs; checkpoints ``checkpoint-44`` (epoch 5.5) and
  ``checkpoint-80``. The scheduler's ``last_epoch`` counts evaluations, not epochs.

Facts asserted for every kept checkpoint (``shared/FORMATS.md`` section 3, ``PAINS.md`` row 20):
``scheduler.pt['last_epoch']`` equals the number of ``eval_loss`` entries in that checkpoint's
``trainer_state.json``; a real ``ReduceLROnPlateau`` stepped with those ``eval_loss`` values (the default
``metric_for_best_model="loss"``) reproduces the saved state and the optimizer's lrs, so the checkpoint is
saved *after* the step of its own evaluation; each ``learning_rate`` in ``log_history`` is the lr used
by the optimizer steps it was logged after (the lr after the previous evaluation's step); the two
param groups share one lr; the last checkpoint's ``log_history`` ends with an eval entry.

``truth.json`` also holds ``live``: what the real scheduler did while the Trainer ran, recorded from the
live objects by a ``TrainerCallback`` and ``_truth.py`` (every step's state; per evaluation, the row of
``log_history`` and the lr every group trained with since the previous one; which checkpoint folder was
saved after which step). The tests judge the tool against it, for the committed fixtures and a fresh
regeneration alike; nothing compares two runs' numbers or bytes.

Determinism: the CPU pins of ``_pin_cpu.py`` are set before torch is imported, the Trainer is seeded
(``seed=0``), and the run directory is given as a relative path so that ``best_model_checkpoint`` holds
no machine path. A rerun on the same machine writes the same numbers (timing fields aside); another CPU
or math library trains to other last bits, which is why no test compares them.
"""

from __future__ import annotations

import os

import _pin_cpu  # noqa: F401 - must run before torch loads (see _pin_cpu.py)

# isort: split

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _truth import Recorder, dumps
from make_samples import N_FEATURES, make_data

#: The scheduler.pt keys copied into truth.json (mode_worse is inf: not JSON).
SCHEDULER_KEYS = ("factor", "patience", "cooldown", "threshold", "threshold_mode", "mode", "eps", "min_lrs",
                  "default_min_lr", "last_epoch", "_last_lr", "best", "num_bad_epochs", "cooldown_counter")


class RegressionSet(torch.utils.data.Dataset):
    """The synthetic regression rows as the dicts a Trainer collates: ``{"x": (8,), "labels": (1,)}``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


class TinyRegressor(nn.Module):
    """The 8-16-1 ReLU MLP with the Trainer's calling convention: ``forward(x, labels)`` -> loss, logits."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(N_FEATURES, 16)
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor | None]:
        logits = self.head(torch.relu(self.backbone(x)))
        loss = None if labels is None else nn.functional.mse_loss(logits, labels)
        return {"loss": loss, "logits": logits}


DATA = dict(data_seed=0, noise=1.0, model_seed=0)
COMMON = dict(
    learning_rate=0.05,
    weight_decay=0.1,  # makes the decay / no-decay groups visibly different in optimizer.pt
    lr_scheduler_type="reduce_lr_on_plateau",
    lr_scheduler_kwargs={"patience": 1, "factor": 0.5},
    per_device_train_batch_size=16,
    per_device_eval_batch_size=128,
    report_to=[],
    seed=0,
    use_cpu=True,
    save_total_limit=None,
    disable_tqdm=True,
    dataloader_num_workers=0,
)
SCENARIOS: dict[str, dict[str, Any]] = {
    "epoch": dict(
        args=dict(eval_strategy="epoch", save_strategy="epoch", logging_strategy="epoch",
                  num_train_epochs=20),
        keep=(72, 160),
        description="eval/save/logging per epoch, 20 epochs x 8 steps; checkpoint-72 = epoch 9 with one bad "
        "evaluation pending, checkpoint-160 = the last, saved right after a reduction that no logged "
        "learning_rate shows; last_epoch = number of evaluations = epoch",
    ),
    "eval_steps": dict(
        args=dict(eval_strategy="steps", eval_steps=4, save_strategy="steps", save_steps=4,
                  logging_strategy="steps", logging_steps=4, num_train_epochs=10),
        keep=(44, 80),
        description="eval/save/logging every 4 of the 8 steps per epoch (2 evaluations per epoch), "
        "10 epochs; checkpoint-44 = epoch 5.5 with last_epoch 11: the scheduler counts evaluations",
    ),
}


def recording_callback(rec: Recorder) -> Any:
    """A ``TrainerCallback`` that tells ``rec`` about the scheduler, each evaluation row and each save."""
    from transformers import TrainerCallback

    class Record(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, lr_scheduler: Any = None,
                           **kw: Any) -> None:
            rec.watch(lr_scheduler)

        def on_evaluate(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kw: Any) -> None:
            # called after the eval entry is logged and before the Trainer steps the plateau scheduler
            entry = state.log_history[-1]
            assert "eval_loss" in entry, entry
            rec.row(entry["epoch"], [float(g["lr"]) for g in optimizer.param_groups])

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            rec.saved(f"checkpoint-{state.global_step}")

    return Record()


def train(
    workdir: Path, name: str, scenario: dict[str, Any], rec: Recorder
) -> tuple[list[dict[str, Any]], int]:
    """Run the Trainer in ``workdir/name`` (a relative output_dir); return log_history and steps per epoch."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

    data = make_data(DATA["data_seed"], DATA["noise"])
    torch.manual_seed(DATA["model_seed"])
    model = TinyRegressor()
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        args = TrainingArguments(output_dir=name, **COMMON, **scenario["args"])
        trainer = Trainer(model=model, args=args, train_dataset=RegressionSet(data.x_train, data.y_train),
                          eval_dataset=RegressionSet(data.x_val, data.y_val),
                          callbacks=[recording_callback(rec)])
        trainer.remove_callback(PrinterCallback)  # keep the generator's output to its own summary
        trainer.train()
    finally:
        os.chdir(cwd)
    steps_per_epoch = len(trainer.get_train_dataloader())
    return trainer.state.log_history, steps_per_epoch


def evals(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evaluation entries (those with ``eval_loss``), in order."""
    return [e for e in log_history if "eval_loss" in e]


def lr_used_per_eval(log_history: list[dict[str, Any]]) -> list[float | None]:
    """Per evaluation, the last ``learning_rate`` logged since the previous evaluation (None if none)."""
    out: list[float | None] = []
    current: float | None = None
    for entry in log_history:
        if "learning_rate" in entry:
            current = entry["learning_rate"]
        if "eval_loss" in entry:
            out.append(current)
            current = None
    return out


def torch_replay(
    eval_losses: list[float], lrs: list[float], kwargs: dict[str, Any]
) -> tuple[dict, list[list[float]]]:
    """Step a real ReduceLROnPlateau over ``eval_losses``; return its end state and each step's lr before."""
    params = [nn.Parameter(torch.zeros(1)) for _ in lrs]
    optimizer = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs, strict=True)])
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **kwargs)
    before = []
    for value in eval_losses:
        before.append([g["lr"] for g in optimizer.param_groups])
        scheduler.step(value)
    return scheduler.state_dict(), before


def refuses_weights_only(path: Path) -> bool:
    """True when ``torch.load(weights_only=True)`` refuses the file (it is never loaded otherwise)."""
    try:
        torch.load(path, weights_only=True)
    except Exception:  # torch raises UnpicklingError (or others) for disallowed globals
        return True
    return False


def check_checkpoint(ckpt: Path, final_history: list[dict[str, Any]], n_groups: int = 2) -> dict[str, Any]:
    """Assert the FORMATS.md facts on one checkpoint folder and return its truth.json entry."""
    sched = torch.load(ckpt / "scheduler.pt", weights_only=True)
    opt = torch.load(ckpt / "optimizer.pt", weights_only=True)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    history = state["log_history"]
    ev = evals(history)
    step = int(ckpt.name.removeprefix("checkpoint-"))
    opt_lrs = [g["lr"] for g in opt["param_groups"]]

    assert state["global_step"] == step, (state["global_step"], step)
    assert sched["last_epoch"] == len(ev), ("last_epoch counts evaluations", sched["last_epoch"], len(ev))
    assert ev and ev[-1]["step"] == step and history[-1] is ev[-1], "the checkpoint ends with its evaluation"
    assert history == final_history[: len(history)], "a checkpoint's log_history is a prefix of the run's"
    assert len(opt["param_groups"]) == n_groups, opt["param_groups"]
    assert [g["weight_decay"] for g in opt["param_groups"]] == [COMMON["weight_decay"], 0.0]
    assert len(set(opt_lrs)) == 1 and sched["_last_lr"] == opt_lrs, (sched["_last_lr"], opt_lrs)

    # A real scheduler stepped with this checkpoint's eval_loss values reaches exactly the saved state:
    # the step for the evaluation at `step` is already in scheduler.pt (saved after the step).
    kwargs = dict(COMMON["lr_scheduler_kwargs"])
    lrs0 = [COMMON["learning_rate"]] * n_groups
    replayed, before = torch_replay([e["eval_loss"] for e in ev], lrs0, kwargs)
    for key in ("last_epoch", "best", "num_bad_epochs", "cooldown_counter", "_last_lr"):
        assert replayed[key] == sched[key], (key, replayed[key], sched[key])
    # learning_rate in log_history = param_groups[0]['lr'] when logged = the lr used since the previous eval
    logged = lr_used_per_eval(history)
    assert logged == [b[0] for b in before], (logged, before)
    nxt = [e for e in final_history[len(history):] if "learning_rate" in e]
    if nxt:  # the next logged lr is the one the optimizer continued with
        assert nxt[0]["learning_rate"] == opt_lrs[0], (nxt[0], opt_lrs)
    else:
        assert "train_runtime" not in history[-1]

    assert refuses_weights_only(ckpt / "rng_state.pth") and refuses_weights_only(ckpt / "training_args.bin")
    return {
        "global_step": step,
        "epoch": state["epoch"],
        "files": sorted(p.name for p in ckpt.iterdir()),
        "scheduler": {k: sched[k] for k in SCHEDULER_KEYS},
        "optimizer_lrs": opt_lrs,
        "optimizer_weight_decay": [g["weight_decay"] for g in opt["param_groups"]],
        "eval_entries": len(ev),
        "log_history_entries": len(history),
        "eval_loss": [e["eval_loss"] for e in ev],
        "eval_epoch": [e["epoch"] for e in ev],
        "eval_step": [e["step"] for e in ev],
        "lr_used_per_eval": logged,
        "best_global_step": state["best_global_step"],
        "best_metric": state["best_metric"],
        "best_model_checkpoint": state["best_model_checkpoint"],
    }


def assert_story(name: str, rec: Recorder) -> None:
    """The story ``SCENARIOS[name]["description"]`` tells, checked on the live record."""
    held = {c["file"]: rec.steps[c["state_step"]] for c in rec.checkpoints}
    if name == "epoch":
        assert held["checkpoint-72"]["num_bad_epochs"] == 1, "checkpoint-72: one bad evaluation pending"
        end = held["checkpoint-160"]
        assert end is rec.steps[-1] and end["lr"][0] < end["lr_before"][0], "checkpoint-160 follows a cut"
    else:
        mid = held["checkpoint-44"]
        assert mid["last_epoch"] == 11 and rec.rows[10]["epoch"] == 5.5, "last_epoch counts evaluations"


def make_scenario(out: Path, work: Path, name: str) -> dict[str, Any]:
    """Train one scenario in ``work``, copy its kept checkpoints to ``out/name`` and write ``truth.json``."""
    scenario = SCENARIOS[name]
    rec = Recorder()
    history, steps_per_epoch = train(work, name, scenario, rec)
    rec.forget_checkpoints({f"checkpoint-{step}" for step in scenario["keep"]})
    dest = out / name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    checkpoints = {}
    for step in scenario["keep"]:
        src = work / name / f"checkpoint-{step}"
        shutil.copytree(src, dest / src.name)
        checkpoints[src.name] = check_checkpoint(dest / src.name, history)

    lr_log = [{"step": e["step"], "epoch": e["epoch"], "learning_rate": e["learning_rate"]}
              for e in history if "learning_rate" in e]
    ev = evals(history)
    used = lr_used_per_eval(history)
    reductions = [
        {"after_eval_step": ev[i]["step"], "lr_before": used[i], "lr_after": used[i + 1]}
        for i in range(len(ev) - 1) if used[i + 1] != used[i]
    ]
    assert len(reductions) >= 2, reductions
    truth = {
        "scenario": name,
        "description": scenario["description"],
        "training_arguments": {**COMMON, **scenario["args"], "output_dir": name},
        "data": DATA,
        "steps_per_epoch": steps_per_epoch,
        "evaluations": len(ev),
        "checkpoints": checkpoints,
        "eval_loss": [e["eval_loss"] for e in ev],
        "lr_history": lr_log,
        "reductions": reductions,
        "final_log_entry_keys": sorted(history[-1]),
        "rng_state_and_training_args_refuse_weights_only": True,
        "log": None,  # each checkpoint folder's own trainer_state.json log_history
        "live": rec.as_json(),
    }
    assert rec.rows and [r["epoch"] for r in rec.rows] == [e["epoch"] for e in ev], "one row per evaluation"
    assert_story(name, rec)
    (dest / "truth.json").write_text(dumps(truth), encoding="ascii")
    return truth


def main(argv: list[str]) -> None:
    """Write every scenario into ``argv[1]`` (default: ``hf/`` next to this script) and print a summary."""
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent / "hf"
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    with tempfile.TemporaryDirectory(prefix="make_hf_") as tmp:
        for name in SCENARIOS:
            truth = make_scenario(out, Path(tmp), name)
            print(f"{name}/: {truth['evaluations']} evaluations, {truth['steps_per_epoch']} steps/epoch, "
                  f"lr reductions after eval steps {[r['after_eval_step'] for r in truth['reductions']]}")
            for ck, info in truth["checkpoints"].items():
                s = info["scheduler"]
                print(f"  {ck}: epoch={info['epoch']} last_epoch={s['last_epoch']} "
                      f"eval entries={info['eval_entries']} best={s['best']!r} "
                      f"num_bad={s['num_bad_epochs']} lrs={info['optimizer_lrs']}")


if __name__ == "__main__":
    main(sys.argv)
