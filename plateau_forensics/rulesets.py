"""Rule sets: the libraries whose plateau rules a log can be replayed under (``--rules``, ``--compare``).

A rule set is a name and a module imported on first use. Registering one is one line::

    register(RuleSet("mmengine", "plateau_forensics.mmengine_rules", "MMEngine ReduceOnPlateauLR",
                     counters=("num_bad_epochs", "cooldown_counter")))

The module provides three functions (``keras_rules``, ``optax_rules``, ``fastai_rules`` are examples):

* ``configure(given, options, *, monitor) -> config``: the library's own configuration from the
  hyperparameters typed on the command line under torch's names (``given``: only those typed, so what is
  not typed keeps the library's default), its own constructor arguments (``options``, strings, from
  ``--rule-option KEY=VALUE`` and ``--min-delta``) and the monitored column's name.
* ``replay(config, log, lrs) -> trace``: the replay of a ``LossLog``; ``lrs`` is each param group's lr
  before the first step. The trace has ``rules``, ``config`` (with ``to_dict()``), ``len()``, ``steps``
  (each with ``epoch``, ``metric``, ``best``, ``lr``, ``lr_in``, ``event``, ``reason`` and ``as_dict()``
  holding the ``counters``), ``reductions()`` and ``to_records()``.
* ``rules_runner(**options)``: a ``whatif.RulesRunner`` (a torch ``PlateauConfig`` in, a trace out), so
  ``pf.compare(..., rules=[...])`` runs the rule set too.

A module may also define ``read_log(path, **log_options) -> LossLog | None`` for files only that library
writes (fastai's ``history.csv`` with one header per ``fit()``); None means "read it as any log".

This module imports only the standard library; rule-set modules and tabulate load when used.
"""

from __future__ import annotations

import csv
import importlib
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from plateau_forensics.errors import ConfigError

if TYPE_CHECKING:
    from plateau_forensics.engine import Event
    from plateau_forensics.losses import LossLog

__all__ = ["MIN_DELTA", "RULESETS", "RuleSet", "RuleStep", "RuleTrace", "compare_log", "first_divergence",
           "get", "names", "parse_names", "register", "render", "render_compare", "replay_log", "steps_frame"]


@dataclass(frozen=True)
class RuleSet:
    """One library's plateau rules: where they live and which of their counters a table shows.

    Args:
        name: the ``--rules`` name.
        module: the module implementing ``configure``/``replay``/``rules_runner`` (``"pkg.mod"``, or
            ``"pkg.mod:obj"`` for an object holding them), imported on first use.
        summary: one line naming the library and the class, for listings.
        counters: the keys of ``step.as_dict()`` shown as columns after ``best`` (the library's names).
    """

    name: str
    module: str
    summary: str
    counters: tuple[str, ...] = ()

    def load(self) -> Any:
        """The object holding ``configure``, ``replay`` and ``rules_runner``."""
        mod, _, attr = self.module.partition(":")
        obj = importlib.import_module(mod)
        return getattr(obj, attr) if attr else obj


#: Every rule set by name, in the order listings show them.
RULESETS: dict[str, RuleSet] = {}


def register(rule_set: RuleSet) -> None:
    """Make ``rule_set.name`` available to ``--rules``, ``--compare`` and ``pf.compare(rules=...)``."""
    RULESETS[rule_set.name] = rule_set


register(RuleSet("torch", "plateau_forensics.rulesets:_TORCH", "torch.optim.lr_scheduler.ReduceLROnPlateau",
                 counters=("num_bad_epochs", "cooldown_counter")))
register(RuleSet("keras", "plateau_forensics.keras_rules", "keras.callbacks.ReduceLROnPlateau (Keras 3.15)",
                 counters=("wait", "cooldown_counter")))
register(RuleSet("optax", "plateau_forensics.optax_rules", "optax.contrib.reduce_on_plateau (optax 0.2.8)",
                 counters=("plateau_count", "cooldown_count", "scale")))
register(RuleSet("fastai", "plateau_forensics.fastai_rules", "fastai.callback.tracker.ReduceLROnPlateau "
                 "(fastai 2.8)", counters=("fit", "wait")))


def names() -> list[str]:
    """The registered rule-set names, in registration order."""
    return list(RULESETS)


def get(name: str) -> RuleSet:
    """The rule set called ``name``.

    Raises:
        ConfigError: no rule set has that name (the message lists the names that exist).
    """
    try:
        return RULESETS[name]
    except KeyError:
        raise ConfigError(f"unknown rules {name!r}: available {', '.join(sorted(RULESETS))}") from None


def parse_names(text: str) -> list[str]:
    """``"torch, keras,optax"`` -> ``["torch", "keras", "optax"]``: at least two known names, no repeats.

    Raises:
        ConfigError: fewer than two names, a repeated or an unknown one.
    """
    items = [t.strip() for t in text.split(",") if t.strip()]
    for n in items:
        get(n)
    if len(items) < 2 or len(set(items)) != len(items):
        raise ConfigError(f"--compare takes two or more different rule sets separated by commas "
                          f"(available: {', '.join(RULESETS)}); got {text!r}")
    return items


# -- torch, as a rule set ----------------------------------------------------------------------------
class _TorchRules:
    """torch's own rules through the engine (``--compare``; ``--rules torch`` runs the full forensics)."""

    @staticmethod
    def configure(given: Mapping[str, Any], options: Mapping[str, str], *, monitor: str) -> Any:
        from plateau_forensics.state import PlateauConfig

        if given.get("mode") == "auto":
            raise ConfigError("torch's ReduceLROnPlateau has no mode 'auto' (min or max); 'auto' is Keras's "
                              "and fastai's rule")
        return PlateauConfig(**given)

    @staticmethod
    def replay(config: Any, log: LossLog, lrs: Sequence[float]) -> Any:
        from plateau_forensics import api

        return api.replay(log, config, lrs=list(lrs))

    @staticmethod
    def rules_runner(**options: Any) -> Any:
        from plateau_forensics.whatif import _torch_rules

        return _torch_rules


_TORCH = _TorchRules()


def steps_frame(steps: Sequence[Any]) -> Any:
    """Rule-set steps (anything with ``as_dict``, ``lr`` and ``lr_in``) as a pandas DataFrame, one row per step,
    ``lr`` and ``lr_in`` of group 0 as plain floats."""
    import pandas as pd

    rows = []
    for s in steps:
        row = s.as_dict()
        row["lr"], row["lr_in"] = s.lr[0], s.lr_in[0]
        rows.append(row)
    return pd.DataFrame(rows)


# -- a generic trace for rule sets without torch's columns ----------------------------------------------
@dataclass(frozen=True)
class RuleStep:
    """One step of another library's plateau logic: the state after it (that library's names) and why.

    Attributes:
        index: 0-based position in the trace.
        epoch: the log's epoch label.
        metric: the value fed to the library.
        best: the best value after the step (None before any).
        lr: every param group's lr after the step; ``lr_in`` before it.
        event: ``Event`` of the step, or None when the library's plateau logic did not run (optax while it
            averages ``accumulation_size`` values).
        reason: the transition in words, in the library's order of operations.
        state: the library's own state after the step, by its attribute names (``wait``, ``scale``, ...).
    """

    index: int
    epoch: float
    metric: float
    best: float | None
    lr: tuple[float, ...]
    lr_in: tuple[float, ...]
    event: Event | None
    reason: str
    state: Mapping[str, Any] = field(default_factory=dict)

    @property
    def num_bad_epochs(self) -> int:
        """The library's bad-evaluation counter under torch's name (``wait``, ``plateau_count``)."""
        for key in ("num_bad_epochs", "wait", "plateau_count"):
            if key in self.state:
                return int(self.state[key])
        return 0

    @property
    def cooldown_counter(self) -> int:
        """The library's cooldown counter under torch's name (0 when it has none)."""
        for key in ("cooldown_counter", "cooldown_count"):
            if key in self.state:
                return int(self.state[key])
        return 0

    @property
    def event_name(self) -> str:
        """``event.value``, or ``"accumulated"`` when the plateau logic did not run."""
        return self.event.value if self.event is not None else "accumulated"

    def explain(self) -> str:
        """``epoch: reason``."""
        return f"{_fmt(self.epoch)}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        """The step as a JSON-ready dict: common fields, then the library's state by its names."""
        return {"epoch": self.epoch, "metric": self.metric, "best": self.best, **self.state,
                "lr": list(self.lr), "lr_in": list(self.lr_in), "event": self.event_name,
                "reason": self.reason}


@dataclass
class RuleTrace:
    """A replay under another library's rules: its configuration, its steps and notes on what it assumed."""

    rules: str
    config: Any
    steps: list[RuleStep]
    start_lrs: tuple[float, ...]
    notes: tuple[str, ...] = ()
    log: Any = None

    def __len__(self) -> int:
        return len(self.steps)

    def step(self, i: int, **_: Any) -> RuleStep:
        """The ``i``-th step record (0-based)."""
        return self.steps[i]

    @property
    def lrs(self) -> tuple[float, ...]:
        """The lrs after the last step (the starting lrs for an empty trace)."""
        return self.steps[-1].lr if self.steps else self.start_lrs

    def reductions(self) -> list[RuleStep]:
        """The steps whose event is ``reduced`` or ``suppressed`` (a reduction due that changed nothing)."""
        return [s for s in self.steps if s.event is not None and s.event.value in ("reduced", "suppressed")]

    def to_records(self) -> list[dict[str, Any]]:
        """Every step as a JSON-ready dict."""
        return [s.as_dict() for s in self.steps]

    def to_frame(self) -> Any:
        """The steps as a pandas DataFrame (``lr``/``lr_in`` of group 0 as plain floats)."""
        return steps_frame(self.steps)

    def __repr__(self) -> str:
        return f"<RuleTrace {self.rules}: {len(self)} steps, {len(self.reductions())} reductions>"


# -- reading and replaying ------------------------------------------------------------------------------
def _read(modules: Sequence[Any], losses: Any, log_options: Mapping[str, Any]) -> LossLog:
    """The log, read by the first rule-set module with a ``read_log`` for it, else by the ordinary reader."""
    import os

    from plateau_forensics import api
    from plateau_forensics.losses import stitch

    opts = {k: v for k, v in log_options.items() if v is not None}
    items = losses if isinstance(losses, (list, tuple)) and losses and all(
        isinstance(x, (str, os.PathLike)) for x in losses) else [losses]
    logs = []
    for item in items:
        found = None
        if isinstance(item, (str, os.PathLike)):
            for mod in modules:
                reader = getattr(mod, "read_log", None)
                if reader is not None:
                    found = reader(item, **opts)
                    if found is not None:
                        break
        logs.append(found if found is not None else api._read_log(item, **opts))
    return logs[0] if len(logs) == 1 else stitch(logs)


def _start_lrs(log: LossLog, lr: Sequence[float] | None) -> tuple[float, ...]:
    if lr:
        return tuple(float(v) for v in lr)
    from plateau_forensics.api import _first_logged_lrs

    return _first_logged_lrs(log) or (1.0,)


def replay_log(name: str, losses: Any, *, given: Mapping[str, Any] | None = None,
               options: Mapping[str, str] | None = None, min_delta: float | None = None,
               lr: Sequence[float] | None = None, **log_options: Any) -> Any:
    """Replay a log under the rule set ``name`` (``plateau-trace LOG --rules NAME``).

    Args:
        name: a registered rule set.
        losses: a log path, a list of paths (written one after another), or anything ``read_losses`` reads.
        given: hyperparameters under torch's names (only those the user chose; the rest keep the library's
            defaults). ``mode="auto"`` asks for the library's own name rule.
        options: the library's own constructor arguments by its names, as strings (``--rule-option``).
        min_delta: an absolute threshold (``--min-delta``), for the libraries that have one (Keras, fastai).
        lr: each param group's lr before the first step; default the log's first logged lrs, else 1.0.
        **log_options: ``metric``, ``epoch_column``, ``lr_columns`` as for ``read_losses``.

    Raises:
        ConfigError: an unknown rule set, or a configuration the library rejects.
        LossLogError: the log cannot be read.

    Example:
        >>> t = replay_log("fastai", [1.0, 1.0, 0.5], given={"mode": "min"}, lr=[0.1])  # 'metric': max
        >>> [s.event.value for s in t.steps], t.lrs
        (['improved', 'reduced', 'improved'], (0.01,))
    """
    return compare_log([name], losses, given=given, options=options, min_delta=min_delta, lr=lr,
                       **log_options)[0][1]


#: The rule sets whose library has an absolute ``min_delta`` (``--min-delta``).
MIN_DELTA = ("keras", "fastai")


def _options_for(name: str, options: Mapping[str, str], names: Sequence[str]) -> dict[str, str]:
    """The ``--rule-option`` values for rule set ``name``: ``KEY`` goes to every rule set but torch (whose
    hyperparameters are its own options), ``NAME.KEY`` to that rule set only."""
    out: dict[str, str] = {}
    for k, v in options.items():
        prefix, dot, key = k.partition(".")
        if dot:
            if prefix not in names:
                raise ConfigError(f"--rule-option {k}: {prefix!r} is not among the rule sets "
                                  f"{', '.join(names)}")
            if prefix == name:
                out[key] = v
        elif name != "torch":
            out[k] = v
    return out


def compare_log(rule_names: Sequence[str], losses: Any, *, given: Mapping[str, Any] | None = None,
                options: Mapping[str, str] | None = None, min_delta: float | None = None,
                lr: Sequence[float] | None = None, **log_options: Any) -> list[tuple[str, Any]]:
    """The same log and hyperparameters replayed under every rule set in ``rule_names``, in order.

    Every rule set gets the torch-named ``given`` values (each maps them to its own names or refuses what
    it lacks) and keeps its library's defaults for the rest; ``options`` are library names, ``NAME.KEY``
    for one rule set only. ``min_delta`` goes to Keras and fastai. Keras and torch are compared like with
    like: when Keras is among the rule sets and no ``threshold`` was given, torch gets Keras's absolute
    ``min_delta`` (default 1e-4) as an ``abs`` threshold.

    Returns:
        ``[(name, trace), ...]``.

    Raises:
        ConfigError: an unknown rule set, ``min_delta`` with none of Keras and fastai, or what a library
            rejects (the message names it).
    """
    sets = [get(n) for n in rule_names]
    names = [rs.name for rs in sets]
    if min_delta is not None and not set(MIN_DELTA) & set(names):
        raise ConfigError(f"--min-delta is the absolute threshold of {' and '.join(MIN_DELTA)}; "
                          + ("optax has rtol/atol (--rule-option atol=VALUE)" if "optax" in names else
                             "torch's is --threshold with --threshold-mode abs"))
    modules = [rs.load() for rs in sets]
    log = _read(modules, losses, log_options)
    lrs = _start_lrs(log, lr)
    given = dict(given or {})
    options = dict(options or {})
    out = []
    for rs, mod in zip(sets, modules, strict=True):
        mine = dict(given)
        opts = _options_for(rs.name, options, names)
        if rs.name == "torch":
            if opts:
                raise ConfigError(f"torch's hyperparameters are its options (--patience, ...), not "
                                  f"--rule-option {', '.join(opts)}")
            if "keras" in names and "threshold" not in mine and "threshold_mode" not in mine:
                delta = min_delta if min_delta is not None else float(options.get("keras.min_delta", 1e-4))
                mine["threshold"], mine["threshold_mode"] = delta, "abs"
        elif min_delta is not None and rs.name in MIN_DELTA:
            opts.setdefault("min_delta", repr(float(min_delta)))
        try:
            config = mod.configure(mine, opts, monitor=log.metric_column)
        except ConfigError as exc:
            if len(names) == 1:
                raise
            raise ConfigError(f"{rs.name}: {exc}") from None
        trace = mod.replay(config, log, lrs)
        try:
            trace.log = log
        except AttributeError:  # a trace type without a log slot
            pass
        out.append((rs.name, trace))
    return out


# -- rendering --------------------------------------------------------------------------------------------
def _fmt(x: Any) -> str:
    """Numbers as every table shows them (``report.g``), anything else as its text."""
    if x is None or isinstance(x, (int, float)):
        from plateau_forensics.report import g

        return g(x)
    return str(x)


def _lr_text(lrs: Sequence[float]) -> str:
    return "/".join(_fmt(v) for v in lrs)


_MARK = {"improved": "best", "bad": "bad", "cooldown": "cool", "reduced": "LR", "suppressed": "lr=",
         "accumulated": "avg"}
_SHORT = {"num_bad_epochs": "num_bad", "cooldown_counter": "cooldown", "cooldown_count": "cooldown",
          "plateau_count": "plateau"}


def _event(s: Any) -> str:
    e = s.event
    return "accumulated" if e is None else e.value


def _counters(name: str) -> tuple[str, ...]:
    return RULESETS[name].counters if name in RULESETS else ()


def _config_text(config: Any) -> str:
    """``k=v ...`` of ``config.to_dict()``, a mode ``auto`` followed by the direction it resolved to."""
    text = " ".join(f"{k}={v}" for k, v in config.to_dict().items())
    if getattr(config, "mode", None) == "auto" and hasattr(config, "direction"):
        text = text.replace("mode=auto", f"mode=auto({config.direction})", 1)
    return text


def _summary(t: Any) -> list[tuple[str, str]]:
    lines = [("rules", f"{t.rules}: {RULESETS[t.rules].summary if t.rules in RULESETS else t.rules}"),
             ("config", _config_text(t.config))]
    reds = [s for s in t.steps if _event(s) in ("reduced", "suppressed")]
    if len(t):
        if reds:
            lines.append(("reductions", ", ".join(
                f"epoch {_fmt(s.epoch)} (lr {_lr_text(s.lr_in)}->{_lr_text(s.lr)}"
                f"{', no change' if _event(s) == 'suppressed' else ''})" for s in reds[:12])
                + (f", ... ({len(reds)} in all)" if len(reds) > 12 else "")))
        else:
            lines.append(("reductions", "none"))
        last = t.steps[len(t) - 1]
        state = {k: v for k, v in last.as_dict().items() if k in _counters(t.rules)}
        lines.append(("end state", " ".join([f"best={_fmt(last.best)}", *(f"{k}={_fmt(v)}" for k, v in
                                                                          state.items()),
                                             f"lr={_lr_text(last.lr)}"])))
    for n in getattr(t, "notes", ()):
        lines.append(("note", n))
    return lines


def _rows(t: Any) -> tuple[list[str], list[list[str]]]:
    cols = _counters(t.rules)
    headers = ["epoch", "metric", "best", *(_SHORT.get(c, c) for c in cols), "lr", "event"]
    rows = []
    for s in t.steps:
        d = s.as_dict()
        rows.append([_fmt(s.epoch), _fmt(s.metric), _fmt(s.best), *(_fmt(d.get(c)) for c in cols),
                     _lr_text(s.lr), _MARK[_event(s)]])
    return headers, rows


def render(t: Any, fmt: str = "grid", *, width: int = 100, style: str = "simple") -> str:
    """A replay under a rule set other than torch's, in one of the CLI's formats.

    ``grid`` and ``table`` are one row per step (the library's counters by its names) followed by the
    summary lines; ``csv`` has every field, floats written with ``repr``; ``json`` is the JSON contract's
    object with ``rules`` set; ``markdown`` the summary and a GitHub table; ``explain`` one line per step.
    """
    if fmt == "json":
        from plateau_forensics.report import to_json

        return to_json(t)
    if fmt == "explain":
        return "\n".join(f"{_fmt(s.epoch)}: {s.reason}" for s in t.steps)
    if fmt == "csv":
        records = t.to_records()
        keys = list(dict.fromkeys(k for r in records for k in r)) or ["epoch", "metric", "lr", "event"]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(keys)
        for r in records:
            w.writerow([_cell(r.get(k)) for k in keys])
        return buf.getvalue()
    from tabulate import tabulate

    headers, rows = _rows(t)
    summary = _summary(t)
    if fmt == "markdown":
        out = ["**plateau-trace**", "", "| | |", "|---|---|"]
        out += [f"| {k} | {v.replace('|', chr(92) + '|')} |" for k, v in summary]
        if rows:
            out += ["", "**Steps**", "",
                    tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)]
        return "\n".join(out)
    tablefmt = style if fmt == "table" else "simple"
    body = tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True) if rows else ""
    pad = max((len(k) for k, _ in summary), default=0)
    tail = "\n".join(f"{k.ljust(pad)}  {v}" for k, v in summary)
    return (body + "\n\n" if body else "") + tail


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "/".join(_cell(x) for x in v)
    return str(v)


def _differ(a: float, b: float) -> bool:
    """Different beyond float32 rounding (Keras and optax keep lrs in float32, torch and fastai in
    float64)."""
    if a == b or (math.isnan(a) and math.isnan(b)):
        return False
    from plateau_forensics.engine import _round_float32 as f32

    if f32(a) == f32(b):
        return False
    return not math.isclose(a, b, rel_tol=1e-5, abs_tol=0.0)


def first_divergence(a: Any, b: Any) -> int | None:
    """The index of the first step whose lr after the step differs between two traces, or None.

    The lrs differ when one trace changed its lr at that step and the other did not, or when they disagree
    beyond float32 rounding (relative 1e-5). Every param group present in both is compared; only the
    common length of the traces is.
    """
    for i in range(min(len(a), len(b))):
        sa, sb = a.steps[i], b.steps[i]
        n = min(len(sa.lr), len(sb.lr))
        for g in range(n):
            if (sa.lr_in[g] != sa.lr[g]) != (sb.lr_in[g] != sb.lr[g]) or _differ(sa.lr[g], sb.lr[g]):
                return i
    return None


def render_compare(pairs: Sequence[tuple[str, Any]], fmt: str = "simple") -> str:
    """Every replay in one table, the first divergence from the first rule set marked, then a summary.

    Args:
        pairs: ``[(rule-set name, trace), ...]`` as ``compare_log`` returns; the first is the reference.
        fmt: a tabulate format name; ``"table"``/``"markdown"`` mean ``"simple"``/``"github"``.

    Returns:
        The table, a blank line, then for two rule sets ``first divergence: epoch N (...)`` or
        ``no divergence ...``; for more, one such line per rule set after the first, prefixed with
        ``NAME vs FIRST:``; then each rule set's configuration, one line each (``NAME  key=value ...``).
    """
    from tabulate import tabulate

    ref_name, ref = pairs[0]
    n = min(len(t) for _, t in pairs)
    divs = {name: first_divergence(ref, t) for name, t in pairs[1:]}
    headers = ["epoch", "metric"]
    for name, _ in pairs:
        headers += [f"{name} lr", *(f"{name} {_SHORT.get(c, c)}" for c in _counters(name)), f"{name} event"]
    headers.append("")
    rows = []
    for i in range(n):
        s0 = ref.steps[i]
        row = [_fmt(s0.epoch), _fmt(s0.metric)]
        for name, t in pairs:
            s = t.steps[i]
            d = s.as_dict()
            row += [_lr_text(s.lr), *(_fmt(d.get(c)) for c in _counters(name)), _MARK[_event(s)]]
        marks = [name for name, k in divs.items() if k == i]
        which = "" if len(pairs) == 2 else " (" + ", ".join(marks) + ")"
        row.append("<< diverge" + which if marks else "")
        rows.append(row)
    style = {"table": "simple", "markdown": "github"}.get(fmt, fmt)
    body = tabulate(rows, headers=headers, tablefmt=style, disable_numparse=True)
    tails = []
    for name, t in pairs[1:]:
        k = divs[name]
        if k is None:
            line = f"no divergence: the lr agrees after every one of {n} epochs"
        else:
            a, b = ref.steps[k], t.steps[k]
            line = (f"first divergence: epoch {_fmt(a.epoch)} ({ref_name} lr "
                    f"{_lr_text(a.lr_in)}->{_lr_text(a.lr)} [{_event(a)}], {name} lr "
                    f"{_lr_text(b.lr_in)}->{_lr_text(b.lr)} [{_event(b)}])")
        tails.append(line if len(pairs) == 2 else f"{name} vs {ref_name}: {line}")
    w = max(len(name) for name, _ in pairs)
    for name, t in pairs:  # what each library ran with: its own defaults fill what was not given
        tails.append(f"{name.ljust(w)}  {_config_text(t.config)}")
    return body + "\n\n" + "\n".join(tails)
