"""Regenerate the fastai samples in ``fastai/`` by running real fastai training.

Usage: ``python sample_checkpoints/make_fastai.py [OUTDIR] [--only SCENARIO ...]``
(default OUTDIR: ``fastai/`` next to this script; default: every scenario).

Each scenario is a real ``fastai.learner.Learner`` (fastai 2.8.12) on CPU: a 4-16-1 ReLU MLP, plain SGD
(``fastai.optimizer.SGD``), ``MSELossFlat``, seeded synthetic regression data in ``DataLoaders.from_dsets``,
with fastai's own ``ReduceLROnPlateau`` and ``CSVLogger(append=True)`` callbacks. Several ``learn.fit(n, lr)``
calls follow one another, so ``history.csv`` has one header per ``fit()`` and its epochs restart at 0. The lr
is high enough that the validation loss stalls and the callback reduces it.

Scenarios (one sub-folder each, ``history.csv`` + ``truth.json``):

* ``defaults``: ``ReduceLROnPlateau()`` (monitor ``valid_loss``, patience 1, factor 10); ``fit(6, 0.3)``,
  ``fit(5, 0.3)``.
* ``keep_best``: ``ReduceLROnPlateau(patience=2, factor=2, min_delta=1e-3, min_lr=0.05, reset_on_fit=False)``;
  ``fit(7, 0.2)``, ``fit(8, 0.4)``: ``best`` carried into the second fit, which diverges (NaN
  losses) and ends at ``min_lr``.

``truth.json`` holds what the live objects held, read by a callback that runs right after fastai's (order 63,
after ``after_epoch`` of ``ReduceLROnPlateau`` at 62): per epoch, in time order, the fit (0-based), fastai's
epoch counter, the value the callback read (``recorder.values[-1][idx]``), its ``best`` and ``wait`` after the
epoch, every param group's lr before and after (``opt.hypers``), and per fit the lr ``fit()`` set. Nothing in
it
is computed by replaying. JSON numbers are ``repr``; inf / -inf / nan are the strings "inf" / "-inf" / "nan".

fastai is installed with ``pip install --no-deps fastai==2.8.12`` (its requirements pull torchvision and
spaCy,
and with them another torch; see README "Rule sets"); only ``fastai.learner``, ``fastai.data.core``,
``fastai.optimizer`` and ``fastai.callback`` are used, none of which imports torchvision.

Determinism: the CPU kernels are pinned before torch is imported (``_pin_cpu.py``), one thread, seeded data
and
weights: a rerun on the same machine writes the same numbers; another CPU trains to other last bits, so no
test
compares two runs' numbers.
"""

from __future__ import annotations

import _pin_cpu  # noqa: F401 - must run before torch loads (see _pin_cpu.py)

# isort: split

import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {"callback": {}, "fits": [(6, 0.3), (5, 0.3)], "seed": 0},
    "keep_best": {"callback": {"patience": 2, "factor": 2.0, "min_delta": 1e-3, "min_lr": 0.05,
                               "reset_on_fit": False},
                  "fits": [(7, 0.2), (8, 0.4)], "seed": 1},
}


def _enc(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, (list, tuple)):
        return [_enc(v) for v in x]
    if isinstance(x, dict):
        return {k: _enc(v) for k, v in x.items()}
    return x


def run(name: str, out: Path) -> dict[str, Any]:
    """Train scenario ``name``; write ``history.csv`` and ``truth.json`` into ``out``; return the truth."""
    import torch
    from fastai.callback.core import Callback
    from fastai.callback.progress import CSVLogger
    from fastai.callback.tracker import ReduceLROnPlateau
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.losses import MSELossFlat
    from fastai.optimizer import SGD

    spec = SCENARIOS[name]
    torch.manual_seed(spec["seed"])
    torch.set_num_threads(1)
    x = torch.randn(96, 4)
    y = x @ torch.tensor([1.5, -2.0, 0.5, 1.0]) + 0.3 * torch.randn(96)
    train = list(zip(x[:64], y[:64], strict=True))
    valid = list(zip(x[64:], y[64:], strict=True))
    dls = DataLoaders.from_dsets(train, valid, bs=16, device="cpu", shuffle=False, num_workers=0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    plateau = ReduceLROnPlateau(**spec["callback"])
    epochs: list[dict[str, Any]] = []
    fits: list[dict[str, Any]] = []

    class Truth(Callback):
        """Reads fastai's callback and optimizer around its ``after_epoch`` (order 62 < 63)."""

        order = ReduceLROnPlateau.order + 1

        def before_fit(self) -> None:
            fits.append({"lr": [float(h["lr"]) for h in self.opt.hypers], "best": float(plateau.best),
                         "wait": plateau.wait, "first_epoch": len(epochs)})

        def before_epoch(self) -> None:
            self._lr_before = [float(h["lr"]) for h in self.opt.hypers]

        def after_epoch(self) -> None:
            epochs.append({"fit": len(fits) - 1, "epoch": self.epoch,
                           "value": float(self.recorder.values[-1][plateau.idx]),
                           "best": float(plateau.best), "wait": plateau.wait, "lr_before": self._lr_before,
                           "lr": [float(h["lr"]) for h in self.opt.hypers]})

    out.mkdir(parents=True, exist_ok=True)
    learn = Learner(dls, model, loss_func=MSELossFlat(), opt_func=SGD, path=out, model_dir=".",
                    cbs=[plateau, CSVLogger(append=True), Truth()])
    history = out / "history.csv"
    if history.exists():
        history.unlink()
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n, lr in spec["fits"]:
            learn.fit(n, lr)
    import fastai

    callback = {"monitor": plateau.monitor, "comp": plateau.comp.__name__, "min_delta": plateau.min_delta,
                "patience": plateau.patience, "factor": plateau.factor, "min_lr": plateau.min_lr,
                "reset_on_fit": plateau.reset_on_fit}
    truth = {"fastai": fastai.__version__, "callback": callback,
             "given": spec["callback"], "fit_calls": [list(f) for f in spec["fits"]], "fits": fits,
             "epochs": epochs, "precision": "float64"}
    (out / "truth.json").write_text(json.dumps(_enc(truth), indent=1) + "\n")
    return truth


def main(argv: list[str]) -> None:
    args = list(argv)
    only: list[str] = []
    if "--only" in args:
        i = args.index("--only")
        only, args = args[i + 1:], args[:i]
    root = Path(args[0]) if args else Path(__file__).resolve().parent / "fastai"
    for name in only or list(SCENARIOS):
        truth = run(name, root / name)
        cut = sum(1 for e in truth["epochs"] if e["lr"] != e["lr_before"])
        print(f"{name}: {len(truth['epochs'])} epochs in {len(truth['fits'])} fits, {cut} lr cuts")


if __name__ == "__main__":
    main(sys.argv[1:])
