"""timm: ``train.py``'s checkpoints (``epoch``, ``arch``, ``state_dict``, ``optimizer``, ``version``, ``metric``)
and its ``PlateauLRScheduler`` (``timm/scheduler/plateau_lr.py``, timm 1.0.31).

Recognised by the keys timm's ``CheckpointSaver._save`` writes, never by a file name. What timm implies:

* ``PlateauLRScheduler.state_dict()`` is only ``best`` and ``last_epoch`` (timm issue #871): the counters and
  every hyperparameter are lost, so keys the state lacks take timm's constructor defaults, not torch's
  (``mode='max'``, ``decay_rate=0.1``, ``patience_t=10``, ``threshold=1e-4``, ``cooldown_t=0``, ``lr_min=0``).
* ``train.py`` writes the epoch's summary row, saves (``saver.save_checkpoint(epoch, metric)``), and only then calls
  ``lr_scheduler.step(epoch + 1, metric)``: a checkpoint holds the state *before* its epoch's step, so after the
  step of 0-based epoch ``e`` the wrapped torch scheduler's ``last_epoch`` is ``e + 1``, the next epoch (minus
  the warm-up epochs, which never step it). A resume starts at ``epoch + 1`` and calls ``step(start_epoch)``
  without a metric: the checkpoint epoch's metric never reaches the resumed scheduler.
* ``Scheduler.__init__`` sets every param group's lr to its ``initial_lr`` (which it writes into the optimizer):
  a resume that builds a new scheduler after loading the optimizer trains again with the initial lr.
* Warm-up (``warmup_t``, ``warmup_lr_init``) and noise (``noise_range_t``, ``noise_type``, ``noise_pct``,
  ``noise_std``, ``noise_seed``) are applied by ``PlateauLRScheduler.step`` around the torch scheduler: ``replay``
  below is the whole of it, torch's arithmetic and timm's, without importing either; ``noise`` reproduces timm's
  ``torch.Generator().manual_seed(noise_seed + epoch)`` draws (MT19937 and torch's CPU normal/uniform kernels).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from plateau_forensics.stacks import Stack
from plateau_forensics.state import PlateauConfig, PlateauState, from_state_dict

if TYPE_CHECKING:
    from plateau_forensics.diagnose import Finding
    from plateau_forensics.engine import Trace
    from plateau_forensics.loader import Checkpoint
    from plateau_forensics.losses import LossLog

#: timm's PlateauLRScheduler defaults, as the wrapped torch scheduler gets them (threshold_mode rel, eps 1e-8).
TIMM_DEFAULTS = PlateauConfig(mode="max", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel",
                              cooldown=0, min_lr=0.0, eps=1e-8)
#: The keys ``CheckpointSaver._save`` always writes (``state_dict`` unless a task saves its own state).
SAVER_KEYS = frozenset({"epoch", "arch", "optimizer", "version"})
#: timm's default ``noise_seed`` (``Scheduler.__init__``: 42 when None; train.py passes ``args.seed``, default 42).
DEFAULT_NOISE_SEED = 42


# -- recognising timm's files -------------------------------------------------------------------------------
def owns_tree(tree: Any, key_path: str) -> bool:
    """timm's CheckpointSaver layout: ``epoch``, ``arch``, ``optimizer``, an integer ``version`` and the model's
    ``state_dict`` (or a task's state) at the top level."""
    if not isinstance(tree, dict) or not SAVER_KEYS <= tree.keys():
        return False
    version = tree.get("version")
    return (isinstance(version, int) and not isinstance(version, bool) and isinstance(tree.get("arch"), str)
            and ("state_dict" in tree or "task_state" in tree))


def adapt(ck: Checkpoint, tree: Any) -> Checkpoint:
    """The checkpoint with timm's constructor defaults for every hyperparameter the saved state lacks."""
    from plateau_forensics.loader import SavedState

    if not any(k in ck.state.missing for k in ("mode", "factor", "patience", "threshold", "cooldown", "min_lrs")):
        return ck  # a full torch state (the user saved scheduler.lr_scheduler.state_dict()): it wins
    config, state = from_state_dict(ck.raw, TIMM_DEFAULTS)
    state = replace(state, extras=SavedState(state.extras), best_dtype=ck.state.best_dtype)
    return replace(ck, config=config, state=state)




# -- timm's PlateauLRScheduler, replayed --------------------------------------------------------------------
@dataclass(frozen=True)
class TimmPlateau:
    """``PlateauLRScheduler``'s constructor arguments (timm's names and defaults, timm 1.0.31).

    ``config`` is the wrapped torch scheduler's (``decay_rate`` -> factor, ``patience_t`` -> patience,
    ``cooldown_t`` -> cooldown, ``lr_min`` -> min_lr); frozen so that a replay cannot change what it explains.
    """

    config: PlateauConfig = TIMM_DEFAULTS
    warmup_t: int = 0
    warmup_lr_init: float = 0.0
    noise_range_t: float | tuple[float, ...] | None = None
    noise_type: str = "normal"
    noise_pct: float = 0.67
    noise_std: float = 1.0
    noise_seed: int = DEFAULT_NOISE_SEED

    def noisy(self, t: float) -> bool:
        """timm's ``Scheduler._is_apply_noise(t)``."""
        r = self.noise_range_t
        if r is None:
            return False
        if isinstance(r, tuple):
            return bool(r[0] <= t < r[1])
        return bool(t >= r)

    def warmup_steps(self, base_lrs: Sequence[float]) -> list[float]:
        """Per group, the warm-up increment ``(base - warmup_lr_init) / warmup_t`` (timm's ``warmup_steps``)."""
        if not self.warmup_t:
            return [1.0 for _ in base_lrs]
        return [(v - self.warmup_lr_init) / self.warmup_t for v in base_lrs]


def _f32(x: float) -> float:
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


class _MT19937:
    """torch's CPU generator engine (``at::mt19937``), seeded as ``torch.Generator().manual_seed(seed)`` is."""

    def __init__(self, seed: int) -> None:
        mt = [seed & 0xFFFFFFFF]
        for i in range(1, 624):
            mt.append((1812433253 * (mt[-1] ^ (mt[-1] >> 30)) + i) & 0xFFFFFFFF)
        self.mt, self.i = mt, 624

    def next32(self) -> int:
        mt = self.mt
        if self.i >= 624:
            for k in range(624):
                y = (mt[k] & 0x80000000) | (mt[(k + 1) % 624] & 0x7FFFFFFF)
                mt[k] = mt[(k + 397) % 624] ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)
            self.i = 0
        y = mt[self.i]
        self.i += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C5680
        y ^= (y << 15) & 0xEFC60000
        return y ^ (y >> 18)

    def uniform53(self) -> float:
        """``at::uniform_real_distribution<double>(0, 1)``: ``random64()`` (two draws, the first high) to 53 bits."""
        v = (self.next32() << 32) | self.next32()
        return (v & ((1 << 53) - 1)) * (1.0 / (1 << 53))


def _randn(seed: int) -> Iterator[float]:
    """Successive ``torch.randn(1, generator=g).item()`` values after ``g.manual_seed(seed)``.

    torch's CPU normal kernel for a one-element float tensor draws ``at::normal_distribution<double>``: Box-Muller
    from two 53-bit uniforms, the ``r * sin`` half cached in the generator for the next call; each value is
    rounded to float32 (the tensor's dtype).
    """
    g = _MT19937(seed)
    while True:
        u1, u2 = g.uniform53(), g.uniform53()
        r = math.sqrt(-2.0 * math.log1p(-u2))
        theta = 2.0 * math.pi * u1
        yield _f32(r * math.cos(theta))
        yield _f32(r * math.sin(theta))


def noise(p: TimmPlateau, t: int) -> float:
    """timm's ``Scheduler._calculate_noise(t)``, bit for bit (``torch.Generator`` seeded ``noise_seed + t``)."""
    seed = p.noise_seed + t
    if p.noise_type == "normal":
        if not p.noise_pct > 0:
            raise ValueError(f"noise_pct={p.noise_pct}: timm's normal noise would resample forever")
        for n in _randn(seed):  # resampled until inside the limit, as timm does
            v = n * p.noise_std
            if abs(v) < p.noise_pct:
                return v
    g = _MT19937(seed)
    x = _f32((g.next32() & ((1 << 24) - 1)) * (1.0 / (1 << 24)))  # torch.rand(1): 24-bit float32 uniform
    return 2 * (x - 0.5) * p.noise_pct


@dataclass(frozen=True)
class TimmStep:
    """One ``PlateauLRScheduler.step(epoch, metric)``: the lrs after it and the wrapped scheduler's state."""

    epoch: int
    metric: float | None
    stepped: bool
    lrs: tuple[float, ...]
    plateau_lrs: tuple[float, ...]
    state: PlateauState


def replay(p: TimmPlateau, calls: Sequence[tuple[int, float | None]], base_lrs: Sequence[float], *,
           state: PlateauState | None = None) -> tuple[tuple[float, ...], list[TimmStep]]:
    """Replay ``PlateauLRScheduler(optimizer, ...)`` then ``step(epoch, metric)`` for each call, bit for bit.

    Args:
        p: timm's constructor arguments.
        calls: ``(epoch, metric)`` per ``step()`` call (train.py: ``(e + 1, eval metric)``; a resume's
            ``(start_epoch, None)``).
        base_lrs: each group's ``initial_lr`` (the lr at construction when the group had none).
        state: the wrapped torch scheduler's state after construction (a ``load_state_dict``), else fresh.

    Returns:
        The lrs right after construction (warm-up sets ``warmup_lr_init``), and one ``TimmStep`` per call.
    """
    from plateau_forensics.engine import run

    base = [float(v) for v in base_lrs]
    steps = p.warmup_steps(base)
    lrs = [p.warmup_lr_init] * len(base) if p.warmup_t else list(base)
    start = tuple(lrs)
    inner = state if state is not None else replace(PlateauState.fresh(p.config, lrs), last_lr=tuple(lrs))
    restore: list[float] | None = None
    out: list[TimmStep] = []
    for epoch, metric in calls:
        stepped = False
        if epoch <= p.warmup_t:
            lrs = [p.warmup_lr_init + epoch * s for s in steps]
        else:
            if restore is not None:
                lrs, restore = restore, None
            if metric is not None:
                t = run(p.config, [metric], lrs, state=inner, strict=False)
                inner, lrs, stepped = t.final, list(t.lrs), True
            if p.noisy(epoch):
                n = noise(p, epoch)
                restore = [float(v) for v in lrs]
                lrs = [v + v * n for v in restore]
        plateau = tuple(restore) if restore is not None else tuple(lrs)
        out.append(TimmStep(epoch, metric, stepped, tuple(lrs), plateau, inner))
    return start, out


# -- what timm's own code did to the logged lrs ------------------------------------------------------------
#: Noise seeds tried besides timm's default 42 (train.py passes ``--seed``): small integers, tested exactly.
NOISE_SEEDS = (DEFAULT_NOISE_SEED, *range(0, 100))
#: Reductions followed from the initial lr when listing the lrs the plateau scheduler can hold.
MAX_LEVELS = 200


@dataclass(frozen=True)
class Account:
    """What timm's ``PlateauLRScheduler`` did to the lrs around the plateau steps, read from the files exactly.

    Attributes:
        base: the groups' ``initial_lr`` (timm's base values).
        warmup_t, warmup_lr_init: the warm-up that reproduces the logged lrs exactly (``warmup_t`` 0: none).
        warmup_rows: the log rows trained with a warm-up lr before the first plateau step.
        noise: the noise settings that reproduce the logged lrs exactly (None: no noise found).
        noisy: per noisy log row, the lr the plateau scheduler held and the noise drawn for that epoch.
        checkpoint_noise: the plateau lr and noise behind the checkpoint optimizer's lr, if it was noisy.
    """

    base: tuple[float, ...]
    warmup_t: int = 0
    warmup_lr_init: float = 0.0
    warmup_rows: tuple[int, ...] = ()
    noise: TimmPlateau | None = None
    noisy: tuple[tuple[int, float, float], ...] = ()
    checkpoint_noise: tuple[float, float] | None = None

    @property
    def changed(self) -> bool:
        return bool(self.warmup_rows or self.noisy or self.checkpoint_noise)


def _summary_lr(v: float, n: int) -> float:
    """timm's summary ``lr``: ``sum(lrs) / len(lrs)`` over ``n`` groups holding ``v``."""
    return sum([v] * n) / n


def _inside(v: float, iv: tuple[float, float] | None) -> bool:
    return iv is not None and iv[0] <= v <= iv[1]


def _levels(config: PlateauConfig, start: float) -> list[float]:
    """The lrs a plateau scheduler holds from ``start`` on: each reduction as torch computes it."""
    from plateau_forensics.engine import run

    out, st, lrs = [start], None, (start,)
    for _ in range(MAX_LEVELS):
        # a bad epoch past patience: one forced reduction (patience -1 reduces on every step)
        t = run(replace(config, patience=-1, cooldown=0), [math.nan], lrs, state=st, strict=False)
        st, lrs = t.final, t.lrs
        if lrs[0] == out[-1] or math.isnan(lrs[0]):
            break
        out.append(lrs[0])
    return out


def _warmup(log: LossLog, base: float, n: int) -> tuple[int, float, tuple[int, ...]] | None:
    """``(warmup_t, warmup_lr_init, rows)`` when the first run's logged lrs are timm's linear warm-up exactly."""
    rows = [i for i in range(len(log.epochs)) if log.lrs is not None and log.lrs[i] is not None
            and log.lrs[i][0] is not None]
    by_epoch: dict[float, int] = {}
    for i in rows:
        if i in log.boundaries:
            break  # warm-up is the first run's
        by_epoch.setdefault(log.epochs[i], i)
    if 0 not in by_epoch or 1 not in by_epoch:
        return None
    init = float(log.lrs[by_epoch[0]][0])  # type: ignore[index,arg-type]
    lr1 = float(log.lrs[by_epoch[1]][0])  # type: ignore[index,arg-type]
    if init == base or lr1 == init or not all(map(math.isfinite, (init, lr1, base))):
        return None
    guess = (base - init) / (lr1 - init)
    if not math.isfinite(guess) or not 1 <= guess < 1e6:
        return None
    for w in sorted({max(1, int(guess) + d) for d in (-1, 0, 1, 2)}):
        step = (base - init) / w
        # row e (e <= w) trains with init + e * step: set by step(e) at the end of epoch e - 1
        ok = all(_inside(_summary_lr(init + e * step, n), log.lr_intervals(by_epoch[e])[0])  # type: ignore[index]
                 for e in range(w + 1) if e in by_epoch)
        if ok and all(e in by_epoch for e in range(w + 1)):
            return w, init, tuple(by_epoch[e] for e in range(w))
    return None


def _noise_for(p: TimmPlateau, levels: Sequence[float], e: float, iv: tuple[float, float] | None,
               n: int) -> tuple[float, float] | None:
    """The plateau lr ``x`` and noise with ``x + x * noise`` the logged value at epoch ``e``, if exactly one."""
    if not float(e).is_integer() or not p.noisy(e):
        return None
    v = noise(p, int(e))
    hits = [x for x in levels if _inside(_summary_lr(x + x * v, n), iv)]
    return (hits[0], v) if len(set(hits)) == 1 else None


def account(ck: Checkpoint, log: LossLog) -> Account | None:
    """What timm's warm-up and noise did to the logged lrs (and the checkpoint's), when the files show it exactly.

    Only one lr per row is decidable (timm's summary logs the mean over groups), so every group must share one
    ``initial_lr``. Noise is looked for with timm's defaults (normal, ``noise_pct`` 0.67, ``noise_std`` 1) and
    seeds ``NOISE_SEEDS``; lrs no setting reproduces exactly are left to the stories as unexplained.
    """
    base = ck.initial_lrs
    if base is None or log.lrs is None or len(set(base)) != 1:
        return None
    n = len(base)
    out = Account(tuple(base))
    levels = _levels(ck.config, base[0])
    w = _warmup(log, base[0], n)
    if w is not None:
        wt, init, rows = w
        end = init + wt * ((base[0] - init) / wt)  # the lr the plateau scheduler starts from
        levels = sorted(set(levels) | set(_levels(ck.config, end)), reverse=True)
        out = replace(out, warmup_t=wt, warmup_lr_init=init, warmup_rows=rows)
    ivs = {i: log.lr_intervals(i) for i in range(len(log.epochs))}
    odd = [i for i, iv in ivs.items() if i not in out.warmup_rows and iv and iv[0] is not None
           and not any(_inside(_summary_lr(x, n), iv[0]) for x in levels)]
    if odd:
        for seed in NOISE_SEEDS:
            p = TimmPlateau(ck.config, noise_range_t=(log.epochs[odd[0]], math.inf), noise_seed=seed)
            if _noise_for(p, levels, log.epochs[odd[0]], ivs[odd[0]][0], n) is None:  # type: ignore[index]
                continue
            found = {i: _noise_for(p, levels, log.epochs[i], ivs[i][0], n) for i in odd}  # type: ignore[index]
            noisy = tuple((i, *hit) for i, hit in found.items() if hit is not None)
            lo, hi = min(log.epochs[i] for i, *_ in noisy), max(log.epochs[i] for i, *_ in noisy)
            out = replace(out, noise=replace(p, noise_range_t=(lo, hi + 1)), noisy=noisy)
            break
    if out.noise is not None and ck.optimizer_lrs and ck.epoch is not None and len(set(ck.optimizer_lrs)) == 1:
        lr = ck.optimizer_lrs[0]
        if not any(x == lr for x in levels):  # saved before its epoch's step: the lr that epoch trained with
            hit = _noise_for(replace(out.noise, noise_range_t=(-math.inf, math.inf)), levels, ck.epoch,
                             (lr, lr), 1)
            out = replace(out, checkpoint_noise=hit)
    return out if out.changed else None


def plateau_log(ck: Checkpoint, log: LossLog) -> tuple[Checkpoint, LossLog]:
    """The checkpoint and log as timm's wrapped torch scheduler saw them: the warm-up rows left out (their metric
    never reached it), noisy rows and a noisy optimizer lr with the lr the plateau scheduler held (which
    ``PlateauLRScheduler.step`` restores before stepping it)."""
    a = account(ck, log)
    if a is None or log.lrs is None:
        return ck, log
    lrs = list(log.lrs)
    for i, x, _ in a.noisy:
        lrs[i] = (x,) * len(lrs[i])  # timm's summary lr: the mean of identical group lrs, x itself
    seen = ck
    if a.checkpoint_noise is not None and ck.optimizer_lrs is not None:
        seen = replace(ck, optimizer_lrs=(a.checkpoint_noise[0],) * len(ck.optimizer_lrs))
    view = replace(log, lrs=tuple(lrs))
    if a.warmup_rows:
        skip = set(a.warmup_rows)
        view = view.pick_rows([i for i in range(len(log)) if i not in skip])
    return seen, view


def findings(trace: Trace) -> list[Finding]:
    """What only timm causes, from evidence in the inputs: its defaults in effect, its warm-up, its lr noise."""
    from plateau_forensics.diagnose import Finding

    ck, log = trace.checkpoint, trace.log
    out: list[Finding] = []
    if ck is None:
        return out
    missing = [k for k in ("mode", "factor", "patience", "threshold", "cooldown", "min_lrs") if k in ck.state.missing]
    defaults = {"mode": ("mode", "'max'"), "factor": ("decay_rate", "0.1"), "patience": ("patience_t", "10"),
                "threshold": ("threshold", "1e-4"), "cooldown": ("cooldown_t", "0"), "min_lrs": ("lr_min", "0")}
    same = [k for k in missing if getattr(ck.config, "min_lr" if k == "min_lrs" else k)
            == getattr(TIMM_DEFAULTS, "min_lr" if k == "min_lrs" else k)]
    if same:
        words = ", ".join(f"{defaults[k][0]}={defaults[k][1]}" for k in same)
        out.append(Finding(
            "timm-defaults", "info", ck.epoch,
            f"PlateauLRScheduler.state_dict() saves no hyperparameters: replayed with timm's defaults {words}"
            + (" (timm's mode default is 'max', torch's is 'min')" if "mode" in same else ""),
            {"defaults": {defaults[k][0]: getattr(ck.config, "min_lr" if k == "min_lrs" else k) for k in same}},
            "if the run passed others, give them (--mode, --factor, --patience, --threshold, --cooldown, --min-lr)"))
    a = account(ck, log) if log is not None else None
    if a is None:
        return out
    if a.warmup_rows:
        first, last = log.epochs[a.warmup_rows[0]], log.epochs[a.warmup_rows[-1]]
        out.append(Finding(
            "timm-warmup", "info", last,
            f"epochs {first}-{last} trained with timm's warm-up lrs (warmup_t={a.warmup_t}, warmup_lr_init="
            f"{a.warmup_lr_init:.6g} up to the initial_lr {a.base[0]:.6g}, reproduced exactly): PlateauLRScheduler "
            "sets them itself and never steps the torch scheduler during warm-up, so its last_epoch is "
            f"epoch + 1 - {a.warmup_t}",
            {"warmup_t": a.warmup_t, "warmup_lr_init": a.warmup_lr_init, "initial_lr": a.base[0],
             "epochs": [log.epochs[i] for i in a.warmup_rows]}))
    if a.noise is not None:
        p = a.noise
        epochs = [log.epochs[i] for i, *_ in a.noisy]
        text = (f"epochs {_ranges(epochs)} trained with timm's lr noise on top of the plateau lr (lr * (1 + n), n "
                f"normal from torch.Generator().manual_seed({p.noise_seed} + epoch), |n| < {p.noise_pct}, "
                f"noise_std={p.noise_std}; reproduced exactly): the replay shows the lr without noise, which "
                "PlateauLRScheduler restores before each step")
        if a.checkpoint_noise is not None:
            text += (f"; the checkpoint's optimizer holds epoch {ck.epoch}'s noisy lr {ck.optimizer_lrs[0]:.6g} "
                     f"(plateau lr {a.checkpoint_noise[0]:.6g})")
        out.append(Finding("timm-noise", "info", epochs[0] if epochs else None, text,
                           {"noise_seed": p.noise_seed, "noise_pct": p.noise_pct, "noise_std": p.noise_std,
                            "noise_type": p.noise_type, "epochs": epochs,
                            "noise": [v for _, _, v in a.noisy], "plateau_lrs": [x for _, x, _ in a.noisy]}))
    return out


def _ranges(values: Sequence[float]) -> str:
    out: list[str] = []
    for v in values:
        if out and isinstance(v, (int, float)) and out[-1].split("-")[-1] == str(v - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{v}"
        else:
            out.append(str(v))
    return ", ".join(out)


STACK = Stack(
    name="timm",
    title="timm",
    owns_tree=owns_tree,
    adapt=adapt,
    findings=findings,
    plateau_log=plateau_log,
    order="train.py writes the summary row, saves the checkpoint, then calls lr_scheduler.step(epoch + 1, metric); "
          "a resume starts at epoch + 1 with step(start_epoch) and no metric",
    saves_before_step=True,
    notes={
        "saved-before-step": " (timm's train.py saves before lr_scheduler.step(epoch + 1, metric))",
        "resume-skipped-step": " (timm's train.py resumes at epoch + 1: the checkpoint epoch's metric is never "
                               "stepped)",
        "partial-restore": " (timm's PlateauLRScheduler.load_state_dict sets only best and last_epoch)",
    },
)
