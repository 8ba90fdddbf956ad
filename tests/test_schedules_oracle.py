"""Drive real torch LRSchedulers beside the engines; helpers only (the oracle the test_schedules_* files use).

A scheduler is described once, as ``(name, kwargs)`` with children under ``schedulers``, and built twice: as a
real ``torch.optim.lr_scheduler`` object and as an unbound ``plateau_forensics.schedules`` one.
"""

from __future__ import annotations

import math
import struct
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch.optim import lr_scheduler as L

from plateau_forensics import schedules as S

DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

#: lambdas as text (for the engines) and as the Python functions a user would write (for torch)
LAMBDAS: dict[str, Any] = {
    "0.95 ** epoch": lambda epoch: 0.95**epoch,
    "epoch // 3": lambda epoch: epoch // 3,
    "1 / (epoch + 1)": lambda epoch: 1 / (epoch + 1),
    "epoch / 5 if epoch < 5 else 0.9 ** (epoch - 5)": lambda epoch: (
        epoch / 5 if epoch < 5 else 0.9 ** (epoch - 5)
    ),
    "0.5 * (1 + math.cos(math.pi * epoch / 12))": lambda epoch: 0.5 * (1 + math.cos(math.pi * epoch / 12)),
    "max(0.1, 1 - epoch / 10)": lambda epoch: max(0.1, 1 - epoch / 10),
    "min(1.0, (epoch + 1) / 4) * 0.97 ** epoch": lambda epoch: min(1.0, (epoch + 1) / 4) * 0.97**epoch,
}
MULTIPLIERS: dict[str, Any] = {
    "0.95": lambda epoch: 0.95,
    "0.9 if epoch % 3 == 0 else 1.0": lambda epoch: 0.9 if epoch % 3 == 0 else 1.0,
    "1 - 0.01 * epoch": lambda epoch: 1 - 0.01 * epoch,
    "math.exp(-0.1)": lambda epoch: math.exp(-0.1),
}

#: param-group keys a scheduler reads or writes
GROUP_KEYS = ("lr", "initial_lr", "momentum", "betas", "max_momentum", "base_momentum", "max_lr", "min_lr")


def torch_optimizer(
    lrs: Sequence[float],
    lr_dtypes: Sequence[str | None] | None = None,
    *,
    adam: bool = False,
    initial_lrs: Sequence[float] | None = None,
) -> torch.optim.Optimizer:
    """A real SGD (momentum 0.9) or Adam optimizer with one param group per lr, tensor lrs where a dtype is
    given."""
    dtypes = list(lr_dtypes) if lr_dtypes is not None else [None] * len(lrs)
    groups = []
    for i, (lr, dt) in enumerate(zip(lrs, dtypes, strict=True)):
        value = torch.tensor(lr, dtype=DTYPES[dt]) if dt is not None else lr
        group: dict[str, Any] = {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": value}
        if initial_lrs is not None:
            group["initial_lr"] = (
                torch.tensor(initial_lrs[i], dtype=DTYPES[dt]) if dt is not None else initial_lrs[i]
            )
        groups.append(group)
    if adam:
        return torch.optim.Adam(groups, lr=0.001, foreach=False)
    return torch.optim.SGD(groups, lr=0.001, momentum=0.9, foreach=False)


def our_optimizer(
    lrs: Sequence[float],
    lr_dtypes: Sequence[str | None] | None = None,
    *,
    adam: bool = False,
    initial_lrs: Sequence[float] | None = None,
) -> S.Optimizer:
    """The engines' optimizer with the same groups as ``torch_optimizer``."""
    return S.Optimizer(
        lrs, lr_dtypes=lr_dtypes, momentum=0.9, betas=(0.9, 0.999) if adam else None, initial_lrs=initial_lrs
    )


def _torch_kwargs(kw: dict[str, Any], opt: torch.optim.Optimizer) -> dict[str, Any]:
    out = dict(kw)
    if "lr_lambda" in out:
        table = LAMBDAS if out["lr_lambda"] in LAMBDAS else MULTIPLIERS
        out["lr_lambda"] = table[out["lr_lambda"]]
    if "schedulers" in out:
        out["schedulers"] = [_build_torch(child, opt) for child in out["schedulers"]]
    return out


def build_torch(
    desc: tuple[str, dict[str, Any]], opt: torch.optim.Optimizer, warned: list[str] | None = None
) -> Any:
    """The real torch scheduler for ``desc`` on ``opt`` (children first, in order, as user code builds them);
    the warnings torch emits meanwhile are appended to ``warned``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return _build_torch(desc, opt)
        finally:
            if warned is not None:
                warned.extend(str(w.message) for w in caught)


def _build_torch(desc: tuple[str, dict[str, Any]], opt: torch.optim.Optimizer) -> Any:
    name, kw = desc
    kwargs = _torch_kwargs(kw, opt)
    if name == "ChainedScheduler":
        return L.ChainedScheduler(kwargs["schedulers"], optimizer=opt)
    return getattr(L, name)(opt, **kwargs)


def build_ours(desc: tuple[str, dict[str, Any]]) -> S.LRScheduler:
    """The unbound engine scheduler for ``desc``."""
    name, kw = desc
    kwargs = dict(kw)
    if "schedulers" in kwargs:
        kwargs["schedulers"] = [build_ours(child) for child in kwargs["schedulers"]]
    return getattr(S, name)(**kwargs)


def plain(v: Any) -> Any:
    """A comparable copy: tensors and TensorLRs as ("tensor", value, dtype), containers recursively."""
    if isinstance(v, torch.Tensor):
        return ("tensor", v.item(), str(v.dtype).removeprefix("torch."))
    if isinstance(v, S.TensorLR):
        return ("tensor", v.value, v.dtype)
    if isinstance(v, Counter):
        return Counter({k: plain(x) for k, x in v.items()})
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, tuple):
        return tuple(plain(x) for x in v)
    return v


def assert_same(ours: Any, theirs: Any, where: str = "state") -> None:
    """Recursive equality of plain() values: same types, dict key order, floats bit for bit (NaN equals
    NaN)."""
    ours, theirs = plain(ours), plain(theirs)
    _same(ours, theirs, where)


def _same(a: Any, b: Any, where: str) -> None:
    assert type(a) is type(b), f"{where}: {type(a).__name__} {a!r} != {type(b).__name__} {b!r}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            _same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b)), (
            f"{where}: {a!r} != {b!r}"
        )
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_groups(ours: S.Optimizer, theirs: torch.optim.Optimizer, where: str) -> None:
    """Every param-group key a scheduler touches is present in both optimizers and equal, bit for bit."""
    assert len(ours.param_groups) == len(theirs.param_groups), where
    for i, (a, b) in enumerate(zip(ours.param_groups, theirs.param_groups, strict=True)):
        for key in GROUP_KEYS:
            assert (key in a) == (key in b), f"{where}: group {i} key {key!r}"
            if key in a:
                _same(plain(a[key]), plain(b[key]), f"{where}: group {i}[{key!r}]")


def torch_step(
    sched: Any, epoch: float | None = None, warned: list[str] | None = None
) -> BaseException | None:
    """``sched.step()`` or ``sched.step(epoch)``; the exception it raised, or None. Its warnings go to
    ``warned``."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if epoch is None:
                sched.step()
            else:
                sched.step(epoch)
    except Exception as exc:  # torch raises several types; the test compares the type
        return exc
    finally:
        if warned is not None:
            warned.extend(str(w.message) for w in caught)
    return None


def order_warnings(messages: list[str]) -> int:
    """How many of torch's messages are the "step() before optimizer.step()" warning."""
    return sum("before `optimizer.step()`" in m for m in messages)


def our_step(sched: S.LRScheduler, epoch: float | None = None) -> S.TorchRaises | None:
    """The engine's step; the TorchRaises it raised, or None."""
    try:
        sched.step(epoch)
    except S.TorchRaises as exc:
        return exc
    return None


def torch_compose(
    metrics: Sequence[float],
    plateau: dict[str, Any],
    lrs: Sequence[float],
    others: Sequence[tuple[str, dict[str, Any]]],
    *,
    lr_dtypes: Sequence[str | None] | None = None,
    step_epochs: Sequence[float | None] | None = None,
    events: Sequence[tuple[int, float, float | None, str | None]] = (),
) -> dict[str, Any]:
    """PyTorch's compound loop: ReduceLROnPlateau built first, then ``others`` in order; every epoch (after
    any ``add_param_group`` due then) ``opt.step()``, ``plateau.step(metric[, epoch])``, then each other
    ``step()``.

    Returns per epoch the plateau's state_dict after its step, every group's lr after all steps and the
    others' state_dicts; ``error`` is ``(epoch, stage, exception)`` when torch raised (stage "plateau" or
    "others").
    """
    out: dict[str, Any] = {"plateau": [], "lrs": [], "others": [], "error": None, "warnings": []}
    opt = torch_optimizer(lrs, lr_dtypes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sched = L.ReduceLROnPlateau(opt, **plateau)
        built = [_build_torch(d, opt) for d in others]
        out["construction_lrs"] = [plain(g["lr"]) for g in opt.param_groups]
        for e, metric in enumerate(metrics):
            for at, lr, min_lr, dt in events:
                if at == e:
                    value = torch.tensor(lr, dtype=DTYPES[dt]) if dt is not None else lr
                    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": value})
                    if min_lr is not None:
                        sched.min_lrs.append(min_lr)
            opt.step()
            try:
                if step_epochs is not None and step_epochs[e] is not None:
                    sched.step(metric, step_epochs[e])
                else:
                    sched.step(metric)
            except Exception as exc:  # torch's RuntimeError after add_param_group, compared by type
                out["error"] = (e, "plateau", exc)
                break
            out["plateau"].append(plain(sched.state_dict()))
            try:
                for s in built:
                    s.step()
            except Exception as exc:  # e.g. a zip() length mismatch after add_param_group, compared by type
                out["error"] = (e, "others", exc)
                break
            out["lrs"].append([plain(g["lr"]) for g in opt.param_groups])
            out["others"].append([plain(s.state_dict()) for s in built])
        out["optimizer"] = opt
    out["warnings"] = [str(w.message) for w in caught]
    return out


def floats_of(state: dict[str, Any]) -> dict[str, Any]:
    """A plateau state_dict with tensor lrs as their values and int numbers as floats: the plateau engine's
    ``PlateauState`` holds floats (torch keeps ``min_lr=0`` as the int 0; the values are what must match)."""

    def f(v: Any) -> Any:
        if isinstance(v, tuple) and len(v) == 3 and v[0] == "tensor":
            return float(v[1])
        if isinstance(v, list):
            return [f(x) for x in v]
        if isinstance(v, int) and not isinstance(v, bool):
            return float(v)
        return v

    return {k: f(v) for k, v in plain(state).items()}
