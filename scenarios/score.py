"""Score the tool on scenario-matrix cells: its verdict against truth.json, its steps after the checkpoint.

``score_cell(folder)`` runs ``plateau_forensics.trace`` on the cell's checkpoint and logs (in the given order)
and classifies the verdict as the matrix spec says:

* ``right``: the true story is among the reported story and its alternatives, and every other story named
  is one truth declares indistinguishable from it (by construction, or because a re-run of a real scheduler
  under that story reads the same in every input): the verdict names the truth and only stories no input can
  tell from it, in any order;
* ``ambiguous-ok``: "ambiguous", and the true story is among the reported story and its alternatives;
* ``wrong``: a confident (not ambiguous) story other than the true one;
* ``missed``: ambiguous without the true story, or no verdict at all (the tool has no verdict API yet, or
  raised an error: counted, never a crash of the scorer).

``false_alarm``: a warning-level finding whose code is not a true story, on a cell whose stories are all
benign (clean, or only about how the inputs were produced). The step check compares, for every row after the
checkpoint, the tool's best / num_bad_epochs / cooldown_counter / lr with the live state after that row's last
step: a value the tool gives must be right; where truth says the inputs determine it, the tool must give it.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Story codes about how the inputs were produced, not a training mistake (see matrix_cells.BENIGN).
BENIGN = frozenset(
    {
        "lr-logged-after-step",
        "log-starts-mid-run",
        "logs-out-of-order",
        "duplicate-epochs",
        "weights-only-resume",
        "saved-before-step",
        "resume-skipped-step",
    }
)
CLASSES = ("right", "ambiguous-ok", "wrong", "missed")
STATE_FIELDS = ("best", "num_bad_epochs", "cooldown_counter")


def story_label(stories: Iterable[str] | None) -> str:
    """``a+b`` for a set of codes, ``clean`` for none."""
    if stories is None:
        return "(no verdict)"
    s = sorted(stories)
    return "+".join(s) if s else "clean"


@dataclass
class StepCheck:
    """The rows after the checkpoint, compared field by field."""

    rows: int = 0  # truth rows after the checkpoint
    compared: int = 0  # field values the tool gave and truth has
    exact: int = 0
    mismatches: list[str] = field(default_factory=list)
    unknown_but_determinable: list[str] = field(default_factory=list)
    missing_rows: list[str] = field(default_factory=list)
    note: str | None = None  # why the check could not run (no trace, no records)

    @property
    def ok(self) -> bool:
        return self.note is None and not (
            self.mismatches or self.unknown_but_determinable or self.missing_rows
        )


@dataclass
class CellScore:
    """One cell's result."""

    cell: str
    stack: str
    family: str
    position: str
    log_style: dict[str, Any]
    truth: tuple[str, ...]
    story: tuple[str, ...] | None
    alternatives: tuple[tuple[str, ...], ...]
    decide: str | None
    verdict: str  # right | ambiguous-ok | wrong | missed
    false_alarm: bool
    clean: bool  # every true story is benign
    warnings: tuple[str, ...]  # warning-level finding codes
    extra_warnings: tuple[str, ...]  # warning codes that are no true story
    steps: StepCheck
    tool_error: str | None = None
    seconds: float = 0.0

    @property
    def reported(self) -> str:
        """The confusion-matrix column: the story, ``ambiguous``, or ``(no verdict)``."""
        if self.story is None:
            return "(no verdict)"
        return "ambiguous" if self.alternatives else story_label(self.story)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reported"] = self.reported
        d["steps"]["ok"] = self.steps.ok
        return d


# --------------------------------------------------------------------------------------------------


def load_truth(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "truth.json").read_text(encoding="utf-8"))


def _float(v: Any) -> Any:
    if v in ("inf", "-inf", "nan"):
        return float(v)
    return v


def run_tool(folder: Path, truth: dict[str, Any]) -> tuple[Any, str | None]:
    """``plateau_forensics.trace`` on the cell's inputs: (trace, None) or (None, what went wrong)."""
    import plateau_forensics as pf
    from plateau_forensics.errors import ForensicsError

    folder = Path(folder)
    ckpt = folder / truth["checkpoint"]
    logs = [folder / name for name in truth["logs"]]
    losses: Any = None if not logs else (logs[0] if len(logs) == 1 else logs)
    try:
        return pf.trace(ckpt, losses), None
    except ForensicsError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - a crash of the tool is a result to count, not a scorer crash
        return None, f"crash {type(exc).__name__}: {exc}"


def classify(
    truth: dict[str, Any], story: tuple[str, ...] | None, alternatives: tuple[tuple[str, ...], ...]
) -> str:
    """right / ambiguous-ok / wrong / missed, as the matrix spec defines them."""
    if story is None:
        return "missed"
    true = frozenset(truth["stories"])
    expected = {frozenset(x) for x in truth.get("expected_ambiguous_with", [])}
    alts = {frozenset(a) for a in alternatives}
    told = frozenset(story)
    named = alts | {told}
    if true in named and named <= expected | {true}:
        return "right"
    if alts:
        return "ambiguous-ok" if true in alts | {told} else "missed"
    return "wrong"


def verdict_of(t: Any) -> tuple[tuple[str, ...] | None, tuple[tuple[str, ...], ...], str | None]:
    """(story, alternatives, decide) from ``t.verdict``, or (None, (), None) when the tool gives none."""
    v = getattr(t, "verdict", None) if t is not None else None
    if v is None:
        return None, (), None
    story = tuple(sorted(v.story))
    alts = tuple(tuple(sorted(a)) for a in (getattr(v, "alternatives", ()) or ()))
    return story, alts, getattr(v, "decide", None)


def score_cell(folder: Path) -> CellScore:
    """Run the tool on one cell and score it."""
    import time

    folder = Path(folder)
    truth = load_truth(folder)
    t0 = time.perf_counter()
    t, error = run_tool(folder, truth)
    seconds = time.perf_counter() - t0
    story, alts, decide = verdict_of(t)
    if story is None and error is None:
        error = "tool has no verdict"
    true = frozenset(truth["stories"])
    findings = list(getattr(t, "findings", []) or []) if t is not None else []
    warnings = tuple(sorted({f.code for f in findings if getattr(f, "severity", None) == "warning"}))
    extra = tuple(c for c in warnings if c not in true)
    clean = true <= BENIGN
    return CellScore(
        cell=truth["cell"],
        stack=truth["stack"],
        family=truth["params"]["family"],
        position=truth["checkpoint_position"],
        log_style=truth["log_style"],
        truth=tuple(sorted(true)),
        story=story,
        alternatives=alts,
        decide=decide,
        verdict=classify(truth, story, alts),
        false_alarm=clean and bool(extra),
        clean=clean,
        warnings=warnings,
        extra_warnings=extra,
        steps=check_steps(t, truth),
        tool_error=error,
        seconds=seconds,
    )


# --------------------------------------------------------------------------------------------------
# steps after the checkpoint


def _records(t: Any) -> list[dict[str, Any]] | None:
    if t is None:
        return None
    try:
        return list(t.to_records())
    except Exception:  # noqa: BLE001 - an unusable trace is reported by check_steps' note
        return None


def _segments(labels: list[float]) -> list[list[int]]:
    """Index runs whose labels strictly increase (a new run starts where they do not)."""
    out: list[list[int]] = []
    for i, lab in enumerate(labels):
        if not out or lab <= labels[out[-1][-1]]:
            out.append([i])
        else:
            out[-1].append(i)
    return out


def match_rows(records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Truth row index -> the tool's record for it (the last record with that row's epoch label).

    Labels identify rows when the surviving rows' labels are unique; when a run restarts its epochs (a
    weights-only resume), the rows and the records are split where the labels go back and matched run by run.
    """
    surviving = [i for i, r in enumerate(rows) if not r["superseded"]]
    labels = [float(rows[i]["epoch"]) for i in surviving]

    def rec_label(rec: dict[str, Any]) -> float | None:
        e = rec.get("epoch")
        return None if e is None else float(e)

    out: dict[int, dict[str, Any]] = {}
    if len(set(labels)) == len(labels):
        by_label = {lab: i for lab, i in zip(labels, surviving, strict=True)}
        for rec in records:
            i = by_label.get(rec_label(rec))
            if i is not None:
                out[i] = rec
        return out
    rec_labels = [rec_label(r) for r in records]
    rec_segs = _segments([x if x is not None else -math.inf for x in rec_labels])
    row_segs = _segments(labels)
    for rseg, tseg in zip(rec_segs, row_segs, strict=False):
        by_label = {labels[j]: surviving[j] for j in tseg}
        for k in rseg:
            i = by_label.get(rec_labels[k])
            if i is not None:
                out[i] = records[k]
    return out


def _fmt(v: float, style: dict[str, Any]) -> str:
    if style.get("text") == "keras":
        return format(v, ".4f") if abs(v) > 1e-3 else format(v, ".4e")
    return repr(float(v)) if style["float"] == "repr" else format(v, style["float"])


def _lr_list(v: Any) -> list[float] | None:
    if v is None:
        return None
    if isinstance(v, int | float):
        return [float(v)]
    vals = list(v)
    return None if any(x is None for x in vals) else [float(x) for x in vals]


def check_steps(t: Any, truth: dict[str, Any]) -> StepCheck:
    """Compare the tool's per-row state after the checkpoint with the live one (see the module docstring)."""
    rows, history = truth["rows"], truth["history"]
    after = [i for i, r in enumerate(rows) if r["after_checkpoint"] and r["determinable"] is not None]
    chk = StepCheck(rows=len(after))
    records = _records(t)
    if records is None:
        chk.note = "no trace" if t is None else "trace has no records"
        return chk
    matched = match_rows(records, rows)
    style = truth["log_style"]
    verdict = getattr(t, "verdict", None)
    ambiguous = bool(getattr(verdict, "alternatives", ()))
    for i in after:
        row = rows[i]
        where = f"epoch {row['epoch']} (process {row['process']})"
        rec = matched.get(i)
        det = row["determinable"]
        if rec is None:
            if det["state"] or det["lr"]:
                chk.missing_rows.append(where)
            continue
        live = history[row["steps"][-1]]
        want = {**{k: _float(live["state_after"][k]) for k in STATE_FIELDS}, "lr": live["lr_after"]}
        for name in (*STATE_FIELDS, "lr"):
            got = rec.get(name)
            known = det["lr"] if name == "lr" else det["state"]
            if name == "lr":
                got = _lr_list(got)
            if got is None:
                # a value the inputs would fix under the true story, left unknown: a fault, unless the verdict
                # honestly names several stories that fit as well (then the inputs do not fix it)
                if known and not ambiguous:
                    chk.unknown_but_determinable.append(f"{where} {name}")
                continue
            chk.compared += 1
            if name == "best":
                same = float(got) == want[name] or (
                    row["best_logged"] is not None and _fmt(float(got), style) == row["best_logged"]
                )
            elif name == "lr":
                same = got == [float(x) for x in want[name]]
            else:
                same = int(got) == int(want[name])
            if same:
                chk.exact += 1
            else:
                chk.mismatches.append(f"{where} {name}: tool {got!r}, truth {want[name]!r}")
    return chk


# --------------------------------------------------------------------------------------------------
# a whole matrix


def cell_folders(root: Path) -> list[Path]:
    """Every cell folder under ``root`` (those holding a truth.json), sorted."""
    return sorted(p.parent for p in Path(root).rglob("truth.json"))


def score_matrix(root: Path) -> list[CellScore]:
    """``score_cell`` of every cell under ``root``."""
    return [score_cell(f) for f in cell_folders(root)]


def counts(scores: list[CellScore]) -> dict[str, int]:
    """Totals of each verdict class, false alarms and step-check failures."""
    c = Counter(s.verdict for s in scores)
    out = {k: c.get(k, 0) for k in CLASSES}
    out["false-alarm"] = sum(s.false_alarm for s in scores)
    out["clean cells"] = sum(s.clean for s in scores)
    out["no verdict"] = sum(s.story is None for s in scores)
    out["step check failed"] = sum(not s.steps.ok and s.steps.note is None for s in scores)
    out["step check not run"] = sum(s.steps.note is not None for s in scores)
    out["cells"] = len(scores)
    return out


def confusion(scores: list[CellScore]) -> dict[str, Counter]:
    """True story label -> Counter of reported columns."""
    out: dict[str, Counter] = {}
    for s in scores:
        out.setdefault(story_label(s.truth), Counter())[s.reported] += 1
    return out


def main(argv: list[str]) -> int:
    """``python scenarios/score.py CELL_OR_MATRIX_DIR``: one JSON line per cell."""
    for folder in cell_folders(Path(argv[0])):
        print(json.dumps(score_cell(folder).as_dict()))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
