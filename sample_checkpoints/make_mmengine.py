"""Regenerate the MMEngine samples in ``mmengine/`` by running real MMEngine training.

Usage: ``python sample_checkpoints/make_mmengine.py [OUTDIR] [--only SCENARIO ...]``
(default OUTDIR: ``mmengine/`` next to this script; default: every scenario).

Each scenario is a real ``mmengine.runner.Runner.train()`` of a tiny ``BaseModel`` (an 8-16-1 ReLU MLP, SGD,
MSE on seeded synthetic regression data) with a real ``ReduceOnPlateauLR`` in ``param_scheduler``, a
``BaseMetric`` that reports the validation loss as ``val_loss`` (a Python float), the default hooks
(``CheckpointHook`` every epoch, ``LoggerHook``) and the default ``LocalVisBackend``, which writes
``vis_data/scalars.json`` (moved to the scenario folder; MMEngine names its folder by a timestamp).
The Runner sets the scheduler's ``end`` to ``max_epochs``: the last epoch's validation is never used.

Scenarios (one sub-folder each; the ground truth is in ``<scenario>/truth.json``):

* ``plain``: 16 epochs, ``patience=1, factor=0.5, cooldown=1, threshold=0.02``; ``epoch_8.pth`` and ``epoch_16.pth``
  kept.
* ``begin``: as ``plain`` with ``begin=3``: the first two validations are not plateau steps.

``truth.json`` holds ``live``, recorded from the live objects (``_truth.py``'s format): every plateau step of
the real scheduler with the state after it (``last_epoch`` = the number of plateau steps taken, i.e. MMEngine's
``last_step + 1``; ``last_step`` itself is in ``mmengine_steps``), the lr every validation row's epoch trained
with, every evaluation the scheduler was given outside its ``[begin, end)`` window (``unused``), and which
file was saved when.

MMEngine's ``Runner`` imports ``mmengine.visualization``, which imports ``cv2`` at module level and uses it only
to draw images. When OpenCV is not installed a stand-in module that raises on any use is registered as ``cv2``
(``_cv2_stub``), so ``pip install mmengine-lite`` (MMEngine's code without the OpenCV requirement) suffices; the
code that runs is MMEngine's own, unmodified.

Determinism: the CPU kernels are pinned before torch is imported (``_pin_cpu.py``), one thread, seeded data
and ``randomness=dict(seed=...)``: a rerun on the same machine writes the same numbers; another CPU trains to
other last bits, so no test compares two runs' numbers.
"""

from __future__ import annotations

import _pin_cpu  # noqa: F401 - must run before torch loads (see _pin_cpu.py)

# isort: split

import importlib.util
import shutil
import sys
import types
import warnings
from pathlib import Path
from typing import Any


def _cv2_stub() -> None:
    """Register a ``cv2`` that raises on use when OpenCV is absent (MMEngine imports it only to draw)."""
    if importlib.util.find_spec("cv2") is not None:
        return

    class _Missing(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            if name.startswith("__") and name != "__version__":
                raise AttributeError(name)
            # an ImportError: MMEngine wraps its optional uses of OpenCV (``cv2.setNumThreads`` in
            # ``set_multi_processing``, ``cv2.__version__`` in ``collect_env``) in ``try: import cv2 ...
            # except ImportError``, so they behave as without OpenCV; any other use fails loudly
            raise ImportError(f"cv2.{name}: OpenCV is not installed (make_mmengine.py's stand-in)")

    sys.modules["cv2"] = _Missing("cv2")


_cv2_stub()

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mmengine  # noqa: E402
from _truth import Recorder, dumps  # noqa: E402 - the sibling module
from mmengine.evaluator import BaseMetric  # noqa: E402
from mmengine.model import BaseModel  # noqa: E402
from mmengine.optim.scheduler import ReduceOnPlateauLR  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

N_FEATURES = 8
N_TRAIN = 64
N_VAL = 64
BATCH_SIZE = 16  # 4 training iterations per epoch
SEED = 3
DATA_SEED = 1
LR = 0.05
MAX_EPOCHS = 16
SCHED = dict(monitor="val_loss", rule="less", patience=1, factor=0.5, cooldown=1, threshold=0.02)
VERSIONS = {"torch": torch.__version__, "mmengine": mmengine.__version__}
SCENARIOS = {
    "plain": {"keep": ("epoch_8.pth", "epoch_16.pth")},
    "begin": {"keep": ("epoch_16.pth",), "begin": 3},
}


# --------------------------------------------------------------------------------------------------
# data, model, metric


class Regression(Dataset):  # type: ignore[type-arg]
    """Seeded y = w.x + noise, one dict per sample."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(N_FEATURES, generator=torch.Generator().manual_seed(DATA_SEED))
        self.x = torch.randn(n, N_FEATURES, generator=g)
        self.y = self.x @ w + torch.randn(n, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"inputs": self.x[i], "targets": self.y[i]}


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


class MLP(BaseModel):
    """The 8-16-1 ReLU MLP; ``loss`` mode returns MMEngine's loss dict, ``predict`` the squared errors."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(N_FEATURES, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, mode: str = "tensor") -> Any:
        out = self.net(inputs).squeeze(-1)
        if mode == "loss":
            return {"loss": nn.functional.mse_loss(out, targets)}
        if mode == "predict":
            return [((out - targets) ** 2).detach()]
        return out


class ValLoss(BaseMetric):
    """The validation MSE as a Python float under the key ``val_loss``."""

    def process(self, data_batch: Any, data_samples: Any) -> None:
        for sq in data_samples:
            self.results.append((float(sq.sum()), len(sq)))

    def compute_metrics(self, results: list[Any]) -> dict[str, float]:
        return {"val_loss": sum(s for s, _ in results) / sum(n for _, n in results)}


# --------------------------------------------------------------------------------------------------
# recording the live scheduler


class _Proxy:
    """MMEngine's scheduler in ``_truth.Recorder``'s terms (``last_epoch``: plateau steps taken)."""

    def __init__(self, sched: ReduceOnPlateauLR) -> None:
        self.last_epoch = sched.last_step + 1
        self.best = sched.best
        self.num_bad_epochs = sched.num_bad_epochs
        self.cooldown_counter = sched.cooldown_counter
        self.optimizer = sched.optimizer


class Live:
    """Wraps the real scheduler's ``step`` and the Runner's ``save_checkpoint`` for one scenario."""

    def __init__(self) -> None:
        self.recorder = Recorder()
        self.proxy: _Proxy | None = None
        self.sched: ReduceOnPlateauLR | None = None
        self.unused: list[dict[str, Any]] = []
        self.mmengine_steps: list[dict[str, Any]] = []
        self.epoch_lrs: dict[int, list[float]] = {}

    def install(self) -> None:
        original = ReduceOnPlateauLR.step
        live = self

        def step(sched: ReduceOnPlateauLR, metrics: Any = None) -> None:
            if metrics is None:  # after_train_epoch: only counts _global_step
                return original(sched, metrics)
            lrs = [float(g["lr"]) for g in sched.optimizer.param_groups]
            gs, before = sched._global_step, sched.last_step
            epoch = gs  # the Runner validates after epoch gs (1-based), after after_train_epoch's count
            row = live.recorder.row(epoch, live.epoch_lrs[epoch])
            original(sched, metrics)
            value = float(metrics[sched.monitor])
            if sched.last_step == before:  # outside [begin, end): not a plateau step
                live.unused.append({"row": row, "global_step": gs, "metric": value})
                return None
            if live.sched is None:
                live.sched = sched
            proxy = _Proxy(sched)
            state = (before + 1, float(sched.best), None, None)  # before-state only feeds schedulers[...]
            if not live.recorder.schedulers:
                live.recorder._objects.append(proxy)  # type: ignore[arg-type]
                live.recorder.schedulers.append({"first_step": None, "before": None})
                live.recorder._active = 0
                state = (0, 1e9, 0, 0)
            live.recorder._objects[0] = proxy  # type: ignore[assignment]
            live.recorder._step(proxy, value, lrs, state)  # type: ignore[arg-type]
            live.mmengine_steps.append({"last_step": sched.last_step, "_global_step": gs,
                                        "best_type": type(sched.best).__name__})
            return None

        ReduceOnPlateauLR.step = step  # type: ignore[method-assign]

        save = Runner.save_checkpoint

        def save_checkpoint(runner: Runner, out_dir: str, filename: str, *a: Any, **kw: Any) -> None:
            save(runner, out_dir, filename, *a, **kw)
            live.recorder.saved(filename)

        Runner.save_checkpoint = save_checkpoint  # type: ignore[method-assign]


class EpochLr:
    """A hook recording every group's lr at the start of each training epoch (1-based label)."""

    priority = "NORMAL"

    def __init__(self, live: Live) -> None:
        self.live = live


# --------------------------------------------------------------------------------------------------


def run(name: str, out: Path) -> dict[str, Any]:
    cfg = SCENARIOS[name]
    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    work = folder / "work_dir"
    live = Live()
    live.install()
    from mmengine.hooks import Hook

    class LrHook(Hook):
        priority = "NORMAL"

        def before_train_epoch(self, runner: Runner) -> None:
            live.epoch_lrs[runner.epoch + 1] = [float(g["lr"]) for g in runner.optim_wrapper.param_groups]

    sched = dict(type="ReduceOnPlateauLR", **SCHED)
    if "begin" in cfg:
        sched["begin"] = cfg["begin"]
    runner = Runner(
        model=MLP(),
        work_dir=str(work),
        train_dataloader=DataLoader(Regression(N_TRAIN, 11), batch_size=BATCH_SIZE, shuffle=True,
                                    collate_fn=collate, generator=torch.Generator().manual_seed(SEED)),
        val_dataloader=DataLoader(Regression(N_VAL, 12), batch_size=N_VAL, collate_fn=collate),
        val_evaluator=[ValLoss()],
        train_cfg=dict(by_epoch=True, max_epochs=MAX_EPOCHS, val_interval=1),
        val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=LR)),
        param_scheduler=sched,
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1),
                           logger=dict(type="LoggerHook", interval=1)),
        custom_hooks=[LrHook()],
        randomness=dict(seed=SEED),
        default_scope="mmengine",
        experiment_name=f"make_mmengine_{name}",
    )
    runner.train()

    # keep a few checkpoints and the scalars log, at fixed names
    for p in work.glob("epoch_*.pth"):
        if p.name in cfg["keep"]:
            shutil.move(str(p), folder / p.name)
    scalars = next(work.glob("*/vis_data/scalars.json"))
    shutil.move(str(scalars), folder / "scalars.json")
    shutil.rmtree(work)
    live.recorder.forget_checkpoints(set(cfg["keep"]))
    truth = {
        "scenario": name,
        "versions": VERSIONS,
        "setup": {"scheduler": {**SCHED, **({"begin": cfg["begin"]} if "begin" in cfg else {}),
                                "end": MAX_EPOCHS}, "lr": LR, "max_epochs": MAX_EPOCHS},
        "log": None,
        "live": live.recorder.as_json(unused=live.unused, mmengine_steps=live.mmengine_steps),
    }
    (folder / "truth.json").write_text(dumps(truth))
    return truth


def main(argv: list[str]) -> None:
    args = [a for a in argv if not a.startswith("--")]
    only = argv[argv.index("--only") + 1:] if "--only" in argv else list(SCENARIOS)
    out = Path(args[0]) if args and args[0] not in only else Path(__file__).resolve().parent / "mmengine"
    warnings.simplefilter("ignore")
    for name in only:
        t = run(name, out)
        print(name, len(t["live"]["steps"]["row"]), "steps")


if __name__ == "__main__":
    main(sys.argv[1:])
