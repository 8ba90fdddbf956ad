"""HF Accelerate: ``accelerator.save_state()`` directories (``scheduler.bin``, ``optimizer.bin``, ...).

``save_state`` writes ``model.safetensors``, ``optimizer.bin`` / ``optimizer_<i>.bin``, ``scheduler.bin`` /
``scheduler_<i>.bin`` (one per prepared scheduler), ``custom_checkpoint_<i>.pkl`` (objects passed to
``register_for_checkpointing``) and one ``random_states_<rank>.pkl`` per process. Each ``.bin`` and ``.pkl``
is a ``torch.save`` zip whose internal root is the file's stem (``scheduler/data.pkl``). Only the scheduler,
custom and optimizer states are read; ``random_states_*.pkl`` and the weights are never opened.

A prepared scheduler is an ``AcceleratedScheduler``: its ``step(metric)`` steps the wrapped scheduler once per
process (``num_processes`` times) unless ``split_batches=True`` or ``step_scheduler_with_optimizer=False``.
For a ``ReduceLROnPlateau`` stepped once per evaluation that is N plateau steps per evaluation: the
repeats are not better than themselves, so they count as bad epochs and the patience shrinks to about
patience/N. The checkpoint then shows ``last_epoch = N x evaluations``, which the ``steps-per-row`` story
finds from the log; this module names Accelerate as its cause when N is the number of processes whose
``random_states_<rank>.pkl`` the directory holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plateau_forensics.errors import AmbiguousSchedulerState, CheckpointError, SchedulerStateNotFound
from plateau_forensics.loader import (
    Checkpoint,
    checkpoint_from_tree,
    find_plateau_states,
    read_file,
    short_listing,
)
from plateau_forensics.stacks import Stack

#: One torch.save file per prepared scheduler / optimizer / registered object, and one rng file per process.
SCHEDULER_FILE = re.compile(r"scheduler(?:_(\d+))?\.bin")
OPTIMIZER_FILE = re.compile(r"optimizer(?:_(\d+))?\.bin")
CUSTOM_FILE = re.compile(r"custom_checkpoint_(\d+)\.pkl")
RANK_FILE = re.compile(r"random_states_(\d+)\.pkl")
#: A torch.save zip starts with a local file header; its first member is ``<root>/...``.
_ZIP_LOCAL_HEADER = b"PK\x03\x04"


@dataclass(frozen=True)
class AccelerateCheckpoint(Checkpoint):
    """A ``save_state()`` directory's checkpoint, with what the directory says about the run.

    Args:
        processes: how many processes wrote it (one ``random_states_<rank>.pkl`` each, ranks 0..N-1).
        state_files: the files holding a plateau state (``scheduler.bin``, ``custom_checkpoint_0.pkl``).
    """

    processes: int = 1
    state_files: tuple[str, ...] = ()


def _index(match: re.Match[str]) -> int:
    return int(match.group(1) or 0)


def _members(d: Path, pattern: re.Pattern[str]) -> list[Path]:
    """Regular files of ``d`` whose whole name matches ``pattern``, by index (``scheduler.bin``: 0)."""
    found = []
    try:
        entries = list(d.iterdir())
    except OSError:
        return []
    for p in entries:
        m = pattern.fullmatch(p.name)
        if m is not None and p.is_file():
            found.append((_index(m), p))
    return [p for _, p in sorted(found)]


def _zip_root(path: Path) -> str | None:
    """The internal root of a zip file (the first member's top folder), from its first local header."""
    try:
        with open(path, "rb") as f:
            head = f.read(30)
            if len(head) < 30 or not head.startswith(_ZIP_LOCAL_HEADER):
                return None
            name_len = int.from_bytes(head[26:28], "little")
            name = f.read(min(name_len, 300)).decode("utf-8", "replace")
    except OSError:
        return None
    return name.split("/", 1)[0] if "/" in name else None


def _written_by_save_state(path: Path) -> bool:
    """A ``torch.save`` zip whose internal root is its own stem, as Accelerate's ``save`` writes it."""
    return _zip_root(path) == path.stem


def ranks(d: Path) -> list[int]:
    """The ranks whose ``random_states_<rank>.pkl`` the directory holds (the files are never opened)."""
    return sorted(int(RANK_FILE.fullmatch(p.name).group(1)) for p in _members(d, RANK_FILE))  # type: ignore[union-attr]


def owns_dir(d: Path) -> bool:
    """A ``save_state()`` directory: per-process ``random_states_<rank>.pkl`` beside scheduler, optimizer or
    custom states that are ``torch.save`` zips rooted at their own stem."""
    if not _members(d, RANK_FILE):
        return False
    states = _members(d, SCHEDULER_FILE) + _members(d, OPTIMIZER_FILE) + _members(d, CUSTOM_FILE)
    return any(_written_by_save_state(p) for p in states)


def _split(scheduler: str | None) -> tuple[str | None, str | None]:
    """``--scheduler`` as (file, key path in it): ``scheduler_1.bin``, ``custom_checkpoint_0.pkl:inner``."""
    if scheduler is None:
        return None, None
    name, sep, inner = scheduler.partition(":")
    if SCHEDULER_FILE.fullmatch(name) or CUSTOM_FILE.fullmatch(name):
        return name, (inner if sep else None)
    return None, scheduler


def load_dir(d: Path, scheduler: str | None, loader: Any) -> Checkpoint:
    """Read a ``save_state()`` directory: the plateau state from the scheduler (or registered custom) files,
    the lrs from the optimizer file paired with it; ``random_states_*.pkl`` and the weights stay closed."""
    want_file, inner = _split(scheduler)
    sources = _members(d, SCHEDULER_FILE) + _members(d, CUSTOM_FILE)
    if want_file is not None:
        sources = [p for p in sources if p.name == want_file]
        if not sources:
            raise SchedulerStateNotFound(f"{d}: no {want_file} in this save_state() directory")
    files: list[tuple[str, Any]] = []
    found: list[tuple[Path, Any, list[str]]] = []
    for p in sources:
        tf = read_file(p, loader)
        files.append((p.name, tf))
        paths = [k for k, _ in find_plateau_states(tf.obj)]
        if inner is not None:
            paths = [k for k in paths if k == inner]
        if paths:
            found.append((p, tf, paths))
    if not found:
        listing = short_listing(sorted(q.name[:80] for q in d.iterdir())) or "nothing"
        what = f"at {inner!r} " if inner is not None else ""
        raise SchedulerStateNotFound(
            f"{d}: no ReduceLROnPlateau state {what}in its scheduler or custom states; it holds: {listing}"
        )
    named = [f"{p.name}:{k}" if k else p.name for p, _, paths in found for k in paths]
    if len(named) > 1:
        raise AmbiguousSchedulerState(
            f"{d}: {len(named)} plateau states found: {short_listing(named)} (choose "
            "one with --scheduler FILE or FILE:KEYPATH)",
            named,
        )
    path, tf, (key,) = found[0]
    extra: dict[str, Any] = {}
    optimizers = _members(d, OPTIMIZER_FILE)
    index = _index(SCHEDULER_FILE.fullmatch(path.name)) if SCHEDULER_FILE.fullmatch(path.name) else None
    # scheduler_<i>.bin was prepared with the i-th optimizer in the usual code; with one optimizer there is no
    # choice, otherwise every optimizer is offered and the one whose group count matches is taken
    paired = [
        o for o in optimizers if index is not None and _index(OPTIMIZER_FILE.fullmatch(o.name)) == index
    ]  # type: ignore[arg-type]
    for o in optimizers if len(optimizers) == 1 else paired or optimizers:
        opt = read_file(o, loader)
        extra[o.name] = opt.obj
        files.append((o.name, opt))
    neutralised = tuple(dict.fromkeys(n for _, f in files for n in f.neutralised))
    integrity = tuple(f"{name}: {note}" for name, f in files for note in f.integrity)
    try:
        ck = checkpoint_from_tree(
            tf.obj,
            str(d),
            scheduler=key,
            loader=loader,
            extra_trees=extra,
            neutralised=neutralised,
            integrity=integrity,
        )
    except CheckpointError as exc:
        raise type(exc)(f"{path.name}: {exc}") from None
    fields = {f: getattr(ck, f) for f in Checkpoint.__dataclass_fields__}
    fields.update(key_path=f"{path.name}{':' + key if key else ''}", framework=STACK_NAME)
    return AccelerateCheckpoint(
        **fields,
        processes=max(1, len(ranks(d))),
        state_files=tuple(dict.fromkeys(p.name for p, _, _ in found)),
    )


def findings(trace: Any) -> list[Any]:
    """``accelerate-steps-per-process``: the story steps the scheduler k times per logged row and k is the
    number of processes that wrote the directory: a prepared scheduler stepped once per evaluation."""
    from plateau_forensics.diagnose import Finding

    ck, verdict = trace.checkpoint, getattr(trace, "verdict", None)
    if not isinstance(ck, AccelerateCheckpoint) or verdict is None or verdict.evaluation is None:
        return []
    stories = [verdict.story, *verdict.alternatives]
    k = verdict.evaluation.plan.k
    if k < 2 or k != ck.processes or not all("steps-per-row" in s for s in stories):
        return []
    patience = ck.config.patience
    repeats = "the repeat is" if k == 2 else f"each of the {k - 1} repeats is"
    message = (
        f"this save_state() directory was written by {k} processes (random_states_0..{k - 1}.pkl) and its "
        f"scheduler took {k} steps per logged row: Accelerate's AcceleratedScheduler.step(metric) steps a "
        f"prepared scheduler once per process (num_processes={k}) unless split_batches=True, so every "
        f"evaluation is {k} plateau steps, and {repeats} not better than itself (a bad epoch), "
        f"so patience={patience} acts like about {patience / k:g} evaluations"
    )
    fix = (
        "create the Accelerator with step_scheduler_with_optimizer=False (a prepared ReduceLROnPlateau then "
        "steps once per call), or with DataLoaderConfiguration(split_batches=True), or keep the plateau "
        "scheduler out of accelerator.prepare (step it once per evaluation on every process and save it with "
        "accelerator.register_for_checkpointing); stepping it on the main process only does not help: that "
        f"process still takes the {k} steps, and the other processes never reduce their lr"
    )
    evidence = {
        "processes": k,
        "steps_per_row": k,
        "last_epoch": ck.state.last_epoch,
        "patience": patience,
        "state_file": ck.key_path.split(":", 1)[0],
    }
    return [Finding("accelerate-steps-per-process", "warning", None, message, evidence, fix)]


def steps_per_row(ck: Any) -> list[int]:
    """A prepared scheduler takes one step per process per call: the processes that wrote the directory."""
    return [ck.processes] if isinstance(ck, AccelerateCheckpoint) and ck.processes > 1 else []


STACK_NAME = "accelerate"

STACK = Stack(
    name=STACK_NAME,
    title="HF Accelerate",
    owns_dir=owns_dir,
    load_dir=load_dir,
    findings=findings,
    steps_per_row=steps_per_row,
    order="the training loop calls the prepared scheduler's step(metric) after each evaluation (Accelerate "
    "steps it once per process), then accelerator.save_state() writes the directory",
    state_file="scheduler.bin",
    optimizer_file="optimizer.bin",
)
