"""Regenerate the sample checkpoints and loss logs by training a tiny real model with real torch.

Usage: ``python sample_checkpoints/make_samples.py [OUTDIR]`` (default: this script's folder).

Every sample is a real training run: a 8-16-1 ReLU MLP fitted to a fixed synthetic regression set
(uniform features, a noisy target whose noise sets the floor the validation loss plateaus on), a real
``torch.optim.lr_scheduler.ReduceLROnPlateau`` stepped once per epoch with the full-validation-set loss,
checkpoints written with ``torch.save`` and one CSV loss log per run. The samples are defined in
``README.md`` next to this file.

CSV rows are ``epoch,train_loss,val_loss,lr`` (``lr_0,lr_1`` with two param groups): ``epoch`` is the
training loop's 1-based epoch, floats are written with ``repr`` so they read back bit-identical, and
``lr`` is the LR used *during* that epoch (read before that epoch's ``scheduler.step(val_loss)``).

Ground truth: ``<sample>.truth.json`` next to each sample holds what the live scheduler did while the
run trained (``_truth.py``: every step's state, the lr each logged epoch used, where each checkpoint was
saved) and the story's numbers. The tests judge the tool against it, for the committed samples and for a
fresh regeneration alike.

Determinism: one thread, seeded generators only (data, init and the per-epoch shuffle), and the CPU
kernels pinned before torch is imported (``_pin_cpu.py``), so a rerun on the same machine writes the same
files. Other CPUs, math libraries or kernel sets round differently in the last bits (the vectorised ATen
kernels and MKL's ISA-specific GEMM do), so a regeneration elsewhere has other losses: nothing may compare
them with the committed ones. The story assertions below say whether a regenerated run still tells its
story, and its truth file says what it did.
"""

from __future__ import annotations

import _pin_cpu  # noqa: F401 - must run before torch loads (see _pin_cpu.py)

# isort: split

import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _truth import Recorder, dumps  # noqa: E402 - the sibling module, after torch like the rest

N_FEATURES = 8
N_TRAIN = 128
N_VAL = 128
BATCH_SIZE = 8


# --------------------------------------------------------------------------------------------------
# data, model, one epoch


@dataclass(frozen=True)
class Data:
    """A fixed train/validation split of the synthetic regression problem."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def make_data(seed: int, noise: float) -> Data:
    """Build the regression set from a seeded generator: uniform inputs, a linear target plus noise.

    Only ``torch.rand`` (uniform) is used: unlike ``randn`` its CPU kernel has no ISA-specific path.
    The noise is a centred sum of three uniforms (variance 1/4) scaled by ``noise``, so the best
    reachable validation MSE is about ``noise**2 / 4``.
    """
    g = torch.Generator().manual_seed(seed)
    n = N_TRAIN + N_VAL
    x = torch.rand(n, N_FEATURES, generator=g) * 2.0 - 1.0
    eps = torch.rand(n, generator=g) + torch.rand(n, generator=g) + torch.rand(n, generator=g) - 1.5
    target = 1.5 * x[:, 0] - x[:, 1] + 0.5 * x[:, 2]
    y = (target + noise * eps).unsqueeze(1)
    return Data(x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:])


def make_model(seed: int) -> nn.Sequential:
    """The 8-16-1 ReLU MLP (``[0]`` is the backbone layer, ``[2]`` the head), initialised from ``seed``."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(N_FEATURES, 16), nn.ReLU(), nn.Linear(16, 1))


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, data: Data, shuffle_seed: int) -> float:
    """Run one epoch of mini-batch training; return the sample-weighted mean training loss.

    The shuffle is seeded per epoch, so a run resumed from a checkpoint sees the same batches as the
    uninterrupted run would have.
    """
    model.train()
    perm = torch.randperm(N_TRAIN, generator=torch.Generator().manual_seed(shuffle_seed))
    total = 0.0
    for start in range(0, N_TRAIN, BATCH_SIZE):
        idx = perm[start : start + BATCH_SIZE]
        loss = nn.functional.mse_loss(model(data.x_train[idx]), data.y_train[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(idx)
    return total / N_TRAIN


def evaluate(model: nn.Module, data: Data) -> float:
    """Return the MSE over the whole validation set as a Python float (``loss.item()``)."""
    model.eval()
    with torch.no_grad():
        return nn.functional.mse_loss(model(data.x_val), data.y_val).item()


# --------------------------------------------------------------------------------------------------
# a training run that logs rows and calls back after each epoch's scheduler.step


Row = tuple[int, float, float, list[float]]


@dataclass
class Trainer:
    """Model + optimizer + scheduler of one (possibly resumed) run, and the rows it logged."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: ReduceLROnPlateau
    data: Data
    shuffle_seed: int

    def run(
        self,
        first_epoch: int,
        last_epoch: int,
        rows: list[Row],
        after_step: Callable[[int, float], None] | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        """Train loop epochs ``first_epoch..last_epoch`` (1-based), appending one CSV row per epoch.

        With a ``recorder``, the row and this scheduler's steps are recorded as they happen.
        """
        if recorder is not None:
            recorder.watch(self.scheduler)
        for epoch in range(first_epoch, last_epoch + 1):
            lrs = [float(group["lr"]) for group in self.optimizer.param_groups]  # LR used this epoch
            train_loss = train_epoch(self.model, self.optimizer, self.data, self.shuffle_seed * 1000 + epoch)
            val_loss = evaluate(self.model, self.data)
            if recorder is not None:
                recorder.row(epoch, lrs)
            self.scheduler.step(val_loss)
            rows.append((epoch, train_loss, val_loss, lrs))
            if after_step is not None:
                after_step(epoch, val_loss)


def write_csv(path: Path, rows: list[Row]) -> None:
    """Write the loss log: floats as ``repr`` so they read back bit-identical, ``\\n`` line ends."""
    n_groups = len(rows[0][3])
    lr_cols = ["lr"] if n_groups == 1 else [f"lr_{i}" for i in range(n_groups)]
    lines = [",".join(["epoch", "train_loss", "val_loss", *lr_cols])]
    for epoch, train_loss, val_loss, lrs in rows:
        cells = [str(epoch), repr(float(train_loss)), repr(float(val_loss)), *(repr(float(lr)) for lr in lrs)]
        lines.append(",".join(cells))
    path.write_bytes(("\n".join(lines) + "\n").encode("ascii"))


def roundtrip(obj: dict) -> dict:
    """``torch.save`` then ``torch.load(weights_only=True)`` through memory, as a real resume would."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def lr_change_epochs(rows: list[Row], group: int = 0) -> list[int]:
    """Loop epochs whose logged LR differs from the previous row's."""
    return [rows[i][0] for i in range(1, len(rows)) if rows[i][3][group] != rows[i - 1][3][group]]


def write_truth(out: Path, name: str, rec: Recorder, **facts: object) -> dict:
    """Write ``<name>.truth.json``: the story's numbers and the live record (``_truth.py``); return it."""
    truth = {"sample": name, **facts, "live": rec.as_json()}
    (out / f"{name}.truth.json").write_text(dumps(truth), encoding="ascii")
    return truth


# --------------------------------------------------------------------------------------------------
# the samples

SEED000 = dict(data_seed=2, noise=1.2, model_seed=2, lr=1.5e-3)
SEED000_SCHED = dict(mode="min", factor=0.8, patience=2, cooldown=3)  # threshold: torch default (1e-4 rel)


def make_seed000(out: Path) -> dict:
    """Seed 000: a resume at epoch 11 with a fresh scheduler, so ``last_epoch`` lags the loop by 10."""
    cfg = SEED000
    data = make_data(cfg["data_seed"], cfg["noise"])
    rows: list[Row] = []
    rec = Recorder()

    # Run A: epochs 1..10 with its own scheduler; saves a full checkpoint at epoch 10 and stops.
    model = make_model(cfg["model_seed"])
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    scheduler = ReduceLROnPlateau(optimizer, **SEED000_SCHED)
    run_a = Trainer(model, optimizer, scheduler, data, cfg["data_seed"])
    saved: dict[str, dict] = {}

    def save_a(epoch: int, val_loss: float) -> None:
        if epoch == 10:
            saved["a"] = roundtrip(_plain_ckpt(epoch, model, optimizer, scheduler, val_loss))

    run_a.run(1, 10, rows, save_a, rec)

    # Run B: rebuild everything, load model + optimizer, but the user's code keeps a FRESH scheduler.
    ckpt = saved["a"]
    model = make_model(cfg["model_seed"])
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    scheduler = ReduceLROnPlateau(optimizer, **SEED000_SCHED)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    run_b = Trainer(model, optimizer, scheduler, data, cfg["data_seed"])

    def save_b(epoch: int, val_loss: float) -> None:
        if epoch == 33:
            saved["b"] = _plain_ckpt(epoch, model, optimizer, scheduler, val_loss)
            torch.save(saved["b"], out / "seed000.pt")
            rec.saved("seed000.pt")

    run_b.run(11, 49, rows, save_b, rec)
    write_csv(out / "seed000.csv", rows)

    sd = saved["b"]["scheduler"]
    assert saved["b"]["epoch"] == 33 and sd["last_epoch"] == 33 - 10, sd
    changes = lr_change_epochs(rows)
    assert [e for e in changes if e > 33] == [36, 42, 48], changes  # cooldown + patience + 1 = 6 apart
    write_truth(out, "seed000", rec, log="seed000.csv", resume_epoch=11, checkpoint_epoch=33,
                scheduler_key="scheduler",
                setup={"optimizer": "Adam", "lr": cfg["lr"], "scheduler": SEED000_SCHED},
                logged_lr_changes=changes)
    return {"ckpt": saved["b"], "changes": changes}


CLEAN = dict(data_seed=1, noise=1.0, model_seed=0, lr=5e-3)
CLEAN_SCHED = dict(mode="min", factor=0.5, patience=3, cooldown=1, threshold=1e-3, threshold_mode="abs")


def make_clean(out: Path) -> dict:
    """An uninterrupted 30-epoch run; checkpoint at epoch 20 in the PyTorch-tutorial key layout."""
    cfg = CLEAN
    data = make_data(cfg["data_seed"], cfg["noise"])
    model = make_model(cfg["model_seed"])
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    scheduler = ReduceLROnPlateau(optimizer, **CLEAN_SCHED)
    rows: list[Row] = []
    saved: dict[str, dict] = {}
    rec = Recorder()

    def save(epoch: int, val_loss: float) -> None:
        if epoch == 20:
            saved["ckpt"] = {
                "epoch": epoch,
                "model_state_dict": model.state_dict(),
                "optimizer_state_dict": optimizer.state_dict(),
                "scheduler_state_dict": scheduler.state_dict(),
                "val_loss": val_loss,
            }
            torch.save(saved["ckpt"], out / "clean.pt")
            rec.saved("clean.pt")
            # The same content in the legacy (pre-1.6, non-zip) serialization format.
            torch.save(saved["ckpt"], out / "legacy_format.pt", _use_new_zipfile_serialization=False)
            rec.saved("legacy_format.pt")

    Trainer(model, optimizer, scheduler, data, cfg["data_seed"]).run(1, 30, rows, save, rec)
    write_csv(out / "clean.csv", rows)

    sd = saved["ckpt"]["scheduler_state_dict"]
    assert sd["last_epoch"] == 20, sd
    changes = lr_change_epochs(rows)
    assert len(changes) >= 2, changes
    write_truth(out, "clean", rec, log="clean.csv", resume_epoch=None, checkpoint_epoch=20,
                scheduler_key="scheduler_state_dict",
                setup={"optimizer": "Adam", "lr": cfg["lr"], "scheduler": CLEAN_SCHED},
                logged_lr_changes=changes)
    return {"ckpt": saved["ckpt"], "changes": changes, "sched_key": "scheduler_state_dict"}


FORGOT = dict(data_seed=0, noise=1.0, model_seed=2, lr=1e-2)
FORGOT_SCHED = dict(mode="min", factor=0.5, patience=2, cooldown=2)


def make_forgot_scheduler(out: Path) -> dict:
    """A resume at epoch 13 that restores model + optimizer but forgets the scheduler state."""
    cfg = FORGOT
    data = make_data(cfg["data_seed"], cfg["noise"])
    rows: list[Row] = []
    saved: dict[str, dict] = {}
    rec = Recorder()

    # Run A: epochs 1..12, checkpoint (with the scheduler under 'lr_scheduler') at epoch 12.
    model = make_model(cfg["model_seed"])
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    scheduler = ReduceLROnPlateau(optimizer, **FORGOT_SCHED)

    def save_a(epoch: int, val_loss: float) -> None:
        if epoch == 12:
            saved["ckpt"] = {
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "lr_scheduler": scheduler.state_dict(),
                "val_loss": val_loss,
            }
            torch.save(saved["ckpt"], out / "forgot_scheduler.pt")
            rec.saved("forgot_scheduler.pt")

    Trainer(model, optimizer, scheduler, data, cfg["data_seed"]).run(1, 12, rows, save_a, rec)
    ckpt = roundtrip(saved["ckpt"])

    def resume(restore_scheduler: bool, log: list[Row], recorder: Recorder | None) -> None:
        model = make_model(cfg["model_seed"])
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
        scheduler = ReduceLROnPlateau(optimizer, **FORGOT_SCHED)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if restore_scheduler:
            scheduler.load_state_dict(ckpt["lr_scheduler"])
        Trainer(model, optimizer, scheduler, data, cfg["data_seed"]).run(13, 30, log, recorder=recorder)

    resume(restore_scheduler=False, log=rows, recorder=rec)  # what the user's code did: written to the CSV
    correct: list[Row] = []
    resume(restore_scheduler=True, log=correct, recorder=None)  # in memory only: the faithful continuation
    write_csv(out / "forgot_scheduler.csv", rows)

    sd = saved["ckpt"]["lr_scheduler"]
    assert sd["last_epoch"] == 12 and sd["_last_lr"][0] < cfg["lr"], sd
    assert sd["num_bad_epochs"] > 0 or sd["cooldown_counter"] > 0, sd
    logged = [r[3] for r in rows[12:]]
    restored = [r[3] for r in correct]
    assert logged != restored, "the forgotten scheduler must change the LR story"
    first_diff = next(r[0] for r, c in zip(rows[12:], correct, strict=False) if r[3] != c[3])
    correct_changes = lr_change_epochs(rows[:12] + correct)
    write_truth(
        out, "forgot_scheduler", rec, log="forgot_scheduler.csv", resume_epoch=13, checkpoint_epoch=12,
        scheduler_key="lr_scheduler", setup={"optimizer": "Adam", "lr": cfg["lr"], "scheduler": FORGOT_SCHED},
        logged_lr_changes=lr_change_epochs(rows), correct_lr_changes=correct_changes,
        first_differing_epoch=first_diff,
        counterfactual={"what": "run B with the scheduler state restored (in memory only, not logged)",
                        "epochs": [r[0] for r in correct], "lr": restored},
    )
    return {
        "ckpt": saved["ckpt"],
        "changes": lr_change_epochs(rows),
        "sched_key": "lr_scheduler",
        "extra": f"correct resume's LR changes {correct_changes}; first differing epoch {first_diff}",
    }


TWO_GROUPS = dict(data_seed=2, noise=1.0, model_seed=0, lrs=(0.05, 0.5))
TWO_GROUPS_SCHED = dict(mode="min", factor=0.5, patience=1, min_lr=[1e-5, 0.1])


def make_two_groups(out: Path) -> dict:
    """Two param groups (backbone, head) with per-group ``min_lr``; the head hits its floor first."""
    cfg = TWO_GROUPS
    data = make_data(cfg["data_seed"], cfg["noise"])
    model = make_model(cfg["model_seed"])
    optimizer = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": cfg["lrs"][0]},
            {"params": model[2].parameters(), "lr": cfg["lrs"][1]},
        ],
        lr=cfg["lrs"][0],
    )
    scheduler = ReduceLROnPlateau(optimizer, **TWO_GROUPS_SCHED)
    rows: list[Row] = []
    saved: dict[str, dict] = {}
    rec = Recorder()

    def save(epoch: int, val_loss: float) -> None:
        if epoch == 25:
            saved["ckpt"] = _plain_ckpt(epoch, model, optimizer, scheduler, val_loss)
            torch.save(saved["ckpt"], out / "two_groups.pt")
            rec.saved("two_groups.pt")

    Trainer(model, optimizer, scheduler, data, cfg["data_seed"]).run(1, 30, rows, save, rec)
    write_csv(out / "two_groups.csv", rows)

    floor = TWO_GROUPS_SCHED["min_lr"][1]
    changes0, changes1 = lr_change_epochs(rows, 0), lr_change_epochs(rows, 1)
    assert rows[-1][3][1] == floor, rows[-1]
    assert any(e > max(changes1) for e in changes0), (changes0, changes1)  # group 0 still reduces
    write_truth(out, "two_groups", rec, log="two_groups.csv", resume_epoch=None, checkpoint_epoch=25,
                scheduler_key="scheduler",
                setup={"optimizer": "SGD", "lrs": list(cfg["lrs"]), "scheduler": TWO_GROUPS_SCHED},
                logged_lr_changes=changes0, logged_lr_1_changes=changes1, head_floor=floor)
    return {
        "ckpt": saved["ckpt"],
        "changes": changes0,
        "extra": f"lr_1 changes {changes1} (floor {floor} reached, later reductions suppressed)",
    }


def _plain_ckpt(
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: ReduceLROnPlateau,
    val_loss: float,
) -> dict:
    """The common plain-torch layout: ``epoch``, ``model``, ``optimizer``, ``scheduler``, ``val_loss``."""
    return {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "val_loss": val_loss,
    }


def main(argv: list[str]) -> None:
    """Write every sample into ``argv[1]`` (default: this folder) and print a short summary."""
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    samples = {
        "seed000": make_seed000(out),
        "clean": make_clean(out),
        "forgot_scheduler": make_forgot_scheduler(out),
        "two_groups": make_two_groups(out),
    }
    for name, info in samples.items():
        sd = info["ckpt"][info.get("sched_key", "scheduler")]
        print(f"{name}.pt  epoch={info['ckpt']['epoch']}  optimizer lrs={optimizer_lrs(info['ckpt'])}")
        print("  scheduler: " + ", ".join(f"{k}={v!r}" for k, v in sd.items()))
        print(f"  logged LR changes at epochs {info['changes']}")
        if "extra" in info:
            print(f"  {info['extra']}")
    print("legacy_format.pt  = clean.pt content, legacy (non-zip) serialization; log: clean.csv")


def optimizer_lrs(ckpt: dict) -> list[float]:
    """The LR of each param group stored in a checkpoint's optimizer state."""
    opt = ckpt.get("optimizer", ckpt.get("optimizer_state_dict"))
    return [g["lr"] for g in opt["param_groups"]]


if __name__ == "__main__":
    main(sys.argv)
