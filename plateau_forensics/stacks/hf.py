"""HF Trainer: ``checkpoint-N/`` directories (``scheduler.pt``, ``optimizer.pt``, ``trainer_state.json``).

Recognised by a ``scheduler.pt`` member. The Trainer steps a plateau scheduler after each evaluation
(``eval_loss`` or ``metric_for_best_model``) and saves after that step; its ``trainer_state.json`` holds the run's
own log (``log_history``) and an ``epoch`` that is a fraction of the run, not a placement.
``rng_state.pth`` and ``training_args.bin`` are never opened.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from plateau_forensics.errors import CheckpointError, CheckpointLimitError, CheckpointValueError
from plateau_forensics.loader import (
    Checkpoint,
    checked_count,
    checkpoint_from_tree,
    is_regular_file,
    read_file,
    short_listing,
)
from plateau_forensics.safepickle import check_depth
from plateau_forensics.stacks import Stack

#: HF Trainer checkpoint directory members we read.
HF_SCHEDULER, HF_OPTIMIZER, HF_TRAINER_STATE = "scheduler.pt", "optimizer.pt", "trainer_state.json"
#: trainer_state.json beyond this size is refused (a run logging every step for 10^6 steps stays far below).
MAX_TRAINER_STATE_BYTES = 256 * 2**20


def owns_dir(d: Path) -> bool:
    """An HF Trainer checkpoint directory: it holds ``scheduler.pt``."""
    return (d / HF_SCHEDULER).is_file()


def read_trainer_state(state_file: Path) -> dict[str, Any]:
    """trainer_state.json as a dict, checked: size, nesting, top-level type, epoch/global_step/log_history."""
    if not is_regular_file(state_file):
        raise CheckpointError(f"{state_file}: not a regular file")
    try:
        size = state_file.stat().st_size
        if size > MAX_TRAINER_STATE_BYTES:
            raise CheckpointLimitError(f"{state_file}: {size:,} bytes (limit "
                                       f"{MAX_TRAINER_STATE_BYTES >> 20} MiB)")
        ts = json.loads(state_file.read_bytes())
    except CheckpointError:
        raise
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: JSONDecodeError, UnicodeDecodeError
        deep = isinstance(exc, RecursionError)
        text = "nested too deeply" if deep else " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{state_file}: not readable JSON: {text}") from None
    if not isinstance(ts, dict):
        raise CheckpointValueError(f"{state_file}: the top level is a JSON {type(ts).__name__}, not an "
                                   "object")
    try:
        check_depth(ts)
    except CheckpointError as exc:
        raise CheckpointLimitError(f"{state_file}: {exc}") from None
    checked_count(ts.get("epoch"), f"{state_file}: epoch")
    checked_count(ts.get("global_step"), f"{state_file}: global_step", integral=True)
    history = ts.get("log_history")
    if history is not None and not (isinstance(history, list) and all(isinstance(e, dict) for e in history)):
        raise CheckpointValueError(f"{state_file}: log_history is not a list of objects")
    return ts


def load_dir(d: Path, scheduler: str | None, loader: Any) -> Checkpoint:
    """Read an HF ``checkpoint-N/`` directory: the scheduler and optimizer states, trainer_state.json's
    counters and log."""
    sched_file = d / HF_SCHEDULER
    if not sched_file.is_file():
        listing = short_listing(sorted(p.name[:80] for p in d.iterdir())) or "nothing"
        raise CheckpointError(f"{d}: a directory without {HF_SCHEDULER}; it holds: {listing}")
    sched = read_file(sched_file, loader)
    extra: dict[str, Any] = {}
    files = [(HF_SCHEDULER, sched)]
    if (d / HF_OPTIMIZER).is_file():
        opt = read_file(d / HF_OPTIMIZER, loader)
        extra["optimizer.pt"] = opt.obj
        files.append((HF_OPTIMIZER, opt))
    neutralised = tuple(dict.fromkeys(n for _, f in files for n in f.neutralised))
    integrity = tuple(f"{name}: {note}" for name, f in files for note in f.integrity)
    ck = checkpoint_from_tree(sched.obj, str(d), scheduler=scheduler, loader=loader, extra_trees=extra,
                              neutralised=neutralised, integrity=integrity)
    key_path = f"{HF_SCHEDULER}{':' + ck.key_path if ck.key_path else ''}"
    ck = replace(ck, key_path=key_path, framework="hf-trainer")
    state_file = d / HF_TRAINER_STATE
    if state_file.exists():
        ts = read_trainer_state(state_file)
        history = ts.get("log_history")
        ck = replace(ck, epoch=ts.get("epoch"), global_step=ts.get("global_step"),
                     log_history=tuple(history) if isinstance(history, list) else None)
    return ck



STACK = Stack(
    name="hf-trainer",
    title="Hugging Face Trainer",
    owns_dir=owns_dir,
    load_dir=load_dir,
    order="the Trainer steps the plateau scheduler after each evaluation, then saves checkpoint-N/",
    epoch_places=False,
    state_file=HF_SCHEDULER,
    optimizer_file=HF_OPTIMIZER,
)
