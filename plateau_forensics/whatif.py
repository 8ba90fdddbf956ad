"""What-if: replay several hyperparameter settings over one log and show where their lr timelines part.

``compare(losses, configs)`` returns a ``Comparison`` (traces, ``divergence()``, ``table()``, ``to_frame()``,
``plot()``); ``expand_what_if`` turns ``--what-if patience=2,5,10`` into configs; ``render_comparison``
is what ``plateau-trace --what-if`` prints. (The module is not called ``compare``: importing a submodule
sets it as an attribute of the package, which would shadow the exported ``plateau_forensics.compare``.)
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from plateau_forensics.errors import ConfigError
from plateau_forensics.state import PlateauConfig

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from plateau_forensics.engine import Trace

ComparisonFormat = Literal["table", "markdown", "csv", "json"]
COMPARISON_FORMATS: tuple[str, ...] = ("table", "markdown", "csv", "json")
#: Keys ``--what-if`` accepts: torch's constructor names.
WHAT_IF_KEYS = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr", "eps")


class RulesRunner(Protocol):
    """Replays ``metrics`` under one rule set; the result needs ``.steps``, each with ``.epoch`` and ``.lr``
    (the lr of every param group after that step, a tuple or a float)."""

    def __call__(self, metrics: Sequence[float], epochs: Sequence[float], config: PlateauConfig,
                 lrs: Sequence[float]) -> Any: ...


def _torch_rules(metrics: Sequence[float], epochs: Sequence[float], config: PlateauConfig,
                 lrs: Sequence[float]) -> Trace:
    from plateau_forensics.engine import run

    return run(config, metrics, lrs, epochs=epochs)


#: Rule sets by name. ``"torch"`` is ``torch.optim.lr_scheduler.ReduceLROnPlateau`` (2.13); ``"keras"``
#: (Keras 3's callback, ``keras_rules``) is added on first use with its default ``min_delta`` mapping;
#: ``register_rules("keras", keras_rules.rules_runner(min_delta=...))`` chooses another. Any other rule
#: set plugs in with ``register_rules``.
RULES: dict[str, RulesRunner] = {"torch": _torch_rules}


def register_rules(name: str, runner: RulesRunner) -> None:
    """Make ``rules=name`` available to ``compare``; ``runner`` follows ``RulesRunner``."""
    RULES[name] = runner


def _runner(name: str) -> RulesRunner:
    if name == "keras" and name not in RULES:  # Keras 3's callback rules, in pure Python (no keras import)
        from plateau_forensics.keras_rules import rules_runner

        RULES["keras"] = rules_runner()
    if name not in RULES:
        raise ConfigError(f"unknown rules {name!r}: available {', '.join(sorted(RULES))}")
    return RULES[name]


# -- --what-if --------------------------------------------------------------------------------------
def _parse_value(key: str, text: str) -> Any:
    text = text.strip()
    try:
        if key in ("patience", "cooldown"):
            return int(text)
        if key in ("mode", "threshold_mode"):
            return text
        if key == "min_lr" and "/" in text:  # one floor per param group, as the grid writes lrs
            return tuple(float(v) for v in text.split("/"))
        return float(text)
    except ValueError:
        kind = "an integer" if key in ("patience", "cooldown") else "a number"
        raise ConfigError(f"--what-if {key}: {text!r} is not {kind}") from None


def parse_what_if(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["patience=2,5", "factor=0.5"]`` -> ``{"patience": [2, 5], "factor": [0.5]}``.

    A key given twice collects the values of both, in order, without repeats. ``min_lr`` takes one
    value per param group joined with ``/`` (``min_lr=1e-5/0.1``).

    Raises:
        ConfigError: an item without ``=``, an unknown key, an empty or non-numeric value.
    """
    out: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in WHAT_IF_KEYS:
            keys = ", ".join(WHAT_IF_KEYS)
            raise ConfigError(f"--what-if {item!r}: use KEY=V1,V2,... with KEY one of {keys}")
        parts = [v for v in values.split(",") if v.strip()]
        if not parts:
            raise ConfigError(f"--what-if {item!r}: no values after '='")
        bucket = out.setdefault(key, [])
        for v in parts:
            value = _parse_value(key, v)
            if value not in bucket:
                bucket.append(value)
    return out


def expand_what_if(
    items: Sequence[str], base: PlateauConfig | None = None, *, include_base: bool = False
) -> list[PlateauConfig]:
    """The cartesian product of the ``--what-if`` values, each applied to ``base``.

    ``["patience=2,5,10", "factor=0.5,0.8"]`` gives 6 configs, ordered like nested loops with the first
    key outermost: (2, 0.5), (2, 0.8), (5, 0.5), ... Keys not named keep ``base``'s value.

    Args:
        items: ``KEY=V1,V2,...`` strings (see ``parse_what_if``).
        base: the config the overrides apply to; torch's defaults when None.
        include_base: put ``base`` itself first (the reference the others are compared with) and leave
            out any product config equal to it.

    Raises:
        ConfigError: a bad item, or a combination torch would reject (e.g. ``factor=1.5``).
    """
    base = base if base is not None else PlateauConfig()
    grid = parse_what_if(items)
    keys = list(grid)
    configs: list[PlateauConfig] = [base] if include_base else []
    for combo in itertools.product(*(grid[k] for k in keys)):
        cfg = _apply(base, dict(zip(keys, combo, strict=False)))
        if cfg not in configs:
            configs.append(cfg)
    return configs


def _apply(base: PlateauConfig, overrides: Mapping[str, Any]) -> PlateauConfig:
    names = {f.name for f in fields(PlateauConfig)}
    unknown = [k for k in overrides if k not in names]
    if unknown:
        raise ConfigError(f"unknown hyperparameter {unknown[0]!r}: use one of {', '.join(WHAT_IF_KEYS)}")
    try:
        return replace(base, **overrides)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{dict(overrides)}: {exc}") from exc


# -- the comparison ---------------------------------------------------------------------------------
def _labels(configs: Sequence[PlateauConfig], rules: Sequence[str]) -> list[str]:
    """``key=value`` for every hyperparameter that varies across the set (plus the rules when they vary)."""
    varying = [f.name for f in fields(PlateauConfig) if len({repr(getattr(c, f.name)) for c in configs}) > 1]
    out = []
    for k, (c, r) in enumerate(zip(configs, rules, strict=False)):
        parts = [f"{name}={_value_text(getattr(c, name))}" for name in varying]
        if len(set(rules)) > 1:
            parts.append(f"rules={r}")
        out.append(" ".join(parts) or f"config {k + 1}")
    return out


def _value_text(v: Any) -> str:
    from plateau_forensics.report import g

    if isinstance(v, tuple):
        return "/".join(g(x) for x in v)
    return g(v) if isinstance(v, float) else str(v)


#: Two lrs closer than this (relative) are the same lr: Keras keeps its lr in float32, torch in float64.
LR_REL_TOL = 1e-6


def same_lr(a: Sequence[float], b: Sequence[float]) -> bool:
    """Equal group by group within ``LR_REL_TOL`` (a real reduction changes an lr by far more)."""
    return len(a) == len(b) and all(x == y or math.isclose(x, y, rel_tol=LR_REL_TOL)
                                    for x, y in zip(a, b, strict=True))


def _lr_tuple(lr: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in lr) if isinstance(lr, (tuple, list)) else (float(lr),)


@dataclass
class Comparison:
    """Several replays of the same metrics; index 0 is the reference the others are compared with.

    Attributes:
        labels: one short name per config (the hyperparameters that vary, ``key=value``).
        configs: the hyperparameters of each replay.
        rules: the rule set of each replay (``"torch"``).
        traces: what each rule set returned (a ``Trace`` for torch).
        epochs: the epoch label of each step (shared).
        metrics: the metric of each step (shared).
        initial_lrs: every group's lr before the first step (shared).
    """

    labels: list[str]
    configs: list[PlateauConfig]
    rules: list[str]
    traces: list[Any]
    epochs: tuple[float, ...]
    metrics: tuple[float, ...]
    initial_lrs: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.traces)

    def lr_timeline(self, k: int) -> list[tuple[float, ...]]:
        """Config ``k``'s lrs after every step (one tuple of groups per step)."""
        tr = self.traces[k]
        cols = getattr(tr, "_cols", None)
        if cols is not None:  # a torch Trace: read the column, no Step objects
            return list(cols.lrs)
        return [_lr_tuple(s.lr) for s in tr.steps]

    def reductions(self, k: int) -> list[tuple[float, tuple[float, ...], tuple[float, ...]]]:
        """Config ``k``'s lr changes as ``(epoch, lr_before, lr_after)``."""
        out, prev = [], self.initial_lrs
        for e, lr in zip(self.epochs, self.lr_timeline(k), strict=False):
            if not same_lr(lr, prev):
                out.append((e, prev, lr))
            prev = lr
        return out

    def divergence(self) -> dict[str, float | None]:
        """For every config after the first: the first epoch whose lr (after the step) differs from
        config 0's (beyond ``LR_REL_TOL``), or None when the timelines agree throughout."""
        ref = self.lr_timeline(0)
        out: dict[str, float | None] = {}
        for k in range(1, len(self)):
            first = None
            for e, a, b in zip(self.epochs, ref, self.lr_timeline(k), strict=False):
                if not same_lr(a, b):
                    first = e
                    break
            out[self.labels[k]] = first
        return out

    def table(self) -> list[dict[str, Any]]:
        """One row per epoch where some config's lr changes or the configs' lrs start to differ.

        Each row: ``epoch``, ``metric``, then for every label the lrs after that step (a tuple of groups),
        then ``changed`` (labels whose lr changed at that step) and ``differ`` (not all configs agree).
        """
        lines = [self.lr_timeline(k) for k in range(len(self))]
        rows = []
        prev = [self.initial_lrs] * len(self)
        prev_differ = False
        for i, e in enumerate(self.epochs):
            now = [line[i] for line in lines]
            changed = [self.labels[k] for k in range(len(self)) if not same_lr(now[k], prev[k])]
            differ = any(not same_lr(v, now[0]) for v in now[1:])
            if changed or differ != prev_differ:
                row: dict[str, Any] = {"epoch": e, "metric": self.metrics[i]}
                row.update({lab: v for lab, v in zip(self.labels, now, strict=False)})
                row["changed"] = changed
                row["differ"] = differ
                rows.append(row)
            prev, prev_differ = now, differ
        return rows

    def to_frame(self) -> pd.DataFrame:
        """Every step: ``epoch``, ``metric`` and one lr column per config (``label`` or ``label[g]``)."""
        import pandas as pd

        data: dict[str, Any] = {"epoch": list(self.epochs), "metric": list(self.metrics)}
        for k, lab in enumerate(self.labels):
            line = self.lr_timeline(k)
            groups = max((len(v) for v in line), default=1)
            if groups == 1:
                data[lab] = [v[0] for v in line]
            else:
                for gi in range(groups):
                    data[f"{lab}[{gi}]"] = [v[gi] if gi < len(v) else math.nan for v in line]
        return pd.DataFrame(data)

    def plot(
        self, path: str | os.PathLike[str] | None = None, *, ax: Axes | None = None, title: str | None = None,
        figsize: tuple[float, float] = (11.0, 5.5), metric: bool = True, group: int = 0,
    ) -> Figure:
        """One overlaid lr plot (log axis), one line style and marker per config, divergences marked.

        Args:
            path: save there too (``.png``, ``.svg``, ``.pdf``).
            ax: draw the lr lines into this Axes (no metric panel).
            title: the figure title; the shared hyperparameters by default.
            figsize: inches, for a new figure.
            metric: a small metric panel above the lr panel (new figures only).
            group: which param group's lr to draw when there are several.
        """
        from plateau_forensics.plot import plot_comparison

        return plot_comparison(self, path, ax=ax, title=title, figsize=figsize, metric=metric, group=group)

    def __repr__(self) -> str:
        return f"<Comparison of {len(self)} configs over {len(self.epochs)} steps: {', '.join(self.labels)}>"

    def _repr_html_(self) -> str:
        import html

        return "<pre>" + html.escape(render_comparison(self, "table")) + "</pre>"


def _metrics_epochs(losses: Any) -> tuple[list[float], list[Any], Any]:
    """(metrics, epochs, source) from a Trace, a LossLog, a list of floats or what ``read_losses`` reads."""
    if hasattr(losses, "_cols") and hasattr(losses, "starts"):  # a Trace
        return [float(m) for m in losses.metrics], list(losses.epochs), losses
    if hasattr(losses, "metrics") and hasattr(losses, "epochs"):  # a LossLog
        return [float(m) for m in losses.metrics], list(losses.epochs), losses
    if isinstance(losses, Sequence) and not isinstance(losses, str) and all(
            isinstance(v, (int, float)) for v in losses):
        values = [float(v) for v in losses]
        return values, list(range(1, len(values) + 1)), None
    from plateau_forensics.losses import read_losses

    log = read_losses(losses)
    return [float(m) for m in log.metrics], [float(e) for e in log.epochs], log


def compare(
    losses: Any,
    configs: Sequence[PlateauConfig | Mapping[str, Any]],
    *,
    lrs: Sequence[float] | None = None,
    rules: str | Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    base: PlateauConfig | None = None,
) -> Comparison:
    """Replay the same metrics under several hyperparameter settings (and rule sets).

    Every replay starts from a fresh scheduler at the first metric. Given a ``Trace`` (e.g. from
    ``pf.trace(ckpt, log)``), its metrics, epochs, config (the ``base``) and initial lrs are reused; the
    comparison replays them afresh and does not reproduce a resume from the saved state.

    Args:
        losses: a ``Trace``, a ``LossLog``, a list of floats, or anything ``read_losses`` accepts.
        configs: ``PlateauConfig`` objects, or dicts of overrides applied to ``base``
            (``{"patience": 5}``); the first is the reference for ``divergence()``.
        lrs: every group's lr before the first step; the Trace's, the log's first lr row, else ``[1.0]``.
        rules: ``"torch"`` (default), or a list of rule-set names: every config runs under every rule set.
        labels: one name per replay; by default ``key=value`` of the hyperparameters that vary.
        base: what dict overrides apply to; the Trace's config, else torch's defaults.

    Returns:
        A ``Comparison``.

    Raises:
        ConfigError: an unknown rule set, an unknown hyperparameter, a config torch would reject, or
            ``labels`` of the wrong length.

    Example:
        >>> cmp = compare([1.0, 1.1, 1.2, 1.3, 1.4], [{"patience": 1}, {"patience": 2}], lrs=[0.1])
        >>> cmp.divergence()
        {'patience=2': 3}
    """
    metrics, epochs, source = _metrics_epochs(losses)
    is_trace = hasattr(source, "_cols") and hasattr(source, "starts")
    if base is None:
        base = source.config if is_trace else PlateauConfig()
    if lrs is None:
        if is_trace:
            lrs = source.starts[0].lrs
        elif source is not None and getattr(source, "lrs", None) and all(
                v is not None for v in source.lrs[0]):
            lrs = tuple(float(v) for v in source.lrs[0])
        else:
            lrs = (1.0,)
    names = [rules] if isinstance(rules, str) else list(rules) if rules else ["torch"]
    runners = {n: _runner(n) for n in names}
    cfgs = [c if isinstance(c, PlateauConfig) else _apply(base, c) for c in configs]
    if not cfgs:
        raise ConfigError("compare needs at least one config")
    pairs = [(c, n) for c in cfgs for n in names]
    if labels is not None and len(labels) != len(pairs):
        raise ConfigError(f"{len(labels)} labels for {len(pairs)} replays")
    traces = [runners[n](metrics, epochs, c, lrs) for c, n in pairs]
    lab = list(labels) if labels is not None else _labels([c for c, _ in pairs], [n for _, n in pairs])
    return Comparison(labels=lab, configs=[c for c, _ in pairs], rules=[n for _, n in pairs], traces=traces,
                      epochs=tuple(epochs), metrics=tuple(metrics), initial_lrs=tuple(float(v) for v in lrs))


# -- rendering ----------------------------------------------------------------------------------------
def _lr_text(v: Sequence[float]) -> str:
    from plateau_forensics.report import _lr_cell

    return _lr_cell(v)


def _shared_config(cmp: Comparison) -> str:
    """The hyperparameters every config shares, torch's names."""
    keep = [f.name for f in fields(PlateauConfig) if len({repr(getattr(c,
                                                                       f.name)) for c in cmp.configs}) == 1]
    return " ".join(f"{k}={_value_text(getattr(cmp.configs[0], k))}" for k in keep)


def summary_rows(cmp: Comparison) -> list[dict[str, Any]]:
    """Per config: label, rules, reductions, first divergence from config 0, final lr, config dict."""
    div = cmp.divergence()
    out = []
    for k, lab in enumerate(cmp.labels):
        reds = cmp.reductions(k)
        line = cmp.lr_timeline(k)
        out.append({
            "label": lab, "rules": cmp.rules[k], "config": cmp.configs[k].to_dict(),
            "reductions": [{"epoch": e, "lr_from": list(a), "lr_to": list(b)} for e, a, b in reds],
            "diverges_at": None if k == 0 else div[lab],
            "final_lr": list(line[-1]) if line else list(cmp.initial_lrs),
        })
    return out


def render_comparison(cmp: Comparison, fmt: ComparisonFormat = "table", *, style: str = "simple") -> str:
    """What ``plateau-trace --what-if`` prints.

    - ``table`` / ``markdown``: one row per epoch where an lr changes (``*`` marks the configs that
      reduced at that step), then one line per config: its reductions, where it departs from the first
      config, its final lr.
    - ``csv``: every step, ``epoch, metric`` and one lr column per config (and group); floats as ``repr``.
    - ``json``: ``{"shared", "configs": [...], "changes": [...], "epochs", "metrics", "lrs"}``.

    Raises:
        ConfigError: an unknown ``fmt``.
    """
    from plateau_forensics.report import g, jsonable

    if fmt == "json":
        obj = {
            "shared": _shared_config(cmp),
            "initial_lrs": list(cmp.initial_lrs),
            "configs": summary_rows(cmp),
            "changes": [{**{k: (list(v) if isinstance(v, tuple) else v) for k, v in row.items()}}
                        for row in cmp.table()],
            "epochs": list(cmp.epochs),
            "metrics": list(cmp.metrics),
            "lrs": {lab: [list(v) for v in cmp.lr_timeline(k)] for k, lab in enumerate(cmp.labels)},
        }
        return json.dumps(jsonable(obj), indent=1, allow_nan=False)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        lines = [cmp.lr_timeline(k) for k in range(len(cmp))]
        groups = [max((len(v) for v in line), default=1) for line in lines]
        head = ["epoch", "metric"]
        for lab, n_g in zip(cmp.labels, groups, strict=False):
            head += [lab] if n_g == 1 else [f"{lab}[{gi}]" for gi in range(n_g)]
        w.writerow(head)
        for i, (e, m) in enumerate(zip(cmp.epochs, cmp.metrics, strict=False)):
            row: list[Any] = [_repr(e), _repr(m)]
            for line, n_g in zip(lines, groups, strict=False):
                row += [_repr(line[i][gi]) if gi < len(line[i]) else "" for gi in range(n_g)]
            w.writerow(row)
        return buf.getvalue()
    if fmt not in ("table", "markdown"):
        raise ConfigError(f"unknown format {fmt!r}: use one of {', '.join(COMPARISON_FORMATS)}")
    from tabulate import tabulate

    rows = []
    for row in cmp.table():
        cells = [g(row["epoch"]), g(row["metric"])]
        cells += [_lr_text(row[lab]) + ("*" if lab in row["changed"] else "") for lab in cmp.labels]
        cells.append("yes" if row["differ"] else "")
        rows.append(cells)
    tablefmt = "github" if fmt == "markdown" else style
    head = ["epoch", "metric", *cmp.labels, "differ"]
    body = tabulate(rows, headers=head, tablefmt=tablefmt, disable_numparse=True) if rows else "no lr changes"
    lines = [body, "", "* = reduced at this step (lr after the step shown)",
             f"shared: {_shared_config(cmp)}; initial lr {_lr_text(cmp.initial_lrs)}"]
    for s in summary_rows(cmp):
        reds = s["reductions"]
        when = ", ".join(g(r["epoch"]) for r in reds[:12])
        if len(reds) > 12:
            when += f", ... ({len(reds)} in all)"
        parts = [f"{len(reds)} reduction{'s' if len(reds) != 1 else ''}" + (f" at {when}" if reds else "")]
        if s["diverges_at"] is not None:
            parts.append(f"departs from {cmp.labels[0]} at epoch {g(s['diverges_at'])}")
        elif s["label"] != cmp.labels[0]:
            parts.append(f"same lr as {cmp.labels[0]} throughout")
        parts.append(f"final lr {_lr_text(s['final_lr'])}")
        lines.append(f"{s['label']}: " + "; ".join(parts))
    if fmt == "markdown":
        return body + "\n\n" + "\n".join(f"- {ln}" for ln in lines[2:])
    return "\n".join(lines)


def _repr(x: float) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x)
