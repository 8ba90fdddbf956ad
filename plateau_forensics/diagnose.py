"""Findings: anomalies and LR surprises a trace reveals, each with evidence and a fix.

Every finding comes from evidence in the inputs (the saved state, the optimizer lrs, the log), never
from a file name. Codes are stable: tools and CI gates match on them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["info", "warning"]


@dataclass(frozen=True)
class Finding:
    """One diagnosis: a stable ``code``, how serious, where, what we saw, and what to change."""

    code: str
    severity: Severity
    epoch: float | None
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The JSON contract's finding object."""
        return {"code": self.code, "severity": self.severity, "epoch": self.epoch, "message": self.message,
                "evidence": dict(self.evidence), "fix": self.fix}


def log_findings(log: Any) -> list[Finding]:
    """Findings for anomalies the loss log itself shows (duplicated, unsorted or missing epochs, NaN)."""
    out = []
    for a in getattr(log, "anomalies", ()):
        code = {"non-finite-metric": "nan-metric"}.get(a.kind, a.kind)
        severity: Severity = "warning" if a.kind in ("duplicate-epochs", "unsorted-epochs") else "info"
        fix = {
            "duplicate-epochs": "the last run's rows are replayed; check the crash point",
            "nan-metric": "torch counts NaN as a bad epoch; fix the metric or expect earlier reductions",
        }.get(code, "")
        out.append(Finding(code, severity, a.epochs[0] if a.epochs else None, a.message,
                           {"epochs": list(a.epochs)}, fix))
    return out


def partial_state_finding(checkpoint: Any) -> list[Finding]:
    """A saved state without counters: say what a resume from it loses."""
    st = checkpoint.state
    if not st.partial:
        return []
    lost = [k for k in ("num_bad_epochs", "cooldown_counter", "patience", "factor", "cooldown", "min_lrs")
            if k in st.missing]
    return [Finding(
        "partial-state", "warning", checkpoint.epoch,
        f"the saved plateau state at {checkpoint.key_path or '<root>'} has only {', '.join(st.keys)}; "
        f"a resume starts {', '.join(lost)} from scratch",
        {"keys": list(st.keys), "missing": list(st.missing)},
        "save the wrapped torch scheduler's full state_dict() (timm: scheduler.lr_scheduler.state_dict())",
    )]


def lr_divergence(trace: Any, log: Any, from_index: int) -> list[Finding]:
    """The first row at/after ``from_index`` whose logged lr differs from the replayed lr for that epoch."""
    if log is None or log.lrs is None:
        return []
    for i in range(from_index, len(trace)):
        logged = log.lrs[i]
        expected = trace.step(i).lr_in
        if any(v is None for v in logged) or len(logged) != len(expected):
            continue
        if not all(math.isclose(a, b, rel_tol=1e-6, abs_tol=0.0) for a, b in zip(logged, expected)):
            s = trace.step(i)
            return [Finding(
                "lr-diverges", "warning", s.epoch,
                f"epoch {s.epoch}: the log's lr {list(logged)} differs from {list(expected)}, the lr a correctly "
                "restored scheduler gives",
                {"epoch": s.epoch, "logged_lr": list(logged), "replayed_lr": list(expected)},
                "load both optimizer.state_dict() and scheduler.state_dict() when resuming",
            )]
    return []
