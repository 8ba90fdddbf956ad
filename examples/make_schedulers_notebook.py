"""Build examples/schedulers.ipynb (every torch scheduler with the seed notes' parameters, a warm-up beside
ReduceLROnPlateau, the seed-000 story) and execute it, reusing make_notebooks.py's build and execute.

    python examples/make_schedulers_notebook.py            # rebuild and execute in place
    python examples/make_schedulers_notebook.py --check    # execute in memory only; fail if a cell errors
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
NAME = "schedulers.ipynb"


def _make_notebooks():  # the existing builder: same kernel, cell ids, timing-free metadata
    spec = importlib.util.spec_from_file_location("make_notebooks", EXAMPLES / "make_notebooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SETUP = '''\
from pathlib import Path

from IPython.display import display

import plateau_forensics as pf
from plateau_forensics import schedules as S

SAMPLES = next(p for p in (Path("../sample_checkpoints"), Path("sample_checkpoints")) if p.is_dir())


def show(*schedulers, epochs=100, lrs=(1e-4,), title=None, **plot):
    """Build the schedulers on one optimizer (in order), step them once per epoch, print a summary, draw."""
    t = S.timeline(list(schedulers), epochs=epochs, lrs=list(lrs))
    changes = [e for e, ch in zip(t.epochs, t.changes) if ch]
    print(f"{' + '.join(t.writers)}: lr {t.lrs[0][0]:.4g} at epoch 0, {t.lrs[-1][0]:.4g} at epoch "
          f"{t.epochs[-1]}; {len(changes)} epochs change the lr"
          + (f" (first: {changes[:6]})" if changes else ""))
    if t.error:
        print("torch would raise:", t.error)
    display(t.plot(figsize=plot.pop("figsize", (9, 3.2)), title=title, **plot))'''

CELLS: list[tuple[str, str]] = [
    ("md", """\
# Every torch scheduler of the seed notes, drawn

The study notes this project started from (seeds 001-004) describe torch's schedulers with concrete
parameters: `MultiStepLR(milestones=[100, 210], gamma=0.1)` ("100, 210에폭에서 학습률을 1/10씩 감소"),
`CyclicLR(base_lr=0.00005, step_size_up=5, max_lr=0.0001, gamma=0.5, mode='exp_range')`,
`CosineAnnealingWarmRestarts(T_0=10, T_mult=1, eta_min=0.00001)`, `LambdaLR(lr_lambda=lambda epoch: 0.95 **
epoch)`, ... This notebook draws each one with those parameters. The lrs come from
`plateau_forensics.schedules`: engines for every torch 2.13 `LRScheduler` that give torch's floats bit for bit
(tested against torch at every step), without importing torch.

Each band under a plot says which scheduler changed the lr at that epoch."""),
    ("code", SETUP),
    ("md", """\
## StepLR and MultiStepLR

`StepLR` multiplies the lr by `gamma` every `step_size` calls of `step()` ("step size : step()이 몇번
불릴때마다 감소시키는지"); `MultiStepLR` at the epochs you list (seed 001: 100 and 210)."""),
    ("code", "show(S.StepLR(step_size=10, gamma=0.5), epochs=100)"),
    ("code", "show(S.MultiStepLR(milestones=[100, 210], gamma=0.1), epochs=300)"),
    ("md", """\
## ExponentialLR

`StepLR` with `step_size=1` ("잘 안쓸듯": rarely used): `lr = lr0 * gamma ** epoch` (seed 003). With seed
002's `gamma=0.5` the lr halves every epoch."""),
    ("code", "show(S.ExponentialLR(gamma=0.5), epochs=20)"),
    ("md", """\
## CosineAnnealingLR

The lr follows a cosine from the optimizer's lr down to `eta_min` over `T_max` epochs, and, without restarts,
back up over the next `T_max`: the period is `2 * T_max` (seed 001: "주기가 2T_max").
Seed 002: `T_max=50`."""),
    ("code", "show(S.CosineAnnealingLR(T_max=50, eta_min=0), epochs=200)"),
    ("md", """\
## CosineAnnealingWarmRestarts

The same cosine, but it jumps back to the initial lr every `T_0` epochs instead of climbing (seed 002:
`T_0=10, T_mult=1, eta_min=0.00001`); with `T_mult=2` each period is twice the previous one (seed 001)."""),
    ("code", "show(S.CosineAnnealingWarmRestarts(T_0=10, T_mult=1, eta_min=1e-5), epochs=60)"),
    ("code", "show(S.CosineAnnealingWarmRestarts(T_0=10, T_mult=2), epochs=150)"),
    ("md", """\
## CyclicLR

The lr cycles between `base_lr` and `max_lr`, `step_size_up` steps up and as many down. Seed 002's
`mode='exp_range', gamma=0.5` shrinks the amplitude by `gamma ** iteration`, so after a few cycles the lr
stays at `base_lr`; `triangular` keeps the amplitude and `triangular2` halves it every cycle. CyclicLR cycles
momentum inversely too (the optimizer needs one: seed 002's SGD has `momentum=0.9`)."""),
    ("code", """\
show(S.CyclicLR(base_lr=5e-5, max_lr=1e-4, step_size_up=5, mode="exp_range", gamma=0.5), epochs=40,
     lrs=[0.001], log=False)"""),
    ("code", """\
for mode in ("triangular", "triangular2", "exp_range"):
    show(S.CyclicLR(base_lr=5e-5, max_lr=1e-4, step_size_up=5, mode=mode, gamma=0.9), epochs=40, lrs=[0.001],
         log=False, title=f"CyclicLR mode={mode!r}", figsize=(9, 2.6))"""),
    ("md", """\
## OneCycleLR

Up from `max_lr / div_factor` to `max_lr` over `pct_start` of `total_steps`, then down to
`initial_lr / final_div_factor`; `three_phase=True` comes back to the initial lr first. Stepping it more than
`total_steps` times raises in torch, and here (the last line printed)."""),
    ("code", """\
show(S.OneCycleLR(max_lr=0.01, total_steps=100), epochs=100, log=False)
show(S.OneCycleLR(max_lr=0.01, total_steps=100, anneal_strategy="linear", three_phase=True), epochs=100,
     log=False)
show(S.OneCycleLR(max_lr=0.01, total_steps=50), epochs=60, log=False)"""),
    ("md", """\
## LambdaLR and MultiplicativeLR

Seed 002 gives both the same lambda, `lambda epoch: 0.95 ** epoch`. `LambdaLR` multiplies the *initial* lr by
it ("초기 learning rate에 lambda 함수에서 나온 값을 곱해서"), `MultiplicativeLR` multiplies the *current* lr
by it at every step ("누적 곱해서": a running product), so the same lambda decays far faster. The lambda is
text here, evaluated by a small arithmetic evaluator (never `eval`); the `lambda epoch:` form of the notes is
accepted too."""),
    ("code", """\
show(S.LambdaLR(lr_lambda="0.95 ** epoch"), epochs=100)
show(S.parse_schedule("MultiplicativeLR(lr_lambda=lambda epoch: 0.95 ** epoch)"), epochs=40)"""),
    ("md", """\
## ConstantLR, LinearLR, PolynomialLR

Not in the notes, but common in front of other schedulers: `ConstantLR` holds `factor` times the lr for
`total_iters` epochs, `LinearLR` ramps the factor from `start_factor` to `end_factor` (a warm-up),
`PolynomialLR` decays to zero over `total_iters`."""),
    ("code", """\
show(S.ConstantLR(factor=0.5, total_iters=10), epochs=30, log=False)
show(S.LinearLR(start_factor=0.1, total_iters=10), epochs=30, log=False)
show(S.PolynomialLR(total_iters=30, power=2.0), epochs=40, log=False)"""),
    ("md", """\
## Several schedulers on one optimizer

`SequentialLR` hands over at milestones (a warm-up, then cosine); `ChainedScheduler` steps all of them every
epoch, each on the lr the previous one left. Several `--schedule` options (or a list) do what building them
one after another on one optimizer does."""),
    ("code", """\
show(S.SequentialLR(schedulers=[S.LinearLR(start_factor=0.1, total_iters=5), S.CosineAnnealingLR(T_max=45)],
                    milestones=[5]), epochs=50, lrs=[0.1], log=False)
show(S.ChainedScheduler(schedulers=[S.ConstantLR(factor=0.1, total_iters=2), S.ExponentialLR(gamma=0.9)]),
     epochs=30, lrs=[1.0])"""),
    ("md", """\
## A warm-up beside ReduceLROnPlateau

torch 2.13's `SequentialLR` and `ChainedScheduler` refuse a `ReduceLROnPlateau`, so runs keep a warm-up and
the plateau scheduler side by side on one optimizer. `S.replay_composed` replays that loop exactly (PyTorch's
own `test_compound_reduce_lr_on_plateau*` loop: the plateau steps on the metric, then the others step).

The metrics below are the real validation losses of the seed-000 run (`sample_checkpoints/seed000.csv`, a real
training run with `ReduceLROnPlateau(patience=2, cooldown=3, factor=0.8)`), replayed with a 5-epoch `LinearLR`
warm-up built after the plateau scheduler: the run those losses would have trained under with a warm-up in
front. The grid is the plateau's view; the timeline says who wrote each lr."""),
    ("code", """\
log = pf.read_losses(SAMPLES / "seed000.csv")
plateau = pf.PlateauConfig(patience=2, cooldown=3, factor=0.8)
warmup = S.LinearLR(start_factor=0.1, total_iters=5)
t = S.replay_composed(log, plateau, lrs=[0.0015], with_schedulers=[warmup])
for s in t.reductions():
    print(s.explain())
for w, first, last in t.timeline.segments():
    print(f"epochs {first}-{last}: {w}" if first != last else f"epoch {first}: {w}")
t.timeline.plot(figsize=(9, 3.5), title="seed-000 losses: LinearLR warm-up + ReduceLROnPlateau")"""),
    ("md", """\
The other common loop steps the warm-up *instead of* the plateau scheduler during the warm-up epochs
(`if epoch < 5: warmup.step() else: plateau.step(val_loss)`): `Stepped(..., epochs=range(5))` and
`plateau_epochs` say so. The plateau scheduler then counts its own steps from epoch 6 (`last_epoch` 1)."""),
    ("code", """\
t2 = S.replay_composed(log, plateau, lrs=[0.0015], with_schedulers=[S.Stepped(warmup, epochs=range(5))],
                       plateau_epochs=range(5, len(log)))
print("first plateau step at epoch", t2.steps[0].epoch, "with last_epoch", t2.steps[0].last_epoch)
print("reductions at epochs", [s.epoch for s in t2.reductions()])"""),
    ("md", """\
## The seed-000 story

Seed 000 is the hand trace of that run's resume: a fresh scheduler at epoch 11, `last_epoch=23` in the
epoch-33 checkpoint, the 10-epoch offset. The tool rebuilds it from the checkpoint and the log (the whole
walk-through is [seed000_story.ipynb](seed000_story.ipynb))."""),
    ("code", """\
story = pf.trace(SAMPLES / "seed000.pt", SAMPLES / "seed000.csv")
from plateau_forensics import report

print(report.story_sentence(story.verdict))
print("offset:", story.alignment.epoch_offset, "| reductions at", [s.epoch for s in story.reductions()])
print(story.forecast().sentence())"""),
]


def main(argv: list[str] | None = None) -> int:
    """Rebuild and execute the notebook (or only check that it runs)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="execute in memory; write nothing")
    args = parser.parse_args(argv)
    make = _make_notebooks()
    nb = make.execute(make.build(CELLS))
    if not args.check:
        import nbformat

        nbformat.write(nb, EXAMPLES / NAME)
    code = sum(c.cell_type == "code" for c in nb.cells)
    print(f"{'ran' if args.check else 'wrote'} {NAME}: {code} code cells")
    return 0


if __name__ == "__main__":
    sys.exit(main())
