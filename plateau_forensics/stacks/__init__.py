"""Training stacks: one module per stack, holding everything that stack implies.

A stack module (``plateau_forensics/stacks/<name>.py``) defines one ``STACK = Stack(...)``: how to recognise
the files it writes (by their content, never by a file or folder name), where it keeps the plateau state, the
optimizer lrs and the counters, in which order it steps and saves, its defaults, and the findings only it can
cause. The core (reader, engine, stories) stays stack-agnostic and asks the registry:

- ``dir_stack(path)``: the stack that wrote a checkpoint *directory* (HF ``checkpoint-N/``, Accelerate
  ``save_state()``, DeepSpeed ``global_stepN/``), whose ``load_dir`` reads it;
- ``tree_stack(tree, key_path)``: the stack that wrote an already-read checkpoint tree, whose ``adapt`` gives
  the ``Checkpoint`` its view (defaults for keys the state does not save, call pattern, notes);
- ``findings_for(trace)``: what only the checkpoint's stack can cause, from evidence in the inputs.

Modules are imported on first use, in ``MODULES`` order (the first that recognises a file wins; ``TORCH`` is
the fallback and recognises nothing). ``import plateau_forensics`` imports none of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plateau_forensics.diagnose import Finding
    from plateau_forensics.engine import Trace
    from plateau_forensics.loader import Checkpoint
    from plateau_forensics.losses import LossLog

__all__ = ["MODULES", "TORCH", "Stack", "all_stacks", "by_name", "dir_stack", "findings_for", "stack_of",
           "tree_stack"]

#: Stack modules, in recognition order (more specific layouts first).
MODULES: tuple[str, ...] = ("lightning", "timm", "accelerate", "deepspeed", "mmengine", "ignite", "hf")


@dataclass(frozen=True)
class Stack:
    """What one training stack implies (frozen: a registry entry is shared by every caller).

    Attributes:
        name: the stack's name as ``Checkpoint.framework`` carries it (``"lightning"``, ``"timm"``, ...).
        title: a few words for reports ("PyTorch Lightning", "timm").
        owns_dir: a checkpoint directory this stack wrote, judged by the files in it.
        load_dir: read such a directory: ``(path, scheduler_key, loader) -> Checkpoint``.
        owns_tree: a read checkpoint tree this stack wrote, judged by its keys: ``(tree, key_path) -> bool``.
        adapt: this stack's view of a checkpoint read from its tree: ``(checkpoint, tree) -> Checkpoint``.
        findings: findings only this stack can cause, from the finished trace: ``(trace) -> [Finding]``.
        order: in which order the stack steps the scheduler and saves (one sentence, for reports and docs).
        saves_before_step: the stack's own checkpoints are saved before the epoch's plateau step (Lightning):
            the stories then expect that placement and find the other one unusual.
        epoch_places: the checkpoint's ``epoch`` counter says which row it was saved at (False for HF, whose
            ``epoch`` is a fraction of the run).
        notes: per story or finding code, the stack's own words appended to its sentence.
        state_file, optimizer_file: for directory layouts, the files the user's code loads the scheduler and
            optimizer states from (``scheduler.pt``), for the fixes the guard writes.
        extras: anything else a stack module keeps for its own findings.
        plateau_log: the checkpoint and log as the plateau scheduler itself saw them, for a stack whose own code
            sets the lr around the plateau steps (timm's warm-up and lr noise): ``(checkpoint, log) -> (checkpoint,
            log)`` with each such lr (a log row's, the optimizer's) replaced by the lr the plateau scheduler held,
            and rows whose metric never reached it (timm's warm-up) left out. The stories replay this view; the
            trace keeps the files as read, and ``findings`` says what was replaced.
        steps_per_row: how many plateau steps per logged row the checkpoint's own files point at (Accelerate:
            one per process that wrote the directory): ``(checkpoint) -> [k, ...]``; the stories propose them
            even where ``last_epoch`` alone does not ask for several steps per row (a mid-run checkpoint).
        torch_state: the plateau state is torch's own ``ReduceLROnPlateau.state_dict()``, whose key set dates the
            torch release (``torch-version``); False for a stack with its own scheduler class (MMEngine's
            ``ReduceOnPlateauLR``), whose state ``adapt`` maps onto torch's names.
        own_log: for a checkpoint that carries its run's log in ``Checkpoint.log_history`` (``adapt`` or
            ``load_dir`` put it there): ``(checkpoint) -> (source label, metric column or None)``; without it
            the log is HF's ``trainer_state.json:log_history`` and its metric column is detected.
    """

    name: str
    title: str
    owns_dir: Callable[[Path], bool] | None = None
    load_dir: Callable[[Path, str | None, str], Checkpoint] | None = None
    owns_tree: Callable[[Any, str], bool] | None = None
    adapt: Callable[[Checkpoint, Any], Checkpoint] | None = None
    findings: Callable[[Trace], list[Finding]] | None = None
    order: str = ""
    saves_before_step: bool = False
    epoch_places: bool = True
    notes: Mapping[str, str] = field(default_factory=dict)
    state_file: str | None = None
    optimizer_file: str | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)
    plateau_log: Callable[[Checkpoint, LossLog], tuple[Checkpoint, LossLog]] | None = None
    steps_per_row: Callable[[Checkpoint], Sequence[int]] | None = None
    torch_state: bool = True
    own_log: Callable[[Checkpoint], tuple[str, str | None]] | None = None


#: The fallback: a plain torch checkpoint (``torch.save`` of a dict holding the states), saved after the step.
TORCH = Stack("torch", "PyTorch", order="the loop calls scheduler.step(metric) after each validation, then saves")


_LOADED: dict[str, Stack | None] = {}


def _load(name: str) -> Stack | None:
    if name not in _LOADED:
        try:
            module = importlib.import_module(f"plateau_forensics.stacks.{name}")
        except ModuleNotFoundError as exc:  # a stack listed before its module exists: skipped
            if exc.name != f"plateau_forensics.stacks.{name}":
                raise
            _LOADED[name] = None
        else:
            _LOADED[name] = getattr(module, "STACK", None)
    return _LOADED[name]


def all_stacks() -> list[Stack]:
    """Every registered stack, in recognition order."""
    return [s for s in (_load(n) for n in MODULES) if s is not None]


def by_name(name: str) -> Stack | None:
    """The stack called ``name`` (``Checkpoint.framework``), or None."""
    return next((s for s in all_stacks() if s.name == name), None)


def stack_of(framework: str | None) -> Stack:
    """The stack called ``framework``; plain torch's when None or unknown."""
    return (by_name(framework) if framework else None) or TORCH


def dir_stack(path: Path) -> Stack | None:
    """The stack that wrote checkpoint directory ``path``, judged by its content; None when none claims it."""
    for s in all_stacks():
        if s.owns_dir is not None and s.load_dir is not None and s.owns_dir(path):
            return s
    return None


def tree_stack(tree: Any, key_path: str) -> Stack | None:
    """The stack that wrote an already-read checkpoint tree (its plateau state at ``key_path``), or None."""
    for s in all_stacks():
        if s.owns_tree is not None and s.owns_tree(tree, key_path):
            return s
    return None


def findings_for(trace: Trace) -> list[Finding]:
    """Findings only the checkpoint's stack can cause (none without a checkpoint or a stack that has some)."""
    ck = getattr(trace, "checkpoint", None)
    s = by_name(ck.framework) if ck is not None else None
    if s is None or s.findings is None:
        return []
    return list(s.findings(trace))
