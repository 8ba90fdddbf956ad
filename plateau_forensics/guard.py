"""The resume guard: right after loading a checkpoint, compare the live scheduler and optimizer with it.

``check_resume`` raises ``ResumeError`` (or warns ``ResumeWarning``) naming each mistake and its fix.
"""

from __future__ import annotations

import math
import os
import re
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from plateau_forensics.engine import _lrs, _num
from plateau_forensics.errors import CheckpointError, ConfigError, ResumeError
from plateau_forensics.loader import Checkpoint, checkpoint_from_tree, load_checkpoint, read_tree
from plateau_forensics.state import HYPERPARAMETER_KEYS, PlateauConfig
from plateau_forensics.torchfile import TensorRef

__all__ = ["CODES", "ResumeProblem", "ResumeWarning", "check_resume", "expected_hyperparameters",
           "live_problems", "read_checkpoint", "report", "resume_problems"]

#: every mistake the guard reports, by code (the same codes as ``plateau-trace``'s findings where one exists)
_COUNTER_KEYS = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch")
CODES = ("scheduler-not-restored", "optimizer-lr-differs", "hyperparameters-overridden", "min-lrs-mismatch",
         "saved-before-step")


class ResumeWarning(UserWarning):
    """``check_resume(..., action="warn")`` found a resume mistake."""


@dataclass(frozen=True)
class ResumeProblem:
    """One resume mistake: its code, what is wrong (with the numbers), and the fix."""

    code: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}; fix: {self.fix}"


# -- the checkpoint --------------------------------------------------------------------------------
def _plain_tree(obj: Any) -> Any:
    """A ``torch.load`` result with every tensor replaced by a number (one element) or a marker (weights).

    Shared and self-referencing containers are converted once, as the loader's own walk does.
    """
    torch = sys.modules.get("torch")
    tensor = getattr(torch, "Tensor", ()) if torch is not None else ()
    done: dict[int, Any] = {}

    def conv(v: Any) -> Any:
        if tensor and isinstance(v, tensor):
            return v.item() if v.numel() == 1 else f"<tensor {tuple(v.shape)}>"
        if not isinstance(v, (Mapping, list, tuple)):
            return v
        if id(v) in done:
            return done[id(v)]
        if isinstance(v, Mapping):
            out: dict[Any, Any] = {}
            done[id(v)] = out
            out.update((k, conv(x)) for k, x in v.items())
            return out
        lst: list[Any] = []
        done[id(v)] = lst
        lst.extend(conv(x) for x in v)
        return lst if isinstance(v, list) else tuple(lst)

    return conv(obj)


def read_checkpoint(checkpoint: Any, key: str | None = None) -> tuple[Checkpoint, Any]:
    """The ``Checkpoint`` of a path, a ``torch.load`` dict or a ``Checkpoint``, and the object tree (None for
    a directory or a ``Checkpoint``), which may store the epoch's metric next to the state.

    Raises:
        CheckpointError: unreadable, or no single plateau state.
        ConfigError: not a path, a dict or a ``Checkpoint``.
    """
    if isinstance(checkpoint, Checkpoint):
        return checkpoint, None
    if isinstance(checkpoint, (str, os.PathLike)):
        ck = load_checkpoint(checkpoint, key)
        tree = read_tree(checkpoint) if os.path.isfile(checkpoint) else None
        return ck, tree
    if isinstance(checkpoint, Mapping):
        tree = _plain_tree(checkpoint)
        return checkpoint_from_tree(tree, "<checkpoint>", scheduler=key), tree
    raise ConfigError(f"checkpoint must be a path, a dict or a Checkpoint, not a {type(checkpoint).__name__}")


def _subscript(ck: Checkpoint) -> str:
    """How the user's code reaches the plateau state: ``checkpoint["lr_schedulers"][0]``."""
    path = ck.key_path
    from plateau_forensics.stacks import stack_of

    stack = stack_of(ck.framework)
    if stack.state_file is not None:
        return f'torch.load("{stack.state_file}", weights_only=True)'
    if not path:
        return "checkpoint"
    out = "checkpoint"
    for name, index in re.findall(r"\.?([^.\[\]]+)|\[(\d+)\]", path):
        out += f'["{name}"]' if name else f"[{index}]"
    return out


def _optimizer_subscript(ck: Checkpoint) -> str:
    from plateau_forensics.stacks import stack_of

    stack = stack_of(ck.framework)
    if stack.optimizer_file is not None:
        return f'torch.load("{stack.optimizer_file}", weights_only=True)'
    path = ck.optimizer_key_path
    if path is None:
        return 'checkpoint["optimizer"]'
    out = "checkpoint"
    for name, index in re.findall(r"\.?([^.\[\]]+)|\[(\d+)\]", path):
        out += f'["{name}"]' if name else f"[{index}]"
    return out


# -- the live objects ------------------------------------------------------------------------------
def _counters(s: Any) -> dict[str, Any]:
    return {"best": float(s.best), "num_bad_epochs": s.num_bad_epochs, "cooldown_counter": s.cooldown_counter,
            "last_epoch": s.last_epoch}


def _live_hyper(s: Any) -> dict[str, Any]:
    d = {k: getattr(s, k) for k in HYPERPARAMETER_KEYS}
    d["min_lrs"] = [float(v) for v in s.min_lrs]
    d["default_min_lr"] = getattr(s, "default_min_lr", None)
    return d


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _show(v: Any) -> str:
    if isinstance(v, float):
        return _num(v, 6)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    return repr(v) if isinstance(v, str) else str(v)


def expected_hyperparameters(expect: Mapping[str, Any] | PlateauConfig, n_groups: int) -> dict[str, Any]:
    """The constructor values ``expect`` stands for, under torch's attribute names."""
    if isinstance(expect, PlateauConfig):
        expect = expect.to_dict()
    out: dict[str, Any] = {}
    for k, v in expect.items():
        if k in HYPERPARAMETER_KEYS:
            out[k] = v
        elif k == "min_lr":
            if isinstance(v, (list, tuple)):
                out["min_lrs"] = [float(x) for x in v]
            else:
                out["min_lrs"] = [float(v)] * n_groups
        elif k not in ("verbose",):
            raise ConfigError(f"expect: {k!r} is not a ReduceLROnPlateau constructor argument (one of "
                              f"{', '.join((*HYPERPARAMETER_KEYS, 'min_lr'))})")
    return out


def _hyper_problem(live: Mapping[str, Any], constructor: Mapping[str, Any], saved: Mapping[str, Any] | None,
                   source: str) -> ResumeProblem | None:
    diffs = [k for k in constructor if k in live and not _same(live[k], constructor[k])]
    if not diffs:
        return None
    replaced = [k for k in diffs if saved is None or _same(live[k], saved.get(k))]
    parts = [f"{k}={_show(constructor[k])} -> {_show(live[k])}" for k in diffs]
    if replaced == diffs:
        msg = (f"load_state_dict replaced the {source} hyperparameters with the checkpoint's: "
               f"{', '.join(parts)} (torch's load_state_dict imposes every saved hyperparameter)")
    else:
        msg = f"the scheduler's hyperparameters differ from the {source} ones: {', '.join(parts)}"
    assign = "; ".join(f"scheduler.{k} = {_show(constructor[k])}" for k in diffs)
    return ResumeProblem("hyperparameters-overridden", msg,
                         f"to run with the {source} values, set them after load_state_dict ({assign}); to "
                         "keep the checkpoint's, build the scheduler with them")


def _stored_metric(tree: Any, name: str | None) -> tuple[str, float] | None:
    """The validation metric a checkpoint stores at its top level (``checkpoint["val_loss"]``), if any."""
    from plateau_forensics.losses import METRIC_NAMES, normalize

    if not isinstance(tree, Mapping):
        return None
    keys = [k for k in tree if isinstance(k, str)]
    if name is not None:
        hits = [k for k in keys if k == name]
    else:
        hits = next(([k for k in keys if normalize(k) == n] for n in METRIC_NAMES
                     if any(normalize(k) == n for k in keys)), [])
    if len(hits) != 1:
        return None
    v = tree[hits[0]]
    if isinstance(v, TensorRef) and v.numel == 1:  # torch.save(..., "val_loss": loss_tensor)
        try:
            v = v.item()
        except CheckpointError:  # unreadable bytes: nothing to judge by
            return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return hits[0], float(v)


def live_problems(scheduler: Any, optimizer: Any, ck: Checkpoint, *,
                  constructor: Mapping[str, Any] | None = None, constructor_source: str = "constructor's",
                  start_epoch: float | None = None, first_epoch: float = 0, tree: Any = None,
                  metric: str | None = None) -> list[ResumeProblem]:
    """The resume mistakes, from the live objects and an already-read ``Checkpoint`` (see ``check_resume``).

    Args:
        constructor: the hyperparameters the scheduler was built with (torch attribute names, ``min_lrs`` a
            list),
            when known: compared with the live ones.
        constructor_source: how the message names them (``constructor's``, ``expected``).
        tree: the checkpoint's object tree, for a metric stored next to the state.
    """
    out: list[ResumeProblem] = []
    s = scheduler
    groups = optimizer.param_groups
    live = _counters(s)
    saved = ck.state
    keys = ("best", "last_epoch") if saved.partial else _COUNTER_KEYS
    want = {"best": saved.best, "num_bad_epochs": saved.num_bad_epochs,
            "cooldown_counter": saved.cooldown_counter, "last_epoch": saved.last_epoch}
    diffs = [k for k in keys if not _same(live[k], want[k])]
    load = f"scheduler.load_state_dict({_subscript(ck)})"
    if diffs:
        got = " ".join(f"{k}={_show(live[k])}" for k in keys)
        exp = " ".join(f"{k}={_show(want[k])}" for k in keys)
        fresh = (live["last_epoch"] == 0 and live["num_bad_epochs"] == 0 and live["cooldown_counter"] == 0
                 and live["best"] == (math.inf if s.mode == "min" else -math.inf))
        if fresh:
            msg = f"the scheduler is a fresh one ({got}), not the checkpoint's ({exp})"
            fix = f"call {load} after building the scheduler, before training"
        else:
            msg = (f"the scheduler's state ({got}) is not the checkpoint's ({exp}): it was stepped after "
                   "loading, or loaded from another checkpoint")
            fix = f"call {load} last, after anything that steps the scheduler"
        out.append(ResumeProblem("scheduler-not-restored", msg, fix))

    lrs = tuple(float(g["lr"]) for g in groups)
    ref, source = ck.optimizer_lrs, "optimizer state"
    if ref is None and saved.last_lr is not None:
        ref, source = saved.last_lr, "scheduler's _last_lr (it holds no optimizer state)"
    # groups added after the resume (a new head) are new: only the checkpoint's groups are compared
    if ref is not None and lrs[: len(ref)] != tuple(ref):
        if len(lrs) < len(ref):
            msg = (f"the optimizer has {len(lrs)} param group{'s' if len(lrs) != 1 else ''} (lr "
                   f"{_lrs(lrs)}), the checkpoint's {source} {len(ref)} (lr {_lrs(ref)})")
        else:
            ours, theirs = _pair_lrs(lrs[: len(ref)], ref)
            msg = (f"the optimizer's lr is {ours} but the checkpoint's {source} holds {theirs}: training "
                   "would continue from another lr than the run had reached")
        out.append(ResumeProblem(
            "optimizer-lr-differs", msg,
            f"call optimizer.load_state_dict({_optimizer_subscript(ck)}) when resuming (ReduceLROnPlateau "
            "keeps the reduced lr only in the optimizer), and set no param_group['lr'] after loading"))

    if constructor is not None:
        problem = _hyper_problem(_live_hyper(s), constructor, _ck_hyper(ck), constructor_source)
        if problem is not None:
            out.append(problem)

    min_lrs = [float(v) for v in s.min_lrs]
    default = getattr(s, "default_min_lr", None)
    if len(min_lrs) != len(groups):
        if default is None:
            msg = (f"the scheduler has {len(min_lrs)} min_lrs {_show(min_lrs)} for {len(groups)} param "
                   "groups and no scalar min_lr to rebuild them from: torch raises RuntimeError at the next "
                   "reduction")
        elif any(v != default for v in min_lrs):
            msg = (f"the scheduler has {len(min_lrs)} min_lrs {_show(min_lrs)} for {len(groups)} param "
                   f"groups: the next reduction replaces them with [{_show(float(default))}] * "
                   f"{len(groups)}, losing the per-group floors")
        else:
            msg = ""
        if msg:
            out.append(ResumeProblem("min-lrs-mismatch", msg,
                                     "set one floor per param group after loading (scheduler.min_lrs = "
                                     f"[...], {len(groups)} values), or build the optimizer with the "
                                     "checkpoint's groups"))

    le = saved.last_epoch
    if start_epoch is not None:
        expected = start_epoch - first_epoch
        if expected >= 1 and le == expected - 1:
            prev = start_epoch - 1
            out.append(ResumeProblem(
                "saved-before-step",
                f"resuming at epoch {_num(start_epoch)}: stepped once per epoch since epoch "
                f"{_num(first_epoch)}, the scheduler would have taken {_num(expected)} steps, but the "
                f"checkpoint's took {_num(le)}: it was saved before epoch {_num(prev)}'s scheduler.step(), "
                "and that epoch's metric never reaches the resumed scheduler",
                "save the checkpoint after scheduler.step(metric), or step the restored scheduler once with "
                f"epoch {_num(prev)}'s metric before epoch {_num(start_epoch)}"))
    else:
        stored = _stored_metric(tree, metric)
        cfg = ck.config
        if stored is not None and not saved.partial:
            name, m = stored
            if cfg.is_better(m, saved.best) and not cfg.is_better(m, m):
                # after a step on m, m can never beat the saved best (it would be best, or it did not beat it)
                out.append(ResumeProblem(
                    "saved-before-step",
                    f"the checkpoint stores {name}={m!r}, which beats its saved best {saved.best!r} (bar "
                    f"{_num(cfg.bar(saved.best), 6)}): the state was saved before that metric's "
                    "scheduler.step(), so a resume at the next epoch never feeds it (pass start_epoch= if "
                    "the resume re-runs that epoch)",
                    "save the checkpoint after scheduler.step(metric), or step the restored scheduler once "
                    f"with checkpoint[\"{name}\"] before the next epoch"))
    return out


def _pair_lrs(a: Sequence[float], b: Sequence[float]) -> tuple[str, str]:
    """Both lr lists with enough digits to tell them apart."""
    for digits in range(4, 18):
        sa = "/".join(_num(v, digits) for v in a)
        sb = "/".join(_num(v, digits) for v in b)
        if sa != sb:
            return sa, sb
    return "/".join(map(repr, a)), "/".join(map(repr, b))


def _ck_hyper(ck: Checkpoint) -> dict[str, Any]:
    d = {k: getattr(ck.config, k) for k in HYPERPARAMETER_KEYS}
    d["min_lrs"] = list(ck.state.min_lrs)
    return d


def resume_problems(
    scheduler: Any,
    optimizer: Any = None,
    *,
    checkpoint: Any,
    scheduler_key: str | None = None,
    expect: Mapping[str, Any] | PlateauConfig | None = None,
    start_epoch: float | None = None,
    first_epoch: float = 0,
    metric: str | None = None,
) -> list[ResumeProblem]:
    """Every resume mistake ``check_resume`` would report, as a list (empty after a correct resume).

    Raises:
        CheckpointError: the checkpoint cannot be read or holds no (or several) plateau states.
        ConfigError: ``expect`` names something that is not a constructor argument, or a bad ``checkpoint``.
    """
    from plateau_forensics.recorder import recorder_of

    if optimizer is None:
        optimizer = scheduler.optimizer
    ck, tree = read_checkpoint(checkpoint, scheduler_key)
    constructor: dict[str, Any] | None = None
    source = "expected"
    if expect is not None:
        constructor = expected_hyperparameters(expect, len(optimizer.param_groups))
    else:
        rec = recorder_of(scheduler)
        loads = getattr(rec, "loads", None)
        if loads:
            constructor = {k: v for k, v in loads[0].constructor.items() if k != "default_min_lr"}
            source = "constructor's"
    return live_problems(scheduler, optimizer, ck, constructor=constructor, constructor_source=source,
                         start_epoch=start_epoch, first_epoch=first_epoch, tree=tree, metric=metric)


def report(problems: Sequence[ResumeProblem], *, where: str, action: Literal["raise", "warn"] = "raise",
           ignore: Iterable[str] = ()) -> list[ResumeProblem]:
    """Raise one ``ResumeError`` for ``problems`` (minus ``ignore``), or warn once per problem.

    Raises:
        ResumeError: with ``action="raise"``, when a problem is left.
        ConfigError: an unknown ``action`` or code in ``ignore``.
    """
    skip = set(ignore)
    unknown = skip - set(CODES)
    if unknown:
        raise ConfigError(f"ignore: unknown code {sorted(unknown)[0]!r} (codes: {', '.join(CODES)})")
    if action not in ("raise", "warn"):
        raise ConfigError(f"action must be 'raise' or 'warn', not {action!r}")
    left = [p for p in problems if p.code not in skip]
    if left and action == "raise":
        raise ResumeError(f"{where}: resume check failed: " + " | ".join(map(str, left)), list(left))
    for p in left:
        warnings.warn(f"{where}: {p}", ResumeWarning, stacklevel=3)
    return left


def check_resume(
    scheduler: Any,
    optimizer: Any = None,
    *,
    checkpoint: Any,
    expect: Mapping[str, Any] | PlateauConfig | None = None,
    start_epoch: float | None = None,
    first_epoch: float = 0,
    action: Literal["raise", "warn"] = "raise",
    ignore: Iterable[str] = (),
    scheduler_key: str | None = None,
    metric: str | None = None,
) -> list[ResumeProblem]:
    """Check a resume right after loading: the live scheduler and optimizer against the checkpoint.

    Reported (each with its fix; codes in ``CODES``):

    * ``scheduler-not-restored``: the scheduler's
      ``best``/``num_bad_epochs``/``cooldown_counter``/``last_epoch`` are not the checkpoint's (a fresh
      scheduler: ``load_state_dict`` was forgotten).
    * ``optimizer-lr-differs``: an lr differs from the checkpoint's optimizer lr (a fresh optimizer, or an lr
      set by hand after loading); without an optimizer state in the checkpoint, from the saved ``_last_lr``.
    * ``hyperparameters-overridden``: ``load_state_dict`` replaced the constructor's hyperparameters with the
      checkpoint's. The constructor's are known from ``expect``, or from a ``record()`` attached before the
      load.
    * ``min-lrs-mismatch``: ``min_lrs`` does not match the param groups (torch raises at the next reduction,
      or drops the per-group floors).
    * ``saved-before-step``: the checkpoint holds the state before its epoch's ``step()``. With
      ``start_epoch``: ``last_epoch`` is one less than ``start_epoch - first_epoch`` steps. Without it: the
      checkpoint stores its epoch's metric (``checkpoint["val_loss"]``, or ``metric=``) and that metric beats
      the saved ``best``.

    Args:
        scheduler: the live ``ReduceLROnPlateau``, after ``load_state_dict``.
        optimizer: the live optimizer (default ``scheduler.optimizer``), after ``load_state_dict``.
        checkpoint: a path (read with ``load_checkpoint``: a ``torch.save`` file or an HF ``checkpoint-N/``),
            the dict ``torch.load`` returned, or a ``Checkpoint``.
        expect: the constructor arguments the scheduler was built with (``{"patience": 5}``, or a
            ``PlateauConfig`` for all of them).
        start_epoch: the epoch label the resumed loop runs next (e.g. ``checkpoint["epoch"] + 1``).
        first_epoch: the label of the epoch of the scheduler's first step (0 for ``range(n)`` loops).
        action: ``"raise"`` (``ResumeError``) or ``"warn"`` (one ``ResumeWarning`` per problem).
        ignore: codes not to report.
        scheduler_key: the plateau state's key path when the checkpoint holds several.
        metric: the checkpoint key of the stored validation metric (detected by name when None).

    Returns:
        The problems reported (empty when the resume is correct).

    Raises:
        ResumeError: a mistake was found and ``action="raise"``; ``.problems`` lists them.
        CheckpointError: the checkpoint cannot be read.
        ConfigError: bad options.

    Example:
        >>> pf.check_resume(scheduler, optimizer, checkpoint="ckpt.pt")   # doctest: +SKIP
    """
    problems = resume_problems(scheduler, optimizer, checkpoint=checkpoint, scheduler_key=scheduler_key,
                               expect=expect, start_epoch=start_epoch, first_epoch=first_epoch, metric=metric)
    where = os.fspath(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else (
        checkpoint.path if isinstance(checkpoint, Checkpoint) else "<checkpoint>")
    return report(problems, where=where, action=action, ignore=ignore)
