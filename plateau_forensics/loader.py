"""Find the ReduceLROnPlateau state, the optimizer's lrs and the epoch counters in a checkpoint.

The state is found by its shape (``best`` plus other plateau keys) anywhere in the tree, never by a
file or key name; every candidate is reported with its key path, and several are never guessed among.
"""

from __future__ import annotations

import json
import math
import os
import reprlib
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from plateau_forensics.errors import (
    AmbiguousSchedulerState,
    CheckpointError,
    CheckpointLimitError,
    CheckpointValueError,
    ConfigError,
    SchedulerStateNotFound,
)
from plateau_forensics.remote import is_url
from plateau_forensics.safepickle import check_depth
from plateau_forensics.state import PlateauConfig, PlateauState, from_state_dict, is_plateau_shaped
from plateau_forensics.torchfile import Opaque, TensorRef, TorchFile, short_repr

Loader = Literal["builtin", "torch"]

#: The state search looks this many levels into the tree (Lightning keeps the state 2 levels down).
SEARCH_DEPTH = 12
#: Counters and epoch fields beyond this magnitude are not counts of anything (torch keeps them as int64).
MAX_COUNT = 2**63


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint says about its plateau scheduler, normalised to plain Python values.

    Args:
        path: the file or directory read.
        key_path: where the plateau state sits (``scheduler``, ``lr_schedulers[0]``, ``""`` for a bare state).
        config: the hyperparameters the saved state imposes on ``load_state_dict``.
        state: the saved counters (``state.partial`` when counters were missing).
        raw: the saved state mapping with tensors turned into numbers.
        optimizer_lrs: every param group's lr in the optimizer state (the lr training really uses), if found.
        lr_dtypes: per group, the tensor dtype of the lr (torch >= 2.10 tensor lrs), else None.
        optimizer_key_path: where those lrs were found.
        initial_lrs: ``initial_lr`` per group when the optimizer has it (timm, LRScheduler subclasses).
        epoch: the checkpoint's ``epoch`` counter, if any.
        global_step: the checkpoint's ``global_step``, if any.
        top_level: the keys (or a description) of the checkpoint's top level.
        candidates: every plateau-shaped key path found.
        framework: ``torch``, ``lightning``, ``hf-trainer`` or ``timm``, judged from the content.
        loader: which reader produced this (not part of equality).
        neutralised: dotted names of every global the built-in reader kept inert instead of running, and of
            calls it refused (not part of equality; empty for ``loader="torch"``).
        integrity: structural anomalies of the file, and what was not verified (lines starting with
            ``"not verified: "``); not part of equality.
        schedulers: the other torch LRScheduler states in the checkpoint (StepLR, a warm-up, ...).
    """

    path: str
    key_path: str
    config: PlateauConfig
    state: PlateauState
    raw: Mapping[str, Any]
    optimizer_lrs: tuple[float, ...] | None = None
    lr_dtypes: tuple[str | None, ...] = ()
    optimizer_key_path: str | None = None
    initial_lrs: tuple[float, ...] | None = None
    epoch: float | None = None
    global_step: int | None = None
    top_level: tuple[str, ...] = ()
    candidates: tuple[str, ...] = ()
    framework: str = "torch"
    loader: Loader = field(default="builtin", compare=False)
    #: HF Trainer: trainer_state.json's log_history (eval_loss, learning_rate per step), the run's own log.
    log_history: tuple[Mapping[str, Any], ...] | None = field(default=None, compare=False, repr=False)
    neutralised: tuple[str, ...] = field(default=(), compare=False)
    integrity: tuple[str, ...] = field(default=(), compare=False)
    #: other LRScheduler states saved beside the plateau one (``schedules.checkpoints.FoundScheduler``:
    #: key path, torch class, state), in tree order
    schedulers: tuple[Any, ...] = field(default=(), compare=False, repr=False)
    #: the optimizer's param groups' other numeric settings (``initial_lr``, ``max_lr``, ``momentum``,
    #: ``betas``, ...): what a resumed optimizer hands its schedulers
    optimizer_groups: tuple[Mapping[str, Any], ...] = field(default=(), compare=False, repr=False)

    @property
    def partial(self) -> bool:
        """The saved state lacked counters a full torch state has."""
        return self.state.partial

    def with_hyperparameters(self, fallback: PlateauConfig, given: tuple[str, ...]) -> Checkpoint:
        """The same checkpoint with hyperparameters the saved state lacks taken from ``fallback``.

        Raises:
            ConfigError: one of ``given`` is saved in the state (the saved value wins on load_state_dict).
        """
        saved = [k for k in given if (k if k != "min_lr" else "min_lrs") in self.raw]
        if saved:
            raise ConfigError(
                f"{', '.join(saved)} is saved in the checkpoint and wins on load_state_dict; hyperparameter "
                "options only fill what a partial state lacks (use --expect to compare)")
        # only the given names replace what the checkpoint's view already implies for missing keys (its
        # stack's constructor defaults, e.g. timm's mode='max'); the rest of ``fallback`` is torch's defaults
        base = replace(self.config, **{k: getattr(fallback, k) for k in given})
        config, state = from_state_dict(self.raw, base)
        return replace(self, config=config, state=replace(state, best_dtype=self.state.best_dtype,
                                                          extras=self.state.extras))

    @property
    def lrs(self) -> tuple[float, ...] | None:
        """The lrs a faithful resume continues with: the optimizer's, else the scheduler's ``_last_lr``."""
        return self.optimizer_lrs if self.optimizer_lrs is not None else self.state.last_lr


class SavedState(dict):  # type: ignore[type-arg]
    """A saved state mapping as read from the file; its repr is bounded (depth 4, 30 keys, 10 items per list),
    because a hostile file can hang a plain repr with a shared or self-referencing structure in an extra key."""

    def __repr__(self) -> str:
        return _STATE_REPR.repr(dict(self))


_STATE_REPR = reprlib.Repr()
_STATE_REPR.maxlevel, _STATE_REPR.maxdict, _STATE_REPR.maxlist, _STATE_REPR.maxtuple = 4, 30, 10, 10
_STATE_REPR.maxstring = _STATE_REPR.maxother = 80


# -- reading files ---------------------------------------------------------------------------------
def is_regular_file(path: str | os.PathLike[str]) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def is_checkpoint_dir(path: str | os.PathLike[str]) -> bool:
    """A checkpoint directory some training stack wrote (HF ``checkpoint-N/``, Accelerate, ...), by its files."""
    from plateau_forensics import stacks

    return Path(path).is_dir() and stacks.dir_stack(Path(path)) is not None


def is_torch_file(path: str | os.PathLike[str]) -> bool:
    """True when the file starts like a ``torch.save`` output (zip or legacy pickle), by content.

    Only regular files are opened: a FIFO would block and a device would never end.
    """
    if not is_regular_file(path):
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:2] == b"PK" or head[:1] == b"\x80"


class _TorchTensor:
    """A real torch tensor seen through the same small interface as the builtin reader's TensorRef."""

    def __init__(self, t: Any) -> None:
        self._t = t
        self.dtype = str(t.dtype).removeprefix("torch.")
        self.shape = tuple(t.shape)

    def item(self) -> Any:
        return self._t.item()

    def tolist(self) -> Any:
        return self._t.tolist()


def _read_torch(path: Path) -> TorchFile:
    from plateau_forensics.torchfile import read_torch_archive

    try:
        import torch
    except ImportError as exc:
        raise CheckpointError("--loader torch needs torch: pip install 'plateau-forensics[torch]'") from exc
    # Our own reader sees the file first: torch's unpickler crashes (SIGSEGV) on some hostile files, and
    # anything over our limits or ambiguous is refused before torch reads a byte of it.
    checked = read_torch_archive(path)
    try:  # mmap only applies to the zip format; torch refuses it for legacy files
        obj = torch.load(path, weights_only=True, mmap=_starts_with_pk(path), map_location="cpu")
    except Exception as exc:  # torch raises many types here; all mean "this file cannot be read safely"
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: torch.load(weights_only=True) refused it: {first}") from exc
    done: dict[int, Any] = {}

    def wrap(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return _TorchTensor(v)
        if not isinstance(v, (Mapping, list, tuple)):
            return v
        if id(v) in done:  # shared or self-referencing containers: wrap each once
            return done[id(v)]
        if isinstance(v, Mapping):
            out: Any = {}
            done[id(v)] = out
            out.update((k, wrap(x)) for k, x in v.items())
            return out
        if isinstance(v, list):
            lst: list[Any] = []
            done[id(v)] = lst
            lst.extend(wrap(x) for x in v)
            return lst
        tup = tuple(wrap(x) for x in v)
        done[id(v)] = tup
        return tup

    return TorchFile(wrap(obj), (), checked.integrity, checked.unverified, checked.storages)


def _starts_with_pk(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"PK"


def read_file(path: str | os.PathLike[str], loader: Loader = "builtin") -> TorchFile:
    """A ``torch.save`` file read without running pickled code, with what was neutralised and not verified.

    Raises:
        CheckpointError: missing, unreadable, not a regular file, over a reader limit, or not a torch file.
    """
    from plateau_forensics.torchfile import read_torch_archive

    if is_url(path):  # s3://, https://, ...: read by byte ranges (plateau_forensics.remote)
        if loader == "torch":
            raise ConfigError("--loader torch reads local files only (torch.load would fetch every weight): "
                              "use the built-in reader for a URL, or download the file")
        return read_torch_archive(str(path))
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such file")
    if not is_regular_file(p):
        raise CheckpointError(f"{p}: not a regular file")
    if loader == "torch":
        return _read_torch(p)
    return read_torch_archive(p)


def read_tree(path: str | os.PathLike[str], loader: Loader = "builtin") -> Any:
    """The object a ``torch.save`` file holds, read without running pickled code.

    Raises:
        CheckpointError: missing, unreadable, or not a torch file.
    """
    return read_file(path, loader).obj


# -- walking the tree ------------------------------------------------------------------------------
def as_mapping(obj: Any) -> Mapping[Any, Any] | None:
    """A mapping, or what an inert pickled object was given (its ``__dict__`` and items); else None."""
    if isinstance(obj, Mapping):
        return obj
    if isinstance(obj, Opaque):  # an instance only: an Opaque *class* (a dtype, a config class) holds nothing
        return obj.mapping()
    return None


def _suffix(key: Any) -> str:
    if isinstance(key, str) and key.isidentifier() and len(key) <= 80:
        return f".{key}"
    return f"[{short_repr(key, 60)}]"


def _children(obj: Any) -> list[tuple[str, Any]]:
    """(key-path suffix, child) pairs of a container, an inert pickled object included."""
    if isinstance(obj, (list, tuple)):
        return [(f"[{i}]", v) for i, v in enumerate(obj) if isinstance(v, _CONTAINERS)]
    m = as_mapping(obj)
    if m is None:
        return []
    return [(_suffix(k), v) for k, v in m.items() if isinstance(v, _CONTAINERS)]


_CONTAINERS = (Mapping, list, tuple, Opaque)


def walk(obj: Any) -> Iterator[tuple[str, Any]]:
    """Every container in the tree with its key path, depth-first, each object once (by id) at its first path.

    Shared sub-objects (a DAG) and self-references are visited once, so the walk costs the tree's size.
    """
    if not isinstance(obj, _CONTAINERS):
        return
    seen = {id(obj)}
    stack: list[tuple[str, Any, int]] = [("", obj, 0)]
    while stack:
        path, node, depth = stack.pop()
        yield path, node
        if depth >= SEARCH_DEPTH or _is_tensor(node):
            continue
        kids = []
        for suffix, child in _children(node):
            if id(child) not in seen:
                seen.add(id(child))
                kids.append((path + suffix, child, depth + 1))
        stack.extend(reversed(kids))


def _group_numbers(group: Mapping[str, Any]) -> dict[str, Any]:
    """A param group's plain numeric settings (numbers and tuples of numbers; tensors as their value)."""
    out: dict[str, Any] = {}
    for k, v in group.items():
        if k == "params" or not isinstance(k, str):
            continue
        if isinstance(v, TensorRef):
            continue
        if isinstance(v, bool) or v is None:
            out[k] = v
        elif isinstance(v, (int, float)):
            out[k] = v
        elif isinstance(v, (list, tuple)) and len(v) <= 8 and all(isinstance(x, (int, float)) for x in v):
            out[k] = tuple(v)
    return out


def other_schedulers(tree: Any) -> tuple[Any, ...]:
    """The torch LRScheduler states in ``tree`` besides the plateau one (``schedules.find_schedulers``); the
    scheduler engines are imported only when the tree holds a state shaped like one (``base_lrs`` and
    ``last_epoch``)."""
    for _, node in walk(tree):
        m = as_mapping(node)
        if m is not None and "base_lrs" in m and "last_epoch" in m:
            break
    else:
        return ()
    from plateau_forensics.schedules.checkpoints import find_schedulers

    return tuple(find_schedulers(tree))


def _is_tensor(v: Any) -> bool:
    return isinstance(v, (TensorRef, _TorchTensor))


def _clean(path: str) -> str:
    return path[1:] if path.startswith(".") else path


def find_plateau_states(tree: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """Every ReduceLROnPlateau-shaped mapping in ``tree`` with its key path (``""`` for the root)."""
    found = []
    for path, node in walk(tree):
        m = as_mapping(node)
        if m is not None and is_plateau_shaped(m):
            found.append((_clean(path), m))
    return found


def _optimizers(tree: Any) -> list[tuple[str, list[Mapping[str, Any]]]]:
    out = []
    for path, node in walk(tree):
        m = as_mapping(node)
        groups = m.get("param_groups") if m is not None else None
        if isinstance(groups, list) and groups and all(isinstance(g, Mapping) and "lr" in g for g in groups):
            out.append((_clean(path), groups))
    return out


# -- values ----------------------------------------------------------------------------------------
_NUMBER_KEYS = ("factor", "patience", "threshold", "cooldown", "eps", "last_epoch", "best", "num_bad_epochs",
                "cooldown_counter", "mode_worse")
_COUNT_KEYS = ("patience", "cooldown", "last_epoch", "num_bad_epochs", "cooldown_counter")
_MODES = {"mode": ("min", "max"), "threshold_mode": ("rel", "abs")}


def _number(value: Any, where: str) -> tuple[Any, str | None]:
    """A saved scalar as a Python number, and the tensor dtype it had (None for a plain number).

    Raises:
        CheckpointValueError: not a number, a tensor of several elements, or too large for a float.
        CheckpointError: the tensor's bytes cannot be read.
    """
    dtype = None
    if _is_tensor(value):
        if math.prod(value.shape) != 1:
            raise CheckpointValueError(f"{where} is a tensor of shape {short_repr(value.shape)}, not one "
                                       "number")
        try:
            value, dtype = value.item(), value.dtype
        except (RuntimeError, ValueError, TypeError) as exc:  # torch's own errors for unreadable tensors
            raise CheckpointError(f"{where}: cannot read a number from the tensor ({exc})") from exc
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointValueError(f"{where} holds {short_repr(value)}, not a number")
    if isinstance(value, int):
        try:
            float(value)
        except OverflowError:
            raise CheckpointValueError(f"{where} holds an integer of {value.bit_length()} bits, too large "
                                       "for a "
                                       "float") from None
    return value, dtype


def _normalise_state(raw: Mapping[Any, Any], where: str) -> tuple[dict[str, Any], str | None]:
    """The state with tensors read as numbers, every key torch uses checked for its type and range.

    Raises:
        CheckpointValueError: a saved value torch's ReduceLROnPlateau cannot hold, naming the key.
    """
    out: dict[str, Any] = {}
    best_dtype = None
    for k, v in raw.items():
        if k == "optimizer":  # a pickled scheduler object still carries its optimizer
            continue
        key = k if isinstance(k, str) else short_repr(k)
        at = f"{where}.{short_repr(key, 60) if not key.isidentifier() else key}"
        if k in _NUMBER_KEYS or _is_tensor(v):
            v, dtype = _number(v, at)
            if k == "best":
                best_dtype = dtype
            if k in _COUNT_KEYS and abs(v) >= MAX_COUNT:
                raise CheckpointValueError(f"{at} is {short_repr(v)}: out of range for a counter")
        elif k in ("_last_lr", "min_lrs"):
            if not isinstance(v, (list, tuple)):
                raise CheckpointValueError(f"{at} holds {short_repr(v)}, not a list of numbers")
            v = [_number(x, f"{at}[{i}]")[0] for i, x in enumerate(v)]
        elif k == "default_min_lr" and v is not None:
            v = _number(v, at)[0]
        elif k in _MODES and v not in _MODES[k]:
            raise CheckpointValueError(f"{at} is {short_repr(v)}; torch knows "
                                       f"{' and '.join(map(repr, _MODES[k]))}")
        out[key] = v
    factor = out.get("factor")
    if isinstance(factor, (int, float)) and factor >= 1.0:
        raise CheckpointValueError(f"{where}.factor is {short_repr(factor)}; torch requires factor < 1.0")
    return out, best_dtype


def _top_level(tree: Any) -> tuple[str, ...]:
    m = as_mapping(tree)
    if m is not None:
        return tuple(k if isinstance(k, str) and len(k) <= 80 else short_repr(k, 80) for k in m)
    return (f"<{type(tree).__name__[:80]}>",)


def short_listing(names: list[str] | tuple[str, ...], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _pick_optimizer(
    opts: list[tuple[str, list[Mapping[str, Any]]]], key_path: str, n_groups: int | None
) -> tuple[str, list[Mapping[str, Any]]] | None:
    if len(opts) == 1:
        return opts[0]
    # a pickled scheduler object carries its own optimizer; Lightning pairs lists by index
    for path, groups in opts:
        if key_path and path.startswith(key_path + "."):
            return path, groups
    if key_path.startswith("lr_schedulers["):
        paired = "optimizer_states" + key_path[len("lr_schedulers"):]
        for path, groups in opts:
            if path == paired:
                return path, groups
    matching = [o for o in opts if n_groups is not None and len(o[1]) == n_groups]
    return matching[0] if len(matching) == 1 else None


def checked_count(value: Any, where: str, integral: bool = False) -> Any:
    """An epoch/global_step field: None, or a finite number in range (an int when ``integral``)."""
    if value is None:
        return None
    wrong_type = isinstance(value, bool) or not isinstance(value, (int, float))
    if wrong_type or (integral and not isinstance(value, int)):
        raise CheckpointValueError(f"{where} is {short_repr(value)}, not "
                                   f"{'an integer' if integral else 'a number'}")
    if abs(value) >= MAX_COUNT or (isinstance(value, float) and not math.isfinite(value)):
        raise CheckpointValueError(f"{where} is {short_repr(value)}: out of range for a counter")
    return value


def checkpoint_from_tree(
    tree: Any, path: str, *, scheduler: str | None = None, loader: Loader = "builtin",
    extra_trees: Mapping[str, Any] | None = None, neutralised: tuple[str, ...] = (),
    integrity: tuple[str, ...] = (),
) -> Checkpoint:
    """Build a ``Checkpoint`` from an already-read object tree (see ``load_checkpoint``).

    Raises:
        SchedulerStateNotFound, AmbiguousSchedulerState: no plateau state, or several.
        CheckpointValueError: a saved value torch's ReduceLROnPlateau cannot hold (the message names the key).
    """
    found = find_plateau_states(tree)
    names = [p for p, _ in found]
    if scheduler is not None:
        chosen = [(p, m) for p, m in found if p == scheduler]
        if not chosen:
            listed = short_listing([repr(n) for n in names]) or "none"
            raise SchedulerStateNotFound(f"{path}: no plateau state at {short_repr(scheduler)}; found: "
                                         f"{listed}")
    else:
        chosen = found
    if not chosen:
        top = short_listing(_top_level(tree)) or "nothing"
        raise SchedulerStateNotFound(f"{path}: no ReduceLROnPlateau state found; top level holds: {top}")
    if len(chosen) > 1:
        listed = short_listing([repr(n or "<root>") for n in names])
        raise AmbiguousSchedulerState(
            f"{path}: {len(chosen)} plateau states found: {listed} (choose one with --scheduler KEYPATH)",
            names,
        )
    key_path, raw_state = chosen[0]
    where = f"{path}:{key_path or '<root>'}"
    raw, best_dtype = _normalise_state(raw_state, where)
    try:
        config, state = from_state_dict(raw)
    except ConfigError as exc:  # a value from a file is a bad input (exit 1), not a usage error
        raise CheckpointValueError(f"{where}: {' '.join(str(exc).split())[:300]}") from None
    state = replace(state, extras=SavedState(state.extras))
    raw = SavedState(raw)
    if best_dtype is not None:
        state = replace(state, best_dtype=best_dtype)

    opt_source = tree if not extra_trees else {**(as_mapping(tree) or {"": tree}), **extra_trees}
    n_groups = len(state.last_lr) if state.last_lr is not None else len(state.min_lrs)
    picked = _pick_optimizer(_optimizers(opt_source), key_path, n_groups)
    optimizer_lrs = initial_lrs = None
    group_extras: tuple[Mapping[str, Any], ...] = ()
    lr_dtypes: tuple[str | None, ...] = ()
    opt_path = None
    if picked is not None:
        opt_path, groups = picked
        pairs = [_number(g["lr"], f"{path}:{opt_path}.param_groups[{i}].lr") for i, g in enumerate(groups)]
        optimizer_lrs = tuple(float(v) for v, _ in pairs)
        lr_dtypes = tuple(d for _, d in pairs)
        group_extras = tuple(_group_numbers(g) for g in groups)
        if all("initial_lr" in g for g in groups):
            initial_lrs = tuple(
                float(_number(g["initial_lr"], f"{path}:{opt_path}.param_groups[{i}].initial_lr")[0])
                for i, g in enumerate(groups))
    top = as_mapping(tree) or {}
    epoch = top.get("epoch")
    step = top.get("global_step")
    from plateau_forensics import stacks

    stack = stacks.tree_stack(tree, key_path) or stacks.TORCH
    others = other_schedulers(tree)
    ck = Checkpoint(
        path=path,
        key_path=key_path,
        config=config,
        state=state,
        raw=raw,
        optimizer_lrs=optimizer_lrs,
        lr_dtypes=lr_dtypes or (None,) * n_groups,
        optimizer_key_path=opt_path,
        initial_lrs=initial_lrs,
        epoch=checked_count(epoch, f"{path}:epoch") if isinstance(epoch, (int, float)) else None,
        global_step=(checked_count(step, f"{path}:global_step")
                     if isinstance(step, int) and not isinstance(step, bool) else None),
        top_level=_top_level(tree),
        candidates=tuple(names),
        framework=stack.name,
        loader=loader,
        neutralised=neutralised,
        integrity=integrity,
        schedulers=others,
        optimizer_groups=group_extras,
    )
    return stack.adapt(ck, tree) if stack.adapt is not None else ck


def load_checkpoint(
    path: str | os.PathLike[str], scheduler: str | None = None, *, loader: Loader = "builtin"
) -> Checkpoint:
    """Read a checkpoint's plateau state safely: a ``torch.save`` file, or an HF ``checkpoint-N/`` directory.

    Args:
        path: a ``.pt``/``.ckpt``/``.pth.tar`` file (any name: the content decides) or a directory.
        scheduler: the key path of the plateau state to use when there are several.
        loader: ``"builtin"`` (torch-free restricted reader) or ``"torch"``
        (``torch.load(weights_only=True)``,
            after the built-in reader has checked the file).

    Returns:
        The normalised ``Checkpoint``.

    Raises:
        CheckpointError: unreadable, not a checkpoint, ambiguous or over a reader limit
            (``CheckpointLimitError``), or a saved value torch cannot hold (``CheckpointValueError``);
            SchedulerStateNotFound, AmbiguousSchedulerState.

    Example:
        >>> ck = load_checkpoint("sample_checkpoints/seed000.pt")  # doctest: +SKIP
        >>> ck.state.num_bad_epochs, ck.key_path                    # doctest: +SKIP
    """
    if is_url(path):  # one object at a URL: a torch.save file (a checkpoint-N/ folder there is not read)
        tf = read_file(path, loader)
        return checkpoint_from_tree(tf.obj, str(path), scheduler=scheduler, loader=loader,
                                    neutralised=tf.neutralised, integrity=tf.integrity)
    p = Path(path)
    if p.is_dir():
        from plateau_forensics import stacks

        stack = stacks.dir_stack(p)
        if stack is None or stack.load_dir is None:
            listing = short_listing(sorted(q.name[:80] for q in p.iterdir())) or "nothing"
            raise CheckpointError(f"{p}: a directory no training stack's checkpoint layout matches (an HF "
                                  f"checkpoint-N/ holds scheduler.pt); it holds: {listing}")
        return stack.load_dir(p, scheduler, loader)
    tf = read_file(p, loader)
    return checkpoint_from_tree(tf.obj, str(p), scheduler=scheduler, loader=loader,
                                neutralised=tf.neutralised, integrity=tf.integrity)
