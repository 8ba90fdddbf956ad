"""DeepSpeed: ``engine.save_checkpoint(dir)`` directories (``latest``, ``<tag>/mp_rank_00_model_states.pt``).

``save_checkpoint`` writes ``<tag>/mp_rank_<mp>_model_states.pt``
(``zero_pp_rank_<dp>_mp_rank_<mp>_model_states.pt`` under ZeRO-3) with ``module``, ``optimizer`` (None under
ZeRO: then ``<tag>/*zero_pp_rank_<dp>_mp_rank_<mp>_optim_states.pt`` holds it), ``lr_scheduler`` (the
scheduler passed to ``deepspeed.initialize``), ``global_steps``, ``skipped_steps``, ``ds_config``,
``ds_version``, and the caller's ``client_state`` keys at the top level; the ``latest`` file names the last
tag (``global_step<N>`` unless the caller chose one). Both the run directory (with ``latest``) and a tag
directory are read; the weights are never read.

``DeepSpeedEngine.step()`` calls ``lr_scheduler.step()`` after every optimizer step that did not overflow. A
``ReduceLROnPlateau`` raises ``TypeError`` for the missing metric, and DeepSpeed then calls
``lr_scheduler.step(self.train_batch_size())``: the scheduler is stepped on every optimizer step with the
batch size as its metric. The saved state shows it: ``best`` equals ``ds_config``'s train batch size and
``last_epoch`` equals ``global_steps - skipped_steps``; a constant is never better than itself, so the lr is
cut every ``patience + 1`` steps (``cooldown + patience + 1`` with a cooldown) whatever the validation loss
does. When a fresh scheduler stepped that many times with that constant reproduces the saved counters, the
checkpoint is its own complete replay source: the steps are its log (``own_log``), and
``deepspeed-batch-size-metric`` names the cause.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from plateau_forensics.errors import CheckpointError, CheckpointValueError, SchedulerStateNotFound
from plateau_forensics.loader import (
    Checkpoint,
    as_mapping,
    checked_count,
    checkpoint_from_tree,
    find_plateau_states,
    is_regular_file,
    read_file,
    short_listing,
)
from plateau_forensics.stacks import Stack

#: ``latest`` holds one tag name; a larger file is not DeepSpeed's.
MAX_LATEST_BYTES = 4096
#: The model-states file of model-parallel rank ``mp`` (and data-parallel rank ``dp`` under ZeRO-3).
MODEL_STATES = re.compile(r"(?:zero_pp_rank_(\d+)_)?mp_rank_(\d+)_model_states\.pt")
#: The ZeRO optimizer partition of a data-parallel rank (``bf16_`` with bf16 training).
OPTIM_STATES = re.compile(r"(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_(\d+)_optim_states\.pt")
#: A tag names a directory inside the run directory: one path component.
_TAG = re.compile(r"[^/\\\x00]{1,255}")
#: At most this many steps are rebuilt as the checkpoint's own log (a longer run keeps the finding only).
MAX_OWN_LOG_STEPS = 100_000
_ZIP_LOCAL_HEADER = b"PK\x03\x04"


@dataclass(frozen=True)
class DeepSpeedCheckpoint(Checkpoint):
    """A DeepSpeed checkpoint, with what ``mp_rank_00_model_states.pt`` says about the engine.

    Args:
        tag: the tag directory read (``global_step80``).
        train_batch_size: ``ds_config``'s ``train_batch_size`` (else micro batch x accumulation x
            data-parallel size), the value DeepSpeed passes to a scheduler whose ``step()`` needs an argument.
        global_steps, skipped_steps: the engine's counters (skipped: fp16 overflows, no scheduler step).
        ds_version: the DeepSpeed release that wrote the file.
        batch_size_steps: the number of ``step(train_batch_size)`` calls that reproduce the saved counters
            from a fresh scheduler (``global_steps - skipped_steps``), when they do; else None.
    """

    tag: str = ""
    train_batch_size: int | None = None
    global_steps: int | None = None
    skipped_steps: int = 0
    ds_version: str | None = None
    batch_size_steps: int | None = None


def _zip_root(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(30)
            if len(head) < 30 or not head.startswith(_ZIP_LOCAL_HEADER):
                return None
            name = f.read(min(int.from_bytes(head[26:28], "little"), 300)).decode("utf-8", "replace")
    except OSError:
        return None
    return name.split("/", 1)[0] if "/" in name else None


def _model_states(d: Path) -> list[Path]:
    """``d``'s model-states files written by ``torch.save`` under their own name, model-parallel rank 0 and
    the lowest data-parallel rank first."""
    found = []
    try:
        entries = list(d.iterdir())
    except OSError:
        return []
    for p in entries:
        m = MODEL_STATES.fullmatch(p.name)
        if m is not None and is_regular_file(p) and _zip_root(p) == p.stem:
            found.append(((int(m.group(2)), int(m.group(1) or 0)), p))
    return [p for _, p in sorted(found)]


def _latest_tag(d: Path) -> str | None:
    """The tag named by ``d/latest`` when it names a subdirectory of ``d`` (never a path elsewhere)."""
    latest = d / "latest"
    if not is_regular_file(latest):
        return None
    try:
        if latest.stat().st_size > MAX_LATEST_BYTES:
            return None
        text = latest.read_bytes().decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not _TAG.fullmatch(text) or text in (".", ".."):
        return None
    return text if (d / text).is_dir() else None


def _tag_dir(d: Path) -> Path | None:
    """The directory holding the model states: ``d`` itself (a tag directory), or the one ``latest`` names."""
    if _model_states(d):
        return d
    tag = _latest_tag(d)
    if tag is not None and _model_states(d / tag):
        return d / tag
    return None


def owns_dir(d: Path) -> bool:
    """A DeepSpeed checkpoint: a tag directory holding ``mp_rank_00_model_states.pt`` (a ``torch.save`` zip
    rooted at its stem), or a run directory whose ``latest`` names such a tag directory."""
    return _tag_dir(d) is not None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def train_batch_size(ds_config: Any, dp_world_size: Any) -> int | None:
    """What ``engine.train_batch_size()`` returned: the config's value, else micro batch x accumulation x
    data-parallel size."""
    cfg = as_mapping(ds_config)
    if cfg is None:
        return None
    tbs = _int(cfg.get("train_batch_size"))
    if tbs is not None:
        return tbs
    micro, gas = (
        _int(cfg.get("train_micro_batch_size_per_gpu")),
        _int(cfg.get("gradient_accumulation_steps", 1)),
    )
    world = _int(dp_world_size)
    return micro * gas * world if micro is not None and gas is not None and world is not None else None


def constant_steps(ck: Checkpoint, value: float, steps: int) -> bool:
    """A fresh scheduler with the checkpoint's hyperparameters, stepped ``steps`` times with ``value``, ends
    in the saved ``best``, ``num_bad_epochs`` and ``cooldown_counter``."""
    from plateau_forensics.engine import run

    if steps <= 0 or steps > MAX_OWN_LOG_STEPS:
        return False
    # the counters do not depend on the lrs (torch resets them on every reduction, applied or not)
    groups = max(1, len(ck.state.min_lrs), len(ck.optimizer_lrs or ()))
    end = run(ck.config, [value] * steps, (1.0,) * groups, strict=False).final
    return (end.best, end.num_bad_epochs, end.cooldown_counter) == (
        ck.state.best,
        ck.state.num_bad_epochs,
        ck.state.cooldown_counter,
    )


def load_dir(d: Path, scheduler: str | None, loader: Any) -> Checkpoint:
    """Read a DeepSpeed run or tag directory: the plateau state, lrs and counters of its model-states file."""
    tag_dir = _tag_dir(d)
    if tag_dir is None:
        listing = short_listing(sorted(q.name[:80] for q in d.iterdir())) or "nothing"
        raise CheckpointError(
            f"{d}: no DeepSpeed model-states file (its 'latest' names none); it holds: {listing}"
        )
    states = _model_states(tag_dir)[0]
    tf = read_file(states, loader)
    tree = tf.obj
    top = as_mapping(tree)
    if top is None:
        raise CheckpointValueError(f"{states}: not a mapping of engine states")
    files = [(states.name, tf)]
    extra: dict[str, Any] = {}
    opt = as_mapping(top.get("optimizer"))
    if opt is None or "param_groups" not in opt:  # ZeRO keeps the optimizer in the partition files
        parts = sorted(
            (p for p in tag_dir.iterdir() if OPTIM_STATES.fullmatch(p.name) and is_regular_file(p)),
            key=lambda p: tuple(int(g) for g in OPTIM_STATES.fullmatch(p.name).groups()[::-1]),  # type: ignore[union-attr]
        )
        if parts:
            ptf = read_file(parts[0], loader)
            extra[parts[0].name] = ptf.obj
            files.append((parts[0].name, ptf))
    neutralised = tuple(dict.fromkeys(n for _, f in files for n in f.neutralised))
    integrity = tuple(f"{name}: {note}" for name, f in files for note in f.integrity)
    inner = scheduler.rpartition(":")[2] if scheduler is not None else None
    if inner is not None and not any(k == inner for k, _ in find_plateau_states(tree)):
        raise SchedulerStateNotFound(
            f"{states}: no plateau state at {inner!r}; found: "
            f"{short_listing([repr(k) for k, _ in find_plateau_states(tree)]) or 'none'}"
        )
    try:
        ck = checkpoint_from_tree(
            tree,
            str(d),
            scheduler=inner,
            loader=loader,
            extra_trees=extra or None,
            neutralised=neutralised,
            integrity=integrity,
        )
    except CheckpointError as exc:
        raise type(exc)(f"{states.relative_to(d) if states != d else states.name}: {exc}") from None
    where = states.relative_to(d).as_posix()
    steps = checked_count(top.get("global_steps"), f"{states}:global_steps", integral=True)
    skipped = checked_count(top.get("skipped_steps"), f"{states}:skipped_steps", integral=True) or 0
    tbs = train_batch_size(top.get("ds_config"), top.get("dp_world_size"))
    version = top.get("ds_version")
    base = {f.name: getattr(ck, f.name) for f in fields(Checkpoint)}
    base.update(
        key_path=f"{where}:{ck.key_path}" if ck.key_path else where,
        framework=STACK_NAME,
        global_step=steps if ck.global_step is None else ck.global_step,
    )
    ds = DeepSpeedCheckpoint(
        **base,
        tag=tag_dir.name,
        train_batch_size=tbs,
        global_steps=steps,
        skipped_steps=skipped,
        ds_version=version if isinstance(version, str) else None,
    )
    n = (steps - skipped) if steps is not None else None
    if (
        tbs is not None
        and n is not None
        and not ck.partial
        and ck.state.last_epoch_base == 0
        and ck.state.last_epoch == n
        and math.isfinite(ck.state.best)
        and ck.state.best == float(tbs)
        and constant_steps(ck, float(tbs), n)
    ):
        # every optimizer step fed step(train_batch_size): the checkpoint is the whole history. Which global
        # steps overflowed is not saved: with skipped steps the rows count the scheduler's steps instead
        label = "global_step" if skipped == 0 else "step"
        log = tuple({label: s, "train_batch_size": float(tbs)} for s in range(1, n + 1))
        ds = _with(ds, batch_size_steps=n, log_history=log)
    return ds


def _with(ck: DeepSpeedCheckpoint, **changes: Any) -> DeepSpeedCheckpoint:
    values = {f.name: getattr(ck, f.name) for f in fields(ck)}
    values.update(changes)
    return DeepSpeedCheckpoint(**values)


def own_log(ck: Checkpoint) -> tuple[str, str | None]:
    """The label and metric column of the steps ``load_dir`` rebuilt: one per optimizer step, the batch
    size."""
    where = ck.key_path.split(":", 1)[0]
    skipped = ck.skipped_steps if isinstance(ck, DeepSpeedCheckpoint) else 0
    which = f" not skipped (skipped_steps={skipped})" if skipped else ""
    return (
        f"{ck.path}/{where}: step(train_batch_size) on each of the {len(ck.log_history or ())} optimizer "
        f"steps{which} (DeepSpeed's call, rebuilt from the saved state)",
        "train_batch_size",
    )


def findings(trace: Any) -> list[Any]:
    """``deepspeed-batch-size-metric``: the saved state is what stepping with the batch size on every
    optimizer step gives (best = train_batch_size, last_epoch = global_steps - skipped_steps, counters
    reproduced)."""
    from plateau_forensics.diagnose import Finding

    ck = trace.checkpoint
    if not isinstance(ck, DeepSpeedCheckpoint) or ck.batch_size_steps is None:
        return []
    cfg, n, tbs = ck.config, ck.batch_size_steps, ck.train_batch_size
    period = cfg.cooldown + cfg.patience + 1
    first = cfg.patience + 2  # the first step improves on inf; patience + 1 bad steps later the lr is cut
    cuts = 0 if n < first else 1 + (n - first) // period
    skipped = f" - skipped_steps {ck.skipped_steps}" if ck.skipped_steps else ""
    message = (
        f"DeepSpeed stepped this ReduceLROnPlateau on every optimizer step with the train batch size as "
        f"its metric: engine.step() calls lr_scheduler.step(), which raises TypeError for the missing "
        f"metric, and DeepSpeed then calls step(train_batch_size()); the saved best {ck.state.best!r} is "
        f"ds_config's train batch size {tbs}, last_epoch {ck.state.last_epoch} is global_steps "
        f"{ck.global_steps}{skipped}, and a fresh scheduler stepped {n} times with {tbs} reproduces "
        f"num_bad_epochs={ck.state.num_bad_epochs} and cooldown_counter={ck.state.cooldown_counter}: a "
        f"constant is never better than itself, so the lr is cut every {period} optimizer steps "
        f"({cuts} reduction{'s' if cuts != 1 else ''} due in {n} steps, each applied unless min_lr or eps "
        "stops it), whatever the validation loss does"
    )
    log = getattr(trace, "log", None)
    column = getattr(log, "metric_column", None)
    if log is not None and column is not None and column != "train_batch_size":
        message += (
            f"; the log's '{column}' was never passed to step(), so its replay is not what this run did"
        )
    fix = (
        "do not pass a ReduceLROnPlateau to deepspeed.initialize(lr_scheduler=...): keep it outside the "
        "engine, call scheduler.step(val_loss) once per evaluation, and save it with "
        "engine.save_checkpoint(dir, client_state={'plateau': scheduler.state_dict()}) "
        "(engine.step(lr_kwargs={'metrics': val_loss}) would still step it on every optimizer step)"
    )
    evidence = {
        "train_batch_size": tbs,
        "best": ck.state.best,
        "last_epoch": ck.state.last_epoch,
        "global_steps": ck.global_steps,
        "skipped_steps": ck.skipped_steps,
        "steps_reproduced": n,
        "cut_every_steps": period,
        "reductions_due": cuts,
        "ds_version": ck.ds_version,
    }
    return [Finding("deepspeed-batch-size-metric", "warning", None, message, evidence, fix)]


STACK_NAME = "deepspeed"

STACK = Stack(
    name=STACK_NAME,
    title="DeepSpeed",
    owns_dir=owns_dir,
    load_dir=load_dir,
    findings=findings,
    own_log=own_log,
    order="engine.step() steps the scheduler given to deepspeed.initialize after every optimizer step (a "
    "plateau scheduler with step(train_batch_size)); save_checkpoint writes <tag>/ and then 'latest'",
)
