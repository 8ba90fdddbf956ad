"""Record, from the live objects while a generator trains, what its run did: the ground truth of a fixture.

Every generator keeps one ``Recorder`` per scenario. It reads the real ``ReduceLROnPlateau`` after each
of its real ``step()`` calls (``install()`` wraps the class's ``step``; only schedulers passed to ``watch``
are recorded, so the generators' own torch replays are not), is told by the generator when a log row is
written (with the lr each param group trained with) and when a checkpoint file is saved. ``as_json()``
gives the ``live`` object the fixture tests judge the tool by (``tests/fixture_truth.py``):

* ``rows``: per log row, in writing order, its ``epoch`` label and ``lr`` (every group's lr used while
  training it: read before the row's training, as the log's lr column means it);
* ``steps``: per ``scheduler.step()`` call, in time order: the ``row`` whose metric it was given (the row
  most recently written), which watched ``scheduler`` took it, the ``metric`` (``float(arg)``, what torch
  compares), every group's ``lr_before`` the step, and the state after it (``last_epoch``, ``best``,
  ``num_bad_epochs``, ``cooldown_counter``, every group's ``lr``);
* ``schedulers``: per watched scheduler object, its first step and the state just before it (a fresh
  scheduler has ``best`` = inf and ``last_epoch`` 0; a restored one the checkpoint's state), and the file
  it was restored from when the generator says so;
* ``checkpoints``: per saved file, the ``row`` being trained when it was saved, ``saved`` = ``after_step``
  (that row's step already taken) or ``before_step``, and ``state_step``: the step whose resulting state
  the file holds (the last step of the scheduler in use; for a restored scheduler that has not stepped
  yet, the step its source file held; null if no step ever produced it);
* ``raised``: steps that raised (torch's error text), and ``precision``: how the log stores floats
  (``float64``: ``repr`` text, bit-exact; ``float32``: TensorBoard scalars).

Only what the objects hold is recorded; nothing here is computed by replaying. JSON numbers are ``repr``
(exact); inf / -inf / nan are written as the strings ``"inf"`` / ``"-inf"`` / ``"nan"``.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from typing import Any

from torch.optim.lr_scheduler import ReduceLROnPlateau

_ORIGINAL_STEP = ReduceLROnPlateau.step
_WATCHED: list[tuple[ReduceLROnPlateau, Recorder]] = []


def _lrs(scheduler: ReduceLROnPlateau) -> list[float]:
    return [float(group["lr"]) for group in scheduler.optimizer.param_groups]


def _recording_step(self: ReduceLROnPlateau, metrics: Any, *args: Any, **kwargs: Any) -> None:
    """``ReduceLROnPlateau.step``, then the state the object holds, for the recorder watching it."""
    recorder = next((r for s, r in _WATCHED if s is self), None)
    if recorder is None:
        return _ORIGINAL_STEP(self, metrics, *args, **kwargs)
    before = _lrs(self)
    state = (self.last_epoch, float(self.best), self.num_bad_epochs, self.cooldown_counter)
    try:
        _ORIGINAL_STEP(self, metrics, *args, **kwargs)
    except Exception as exc:
        recorder.raised.append({"row": recorder.current_row, "error": str(exc).splitlines()[0]})
        raise
    recorder._step(self, float(metrics), before, state)
    return None


def install() -> None:
    """Wrap ``ReduceLROnPlateau.step`` (idempotent); unwatched schedulers behave exactly as before."""
    ReduceLROnPlateau.step = _recording_step  # type: ignore[method-assign]


class Recorder:
    """The live record of one scenario: rows written, steps taken, checkpoints saved."""

    def __init__(self, precision: str = "float64") -> None:
        self.precision = precision
        self.rows: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        self.schedulers: list[dict[str, Any]] = []
        self.checkpoints: list[dict[str, Any]] = []
        self.raised: list[dict[str, Any]] = []
        self._objects: list[ReduceLROnPlateau] = []
        self._active: int | None = None

    # ------------------------------------------------------------------ what the generator tells

    def watch(self, scheduler: ReduceLROnPlateau, restored_from: str | None = None) -> None:
        """Record this scheduler's steps from now on; it is the one in use (the one checkpoints save).

        Idempotent; another recorder watching it stops. ``restored_from``: the checkpoint file (recorded
        here) whose scheduler state it was loaded with.
        """
        install()
        _WATCHED[:] = [(s, r) for s, r in _WATCHED if s is not scheduler]
        _WATCHED.append((scheduler, self))
        if not any(o is scheduler for o in self._objects):
            self._objects.append(scheduler)
            entry: dict[str, Any] = {"first_step": None, "before": None}
            if restored_from is not None:
                entry["restored_from"] = restored_from
                entry["origin_step"] = self._checkpoint(restored_from)["state_step"]
            self.schedulers.append(entry)
        self._active = next(i for i, o in enumerate(self._objects) if o is scheduler)

    def row(self, epoch: float, lrs: Sequence[float]) -> int:
        """A log row was written: its epoch label and every group's lr it trained with; returns its index."""
        self.rows.append({"epoch": epoch, "lr": [float(v) for v in lrs]})
        return len(self.rows) - 1

    def saved(self, file: str) -> None:
        """A checkpoint file was written just now (``file``: its path relative to the scenario folder).

        A file written again (Lightning's ``last.ckpt``) keeps only its last write's record.
        """
        row = self.current_row
        own = [i for i, s in enumerate(self.steps) if s["scheduler"] == self._active]
        if own:
            state_step: int | None = own[-1]
        elif self._active is not None:
            state_step = self.schedulers[self._active].get("origin_step")
        else:
            state_step = None
        after = bool(own) and self.steps[own[-1]]["row"] == row
        self.checkpoints = [c for c in self.checkpoints if c["file"] != file]
        self.checkpoints.append({
            "file": file,
            "row": row,
            "epoch": self.rows[row]["epoch"] if row is not None else None,
            "saved": "after_step" if after else "before_step",
            "state_step": state_step,
        })

    def _checkpoint(self, file: str) -> dict[str, Any]:
        return next(c for c in self.checkpoints if c["file"] == file)

    def forget_checkpoints(self, keep: set[str]) -> None:
        """Drop the records of checkpoint files a generator deleted (keeps those named in ``keep``)."""
        self.checkpoints = [c for c in self.checkpoints if c["file"] in keep]

    @property
    def current_row(self) -> int | None:
        return len(self.rows) - 1 if self.rows else None

    def prefix(self, n_rows: int) -> Recorder:
        """The record of the first ``n_rows`` rows (a run that reuses another's first epochs as its own)."""
        out = Recorder(self.precision)
        out.rows = copy.deepcopy(self.rows[:n_rows])
        out.steps = [dict(s) for s in self.steps if s["row"] < n_rows]
        used = sorted({s["scheduler"] for s in out.steps})
        assert used == list(range(len(used))), "a prefix keeps the first schedulers"
        out.schedulers = copy.deepcopy(self.schedulers[: len(used)])
        out._objects = list(self._objects[: len(used)])
        out._active = len(used) - 1 if used else None
        out.checkpoints = [dict(c) for c in self.checkpoints if c["row"] is not None and c["row"] < n_rows]
        return out

    def checkpoint_at(self, file: str, row: int) -> None:
        """Record ``file`` as saved after row ``row``'s last step (a snapshot kept in memory)."""
        last = max(i for i, s in enumerate(self.steps) if s["row"] <= row)
        after = self.steps[last]["row"] == row
        self.checkpoints.append({"file": file, "row": row, "epoch": self.rows[row]["epoch"],
                                 "saved": "after_step" if after else "before_step", "state_step": last})

    # ------------------------------------------------------------------ what the scheduler did

    def _step(self, scheduler: ReduceLROnPlateau, metric: float, lr_before: list[float],
              state_before: tuple[Any, ...]) -> None:
        index = next(i for i, o in enumerate(self._objects) if o is scheduler)
        if self.schedulers[index]["first_step"] is None:
            last_epoch, best, num_bad, cooldown = state_before
            self.schedulers[index].update({
                "first_step": len(self.steps),
                "before": {"last_epoch": last_epoch, "best": best, "num_bad_epochs": num_bad,
                           "cooldown_counter": cooldown},
            })
        assert self.rows, "a step before any row was written"
        self.steps.append({
            "row": len(self.rows) - 1,
            "scheduler": index,
            "metric": metric,
            "lr_before": lr_before,
            "last_epoch": scheduler.last_epoch,
            "best": float(scheduler.best),
            "num_bad_epochs": scheduler.num_bad_epochs,
            "cooldown_counter": scheduler.cooldown_counter,
            "lr": _lrs(scheduler),
        })

    # ------------------------------------------------------------------ output

    def as_json(self, **extra: Any) -> dict[str, Any]:
        """The ``live`` object: rows and steps as columns (one list per field), checkpoints, schedulers."""
        step_keys = ("row", "scheduler", "metric", "lr_before", "last_epoch", "best", "num_bad_epochs",
                     "cooldown_counter", "lr")
        out: dict[str, Any] = {
            "precision": self.precision,
            "rows": {"epoch": [r["epoch"] for r in self.rows], "lr": [r["lr"] for r in self.rows]},
            "steps": {k: [s[k] for s in self.steps] for k in step_keys},
            "schedulers": self.schedulers,
            "checkpoints": self.checkpoints,
        }
        if self.raised:
            out["raised"] = self.raised
        out.update(extra)
        return jsonable(out)


def jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as the strings "inf" / "-inf" / "nan" (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def dumps(obj: dict[str, Any], expand: int = 3) -> str:
    """JSON text: objects nested up to ``expand`` levels one key per line, anything deeper on one line.

    Floats are ``repr`` (exact), so a column of numbers stays one reviewable line.
    """

    def render(v: Any, depth: int, pad: str) -> str:
        if isinstance(v, dict) and v and depth < expand:
            inner = pad + "  "
            body = ",\n".join(f"{inner}{json.dumps(k)}: {render(x, depth + 1, inner)}" for k, x in v.items())
            return "{\n" + body + "\n" + pad + "}"
        return json.dumps(v, allow_nan=False)

    return render(jsonable(obj), 0, "") + "\n"
