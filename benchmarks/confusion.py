"""Confusion matrix of the tool's verdicts over the scenario matrix of issue 9 (true against reported story).

Generates the matrix (``scenarios/make_matrix.py``: real trainings, truth from the live scheduler) into a
temporary folder, or reads OUTDIR, scores every cell with ``scenarios/score.py`` and prints: the counts of
right / ambiguous-ok / wrong / missed / false alarms, the confusion matrix, the breakdown per axis (stack,
position, log format, float format, lr column, epoch base, files, given logs), the step check after the
checkpoint, and the generation and scoring times. Targets (issue 9): right >= 95%, no false alarm on a clean
run, no confident wrong story, every step after the checkpoint exact where truth says the inputs determine it.

Run: ``python benchmarks/confusion.py [OUTDIR] [--stack torch|lightning|hf|all] [--quick] [--generate]
[--json FILE]``. With OUTDIR holding a matrix it is scored as is (``--generate`` regenerates it). Exits 0
whatever the verdicts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scenarios"))

import score  # noqa: E402 - scenarios/ is put on the path above

CODES = {
    "scheduler-not-restored": "snr",
    "optimizer-not-restored": "onr",
    "lr-overwritten": "lro",
    "saved-before-step": "sbs",
    "resume-skipped-step": "rss",
    "steps-per-row": "spr",
    "wrong-metric": "wm",
    "lr-logged-after-step": "lra",
    "log-starts-mid-run": "mid",
    "weights-only-resume": "wor",
    "duplicate-epochs": "dup",
    "logs-out-of-order": "ooo",
    "external-lr-change": "ext",
}
RIGHT_TARGET = 0.95


def short(stories: tuple[str, ...] | None) -> str:
    """Story codes abbreviated and joined with ``+`` (``clean`` for none)."""
    if stories is None:
        return "(none)"
    return "+".join(sorted(CODES.get(s, s) for s in stories)) or "clean"


def column(s: score.CellScore) -> str:
    """The reported story, ``ambig`` or ``(none)``."""
    if s.story is None:
        return "(none)"
    return "ambig" if s.alternatives else short(s.story)


def generate(out: Path, stack: str, quick: bool) -> float:
    t0 = time.perf_counter()
    cmd = [sys.executable, str(ROOT / "scenarios" / "make_matrix.py"), str(out), "--stack", stack]
    subprocess.run(cmd + (["--quick"] if quick else []), check=True)
    return time.perf_counter() - t0


def table(header: list[str], rows: list[list[object]]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


LOG_CODES = ("lr-logged-after-step", "log-starts-mid-run", "logs-out-of-order")


def confusion_table(scores: list[score.CellScore], strip: tuple[str, ...] = ()) -> str:
    """True story rows x reported columns (numbered, legend below); ``strip``: codes left out of both."""

    def lab(stories: tuple[str, ...] | None) -> str:
        return short(None if stories is None else tuple(x for x in stories if x not in strip))

    def col(s: score.CellScore) -> str:
        return "(none)" if s.story is None else ("ambig" if s.alternatives else lab(s.story))

    by_true: dict[str, Counter] = {}
    for s in scores:
        by_true.setdefault(lab(s.truth), Counter())[col(s)] += 1
    totals = Counter(col(s) for s in scores)
    special = [c for c in ("ambig", "(none)") if c in totals]
    cols = sorted((c for c in totals if c not in special), key=lambda c: (c not in by_true, c)) + special
    number = {c: f"c{i}" for i, c in enumerate(cols, 1) if c not in special}
    rows = [[t, sum(c.values()), *(c.get(x, "") or "." for x in cols)] for t, c in sorted(by_true.items())]
    legend = "  ".join(f"{number[c]}={c}" for c in cols if c in number)
    return table(["true \\ reported", "cells", *(number.get(c, c) for c in cols)], rows) + "\n" + legend


def _told(s: score.CellScore, code: str) -> bool:
    """``code`` is in the reported story or one of its alternatives."""
    return code in s.story or any(code in a for a in s.alternatives)


def log_components(scores: list[score.CellScore]) -> str:
    """For each log-structure code: found where true, reported where false."""
    rows = []
    for code in LOG_CODES:
        has = [s for s in scores if code in s.truth and s.story is not None]
        lacks = [s for s in scores if code not in s.truth and s.story is not None]
        rows.append(
            [
                CODES[code],
                len(has),
                sum(_told(s, code) for s in has),
                len(lacks),
                sum(code in s.story for s in lacks),
            ]
        )
    return table(["code", "cells with it", "reported", "cells without", "reported anyway"], rows)


def axis_breakdown(scores: list[score.CellScore]) -> str:
    def axes(s: score.CellScore) -> dict[str, object]:
        st = s.log_style
        fmt = st["format"] if st.get("text") is None else f"text:{st['text']}"
        return {
            "stack": s.stack,
            "position": s.position,
            "format": fmt,
            "float": st["float"],
            "lr column": st["lr"],
            "epoch base": st["epoch_base"],
            "files": st["files"],
            "given": st.get("given", "all"),
        }

    rows = []
    for axis in axes(scores[0]):
        values = sorted({str(axes(s)[axis]) for s in scores})
        for v in values:
            sel = [s for s in scores if str(axes(s)[axis]) == v]
            c = Counter(s.verdict for s in sel)
            rows.append(
                [
                    axis,
                    v,
                    len(sel),
                    c["right"],
                    c["ambiguous-ok"],
                    c["wrong"],
                    c["missed"],
                    sum(s.false_alarm for s in sel),
                    sum(not s.steps.ok and s.steps.note is None for s in sel),
                    f"{100 * c['right'] / len(sel):.0f}%",
                ]
            )
    return table(
        ["axis", "value", "cells", "right", "amb-ok", "wrong", "missed", "false al.", "step fail", "right %"],
        rows,
    )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", nargs="?", type=Path)
    ap.add_argument("--stack", choices=("torch", "lightning", "hf", "all"), default="all")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--generate", action="store_true", help="regenerate OUTDIR even if it holds a matrix")
    ap.add_argument("--json", type=Path, help="write every cell's score here")
    ap.add_argument("--examples", type=int, default=3, help="failing cells listed per kind")
    ap.add_argument("--full", action="store_true", help="also the matrix with every story code")
    args = ap.parse_args(argv)

    tmp = None
    if args.outdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="matrix_")
        out = Path(tmp.name)
    else:
        out = args.outdir.resolve()
    gen_seconds = None
    if tmp is not None or args.generate or not score.cell_folders(out):
        gen_seconds = generate(out, args.stack, args.quick)
    summary = json.loads((out / "matrix.json").read_text()) if (out / "matrix.json").exists() else {}
    stacks = ("torch", "lightning", "hf") if args.stack == "all" else (args.stack,)
    folders = [f for st in stacks for f in score.cell_folders(out / st)]

    import plateau_forensics  # noqa: F401 - imported before timing, like any user session would

    t0 = time.perf_counter()
    scores = [score.score_cell(f) for f in folders]
    score_seconds = time.perf_counter() - t0
    if not scores:
        print(f"no cells under {out}")
        return 0

    c = score.counts(scores)
    n = len(scores)
    print(f"scenario matrix: {n} cells under {out}")
    for st in stacks:
        if st in summary:
            s = summary[st]
            print(
                f"  {st}: {s['cells']} cells from {s['trainings']} trainings, generated in {s['seconds']} s"
            )
    if gen_seconds is not None:
        print(f"generation (whole process): {gen_seconds:.1f} s")
    print(f"scoring: {score_seconds:.1f} s ({1000 * score_seconds / n:.0f} ms per cell)\n")

    print("verdicts:")
    for k in ("right", "ambiguous-ok", "wrong", "missed"):
        print(f"  {k:13s} {c[k]:4d}  ({100 * c[k] / n:.1f}%)")
    print(f"  false alarms {c['false-alarm']:4d}  (of {c['clean cells']} clean cells)")
    print(f"  no verdict   {c['no verdict']:4d}")
    errors = Counter((s.tool_error or "").split(":")[0] for s in scores if s.tool_error)
    if errors:
        print("  tool errors: " + ", ".join(f"{k} x{v}" for k, v in errors.most_common()))

    print(
        "\nconfusion matrix of the training stories (rows: true, columns: reported; lra/mid/ooo left out of "
        "both, see the next table; ambig = ambiguous, (none) = no verdict):"
    )
    print(confusion_table(scores, LOG_CODES))
    print("codes: " + ", ".join(f"{v}={k}" for k, v in CODES.items()))
    print("\nlog-structure stories (with verdicts only):")
    print(log_components(scores))
    if args.full:
        print("\nfull confusion matrix:")
        print(confusion_table(scores))

    print("\nper axis:")
    print(axis_breakdown(scores))

    checked = [s for s in scores if s.steps.note is None]
    print("\nstep check after the checkpoint:")
    print(
        f"  cells checked {len(checked)} (not run: {n - len(checked)}, no trace), rows "
        f"{sum(s.steps.rows for s in checked)}, values compared {sum(s.steps.compared for s in checked)}, "
        f"exact {sum(s.steps.exact for s in checked)}"
    )
    print(
        f"  mismatches {sum(len(s.steps.mismatches) for s in checked)} in "
        f"{sum(bool(s.steps.mismatches) for s in checked)} cells; unknown where determinable "
        f"{sum(len(s.steps.unknown_but_determinable) for s in checked)}; rows missing "
        f"{sum(len(s.steps.missing_rows) for s in checked)}"
    )

    k = args.examples
    for kind, pick in (
        ("wrong", lambda s: s.verdict == "wrong"),
        ("missed", lambda s: s.verdict == "missed"),
        ("false alarm", lambda s: s.false_alarm),
        ("step check", lambda s: not s.steps.ok and s.steps.note is None),
    ):
        sel = [s for s in scores if pick(s)]
        if sel:
            print(f"\nexamples, {kind} ({len(sel)}):")
            for s in sel[:k]:
                detail = (
                    (s.steps.mismatches + s.steps.unknown_but_determinable + s.steps.missing_rows)[:1]
                    if kind == "step check"
                    else [s.tool_error or f"extra warnings {list(s.extra_warnings)}"]
                )
                print(
                    f"  {s.cell}: true {short(s.truth)}, reported {column(s)} {short(s.story)} "
                    f"{[short(a) for a in s.alternatives]} {detail}"
                )

    right = c["right"] / n
    wrong_ok = c["wrong"] == 0
    steps_ok = all(s.steps.ok for s in checked) and len(checked) == n
    print()
    print(
        f"right story {100 * right:.1f}% (target >= {100 * RIGHT_TARGET:.0f}%): "
        f"{'PASS' if right >= RIGHT_TARGET else 'FAIL'}"
    )
    print(
        f"false alarms on clean runs {c['false-alarm']} (target 0): "
        f"{'PASS' if c['false-alarm'] == 0 else 'FAIL'}"
    )
    print(f"confident wrong stories {c['wrong']} (target 0): {'PASS' if wrong_ok else 'FAIL'}")
    print(f"steps after the checkpoint exact where determinable: {'PASS' if steps_ok else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps([s.as_dict() for s in scores], indent=1) + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
