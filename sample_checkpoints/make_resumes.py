"""Regenerate the resume scenarios: real (resumed) training runs, one folder per ReduceLROnPlateau finding.

Usage: ``python sample_checkpoints/make_resumes.py [OUTDIR]`` (default: ``resumes/`` next to this file).

Same set-up and determinism pins as ``make_samples.py``, whose helpers this script imports (data, the
8-16-1 MLP, one training epoch, evaluation, CSV writing): a real Adam optimizer and a real
``torch.optim.lr_scheduler.ReduceLROnPlateau``. Each folder holds

* ``ckpt.pt``: ``torch.save`` of a plain dict ``{'epoch', 'model', 'optimizer', 'scheduler', 'val_loss'}``
  (unless the scenario says otherwise), ``epoch`` being the 1-based loop epoch it was saved at;
* ``log.csv``: ``epoch,train_loss,val_loss,lr`` (extra metric columns before ``lr``; ``lr_0,lr_1,..``
  with several param groups), one row per epoch in the order the runs wrote them, floats as ``repr``,
  ``lr`` = the LR used *during* the epoch (read before that epoch's ``scheduler.step``);
* ``scenario.json``: the ground truth (``finding``, ``resume_epoch``, ``checkpoint_epoch``,
  ``description`` and the numbers the story fixes), and ``live``: what the real scheduler did while the
  runs trained, recorded from the live objects (``_truth.py``: every step's state, the lr each logged
  epoch used, where the checkpoint was saved). The tests judge the tool against ``live``.

A "resume" is run A (epochs ``1..E``, checkpoint at ``E`` after that epoch's ``scheduler.step``) followed
by run B, which rebuilds model, optimizer and scheduler, loads (part of) the checkpoint as the scenario
says and trains ``E+1..N``, appending to the same log. Runs that share the default set-up take run A from
one uninterrupted baseline run (its rows, its recorded steps and its in-memory checkpoint snapshots),
which is also the "correct" continuation the resumed runs are compared with. Every story is asserted
below, so a rerun fails loudly if it stops telling it. The deprecated ``step(metric, epoch)`` form is
not used, so nothing warns (the tests run with ``filterwarnings = error``).
"""

from __future__ import annotations

import _pin_cpu  # noqa: F401 - must run before torch loads (see _pin_cpu.py)

# isort: split

import copy
import importlib.util
import math
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _import_make_samples():
    """Import the sibling ``make_samples.py`` as a module (it is a script, not a package member)."""
    spec = importlib.util.spec_from_file_location("make_samples", HERE / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_samples"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


ms = _import_make_samples()

import torch  # noqa: E402 - after make_samples is imported (it pins the CPU first)
from _truth import Recorder, dumps  # noqa: E402 - on sys.path through make_samples
from torch.optim.lr_scheduler import ReduceLROnPlateau  # noqa: E402

Row = ms.Row  # (epoch, train_loss, val_loss, [lr per group])

# The default set-up shared by most scenarios.
CFG = dict(data_seed=2, noise=1.0, model_seed=0, lr=1e-2)
SCHED = dict(mode="min", factor=0.5, patience=2, cooldown=1)
BASE_EPOCHS = 33


# --------------------------------------------------------------------------------------------------
# building blocks


def build(cfg: dict = CFG, sched_kwargs: dict | None = SCHED, shuffle_seed: int | None = None) -> ms.Trainer:
    """A fresh model, Adam optimizer and (unless ``sched_kwargs`` is None: torch defaults) scheduler."""
    model = ms.make_model(cfg["model_seed"])
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    scheduler = ReduceLROnPlateau(optimizer, **(sched_kwargs or {}))
    data = ms.make_data(cfg["data_seed"], cfg["noise"])
    return ms.Trainer(
        model, optimizer, scheduler, data, cfg["data_seed"] if shuffle_seed is None else shuffle_seed
    )


def lrs_now(t: ms.Trainer) -> list[float]:
    """The LR of each param group right now (read before an epoch: the LR used during it)."""
    return [float(group["lr"]) for group in t.optimizer.param_groups]


def run_epochs(
    t: ms.Trainer,
    first: int,
    last: int,
    rows: list[Row],
    *,
    before: Callable[[int], None] | None = None,
    evaluate: Callable[[int], float] | None = None,
    step: Callable[[int, float, float], None] | None = None,
    after: Callable[[int, float], None] | None = None,
    rec: Recorder | None = None,
) -> None:
    """Train loop epochs ``first..last``; the row is logged before the scheduler step (same content).

    ``before(epoch)`` runs before the LR is read (hand-written LR changes), ``evaluate(epoch)`` replaces
    the full-validation MSE, ``step(epoch, train_loss, val_loss)`` replaces ``scheduler.step(val_loss)``,
    ``after(epoch, val_loss)`` runs after the step (checkpointing). ``rec`` records each row and every
    step of ``t.scheduler`` (the object in place when the loop starts) as they happen.
    """
    if rec is not None:
        rec.watch(t.scheduler)
    for epoch in range(first, last + 1):
        if before is not None:
            before(epoch)
        lrs = lrs_now(t)
        train_loss = ms.train_epoch(t.model, t.optimizer, t.data, t.shuffle_seed * 1000 + epoch)
        val_loss = evaluate(epoch) if evaluate is not None else ms.evaluate(t.model, t.data)
        rows.append((epoch, train_loss, val_loss, lrs))
        if rec is not None:
            rec.row(epoch, lrs)
        if step is not None:
            step(epoch, train_loss, val_loss)
        else:
            t.scheduler.step(val_loss)
        if after is not None:
            after(epoch, val_loss)


def snapshot(t: ms.Trainer, epoch: int, val_loss: float) -> dict:
    """The plain checkpoint dict of this moment, deep-copied through torch.save/torch.load."""
    return ms.roundtrip(ms._plain_ckpt(epoch, t.model, t.optimizer, t.scheduler, val_loss))


@cache
def baseline() -> tuple[list[Row], dict[int, dict], Recorder]:
    """The uninterrupted default run: its rows, a checkpoint snapshot after every epoch's step, its record."""
    t = build()
    rows: list[Row] = []
    snaps: dict[int, dict] = {}
    rec = Recorder()
    run_epochs(t, 1, BASE_EPOCHS, rows, after=lambda e, v: snaps.__setitem__(e, snapshot(t, e, v)), rec=rec)
    return rows, snaps, rec


def base_record(n: int, ckpt_epoch: int | None = None) -> Recorder:
    """The baseline's record of its first ``n`` rows, with ``snaps[ckpt_epoch]`` recorded as ``ckpt.pt``."""
    rec = baseline()[2].prefix(n)
    if ckpt_epoch is not None:
        rec.checkpoint_at("ckpt.pt", ckpt_epoch - 1)  # snapshot taken after that epoch's step
    return rec


def baseline_upto(n: int) -> tuple[list[Row], dict[int, dict]]:
    """The baseline's first ``n`` rows (a new list; ``n`` must not exceed the run) and its snapshots."""
    rows, snaps, _ = baseline()
    assert n <= len(rows), (n, len(rows))
    return rows[:n], snaps


def resumed(
    ckpt: dict, load: tuple[str, ...] = ("model", "optimizer", "scheduler"), **build_kwargs
) -> ms.Trainer:
    """Run B's set-up: rebuild everything, then ``load_state_dict`` the named parts of ``ckpt``."""
    ckpt = copy.deepcopy(ckpt)
    t = build(**build_kwargs)
    if "model" in load:
        t.model.load_state_dict(ckpt["model"])
    if "optimizer" in load:
        t.optimizer.load_state_dict(ckpt["optimizer"])
    if "scheduler" in load:
        t.scheduler.load_state_dict(ckpt["scheduler"])
    return t


def lrs_of(rows: list[Row], group: int = 0) -> list[float]:
    return [r[3][group] for r in rows]


def vals_of(rows: list[Row]) -> list[float]:
    return [r[2] for r in rows]


def first_change_after(rows: list[Row], epoch: int) -> int | None:
    """The first loop epoch > ``epoch`` whose logged LR differs from the previous row's."""
    return next((e for e in ms.lr_change_epochs(rows) if e > epoch), None)


def replay(metrics: list[float], lrs: list[float], state: dict | None = None, **kwargs) -> list[list[float]]:
    """Step a real ReduceLROnPlateau (dummy SGD) over ``metrics``; return the LRs used before each step."""
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
    optimizer = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs, strict=True)])
    scheduler = ReduceLROnPlateau(optimizer, **kwargs)
    if state is not None:
        scheduler.load_state_dict(copy.deepcopy(state))
    used = []
    for value in metrics:
        used.append([float(g["lr"]) for g in optimizer.param_groups])
        scheduler.step(value)
    return used


def write_log(path: Path, rows: list[Row], extra: dict[str, list[float]] | None = None) -> None:
    """``make_samples.write_csv``, plus extra metric columns before the LRs and empty cells for groups
    that did not exist yet on a row (a param group added mid-run)."""
    n_groups = max(len(r[3]) for r in rows)
    if not extra and all(len(r[3]) == n_groups for r in rows):
        ms.write_csv(path, rows)
        return
    extra = extra or {}
    lr_cols = ["lr"] if n_groups == 1 else [f"lr_{i}" for i in range(n_groups)]
    lines = [",".join(["epoch", "train_loss", "val_loss", *extra, *lr_cols])]
    for i, (epoch, train_loss, val_loss, lrs) in enumerate(rows):
        cells = [str(epoch), repr(float(train_loss)), repr(float(val_loss))]
        cells += [repr(float(col[i])) for col in extra.values()]
        cells += [repr(float(lr)) for lr in lrs] + [""] * (n_groups - len(lrs))
        lines.append(",".join(cells))
    path.write_bytes(("\n".join(lines) + "\n").encode("ascii"))


def write_scenario(
    out: Path,
    finding: str,
    *,
    ckpt: dict,
    rows: list[Row],
    resume_epoch: int | None,
    description: str,
    rec: Recorder,
    extra_columns: dict[str, list[float]] | None = None,
    setup: dict | None = None,
    **truth: Any,
) -> dict:
    """Write ``ckpt.pt``, ``log.csv`` and ``scenario.json`` (``rec``'s record as ``live``) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out / "ckpt.pt")
    write_log(out / "log.csv", rows, extra_columns)
    info = {
        "finding": finding,
        "resume_epoch": resume_epoch,
        "checkpoint_epoch": ckpt["epoch"],
        "description": description,
        **truth,
        "setup": setup if setup is not None else {"optimizer": "Adam", "lr": CFG["lr"], "scheduler": SCHED},
        "logged_lr_changes": ms.lr_change_epochs(rows),
        "log": "log.csv",
    }
    assert [r["epoch"] for r in rec.rows] == [r[0] for r in rows], "the record holds the log's rows"
    assert [c["file"] for c in rec.checkpoints] == ["ckpt.pt"], rec.checkpoints
    info["live"] = rec.as_json()
    (out / "scenario.json").write_text(dumps(info), encoding="ascii")
    return info


# --------------------------------------------------------------------------------------------------
# resumes of the default run (run A = the baseline's first E epochs)


def make_clean_resume(out: Path) -> dict:
    """1. clean-resume: everything restored; the LRs (and losses) equal the uninterrupted run's."""
    e, n = 13, 28
    base, snaps = baseline_upto(n)
    rec = base_record(e, e)
    rows = base[:e]
    t = resumed(snaps[e])
    run_epochs(t, e + 1, n, rows, rec=rec)
    assert lrs_of(rows) == lrs_of(base[:n]), "a clean resume must reproduce the uninterrupted LRs"
    assert vals_of(rows) == vals_of(base[:n]) and [r[1] for r in rows] == [r[1] for r in base[:n]]
    assert len(ms.lr_change_epochs(rows[e - 1 :])) >= 2
    return write_scenario(
        out / "clean-resume",
        "clean-resume",
        rec=rec,
        ckpt=snaps[e],
        rows=rows,
        resume_epoch=e + 1,
        description=(
            f"Negative case. Run A trained 1..{e} and saved at {e}; run B loaded model, optimizer and "
            f"scheduler state and trained {e + 1}..{n}. The LRs (and even the losses, bit for bit) equal "
            "those of an uninterrupted run, which the generator checks in memory."
        ),
        correct_lr_changes=ms.lr_change_epochs(base[:n]),
    )


def make_scheduler_not_restored(out: Path) -> dict:
    """2. scheduler-not-restored: a fresh scheduler after the resume delays the next reduction."""
    e, n = 14, 29
    base, snaps = baseline_upto(n)
    rec = base_record(e, e)
    sd = snaps[e]["scheduler"]
    assert sd["num_bad_epochs"] > 0 or sd["cooldown_counter"] > 0, sd
    assert sd["_last_lr"][0] < CFG["lr"], sd
    rows = base[:e]
    t = resumed(snaps[e], load=("model", "optimizer"))
    run_epochs(t, e + 1, n, rows, rec=rec)
    logged, correct = first_change_after(rows, e), first_change_after(base, e)
    assert logged is not None and correct is not None and logged > correct, (logged, correct)
    assert lrs_of(rows) != lrs_of(base[:n])
    return write_scenario(
        out / "scheduler-not-restored",
        "scheduler-not-restored",
        rec=rec,
        ckpt=snaps[e],
        rows=rows,
        resume_epoch=e + 1,
        description=(
            f"Run B (epochs {e + 1}..{n}) loaded model and optimizer from the epoch-{e} checkpoint but kept "
            "a fresh scheduler (best=inf, num_bad_epochs=0, last_epoch=0). The saved state had "
            f"num_bad_epochs={sd['num_bad_epochs']}, so a restored scheduler would have cut the LR so that "
            f"epoch {correct} used the lower LR; the fresh one first did so at epoch {logged}."
        ),
        saved_num_bad_epochs=sd["num_bad_epochs"],
        saved_cooldown_counter=sd["cooldown_counter"],
        saved_best=sd["best"],
        first_lr_drop_logged=logged,
        first_lr_drop_correct=correct,
        correct_lr_changes=ms.lr_change_epochs(base[:n]),
    )


def make_optimizer_not_restored(out: Path) -> dict:
    """3. optimizer-not-restored: a fresh optimizer puts the LR back to the initial value."""
    e, n = 17, 32
    base, snaps = baseline_upto(n)
    rec = base_record(e, e)
    ckpt_lr = snaps[e]["optimizer"]["param_groups"][0]["lr"]
    assert ckpt_lr < CFG["lr"] and len(ms.lr_change_epochs(base[: e + 1])) >= 2, ckpt_lr
    rows = base[:e]
    t = resumed(snaps[e], load=("model", "scheduler"))
    assert t.scheduler._last_lr == [ckpt_lr]  # the restored scheduler "thinks" the LR is low
    run_epochs(t, e + 1, n, rows, rec=rec)
    assert rows[e][3][0] == CFG["lr"] != base[e][3][0] == ckpt_lr, (rows[e], base[e])
    return write_scenario(
        out / "optimizer-not-restored",
        "optimizer-not-restored",
        rec=rec,
        ckpt=snaps[e],
        rows=rows,
        resume_epoch=e + 1,
        description=(
            f"Run B loaded model and scheduler state from the epoch-{e} checkpoint but built a fresh Adam "
            f"with the initial lr {CFG['lr']} (optimizer state not loaded). The checkpoint's optimizer lr "
            f"was {ckpt_lr} after {len(ms.lr_change_epochs(base[: e + 1]))} reductions, so epoch {e + 1} "
            f"trained at {CFG['lr']}; the scheduler's _last_lr still says {ckpt_lr}."
        ),
        initial_lr=CFG["lr"],
        checkpoint_lr=ckpt_lr,
        first_resumed_lr=rows[e][3][0],
        correct_lr_changes=ms.lr_change_epochs(base[:n]),
    )


def make_lr_overwritten(out: Path) -> dict:
    """4. lr-overwritten: the resume helper writes a fixed LR into the restored optimizer."""
    e, n, lr_set_to = 16, 31, 3e-3
    base, snaps = baseline_upto(n)
    rec = base_record(e, e)
    ckpt_lr = snaps[e]["optimizer"]["param_groups"][0]["lr"]
    assert ckpt_lr not in (CFG["lr"], lr_set_to), ckpt_lr
    rows = base[:e]
    t = resumed(snaps[e])
    for group in t.optimizer.param_groups:  # load_checkpoint(path, model, optimizer, lr) helper
        group["lr"] = lr_set_to
    run_epochs(t, e + 1, n, rows, rec=rec)
    after = lrs_of(rows[e:])
    assert after[0] == lr_set_to and after != lrs_of(base[e:n])
    assert all(any(math.isclose(lr, lr_set_to * 0.5**k) for k in range(8)) for lr in after), after
    return write_scenario(
        out / "lr-overwritten",
        "lr-overwritten",
        rec=rec,
        ckpt=snaps[e],
        rows=rows,
        resume_epoch=e + 1,
        description=(
            f"Run B loaded model, optimizer and scheduler from the epoch-{e} checkpoint, then the widely "
            "copied load_checkpoint(..., lr) helper did `for g in optimizer.param_groups: g['lr'] = "
            f"{lr_set_to}`. The checkpoint's lr was {ckpt_lr} (initial {CFG['lr']}), so epoch {e + 1} "
            f"trained at {lr_set_to} and later reductions are factor multiples of that value."
        ),
        lr_set_to=lr_set_to,
        checkpoint_lr=ckpt_lr,
        initial_lr=CFG["lr"],
        correct_lr_changes=ms.lr_change_epochs(base[:n]),
    )


def make_partial_state(out: Path) -> dict:
    """5. partial-state: a timm-style {best, last_epoch} save loses num_bad_epochs and cooldown_counter."""
    e, n = 18, 33
    base, snaps = baseline_upto(n)
    rec = base_record(e, e)
    full = snaps[e]["scheduler"]
    assert full["num_bad_epochs"] > 0, full
    ckpt = dict(snaps[e])
    ckpt["scheduler"] = {"best": full["best"], "last_epoch": full["last_epoch"]}  # timm's state_dict()
    rows = base[:e]
    t = resumed(ckpt, load=("model", "optimizer"))
    t.scheduler.best = ckpt["scheduler"]["best"]  # timm's load_state_dict(): set the two attributes
    t.scheduler.last_epoch = ckpt["scheduler"]["last_epoch"]
    run_epochs(t, e + 1, n, rows, rec=rec)
    logged, correct = first_change_after(rows, e), first_change_after(base, e)
    assert lrs_of(rows) != lrs_of(base[:n]) and logged > correct, (logged, correct)
    after, ckpt_lr = [r[3] for r in rows[e:]], [snaps[e]["optimizer"]["param_groups"][0]["lr"]]
    assert replay(vals_of(rows[e:]), ckpt_lr, state=ckpt["scheduler"], **SCHED) == after
    assert replay(vals_of(rows[e:]), ckpt_lr, **SCHED) != after  # not the same as a fully fresh scheduler
    return write_scenario(
        out / "partial-state",
        "partial-state",
        rec=rec,
        ckpt=ckpt,
        rows=rows,
        resume_epoch=e + 1,
        description=(
            "The checkpoint's 'scheduler' is what timm's PlateauLRScheduler.state_dict() keeps: only best "
            "and last_epoch. Run B restored those two attributes into a fresh torch scheduler (as timm's "
            f"load_state_dict does) and loaded the optimizer. The full state at epoch {e} had "
            f"num_bad_epochs={full['num_bad_epochs']}, cooldown_counter={full['cooldown_counter']}; losing "
            f"them moved the first post-resume LR drop from epoch {correct} (full restore) to {logged}."
        ),
        saved_keys=["best", "last_epoch"],
        lost={"num_bad_epochs": full["num_bad_epochs"], "cooldown_counter": full["cooldown_counter"]},
        first_lr_drop_logged=logged,
        first_lr_drop_correct=correct,
        correct_lr_changes=ms.lr_change_epochs(base[:n]),
    )


def make_hyperparameters_overridden(out: Path) -> dict:
    """6. hyperparameters-overridden: load_state_dict restores the old patience/factor over the new ones."""
    e, n = 13, 28
    expected = {"patience": 5, "factor": 0.8}
    base, snaps = baseline_upto(n)
    rec = base_record(e, e)
    rows = base[:e]
    t = resumed(snaps[e], sched_kwargs={**SCHED, **expected})  # constructed with the new values, then loaded
    assert (t.scheduler.patience, t.scheduler.factor) == (SCHED["patience"], SCHED["factor"])
    run_epochs(t, e + 1, n, rows, rec=rec)
    intended = resumed(snaps[e])
    intended.scheduler.patience, intended.scheduler.factor = expected["patience"], expected["factor"]
    intended_rows: list[Row] = []
    run_epochs(intended, e + 1, n, intended_rows)
    after = lrs_of(rows[e - 1 :])
    ratios = {after[i + 1] / after[i] for i in range(len(after) - 1) if after[i + 1] != after[i]}
    assert ratios == {SCHED["factor"]} and lrs_of(intended_rows) != after[1:], (ratios, intended_rows)
    return write_scenario(
        out / "hyperparameters-overridden",
        "hyperparameters-overridden",
        rec=rec,
        ckpt=snaps[e],
        rows=rows,
        resume_epoch=e + 1,
        description=(
            f"Run A used patience={SCHED['patience']}, factor={SCHED['factor']}. Run B built "
            f"ReduceLROnPlateau(opt, patience={expected['patience']}, factor={expected['factor']}) as now "
            "intended, then load_state_dict(ckpt['scheduler']) silently restored "
            f"patience={SCHED['patience']}/factor={SCHED['factor']}: every post-resume drop halves the LR. "
            f"The checkpoint is run A's (epoch {e})."
        ),
        expected=expected,
        effective={"patience": SCHED["patience"], "factor": SCHED["factor"]},
        intended_lr_changes=ms.lr_change_epochs(rows[:e] + intended_rows),
    )


def make_duplicate_epochs(out: Path) -> dict:
    """17. duplicate-epochs: a crash after epoch 16, a resume from epoch 12's ckpt, rows 13..16 twice."""
    e, crash, n = 12, 16, 28
    base, snaps = baseline_upto(n)
    rows = base[:crash]  # run A logged 1..16, its last checkpoint is epoch 12's
    rec = base_record(crash, e)
    t = resumed(snaps[e], shuffle_seed=CFG["data_seed"] + 100)  # the restarted job seeds its shuffle anew
    run_b: list[Row] = []
    run_epochs(t, e + 1, n, run_b, rec=rec)
    rows = rows + run_b
    dup = list(range(e + 1, crash + 1))
    assert all(base[d - 1][2] != run_b[d - e - 1][2] for d in dup), "the two copies should differ"
    surviving = base[:e] + run_b  # the last occurrence of each epoch is the history that led on
    assert replay(vals_of(surviving), [CFG["lr"]], **SCHED) == [r[3] for r in surviving]
    assert replay(vals_of(rows), [CFG["lr"]], **SCHED) != [r[3] for r in rows]  # naive file-order replay
    return write_scenario(
        out / "duplicate-epochs",
        "duplicate-epochs",
        rec=rec,
        ckpt=snaps[e],
        rows=rows,
        resume_epoch=e + 1,
        description=(
            f"Run A trained 1..{crash}, saved its checkpoint at epoch {e} and crashed after epoch {crash} "
            f"(rows {e + 1}..{crash} already in the log). Run B resumed from the epoch-{e} checkpoint "
            f"(everything loaded) and appended {e + 1}..{n}, so epochs {dup[0]}..{dup[-1]} appear twice. Run "
            "B's data order is seeded afresh, so the copies differ; the later copy is the history the "
            "checkpoint led to."
        ),
        duplicated=dup,
        crashed_after_epoch=crash,
    )


# --------------------------------------------------------------------------------------------------
# uninterrupted runs with a twist


def _saver(t: ms.Trainer, at: int, saved: dict, rec: Recorder) -> Callable[[int, float], None]:
    """Snapshot the checkpoint after epoch ``at``'s step (written later as ``ckpt.pt``) and record it."""

    def after(epoch: int, val_loss: float) -> None:
        if epoch == at:
            saved["ckpt"] = snapshot(t, epoch, val_loss)
            rec.saved("ckpt.pt")

    return after


def make_defaults_in_effect(out: Path) -> dict:
    """7. defaults-in-effect: ReduceLROnPlateau(opt) with torch's defaults although patience=2 was meant."""
    e, n = 30, 40
    t = build(sched_kwargs=None)
    rows: list[Row] = []
    saved: dict = {}
    rec = Recorder()
    run_epochs(t, 1, n, rows, after=_saver(t, e, saved, rec), rec=rec)
    sd = saved["ckpt"]["scheduler"]
    assert (sd["patience"], sd["factor"], sd["cooldown"], sd["threshold"]) == (10, 0.1, 0, 1e-4), sd
    meant = replay(vals_of(rows), [CFG["lr"]], mode="min", patience=2, factor=0.5)
    assert meant != [r[3] for r in rows]
    return write_scenario(
        out / "defaults-in-effect",
        "defaults-in-effect",
        rec=rec,
        ckpt=saved["ckpt"],
        rows=rows,
        resume_epoch=None,
        description=(
            "An uninterrupted 40-epoch run whose scheduler was built as ReduceLROnPlateau(optimizer): the "
            "user's patience=2, factor=0.5 never reached the constructor, so torch's defaults (patience=10, "
            f"factor=0.1, threshold=1e-4 rel, cooldown=0, min_lr=0) ran. Checkpoint at epoch {e}."
        ),
        expected={"patience": 2, "factor": 0.5},
        effective={"patience": 10, "factor": 0.1},
        setup={"optimizer": "Adam", "lr": CFG["lr"], "scheduler": {}},
    )


def make_epoch_offset(out: Path) -> dict:
    """8. epoch-offset: 5 warm-up epochs (hand LR ramp) without scheduler steps, so last_epoch = epoch - 5."""
    e, n, warm = 20, 30, 5
    t = build()
    rows: list[Row] = []
    saved: dict = {}
    rec = Recorder()

    def ramp(epoch: int) -> None:
        if epoch <= warm:
            for group in t.optimizer.param_groups:
                group["lr"] = CFG["lr"] * epoch / warm

    def step(epoch: int, train_loss: float, val_loss: float) -> None:
        if epoch > warm:  # the plateau scheduler only takes over after the warm-up
            t.scheduler.step(val_loss)

    run_epochs(t, 1, n, rows, before=ramp, step=step, after=_saver(t, e, saved, rec), rec=rec)
    sd = saved["ckpt"]["scheduler"]
    assert saved["ckpt"]["epoch"] - sd["last_epoch"] == warm, sd
    assert lrs_of(rows[:warm]) == [CFG["lr"] * k / warm for k in range(1, warm + 1)]
    used = replay(vals_of(rows[warm:]), [CFG["lr"]], **SCHED)
    assert used == [r[3] for r in rows[warm:]] and len(ms.lr_change_epochs(rows[warm - 1 :])) >= 2
    return write_scenario(
        out / "epoch-offset",
        "epoch-offset",
        rec=rec,
        ckpt=saved["ckpt"],
        rows=rows,
        resume_epoch=None,
        description=(
            f"Uninterrupted {n} epochs. Epochs 1..{warm} are a hand-written linear warm-up (lr = "
            f"{CFG['lr']}*epoch/{warm}, visible in the lr column) during which scheduler.step is not called; "
            f"from epoch {warm + 1} it is stepped every epoch. So the scheduler's last_epoch lags the loop "
            f"epoch by {warm}: the epoch-{e} checkpoint has last_epoch={sd['last_epoch']}."
        ),
        offset=warm,
        warmup_epochs=list(range(1, warm + 1)),
        saved_last_epoch=sd["last_epoch"],
    )


def make_steps_per_row(out: Path) -> dict:
    """9. steps-per-row: scheduler.step(val_loss) is called twice per epoch (two call sites)."""
    e, n, k = 20, 30, 2
    t = build()
    rows: list[Row] = []
    saved: dict = {}
    rec = Recorder()

    def step(epoch: int, train_loss: float, val_loss: float) -> None:
        t.scheduler.step(val_loss)  # in the validation hook ...
        t.scheduler.step(val_loss)  # ... and again at the end of the epoch loop

    run_epochs(t, 1, n, rows, step=step, after=_saver(t, e, saved, rec), rec=rec)
    sd = saved["ckpt"]["scheduler"]
    assert sd["last_epoch"] == k * e, sd
    doubled = [v for v in vals_of(rows) for _ in range(k)]
    assert replay(doubled, [CFG["lr"]], **SCHED)[::k] == [r[3] for r in rows]
    once = replay(vals_of(rows), [CFG["lr"]], **SCHED)
    assert once != [r[3] for r in rows]
    return write_scenario(
        out / "steps-per-row",
        "steps-per-row",
        rec=rec,
        ckpt=saved["ckpt"],
        rows=rows,
        resume_epoch=None,
        description=(
            f"Uninterrupted {n} epochs, one log row per epoch, but scheduler.step(val_loss) is called in two "
            f"places, so it steps {k} times per row: the epoch-{e} checkpoint has "
            f"last_epoch={sd['last_epoch']}, and each improving epoch still adds a bad epoch (the repeated "
            "value is not better than itself), so the LR falls faster than a once-per-epoch scheduler would."
        ),
        k=k,
        saved_last_epoch=sd["last_epoch"],
        once_per_row_lr_changes=[rows[i][0] for i in range(1, n) if once[i] != once[i - 1]],
    )


def make_wrong_metric(out: Path) -> dict:
    """10. wrong-metric: the scheduler is stepped with the epoch's mean train loss."""
    e, n = 20, 30
    t = build()
    rows: list[Row] = []
    saved: dict = {}
    rec = Recorder()
    run_epochs(
        t, 1, n, rows, step=lambda ep, tr, va: t.scheduler.step(tr), after=_saver(t, e, saved, rec), rec=rec
    )
    sd = saved["ckpt"]["scheduler"]
    train, val = [r[1] for r in rows[:e]], vals_of(rows[:e])
    assert sd["best"] in train and sd["best"] not in val, sd
    assert replay(train + [r[1] for r in rows[e:]], [CFG["lr"]], **SCHED) == [r[3] for r in rows]
    on_val = replay(vals_of(rows), [CFG["lr"]], **SCHED)
    assert on_val != [r[3] for r in rows]
    return write_scenario(
        out / "wrong-metric",
        "wrong-metric",
        rec=rec,
        ckpt=saved["ckpt"],
        rows=rows,
        resume_epoch=None,
        description=(
            f"Uninterrupted {n} epochs; the scheduler is stepped with the epoch's mean training loss (column "
            "train_loss) instead of val_loss. The model overfits: train_loss keeps falling while val_loss "
            f"plateaus, so the LR is cut far less often than on val_loss. The epoch-{e} state's best "
            f"({sd['best']!r}) is a train_loss value."
        ),
        stepped_with="train_loss",
        saved_best=sd["best"],
        val_loss_lr_changes=[rows[i][0] for i in range(1, n) if on_val[i] != on_val[i - 1]],
    )


ACC_TOL = 0.5


def make_mode_mismatch(out: Path) -> dict:
    """11. mode-mismatch: a rising accuracy stepped into a mode='min' scheduler."""
    e, n = 20, 30
    t = build()
    rows: list[Row] = []
    acc: list[float] = []
    saved: dict = {}
    rec = Recorder()

    def step(epoch: int, train_loss: float, val_loss: float) -> None:
        t.model.eval()
        with torch.no_grad():
            hit = (t.model(t.data.x_val) - t.data.y_val).abs() < ACC_TOL
        acc.append(hit.float().mean().item())  # share of val predictions within +-0.5
        t.scheduler.step(acc[-1])

    run_epochs(t, 1, n, rows, step=step, after=_saver(t, e, saved, rec), rec=rec)
    sd = saved["ckpt"]["scheduler"]
    assert sd["mode"] == "min" and acc[e - 1] > acc[0] and max(acc) > acc[0] + 0.1, acc
    assert sd["best"] == min(acc[:e])
    drops = ms.lr_change_epochs(rows)
    assert len([d for d in drops if d <= e]) >= 3, drops
    as_max = replay(acc, [CFG["lr"]], **{**SCHED, "mode": "max"})
    assert as_max != [r[3] for r in rows]
    return write_scenario(
        out / "mode-mismatch",
        "mode-mismatch",
        rec=rec,
        ckpt=saved["ckpt"],
        rows=rows,
        extra_columns={"val_acc": acc},
        resume_epoch=None,
        description=(
            f"Uninterrupted {n} epochs; the scheduler (default mode='min') is stepped with val_acc, the "
            f"share of validation predictions within +-{ACC_TOL} of the target, which rises from {acc[0]!r} "
            f"to {acc[e - 1]!r} by epoch {e}. In 'min' mode the rises are bad epochs, so the LR is cut every "
            "patience+cooldown+1 epochs while accuracy improves."
        ),
        stepped_with="val_acc",
        mode="min",
        expected_mode="max",
        max_mode_lr_changes=[rows[i][0] for i in range(1, n) if as_max[i] != as_max[i - 1]],
    )


LOGLOSS_CFG = dict(data_seed=3, noise=1.0, model_seed=1, lr=1e-2)
LOGLOSS_SCHED = dict(mode="min", factor=0.5, patience=2, cooldown=1, threshold=0.1, threshold_mode="rel")


def make_rel_threshold_nonpositive(out: Path) -> dict:
    """12. rel-threshold-nonpositive: a negative metric (log of the val MSE) with threshold_mode='rel'."""
    e, n = 20, 30
    t = build(cfg=LOGLOSS_CFG, sched_kwargs=LOGLOSS_SCHED)
    rows: list[Row] = []
    metric: list[float] = []
    worse_as_better: list[int] = []
    saved: dict = {}
    rec = Recorder()

    def step(epoch: int, train_loss: float, val_loss: float) -> None:
        metric.append(math.log(val_loss))
        best_before = t.scheduler.best
        t.scheduler.step(metric[-1])
        if t.scheduler.best > best_before:  # a worse (higher) value was taken as the new best
            worse_as_better.append(epoch)

    run_epochs(t, 1, n, rows, step=step, after=_saver(t, e, saved, rec), rec=rec)
    assert all(m < 0 for m in metric), metric
    assert worse_as_better, "some worse epoch must count as an improvement"
    abs_mode = replay(metric, [LOGLOSS_CFG["lr"]], **{**LOGLOSS_SCHED, "threshold_mode": "abs"})
    assert abs_mode != [r[3] for r in rows]
    return write_scenario(
        out / "rel-threshold-nonpositive",
        "rel-threshold-nonpositive",
        rec=rec,
        ckpt=saved["ckpt"],
        rows=rows,
        extra_columns={"val_log_loss": metric},
        resume_epoch=None,
        description=(
            f"Uninterrupted {n} epochs; the scheduler is stepped with val_log_loss = log(val_loss), negative "
            "on every epoch, with mode='min', threshold_mode='rel', threshold=0.1. For a negative best the "
            "bar best*(1-0.1) lies above best, so worse values count as improvements (best went UP at "
            f"epochs {worse_as_better}) and num_bad_epochs keeps being reset."
        ),
        stepped_with="val_log_loss",
        threshold=0.1,
        worse_counted_as_better=worse_as_better,
        abs_mode_lr_changes=[rows[i][0] for i in range(1, n) if abs_mode[i] != abs_mode[i - 1]],
        setup={"optimizer": "Adam", "lr": LOGLOSS_CFG["lr"], "scheduler": LOGLOSS_SCHED},
    )


def _decided(t: ms.Trainer) -> bool:
    """After a step: did it decide a reduction? (cooldown_counter is set to cooldown only then.)"""
    return t.scheduler.cooldown > 0 and t.scheduler.cooldown_counter == t.scheduler.cooldown


def make_lr_at_floor(out: Path) -> dict:
    """13. lr-at-floor: min_lr=2e-3 is reached after three reductions; later reductions are suppressed."""
    e, n, floor = 25, 30, 2e-3
    sched_kwargs = {**SCHED, "min_lr": floor}
    t = build(sched_kwargs=sched_kwargs)
    rows: list[Row] = []
    decided: list[int] = []
    suppressed: list[int] = []
    saved: dict = {}
    rec = Recorder()

    def step(epoch: int, train_loss: float, val_loss: float) -> None:
        lr_before = lrs_now(t)
        t.scheduler.step(val_loss)
        if _decided(t):
            decided.append(epoch)
            if lrs_now(t) == lr_before:  # due, but max(lr*factor, min_lr) == lr: nothing changes
                suppressed.append(epoch)

    run_epochs(t, 1, n, rows, step=step, after=_saver(t, e, saved, rec), rec=rec)
    reached = next(r[0] for r in rows if r[3][0] == floor)
    assert rows[-1][3][0] == floor and [d for d in suppressed if d < e], (decided, suppressed, reached)
    assert all(d >= reached for d in suppressed) and len(decided) - len(suppressed) == 3, (
        decided,
        suppressed,
    )
    assert saved["ckpt"]["optimizer"]["param_groups"][0]["lr"] == floor
    return write_scenario(
        out / "lr-at-floor",
        "lr-at-floor",
        rec=rec,
        ckpt=saved["ckpt"],
        rows=rows,
        resume_epoch=None,
        description=(
            f"Uninterrupted {n} epochs with min_lr={floor}: {CFG['lr']} -> 0.005 -> 0.0025 -> {floor} (the "
            f"third cut is clipped to the floor), first used at epoch {reached}. Reductions decided at the "
            f"end of epochs {suppressed} left the LR at the floor. Checkpoint at epoch {e}."
        ),
        min_lr=floor,
        floor_reached_epoch=reached,
        reductions_decided_at_end_of=decided,
        suppressed_at_end_of=suppressed,
        setup={"optimizer": "Adam", "lr": CFG["lr"], "scheduler": sched_kwargs},
    )


def make_external_lr_change(out: Path) -> dict:
    """14. external-lr-change: a hand warm-up (epochs 1..3) and a hand LR cut at epoch 18 on top."""
    e, n, warm, hand_epoch, hand_factor = 25, 30, 3, 18, 0.3
    t = build()
    rows: list[Row] = []
    decided: list[int] = []
    saved: dict = {}
    rec = Recorder()

    def before(epoch: int) -> None:
        for group in t.optimizer.param_groups:
            if epoch <= warm:
                group["lr"] = CFG["lr"] * epoch / warm
            elif epoch == hand_epoch:
                group["lr"] *= hand_factor  # another piece of code cuts the LR by hand

    def step(epoch: int, train_loss: float, val_loss: float) -> None:
        t.scheduler.step(val_loss)
        if _decided(t):
            decided.append(epoch)

    run_epochs(t, 1, n, rows, before=before, step=step, after=_saver(t, e, saved, rec), rec=rec)
    lrs = lrs_of(rows)
    assert lrs[:warm] == [CFG["lr"] * k / warm for k in range(1, warm + 1)] and min(decided) > warm, decided
    assert hand_epoch - 1 not in decided and lrs[hand_epoch - 1] == lrs[hand_epoch - 2] * hand_factor
    assert [d for d in decided if hand_epoch < d < e], decided
    return write_scenario(
        out / "external-lr-change",
        "external-lr-change",
        rec=rec,
        ckpt=saved["ckpt"],
        rows=rows,
        resume_epoch=None,
        description=(
            f"Uninterrupted {n} epochs; the plateau scheduler is stepped every epoch from epoch 1, but other "
            f"code also writes param_groups['lr']: a linear warm-up sets lr = {CFG['lr']}*epoch/{warm} "
            f"before epochs 1..{warm}, and before epoch {hand_epoch} a hand-written `g['lr'] *= "
            f"{hand_factor}` cuts it. Those LR changes are not plateau reductions (ratios != factor). "
            f"Checkpoint at epoch {e}."
        ),
        warmup_epochs=list(range(1, warm + 1)),
        external_change_epoch=hand_epoch,
        external_factor=hand_factor,
        reductions_decided_at_end_of=decided,
    )


def make_nan_metric(out: Path) -> dict:
    """15. nan-metric: an empty validation batch makes the val loss NaN on epochs 14 and 15."""
    e, n, nan_epochs = 20, 25, [14, 15]
    t = build()
    rows: list[Row] = []
    bad_after: dict[int, int] = {}
    saved: dict = {}
    rec = Recorder()

    def evaluate(epoch: int) -> float:
        if epoch not in nan_epochs:
            return ms.evaluate(t.model, t.data)
        keep = torch.zeros(len(t.data.y_val), dtype=torch.bool)  # the shard was being rewritten: no rows
        t.model.eval()
        with torch.no_grad():
            return torch.nn.functional.mse_loss(t.model(t.data.x_val[keep]), t.data.y_val[keep]).item()

    decided: list[int] = []
    best_after: dict[int, float] = {}

    def step(epoch: int, train_loss: float, val_loss: float) -> None:
        t.scheduler.step(val_loss)
        bad_after[epoch], best_after[epoch] = t.scheduler.num_bad_epochs, t.scheduler.best
        if _decided(t):
            decided.append(epoch)

    run_epochs(t, 1, n, rows, evaluate=evaluate, step=step, after=_saver(t, e, saved, rec), rec=rec)
    vals = vals_of(rows)
    assert [r[0] for r in rows if math.isnan(r[2])] == nan_epochs
    for epoch in nan_epochs:  # each NaN is a bad epoch: the counter grows (or a reduction fires), best stays
        assert best_after[epoch] == best_after[epoch - 1], best_after
        assert bad_after[epoch] == bad_after[epoch - 1] + 1 or epoch in decided, (bad_after, decided)
    assert nan_epochs[-1] in decided, decided  # the second NaN completed the patience: a reduction
    assert math.isfinite(saved["ckpt"]["scheduler"]["best"])
    assert replay(vals, [CFG["lr"]], **SCHED) == [r[3] for r in rows]
    without = [v for v in vals if not math.isnan(v)]
    kept = [r[3] for r in rows if not math.isnan(r[2])]
    assert replay(without, [CFG["lr"]], **SCHED) != kept  # skipping the NaNs would tell another story
    return write_scenario(
        out / "nan-metric",
        "nan-metric",
        rec=rec,
        ckpt=saved["ckpt"],
        rows=rows,
        resume_epoch=None,
        description=(
            f"Uninterrupted {n} epochs; on epochs {nan_epochs} the validation shard came back empty and the "
            "eval computed mse_loss over zero rows, which is NaN (a real torch result). scheduler.step(nan) "
            "counted both as bad epochs (NaN is never better), and the second one completed the patience: a "
            f"reduction at the end of epoch {nan_epochs[-1]}. best stays finite. Checkpoint at epoch {e}."
        ),
        nan_epochs=nan_epochs,
        reductions_decided_at_end_of=decided,
        num_bad_epochs_after={str(k): bad_after[k] for k in range(nan_epochs[0] - 1, nan_epochs[-1] + 2)},
    )


MINLR_CFG = dict(data_seed=4, noise=1.0, model_seed=0, lr=1e-2)
ADDED_GROUP_LR = 1e-3


def _min_lrs_run(
    min_lr, e: int, n: int, unfreeze: int
) -> tuple[ms.Trainer, list[Row], dict, int | None, list[int], Recorder]:
    """Two groups (backbone weight, head) at construction; the frozen backbone bias joins at ``unfreeze``."""
    t = build(cfg=MINLR_CFG)
    model = t.model
    model[0].bias.requires_grad_(False)
    optimizer = torch.optim.Adam(
        [{"params": [model[0].weight]}, {"params": list(model[2].parameters())}], lr=MINLR_CFG["lr"]
    )
    t.optimizer = optimizer
    t.scheduler = ReduceLROnPlateau(optimizer, **{**SCHED, "min_lr": min_lr})
    rows: list[Row] = []
    decided: list[int] = []
    saved: dict = {}
    rec = Recorder()
    raised: list[int] = []

    def before(epoch: int) -> None:
        if epoch == unfreeze:
            model[0].bias.requires_grad_(True)
            optimizer.add_param_group({"params": [model[0].bias], "lr": ADDED_GROUP_LR})

    def step(epoch: int, train_loss: float, val_loss: float) -> None:
        try:
            t.scheduler.step(val_loss)
        except RuntimeError as exc:  # list min_lr: the first reduction after add_param_group
            assert "number of param groups" in str(exc), exc
            raised.append(epoch)
            raise
        if _decided(t):
            decided.append(epoch)

    try:
        run_epochs(t, 1, n, rows, before=before, step=step, after=_saver(t, e, saved, rec), rec=rec)
    except RuntimeError:
        pass
    return t, rows, saved["ckpt"], (raised[0] if raised else None), decided, rec


def make_min_lrs_mismatch(out: Path) -> list[dict]:
    """16. min-lrs-mismatch: a param group added after construction; list min_lr raises, scalar is rebuilt."""
    e, n, unfreeze = 10, 30, 8
    infos = []
    for variant, min_lr in (("list", [1e-4, 1e-4]), ("scalar", 1e-4)):
        t, rows, ckpt, raises_at, decided, rec = _min_lrs_run(min_lr, e, n, unfreeze)
        sd = ckpt["scheduler"]
        assert len(sd["min_lrs"]) == 2 and len(ckpt["optimizer"]["param_groups"]) == 3, sd
        assert not [d for d in decided if unfreeze <= d <= e], decided  # no reduction between add and save
        after_add = [d for d in decided if d > e]
        common = dict(
            ckpt=ckpt,
            rows=rows,
            rec=rec,
            resume_epoch=None,
            added_group_epoch=unfreeze,
            added_group_lr=ADDED_GROUP_LR,
            min_lr=min_lr,
            setup={
                "optimizer": "Adam",
                "lr": MINLR_CFG["lr"],
                "scheduler": {**SCHED, "min_lr": min_lr},
                "param_groups": ["0.weight", "2.weight+2.bias", "0.bias (added)"],
            },
        )
        if variant == "list":
            assert raises_at is not None and raises_at > e and rows[-1][0] == raises_at, (raises_at, rows[-1])
            infos.append(
                write_scenario(
                    out / "min-lrs-mismatch",
                    "min-lrs-mismatch",
                    description=(
                        "Two param groups (0.weight, head) at construction with min_lr=[1e-4, 1e-4]; before "
                        f"epoch {unfreeze} the frozen 0.bias is unfrozen with "
                        f"optimizer.add_param_group(lr={ADDED_GROUP_LR}) (lr_2 is empty before that). The "
                        f"epoch-{e} checkpoint has 3 param groups but 2 min_lrs and default_min_lr=None. The "
                        f"next reduction, due at the end of epoch {raises_at}, raised RuntimeError in "
                        "scheduler.step and the run died; that epoch's row was logged before the step."
                    ),
                    raises_at_epoch=raises_at,
                    **common,
                )
            )
        else:
            assert raises_at is None and after_add and len(t.scheduler.min_lrs) == 3, decided
            assert rows[after_add[0]][3] != rows[after_add[0] - 1][3]
            infos.append(
                write_scenario(
                    out / "min-lrs-mismatch-scalar",
                    "min-lrs-mismatch",
                    description=(
                        "Same as min-lrs-mismatch but min_lr=1e-4 (a scalar, so default_min_lr=1e-4): the "
                        f"epoch-{e} checkpoint also has 3 param groups and 2 min_lrs, but at the first "
                        f"reduction after the add (end of epoch {after_add[0]}) torch rebuilt min_lrs to 3 "
                        f"entries and all groups were reduced; no error. Uninterrupted {n} epochs."
                    ),
                    variant="scalar",
                    raises_at_epoch=None,
                    min_lrs_rebuilt_at_end_of=after_add[0],
                    **common,
                )
            )
    return infos


BEFORE_STEP_CFG = dict(data_seed=1, noise=1.0, model_seed=0, lr=1e-2)


def make_saved_before_step(out: Path) -> dict:
    """18. saved-before-step: Lightning's order; the epoch-20 checkpoint has the state after 19's step."""
    e, n = 20, 30
    t = build(cfg=BEFORE_STEP_CFG)
    rows: list[Row] = []
    saved: dict = {}
    rec = Recorder()

    def step(epoch: int, train_loss: float, val_loss: float) -> None:
        if epoch == e:
            saved["ckpt"] = snapshot(t, epoch, val_loss)  # checkpoint callback first ...
            rec.saved("ckpt.pt")
        t.scheduler.step(val_loss)  # ... then the epoch-end scheduler step
        if epoch == e:
            saved["after"] = copy.deepcopy(t.scheduler.state_dict())

    run_epochs(t, 1, n, rows, step=step, rec=rec)
    sd, after = saved["ckpt"]["scheduler"], saved["after"]
    assert (
        sd["last_epoch"] == e - 1
        and saved["ckpt"]["epoch"] == e
        and saved["ckpt"]["val_loss"] == rows[e - 1][2]
    )
    changed = [k for k in ("best", "num_bad_epochs", "cooldown_counter", "_last_lr") if sd[k] != after[k]]
    assert "num_bad_epochs" in changed or "best" in changed, (sd, after)
    assert replay(vals_of(rows), [BEFORE_STEP_CFG["lr"]], **SCHED) == [r[3] for r in rows]
    return write_scenario(
        out / "saved-before-step",
        "saved-before-step",
        rec=rec,
        ckpt=saved["ckpt"],
        rows=rows,
        resume_epoch=None,
        description=(
            f"Uninterrupted {n} epochs, checkpointing in Lightning's order: the epoch-{e} checkpoint "
            f"('epoch': {e}, val_loss of epoch {e}) is written BEFORE that epoch's scheduler.step(val_loss), "
            f"so its scheduler state is the one after epoch {e - 1}'s step (last_epoch={sd['last_epoch']}); "
            f"epoch {e}'s step then changed {changed}."
        ),
        steps_behind=1,
        saved_last_epoch=sd["last_epoch"],
        changed_by_missing_step=changed,
    )


KEYS_1_3 = [
    "factor", "min_lrs", "patience", "verbose", "cooldown", "cooldown_counter", "mode", "threshold",
    "threshold_mode", "best", "num_bad_epochs", "mode_worse", "eps", "last_epoch",
]  # fmt: skip
KEYS_2_5 = [
    "factor", "min_lrs", "patience", "verbose", "cooldown", "cooldown_counter", "mode", "threshold",
    "threshold_mode", "eps", "last_epoch", "_last_lr", "mode_worse", "best", "num_bad_epochs",
]  # fmt: skip


def make_torch_version(out: Path) -> list[dict]:
    """19. torch-version: a real 2.13 state after 20 steps, hand-converted to the <=1.3 / 2.4-2.5 layouts."""
    e, n = 20, 30
    base, snaps = baseline_upto(n)
    rows = base[:n]
    rec = base_record(n, e)
    real = snaps[e]["scheduler"]
    old = {**real, "verbose": False, "last_epoch": real["last_epoch"] - 1}  # <=1.3 counted from -1
    mid = {**real, "verbose": "deprecated"}
    infos = []
    for folder, version, keys, state, last_epoch_note, variant in (
        ("torch-version", "<=1.3", KEYS_1_3, old, "-1-based: 20 steps give last_epoch=19", {}),
        (
            "torch-version-2.5",
            "2.4-2.5",
            KEYS_2_5,
            mid,
            "0-based: 20 steps give last_epoch=20",
            {"variant": "2.5"},
        ),
    ):
        converted = {k: state[k] for k in keys}
        ckpt = {**snaps[e], "scheduler": converted}
        # The conversion keeps the decision state: loaded into 2.13 it continues exactly like the real run.
        continued = replay(vals_of(rows[e:]), real["_last_lr"], state=converted, **SCHED)
        assert continued == [r[3] for r in rows[e:]]
        infos.append(
            write_scenario(
                out / folder,
                "torch-version",
                rec=rec,
                ckpt=ckpt,
                rows=rows,
                resume_epoch=None,
                description=(
                    f"Uninterrupted {n} epochs with torch 2.13; the epoch-{e} checkpoint's scheduler state "
                    f"is a real 2.13 state after {e} steps converted BY HAND to the key set and order torch "
                    f"{version} wrote ({', '.join(keys)}; verbose={state['verbose']!r}; no default_min_lr"
                    + ("" if "_last_lr" in keys else ", no _last_lr")
                    + f"; last_epoch {last_epoch_note}). Model and optimizer entries are 2.13's, unconverted."
                ),
                **variant,
                torch_version=version,
                saved_last_epoch=converted["last_epoch"],
                steps_taken=e,
            )
        )
    return infos


# --------------------------------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    """Write every scenario folder into ``argv[1]`` (default: ``resumes/`` here) and print a summary."""
    out = Path(argv[1]) if len(argv) > 1 else HERE / "resumes"
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    infos: list[dict] = []
    for make in (
        make_clean_resume,
        make_scheduler_not_restored,
        make_optimizer_not_restored,
        make_lr_overwritten,
        make_partial_state,
        make_hyperparameters_overridden,
        make_defaults_in_effect,
        make_epoch_offset,
        make_steps_per_row,
        make_wrong_metric,
        make_mode_mismatch,
        make_rel_threshold_nonpositive,
        make_lr_at_floor,
        make_external_lr_change,
        make_nan_metric,
        make_min_lrs_mismatch,
        make_duplicate_epochs,
        make_saved_before_step,
        make_torch_version,
    ):
        result = make(out)
        infos.extend(result if isinstance(result, list) else [result])
    for info in infos:
        skip = {"finding", "description", "setup", "logged_lr_changes", "live"}
        facts = ", ".join(f"{k}={v!r}" for k, v in info.items() if k not in skip)
        print(f"{info['finding']:28s} {facts}; LR changes {info['logged_lr_changes']}")


if __name__ == "__main__":
    main(sys.argv)
