"""Generate the scenario matrix of issue 9: real trainings rendered as the inputs a user has, with truth.json.

Usage: ``python scenarios/make_matrix.py OUTDIR [--stack torch|lightning|hf|all|lightning,hf] [--quick]``

Every cell is a folder ``OUTDIR/<stack>/<family>/<cell>/`` holding the checkpoint the user gives the tool, the
log files and ``truth.json`` (format: ``scenarios/README.md`` and ``/work/notes/matrix_spec.md``). The truth
is recorded from the live scheduler after every step. A cell is written only when its story shows in its
inputs (``matrix_cells.check``); otherwise another checkpoint epoch of the same position, or another log
style, is tried, and a story/axis value that cannot be covered at all fails the run, so a CPU that trains to
other numbers cannot silently turn a cell into another story or shrink the matrix. ``OUTDIR/matrix.json``
lists the cells, the refused candidates and the timings.
"""

from __future__ import annotations

import os

# Pin torch's CPU code paths before torch loads (the pins of sample_checkpoints/_pin_cpu.py), not relied on
# for the truth (every story is asserted from the live run), but it keeps reruns on one machine identical.
os.environ["ATEN_CPU_CAPABILITY"] = "default"
os.environ["MKL_CBWR"] = "COMPATIBLE,STRICT"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

# isort: split

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import matrix_cells as mc  # noqa: E402
import matrix_torch as mt  # noqa: E402
from matrix_styles import STYLES, Style  # noqa: E402

SNR, ONR, LRO = "scheduler-not-restored", "optimizer-not-restored", "lr-overwritten"
SBS, RSS, SPR = "saved-before-step", "resume-skipped-step", "steps-per-row"
F = frozenset


def families() -> list[mc.Family]:
    """Every story of the spec and its common pairs, as trainings (layouts rotate over the key names)."""
    K, R = mt.Knobs, mt.Resume
    fams = [
        ("clean", F(), K(), None, "Uninterrupted run; checkpoint saved after the epoch's scheduler.step."),
        (
            "saved-before-step",
            F({SBS}),
            K(save="before"),
            None,
            "Uninterrupted run; each checkpoint is written after evaluate() but before that epoch's step.",
        ),
        (
            "steps-per-row-k2",
            F({SPR}),
            K(k=2),
            None,
            "scheduler.step(val_loss) is called twice per epoch (in train() and in validate()).",
        ),
        (
            "steps-per-row-per-batch",
            F({SPR}),
            K(per_batch=True),
            None,
            "scheduler.step(val_loss) after every optimizer step (8 batches), with the previous epoch's "
            "val_loss "
            "(stale); no step in epoch 1, before any validation.",
        ),
        (
            "wrong-metric-train-loss",
            F({"wrong-metric"}),
            K(fed="train_loss", train_loss="last-batch"),
            None,
            "scheduler.step(loss) with the epoch's last batch loss, which the loop also logs as train_loss, "
            "while val_loss is what the user watches.",
        ),
        (
            "wrong-metric-accuracy",
            F({"wrong-metric"}),
            K(fed="val_acc", log_acc=True),
            None,
            "scheduler.step(val_acc) with mode='min' (an accuracy column, share of |error| < 0.5).",
        ),
        (
            "warmup-by-hand",
            F({"external-lr-change"}),
            K(external="warmup-hand"),
            None,
            "A linear warm-up written by hand: g['lr'] = 0.01 * epoch / 4 before epochs 1..4.",
        ),
        (
            "warmup-linearlr",
            F({"external-lr-change"}),
            K(external="warmup-linear"),
            None,
            "LinearLR(start_factor=0.25, total_iters=3) stepped each epoch after the plateau scheduler.",
        ),
        (
            "hand-edit",
            F({"external-lr-change"}),
            K(external="hand-edit"),
            None,
            f"g['lr'] *= {mt.HAND_FACTOR} by hand before epoch 15.",
        ),
        (
            "second-scheduler-steplr",
            F({"external-lr-change"}),
            K(external="steplr"),
            None,
            "A StepLR(step_size=8, gamma=0.5) steps the same optimizer after the plateau scheduler.",
        ),
        ("resume-clean", F(), K(), R(), "Resumed correctly: model, optimizer and scheduler loaded."),
        (
            "scheduler-not-restored",
            F({SNR}),
            K(),
            R(scheduler="fresh"),
            "Resumed with model + optimizer loaded and a fresh scheduler (no load_state_dict).",
        ),
        (
            "optimizer-not-restored",
            F({ONR}),
            K(),
            R(optimizer="fresh"),
            "Resumed with model + scheduler loaded and a fresh optimizer (initial lr).",
        ),
        (
            "scheduler-and-optimizer-not-restored",
            F({SNR, ONR}),
            K(),
            R(scheduler="fresh", optimizer="fresh"),
            "Resumed loading the model only; the epoch numbering continues.",
        ),
        (
            "lr-overwritten",
            F({LRO}),
            K(),
            R(lr_set_to=mt.LR_SET_TO),
            f"Resumed with everything loaded, then g['lr'] = {mt.LR_SET_TO} for every group.",
        ),
        (
            "lr-overwritten-to-initial",
            F({LRO}),
            K(),
            R(lr_set_to=mt.LR),
            f"Resumed with everything loaded, then g['lr'] = {mt.LR} (the initial lr) for every group.",
        ),
        (
            "saved-before-step-resumed",
            F({SBS, RSS}),
            K(save="before"),
            R(),
            "Checkpoints written before the epoch's step; resumed at the next epoch: that step is never "
            "taken.",
        ),
        (
            "saved-before-step-resumed-optimizer-not-restored",
            F({SBS, RSS, ONR}),
            K(save="before"),
            R(optimizer="fresh"),
            "As saved-before-step-resumed, and the optimizer is not loaded.",
        ),
        (
            "weights-only-resume",
            F({"weights-only-resume"}),
            K(),
            R(weights_only=True),
            "A new run from epoch 1 that loads only the model weights (fresh optimizer and scheduler).",
        ),
        (
            "duplicate-epochs",
            F({"duplicate-epochs"}),
            K(),
            R(crash_extra=mt.CRASH_EXTRA),
            f"Process A ran {mt.CRASH_EXTRA} epochs past the resume checkpoint and crashed; "
            "process B resumed "
            "correctly from it and logged those epochs again.",
        ),
        (
            "duplicate-epochs-scheduler-not-restored",
            F({"duplicate-epochs", SNR}),
            K(),
            R(scheduler="fresh", crash_extra=mt.CRASH_EXTRA),
            "As duplicate-epochs, and process B built a fresh scheduler.",
        ),
        ("steps-per-row-resumed", F({SPR}), K(k=2), R(), "Two steps per epoch, resumed correctly."),
    ]
    return [
        mc.Family(n, s, k, r, d, mc.LAYOUTS[i % len(mc.LAYOUTS)]) for i, (n, s, k, r, d) in enumerate(fams)
    ]


#: Extra log-structure cells per resume family and position: (checkpoint choice, which log files are given).
EXTRAS = {
    "early": (("final", "last"),),
    "after-reduction": (("final", "last"), ("resume", "overwritten"), ("final", "reversed")),
    "in-cooldown": (("resume", "last"), ("final", "overwritten"), ("resume", "reversed")),
}

_NEEDS_LR = (
    "without an lr column only the checkpoint shows lr code outside the scheduler, and only when the "
    "optimizer's lr differs from the scheduler's _last_lr there"
)
_SCALE = (
    "without an lr column nothing gives the initial lr: a fresh optimizer's (or a hand-set) lr differs "
    "from a "
    "restored one by a factor, which another initial lr explains just as well"
)
#: --quick: one log-structure cell per resume family and position, each kind at one position.
QUICK_EXTRAS = {
    "early": (("final", "last"),),
    "after-reduction": (("final", "reversed"),),
    "in-cooldown": (("resume", "overwritten"),),
}

#: (family, axis value) pairs allowed to have no cell, and why (the generator fails on any other gap).
STRUCTURAL_GAPS = {
    **{
        (f, "lr=None"): _NEEDS_LR
        for f in ("warmup-by-hand", "warmup-linearlr", "hand-edit", "second-scheduler-steplr")
    },
    **{
        (f, "lr=None"): _SCALE
        for f in (
            "optimizer-not-restored",
            "scheduler-and-optimizer-not-restored",
            "lr-overwritten",
            "lr-overwritten-to-initial",
            "saved-before-step-resumed-optimizer-not-restored",
        )
    },
}

_NO_REDUCTION_YET = (
    "no reduction before an early checkpoint: its optimizer lr is the initial lr, so a fresh "
    "optimizer (or setting the initial lr) changes nothing any input shows"
)
#: (family/position) with no cell, and why.
STRUCTURAL_POSITIONS = {
    "optimizer-not-restored/early": _NO_REDUCTION_YET,
    "scheduler-and-optimizer-not-restored/early": _NO_REDUCTION_YET,
    "lr-overwritten-to-initial/early": _NO_REDUCTION_YET,
    "saved-before-step-resumed-optimizer-not-restored/early": _NO_REDUCTION_YET,
}


class Matrix:
    """Plans, checks and writes the plain-torch cells."""

    def __init__(self, out: Path, quick: bool) -> None:
        self.out, self.quick = out, quick
        self.per_slot = 1 if quick else 2
        self.cells: list[mc.Cell] = []
        self.refused: list[dict] = []
        self._bases: dict[mt.Knobs, mt.Run] = {}
        self.runs: dict[tuple[str, str], tuple[mt.Run, int]] = {}
        self.trainings = 0

    def base(self, knobs: mt.Knobs) -> mt.Run:
        """The uninterrupted run of ``knobs`` (the save order does not change the training: shared)."""
        key = replace(knobs, save="after")
        if key not in self._bases:
            self._bases[key] = mt.uninterrupted(key)
            self.trainings += 1
        return replace(self._bases[key], knobs=knobs)

    def try_cells(self, cells: list[mc.Cell], want: int) -> list[mc.Cell]:
        """The first ``want`` cells that pass ``check``; the others are recorded as refused."""
        ok = []
        for c in cells:
            if len(ok) == want:
                break
            why = mc.check(c)
            if why is None:
                ok.append(c)
            else:
                self.refused.append(
                    {"cell": f"torch/{c.family.name}/{c.name}", "epoch": c.ckpt_key[1], "reason": why}
                )
        return ok

    def family(self, fam: mc.Family, slot0: int) -> None:
        """The cells of one family: per position, the first candidate epoch whose cells all show the story."""
        base = self.base(fam.knobs)
        slot = slot0
        for pos in fam.positions:
            best, tried = None, 0
            for epoch in mt.position_candidates(base, pos, fam.resume is not None):
                run = base if fam.resume is None else mt.resumed(base, epoch, fam.resume)
                if fam.resume is not None:
                    self.trainings += 1
                choices = self.choices(fam, run, epoch)
                accepted = []
                for n, (choice, key) in enumerate(choices):
                    start = (slot + n) * self.per_slot
                    styles = [STYLES[(start + j) % len(STYLES)] for j in range(len(STYLES))]
                    accepted += self.try_cells(
                        [mc.Cell(fam, run, pos, choice, key, s) for s in styles], self.per_slot
                    )
                if best is None or len(accepted) > len(best[2]):
                    best = (epoch, run, accepted)
                tried += 1
                if len(accepted) == self.per_slot * len(choices) or (tried >= 2 and best[2]):
                    break
                self.refused.append(
                    {
                        "cell": f"torch/{fam.name}/{pos}",
                        "epoch": epoch,
                        "reason": "candidate epoch dropped: too few cells show the story",
                    }
                )
            slot += 2
            if best is None or not best[2]:
                self.refused.append(
                    {
                        "cell": f"torch/{fam.name}/{pos}",
                        "epoch": None,
                        "reason": "no candidate epoch shows the story",
                    }
                )
                continue
            epoch, run, accepted = best
            self.runs[(fam.name, pos)] = (run, epoch)
            self.cells += accepted
            if fam.resume is not None:
                choices = dict(self.choices(fam, run, epoch))
                for choice, given in (QUICK_EXTRAS if self.quick else EXTRAS)[pos]:
                    files = "one" if given == "overwritten" else "per-process"
                    styles = [
                        replace(STYLES[(slot + j) % len(STYLES)], files=files) for j in range(len(STYLES))
                    ]
                    slot += 1
                    self.cells += self.try_cells(
                        [mc.Cell(fam, run, pos, choice, choices[choice], s, given) for s in styles], 1
                    )

    @staticmethod
    def choices(fam: mc.Family, run: mt.Run, epoch: int) -> list[tuple[str, tuple[int, int, str]]]:
        order = fam.knobs.save
        if fam.resume is None:
            return [("at", (0, epoch, order))]
        last = run.processes[1].last
        return [("resume", (0, epoch, order)), ("final", (1, last, order))]

    def coverage(self) -> dict[str, dict[str, list[str]]]:
        """Per family, the axis values its cells cover."""
        cov: dict[str, dict[str, set]] = {}
        for c in self.cells:
            d = cov.setdefault(c.family.name, {})
            for axis, value in axis_values(c):
                d.setdefault(axis, set()).add(value)
        return {f: {a: sorted(map(str, v)) for a, v in d.items()} for f, d in cov.items()}

    def fill_gaps(self, fams: list[mc.Family]) -> list[tuple[str, str]]:
        """Add cells until every family has every axis value (from its accepted runs); return what is left."""
        gaps = []
        for fam in fams:
            have = {f"{a}={v}" for c in self.cells if c.family is fam for a, v in axis_values(c)}
            for axis, values in AXES.items():
                for v in values:
                    label = f"{axis}={v}"
                    if label in have or (fam.resume is None and axis == "checkpoint"):
                        continue
                    found = self.find_cell(fam, axis, v)
                    if found is None:
                        gaps.append((fam.name, label))
                    else:
                        self.cells.append(found)
                        have |= {f"{a}={x}" for a, x in axis_values(found)}
        return gaps

    def find_cell(self, fam: mc.Family, axis: str, value: object) -> mc.Cell | None:
        """A not yet written cell of ``fam`` with that axis value whose story shows, or None."""
        existing = {(c.family.name, c.name) for c in self.cells}
        for (name, pos), (run, epoch) in self.runs.items():
            if name != fam.name:
                continue
            for choice, key in self.choices(fam, run, epoch):
                for s in STYLES:
                    c = mc.Cell(fam, run, pos, choice, key, s)
                    if (fam.name, c.name) in existing or (axis, value) not in axis_values(c):
                        continue
                    if mc.check(c) is None:
                        return c
        return None

    def write(self) -> None:
        for c in self.cells:
            mc.write(c, self.out)


AXES: dict[str, tuple] = {
    "float": ("repr", ".4f", ".6f"),
    "lr": ("before", "after", None),
    "epoch_base": (0, 1),
    "format": ("csv", "jsonl", "text:epoch-of", "text:kv", "text:keras"),
    "files": ("one", "per-process"),
    "checkpoint": ("resume", "final"),
}


def axis_values(c: mc.Cell) -> list[tuple[str, object]]:
    s: Style = c.style
    fmt = s.format if s.format != "text" else f"text:{s.text}"
    out = [
        ("float", s.float),
        ("lr", s.lr),
        ("epoch_base", s.epoch_base),
        ("format", fmt),
        ("files", s.files),
    ]
    if c.choice in ("resume", "final"):
        out.append(("checkpoint", c.choice))
    return out


def make_torch(out: Path, quick: bool) -> dict:
    """Train, check and write every plain-torch cell; returns the summary for matrix.json."""
    t0 = time.perf_counter()
    m = Matrix(out, quick)
    fams = families()
    for i, fam in enumerate(fams):
        m.family(fam, 3 * i)
    gaps = [] if quick else m.fill_gaps(fams)
    unexpected = [g for g in gaps if g not in STRUCTURAL_GAPS]
    missing_positions = [r["cell"] for r in m.refused if r["reason"] == "no candidate epoch shows the story"]
    unexpected += [p for p in missing_positions if p.removeprefix("torch/") not in STRUCTURAL_POSITIONS]
    t_train = time.perf_counter() - t0
    m.write()
    summary = {
        "cells": len(m.cells),
        "trainings": m.trainings,
        "seconds": round(time.perf_counter() - t0, 2),
        "seconds_training_and_checks": round(t_train, 2),
        "refused": m.refused,
        "gaps": [list(g) for g in gaps],
        "coverage": m.coverage(),
        "positions_without_cells": missing_positions,
    }
    if unexpected:
        raise SystemExit(f"make_matrix: no cell shows these stories with these inputs: {unexpected}")
    return summary


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument(
        "--stack",
        default="torch",
        help="torch, lightning, hf, all, or a comma-separated list (default: torch)",
    )
    ap.add_argument("--quick", action="store_true", help="fewer log styles per cell position (CI)")
    args = ap.parse_args(argv)
    out = args.outdir.resolve()
    torch.set_num_threads(1)
    stacks = ("torch", "lightning", "hf") if args.stack == "all" else tuple(args.stack.split(","))
    unknown = [s for s in stacks if s not in ("torch", "lightning", "hf")]
    if unknown:
        ap.error(f"unknown stack(s) {unknown}: choose torch, lightning, hf or all")
    summary: dict = {"versions": {"torch": torch.__version__}, "quick": args.quick}
    for stack in stacks:
        shutil.rmtree(out / stack, ignore_errors=True)
        (out / stack).mkdir(parents=True, exist_ok=True)
        if stack == "torch":
            summary["torch"] = make_torch(out, args.quick)
        elif stack == "lightning":
            import matrix_lightning

            summary["lightning"] = matrix_lightning.make(out, args.quick)
        else:
            import matrix_hf

            summary["hf"] = matrix_hf.make(out, args.quick)
        s = summary[stack]
        print(
            f"{stack}: {s['cells']} cells from {s['trainings']} trainings in {s['seconds']} s "
            f"({len(s['refused'])} candidates refused)"
        )
    previous = {}
    if (out / "matrix.json").exists():
        previous = json.loads((out / "matrix.json").read_text())
    previous.update(summary)
    (out / "matrix.json").write_text(json.dumps(previous, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
