"""A flight recorder for live training loops: one JSON line per ``ReduceLROnPlateau`` step, and its reader.

``record`` wraps one scheduler instance's ``step`` (and ``load_state_dict``); ``read_recording`` reads the
file back.

File format (JSON Lines, UTF-8, one object per line; non-finite floats are the strings ``"nan"``, ``"inf"``,
``"-inf"``, which ``losses.read_losses`` reads as numbers):

* A **header** ``{"plateau_recording": {...}}`` opens each *segment* (one ``record()`` call: a run, or a
  resumed run appending to the same file): format ``version``, ``rules`` (``torch`` or ``keras``), the
  ``metric`` name, the process ``rank`` and ``pid``, ``time``, the ``torch`` version, the hyperparameters
  (``config``, torch's attribute names), the counters (``state``) and every group's ``lrs`` at that moment.
* A **load** ``{"plateau_load": {...}}`` each time ``scheduler.load_state_dict`` runs on a recorded scheduler:
  the hyperparameters before it (the constructor's: ``constructor``), after it (``config``), the counters
  after it (``state``), and ``overridden``: every hyperparameter the checkpoint replaced, ``[constructor,
  checkpoint]``.
* A **step** per ``scheduler.step(metric)``: ``epoch`` (the label the caller gives, else ``last_epoch``), the
  metric under its name (``val_loss`` by default) exactly as ``float(metric)`` (a JSON number is Python's
  ``repr``), ``lr`` (``lr_1``, ...: each group's lr *before* the step, the lr the epoch trained with), the
  state after the step (``best``, ``num_bad_epochs``, ``cooldown_counter``, ``last_epoch``; Keras: ``wait``
  for ``num_bad_epochs``), ``lrs_after`` (every group's lr after the step, a list), ``rank`` and ``time``
  (seconds since the epoch). When the counters or the hyperparameters changed between two steps by other means
  (code assigning them), the line also holds ``before`` and ``config``, so that every step can be replayed
  from exactly what it started from.

The header and load lines hold no key a loss log uses, so ``plateau-trace CKPT plateau.jsonl`` reads the step
lines as an ordinary log (``epoch``, the metric, ``lr`` columns); ``read_recording`` gives the recorded states
themselves.
"""

from __future__ import annotations

import copyreg
import json
import logging
import math
import os
import re
import sys
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from plateau_forensics import engine
from plateau_forensics.engine import Event, _lrs, _num, _pair, _suppression
from plateau_forensics.errors import ConfigError, ForensicsError, RecordingError
from plateau_forensics.state import PlateauConfig, PlateauState

if TYPE_CHECKING:
    from plateau_forensics.keras_rules import KerasConfig, KerasStep
    from plateau_forensics.losses import LossLog

__all__ = [
    "FORMAT_KEY", "LOAD_KEY", "KerasRecorder", "LoadEvent", "RecordedStep", "Recorder", "Recording",
    "Segment", "current_rank", "is_recording", "read_recording", "record", "recorder_of", "reduction_line",
]

FORMAT_KEY = "plateau_recording"
LOAD_KEY = "plateau_load"
VERSION = 1
#: torch's hyperparameter attributes, in constructor order (``min_lrs``/``default_min_lr`` follow them)
HYPER_KEYS = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "eps")
COUNTERS = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch")
#: step-line keys; a metric may not take one of these names
RESERVED = frozenset({"epoch", "best", "num_bad_epochs", "cooldown_counter", "last_epoch", "lrs_after",
                      "rank", "time", "before", "config", "wait", FORMAT_KEY, LOAD_KEY})
LOGGER_NAME = "plateau_forensics"
#: names ``losses.read_losses`` takes for lr columns (a metric named so would be read as an lr)
_LR_NAME = re.compile(r"(lr|learning_rate)(_.*)?")

#: recorder of each recorded scheduler; weak keys, so a recorder never keeps a scheduler alive
_RECORDERS: weakref.WeakKeyDictionary[Any, Recorder] = weakref.WeakKeyDictionary()
_SUBCLASSES: dict[type, type] = {}


# -- numbers as JSON -------------------------------------------------------------------------------
def _n(x: Any) -> str:
    """A number as JSON text, exact: ``repr`` for floats, strings for the non-finite ones."""
    t = type(x)
    if t is float:
        if x - x == 0.0:  # False for inf and nan
            return repr(x)
        return '"nan"' if x != x else ('"inf"' if x > 0 else '"-inf"')
    if t is int:
        return str(x)
    if isinstance(x, bool) or x is None:
        return "null" if x is None else str(int(x))
    if isinstance(x, int):
        return str(int(x))
    return _n(float(x))


def _plain(obj: Any) -> Any:
    """A header value with non-finite floats as strings (standard JSON everywhere)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _float(x: Any) -> float:
    return float(x)


def _lr_key(g: int) -> str:
    return "lr" if g == 0 else f"lr_{g}"


def current_rank() -> int:
    """This process's rank: ``torch.distributed``'s when initialised (never imported here), else ``$RANK``."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None:
        try:
            if dist.is_available() and dist.is_initialized():
                return int(dist.get_rank())
        except (RuntimeError, ValueError):  # a half-initialised process group
            pass
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


# -- reading live torch objects --------------------------------------------------------------------
def _hyper(s: Any) -> tuple[Any, ...]:
    """The scheduler's hyperparameters as a tuple (cheap to compare every step)."""
    return (s.mode, s.factor, s.patience, s.threshold, s.threshold_mode, s.cooldown, s.eps,
            tuple(float(v) for v in s.min_lrs), getattr(s, "default_min_lr", None))


def _hyper_dict(h: tuple[Any, ...]) -> dict[str, Any]:
    d = dict(zip(HYPER_KEYS, h[:7], strict=True))
    d["min_lrs"] = list(h[7])
    d["default_min_lr"] = h[8]
    return d


def _state_dict(b: float, nb: Any, cd: Any, le: Any) -> dict[str, Any]:
    return {"best": float(b), "num_bad_epochs": nb, "cooldown_counter": cd, "last_epoch": le}


def _lr_dtypes(groups: Sequence[Mapping[str, Any]]) -> list[str | None]:
    out: list[str | None] = []
    for g in groups:
        dt = getattr(g["lr"], "dtype", None)
        out.append(None if dt is None else str(dt).removeprefix("torch."))
    return out


def plateau_config(config: Mapping[str, Any]) -> PlateauConfig:
    """The ``PlateauConfig`` of a recorded ``config`` mapping (torch's attribute names).

    Raises:
        ConfigError: values torch itself would refuse.
    """
    dml = config.get("default_min_lr")
    min_lr: float | tuple[float, ...] = float(dml) if dml is not None else tuple(
        _float(v) for v in config["min_lrs"])
    return PlateauConfig(mode=config["mode"], factor=_float(config["factor"]), patience=config["patience"],
                         threshold=_float(config["threshold"]), threshold_mode=config["threshold_mode"],
                         cooldown=config["cooldown"], min_lr=min_lr, eps=_float(config["eps"]))


def _replay(cfg: PlateauConfig, before: tuple[float, Any, Any, Any], min_lrs: tuple[float, ...],
            default_min_lr: float | None, lr_in: tuple[float, ...], metric: float, label: float,
            lr_dtypes: Sequence[str | None] | None) -> engine.Step | None:
    """The engine's ``Step`` for one recorded step, replayed from the state it started from (None: torch
    raised)."""
    best, nb, cd, le = before
    state = PlateauState(last_epoch=le, best=best, num_bad_epochs=nb, cooldown_counter=cd, min_lrs=min_lrs,
                         default_min_lr=default_min_lr, last_lr=lr_in)
    dtypes = list(lr_dtypes) if lr_dtypes is not None and len(lr_dtypes) == len(lr_in) else None
    t = engine.run(cfg, [metric], lr_in, state=state, epochs=[label], lr_dtypes=dtypes)
    return t.step(0) if len(t) else None


def reduction_line(step: engine.Step, metric: str, config: PlateauConfig,
                   min_lrs: Sequence[float] | None = None) -> str:
    """The line torch's removed ``verbose=True`` printed, with its reason.

    e.g. ``epoch 35: val_loss 0.4186 not below 0.4143 for 3 epochs (patience 2): lr 0.0012 -> 0.00096,
    cooldown 3`` (``0.4143`` is the bar the metric had to beat; a suppressed reduction says why the lr
    stayed).
    """
    word = "below" if config.mode == "min" else "above"
    m_s, bar_s = _pair(step.metric, step.bar)
    if step.improved:
        head = f"{metric} {m_s} {word} {bar_s}, but patience {config.patience} reduces on every step"
    else:
        n = 0 if step.cooldown_before > 0 else step.num_bad_before + 1
        epochs = "epoch" if n == 1 else "epochs"
        head = f"{metric} {m_s} not {word} {bar_s} for {n} {epochs} (patience {config.patience})"
    if step.event is Event.REDUCED:
        tail = f"lr {_lrs(step.lr_in)} -> {_lrs(step.lr)}"
    else:
        floors = tuple(min_lrs) if min_lrs is not None else config.min_lrs_for(len(step.lr_in))
        why = _suppression(config, step.lr_in, floors)
        tail = f"reduction due but suppressed, lr stays {_lrs(step.lr)} ({why})"
    return f"epoch {_num(step.epoch)}: {head}: {tail}, cooldown {step.cooldown_counter}"


def keras_reduction_line(step: KerasStep, metric: str, config: KerasConfig) -> str:
    """The reduction line for a Keras ``ReduceLROnPlateau`` step (Keras's rules: ``wait >= patience``)."""
    word = "below" if config.direction == "min" else "above"
    best = step.best_before if step.best_before is not None else math.nan
    bar = best - config.delta if config.direction == "min" else best + config.delta
    m_s, bar_s = _pair(step.metric, bar)
    n = step.wait_before + 1
    return (f"epoch {_num(step.epoch)}: {metric} {m_s} not {word} {bar_s} for {n} "
            f"epoch{'' if n == 1 else 's'} (patience {config.patience}): lr {_lrs(step.lr_in)} -> "
            f"{_lrs(step.lr)}, cooldown {step.cooldown_counter}")


# -- writing ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadEvent:
    """One ``load_state_dict`` seen by a recorder (or read back from a recording).

    Attributes:
        constructor: the hyperparameters right before the load (the constructor's, unless code changed them).
        config: the hyperparameters after it (the checkpoint's, as torch's ``load_state_dict`` imposes them).
        state: the counters after it.
        overridden: each hyperparameter the load changed, as ``(before, after)``.
        time: when it happened (seconds since the epoch).
        line: the file line (None for a live event).
    """

    constructor: Mapping[str, Any]
    config: Mapping[str, Any]
    state: Mapping[str, Any]
    overridden: Mapping[str, tuple[Any, Any]]
    time: float
    line: int | None = None


class _Sink:
    """The open file, the logger and the print switch of one recorder."""

    def __init__(self, path: Path | None, logger: logging.Logger, verbose: bool) -> None:
        self.path = path
        self.logger = logger
        self.verbose = verbose
        self.failed: OSError | None = None
        self._file: Any = None
        self._finalizer: Any = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()/finalizer
            except OSError as exc:
                raise ConfigError(f"{path}: cannot open the recording for writing ({exc.strerror})") from None
            self._finalizer = weakref.finalize(self, self._file.close)

    def write(self, text: str) -> None:
        """Append one line and flush it, so a crash leaves every step written so far."""
        f = self._file
        if f is None:
            return
        try:
            f.write(text)
            f.flush()
        except OSError as exc:  # a full disk must not stop the training it records; say so once
            self.failed = exc
            self.logger.error("plateau_forensics: stopped recording to %s: %s", self.path, exc)
            self.close()

    def emit(self, text: str) -> None:
        """A line for people: through ``logging`` (INFO), and printed when ``verbose``."""
        self.logger.info(text)
        if self.verbose:
            print(text, flush=True)

    def close(self) -> None:
        self._file = None
        if self._finalizer is not None:
            try:
                self._finalizer()
            except OSError as exc:  # the last buffered bytes could not be written either
                if self.failed is None:
                    self.failed = exc
                    self.logger.error("plateau_forensics: stopped recording to %s: %s", self.path, exc)


def _header(rules: str, metric: str, rank: int, config: Mapping[str, Any], state: Mapping[str, Any],
            lrs: Sequence[float], lr_dtypes: Sequence[str | None], labels: str) -> str:
    torch = sys.modules.get("torch")
    head = {"version": VERSION, "rules": rules, "metric": metric, "epoch_label": labels, "rank": rank,
            "pid": os.getpid(), "time": time.time(), "torch": getattr(torch, "__version__", None),
            "config": dict(config), "state": dict(state), "lrs": list(lrs), "lr_dtypes": list(lr_dtypes)}
    return json.dumps({FORMAT_KEY: _plain(head)}, separators=(",", ":"), allow_nan=False) + "\n"


def _check_metric_name(metric: str) -> str:
    from plateau_forensics.losses import normalize

    if (not isinstance(metric, str) or not metric or metric in RESERVED
            or _LR_NAME.fullmatch(normalize(metric))):
        raise ConfigError(f"metric name {metric!r} is empty or a key the recording uses itself "
                          f"(not one of {', '.join(sorted(RESERVED))}, nor an lr name)")
    return metric


def _resolve_path(path: str | os.PathLike[str] | None, rank: int) -> Path | None:
    """Rank 0 writes ``path``; other ranks write only when ``path`` holds ``{rank}``."""
    if path is None:
        return None
    text = os.fspath(path)
    if "{rank}" in text:
        return Path(text.replace("{rank}", str(rank)))
    return Path(text) if rank == 0 else None


def _recorded_class(base: Any) -> type:
    """A subclass of ``base`` whose ``step``/``load_state_dict`` report to the instance's recorder.

    The instance's ``__class__`` is swapped to it: an instance attribute ``step`` would land in
    ``scheduler.state_dict()`` (which is ``__dict__`` minus the optimizer) and so in every checkpoint.
    Pickling a recorded scheduler writes the base class, so nothing of ours reaches a file.
    """
    sub = _SUBCLASSES.get(base)
    if sub is not None:
        return sub

    def step(self: Any, *args: Any, **kwargs: Any) -> Any:
        rec = _RECORDERS.get(self)
        if rec is None:
            return base.step(self, *args, **kwargs)
        return rec._step(base.step, args, kwargs)

    def load_state_dict(self: Any, state_dict: Any) -> Any:
        rec = _RECORDERS.get(self)
        if rec is None:
            return base.load_state_dict(self, state_dict)
        before = _hyper(self)
        out = base.load_state_dict(self, state_dict)
        rec._loaded(before)
        return out

    def __reduce_ex__(self: Any, protocol: Any) -> Any:
        # pickle rebuilds the plain base class (copyreg.__newobj__ would insist on the object's own class)
        reduced: Any = object.__reduce_ex__(self, max(int(protocol), 2))
        return (copyreg._reconstructor, (base, object, None), *reduced[2:])  # type: ignore[attr-defined]

    sub = type(base.__name__, (base,), {"step": step, "load_state_dict": load_state_dict,
                                         "__reduce_ex__": __reduce_ex__, "__module__": __name__,
                                         "__qualname__": base.__qualname__, "__doc__": base.__doc__})
    _SUBCLASSES[base] = sub
    return sub


def recorder_of(scheduler: Any) -> Recorder | None:
    """The active recorder of ``scheduler``, or None (``check_resume`` reads the loads it saw)."""
    return _RECORDERS.get(scheduler)


class Recorder:
    """What ``record`` returns: the recording of one scheduler; ``close()`` (or ``with``) stops it.

    Attributes:
        path: the file written (None on a rank that does not write).
        rank: the process rank written into every line.
        metric: the metric's key in the step lines.
        active: whether steps are being recorded.
        steps: how many steps were recorded.
        loads: every ``load_state_dict`` seen, in order.
    """

    def __init__(self, scheduler: Any, optimizer: Any, path: Path | None, *, metric: str,
                 epoch: Callable[[], Any] | None, rank: int, explain: bool, verbose: bool,
                 logger: logging.Logger) -> None:
        self._sched = scheduler
        self._opt = optimizer
        self.path = path
        self.rank = rank
        self.metric = metric
        self.steps = 0
        self.loads: list[LoadEvent] = []
        self._epoch = epoch
        self._explain = explain
        self._sink = _Sink(path, logger, verbose)
        self._mkey = json.dumps(metric)
        self._tail = f',"rank":{rank},"time":'
        s, groups = scheduler, optimizer.param_groups
        self._dtypes = _lr_dtypes(groups)
        self._last_state = (s.best, s.num_bad_epochs, s.cooldown_counter, s.last_epoch)
        self._last_hyper = _hyper(s)
        self._configs: dict[tuple[Any, ...], PlateauConfig | None] = {}
        self._warned = False
        self._at_floor = False
        self._last_lrs = tuple(float(g["lr"]) for g in groups)
        self._base = type(scheduler)
        self.active = True
        self._sink.write(_header("torch", metric, rank, _hyper_dict(self._last_hyper),
                                 _state_dict(*self._last_state), [float(g["lr"]) for g in groups],
                                 self._dtypes, "given" if epoch is not None else "last_epoch"))
        _RECORDERS[scheduler] = self
        scheduler.__class__ = _recorded_class(self._base)

    @property
    def failed(self) -> OSError | None:
        """The write error that stopped the recording, if any (it is also logged)."""
        return self._sink.failed

    def close(self) -> None:
        """Stop recording: the scheduler's class is restored and the file closed (idempotent)."""
        if not self.active:
            return
        self.active = False
        s = self._sched
        if _RECORDERS.get(s) is self:
            del _RECORDERS[s]
            if type(s) is _SUBCLASSES.get(self._base):
                s.__class__ = self._base
        self._sink.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        closed = "" if self.active else ", closed"
        return f"<Recorder {self.path} rank {self.rank}: {self.steps} steps{closed}>"

    # -- hooks ---------------------------------------------------------------------------------
    def _config(self, hyper: tuple[Any, ...]) -> PlateauConfig | None:
        if hyper not in self._configs:
            try:
                self._configs[hyper] = plateau_config(_hyper_dict(hyper))
            except (ForensicsError, KeyError, TypeError, ValueError):  # values torch never accepted
                self._configs[hyper] = None
        return self._configs[hyper]

    def _loaded(self, before: tuple[Any, ...]) -> None:
        s = self._sched
        after = _hyper(s)
        state = (s.best, s.num_bad_epochs, s.cooldown_counter, s.last_epoch)
        b, a = _hyper_dict(before), _hyper_dict(after)
        overridden = {k: (b[k], a[k]) for k in a if b[k] != a[k]}
        event = LoadEvent(constructor=b, config=a, state=_state_dict(*state), overridden=overridden,
                          time=time.time())
        self.loads.append(event)
        self._last_state, self._last_hyper = state, after
        self._sink.write(json.dumps({LOAD_KEY: _plain({
            "time": event.time, "constructor": b, "config": a, "state": event.state,
            "overridden": {k: list(v) for k, v in overridden.items()}})}, separators=(",", ":"),
            allow_nan=False) + "\n")

    def _step(self, orig: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        s = self._sched
        groups = self._opt.param_groups
        lr_in = tuple([float(g["lr"]) for g in groups])
        before = (s.best, s.num_bad_epochs, s.cooldown_counter, s.last_epoch)
        hyper = _hyper(s)
        out = orig(s, *args, **kwargs)  # torch raises first on a bad metric: then nothing is recorded
        metric = float(args[0] if args else kwargs["metrics"])
        lr_out = tuple([float(g["lr"]) for g in groups])
        b1, nb1, cd1, le1 = after = (s.best, s.num_bad_epochs, s.cooldown_counter, s.last_epoch)
        label = self._epoch() if self._epoch is not None else le1
        lrs = ",".join(f'"{_lr_key(g)}":{_n(v)}' for g, v in enumerate(lr_in))
        extra = ""
        if before != self._last_state:
            extra += ',"before":' + json.dumps(_plain(_state_dict(*before)), separators=(",", ":"))
        if hyper != self._last_hyper:
            extra += ',"config":' + json.dumps(_plain(_hyper_dict(hyper)), separators=(",", ":"))
        self._sink.write(
            f'{{"epoch":{_n(label)},{self._mkey}:{_n(metric)},{lrs},"best":{_n(b1)},'
            f'"num_bad_epochs":{_n(nb1)},'
            f'"cooldown_counter":{_n(cd1)},"last_epoch":{_n(le1)},"lrs_after":[{",".join(map(_n, lr_out))}]'
            f'{self._tail}{_n(time.time())}{extra}}}\n')
        self.steps += 1
        self._last_state, self._last_hyper = after, hyper
        if lr_in != self._last_lrs:  # the lr moved between steps (another writer): a floor is news again
            self._at_floor = False
        self._last_lrs = lr_out
        # Only the engine decides what a step did; it replays the steps that may be reductions (a due
        # reduction leaves num_bad_epochs 0, cooldown_counter == cooldown, best unchanged), all with explain.
        due = lr_out != lr_in or (nb1 == 0 and cd1 == hyper[5] and (b1 == before[0] or hyper[2] < 0))
        if due or self._explain:
            self._tell(hyper, before, lr_in, metric, label, after, lr_out)
        return out

    def _tell(self, hyper: tuple[Any, ...], before: tuple[Any, ...], lr_in: tuple[float, ...], metric: float,
              label: Any, after: tuple[Any, ...], lr_out: tuple[float, ...]) -> None:
        cfg = self._config(hyper)
        step = None
        if cfg is not None:
            try:
                step = _replay(cfg, before, hyper[7], hyper[8], lr_in, metric, label, self._dtypes)
            except (ForensicsError, TypeError, ValueError):  # the explanation must never stop the training
                step = None
        if step is None or cfg is None:
            if not self._warned:
                self._warned = True
                self._sink.logger.warning("plateau_forensics: cannot replay the step at epoch %s", label)
            return
        if (step.best, step.num_bad_epochs, step.cooldown_counter, step.lr) != (*after[:3], lr_out):
            self._sink.logger.warning(
                "plateau_forensics: the replay of epoch %s differs from torch's step (engine: best=%r "
                "num_bad_epochs=%r cooldown_counter=%r lr=%r; torch: best=%r num_bad_epochs=%r "
                "cooldown_counter=%r lr=%r)", label, step.best, step.num_bad_epochs, step.cooldown_counter,
                list(step.lr), *after[:3], list(lr_out))
            return
        if step.event is Event.REDUCED:
            self._at_floor = False
            self._sink.emit(reduction_line(step, self.metric, cfg, hyper[7]))
        elif step.event is Event.SUPPRESSED:
            # at the floor every due reduction is suppressed: say it once, then at DEBUG until the lr moves
            line = reduction_line(step, self.metric, cfg, hyper[7])
            if self._at_floor:
                self._sink.logger.debug(line)
            else:
                self._at_floor = True
                self._sink.emit(line)
        if self._explain:
            self._sink.emit(step.explain())


def record(
    scheduler: Any,
    optimizer: Any = None,
    path: str | os.PathLike[str] | None = "plateau.jsonl",
    *,
    metric: str = "val_loss",
    epoch: Callable[[], Any] | None = None,
    rank: int | None = None,
    explain: bool = False,
    verbose: bool = False,
    logger: logging.Logger | str = LOGGER_NAME,
) -> Recorder:
    """Record every ``scheduler.step(metric)`` of this scheduler instance in ``path`` (JSON Lines, appended).

    Only this instance changes (its class is swapped for a recording subclass, restored by ``close()``); no
    torch code is patched and nothing is added to its ``state_dict()``. Each reduction is logged through
    ``logging`` (logger ``plateau_forensics``, INFO) in the words torch's removed ``verbose=True`` lacked,
    e.g. ``epoch 35: val_loss 0.4186 not below 0.4143 for 3 epochs (patience 2): lr 0.0012 -> 0.00096,
    cooldown 3``. Attach it right after building the scheduler, before ``load_state_dict``: the load is
    recorded too, with the constructor's hyperparameters it replaced (``check_resume`` reports them).

    Args:
        scheduler: a ``torch.optim.lr_scheduler.ReduceLROnPlateau``.
        optimizer: the optimizer it steps (default ``scheduler.optimizer``); its ``param_groups`` give the
            lrs.
        path: the JSON Lines file; rank 0 writes it, other ranks only when it holds ``{rank}``
            (``"plateau.rank{rank}.jsonl"``); None writes no file (the log lines only).
        metric: the metric's name in the file; ``val_loss`` (or another name ``plateau-trace`` detects) lets
            the CLI read the file as a log without ``--metric``.
        epoch: returns the current epoch label when called at each step; default: ``last_epoch`` after the
            step.
        rank: the process rank; default ``torch.distributed``'s when initialised, else ``$RANK``, else 0.
        explain: also log one line per step with ``plateau-trace --explain``'s words.
        verbose: also ``print`` the lines (the lost ``verbose=True``).
        logger: the logger (or its name) for the lines.

    Returns:
        The ``Recorder``; a rank that writes nothing gets an inactive one.

    Raises:
        ConfigError: not a ReduceLROnPlateau, an optimizer it does not step, a scheduler already recorded, a
            metric name the file uses itself, or a file that cannot be opened.

    Example:
        >>> rec = pf.record(scheduler, optimizer, "plateau.jsonl")   # doctest: +SKIP
    """
    if not all(hasattr(scheduler, k) for k in (*COUNTERS, "step", "load_state_dict", "min_lrs")):
        raise ConfigError(f"record() needs a torch ReduceLROnPlateau, not a {type(scheduler).__name__}")
    if optimizer is None:
        optimizer = scheduler.optimizer
    inner = getattr(scheduler, "optimizer", None)
    groups = getattr(optimizer, "param_groups", None)
    if inner is not None and groups is not getattr(inner, "param_groups", None):
        raise ConfigError("record(): this optimizer is not the one the scheduler steps (their param_groups "
                          "differ)")
    if scheduler in _RECORDERS:
        raise ConfigError(f"the scheduler is already recorded ({_RECORDERS[scheduler]!r}); close() that "
                          "first")
    _check_metric_name(metric)
    rank = current_rank() if rank is None else int(rank)
    log = logging.getLogger(logger) if isinstance(logger, str) else logger
    target = _resolve_path(path, rank)
    if path is not None and target is None:
        return _Inactive(rank, metric)  # type: ignore[return-value]
    return Recorder(scheduler, optimizer, target, metric=metric, epoch=epoch, rank=rank, explain=explain,
                    verbose=verbose, logger=log)


class _Inactive:
    """The recorder of a rank that writes nothing: same attributes, records nothing."""

    def __init__(self, rank: int, metric: str) -> None:
        self.path = None
        self.rank = rank
        self.metric = metric
        self.active = False
        self.steps = 0
        self.loads: list[LoadEvent] = []
        self.failed = None

    def close(self) -> None:
        """Nothing to stop."""

    def __enter__(self) -> _Inactive:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __repr__(self) -> str:
        return f"<Recorder inactive on rank {self.rank}>"


class KerasRecorder:
    """The recorder of a ``keras.callbacks.ReduceLROnPlateau`` (no Keras import: ``read_lr`` reads the lr).

    ``attach()`` wraps that callback instance's ``on_epoch_end``; each epoch that reads the monitored value is
    one step line (``wait`` in place of ``num_bad_epochs``, ``last_epoch`` counting epochs of this ``fit``).
    Lines for people come from ``keras_rules.run_keras`` replaying the ``fit`` so far (Keras 3.15 resets the
    callback at ``on_train_begin``, so each ``fit`` is one segment starting fresh).
    """

    def __init__(self, plateau: Any, read_lr: Callable[[], float], path: Path | None, *, rank: int,
                 explain: bool, verbose: bool, logger: logging.Logger) -> None:
        self._cb = plateau
        self._read_lr = read_lr
        self.path = path
        self.rank = rank
        self.metric = str(plateau.monitor)
        self.steps = 0
        self._explain = explain
        self._sink = _Sink(path, logger, verbose)
        self._metrics: list[float] = []
        self._labels: list[float] = []
        self._lr0 = math.nan
        self._config: KerasConfig | None = None
        self.active = False

    @property
    def logger(self) -> logging.Logger:
        """The logger the lines go to."""
        return self._sink.logger

    def attach(self) -> None:
        """Start a segment (one ``fit``) and wrap the callback's ``on_epoch_end``."""
        cb = self._cb
        orig = type(cb).on_epoch_end.__get__(cb)

        def on_epoch_end(epoch: int, logs: Any = None) -> Any:
            return self._epoch_end(orig, epoch, logs)

        cb.on_epoch_end = on_epoch_end
        self._metrics, self._labels, self._config = [], [], None
        self.active = True

    def detach(self) -> None:
        """Unwrap ``on_epoch_end`` (the end of a ``fit``)."""
        self.active = False
        self._cb.__dict__.pop("on_epoch_end", None)

    def close(self) -> None:
        """Unwrap and close the file."""
        self.detach()
        self._sink.close()

    def _direction(self) -> str | None:
        op = getattr(self._cb, "monitor_op", None)
        name = getattr(op, "__name__", "")
        return "min" if name == "less" else ("max" if name == "greater" else None)

    def _epoch_end(self, orig: Callable[..., Any], epoch: int, logs: Any) -> Any:
        from plateau_forensics.keras_rules import KerasConfig, run_keras

        cb = self._cb
        current = (logs or {}).get(self.metric)
        lr_in = self._read_lr()
        before = (cb.best, cb.wait, cb.cooldown_counter)
        out = orig(epoch, logs)
        if current is None:  # Keras warns and skips the epoch; so does the recording
            return out
        metric, lr_out, label = float(current), self._read_lr(), epoch + 1  # Keras prints epochs from 1
        if self._config is None:
            direction = self._direction()
            mode: Any = direction or cb.mode
            self._config = KerasConfig(monitor=self.metric, factor=float(cb.factor),
                                       patience=int(cb.patience), mode=mode,
                                       min_delta=abs(float(cb.min_delta)), cooldown=int(cb.cooldown),
                                       min_lr=float(cb.min_lr))
            config = {k: getattr(self._config, k) for k in ("monitor", "factor", "patience", "mode",
                                                              "min_delta", "cooldown", "min_lr")}
            self._lr0 = lr_in
            state = {"best": before[0], "wait": before[1], "cooldown_counter": before[2], "last_epoch": 0}
            self._sink.write(_header("keras", self.metric, self.rank, config, state, [lr_in], [None],
                                     "given"))
        self._metrics.append(metric)
        self._labels.append(label)
        self.steps += 1
        best = cb.best
        self._sink.write(
            f'{{"epoch":{label},{json.dumps(self.metric)}:{_n(metric)},"lr":{_n(lr_in)},'
            f'"best":{"null" if best is None else _n(float(best))},"wait":{_n(cb.wait)},'
            f'"cooldown_counter":{_n(cb.cooldown_counter)},"last_epoch":{len(self._metrics)},'
            f'"lrs_after":[{_n(lr_out)}],"rank":{self.rank},"time":{_n(time.time())}}}\n')
        if lr_out != lr_in or self._explain:
            step = run_keras(self._config, self._metrics, self._lr0, epochs=self._labels).steps[-1]
            live = (best, cb.wait, cb.cooldown_counter, lr_out)
            if (step.best, step.wait, step.cooldown_counter, step.lr[0]) != live:
                self._sink.logger.warning("plateau_forensics: the Keras replay of epoch %s differs from the "
                                          "callback (replay: %r; callback: best=%r wait=%r "
                                          "cooldown_counter=%r "
                                          "lr=%r)", label, step, best, cb.wait, cb.cooldown_counter, lr_out)
            else:
                if step.event is Event.REDUCED:
                    self._sink.emit(keras_reduction_line(step, self.metric, self._config))
                if self._explain:
                    self._sink.emit(step.explain())
        return out


# -- reading ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    """One ``record()`` (or one Keras ``fit``) in a recording: the header's content.

    Attributes:
        index: 0-based position among the file's segments.
        line: the header's file line (1-based).
        rules: ``torch`` or ``keras``.
        metric: the metric's key in the step lines.
        rank: the process rank.
        config: the hyperparameters at the start (torch's or Keras's attribute names).
        state: the counters at the start (a recorder attached before ``load_state_dict`` shows a fresh one).
        lrs: every group's lr at the start.
        raw: the whole header object (``pid``, ``time``, ``torch``, ``lr_dtypes``, ``epoch_label``).
    """

    index: int
    line: int
    rules: Literal["torch", "keras"]
    metric: str
    rank: int
    config: Mapping[str, Any]
    state: Mapping[str, Any]
    lrs: tuple[float, ...]
    raw: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class RecordedStep:
    """One recorded ``scheduler.step(metric)``: what it started from and the state after it, exactly.

    ``num_bad_epochs`` is Keras's ``wait`` in a Keras segment; ``before`` is ``(best, num_bad_epochs,
    cooldown_counter, last_epoch)`` right before the step; ``config`` the hyperparameters it ran with.
    """

    index: int
    segment: int
    line: int
    epoch: float
    metric: float
    lr_in: tuple[float, ...]
    lr: tuple[float, ...]
    best: float
    num_bad_epochs: int
    cooldown_counter: int
    last_epoch: float
    before: tuple[float, int, int, float]
    config: Mapping[str, Any] = field(repr=False)
    rank: int = 0
    time: float = math.nan

    def state(self) -> PlateauState:
        """The torch scheduler state after this step (``last_lr`` = the lrs after it)."""
        return self._state((self.best, self.num_bad_epochs, self.cooldown_counter, self.last_epoch), self.lr)

    def state_before(self) -> PlateauState:
        """The torch scheduler state this step started from."""
        return self._state(self.before, self.lr_in)

    def _state(self, counters: tuple[Any, ...], lrs: tuple[float, ...]) -> PlateauState:
        dml = self.config.get("default_min_lr")
        return PlateauState(last_epoch=counters[3], best=counters[0], num_bad_epochs=counters[1],
                            cooldown_counter=counters[2],
                            min_lrs=tuple(_float(v) for v in self.config.get("min_lrs", ())),
                            default_min_lr=None if dml is None else float(dml), last_lr=lrs)


@dataclass(frozen=True)
class Recording:
    """A recording read back: its segments, loads and steps, in file order.

    The step states are the scheduler's own, so a checkpoint saved during the run is placed by equality of
    its saved counters with a recorded state (``find``), not by a search over a log.
    """

    path: str
    metric: str
    segments: tuple[Segment, ...]
    steps: tuple[RecordedStep, ...]
    loads: tuple[LoadEvent, ...] = ()

    def __len__(self) -> int:
        return len(self.steps)

    def find(self, state: Any) -> list[RecordedStep]:
        """The steps after which the scheduler held exactly ``state``'s counters.

        Args:
            state: a ``PlateauState``, a ``Checkpoint`` (its ``state``), or a ``state_dict()`` mapping.
                ``best``, ``num_bad_epochs``, ``cooldown_counter`` and ``last_epoch`` must all be equal (only
                ``best`` and ``last_epoch`` for a partial state).
        """
        st = getattr(state, "state", state)
        if isinstance(st, Mapping):
            want = tuple(st.get(k) for k in COUNTERS)
            partial = any(st.get(k) is None for k in ("num_bad_epochs", "cooldown_counter"))
        else:
            want = (st.best, st.num_bad_epochs, st.cooldown_counter, st.last_epoch)
            partial = bool(getattr(st, "partial", False))
        keys = (0, 3) if partial else (0, 1, 2, 3)
        out = []
        for s in self.steps:
            got = (s.best, s.num_bad_epochs, s.cooldown_counter, s.last_epoch)
            if all(got[k] == want[k] for k in keys):
                out.append(s)
        return out

    def replay(self, i: int) -> engine.Step | KerasStep | None:
        """The engine's record of step ``i`` (its reason included), replayed from what the step started from.

        A Keras step is replayed with ``keras_rules.run_keras`` over its segment up to it. None when torch
        raised at that step (``min_lrs`` not matching the groups).
        """
        s = self.steps[i]
        seg = self.segments[s.segment]
        if seg.rules == "keras":
            from plateau_forensics.keras_rules import KerasConfig, run_keras

            keys = ("monitor", "factor", "patience", "mode", "min_delta", "cooldown", "min_lr")
            cfg = KerasConfig(**{k: seg.config[k] for k in keys})
            seg_steps = [x for x in self.steps[: i + 1] if x.segment == s.segment]
            return run_keras(cfg, [x.metric for x in seg_steps], seg_steps[0].lr_in[0],
                             epochs=[x.epoch for x in seg_steps]).steps[-1]
        c = s.config
        dml = c.get("default_min_lr")
        return _replay(plateau_config(c), s.before, tuple(_float(v) for v in c["min_lrs"]),
                       None if dml is None else float(dml), s.lr_in, s.metric, s.epoch,
                       seg.raw.get("lr_dtypes"))

    def verify(self) -> list[str]:
        """Every disagreement between the recorded steps and a replay of them, one sentence each.

        The engine must reproduce every torch step from the state it started from; an lr that changed between
        two steps (another writer, an optimizer load) or counters changed outside ``step()`` are listed too.
        """
        out = []
        prev: RecordedStep | None = None
        for i, s in enumerate(self.steps):
            if prev is not None and prev.segment == s.segment and prev.lr != s.lr_in:
                out.append(f"line {s.line}: the lr changed between two steps ({_lrs(prev.lr)} after epoch "
                           f"{_num(prev.epoch)}, {_lrs(s.lr_in)} before epoch {_num(s.epoch)})")
            if prev is not None and prev.segment == s.segment and s.before != (
                    prev.best, prev.num_bad_epochs, prev.cooldown_counter, prev.last_epoch):
                out.append(f"line {s.line}: the counters changed between two steps (before epoch "
                           f"{_num(s.epoch)}: {s.before})")
            prev = s
            r = self.replay(i)
            if r is None:
                out.append(f"line {s.line}: torch raised at epoch {_num(s.epoch)} (min_lrs do not match the "
                           "groups)")
                continue
            got = (r.best, r.num_bad_epochs, r.cooldown_counter, tuple(r.lr))
            if got != (s.best, s.num_bad_epochs, s.cooldown_counter, s.lr):
                out.append(f"line {s.line}: the replay of epoch {_num(s.epoch)} gives best={r.best!r} "
                           f"num_bad_epochs={r.num_bad_epochs} cooldown_counter={r.cooldown_counter} "
                           f"lr={list(r.lr)}, the recording best={s.best!r} "
                           f"num_bad_epochs={s.num_bad_epochs} cooldown_counter={s.cooldown_counter} "
                           f"lr={list(s.lr)}")
        return out

    def log(self) -> LossLog:
        """The step lines as a ``LossLog`` (what ``plateau-trace CKPT plateau.jsonl`` reads)."""
        from plateau_forensics.losses import read_losses

        n = max((len(s.lr_in) for s in self.steps), default=1)
        return read_losses(self.path, metric=self.metric, epoch_column="epoch",
                           lr_columns=[_lr_key(g) for g in range(n)], fmt="jsonl")


def is_recording(path: str | os.PathLike[str]) -> bool:
    """True when the file's first non-blank line is a recording header (reads at most 1 MiB)."""
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(2**20)
    except (OSError, UnicodeDecodeError):
        return False
    first = next((line for line in head.split("\n") if line.strip()), "")
    try:
        obj = json.loads(first)
    except ValueError:
        return False
    return isinstance(obj, dict) and isinstance(obj.get(FORMAT_KEY), dict)


def _num_field(obj: Mapping[str, Any], key: str, where: str, integral: bool = False) -> Any:
    v = obj.get(key)
    if isinstance(v, str) and v in ("nan", "inf", "-inf"):
        v = float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integral and not isinstance(v, int)):
        raise RecordingError(f"{where}: '{key}' is {v!r}, not {'an integer' if integral else 'a number'}")
    return v


def read_recording(path: str | os.PathLike[str]) -> Recording:
    """Read a file written by ``record`` (or a recording callback) into a ``Recording``.

    Raises:
        RecordingError: the file is missing or unreadable, is not a recording (no header first), or a line is
            not valid JSON or lacks a recorded value (the message names the line and the key).
    """
    src = os.fspath(path)
    try:
        with open(src, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise RecordingError(f"{src}: no such file") from None
    except UnicodeDecodeError:
        raise RecordingError(f"{src}: not a UTF-8 text file") from None
    except OSError as exc:
        raise RecordingError(f"{src}: cannot read the file ({exc.strerror})") from None
    segments: list[Segment] = []
    steps: list[RecordedStep] = []
    loads: list[LoadEvent] = []
    config: Mapping[str, Any] = {}
    counters: tuple[Any, ...] = ()
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"{src}: line {n}"
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise RecordingError(f"{where} is not valid JSON ({getattr(exc, 'msg', exc)})") from None
        if not isinstance(obj, dict):
            raise RecordingError(f"{where} is not a JSON object")
        try:
            if FORMAT_KEY in obj:
                head = obj[FORMAT_KEY]
                seg = _segment(head, len(segments), n, where)
                segments.append(seg)
                config = seg.config
                counters = _counters(seg.state, where, keras=seg.rules == "keras")
            elif not segments:
                raise RecordingError(f"{src}: not a plateau_forensics recording (line {n} comes before any "
                                     f"'{FORMAT_KEY}' header)")
            elif LOAD_KEY in obj:
                ld = obj[LOAD_KEY]
                if not isinstance(ld, dict):
                    raise RecordingError(f"{where}: '{LOAD_KEY}' is not an object")
                config = dict(ld["config"])
                counters = _counters(ld["state"], where)
                overridden = {k: tuple(v) for k, v in ld.get("overridden", {}).items()}
                loads.append(LoadEvent(constructor=dict(ld["constructor"]), config=config,
                                       state=dict(ld["state"]), overridden=overridden,
                                       time=float(ld.get("time", math.nan)), line=n))
            else:
                seg = segments[-1]
                keras = seg.rules == "keras"
                if "config" in obj:
                    config = dict(obj["config"])
                if "before" in obj:
                    counters = _counters(obj["before"], where)
                after = _counters(obj, where, keras=keras)
                n_groups = sum(1 for k in obj if k == "lr" or (k.startswith("lr_") and k[3:].isdigit()))
                lr_in = tuple(float(_num_field(obj, _lr_key(g), where)) for g in range(n_groups))
                lrs_after = obj.get("lrs_after")
                if not isinstance(lrs_after, list):
                    raise RecordingError(f"{where}: 'lrs_after' is {lrs_after!r}, not a list")
                lr_out = tuple(float(_num_field({"v": v}, "v", f"{where}, lrs_after")) for v in lrs_after)
                steps.append(RecordedStep(
                    index=len(steps), segment=seg.index, line=n, epoch=_num_field(obj, "epoch", where),
                    metric=float(_num_field(obj, seg.metric, where)), lr_in=lr_in, lr=lr_out,
                    best=after[0], num_bad_epochs=after[1], cooldown_counter=after[2], last_epoch=after[3],
                    before=counters, config=config,
                    rank=int(_num_field(obj, "rank", where, integral=True)),
                    time=float(_num_field(obj, "time", where))))
                counters = after
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordingError(f"{where}: malformed recording line ({type(exc).__name__}: {exc})") from None
    if not segments:
        raise RecordingError(f"{src}: the file is empty")
    metrics = {s.metric for s in segments}
    if len(metrics) > 1:
        raise RecordingError(f"{src}: segments record different metrics ({', '.join(sorted(metrics))})")
    return Recording(path=src, metric=segments[0].metric, segments=tuple(segments), steps=tuple(steps),
                     loads=tuple(loads))


def _counters(obj: Mapping[str, Any], where: str, keras: bool = False) -> tuple[Any, ...]:
    bad = "wait" if keras else "num_bad_epochs"
    best = obj.get("best")
    best_v = None if (keras and best is None) else float(_num_field(obj, "best", where))
    return (best_v, _num_field(obj, bad, where, integral=True),
            _num_field(obj, "cooldown_counter", where, integral=True), _num_field(obj, "last_epoch", where))


def _segment(head: Any, index: int, line: int, where: str) -> Segment:
    if not isinstance(head, dict):
        raise RecordingError(f"{where}: '{FORMAT_KEY}' is not an object")
    version = head.get("version")
    if version != VERSION:
        raise RecordingError(f"{where}: recording format version {version!r}; this reader knows {VERSION}")
    rules = head.get("rules")
    if rules not in ("torch", "keras"):
        raise RecordingError(f"{where}: unknown rules {rules!r}")
    metric = head.get("metric")
    if not isinstance(metric, str):
        raise RecordingError(f"{where}: the header names no metric")
    lrs = tuple(float(_num_field({"v": v}, "v", f"{where}, lrs")) for v in head.get("lrs", ()))
    return Segment(index=index, line=line, rules=rules, metric=metric,
                   rank=int(_num_field(head, "rank", where, integral=True)), config=dict(head["config"]),
                   state=dict(head["state"]), lrs=lrs, raw=head)
