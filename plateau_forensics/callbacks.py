"""The recorder and the resume guard as Lightning, Hugging Face Trainer and Keras callbacks.

Each framework is imported only when its callback is built, so ``import plateau_forensics`` stays light.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

from plateau_forensics.errors import ConfigError
from plateau_forensics.guard import (
    ResumeProblem,
    expected_hyperparameters,
    live_problems,
    read_checkpoint,
    report,
)
from plateau_forensics.recorder import (
    LOGGER_NAME,
    KerasRecorder,
    _hyper,
    _hyper_dict,
    _resolve_path,
    current_rank,
    record,
)
from plateau_forensics.state import PlateauConfig

__all__ = ["hf_callback", "keras_callback", "lightning_callback"]

Action = Literal["raise", "warn"]


def _is_plateau(scheduler: Any) -> bool:
    return all(hasattr(scheduler, k) for k in ("best", "num_bad_epochs", "cooldown_counter", "min_lrs"))


def _nth(path: str | os.PathLike[str] | None, i: int, n: int) -> str | os.PathLike[str] | None:
    """``plateau.jsonl`` for one scheduler; ``plateau.0.jsonl``, ``plateau.1.jsonl`` for several."""
    if path is None or n == 1:
        return path
    p = Path(os.fspath(path))
    return p.with_name(f"{p.stem}.{i}{p.suffix}")


def _logger(logger: logging.Logger | str) -> logging.Logger:
    return logging.getLogger(logger) if isinstance(logger, str) else logger


# -- Lightning -------------------------------------------------------------------------------------
@cache
def _lightning_class() -> type:
    try:
        from lightning.pytorch.callbacks import Callback
    except ImportError:  # the standalone package name
        from pytorch_lightning.callbacks import Callback  # type: ignore[assignment]

    class PlateauRecorderCallback(Callback):
        """Records every plateau scheduler Lightning steps; at a ``fit(ckpt_path=...)`` resume, checks it."""

        def __init__(self, path: Any, guard: bool, action: Action, ignore: tuple[str, ...],
                     options: dict[str, Any]) -> None:
            super().__init__()
            self.path, self.guard, self.action, self.ignore = path, guard, action, ignore
            self.options = options
            self.recorders: list[Any] = []
            self.problems: list[ResumeProblem] = []
            self._configs: list[tuple[int, Any, tuple[Any, ...]]] = []

        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            # configure_optimizers has run, the checkpoint's states are not loaded yet: what the code built
            self._close()
            configs = [(k, c) for k, c in enumerate(trainer.lr_scheduler_configs) if _is_plateau(c.scheduler)]
            self._configs = [(k, c, _hyper(c.scheduler)) for k, c in configs]
            if not configs:
                self.options["logger"].warning(
                    "plateau_forensics: configure_optimizers returned no ReduceLROnPlateau: nothing is "
                    "recorded")
            for i, (_, c) in enumerate(configs):
                self.recorders.append(record(
                    c.scheduler, c.scheduler.optimizer, _nth(self.path, i, len(configs)),
                    metric=c.monitor or "val_loss", epoch=lambda: trainer.current_epoch,
                    rank=trainer.global_rank, **self.options))

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            if not self.guard or not trainer.ckpt_path:
                return
            problems: list[ResumeProblem] = []
            for k, c, built in self._configs:
                constructor = {key: v for key, v in _hyper_dict(built).items() if key != "default_min_lr"}
                sched = c.scheduler
                ck, tree = read_checkpoint(trainer.ckpt_path, f"lr_schedulers[{k}]")
                problems += live_problems(sched, sched.optimizer, ck, constructor=constructor)
                if c.interval == "epoch" and _saved_inside_epoch(tree):
                    problems.append(_lightning_lost_step(ck, c.monitor))
            self.problems = report(problems, where=str(trainer.ckpt_path), action=self.action,
                                   ignore=self.ignore)

        def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
            self._close()

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            self._close()

        def _close(self) -> None:
            for rec in self.recorders:
                rec.close()
            self.recorders = []

        def state_dict(self) -> dict[str, Any]:
            return {}  # nothing of the recorder goes into Lightning checkpoints

    return PlateauRecorderCallback


def _saved_inside_epoch(tree: Any) -> bool:
    """The Lightning checkpoint was written inside its epoch, before the epoch completed.

    ``loops.fit_loop.epoch_progress.total``: ``completed`` lags ``processed`` when ModelCheckpoint saved in
    ``on_train_epoch_end`` or ``on_validation_end``, which run before ``fit_loop.on_advance_end`` steps the
    epoch-interval plateau schedulers; Lightning then completes that epoch on resume without the step.
    """
    try:
        total = tree["loops"]["fit_loop"]["epoch_progress"]["total"]
        return int(total["completed"]) < int(total["processed"])
    except (KeyError, TypeError, ValueError):
        return False


def _lightning_lost_step(ck: Any, monitor: str | None) -> ResumeProblem:
    epoch = ck.epoch
    name = monitor or "metric"
    return ResumeProblem(
        "saved-before-step",
        f"Lightning saved this checkpoint inside epoch {epoch}, before that epoch's plateau step (last_epoch="
        f"{ck.state.last_epoch}), and completes epoch {epoch} on resume without it: epoch {epoch}'s {name} "
        "never reaches the scheduler, and every later last_epoch is one lower than in an uninterrupted run",
        f"keep epoch {epoch}'s {name} in the checkpoint (on_save_checkpoint) and step the scheduler with it "
        "once in the LightningModule's on_train_start, passing ignore=['saved-before-step'] to this "
        "callback; or resume from a checkpoint saved after the epoch completed")


def lightning_callback(
    path: str | os.PathLike[str] | None = "plateau.jsonl",
    *,
    guard: bool = True,
    action: Action = "raise",
    ignore: Iterable[str] = (),
    explain: bool = False,
    verbose: bool = False,
    logger: logging.Logger | str = LOGGER_NAME,
) -> Any:
    """A ``lightning.pytorch.Callback`` recording every ReduceLROnPlateau Lightning steps; it guards resumes.

    At ``on_fit_start`` (after ``configure_optimizers``, before a checkpoint is restored) it attaches
    ``record`` to each plateau scheduler (``path``; ``plateau.0.jsonl``, ``plateau.1.jsonl``... for several),
    with the monitored name as the metric and ``trainer.current_epoch`` as the epoch. With
    ``fit(ckpt_path=...)`` it runs the resume checks at ``on_train_start``, comparing the restored scheduler
    with what ``configure_optimizers`` built, and reports Lightning's own lost step (``saved-before-step``).

    Args:
        path, explain, verbose, logger: as in ``plateau_forensics.record``.
        guard: run the resume checks on a resume.
        action: ``"raise"`` (``ResumeError`` stops the fit) or ``"warn"``.
        ignore: resume codes not to report.

    Example:
        >>> trainer = L.Trainer(callbacks=[pf.lightning_callback("plateau.jsonl")])   # doctest: +SKIP
    """
    opts = {"explain": explain, "verbose": verbose, "logger": _logger(logger)}
    return _lightning_class()(path, guard, action, tuple(ignore), opts)


# -- Hugging Face Trainer --------------------------------------------------------------------------
def _hf_constructor(args: Any) -> PlateauConfig:
    """What the Trainer built: torch's defaults and ``lr_scheduler_kwargs`` (its only source of arguments)."""
    kwargs = args.lr_scheduler_kwargs or {}
    if isinstance(kwargs, str):
        kwargs = json.loads(kwargs)
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"lr_scheduler_kwargs is {kwargs!r}, not a mapping")
    return PlateauConfig(**{k: v for k, v in kwargs.items() if k != "verbose"})


@cache
def _hf_class() -> type:
    from transformers import TrainerCallback

    class PlateauTrainerCallback(TrainerCallback):
        """Records the Trainer's ReduceLROnPlateau; at a resume, checks it against the checkpoint folder."""

        def __init__(self, path: Any, checkpoint: Any, guard: bool, action: Action, ignore: tuple[str, ...],
                     options: dict[str, Any]) -> None:
            self.path, self.checkpoint, self.guard = path, checkpoint, guard
            self.action, self.ignore, self.options = action, ignore, options
            self.recorder: Any = None
            self.problems: list[ResumeProblem] = []

        def on_train_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None,
                           lr_scheduler: Any = None, **kwargs: Any) -> None:
            if not _is_plateau(lr_scheduler):
                self.options["logger"].warning(
                    "plateau_forensics: the Trainer's lr scheduler is a %s, not a ReduceLROnPlateau: nothing "
                    "is recorded (lr_scheduler_type='reduce_lr_on_plateau' builds one)",
                    type(lr_scheduler).__name__)
                return
            if self.guard and state.global_step > 0:  # trainer_state.json was loaded: a resume
                folder = self.checkpoint
                if folder is None and isinstance(args.resume_from_checkpoint, str):
                    folder = args.resume_from_checkpoint
                if folder is None:
                    folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
                ck, tree = read_checkpoint(folder)
                built = expected_hyperparameters(_hf_constructor(args), len(optimizer.param_groups))
                source = "Trainer's (torch defaults and lr_scheduler_kwargs)"
                problems = live_problems(lr_scheduler, optimizer, ck, constructor=built, tree=tree,
                                         constructor_source=source)
                self.problems = report(problems, where=os.fspath(folder), action=self.action,
                                       ignore=self.ignore)
            name = args.metric_for_best_model or "loss"
            name = name if name.startswith("eval_") else f"eval_{name}"
            if self.recorder is not None:
                self.recorder.close()
            self.recorder = record(lr_scheduler, optimizer, self.path, metric=name, epoch=lambda: state.epoch,
                                   rank=args.process_index, **self.options)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.recorder is not None:
                self.recorder.close()
                self.recorder = None

    return PlateauTrainerCallback


def hf_callback(
    path: str | os.PathLike[str] | None = "plateau.jsonl",
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    guard: bool = True,
    action: Action = "raise",
    ignore: Iterable[str] = (),
    explain: bool = False,
    verbose: bool = False,
    logger: logging.Logger | str = LOGGER_NAME,
) -> Any:
    """A ``transformers.TrainerCallback`` that records the Trainer's ReduceLROnPlateau and guards resumes.

    At ``on_train_begin`` (after a resume has loaded ``optimizer.pt`` and ``scheduler.pt``) it checks the
    resume when the Trainer resumed (``state.global_step > 0``): the folder is ``checkpoint``, else
    ``args.resume_from_checkpoint``, else ``output_dir/checkpoint-<global_step>``; the constructor's
    hyperparameters are torch's defaults plus ``lr_scheduler_kwargs``. Then it records every step (the metric
    is ``eval_<metric_for_best_model>``, the epoch ``state.epoch``, the rank ``args.process_index``).

    Args:
        path, explain, verbose, logger: as in ``plateau_forensics.record``.
        checkpoint: the checkpoint folder the Trainer resumed from, when not the default.
        guard, action, ignore: as in ``lightning_callback``.

    Example:
        >>> Trainer(..., callbacks=[pf.hf_callback("plateau.jsonl")])   # doctest: +SKIP
    """
    opts = {"explain": explain, "verbose": verbose, "logger": _logger(logger)}
    return _hf_class()(path, checkpoint, guard, action, tuple(ignore), opts)


# -- Keras -----------------------------------------------------------------------------------------
@cache
def _keras_class() -> type:
    import keras  # type: ignore[import-untyped]

    class PlateauKerasRecorder(keras.callbacks.Callback):  # type: ignore[misc]
        """Records a ``keras.callbacks.ReduceLROnPlateau``'s epochs (a segment per ``fit``)."""

        def __init__(self, plateau: Any, path: Any, rank: int, options: dict[str, Any]) -> None:
            super().__init__()
            self.plateau = plateau
            self.recorder = KerasRecorder(plateau, self._lr, _resolve_path(path, rank), rank=rank, **options)

        def _lr(self) -> float:
            return float(keras.ops.convert_to_numpy(self.plateau.model.optimizer.learning_rate))

        def on_train_begin(self, logs: Any = None) -> None:
            self.recorder.attach()
            self._epochs, self._steps = 0, self.recorder.steps

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self._epochs += 1

        def on_train_end(self, logs: Any = None) -> None:
            self.recorder.detach()
            if self._epochs and self.recorder.steps == self._steps:
                self.recorder.logger.warning(
                    "plateau_forensics: %d epochs and no ReduceLROnPlateau step recorded: is the plateau "
                    "callback in fit(callbacks=...), and does it find its monitor %r in the logs?",
                    self._epochs, self.recorder.metric)

        def close(self) -> None:
            """Stop recording and close the file."""
            self.recorder.close()

    return PlateauKerasRecorder


def keras_callback(
    plateau: Any,
    path: str | os.PathLike[str] | None = "plateau.jsonl",
    *,
    rank: int | None = None,
    explain: bool = False,
    verbose: bool = False,
    logger: logging.Logger | str = LOGGER_NAME,
) -> Any:
    """A ``keras.callbacks.Callback`` recording each epoch of ``plateau`` (Keras's ``ReduceLROnPlateau``).

    Put both in ``fit(callbacks=[plateau, pf.keras_callback(plateau)])`` (any order): it wraps that callback's
    ``on_epoch_end`` during each ``fit`` and writes one line per epoch under Keras's names (``wait`` for
    ``num_bad_epochs``; epochs as Keras prints them, from 1). Keras keeps no scheduler state in its files,
    so there is no resume to check. ``close()`` closes the file.

    Raises:
        ConfigError: ``plateau`` is not a Keras ReduceLROnPlateau.
    """
    if not all(hasattr(plateau, k) for k in ("monitor", "wait", "cooldown_counter", "factor", "min_delta")):
        raise ConfigError(f"keras_callback() needs a keras.callbacks.ReduceLROnPlateau, not a "
                          f"{type(plateau).__name__}")
    rank = current_rank() if rank is None else int(rank)
    opts = {"explain": explain, "verbose": verbose, "logger": _logger(logger)}
    return _keras_class()(plateau, path, rank, opts)

