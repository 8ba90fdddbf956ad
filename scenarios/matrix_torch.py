"""Plain-torch trainings of the scenario matrix: a real 8-16-1 MLP, Adam and ReduceLROnPlateau on CPU.

One ``Run`` is one story family at one checkpoint position: process A (the first training process) and, for
the resume families, process B (a new process that rebuilt everything and loaded the chosen parts of A's
checkpoint). Every ``scheduler.step`` is recorded from the live object (``matrix_record``); every epoch's
checkpoint dict is kept in memory (``torch.save`` / ``torch.load`` round trip), and ``make_matrix`` writes the
ones a cell gives.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from matrix_record import StepRecorder, lrs_of
from torch import nn
from torch.optim.lr_scheduler import LinearLR, ReduceLROnPlateau, StepLR

N_FEATURES = 8
N_TRAIN = 128
N_VAL = 128
DATA_SEED = 2
NOISE = 1.0
MODEL_SEED = 0
LR = 1e-2
N_EPOCHS = 30
#: cooldown 2 (not 1) so that a step with cooldown_counter > 0 that is not the reduction step exists
SCHED = dict(
    mode="min", factor=0.5, patience=2, threshold=1e-4, threshold_mode="rel", cooldown=2, min_lr=0.0, eps=1e-8
)
LR_SET_TO = 0.003  # lr-overwritten: neither the initial lr nor any lr the plateau schedule reaches
HAND_FACTOR = 0.3
CRASH_EXTRA = 3  # duplicate-epochs: the crashed process ran this many epochs past the resume checkpoint


# --------------------------------------------------------------------------------------------------
# data, model, epochs


@dataclass(frozen=True)
class Data:
    """A fixed train/validation split of a synthetic regression problem (uniform inputs, linear target)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def make_data(seed: int = DATA_SEED, noise: float = NOISE) -> Data:
    """Seeded data; the noise (a centred sum of three uniforms) sets the floor the val loss plateaus on."""
    g = torch.Generator().manual_seed(seed)
    n = N_TRAIN + N_VAL
    x = torch.rand(n, N_FEATURES, generator=g) * 2.0 - 1.0
    eps = torch.rand(n, generator=g) + torch.rand(n, generator=g) + torch.rand(n, generator=g) - 1.5
    y = (1.5 * x[:, 0] - x[:, 1] + 0.5 * x[:, 2] + noise * eps).unsqueeze(1)
    return Data(x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:])


def make_model(seed: int = MODEL_SEED) -> nn.Sequential:
    """The 8-16-1 ReLU MLP, initialised from ``seed``."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(N_FEATURES, 16), nn.ReLU(), nn.Linear(16, 1))


def roundtrip(obj: dict) -> dict:
    """``torch.save`` then ``torch.load(weights_only=True)`` through memory: what a resume reads back."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# --------------------------------------------------------------------------------------------------
# records


@dataclass
class Row:
    """One logged epoch of one process, as the live loop saw it (loop epochs count from 1)."""

    process: int
    epoch: int
    train_loss: float
    val_loss: float
    val_acc: float | None
    lr_used: list[float]  # read before the epoch's training: the lr it trained with (at its start)
    lr_end: list[float]  # read after the epoch's scheduler step(s) and any other epoch-end lr code
    steps: list[int]  # indexes into the run's history of the plateau steps taken during this epoch
    total: int  # the process's planned last epoch (printed as "Epoch 12/30")
    superseded: bool = False  # a crashed process's row that a later process logged again


@dataclass
class Snapshot:
    """A checkpoint dict as the loop saved it, and where in the history its scheduler state stands."""

    process: int
    epoch: int
    order: str  # "after": saved after the epoch's step(s); "before": after evaluate(), before the step
    ckpt: dict
    history_index: int | None  # last step included in the saved state (None: no step yet)
    opt_lr: list[float]


@dataclass
class Process:
    """One training process: which epochs it ran and what it restored."""

    index: int
    first: int
    last: int
    scheduler: str = "fresh"  # fresh | restored
    optimizer: str = "fresh"  # fresh | restored | overwritten
    weights: str = "fresh"  # fresh | restored
    resumed_from: tuple[int, int, str] | None = None  # (process, epoch, order) of the loaded snapshot


@dataclass(frozen=True)
class Knobs:
    """How the loop of every process of a run steps and saves (the whole-run part of a story)."""

    k: int = 1  # plateau steps per epoch after evaluate()
    per_batch: bool = False  # step after every optimizer step with the previous epoch's val (stale)
    batch_size: int = 16
    fed: str = "val_loss"  # the column passed to step(): val_loss | train_loss | val_acc
    save: str = "after"  # after | before (checkpoint written after evaluate(), before the step)
    external: str | None = None  # warmup-hand | warmup-linear | hand-edit | steplr
    log_acc: bool = False
    train_loss: str = (
        "mean"  # the logged train loss: the epoch's mean, or the last batch's (print(loss.item()))
    )
    n_epochs: int = N_EPOCHS
    sched: tuple[tuple[str, Any], ...] = ()  # ReduceLROnPlateau arguments that differ from SCHED

    @property
    def sched_cfg(self) -> dict[str, Any]:
        return {**SCHED, **dict(self.sched)}


@dataclass(frozen=True)
class Resume:
    """What process B does with process A's checkpoint (the resume part of a story)."""

    scheduler: str = "restored"
    optimizer: str = "restored"
    lr_set_to: float | None = None
    weights_only: bool = False
    crash_extra: int = 0


@dataclass
class Run:
    """A training run: its records, snapshots and the knobs that made it."""

    knobs: Knobs
    history: list[dict[str, Any]] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    snapshots: dict[tuple[int, int, str], Snapshot] = field(default_factory=dict)
    resume: Resume | None = None
    resume_epoch: int | None = None
    external_epochs: list[int] = field(default_factory=list)

    def prefix(self, last_epoch: int) -> Run:
        """Process 0 of this run up to ``last_epoch``: rows, history and snapshots (deep copies)."""
        rows = [copy.deepcopy(r) for r in self.rows if r.process == 0 and r.epoch <= last_epoch]
        n_hist = max((i + 1 for r in rows for i in r.steps), default=0)
        snaps = {k: s for k, s in self.snapshots.items() if k[0] == 0 and k[1] <= last_epoch}
        proc = replace(self.processes[0], last=last_epoch)
        return Run(
            self.knobs,
            copy.deepcopy(self.history[:n_hist]),
            rows,
            [proc],
            dict(snaps),
            external_epochs=[e for e in self.external_epochs if e <= last_epoch],
        )


# --------------------------------------------------------------------------------------------------
# the live loop


class Live:
    """Model, optimizer, plateau scheduler (and any other lr code) of one process, stepping a recorder."""

    def __init__(self, knobs: Knobs, recorder: StepRecorder, data: Data) -> None:
        self.knobs, self.rec, self.data = knobs, recorder, data
        self.model = make_model()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.scheduler = recorder.attach(ReduceLROnPlateau(self.optimizer, **knobs.sched_cfg))
        self.other = None
        if knobs.external == "warmup-linear":
            self.other = LinearLR(self.optimizer, start_factor=0.25, end_factor=1.0, total_iters=3)
        elif knobs.external == "steplr":
            self.other = StepLR(self.optimizer, step_size=8, gamma=0.5)
        self.global_step = 0
        self.last_val: float | None = None

    def checkpoint(self, epoch: int, val_loss: float) -> dict:
        """The canonical checkpoint dict of this moment, deep-copied (key names are chosen per cell).

        Kept in memory; a resume loads it through ``torch.save``/``torch.load`` (``roundtrip``) and a cell
        that gives it to the tool writes it with ``torch.save``.
        """
        return copy.deepcopy(
            {
                "epoch": epoch,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "val_loss": val_loss,
                "global_step": self.global_step,
            }
        )

    def after_step(self, before: dict) -> dict:
        """The checkpoint dict right after the epoch's scheduler step(s), given the one saved just before.

        Between the two only lr code ran: the weights and the optimizer's per-parameter state are the same
        tensors (shared, never mutated), the optimizer's param_groups and the scheduler state are copied anew.
        """
        opt = self.optimizer.state_dict()
        return {
            **before,
            "optimizer": {
                "state": before["optimizer"]["state"],
                "param_groups": copy.deepcopy(opt["param_groups"]),
            },
            "scheduler": copy.deepcopy(self.scheduler.state_dict()),
        }

    def train_epoch(self, epoch: int) -> float:
        """One epoch of mini-batch Adam; returns the train loss the loop logs (mean, or the last batch's).

        Per-batch stepping feeds the previous epoch's (stale) val loss after every optimizer step.
        """
        self.model.train()
        perm = torch.randperm(N_TRAIN, generator=torch.Generator().manual_seed(DATA_SEED * 1000 + epoch))
        total = 0.0
        bs = self.knobs.batch_size
        for start in range(0, N_TRAIN, bs):
            idx = perm[start : start + bs]
            loss = nn.functional.mse_loss(self.model(self.data.x_train[idx]), self.data.y_train[idx])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.global_step += 1
            total += loss.item() * len(idx)
            if self.knobs.per_batch and self.last_val is not None:
                self.scheduler.step(self.last_val)
        return loss.item() if self.knobs.train_loss == "last-batch" else total / N_TRAIN

    def evaluate(self) -> tuple[float, float]:
        """(val MSE, val accuracy = share of |error| < 0.5) over the whole validation set."""
        self.model.eval()
        with torch.no_grad():
            pred = self.model(self.data.x_val)
            mse = nn.functional.mse_loss(pred, self.data.y_val).item()
            acc = ((pred - self.data.y_val).abs() < 0.5).double().mean().item()
        return mse, acc

    def before_epoch(self, epoch: int) -> bool:
        """Hand-written lr code that runs before the epoch's lr is read; True when it changed the lr."""
        ext = self.knobs.external
        if ext == "warmup-hand" and epoch <= 4:
            for g in self.optimizer.param_groups:
                g["lr"] = LR * epoch / 4
            return True
        if ext == "hand-edit" and epoch == 15:
            for g in self.optimizer.param_groups:
                g["lr"] *= HAND_FACTOR
            return True
        return False

    def run(self, run: Run, process: int, first: int, last: int) -> None:
        """Train epochs ``first..last`` as ``process``: rows, history and both snapshots of every epoch."""
        self.rec.process = process
        kn = self.knobs
        for epoch in range(first, last + 1):
            self.rec.epoch = epoch
            if self.before_epoch(epoch):
                run.external_epochs.append(epoch)
            lr_used = lrs_of(self.optimizer)
            n0 = len(self.rec.history)
            train_loss = self.train_epoch(epoch)
            val_loss, val_acc = self.evaluate()
            fed = {"val_loss": val_loss, "train_loss": train_loss, "val_acc": val_acc}[kn.fed]
            hb = len(self.rec.history) - 1
            before = Snapshot(
                process,
                epoch,
                "before",
                self.checkpoint(epoch, val_loss),
                hb if hb >= 0 else None,
                lrs_of(self.optimizer),
            )
            run.snapshots[(process, epoch, "before")] = before
            if not kn.per_batch:
                for _ in range(kn.k):
                    self.scheduler.step(fed)
            if self.other is not None:
                lr_mid = lrs_of(self.optimizer)
                self.other.step()
                if lrs_of(self.optimizer) != lr_mid:
                    run.external_epochs.append(epoch)
            self.last_val = fed
            hi = len(self.rec.history) - 1
            run.snapshots[(process, epoch, "after")] = Snapshot(
                process,
                epoch,
                "after",
                self.after_step(before.ckpt),
                hi if hi >= 0 else None,
                lrs_of(self.optimizer),
            )
            run.rows.append(
                Row(
                    process,
                    epoch,
                    train_loss,
                    val_loss,
                    val_acc if kn.log_acc else None,
                    lr_used,
                    lrs_of(self.optimizer),
                    list(range(n0, len(self.rec.history))),
                    last,
                )
            )
        run.history = self.rec.history


def uninterrupted(knobs: Knobs) -> Run:
    """Process A alone: epochs 1..n from scratch, with every epoch's snapshots before and after its step."""
    run = Run(knobs)
    rec = StepRecorder()
    Live(knobs, rec, make_data()).run(run, 0, 1, knobs.n_epochs)
    run.processes = [Process(0, 1, knobs.n_epochs)]
    return run


def resumed(base: Run, epoch: int, resume: Resume) -> Run:
    """Process A = ``base`` up to ``epoch`` (+ ``crash_extra``), then a live process B from A's checkpoint.

    B rebuilds model, optimizer and scheduler (same hyperparameters), loads the parts ``resume`` says from the
    snapshot of ``epoch`` (saved in the base run's order), and trains on to the base run's last epoch
    (a weights-only resume: a new run of as many epochs, counted from 1 again).
    """
    kn = base.knobs
    run = base.prefix(epoch + resume.crash_extra)
    for r in run.rows:
        r.total = kn.n_epochs  # the crashed/stopped process had planned the whole run
    run.processes[0].last = epoch + resume.crash_extra
    snap = base.snapshots[(0, epoch, kn.save)]
    ck = roundtrip(snap.ckpt)
    rec = StepRecorder()
    rec.history = run.history
    live = Live(kn, rec, make_data())
    live.model.load_state_dict(ck["model"])
    proc = Process(1, epoch + 1, kn.n_epochs, weights="restored", resumed_from=(0, epoch, kn.save))
    if resume.weights_only:
        proc.first, proc.last = 1, kn.n_epochs - epoch
    else:
        live.global_step = ck["global_step"]
        if resume.optimizer in ("restored", "overwritten"):
            live.optimizer.load_state_dict(ck["optimizer"])
            proc.optimizer = "restored"
        if resume.scheduler == "restored":
            live.scheduler.load_state_dict(ck["scheduler"])
            proc.scheduler = "restored"
        if resume.lr_set_to is not None:
            for g in live.optimizer.param_groups:
                g["lr"] = resume.lr_set_to
            proc.optimizer = "overwritten"
        if kn.per_batch:
            live.last_val = ck["val_loss"]
    live.run(run, 1, proc.first, proc.last)
    run.processes.append(proc)
    run.resume, run.resume_epoch = resume, epoch
    if resume.crash_extra:
        redone = {r.epoch for r in run.rows if r.process == 1}
        for r in run.rows:
            if r.process == 0 and r.epoch in redone:
                r.superseded = True
    return run


# --------------------------------------------------------------------------------------------------
# checkpoint positions, read from a live run


def reduced_epochs(run: Run, process: int = 0) -> list[int]:
    """Epochs of ``process`` during which a plateau step reduced the lr."""
    out = []
    for r in run.rows:
        if r.process == process and any(
            run.history[i]["lr_after"] != run.history[i]["lr_before"] for i in r.steps
        ):
            out.append(r.epoch)
    return out


def cooldown_epochs(run: Run, process: int = 0) -> list[int]:
    """Epochs whose last step left cooldown_counter > 0 and did not itself reduce (a step right after one)."""
    out = []
    for r in run.rows:
        if r.process != process or not r.steps:
            continue
        last = run.history[r.steps[-1]]
        if last["state_after"]["cooldown_counter"] > 0 and last["lr_after"] == last["lr_before"]:
            out.append(r.epoch)
    return out


def position_candidates(run: Run, position: str, resume: bool) -> list[int]:
    """Epochs of process A that stand for ``position``, best first (with enough epochs after them)."""
    n = run.knobs.n_epochs
    min_after = 8 if resume else 3
    if position == "early":
        return [3, 4, 5, 2]
    if position == "after-reduction":
        return [e for e in reduced_epochs(run) if 4 <= e <= n - min_after]
    if position == "in-cooldown":
        return [e for e in cooldown_epochs(run) if e <= n - min_after]
    if position == "final":
        return [n]
    raise ValueError(position)
