"""pytorch-ignite: ``ReduceLROnPlateauScheduler`` states, as ``ignite.handlers.Checkpoint`` saves them.

Recognised by the state of ignite's ``ParamScheduler`` around torch's: a mapping with ``event_index``,
``param_name``, ``param_group_index`` and ``metric_name`` whose ``scheduler`` is the torch plateau state. The
evaluator's ``COMPLETED`` event steps the scheduler, so a ``Checkpoint`` at the trainer's ``EPOCH_COMPLETED``
holds the state after that epoch's step when the evaluation handler was added first.

ignite assigns its own bound method to the torch scheduler's ``_reduce_lr``, so ``state_dict()['scheduler']``
holds it and ``torch.save`` pickles the ignite scheduler object with its optimizer and the model's parameters;
``torch.load(weights_only=True)`` refuses the file, and the built-in reader keeps all of it inert. With
``param_group_index=None`` ignite passes ``min_lr=0`` to torch whatever ``min_lr`` it was given (0.5.5); with
an index only that group is reduced, and its floor is ``min_lrs[0]``: the given ``min_lr`` for index 0, but 0
for an index above 0 (``_reduce_lr`` reads ``min_lrs`` by the group's position in its one-group list).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from plateau_forensics.loader import Checkpoint, as_mapping, walk
from plateau_forensics.stacks import Stack
from plateau_forensics.torchfile import Opaque

if TYPE_CHECKING:
    from plateau_forensics.diagnose import Finding
    from plateau_forensics.engine import Trace
    from plateau_forensics.losses import LossLog

#: Keys of ``ReduceLROnPlateauScheduler.state_dict()`` around the torch state under ``scheduler``.
WRAPPER_KEYS = frozenset({"event_index", "param_name", "param_group_index", "metric_name"})
_CLASS = "ignite.handlers.param_scheduler.ReduceLROnPlateauScheduler"


def _clean(path: str) -> str:
    return path[1:] if path.startswith(".") else path


def _wrapper(tree: Any, key_path: str) -> dict[Any, Any] | None:
    """The ignite state whose ``scheduler`` is the plateau state at ``key_path``, or None."""
    if not key_path.endswith("scheduler"):
        return None
    parent = key_path[: -len("scheduler")].rstrip(".")
    for path, node in walk(tree):
        if _clean(path) == parent:
            m = as_mapping(node)
            if m is not None and WRAPPER_KEYS <= set(m) and "scheduler" in m:
                return dict(m)
            return None
    return None


def owns_tree(tree: Any, key_path: str) -> bool:
    """A torch plateau state under an ignite ``ReduceLROnPlateauScheduler`` state's ``scheduler``."""
    return _wrapper(tree, key_path) is not None


def _engine_state(tree: Any) -> dict[str, Any] | None:
    """ignite's ``Engine.state_dict()`` (``epoch_length``, ``max_epochs``, ``iteration`` or ``epoch``)."""
    for _, node in walk(tree):
        m = as_mapping(node)
        if m is not None and {"epoch_length", "max_epochs"} <= set(m) and ({"iteration", "epoch"} & set(m)) \
                and len(m) <= 4:
            return dict(m)
    return None


def adapt(ck: Checkpoint, tree: Any) -> Checkpoint:
    """The group ignite reduces (all, or ``param_group_index``'s) and the trainer's epoch and iteration."""
    wrapper = _wrapper(tree, ck.key_path) or {}
    out = replace(ck, framework="ignite")
    index = wrapper.get("param_group_index")
    lrs = ck.optimizer_lrs
    if isinstance(index, int) and not isinstance(index, bool) and lrs is not None and 0 <= index < len(lrs) \
            and len(lrs) > 1 and len(ck.state.min_lrs) == len(lrs):
        # only that group is ever reduced (ReduceLROnPlateauScheduler._reduce_lr): replay it alone. Its floor
        # is min_lrs[0], not min_lrs[index]: _reduce_lr enumerates the one-group list optimizer_param_groups
        # and reads scheduler.min_lrs[i] with i == 0 (0.5.5), so for index > 0 the user's min_lr is unused
        st = ck.state
        last = st.last_lr
        floor = st.min_lrs[0]
        state = replace(st, min_lrs=(floor,), default_min_lr=None,
                        last_lr=(last[index],) if last is not None and len(last) == len(lrs) else None)
        out = replace(out, state=state, config=replace(ck.config, min_lr=(floor,)),
                      optimizer_lrs=(lrs[index],),
                      lr_dtypes=(ck.lr_dtypes[index],) if ck.lr_dtypes else (None,),
                      initial_lrs=(ck.initial_lrs[index],) if ck.initial_lrs else None)
    engine = _engine_state(tree)
    if engine is not None and ck.epoch is None:
        it, length, epoch = engine.get("iteration"), engine.get("epoch_length"), engine.get("epoch")
        if isinstance(epoch, int) and not isinstance(epoch, bool):
            out = replace(out, epoch=epoch)
        elif isinstance(it, int) and isinstance(length, int) and length > 0 and it % length == 0:
            step = it if ck.global_step is None else ck.global_step
            out = replace(out, epoch=it // length, global_step=step)
    return out


def _reduced_group(ck: Checkpoint) -> tuple[int, int] | None:
    """(``param_group_index``, the optimizer's group count) when ``adapt`` kept only that group, else None."""
    floors = ck.raw.get("min_lrs")
    if ck.framework != "ignite" or not isinstance(floors, (list, tuple)) or len(floors) < 2 \
            or ck.optimizer_lrs is None or len(ck.optimizer_lrs) != 1:
        return None
    from plateau_forensics.loader import read_tree

    index = (_wrapper(read_tree(ck.path, ck.loader), ck.key_path) or {}).get("param_group_index")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(floors):
        return None
    return index, len(floors)


def plateau_log(ck: Checkpoint, log: LossLog) -> tuple[Checkpoint, LossLog]:
    """The log as the reduced group saw it: with ``param_group_index`` set, only that group's lr column (a
    log of every group's lr, in group order), as ``adapt`` kept only that group of the optimizer."""
    reduced = _reduced_group(ck)
    if reduced is None or len(log.lr_columns) != reduced[1]:
        return ck, log
    index = reduced[0]
    lrs = None if log.lrs is None else tuple(
        None if row is None else ((row[index] if index < len(row) else None),) for row in log.lrs)
    return ck, replace(log, lr_columns=(log.lr_columns[index],), lrs=lrs)


def findings(trace: Trace) -> list[Finding]:
    """ignite's own: the ``min_lr`` it replaces by 0, the bound method that pickled its scheduler object."""
    from plateau_forensics.diagnose import Finding

    ck = trace.checkpoint
    raw = ck.raw
    out: list[Finding] = []
    from plateau_forensics.loader import read_tree

    wrapper = _wrapper(read_tree(ck.path, ck.loader), ck.key_path) or {}  # findings see the trace only
    index_none = "param_group_index" in wrapper and wrapper["param_group_index"] is None
    floors = list(raw.get("min_lrs") or ())
    # ignite writes min_lr = 0 (an int) for torch; a min_lr given to torch as 0.0 would be saved as a float
    ints = floors and all(type(v) is int and v == 0 for v in floors) \
        and type(raw.get("default_min_lr")) is int
    if index_none and ints:
        out.append(Finding(
            "ignite-min-lr-dropped", "info", None,
            "param_group_index=None: ignite's ReduceLROnPlateauScheduler passed min_lr=0 to torch's "
            "scheduler (the saved min_lrs are the int 0 it writes), whatever min_lr was given; the floor in "
            "effect is 0",
            {"min_lrs": floors, "default_min_lr": raw.get("default_min_lr"), "param_group_index": None},
            "set scheduler.scheduler.min_lrs = [min_lr] * len(optimizer.param_groups) after construction "
            "(ignite's _reduce_lr reads them); param_group_index=0 keeps min_lr too, but then only group 0 "
            "is reduced; --expect min_lr=... checks what you meant"))
    index = wrapper.get("param_group_index")
    if isinstance(index, int) and not isinstance(index, bool) and 0 < index < len(floors) \
            and floors[index] != floors[0]:
        out.append(Finding(
            "ignite-min-lr-dropped", "info", None,
            f"param_group_index={index}: ignite's ReduceLROnPlateauScheduler floors that group at min_lrs[0] "
            f"= {floors[0]!r}, not at the min_lr it was given (min_lrs[{index}] = {floors[index]!r}): its "
            "_reduce_lr reads min_lrs by the group's position in its one-group list; the floor in effect is "
            f"{floors[0]!r}",
            {"min_lrs": floors, "param_group_index": index, "floor_in_effect": floors[0]},
            f"set scheduler.scheduler.min_lrs[0] = {floors[index]!r} after construction (ignite 0.5.5 reads "
            "it for the group it reduces)"))
    bound = raw.get("_reduce_lr")
    if isinstance(bound, Opaque) and type(bound).name == "builtins.getattr":
        obj = bound.args[0] if bound.args else None
        what = type(obj).name if isinstance(obj, Opaque) else "an object"
        out.append(Finding(
            "pickled-scheduler-object", "info", None,
            f"the torch state's _reduce_lr is a bound method of {what}: ignite's ReduceLROnPlateauScheduler "
            "sets it, so torch.save pickled that scheduler object with its optimizer and parameters into "
            "this checkpoint; torch.load(weights_only=True) refuses the file (read here without running any "
            "of it)",
            {"_reduce_lr": f"getattr({what}, '_reduce_lr')"},
            "save a copy of the state without scheduler['_reduce_lr'] (ignite binds it again when the "
            "scheduler is built), so the file loads with weights_only=True"))
    return out


STACK = Stack(
    name="ignite",
    title="pytorch-ignite",
    owns_tree=owns_tree,
    adapt=adapt,
    findings=findings,
    order="the evaluator's COMPLETED event steps ReduceLROnPlateauScheduler; a Checkpoint handler at the "
          "trainer's EPOCH_COMPLETED saves after that step when the evaluation handler was added first",
    plateau_log=plateau_log,
)
