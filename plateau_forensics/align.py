"""Place a checkpoint in a loss log: after which row does a replay reach exactly the saved state?

A fresh scheduler with the checkpoint's hyperparameters is replayed over the log; the rows after which
its counters equal the saved ones are the candidates. When none match from the first row, the saved
``last_epoch`` says how many steps the scheduler took, so replays that start later are tried (the
seed-000 case: a scheduler created fresh at loop epoch 11).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from plateau_forensics.engine import Event, run
from plateau_forensics.state import PlateauConfig, PlateauState

#: Upper bound on steps spent searching for a later start (rows x steps); beyond it the search is skipped.
SEARCH_BUDGET = 3_000_000


@dataclass(frozen=True)
class Alignment:
    """Where the checkpoint sits in the log.

    Args:
        epoch: the log epoch after whose step the checkpoint was saved, or None when no row matches.
        index: that step's position in the trace, or None.
        scheduler_step: the saved ``last_epoch``.
        epoch_offset: ``epoch - last_epoch`` (None without a match).
        candidates: every log epoch after which the replayed state equals the saved one.
        start_index: the log row where the scheduler that wrote the checkpoint took its first step.
        initial_lrs: the lrs before ``start_index``'s step used for the replay.
        initial_lrs_source: ``log`` (the lr column), ``option`` (--lr), ``inferred`` or ``checkpoint``.
        lr_matches: the replayed lr at ``epoch`` equals the checkpoint optimizer's lr.
        matched_on: the fields compared.
        note: a sentence for the report (how the match was found, what was searched).
    """

    epoch: float | None
    index: int | None
    scheduler_step: float
    epoch_offset: float | None
    candidates: tuple[float, ...]
    start_index: int
    initial_lrs: tuple[float, ...]
    initial_lrs_source: str
    lr_matches: bool | None
    matched_on: tuple[str, ...]
    note: str = ""

    @property
    def consistent(self) -> bool:
        """The checkpoint was placed at a row, and its optimizer lr (when known) agrees there."""
        return self.epoch is not None and self.lr_matches is not False

    @property
    def scheduler_steps(self) -> float:
        """``step()`` calls the saved state has seen (``last_epoch`` corrected for torch <= 1.3)."""
        return self.scheduler_step - self._base

    _base: int = 0

    def as_dict(self) -> dict[str, object]:
        """The JSON contract's ``alignment`` object."""
        return {
            "epoch": self.epoch,
            "scheduler_step": self.scheduler_step,
            "epoch_offset": self.epoch_offset,
            "candidates": list(self.candidates),
            "start_epoch_index": self.start_index,
            "initial_lrs": list(self.initial_lrs),
            "initial_lrs_source": self.initial_lrs_source,
            "lr_matches": self.lr_matches,
            "matched_on": list(self.matched_on),
            "note": self.note,
        }


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _f32(x: float) -> float:
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def is_float32_log(metrics: Sequence[float]) -> bool:
    """Every value is exactly a float32 (TensorBoard scalars): the run itself may have stepped the doubles."""
    return bool(metrics) and all(_f32(m) == m or not math.isfinite(m) for m in metrics)


def _counters_match(saved: PlateauState, best: float, nb: int, cd: int, f32: bool = False) -> bool:
    if not (_same(saved.best, best) or (f32 and _same(_f32(saved.best), best))):
        return False
    if saved.partial:  # timm-style: only best (and last_epoch) were saved
        return True
    return saved.num_bad_epochs == nb and saved.cooldown_counter == cd


def _matches(config: PlateauConfig, saved: PlateauState, metrics: Sequence[float], lrs: Sequence[float],
             f32: bool = False) -> list[int]:
    trace = run(config, metrics, lrs, strict=False)
    c = trace._cols
    return [i for i in range(len(c.best)) if _counters_match(saved, c.best[i], c.num_bad[i], c.cooldown[i], f32)]


def infer_initial_lrs(
    config: PlateauConfig, metrics: Sequence[float], saved_lrs: Sequence[float]
) -> tuple[tuple[float, ...], bool]:
    """Undo the reductions a replay of ``metrics`` makes, to get the lrs before its first step.

    Returns the lrs and whether a forward replay from them reproduces ``saved_lrs`` exactly.
    """
    probe = run(config, metrics, saved_lrs, strict=False)
    k = sum(1 for e in probe._cols.events if e == 3)  # reductions that changed an lr
    guess = []
    for lr in saved_lrs:
        v = lr
        for _ in range(k):
            v = v / config.factor if config.factor not in (0.0, -0.0) else v
        guess.append(v)
    check = run(config, metrics, guess, strict=False)
    exact = bool(check._cols.lrs) and tuple(check._cols.lrs[-1]) == tuple(saved_lrs) or not metrics
    return tuple(guess), exact


def align(
    config: PlateauConfig,
    saved: PlateauState,
    metrics: Sequence[float],
    epochs: Sequence[float],
    *,
    saved_lrs: Sequence[float] | None,
    log_lrs: Sequence[Sequence[float | None]] | None = None,
    lr_option: Sequence[float] | None = None,
    checkpoint_epoch: float | None = None,
) -> Alignment:
    """Find the row after which the checkpoint was saved, and the replay's starting lrs.

    Args:
        config: the checkpoint's hyperparameters.
        saved: the checkpoint's counters.
        metrics: the log's metric per row.
        epochs: the log's epoch label per row.
        saved_lrs: the checkpoint optimizer's lrs (the lr the saved run continued with).
        log_lrs: the log's lr per row and group (lr used during that epoch), if the log has it.
        lr_option: lrs given by the user (``--lr``), used when the log has none.
        checkpoint_epoch: the checkpoint's own ``epoch`` field, used to choose among candidates.
    """
    n = len(metrics)
    matched_on = ("best",) if saved.partial else ("best", "num_bad_epochs", "cooldown_counter")
    placeholder = tuple(saved_lrs) if saved_lrs else (1.0,)
    if saved.default_min_lr is None and len(saved.min_lrs) != len(placeholder):
        # groups were added after the scheduler was built; the counters do not depend on the lrs, so align
        # with as many groups as the scheduler had (torch would raise at a reduction with the new count)
        placeholder = (placeholder + (1.0,) * len(saved.min_lrs))[: len(saved.min_lrs)]
    # a float32 log (TensorBoard) of a run that stepped doubles: compare best after rounding it to float32
    f32 = is_float32_log(metrics) and _f32(saved.best) != saved.best
    starts: list[tuple[int, int]] = [(0, i) for i in _matches(config, saved, metrics, placeholder, f32)]
    note = ""
    steps = saved.steps
    # The saved last_epoch says how many steps the scheduler took: a window of exactly that many rows
    # ending at a matching row is the better explanation when the scheduler was created mid-log.
    if isinstance(steps, (int, float)) and float(steps).is_integer() and 0 < steps < n:
        steps = int(steps)
        if (n - steps + 1) * steps <= SEARCH_BUDGET:
            for end in range(steps, n):
                s = end - steps + 1
                hits = _matches(config, saved, metrics[s : end + 1], placeholder, f32)
                if hits and hits[-1] == steps - 1:
                    starts.append((s, end))
        else:
            note = f"later starting rows not searched ({n} rows x {steps} steps exceeds the search budget)"

    def lrs_for(start: int, end: int) -> tuple[tuple[float, ...], str]:
        row = log_lrs[start] if log_lrs is not None else None
        if row is not None:
            # groups added later have no lr logged yet: the leading logged groups are the ones that existed
            n = next((i for i, v in enumerate(row) if v is None), len(row))
            if n and all(v is None for v in row[n:]):
                logged = tuple(float(v) for v in row[:n])  # type: ignore[arg-type]
                width = len(saved.min_lrs) if saved.default_min_lr is None else len(saved_lrs or ())
                if saved_lrs and n == len(row) and n < width:
                    # the log shows fewer groups than the optimizer has (HF logs group 0 only): the others'
                    # starting lrs are inferred from the checkpoint and the replayed reductions
                    guess, _ = infer_initial_lrs(config, metrics[start : end + 1], saved_lrs)
                    return logged + guess[n:width], "log"
                return logged, "log"
        if lr_option:
            return tuple(lr_option), "option"
        if saved_lrs:
            guess, _exact = infer_initial_lrs(config, metrics[start : end + 1], saved_lrs)
            return guess, "inferred"
        return (1.0,), "unknown"

    if not starts:
        lrs0, source = lrs_for(0, n - 1) if n else ((1.0,), "unknown")
        return Alignment(None, None, saved.last_epoch, None, (), 0, lrs0, source, None, matched_on,
                         note or "no row of the log reproduces the saved state")

    def lr_ok(start: int, end: int) -> bool | None:
        if not saved_lrs:
            return None
        lrs0, source = lrs_for(start, end)
        if source in ("inferred", "unknown"):
            return None
        trace = run(config, metrics[start : end + 1], lrs0, strict=False)
        got = trace._cols.lrs[-1]
        return len(got) == len(saved_lrs) and all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(got, saved_lrs))


    lr_hits = [c for c in starts if lr_ok(*c)]
    if lr_hits:  # the lr is part of the state: rows where only the counters agree are not candidates
        starts = lr_hits

    def score(c: tuple[int, int]) -> tuple[int, int, int]:
        start, end = c
        by_epoch = checkpoint_epoch is not None and epochs[end] == checkpoint_epoch
        by_steps = end - start + 1 == saved.steps
        return (int(bool(lr_ok(*c))), int(by_epoch), int(by_steps))

    best_start, best_end = max(starts, key=score)  # max keeps the first of equals: the earliest row
    lrs0, source = lrs_for(best_start, best_end)
    candidates = tuple(sorted({epochs[e] for _, e in starts}, key=lambda v: epochs.index(v)))
    if best_start > 0:
        note = (f"the scheduler took its first step at epoch {epochs[best_start]}: a fresh scheduler from there "
                f"reaches the saved state in exactly last_epoch={saved.last_epoch} steps")
    elif len(candidates) > 1 and not note:
        note = f"{len(candidates)} rows reproduce the saved state; chose epoch {epochs[best_end]}"
    epoch = epochs[best_end]
    # measured in steps, so a torch <= 1.3 state (last_epoch counted from -1) has the same offset as today's
    offset = epoch - saved.steps if isinstance(epoch, (int, float)) else None
    return Alignment(epoch, best_end, saved.last_epoch, offset, candidates, best_start, lrs0, source,
                     lr_ok(best_start, best_end), matched_on, note, saved.last_epoch_base)


__all__ = ["Alignment", "align", "infer_initial_lrs", "Event"]
