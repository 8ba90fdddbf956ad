"""The resume guard in real torch training loops: one loop per mistake, and silence on a correct resume.

Each test trains a tiny model for real, saves a real ``torch.save`` checkpoint, resumes the way the mistake
does, and asks ``check_resume``. Where the mistake has a consequence torch itself shows (a RuntimeError at the
next reduction, a run that differs from the uninterrupted one), the test shows it too, so the guard is judged
against real torch, not against itself.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.optim.lr_scheduler import ReduceLROnPlateau  # noqa: E402

import plateau_forensics as pf  # noqa: E402
from plateau_forensics.guard import CODES, resume_problems  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "sample_checkpoints"
EPOCHS, SAVE_AT = 10, 6  # 0-based epochs; the checkpoint is written at the end of epoch SAVE_AT
SCHED = {"patience": 1, "factor": 0.5, "cooldown": 1}
LR = 0.2


class Loop:
    """A real loop: a linear model on noise labels (the validation loss plateaus), SGD, ReduceLROnPlateau."""

    def __init__(self, seed: int = 0, groups: int = 1, **sched: Any) -> None:
        g = torch.Generator().manual_seed(1)
        self.x, self.y = torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g)
        self.vx, self.vy = torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g)
        torch.manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(4, 1))
        params = list(self.model.parameters())
        chunks = [params] if groups == 1 else [params[:1], params[1:]]
        self.opt = torch.optim.SGD([{"params": c} for c in chunks], lr=LR)
        self.sched = ReduceLROnPlateau(self.opt, **{**SCHED, **sched})
        self.history: list[dict[str, Any]] = []

    def epoch(self, e: int) -> float:
        """Train one epoch and return the validation loss (not yet stepped)."""
        for i in range(0, 64, 16):
            self.opt.zero_grad()
            nn.functional.mse_loss(self.model(self.x[i:i + 16]), self.y[i:i + 16]).backward()
            self.opt.step()
        with torch.no_grad():
            return float(nn.functional.mse_loss(self.model(self.vx), self.vy))

    def step(self, e: int, val: float) -> None:
        before = self.opt.param_groups[0]["lr"]
        self.sched.step(val)
        self.history.append({"epoch": e, "val": val, "lr_in": before, "state": self.state()})

    def state(self) -> tuple[Any, ...]:
        s = self.sched
        return (s.best, s.num_bad_epochs, s.cooldown_counter, s.last_epoch,
                tuple(g["lr"] for g in self.opt.param_groups))

    def checkpoint(self, e: int, val: float) -> dict[str, Any]:
        return {"epoch": e, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "val_loss": val}

    def run(self, start: int, stop: int, save: Path | None = None, before_step: bool = False,
            save_every: Path | None = None) -> None:
        """Epochs ``start..stop-1``; write the checkpoint at SAVE_AT after the step (or before it)."""
        for e in range(start, stop):
            val = self.epoch(e)
            if before_step and save is not None and e == SAVE_AT:
                torch.save(self.checkpoint(e, val), save)
            if save_every is not None:  # before the step, as a loop that saves first does
                torch.save(self.checkpoint(e, val), save_every / f"ck{e}.pt")
            self.step(e, val)
            if not before_step and save is not None and e == SAVE_AT:
                torch.save(self.checkpoint(e, val), save)

    def load(self, ck: dict[str, Any], model: bool = True, opt: bool = True, sched: bool = True) -> None:
        if model:
            self.model.load_state_dict(ck["model"])
        if opt:
            self.opt.load_state_dict(ck["optimizer"])
        if sched:
            self.sched.load_state_dict(ck["scheduler"])


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> tuple[Loop, Path]:
    """An uninterrupted run of EPOCHS epochs that saved a correct checkpoint (after the step) at SAVE_AT."""
    path = tmp_path_factory.mktemp("guard") / "ck.pt"
    run = Loop()
    run.run(0, EPOCHS, save=path)
    lrs = [h["lr_in"] for h in run.history]
    assert lrs[SAVE_AT + 1] < LR, f"the run must have reduced the lr before the checkpoint: {lrs}"
    return run, path


def codes(problems: list[Any]) -> list[str]:
    return [p.code for p in problems]


def resumed(path: Path, **load: bool) -> Loop:
    run = Loop(seed=99)  # other initial weights: only the checkpoint can make it equal the first run
    run.load(torch.load(path, weights_only=True), **load)
    return run


# ------------------------------------------------------------------------------------ silent when right


def test_correct_resume_is_silent_and_really_correct(first: tuple[Loop, Path]) -> None:
    """After a full restore the guard says nothing, and the resumed run equals the uninterrupted one."""
    run, path = first
    again = resumed(path)
    assert pf.check_resume(again.sched, again.opt, checkpoint=path) == []
    assert pf.check_resume(again.sched, again.opt, checkpoint=torch.load(path, weights_only=True)) == []
    assert pf.check_resume(again.sched, again.opt, checkpoint=path, start_epoch=SAVE_AT + 1,
                           expect={**SCHED, "min_lr": 0}) == []
    again.run(SAVE_AT + 1, EPOCHS)
    assert [h["state"] for h in again.history] == [h["state"] for h in run.history[SAVE_AT + 1:]]


def test_hf_checkpoint_folder_loaded_correctly_is_silent() -> None:
    """A scheduler and optimizer restored from a real HF Trainer checkpoint folder pass the guard."""
    folder = SAMPLES / "hf" / "epoch" / "checkpoint-72"
    sd = torch.load(folder / "scheduler.pt", weights_only=True)
    osd = torch.load(folder / "optimizer.pt", weights_only=True)
    groups = [{"params": [nn.Parameter(torch.zeros(1)) for _ in g["params"]]} for g in osd["param_groups"]]
    opt = torch.optim.AdamW(groups, lr=0.05)
    sched = ReduceLROnPlateau(opt, patience=1, factor=0.5)  # make_hf.py's lr_scheduler_kwargs
    opt.load_state_dict(osd)
    sched.load_state_dict(sd)
    assert pf.check_resume(sched, opt, checkpoint=folder, expect={"patience": 1, "factor": 0.5}) == []


# ------------------------------------------------------------------------------------ one loop per mistake


def test_forgotten_scheduler_load(first: tuple[Loop, Path]) -> None:
    """A fresh scheduler after the resume is ``scheduler-not-restored``, and the fix names the key to load."""
    run, path = first
    again = resumed(path, sched=False)
    with pytest.raises(pf.ResumeError) as err:
        pf.check_resume(again.sched, again.opt, checkpoint=path)
    assert codes(err.value.problems) == ["scheduler-not-restored"]
    assert 'scheduler.load_state_dict(checkpoint["scheduler"])' in str(err.value)
    assert "\n" not in str(err.value)
    again.run(SAVE_AT + 1, EPOCHS)
    assert again.history[0]["state"][3] == 1 != run.history[SAVE_AT + 1]["state"][3]  # counting from 0 again


def test_forgotten_optimizer_load(first: tuple[Loop, Path]) -> None:
    """A fresh optimizer trains on with the initial lr: ``optimizer-lr-differs``."""
    _, path = first
    again = resumed(path, opt=False)
    with pytest.raises(pf.ResumeError) as err:
        pf.check_resume(again.sched, again.opt, checkpoint=path)
    assert codes(err.value.problems) == ["optimizer-lr-differs"]
    ck_lr = torch.load(path, weights_only=True)["optimizer"]["param_groups"][0]["lr"]
    assert again.opt.param_groups[0]["lr"] == LR != ck_lr
    assert 'optimizer.load_state_dict(checkpoint["optimizer"])' in err.value.problems[0].fix


def test_lr_set_by_hand_after_loading(first: tuple[Loop, Path]) -> None:
    """An lr assigned after loading (``g["lr"] = ...`` for each group) is ``optimizer-lr-differs``."""
    _, path = first
    again = resumed(path)
    for g in again.opt.param_groups:
        g["lr"] = 0.01
    problems = resume_problems(again.sched, again.opt, checkpoint=path)
    assert codes(problems) == ["optimizer-lr-differs"] and "0.01" in problems[0].message


def test_checkpoint_hyperparameters_override_the_constructor(first: tuple[Loop, Path]) -> None:
    """Built with patience=4, loading a patience=1 state runs patience=1: ``hyperparameters-overridden``."""
    _, path = first
    again = Loop(seed=99, patience=4)
    rec = pf.record(again.sched, again.opt, None)  # attached before the load: it sees what the load replaced
    again.load(torch.load(path, weights_only=True))
    assert again.sched.patience == 1  # torch's load_state_dict really imposes the saved value
    with pytest.raises(pf.ResumeError) as err:
        pf.check_resume(again.sched, again.opt, checkpoint=path)
    assert codes(err.value.problems) == ["hyperparameters-overridden"]
    assert "patience=4 -> 1" in str(err.value) and "scheduler.patience = 4" in str(err.value)
    rec.close()
    # without a recorder, the constructor's values come from expect; after the fix the guard is silent
    assert codes(resume_problems(again.sched, again.opt, checkpoint=path, expect={"patience": 4})) == [
        "hyperparameters-overridden"]
    again.sched.patience = 4
    assert pf.check_resume(again.sched, again.opt, checkpoint=path, expect={"patience": 4}) == []


def test_min_lrs_that_do_not_match_the_groups(tmp_path: Path) -> None:
    """A per-group ``min_lr`` saved for one group, resumed with two: the guard says so; torch raises later."""
    first = Loop(min_lr=[1e-4])
    first.run(0, 3)
    torch.save(first.checkpoint(2, first.history[-1]["val"]), tmp_path / "ck.pt")
    again = Loop(seed=99, min_lr=[1e-4])
    again.load(torch.load(tmp_path / "ck.pt", weights_only=True))
    head = nn.Parameter(torch.zeros(1))
    again.opt.add_param_group({"params": [head]})  # a new head trained in a second group after the resume
    with pytest.raises(pf.ResumeError) as err:
        pf.check_resume(again.sched, again.opt, checkpoint=tmp_path / "ck.pt")
    assert codes(err.value.problems) == ["min-lrs-mismatch"]
    assert "RuntimeError" in str(err.value)
    with pytest.raises(RuntimeError, match="param groups"):  # torch agrees, at the next reduction
        for _ in range(20):
            again.sched.step(10.0)


def test_checkpoint_saved_before_the_step(tmp_path: Path) -> None:
    """A loop saving before ``step()`` and resuming at the next epoch loses a step: ``saved-before-step``."""
    first = Loop()
    first.run(0, EPOCHS, save=tmp_path / "ck.pt", before_step=True)
    again = resumed(tmp_path / "ck.pt")
    ck = torch.load(tmp_path / "ck.pt", weights_only=True)
    with pytest.raises(pf.ResumeError) as err:
        pf.check_resume(again.sched, again.opt, checkpoint=ck, start_epoch=ck["epoch"] + 1)
    assert codes(err.value.problems) == ["saved-before-step"]
    assert f"saved before epoch {SAVE_AT}'s scheduler.step()" in str(err.value)
    # the same run with 1-based labels (first_epoch=1) is the same mistake; re-running the epoch is right
    assert codes(resume_problems(again.sched, again.opt, checkpoint=ck, start_epoch=ck["epoch"] + 2,
                                 first_epoch=1)) == ["saved-before-step"]
    assert pf.check_resume(again.sched, again.opt, checkpoint=ck, start_epoch=ck["epoch"]) == []
    assert pf.check_resume(again.sched, again.opt, checkpoint=ck, start_epoch=ck["epoch"] + 1,
                           first_epoch=1) == []
    # the resumed run really is one step behind the uninterrupted one
    again.run(SAVE_AT + 1, EPOCHS)
    assert again.history[-1]["state"][3] == first.history[-1]["state"][3] - 1


def test_stored_metric_shows_a_save_before_the_step(tmp_path: Path) -> None:
    """Without ``start_epoch``, a stored ``val_loss`` beating the saved ``best`` shows the save came first."""
    run = Loop()
    run.run(0, EPOCHS, save_every=tmp_path)
    improved = [h["epoch"] for h in run.history if h["state"][0] == h["val"]]
    not_improved = [h["epoch"] for h in run.history if h["state"][0] != h["val"]]
    assert improved and not_improved, "the run must have improving and non-improving epochs"
    for e in improved:
        ck = tmp_path / f"ck{e}.pt"
        run_ck = resumed(ck)
        assert codes(resume_problems(run_ck.sched, run_ck.opt, checkpoint=ck)) == ["saved-before-step"]
    # the metric saved as the loss tensor itself (``"val_loss": loss``) is read too, in the file and the dict
    as_tensor = {**torch.load(tmp_path / f"ck{improved[0]}.pt", weights_only=True)}
    as_tensor["val_loss"] = torch.tensor(as_tensor["val_loss"])
    torch.save(as_tensor, tmp_path / "tensor.pt")
    run_ck = resumed(tmp_path / "tensor.pt")
    for ck_in in (tmp_path / "tensor.pt", as_tensor):
        assert codes(resume_problems(run_ck.sched, run_ck.opt, checkpoint=ck_in)) == ["saved-before-step"]
    for e in not_improved:  # nothing in the file proves it there: silent, never a guess
        ck = tmp_path / f"ck{e}.pt"
        assert resume_problems(resumed(ck).sched, resumed(ck).opt, checkpoint=ck) == []


def test_correct_checkpoints_with_a_stored_metric_are_silent(tmp_path: Path) -> None:
    """Saved after the step, a stored ``val_loss`` never triggers the rule (it cannot beat its own best)."""
    run = Loop()
    for e in range(EPOCHS):
        val = run.epoch(e)
        run.step(e, val)
        torch.save(run.checkpoint(e, val), tmp_path / f"ck{e}.pt")
    for e in range(EPOCHS):
        ck = tmp_path / f"ck{e}.pt"
        assert resume_problems(resumed(ck).sched, resumed(ck).opt, checkpoint=ck) == []


# ------------------------------------------------------------------------------------ options


def test_warn_mode_and_ignore(first: tuple[Loop, Path]) -> None:
    """``action="warn"`` warns once per problem and returns them; ``ignore`` drops codes; bad options fail."""
    _, path = first
    again = resumed(path, sched=False, opt=False)
    with pytest.warns(pf.ResumeWarning) as caught:
        problems = pf.check_resume(again.sched, again.opt, checkpoint=path, action="warn")
    assert codes(problems) == ["scheduler-not-restored", "optimizer-lr-differs"] and len(caught) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert codes(pf.check_resume(again.sched, again.opt, checkpoint=path, action="warn",
                                     ignore=["scheduler-not-restored", "optimizer-lr-differs"])) == []
    with pytest.raises(pf.ConfigError, match="unknown code"):
        pf.check_resume(again.sched, again.opt, checkpoint=path, ignore=["typo"])
    with pytest.raises(pf.ConfigError, match="not a ReduceLROnPlateau constructor argument"):
        pf.check_resume(again.sched, again.opt, checkpoint=path, expect={"patiense": 4})
    assert set(CODES) == {"scheduler-not-restored", "optimizer-lr-differs", "hyperparameters-overridden",
                          "min-lrs-mismatch", "saved-before-step"}


def test_unreadable_checkpoint_is_a_checkpoint_error(tmp_path: Path, first: tuple[Loop, Path]) -> None:
    """A missing or foreign file raises the loader's one-line CheckpointError, not a resume verdict."""
    run, _ = first
    (tmp_path / "notes.pt").write_text("hello")
    for bad in (tmp_path / "missing.pt", tmp_path / "notes.pt"):
        with pytest.raises(pf.CheckpointError):
            pf.check_resume(run.sched, run.opt, checkpoint=bad)
