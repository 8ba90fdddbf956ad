"""Find torch ``LRScheduler`` states in a checkpoint's object tree by their shape, and rebuild engines from
them.

Works on what ``plateau_forensics.loader.read_tree`` returns (plain containers, inert ``Opaque`` records of
pickled objects, lazy ``TensorRef`` tensors). A state is recognised by its keys (``step_size``/``gamma``,
``milestones``, ``T_max``/``eta_min``, ``T_0``/``T_mult``/``T_cur``, ``total_steps``/``_anneal_func_type``,
``_schedulers``/``_milestones``, ...), a pickled scheduler object by its class name; nothing is guessed:
LambdaLR and MultiplicativeLR save the same keys and are reported as either.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from plateau_forensics.schedules.base import LRScheduler
from plateau_forensics.schedules.errors import ScheduleConfigError
from plateau_forensics.schedules.values import DTYPES, TensorLR
from plateau_forensics.state import is_plateau_shaped

#: kind reported for a state LambdaLR and MultiplicativeLR would both have written
LAMBDA_KINDS = "LambdaLR or MultiplicativeLR"
#: kind reported for an LRScheduler state of no known shape (a subclass of your own)
UNKNOWN = "LRScheduler"
SEARCH_DEPTH = 12
_TORCH_MODULE = "torch.optim.lr_scheduler."


class FoundScheduler(NamedTuple):
    """A scheduler state in the tree: its key path (``""`` for the root), its kind (torch's class name, or
    ``LAMBDA_KINDS`` / ``UNKNOWN``) and the saved mapping as the tree holds it."""

    key_path: str
    kind: str
    state: Mapping[str, Any]


def _opaque() -> tuple[Any, Any]:
    from plateau_forensics.torchfile import Opaque, TensorRef

    return Opaque, TensorRef


def _as_mapping(obj: Any) -> Mapping[Any, Any] | None:
    Opaque, _ = _opaque()
    if isinstance(obj, Mapping):
        return obj
    if isinstance(obj, Opaque):
        return obj.mapping()
    return None


def _suffix(key: Any) -> str:
    if isinstance(key, str) and key.isidentifier() and len(key) <= 80:
        return f".{key}"
    return f"[{key!r}]" if len(repr(key)) <= 60 else "[...]"


def _walk(tree: Any) -> Iterator[tuple[str, Any]]:
    """Every container with its key path, depth-first, each object once (the loader's walk, over the same
    trees)."""
    Opaque, TensorRef = _opaque()
    kinds = (Mapping, list, tuple, Opaque)
    if not isinstance(tree, kinds):
        return
    seen = {id(tree)}
    stack: list[tuple[str, Any, int]] = [("", tree, 0)]
    while stack:
        path, node, depth = stack.pop()
        yield path, node
        if depth >= SEARCH_DEPTH or isinstance(node, TensorRef):
            continue
        if isinstance(node, (list, tuple)):
            items = [(f"[{i}]", v) for i, v in enumerate(node)]
        else:
            m = _as_mapping(node)
            items = [(_suffix(k), v) for k, v in m.items()] if m is not None else []
        kids = []
        for suffix, child in items:
            if isinstance(child, kinds) and id(child) not in seen:
                seen.add(id(child))
                kids.append((path + suffix, child, depth + 1))
        stack.extend(reversed(kids))


def kind_of(state: Mapping[str, Any], class_name: str | None = None) -> str | None:
    """torch's class name for a scheduler state (or a pickled scheduler's class), None if it is not one.

    ReduceLROnPlateau states are None here: ``plateau_forensics.loader`` finds those.
    """
    from plateau_forensics.schedules.spec import scheduler_classes

    if class_name is not None and class_name.startswith(_TORCH_MODULE):
        name = class_name[len(_TORCH_MODULE) :]
        if name in scheduler_classes():
            return name
        if name in ("ReduceLROnPlateau", "_LRScheduler", "LRScheduler"):
            return None if name == "ReduceLROnPlateau" else UNKNOWN
    keys = {k for k in state if isinstance(k, str)}
    if is_plateau_shaped(state):
        return None
    if "_schedulers" in keys and ("_last_lr" in keys or "last_epoch" in keys):
        return "SequentialLR" if "_milestones" in keys else "ChainedScheduler"
    if not keys & {"base_lrs", "last_epoch", "_last_lr"}:
        return None
    rules = (
        ({"T_0", "T_mult", "T_cur"}, "CosineAnnealingWarmRestarts"),
        ({"total_steps", "_schedule_phases"}, "OneCycleLR"),
        ({"total_steps", "_anneal_func_type"}, "OneCycleLR"),
        ({"total_steps", "anneal_func"}, "OneCycleLR"),
        ({"max_lrs", "total_size", "step_ratio"}, "CyclicLR"),
        ({"T_max", "eta_min"}, "CosineAnnealingLR"),
        ({"start_factor", "end_factor", "total_iters"}, "LinearLR"),
        ({"total_iters", "power"}, "PolynomialLR"),
        ({"factor", "total_iters"}, "ConstantLR"),
        ({"milestones", "gamma"}, "MultiStepLR"),
        ({"step_size", "gamma"}, "StepLR"),
        ({"lr_lambdas"}, LAMBDA_KINDS),
        ({"gamma", "base_lrs"}, "ExponentialLR"),
    )
    for need, kind in rules:
        if need <= keys:
            return kind
    if {"base_lrs", "last_epoch"} <= keys:
        return UNKNOWN
    return None


def find_schedulers(tree: Any, *, nested: bool = False) -> list[FoundScheduler]:
    """Every LRScheduler state in ``tree`` (``loader.read_tree``'s result, or a plain ``state_dict``), in tree
    order.

    Args:
        tree: the checkpoint's object tree.
        nested: also list the children of a SequentialLR/ChainedScheduler (``sched._schedulers[0]``); by
            default only the outermost scheduler is listed (its children are in its state).

    Returns:
        ``FoundScheduler(key_path, kind, state)`` tuples; ReduceLROnPlateau states are not among them.
    """
    Opaque, _ = _opaque()
    found: list[FoundScheduler] = []
    inside: set[int] = set()
    for path, node in _walk(tree):
        m = _as_mapping(node)
        if m is None:
            continue
        name = type(node).name if isinstance(node, Opaque) else None
        kind = kind_of(m, name)
        if kind is None:
            continue
        if id(node) in inside and not nested:
            continue
        if kind in ("SequentialLR", "ChainedScheduler"):
            for child in m.get("_schedulers") or ():
                inside.add(id(child))
        found.append(FoundScheduler(path[1:] if path.startswith(".") else path, kind, m))
    return found


def plain(value: Any, *, drop: Sequence[str] = ("optimizer",)) -> Any:
    """A saved value as the engines hold it: tensors as ``TensorLR`` (floating) or numbers, a pickled
    ``Counter`` as a ``Counter``, containers copied, pickled objects as their attribute mappings; ``drop``
    keys left out."""
    Opaque, _ = _opaque()
    if hasattr(value, "dtype") and hasattr(value, "item") and not isinstance(value, TensorLR):
        v = value.item()
        dtype = str(value.dtype).removeprefix("torch.")
        return TensorLR(float(v), dtype) if dtype in DTYPES else v
    if isinstance(value, Opaque):
        if type(value).name == "collections.Counter":
            args = value.args[0] if value.args and isinstance(value.args[0], Mapping) else {}
            return Counter({k: plain(v) for k, v in args.items()})
        return {k: plain(v) for k, v in value.mapping().items() if k not in drop}
    if isinstance(value, Mapping):
        out = {k: plain(v) for k, v in value.items() if k not in drop}
        return Counter(out) if isinstance(value, Counter) else out
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    return value


class _MissingLambda:
    """Stands in for a lambda the checkpoint could not save (``lr_lambdas: [None]``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __call__(self, epoch: Any) -> Any:
        raise ScheduleConfigError(
            f"the {self.kind} lambda is not in the checkpoint (torch saves lr_lambdas: [None] "
            'for a function): give it as an expression, e.g. lr_lambda="0.95 ** epoch"'
        )


#: Saved states that hold every constructor argument besides the optimizer: ``rebuild`` makes a fresh one.
CONSTRUCTOR_KEYS = {
    "StepLR": ("step_size", "gamma"),
    "MultiStepLR": ("milestones", "gamma"),
    "ConstantLR": ("factor", "total_iters"),
    "LinearLR": ("start_factor", "end_factor", "total_iters"),
    "ExponentialLR": ("gamma",),
    "PolynomialLR": ("total_iters", "power"),
    "CosineAnnealingLR": ("T_max", "eta_min"),
    "CosineAnnealingWarmRestarts": ("T_0", "T_mult", "eta_min"),
}
#: The constructor arguments a restored scheduler is set up with (OneCycleLR and CyclicLR save only these).
_SPEC_KEYS = {**CONSTRUCTOR_KEYS, "OneCycleLR": ("total_steps",), "CyclicLR": ("mode", "gamma")}


def _spec(kind: str, saved: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments of ``kind`` that the plain saved state holds (a MultiStepLR's ``milestones``
    Counter, or the dict torch.load hands back for it, as the sorted list with repeats)."""
    spec = {}
    for key in _SPEC_KEYS.get(kind, ()):
        if key in saved:
            value = saved[key]
            if kind == "MultiStepLR" and key == "milestones" and isinstance(value, Mapping):
                value = sorted(Counter(value).elements())
            spec[key] = value
    return spec


def rebuild(kind: str, state: Mapping[str, Any]) -> LRScheduler | None:
    """A fresh, unbound scheduler built from the constructor arguments ``state`` saved (``CONSTRUCTOR_KEYS``),
    as the run built it before its first step; None for a kind whose state lacks some of them (LambdaLR's
    function, OneCycleLR's and CyclicLR's other arguments)."""
    from plateau_forensics.schedules.spec import scheduler_classes

    keys = CONSTRUCTOR_KEYS.get(kind)
    saved = plain(state)
    if keys is None or not isinstance(saved, Mapping) or any(k not in saved for k in keys):
        return None
    return scheduler_classes()[kind](**_spec(kind, saved))


def restore(
    kind: str, state: Mapping[str, Any], *, lr_lambda: Any = None, scale_fn: Any = None
) -> LRScheduler:
    """An unbound scheduler that, bound to an optimizer, *loads* ``state`` (torch's construct-then-
    ``load_state_dict`` resume) instead of running a constructor: the optimizer's lrs are left as they are.

    Args:
        kind: torch's class name (``FoundScheduler.kind``; ``LambdaLR``/``MultiplicativeLR`` must be chosen).
        state: the saved state (as ``find_schedulers`` found it, or a plain ``state_dict()``).
        lr_lambda: LambdaLR/MultiplicativeLR: the function or expression the checkpoint could not save.
        scale_fn: CyclicLR with a custom scale function: that function or expression (of ``x``).

    Raises:
        ScheduleConfigError: an unknown kind, or the ambiguous lambda kind.
    """
    from plateau_forensics.schedules.spec import scheduler_classes

    classes = scheduler_classes()
    if kind == LAMBDA_KINDS:
        raise ScheduleConfigError("LambdaLR and MultiplicativeLR save the same state: say which one it is")
    if kind not in classes:
        raise ScheduleConfigError(f"cannot rebuild a {kind!r} state (one of {', '.join(sorted(classes))})")
    saved = plain(state)
    if kind == "MultiStepLR" and isinstance(saved.get("milestones"), Mapping):
        saved["milestones"] = Counter(saved["milestones"])  # torch.load hands a Counter back as a dict
    cls = classes[kind]
    obj = cls.__new__(cls)
    obj._setup(None, **_spec(kind, saved))
    obj._restore = {"kind": kind, "state": saved, "lr_lambda": lr_lambda, "scale_fn": scale_fn}
    return obj


def restore_bound(spec: LRScheduler, optimizer: Any) -> LRScheduler:
    """Bind a ``restore()``d scheduler: the attributes torch's constructor would set outside the state, then
    the saved state loaded on top."""
    from plateau_forensics.schedules.basic import _LambdaState
    from plateau_forensics.schedules.chains import _Wrapper
    from plateau_forensics.schedules.cyclic import CyclicLR
    from plateau_forensics.schedules.expr import as_callable

    info = spec._restore
    assert info is not None
    cls = type(spec)
    new = cls.__new__(cls)
    new._setup(None, **dict(spec._spec))
    new.optimizer = optimizer
    state = dict(info["state"])
    n = len(optimizer.param_groups)
    if isinstance(new, _LambdaState):
        fn = info["lr_lambda"]
        fns = fn if isinstance(fn, (list, tuple)) else [fn] * len(state.get("lr_lambdas") or [None] * n)
        new.lr_lambdas = [as_callable(f) if f is not None else _MissingLambda(info["kind"]) for f in fns]
    if isinstance(new, CyclicLR):
        new._scale_fn_custom = as_callable(info["scale_fn"], "x") if info["scale_fn"] is not None else None
    if isinstance(new, _Wrapper):
        children = []
        for child_state in state.get("_schedulers") or []:
            child_kind = kind_of(child_state)
            if child_kind is None or child_kind == LAMBDA_KINDS:
                child_kind = "LambdaLR" if child_kind == LAMBDA_KINDS else child_kind
            if child_kind is None:
                raise ScheduleConfigError("a child of the saved scheduler has no scheduler shape")
            children.append(restore(child_kind, child_state, lr_lambda=info["lr_lambda"]).bind(optimizer))
        new._schedulers = children
    new.load_state_dict(state)
    return new
