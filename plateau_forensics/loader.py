"""Find the ReduceLROnPlateau state, the optimizer's lrs and the epoch counters in a checkpoint.

The state is found by its shape (``best`` plus other plateau keys) anywhere in the tree, never by a
file or key name; every candidate is reported with its key path, and several are never guessed among.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from plateau_forensics.errors import AmbiguousSchedulerState, CheckpointError, SchedulerStateNotFound
from plateau_forensics.state import PlateauConfig, PlateauState, from_state_dict, is_plateau_shaped

Loader = Literal["builtin", "torch"]

#: HF Trainer checkpoint directory members we read; rng_state.pth and training_args.bin are never opened.
HF_SCHEDULER, HF_OPTIMIZER, HF_TRAINER_STATE = "scheduler.pt", "optimizer.pt", "trainer_state.json"


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

    @property
    def partial(self) -> bool:
        """The saved state lacked counters a full torch state has."""
        return self.state.partial

    def with_hyperparameters(self, fallback: PlateauConfig, given: tuple[str, ...]) -> Checkpoint:
        """The same checkpoint with hyperparameters the saved state lacks taken from ``fallback``.

        Raises:
            ConfigError: one of ``given`` is saved in the state (the saved value wins on load_state_dict).
        """
        from plateau_forensics.errors import ConfigError

        saved = [k for k in given if (k if k != "min_lr" else "min_lrs") in self.raw]
        if saved:
            raise ConfigError(
                f"{', '.join(saved)} is saved in the checkpoint and wins on load_state_dict; hyperparameter "
                "options only fill what a partial state lacks (use --expect to compare)")
        config, state = from_state_dict(self.raw, fallback)
        return replace(self, config=config, state=replace(state, best_dtype=self.state.best_dtype))

    @property
    def lrs(self) -> tuple[float, ...] | None:
        """The lrs a faithful resume continues with: the optimizer's, else the scheduler's ``_last_lr``."""
        return self.optimizer_lrs if self.optimizer_lrs is not None else self.state.last_lr


# -- reading files ---------------------------------------------------------------------------------
def is_checkpoint_dir(path: str | os.PathLike[str]) -> bool:
    """A directory holding a scheduler state file (an HF Trainer ``checkpoint-N/``)."""
    return Path(path).is_dir() and (Path(path) / HF_SCHEDULER).is_file()


def is_torch_file(path: str | os.PathLike[str]) -> bool:
    """True when the file starts like a ``torch.save`` output (zip or legacy pickle), by content."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:2] == b"PK" or head[:1] == b"\x80"


def _read_builtin(path: Path) -> Any:
    from plateau_forensics.torchfile import read_torch_file

    return read_torch_file(path)


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


def _read_torch(path: Path) -> Any:
    try:
        import torch
    except ImportError as exc:
        raise CheckpointError("--loader torch needs torch: pip install 'plateau-forensics[torch]'") from exc
    try:  # mmap only applies to the zip format; torch refuses it for legacy files
        obj = torch.load(path, weights_only=True, mmap=_starts_with_pk(path), map_location="cpu")
    except Exception as exc:  # torch raises many types here; all mean "this file cannot be read safely"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: torch.load(weights_only=True) refused it: {first}") from exc

    def wrap(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return _TorchTensor(v)
        if isinstance(v, Mapping):
            return {k: wrap(x) for k, x in v.items()}
        if isinstance(v, list):
            return [wrap(x) for x in v]
        if isinstance(v, tuple):
            return tuple(wrap(x) for x in v)
        return v

    return wrap(obj)


def _starts_with_pk(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"PK"


def read_tree(path: str | os.PathLike[str], loader: Loader = "builtin") -> Any:
    """The object a ``torch.save`` file holds, read without running pickled code.

    Raises:
        CheckpointError: missing, unreadable, or not a torch file.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such file")
    if loader == "torch":
        return _read_torch(p)
    return _read_builtin(p)


# -- walking the tree ------------------------------------------------------------------------------
def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    """(key-path suffix, child) pairs of a container, an inert pickled object included."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            yield (f".{k}" if isinstance(k, str) and k.isidentifier() else f"[{k!r}]"), v
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield f"[{i}]", v
    else:
        mapping = getattr(obj, "mapping", None)
        if callable(mapping) and type(obj).__name__ != "type":
            inner = mapping()
            if isinstance(inner, Mapping):
                yield from _children(inner)


def _as_mapping(obj: Any) -> Mapping[str, Any] | None:
    if isinstance(obj, Mapping):
        return obj
    mapping = getattr(obj, "mapping", None)
    if callable(mapping):
        inner = mapping()
        return inner if isinstance(inner, Mapping) else None
    return None


def _walk(obj: Any, path: str = "", depth: int = 0) -> Iterator[tuple[str, Any]]:
    yield path, obj
    if depth > 12 or _is_tensor(obj):
        return
    for suffix, child in _children(obj):
        yield from _walk(child, path + suffix, depth + 1)


def _is_tensor(v: Any) -> bool:
    return hasattr(v, "dtype") and hasattr(v, "shape") and hasattr(v, "item")


def _clean(path: str) -> str:
    return path[1:] if path.startswith(".") else path


def find_plateau_states(tree: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """Every ReduceLROnPlateau-shaped mapping in ``tree`` with its key path (``""`` for the root)."""
    found = []
    for path, node in _walk(tree):
        m = _as_mapping(node)
        if m is not None and is_plateau_shaped(m):
            found.append((_clean(path), m))
    return found


def _optimizers(tree: Any) -> list[tuple[str, list[Mapping[str, Any]]]]:
    out = []
    for path, node in _walk(tree):
        m = _as_mapping(node)
        groups = m.get("param_groups") if m is not None else None
        if isinstance(groups, list) and groups and all(isinstance(g, Mapping) and "lr" in g for g in groups):
            out.append((_clean(path), groups))
    return out


def _number(value: Any, where: str) -> tuple[float, str | None]:
    """A saved scalar as a Python number, and the tensor dtype it had (None for a plain number)."""
    if _is_tensor(value):
        try:
            return value.item(), value.dtype
        except Exception as exc:  # a multi-element tensor, or unreadable bytes
            raise CheckpointError(f"{where}: cannot read a single number from {value!r}: {exc}") from exc
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointError(f"{where} holds {value!r}, not a number")
    return value, None


def _normalise_state(raw: Mapping[str, Any], where: str) -> tuple[dict[str, Any], str | None]:
    out: dict[str, Any] = {}
    best_dtype = None
    for k, v in raw.items():
        if k == "optimizer":  # a pickled scheduler object still carries its optimizer
            continue
        if _is_tensor(v):
            v, dtype = _number(v, f"{where}.{k}")
            if k == "best":
                best_dtype = dtype
        elif isinstance(v, (list, tuple)) and k in ("_last_lr", "min_lrs"):
            v = [_number(x, f"{where}.{k}")[0] for x in v]
        out[str(k)] = v
    return out, best_dtype


def _top_level(tree: Any) -> tuple[str, ...]:
    m = _as_mapping(tree)
    if m is not None:
        return tuple(str(k) for k in m)
    return (f"<{type(tree).__name__}>",)


def _framework(tree: Any, key_path: str) -> str:
    m = _as_mapping(tree) or {}
    if "pytorch-lightning_version" in m or key_path.startswith("lr_schedulers["):
        return "lightning"
    if "arch" in m and "version" in m and "state_dict" in m:
        return "timm"
    return "torch"


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


def checkpoint_from_tree(
    tree: Any, path: str, *, scheduler: str | None = None, loader: Loader = "builtin", extra_trees: Mapping[str, Any] | None = None,
) -> Checkpoint:
    """Build a ``Checkpoint`` from an already-read object tree (see ``load_checkpoint``)."""
    found = find_plateau_states(tree)
    names = [p for p, _ in found]
    if scheduler is not None:
        chosen = [(p, m) for p, m in found if p == scheduler]
        if not chosen:
            listed = ", ".join(repr(n) for n in names) or "none"
            raise SchedulerStateNotFound(f"{path}: no plateau state at {scheduler!r}; found: {listed}")
    else:
        chosen = found
    if not chosen:
        top = ", ".join(_top_level(tree)) or "nothing"
        raise SchedulerStateNotFound(f"{path}: no ReduceLROnPlateau state found; top level holds: {top}")
    if len(chosen) > 1:
        listed = ", ".join(repr(n or "<root>") for n in names)
        raise AmbiguousSchedulerState(
            f"{path}: {len(chosen)} plateau states found: {listed} (choose one with --scheduler KEYPATH)", names
        )
    key_path, raw_state = chosen[0]
    where = f"{path}:{key_path or '<root>'}"
    raw, best_dtype = _normalise_state(raw_state, where)
    config, state = from_state_dict(raw)
    if best_dtype is not None:
        state = replace(state, best_dtype=best_dtype)

    opt_source = tree if not extra_trees else {**(_as_mapping(tree) or {"": tree}), **extra_trees}
    n_groups = len(state.last_lr) if state.last_lr is not None else len(state.min_lrs)
    picked = _pick_optimizer(_optimizers(opt_source), key_path, n_groups)
    optimizer_lrs = initial_lrs = None
    lr_dtypes: tuple[str | None, ...] = ()
    opt_path = None
    if picked is not None:
        opt_path, groups = picked
        pairs = [_number(g["lr"], f"{path}:{opt_path}.param_groups[{i}].lr") for i, g in enumerate(groups)]
        optimizer_lrs = tuple(float(v) for v, _ in pairs)
        lr_dtypes = tuple(d for _, d in pairs)
        if all("initial_lr" in g for g in groups):
            initial_lrs = tuple(float(_number(g["initial_lr"], path)[0]) for g in groups)
    top = _as_mapping(tree) or {}
    epoch = top.get("epoch")
    step = top.get("global_step")
    return Checkpoint(
        path=path,
        key_path=key_path,
        config=config,
        state=state,
        raw=raw,
        optimizer_lrs=optimizer_lrs,
        lr_dtypes=lr_dtypes or (None,) * n_groups,
        optimizer_key_path=opt_path,
        initial_lrs=initial_lrs,
        epoch=epoch if isinstance(epoch, (int, float)) and not isinstance(epoch, bool) else None,
        global_step=step if isinstance(step, int) and not isinstance(step, bool) else None,
        top_level=_top_level(tree),
        candidates=tuple(names),
        framework=_framework(tree, key_path),
        loader=loader,
    )


def _load_hf_dir(d: Path, scheduler: str | None, loader: Loader) -> Checkpoint:
    sched_file = d / HF_SCHEDULER
    if not sched_file.is_file():
        listing = ", ".join(sorted(p.name for p in d.iterdir())) or "nothing"
        raise CheckpointError(f"{d}: a directory without {HF_SCHEDULER}; it holds: {listing}")
    tree = read_tree(sched_file, loader)
    extra: dict[str, Any] = {}
    if (d / HF_OPTIMIZER).is_file():
        extra["optimizer.pt"] = read_tree(d / HF_OPTIMIZER, loader)
    ck = checkpoint_from_tree(tree, str(d), scheduler=scheduler, loader=loader, extra_trees=extra)
    ck = replace(ck, key_path=f"{HF_SCHEDULER}{':' + ck.key_path if ck.key_path else ''}", framework="hf-trainer")
    state_file = d / HF_TRAINER_STATE
    if state_file.is_file():
        try:
            ts = json.loads(state_file.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{state_file}: not readable JSON: {exc}") from exc
        history = ts.get("log_history")
        ck = replace(ck, epoch=ts.get("epoch"), global_step=ts.get("global_step"),
                     log_history=tuple(history) if isinstance(history, list) else None)
    return ck


def load_checkpoint(
    path: str | os.PathLike[str], scheduler: str | None = None, *, loader: Loader = "builtin"
) -> Checkpoint:
    """Read a checkpoint's plateau state safely: a ``torch.save`` file, or an HF ``checkpoint-N/`` directory.

    Args:
        path: a ``.pt``/``.ckpt``/``.pth.tar`` file (any name: the content decides) or a directory.
        scheduler: the key path of the plateau state to use when there are several.
        loader: ``"builtin"`` (torch-free restricted reader) or ``"torch"`` (``torch.load(weights_only=True)``).

    Returns:
        The normalised ``Checkpoint``.

    Raises:
        CheckpointError: unreadable or not a checkpoint; SchedulerStateNotFound, AmbiguousSchedulerState.

    Example:
        >>> ck = load_checkpoint("sample_checkpoints/seed000.pt")  # doctest: +SKIP
        >>> ck.state.num_bad_epochs, ck.key_path                    # doctest: +SKIP
    """
    p = Path(path)
    if p.is_dir():
        return _load_hf_dir(p, scheduler, loader)
    tree = read_tree(p, loader)
    return checkpoint_from_tree(tree, str(p), scheduler=scheduler, loader=loader)
