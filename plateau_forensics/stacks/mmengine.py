"""MMEngine: ``Runner`` checkpoints (``epoch_N.pth``: ``meta``, ``state_dict``, ``message_hub``, ``optimizer``,
``param_schedulers``) with a ``ReduceOnPlateauLR``.

Recognised by the scheduler state's own names (``rule``, ``threshold_rule``, ``min_values``, ``last_step``,
``_global_step``), wherever it sits. MMEngine's rules (``mmengine_rules``): the initial best ``int(1e9)``, no
float cast of the metric, plateau logic only while ``begin <= _global_step < end`` (the Runner sets ``end =
max_epochs``), ``last_step`` counted from -1. ``ParamSchedulerHook`` counts ``_global_step`` in
``after_train_epoch``, ``CheckpointHook`` saves ``epoch_N.pth`` there too, and the validation of epoch N
steps the scheduler afterwards: a checkpoint holds the state after epoch N-1's validation. Its
``message_hub`` keeps every validation's raw value (``log_scalars['val/<monitor>']``, a pickled
``HistoryBuffer`` read as an inert record) and every iteration's lr (``train/lr``): the checkpoint alone is
the run's log. ``vis_data/scalars.json`` is not: ``LogProcessor`` writes keys matching ``loss`` as the mean of
the last 10 values.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from plateau_forensics import mmengine_rules as mm
from plateau_forensics.errors import CheckpointValueError, ConfigError
from plateau_forensics.loader import Checkpoint, as_mapping, walk
from plateau_forensics.stacks import Stack
from plateau_forensics.state import PlateauState
from plateau_forensics.torchfile import Opaque

if TYPE_CHECKING:
    from plateau_forensics.diagnose import Finding
    from plateau_forensics.engine import Trace

#: ``LogProcessor``'s default ``mean_pattern``: these keys are written as a ``window_size``-mean.
MEAN_PATTERN = re.compile(r".*(loss|time|data_time|grad_norm).*")
WINDOW = 10  # LogProcessor's default window_size
_HISTORY = "mmengine.logging.history_buffer.HistoryBuffer"


def _node(tree: Any, key_path: str) -> Any:
    for path, node in walk(tree):
        if (path[1:] if path.startswith(".") else path) == key_path:
            return node
    return None


def owns_tree(tree: Any, key_path: str) -> bool:
    """A plateau state with MMEngine's ``ReduceOnPlateauLR`` names at ``key_path``."""
    m = as_mapping(_node(tree, key_path))
    return m is not None and mm.is_mmengine_state(m)


# -- the pickled HistoryBuffer: numpy arrays as inert records ------------------------------------------
_CODES = {"f8": "d", "f4": "f", "f2": "e", "i8": "q", "i4": "i", "i2": "h", "i1": "b", "u8": "Q", "u4": "I",
          "u2": "H", "u1": "B"}


def ndarray_values(obj: Any) -> list[float | int] | None:
    """A pickled 1-d numpy array's values, read from the inert record our reader made (never numpy's code).

    ``ndarray.__reduce__`` pickles ``_reconstruct(ndarray, (0,), b'b')`` and BUILDs it with ``(version,
    shape, dtype, is_fortran, raw bytes)``; the dtype is our reader's ``numpy.dtype`` stand-in (code, byte
    order). Returns None for anything else (another shape, an object array, a dtype we do not decode).
    """
    if not isinstance(obj, Opaque) or not type(obj).name.endswith("multiarray._reconstruct"):
        return None
    st = obj.state
    if not (isinstance(st, tuple) and len(st) == 5 and isinstance(st[1], tuple) and len(st[1]) == 1):
        return None
    (n,), dtype, raw = st[1], st[2], st[4]
    code, order = getattr(dtype, "code", None), getattr(dtype, "byteorder", None)
    fmt = _CODES.get(code) if isinstance(code, str) else None
    end = {"<": "<", ">": ">", "|": "<", "=": "<"}.get(order) if isinstance(order, str) else None
    if fmt is None or end is None or not isinstance(raw, bytes) or not isinstance(n, int):
        return None
    if struct.calcsize(fmt) * n != len(raw):
        return None
    return list(struct.unpack(f"{end}{n}{fmt}", raw))


def history(buffer: Any) -> list[float] | None:
    """A ``HistoryBuffer``'s ``_log_history`` (every value it was updated with), or None."""
    if not isinstance(buffer, Opaque) or type(buffer).name != _HISTORY:
        return None
    m = buffer.mapping()
    values = ndarray_values(m.get("_log_history"))
    return None if values is None else [float(v) for v in values]


# -- the checkpoint's view --------------------------------------------------------------------------------
def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _own_log(tree: Any, cfg: mm.MMEngineConfig, st: mm.MMEngineState, n_groups: int,
             ) -> tuple[tuple[dict[str, Any], ...] | None, dict[str, Any]]:
    """The evaluations the message hub kept, as log entries (epoch, ``val/<monitor>``, lr), and what was seen."""
    top = as_mapping(tree) or {}
    hub = as_mapping(top.get("message_hub")) or {}
    scalars = as_mapping(hub.get("log_scalars")) or {}
    info = as_mapping(hub.get("runtime_info")) or {}
    key = f"val/{cfg.monitor}"
    seen: dict[str, Any] = {"key": key, "global_step": st.global_step}
    values = history(scalars.get(key))
    if values is None:
        seen["why"] = f"the message hub has no '{key}' history"
        return None, seen
    seen["evaluations"] = len(values)
    gs = st.global_step
    # CheckpointHook saves in after_train_epoch, after ParamSchedulerHook counted the epoch and before its
    # validation: a Runner validating every epoch has validated gs - 1 times (gs times when saved later)
    if len(values) not in (gs - 1, gs):
        seen["why"] = (f"{len(values)} evaluations for _global_step {gs}: not one per epoch (val_interval > 1?), "
                       "so which epoch each belongs to is not known")
        return None, seen
    lrs = history(scalars.get("train/lr"))
    max_iters, max_epochs = _int(info.get("max_iters")), _int(info.get("max_epochs"))
    per_epoch = max_iters // max_epochs if max_iters and max_epochs and max_iters % max_epochs == 0 else None
    entries = []
    skipped = []
    for i, v in enumerate(values):
        epoch = i + 1  # the validation after epoch e runs at _global_step e
        if not cfg.begin <= epoch < cfg.end:
            skipped.append(epoch)  # kept: the run validated; ``plateau_log`` leaves it out of the replay
        row: dict[str, Any] = {"epoch": epoch, key: v}
        at = (epoch - 1) * per_epoch if per_epoch else None
        if n_groups == 1 and lrs is not None and at is not None and at < len(lrs):
            row["lr"] = lrs[at]  # RuntimeInfoHook logs group 0's lr before every iteration
        entries.append(row)
    seen["skipped"] = skipped
    return tuple(entries), seen


def adapt(ck: Checkpoint, tree: Any) -> Checkpoint:
    """MMEngine's names onto torch's: ``rule`` -> mode, ``threshold_rule`` -> threshold_mode, ``min_values``
    -> min_lrs, ``last_step + 1`` -> last_epoch (plateau steps taken); the run's log from the message hub."""
    where = f"{ck.path}:{ck.key_path or '<root>'}"
    param = ck.raw.get("param_name", "lr")
    if param != "lr":  # ReduceOnPlateauMomentum / ReduceOnPlateauParamScheduler: the same machine on another value
        raise CheckpointValueError(
            f"{where}: MMEngine's plateau scheduler of {str(param)[:40]!r} (param_name), not of the lr; "
            "plateau-forensics replays lr schedulers (ReduceOnPlateauLR)")
    try:
        cfg, st = mm.from_state_dict(ck.raw)
    except ConfigError as exc:
        raise CheckpointValueError(f"{where}: {' '.join(str(exc).split())[:300]}") from None
    best = st.best
    if isinstance(best, bool) or not isinstance(best, (int, float)):
        raise CheckpointValueError(f"{where}.best holds {best!r}, not a number")
    last = ck.raw.get("_last_value")
    floors = tuple(cfg.min_value)  # type: ignore[arg-type]  # from_state_dict keeps the saved list
    n_groups = len(ck.optimizer_lrs) if ck.optimizer_lrs else len(floors)
    if len(floors) > n_groups:  # an OptimWrapper with base_param_settings appends one; zip() ignores it
        cfg = replace(cfg, min_value=floors[:n_groups])
    config = mm.torch_config(cfg)
    state = PlateauState(
        last_epoch=st.last_step + 1, best=float(best), num_bad_epochs=st.num_bad_epochs,
        cooldown_counter=st.cooldown_counter, min_lrs=tuple(float(v) for v in cfg.min_value),  # type: ignore[union-attr]
        default_min_lr=None,
        last_lr=tuple(float(v) for v in last) if isinstance(last, (list, tuple)) else None,
        extras=ck.state.extras, keys=ck.state.keys, best_dtype=ck.state.best_dtype)
    top = as_mapping(tree) or {}
    meta = as_mapping(top.get("meta")) or {}
    epoch, it = _int(meta.get("epoch")), _int(meta.get("iter"))
    entries, _ = _own_log(tree, cfg, st, n_groups)
    return replace(ck, config=config, state=state, framework="mmengine",
                   epoch=epoch if epoch is not None else ck.epoch,
                   global_step=it if it is not None else ck.global_step,
                   log_history=entries if entries else None)


def own_log(ck: Checkpoint) -> tuple[str, str | None]:
    """The label and metric column of the log ``adapt`` put in ``log_history``."""
    monitor = str(ck.raw.get("monitor", "loss"))
    return f"{ck.path}:message_hub.log_scalars['val/{monitor}']", f"val/{monitor}"


def plateau_log(ck: Checkpoint, log: Any) -> tuple[Checkpoint, Any]:
    """The rows the scheduler stepped on: validations outside ``begin <= _global_step < end`` left out (the
    validation after epoch ``e`` runs at ``_global_step == e``)."""
    begin, end = ck.raw.get("begin", 0), ck.raw.get("end", mm.INF)
    if not isinstance(begin, int) or not isinstance(end, int):
        return ck, log
    keep = [i for i, e in enumerate(log.epochs) if isinstance(e, (int, float)) and begin <= e < end]
    return ck, (log if len(keep) == len(log) else log.pick_rows(keep))


# -- findings ---------------------------------------------------------------------------------------------
def findings(trace: Trace) -> list[Finding]:
    """MMEngine's counters and window; a smoothed scalars.json fed as the metric; a replay the rules contradict."""
    from plateau_forensics.diagnose import Finding

    ck = trace.checkpoint
    out: list[Finding] = []
    try:
        cfg, st = mm.from_state_dict(ck.raw)
    except ConfigError:
        return out
    window = (f"{cfg.begin} <= _global_step < {cfg.end}" if cfg.end != mm.INF
              else f"{cfg.begin} <= _global_step (end = INF, MMEngine's int(1e9): no end)")
    done = st.global_step >= cfg.end
    out.append(Finding(
        "mmengine-window", "info", ck.epoch,
        f"MMEngine's ReduceOnPlateauLR: last_step={st.last_step} (counted from -1) is {st.last_step + 1} plateau "
        f"steps (shown as last_epoch); _global_step={st.global_step}; validations are plateau steps only while "
        f"{window}"
        + (" (the Runner sets end = max_epochs: the validation after the last epoch never is one)"
           if cfg.end != mm.INF else "")
        + ("; this run reached end: later validations change nothing (the forecast assumes plateau steps "
           "this scheduler will not take)" if done else ""),
        {"last_step": st.last_step, "_global_step": st.global_step, "begin": cfg.begin, "end": cfg.end},
        "nothing to fix: MMEngine's own counting"))
    log = trace.log
    own_label, _ = own_log(ck)
    if log is not None and not log.source.startswith(own_label) and MEAN_PATTERN.fullmatch(log.metric_column):
        smoothed = _smoothed_rows(ck, log)
        if smoothed is not None or {"data_time", "time"} & set(log.columns):
            detail = (f"; {smoothed[0]} of {smoothed[1]} logged values are the mean of the last {WINDOW} raw "
                      "values the checkpoint's message_hub kept, not the value itself" if smoothed else "")
            out.append(Finding(
                "smoothed-metric", "warning", None,
                f"'{log.metric_column}' matches MMEngine's LogProcessor mean_pattern: vis_data/scalars.json and "
                f"the text log write it as the mean of the last {WINDOW} values (window_size={WINDOW}), while "
                f"the scheduler compared the raw value{detail}",
                {"column": log.metric_column, "window_size": WINDOW,
                 **({"rows": smoothed[1], "smoothed": smoothed[0]} if smoothed else {})},
                "trace the checkpoint alone (plateau-trace epoch_N.pth): its message_hub keeps every raw value; "
                "or log it with custom_cfg=[dict(data_src=..., method_name='current')]"))
    out += _rules_findings(trace, cfg, st)
    return out


def _raw_values(ck: Checkpoint) -> dict[float, float]:
    monitor_key = f"val/{ck.raw.get('monitor', 'loss')}"
    return {e["epoch"]: e[monitor_key] for e in (ck.log_history or ()) if monitor_key in e}


def _smoothed_rows(ck: Checkpoint, log: Any) -> tuple[int, int] | None:
    """(rows equal to the window mean and not to the raw value, rows compared), against the message hub."""
    if not ck.log_history:
        return None
    raw = _raw_values(ck)
    epochs = sorted(raw)
    compared = smoothed = 0
    for e, v in zip(log.epochs, log.metrics, strict=True):
        if e not in raw:
            continue
        compared += 1
        k = epochs.index(e)
        window = [raw[x] for x in epochs[max(0, k - WINDOW + 1): k + 1]]
        mean = sum(window) / len(window)
        if v != raw[e] and math.isclose(v, mean, rel_tol=1e-9, abs_tol=1e-12):
            smoothed += 1
    return (smoothed, compared) if smoothed else None


def _rules_findings(trace: Trace, cfg: mm.MMEngineConfig, st: mm.MMEngineState) -> list[Finding]:
    """The package's engine replays torch's machine with MMEngine's initial best; MMEngine compares float32
    metrics (a float32 tensor ``best``) in float32: replay the run's own log both ways and say where they part."""
    from plateau_forensics.diagnose import Finding

    ck = trace.checkpoint
    if ck.state.best_dtype is None or not ck.log_history:
        return []
    raw = _raw_values(ck)
    epochs = sorted(raw)
    lrs = [e.get("lr") for e in ck.log_history]
    lr0 = lrs[0] if lrs and lrs[0] is not None else 1.0
    steps = [int(e) for e in epochs]  # the validation after epoch e runs at _global_step e
    a = mm.simulate(cfg, [raw[e] for e in epochs], [lr0], global_steps=steps, metric_type="float32")
    b = mm.simulate(cfg, [raw[e] for e in epochs], [lr0], global_steps=steps, metric_type="python")
    part = next((x.epoch for x, y in zip(a.steps, b.steps, strict=True)
                 if (x.num_bad_epochs, x.cooldown_counter, x.lr) != (y.num_bad_epochs, y.cooldown_counter, y.lr)),
                None)
    if part is None:
        return []
    return [Finding(
        "mmengine-float32", "warning", part,
        f"best is a {ck.state.best_dtype} tensor: MMEngine does not cast the metric to float, so it compared in "
        f"{ck.state.best_dtype}; from epoch {part} that decides differently from the float64 replay shown",
        {"epoch": part, "best_dtype": ck.state.best_dtype},
        "replay with plateau_forensics.mmengine_rules.simulate(..., metric_type='float32'); or pass "
        "float(metric) in your metric's compute_metrics")]


STACK = Stack(
    name="mmengine",
    title="MMEngine",
    owns_tree=owns_tree,
    adapt=adapt,
    findings=findings,
    order="ParamSchedulerHook counts the epoch and CheckpointHook saves epoch_N.pth in after_train_epoch; the "
          "validation after it steps ReduceOnPlateauLR (only while begin <= _global_step < end)",
    saves_before_step=True,
    notes={"saved-before-step": " (MMEngine's order: epoch_N.pth is saved before epoch N's validation)"},
    torch_state=False,
    own_log=own_log,
    plateau_log=plateau_log,
)
