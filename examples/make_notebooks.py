"""Build the example notebooks with nbformat and execute them with nbclient, so their outputs are saved.

    python examples/make_notebooks.py            # rebuild and execute both notebooks in place
    python examples/make_notebooks.py --check    # execute in memory only; fail if a cell errors

The notebooks run with ``examples/`` as the working directory (``../sample_checkpoints/...``); the code
in them also finds the samples from the repository root. Cell ids are fixed and timing is not
recorded, so re-running on the same versions changes only what the code prints or draws.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parent
KERNEL = "python3"
TIMEOUT = 120  # seconds per cell

SETUP = '''\
from pathlib import Path

import plateau_forensics as pf
from plateau_forensics import report
from plateau_forensics.whatif import compare, expand_what_if, render_comparison

# the samples, from examples/ (where CI runs this notebook) or from the repository root
SAMPLES = next(p for p in (Path("../sample_checkpoints"), Path("sample_checkpoints")) if p.is_dir())'''

STORY: list[tuple[str, str]] = [
    ("md", """\
# The seed-000 story: why did the LR drop where it did?

Seed 000 is a hand trace, written while debugging a real run: a model trained with
`ReduceLROnPlateau(patience=2, cooldown=3, factor=0.8)` was **resumed at epoch 11** with a *fresh*
scheduler. The checkpoint saved at epoch 33 said `last_epoch=23`, and the notes tried to work out by hand
when `num_bad_epochs` reached `patience`, when `cooldown_counter` ran out, and when the next reduction would
come ("`epoch += 10` 하면 숫자가 맞음": add 10 and the numbers match).

`sample_checkpoints/seed000.pt` + `seed000.csv` rebuild that situation from a real tiny training run
(an 8-16-1 MLP, a real `torch.optim.lr_scheduler.ReduceLROnPlateau` stepped once per epoch; see
`sample_checkpoints/README.md`). This notebook replays the scheduler over the log and lets the tool do the
bookkeeping the hand trace did."""),
    ("code", SETUP),
    ("md", """\
## 1. Load the checkpoint

The checkpoint is read without torch (a restricted unpickler); the plateau state is found by its shape."""),
    ("code", """\
ck = pf.load_checkpoint(SAMPLES / "seed000.pt")
print("scheduler state at key:", ck.key_path)
print("hyperparameters:       ", ck.config)
st = ck.state
print(f"saved counters:         last_epoch={st.last_epoch} best={st.best:.4f} "
      f"num_bad_epochs={st.num_bad_epochs} cooldown_counter={st.cooldown_counter}")
print("optimizer lr:          ", ", ".join(report.g(v) for v in ck.lrs))
print("checkpoint 'epoch':    ", ck.epoch)"""),
    ("md", """\
The checkpoint says `epoch=33` but `last_epoch=23`: ten steps are missing. That is the offset the hand trace
found by trial and error.

## 2. Replay it against the log: the seed's grid

`pf.trace` places the checkpoint in the log (a fresh scheduler from the first row that reproduces the saved
state), replays, and continues from the saved state over the rows after it."""),
    ("code", """\
t = pf.trace(SAMPLES / "seed000.pt", SAMPLES / "seed000.csv")
print(report.render(t, width=100))"""),
    ("md", """\
In a notebook the trace displays itself as the same grid in HTML: reductions in red (`LR`), steps in cooldown
in grey (`cool`), the checkpoint column boxed (`+ckpt`). Hover over an event to read why it happened.
`t.to_frame()` gives the same steps as a DataFrame."""),
    ("code", "t"),
    ("code", """\
df = t.to_frame()
columns = ["epoch", "last_epoch", "metric", "best", "num_bad_epochs", "cooldown_counter", "lr"]
df[df.event == "reduced"][columns]"""),
    ("md", """\
## 3. The picture

Top: the validation loss, `best`, and the dashed bar each loss had to beat (`best * (1 - threshold)`);
filled dots beat it, hollow ones did not. Middle: `num_bad_epochs` climbing toward `patience`, with the count
that made each reduction due hatched, and `cooldown_counter`. Bottom: the lr on a log axis with each
reduction marked `epoch: from → to`. Hatched spans are cooldown (bad epochs not counted); the vertical lines
are the checkpoint and the resume from its saved state. The top axis is torch's `last_epoch`."""),
    ("code", "t.plot()"),
    ("md", """\
## 4. Each reduction, in words

Every reduction is one bad epoch too many: `num_bad_epochs` goes past `patience`. After it, `cooldown`
steps are muted, so the reductions come at a fixed cadence while nothing improves."""),
    ("code", """\
c = t.config
for s in t.reductions():
    print(s.explain())
print()
gaps = [b.epoch - a.epoch for a, b in zip(t.reductions(), t.reductions()[1:])]
print(f"epochs between reductions: {gaps}")
print(f"cooldown {c.cooldown} + patience {c.patience} + 1 = {c.cooldown + c.patience + 1}: "
      "the cadence while nothing improves")"""),
    ("md", """\
## 5. The 10-epoch offset

The scheduler counts its own steps (`last_epoch`), not your epochs. The alignment finds the log row
after which a fresh scheduler reproduces the saved state; the difference between the two counters is
the offset."""),
    ("code", """\
a = t.alignment
print(f"the checkpoint was saved after log epoch {a.epoch}, at scheduler step last_epoch={a.scheduler_step}")
print(f"epoch offset = {a.epoch} - {a.scheduler_step} = {a.epoch_offset}")
print(f"the scheduler took its first step at log epoch {t.epochs[0]} (last_epoch=1): the resume")
print()
for f in t.findings:
    print(f"{f.severity}: [{f.code}] {f.message}")"""),
    ("md", """\
## 6. Forecast

If nothing improves on the current `best`, when does the lr drop next, and to what?"""),
    ("code", """\
fc = t.forecast()
print(fc.sentence())
print(f"a loss must go below {fc.improvement_threshold:.6f} to count as an improvement "
      f"(best {t.final.best:.6f} * (1 - {c.threshold}))")
print(f"earliest next reduction: end of epoch {fc.earliest_reduction_epoch}, "
      f"{fc.steps_until_reduction} steps after the last logged one")"""),
    ("md", """\
## 7. What if: patience and cooldown

The same losses, replayed from the same start (epoch 11, lr 1.5e-3) under other settings. `expand_what_if`
builds the cartesian product; the first config is the one the run used, and the table lists each epoch where
some lr changes (`*`: reduced at that step)."""),
    ("code", """\
configs = expand_what_if(["patience=2,5", "cooldown=0,3"], t.config, include_base=True)
cmp = compare(t, configs)
print(render_comparison(cmp))"""),
    ("code", "cmp.plot()"),
    ("md", """\
`patience` sets how many bad epochs are tolerated before a reduction; `cooldown` how many epochs after one
are not counted at all. With `cooldown=0` the same run reduces every `patience + 1` epochs once it stalls;
larger values space the reductions out. The lines part at the first epoch where a setting made a
different decision (dotted verticals)."""),
]

PARAMETERS: list[tuple[str, str]] = [
    ("md", """\
# ReduceLROnPlateau's parameters, one picture each

`torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode='min', factor=0.1, patience=10, threshold=1e-4,
threshold_mode='rel', cooldown=0, min_lr=0, eps=1e-8)`, as the notes in seeds 001-004 list them
(모드, 감소 비율, 참을 에폭 수 ...; 监控指标，当指标不再变化则调整).
Each section replays a short synthetic metric sequence under a few settings and draws what changes."""),
    ("code", SETUP + '''

plateau = [1.0, 0.8, 0.7, 0.65] + [0.66, 0.64, 0.67, 0.65, 0.66] * 5  # improves, then stalls at ~0.65
print(len(plateau), "epochs")'''),
    ("md", """\
## mode

`mode="min"` waits for the metric to go *down* (a loss), `mode="max"` for it to go *up* (an accuracy);
with the wrong mode a rising accuracy looks like a run that never improves."""),
    ("code", """\
accuracy = [0.50, 0.60, 0.68, 0.74, 0.78, 0.81, 0.83, 0.84, 0.85, 0.855, 0.86, 0.86, 0.861, 0.86, 0.86]
cmp = compare(accuracy, [{"mode": "max"}, {"mode": "min"}], base=pf.PlateauConfig(patience=2), lrs=[0.1])
cmp.plot(figsize=(9, 4.5))"""),
    ("md", """\
## factor

Each reduction multiplies the lr by `factor` (`new_lr = lr * factor`), so 0.1 drops a decade per reduction
and 0.8 only a fifth."""),
    ("code", """\
cmp = compare(plateau, [{"factor": 0.1}, {"factor": 0.5}, {"factor": 0.8}],
              base=pf.PlateauConfig(patience=3), lrs=[0.1])
cmp.plot(figsize=(9, 4.5))"""),
    ("md", """\
## patience

`patience` bad epochs are tolerated; the reduction comes on bad epoch `patience + 1`, the one that makes
`num_bad_epochs > patience`."""),
    ("code", """\
cmp = compare(plateau, [{"patience": 0}, {"patience": 2}, {"patience": 5}], base=pf.PlateauConfig(factor=0.5),
              lrs=[0.1])
cmp.plot(figsize=(9, 4.5))"""),
    ("md", """\
## threshold and threshold_mode

A metric only counts as better when it beats the bar: `best * (1 - threshold)` in `rel` mode,
`best - threshold` in `abs` mode (for `min`), so a slow crawl of tiny improvements can still be "bad"."""),
    ("code", """\
crawl = [1.0 - 0.002 * i for i in range(25)]  # improves by 0.002 (about 0.2 %) every epoch
config = pf.PlateauConfig(patience=2, factor=0.5, threshold=0.01, threshold_mode="rel")
t = pf.replay(crawl, config, lrs=[0.1])
t.plot(figsize=(10, 6.5))"""),
    ("code", """\
settings = [{"threshold": 1e-4, "threshold_mode": "rel"}, {"threshold": 0.01, "threshold_mode": "rel"},
            {"threshold": 0.001, "threshold_mode": "abs"}, {"threshold": 0.008, "threshold_mode": "abs"}]
cmp = compare(crawl, settings, base=pf.PlateauConfig(patience=2, factor=0.5), lrs=[0.1])
print(render_comparison(cmp))
cmp.plot(figsize=(9, 4.5))"""),
    ("md", """\
## cooldown

For `cooldown` epochs after a reduction the bad-epoch count is held at 0 (the hatched spans), which spaces
reductions `cooldown + patience + 1` epochs apart on a stalled run."""),
    ("code", """\
t = pf.replay(plateau, pf.PlateauConfig(patience=1, cooldown=3, factor=0.5), lrs=[0.1])
t.plot(figsize=(10, 6.5))"""),
    ("md", """\
## min_lr

The lr never goes below `min_lr` (per param group if a list): a reduction that would cross it stops at the
floor, and once there the reductions that fall due are suppressed (hollow crosses)."""),
    ("code", """\
t = pf.replay(plateau, pf.PlateauConfig(patience=1, factor=0.5, min_lr=0.02), lrs=[0.1])
t.plot(figsize=(10, 6.5))"""),
    ("md", """\
## eps

A reduction smaller than `eps` is not applied: with the default `eps=1e-8`, an lr of `1e-8` would become
`1e-9`, a change of `9e-9 < eps`, so it stays (the example in seed 001)."""),
    ("code", """\
rising = [1.0 + 0.01 * i for i in range(8)]  # never improves: a reduction is due at every later step
t = pf.replay(rising, pf.PlateauConfig(patience=0, factor=0.1, eps=1e-8), lrs=[1e-6])
for s in t.steps:
    print(s.explain())
t.plot(figsize=(10, 6.5))"""),
]

NOTEBOOKS = {"seed000_story.ipynb": STORY, "parameters.ipynb": PARAMETERS}


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """A notebook from (kind, source) pairs, with fixed cell ids."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for k, (kind, source) in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(source) if kind == "md" else nbformat.v4.new_code_cell(source)
        cell.id = f"cell-{k:02d}"
        nb.cells.append(cell)
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path = EXAMPLES) -> nbformat.NotebookNode:
    """Run every cell in a fresh ``python3`` kernel with ``cwd`` as the working directory.

    Raises:
        nbclient.exceptions.CellExecutionError: a cell raised.
    """
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend, so figures become image outputs
    client = NotebookClient(nb, timeout=TIMEOUT, kernel_name=KERNEL, record_timing=False,
                            resources={"metadata": {"path": str(cwd)}})
    client.execute()
    nb.metadata["language_info"] = {"name": "python"}  # no interpreter version: the file stays stable
    return nb


def main(argv: list[str] | None = None) -> int:
    """Rebuild and execute the notebooks (or only check that they run)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="execute in memory; write nothing")
    args = parser.parse_args(argv)
    for name, cells in NOTEBOOKS.items():
        nb = execute(build(cells))
        if not args.check:
            nbformat.write(nb, EXAMPLES / name)
        code = sum(c.cell_type == "code" for c in nb.cells)
        print(f"{'ran' if args.check else 'wrote'} {name}: {code} code cells")
    return 0


if __name__ == "__main__":
    sys.exit(main())
