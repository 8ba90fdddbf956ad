"""The ``LRScheduler`` base the engines share: torch 2.13's construction, ``step``, ``_update_lr`` and
``state_dict`` protocol, re-implemented over ``schedules.Optimizer`` param groups.

A scheduler object is first a *spec* (its constructor arguments, torch's names, no optimizer); ``bind`` builds
a torch-equivalent scheduler on an optimizer, running the constructor's initial step exactly as torch does.
Its instance ``__dict__`` holds exactly torch's attributes in torch's order (plus ``optimizer`` and ``_spec``,
which ``state_dict()`` leaves out as torch leaves out ``optimizer``).
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from plateau_forensics.schedules.errors import ScheduleConfigError, TorchRaises
from plateau_forensics.schedules.optimizer import Optimizer
from plateau_forensics.schedules.values import TensorLR, filled

#: torch's EPOCH_DEPRECATION_WARNING, shortened: recorded when ``step(epoch)`` is called
EPOCH_DEPRECATION = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being deprecated where "
    "possible; the closed form is used instead of the chainable form, where available."
)
STEP_ORDER_WARNING = (
    "Detected call of `lr_scheduler.step()` before `optimizer.step()`: PyTorch skips the first "
    "value of the learning rate schedule."
)
#: attributes of ours that are not torch's (state_dict leaves them out, as torch leaves out optimizer)
HIDDEN_KEYS = ("optimizer", "_spec", "_restore")


def clone_tree(value: Any) -> Any:
    """A copy of a state value: containers copied (a ``Counter`` stays a ``Counter``), numbers, strings and
    ``TensorLR`` values (immutable) shared. What ``copy.deepcopy`` gives for a state dict, much faster."""
    if isinstance(value, dict):
        copied = {k: clone_tree(v) for k, v in value.items()}
        return Counter(copied) if isinstance(value, Counter) else copied
    if isinstance(value, list):
        return [clone_tree(v) for v in value]
    if isinstance(value, tuple):
        return tuple(clone_tree(v) for v in value)
    return value


def clone(v: Any) -> Any:
    """torch clones a tensor lr when it copies it; our tensor lrs are immutable, so the value itself is a
    copy."""
    return v


def group_values(optimizer: Optimizer, key: str) -> list[Any]:
    """torch's ``_param_groups_val_list``: ``group[key]`` of every group (KeyError as torch when one lacks
    it)."""
    out = []
    for group in optimizer.param_groups:
        if key not in group:
            raise TorchRaises("KeyError", repr(key))
        out.append(clone(group[key]))
    return out


def set_group_value(group: dict[str, Any], key: str, value: Any) -> None:
    """torch's ``_update_param_group_val``: ``fill_`` into a tensor lr, plain assignment otherwise."""
    if key not in group:
        raise TorchRaises("KeyError", repr(key))
    group[key] = filled(group[key], value)


def strict_zip(*seqs: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
    """``zip(..., strict=True)`` with torch's ValueError when a group was added after construction."""
    n = len(seqs[0])
    for k, s in enumerate(seqs[1:], start=2):
        if len(s) != n:
            which = "shorter" if len(s) < n else "longer"
            raise TorchRaises("ValueError", f"zip() argument {k} is {which} than argument 1")
    return zip(*seqs, strict=True)


def format_param(name: str, optimizer: Optimizer, param: Any) -> list[Any]:
    """torch's ``_format_param``: one value per param group from a scalar or a list of the right length."""
    n = len(optimizer.param_groups)
    if isinstance(param, (list, tuple)):
        if len(param) != n:
            raise ScheduleConfigError(
                f"{name} must have the same length as optimizer.param_groups. "
                f"{name} has {len(param)} values, param_groups has {n}.",
                "ValueError",
            )
        return [clone(p) for p in param]
    return [clone(param)] * n


@contextmanager
def torch_semantics(where: str) -> Iterator[None]:
    """Python's own arithmetic errors inside a scheduler formula are what torch raises there too."""
    try:
        yield
    except (
        ZeroDivisionError,
        OverflowError,
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
        IndexError,
        NotImplementedError,
    ) as exc:
        raise TorchRaises(type(exc).__name__, f"{where}: {exc}") from exc


class LRScheduler:
    """torch's ``LRScheduler`` protocol over a ``schedules.Optimizer``.

    Subclasses keep their constructor arguments (torch's names) in ``_spec`` and build the torch state in
    ``_construct``; ``get_lr`` is the chainable (recursive) formula, ``_closed_form`` the one ``step(epoch)``
    uses where torch has one.
    """

    _is_initial: bool = False
    _get_lr_called_within_step: bool = False
    #: True where torch's class defines ``_get_closed_form_lr``
    has_closed_form: ClassVar[bool] = False
    #: set by ``checkpoints.restore``: bind() loads this state instead of constructing
    _restore: dict[str, Any] | None = None
    # torch's attributes (annotations only: they exist once a scheduler is bound, in torch's order)
    last_epoch: Any
    base_lrs: list[Any]
    _step_count: int
    _last_lr: list[Any]
    #: builds torch's state from the spec (each subclass's own signature: torch's constructor arguments)
    _construct: Callable[..., None]

    # -- spec and binding --------------------------------------------------------------------------------
    def _setup(self, optimizer: Optimizer | None, **spec: Any) -> None:
        self._spec = spec
        self.optimizer: Any = None
        if optimizer is not None:
            self._attach(optimizer)

    def _attach(self, optimizer: Any) -> None:
        if not isinstance(optimizer, Optimizer):
            raise ScheduleConfigError(f"{type(optimizer).__name__} is not an Optimizer", "TypeError")
        self.optimizer = optimizer
        with torch_semantics(f"{type(self).__name__}()"):
            self._construct(**self._spec)

    def bind(self, optimizer: Optimizer) -> LRScheduler:
        """A new scheduler built on ``optimizer`` from this one's arguments, as ``torch.optim.lr_scheduler.X(
        optimizer, ...)`` builds it (including its initial step, which may change the lrs).

        Raises:
            ScheduleConfigError: an argument torch's constructor rejects.
            TorchRaises: what torch raises while constructing (a ``KeyError`` for ``last_epoch >= 0`` without
                ``initial_lr`` in the param groups).
        """
        if getattr(self, "_restore", None) is not None:
            from plateau_forensics.schedules.checkpoints import restore_bound

            if not isinstance(optimizer, Optimizer):
                raise ScheduleConfigError(f"{type(optimizer).__name__} is not an Optimizer", "TypeError")
            with torch_semantics(f"{type(self).__name__}.load_state_dict()"):
                return restore_bound(self, optimizer)
        new = type(self).__new__(type(self))
        new._setup(None, **dict(self._spec))
        new._attach(optimizer)
        return new

    @property
    def bound(self) -> bool:
        """Whether this scheduler is attached to an optimizer (else it is only a spec)."""
        return self.optimizer is not None

    def _require_bound(self) -> None:
        if self.optimizer is None:
            raise ScheduleConfigError(
                f"{self.label} is not attached to an optimizer: use .bind(Optimizer([...])) or optimizer=..."
            )

    @property
    def label(self) -> str:
        """The constructor call with the arguments that differ from torch's defaults, e.g.
        ``StepLR(step_size=3)``."""
        sig = inspect.signature(type(self).__init__)
        parts = []
        for name, value in self._spec.items():
            p = sig.parameters.get(name)
            if p is not None and p.default is not inspect.Parameter.empty and _same(p.default, value):
                continue
            parts.append(f"{name}={_show(value)}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __repr__(self) -> str:
        if self.optimizer is None:
            return f"<{self.label} (not bound)>"
        return f"<{self.label} last_epoch={getattr(self, 'last_epoch', None)} lr={list(self.optimizer.lrs)}>"

    # -- torch's base constructor and step -----------------------------------------------------------------
    def _base_init(self, last_epoch: int) -> None:
        opt = self.optimizer
        if last_epoch == -1:
            for group in opt.param_groups:
                group.setdefault("initial_lr", clone(group["lr"]))
        else:
            for i, group in enumerate(opt.param_groups):
                if "initial_lr" not in group:
                    raise TorchRaises(
                        "KeyError",
                        f"param 'initial_lr' is not specified in param_groups[{i}] when "
                        "resuming scheduler with last_epoch >= 0",
                    )
        self.base_lrs = group_values(opt, "initial_lr")
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self) -> None:
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def step(self, epoch: float | None = None) -> None:
        """``scheduler.step()`` (the chainable formula) or the deprecated ``step(epoch)`` (the closed form).

        Raises:
            TorchRaises: what torch raises at this step.
        """
        self._require_bound()
        with torch_semantics(f"{type(self).__name__}.step()"):
            self._step(epoch)

    def _step(self, epoch: float | None) -> None:
        if self._step_count == 1 and not self.optimizer._opt_called:
            self.optimizer.warnings.append((self.label, STEP_ORDER_WARNING))
        self._step_count += 1
        if epoch is not None:
            self.optimizer.warnings.append((self.label, EPOCH_DEPRECATION))
        self._update_lr(epoch)

    def _update_lr(self, epoch: float | None = None) -> None:
        self._get_lr_called_within_step = True
        try:
            if epoch is None:
                self.last_epoch += 1
                values = self.get_lr()
            else:
                self.last_epoch = epoch
                values = self._closed_form() if self.has_closed_form else self.get_lr()
        finally:
            self._get_lr_called_within_step = False
        for group, lr in strict_zip(self.optimizer.param_groups, values):
            set_group_value(group, "lr", lr)
        self._last_lr = group_values(self.optimizer, "lr")

    def get_lr(self) -> list[Any]:
        """The next lr of every group by the chainable formula (what ``step()`` writes)."""
        raise TorchRaises("NotImplementedError", f"{type(self).__name__} has no get_lr")

    def _closed_form(self) -> list[Any]:
        raise NotImplementedError

    def get_last_lr(self) -> list[Any]:
        """torch's ``get_last_lr()``: the lrs this scheduler last wrote (``_last_lr``)."""
        self._require_bound()
        return self._last_lr

    def current_lrs(self) -> list[Any]:
        """Every group's lr now (``_param_groups_val_list(optimizer, "lr")``)."""
        return group_values(self.optimizer, "lr")

    # -- state -----------------------------------------------------------------------------------------------
    def _torch_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k not in HIDDEN_KEYS}

    def state_dict(self) -> dict[str, Any]:
        """torch 2.13's ``state_dict()`` (same keys, order, types and values; tensor lrs as ``TensorLR``)."""
        self._require_bound()
        return clone_tree(self._torch_dict())  # type: ignore[no-any-return]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``: the saved attributes replace the current ones."""
        self._require_bound()
        self.__dict__.update(clone_tree({k: v for k, v in state_dict.items() if k not in HIDDEN_KEYS}))


def _same(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # a user callable with an odd __eq__: shown, never compared
        return False


def _show(value: Any) -> str:
    if isinstance(value, LRScheduler):
        return value.label
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_show(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if isinstance(value, TensorLR):
        return repr(value)
    if callable(value):
        text = getattr(value, "source", None)
        return repr(text) if text is not None else getattr(value, "__name__", "<function>")
    return repr(value)
