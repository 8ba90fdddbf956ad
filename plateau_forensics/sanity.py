"""Saved states torch would load but its own ``step()`` can never produce, and what the reader neutralised.

``check_checkpoint`` returns plain ``(code, severity, message, evidence)`` tuples; diagnose turns them into
findings. Every rule is an invariant of torch 2.13's ``ReduceLROnPlateau.step`` (quoted where it is used).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plateau_forensics.loader import Checkpoint

__all__ = ["HOSTILE_MODULES", "check_checkpoint"]

Problem = tuple[str, str, str, dict[str, Any]]

#: Modules and builtins whose names in a checkpoint mean code execution was attempted.
HOSTILE_MODULES = (
    "os",
    "posix",
    "nt",
    "subprocess",
    "pty",
    "shutil",
    "socket",
    "importlib",
    "runpy",
    "code",
    "codeop",
    "ctypes",
    "marshal",
    "pickle",
    "_pickle",
    "types",
    "timeit",
    "cProfile",
    "profile",
    "pdb",
    "bdb",
    "webbrowser",
    "sys",
    "io",
    "_io",
    "codecs",
    "pathlib",
    "copyreg",
    "operator",
    "functools",
    "multiprocessing",
    "asyncio",
    "signal",
    "tempfile",
    "glob",
)
_HOSTILE_BUILTINS = {
    "eval",
    "exec",
    "compile",
    "open",
    "getattr",
    "setattr",
    "delattr",
    "__import__",
    "globals",
    "locals",
    "vars",
    "input",
    "breakpoint",
    "map",
    "filter",
    "apply",
    "execfile",
}
_SHOWN = 8  # names listed in a message


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_hostile(name: str) -> bool:
    base = name.split("(", 1)[0]
    module, _, attr = base.rpartition(".")
    top = module.split(".", 1)[0]
    if top in ("builtins", "__builtin__"):
        return attr.split(".", 1)[0] in _HOSTILE_BUILTINS
    return top in HOSTILE_MODULES or "numpy.testing" in module or base.startswith("<legacy module")


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _hyperparameters(raw: Mapping[str, Any]) -> list[Problem]:
    out: list[Problem] = []
    factor = raw.get("factor")
    if _is_number(factor) and (math.isnan(factor) or factor <= 0):
        # _reduce_lr: new_lr = max(old_lr * factor, min_lr): NaN gives NaN lrs, <= 0 drops the lr to min_lr at
        # once
        what = (
            "NaN: every reduction would make the lr NaN"
            if math.isnan(factor)
            else ("<= 0: every reduction drops the lr straight to min_lr")
        )
        out.append(
            (
                "impossible-factor",
                "warning",
                f"factor is {factor!r}; torch accepts it (it checks only factor < 1.0), but {what}",
                {"factor": factor},
            )
        )
    for key in ("patience", "cooldown"):
        v = raw.get(key)
        if _is_number(v) and (math.isnan(v) or v < 0 or v != int(v)):
            out.append(
                (
                    f"impossible-{key}",
                    "warning",
                    f"{key} is {v!r}: a count of steps is a whole number >= 0",
                    {key: v},
                )
            )
    eps = raw.get("eps")
    if _is_number(eps) and (math.isnan(eps) or eps < 0 or eps >= 1):
        # _reduce_lr applies a reduction only if old_lr - new_lr > eps
        out.append(
            (
                "impossible-eps",
                "warning",
                f"eps is {eps!r}: a reduction is applied only when it changes the "
                "lr by more than eps, so "
                + (
                    "no reduction is ever applied to an lr below 1"
                    if eps >= 1
                    else "the comparison is meaningless"
                ),
                {"eps": eps},
            )
        )
    threshold, mode = raw.get("threshold"), raw.get("threshold_mode")
    if _is_number(threshold) and (
        math.isnan(threshold) or threshold < 0 or (mode == "rel" and threshold >= 1)
    ):
        out.append(
            (
                "impossible-threshold",
                "warning",
                f"threshold is {threshold!r} with threshold_mode={mode!r}: "
                "the bar to beat makes improvement impossible or meaningless",
                {"threshold": threshold},
            )
        )
    for key in ("min_lrs", "_last_lr"):
        values = raw.get(key)
        if isinstance(values, list):
            bad = [v for v in values if _is_number(v) and (math.isnan(v) or v < 0)]
            if bad:
                out.append(
                    (
                        f"impossible-{key.strip('_').replace('_', '-')}",
                        "warning",
                        f"{key} holds {bad[0]!r}: an lr or lr floor is never negative or NaN",
                        {key: values},
                    )
                )
    worse = raw.get("mode_worse")
    if _is_number(worse) and raw.get("mode") in ("min", "max"):
        expected = math.inf if raw["mode"] == "min" else -math.inf
        if worse != expected:
            # load_state_dict recomputes it (_init_is_better), so the replay is unaffected
            out.append(
                (
                    "inconsistent-mode-worse",
                    "info",
                    f"mode_worse is {worse!r} but mode={raw['mode']!r} "
                    f"makes it {expected!r}; torch recomputes it on load",
                    {"mode_worse": worse},
                )
            )
    return out


def _counters(raw: Mapping[str, Any]) -> list[Problem]:
    out: list[Problem] = []
    nb, cc = raw.get("num_bad_epochs"), raw.get("cooldown_counter")
    patience, cooldown = raw.get("patience"), raw.get("cooldown")
    for key, v in (("num_bad_epochs", nb), ("cooldown_counter", cc)):
        if _is_number(v) and (math.isnan(v) or v < 0 or v != int(v)):
            out.append(
                (
                    "impossible-counter",
                    "warning",
                    f"{key} is {v!r}: step() only counts whole steps from 0",
                    {key: v},
                )
            )
    # step(): "if self.num_bad_epochs > self.patience: ... self.num_bad_epochs = 0", so after any step
    # num_bad_epochs <= patience
    if _is_number(nb) and _is_number(patience) and nb > patience >= 0:
        out.append(
            (
                "impossible-counter",
                "warning",
                f"num_bad_epochs={nb!r} exceeds patience={patience!r}: step() "
                "reduces and resets it to 0 as soon as it passes patience",
                {"num_bad_epochs": nb, "patience": patience},
            )
        )
    # a reduction sets cooldown_counter = cooldown; it only decreases after that
    if _is_number(cc) and _is_number(cooldown) and cc > cooldown >= 0:
        out.append(
            (
                "impossible-counter",
                "warning",
                f"cooldown_counter={cc!r} exceeds cooldown={cooldown!r}: a "
                "reduction sets it to cooldown and steps only decrease it",
                {"cooldown_counter": cc, "cooldown": cooldown},
            )
        )
    # in cooldown, step() sets num_bad_epochs = 0; a reduction sets it to 0 too
    if _is_number(nb) and _is_number(cc) and nb > 0 and cc > 0:
        out.append(
            (
                "impossible-counter",
                "warning",
                f"num_bad_epochs={nb!r} while cooldown_counter={cc!r}: "
                "during cooldown step() resets num_bad_epochs to 0",
                {"num_bad_epochs": nb, "cooldown_counter": cc},
            )
        )
    best = raw.get("best")
    if _is_number(best) and math.isnan(best):
        # _is_better(NaN, best) is False in every mode, so best can never become NaN
        out.append(
            (
                "impossible-best",
                "warning",
                "best is NaN: no metric can replace best by NaN (NaN is never "
                "better), and every later metric compares False against it",
                {"best": best},
            )
        )
    last_epoch = raw.get("last_epoch")
    if _is_number(last_epoch) and (
        math.isnan(last_epoch) or last_epoch < -1 or last_epoch != int(last_epoch)
    ):
        out.append(
            (
                "impossible-counter",
                "warning",
                f"last_epoch is {last_epoch!r}: step() counts whole steps (from 0, or -1 before torch 1.4)",
                {"last_epoch": last_epoch},
            )
        )
    return out


def _optimizer(ck: Checkpoint) -> list[Problem]:
    lrs = ck.optimizer_lrs or ()
    bad = [v for v in lrs if math.isnan(v) or v < 0]
    if bad:
        return [
            (
                "impossible-lr",
                "warning",
                f"the optimizer's lr is {bad[0]!r} ({ck.optimizer_key_path})",
                {"optimizer_lrs": list(lrs)},
            )
        ]
    return []


def _provenance(ck: Checkpoint) -> list[Problem]:
    out: list[Problem] = []
    names = list(ck.neutralised)
    hostile = [n for n in names if _is_hostile(n)]
    if hostile:
        out.append(
            (
                "hostile-globals",
                "warning",
                f"the checkpoint names {_names(hostile)}: code that would run "
                "on a plain torch.load(weights_only=False) or pickle.load; none of it ran here",
                {"globals": hostile},
            )
        )
    rest = [n for n in names if n not in hostile]
    if rest:
        out.append(
            (
                "neutralised-globals",
                "info",
                f"{len(rest)} global(s) kept as inert placeholders, not run: {_names(rest)}",
                {"globals": rest},
            )
        )
    anomalies = [n for n in ck.integrity if "not verified: " not in n]
    if anomalies:
        out.append(
            (
                "archive-anomaly",
                "warning",
                f"the file's structure is damaged or unusual: {anomalies[0]}"
                + (f" (and {len(anomalies) - 1} more)" if len(anomalies) > 1 else ""),
                {"anomalies": anomalies},
            )
        )
    return out


def check_checkpoint(ck: Checkpoint) -> list[tuple[str, str, str, dict[str, Any]]]:
    """States torch loads but never produces, hostile or inert globals, and structural anomalies of the file.

    Args:
        ck: what ``load_checkpoint`` returned.

    Returns:
        ``(code, severity, message, evidence)`` per problem, severity ``"warning"`` or ``"info"``; empty for a
        checkpoint a real torch run wrote. Codes: ``impossible-factor``, ``impossible-patience``,
        ``impossible-cooldown``, ``impossible-eps``, ``impossible-threshold``, ``impossible-min-lrs``,
        ``impossible-last-lr``, ``impossible-counter``, ``impossible-best``, ``impossible-lr``,
        ``inconsistent-mode-worse``, ``hostile-globals``, ``neutralised-globals``, ``archive-anomaly``.
    """
    raw = ck.raw
    return [*_hyperparameters(raw), *_counters(raw), *_optimizer(ck), *_provenance(ck)]
