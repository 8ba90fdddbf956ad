"""Read scalars from TensorBoard event files with the tensorboard package's own EventAccumulator.

Using TensorBoard's reader (not a hand-written protobuf parser) means a run directory with several event
files after a crash and ``SummaryWriter(purge_step=N)`` is seen exactly as TensorBoard shows it.
"""

from __future__ import annotations

import logging
import os
import stat
import struct
from pathlib import Path
from typing import Any

from plateau_forensics.errors import LossLogError

EVENT_PREFIX = "events.out.tfevents"
#: Event files (all of a run together) beyond this size are refused: TensorBoard keeps every scalar in memory.
MAX_EVENT_BYTES = 1 << 30


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def is_tensorboard(path: str | os.PathLike[str]) -> bool:
    """A run directory holding event files, or a file whose first record is a TensorBoard event."""
    p = Path(path)
    if p.is_dir():
        return any(f.name.startswith(EVENT_PREFIX) for f in p.iterdir() if f.is_file())
    if not _is_regular(p):  # a FIFO would block on open, a device would never end
        return False
    try:
        with open(p, "rb") as f:
            head = f.read(64)
    except OSError:
        return False
    # TFRecord framing: 8-byte length, 4-byte crc, then an Event proto whose first record names its version
    return len(head) > 12 and b"brain.Event" in head


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def read_event_scalars(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """One record per step, ``{"step": s, tag: value, ...}``, as TensorBoard reports the run; the tags; and
    TensorBoard's own warnings (e.g. the purge of an earlier run's steps), captured instead of printed.

    Values are TensorBoard's float32 scalars widened to Python floats.

    Raises:
        LossLogError: the tensorboard package is missing, an event file is not a regular file, too large or
            holds a corrupt record (a record whose checksum is right but whose content is not an Event), or
            the path holds no scalars.
    """
    try:
        from google.protobuf.message import DecodeError
        from tensorboard.backend.event_processing import event_accumulator as ea
    except ImportError as exc:
        raise LossLogError(f"{path}: reading TensorBoard files needs the tensorboard package "
                           "(pip install 'plateau-forensics[tensorboard]')") from exc
    _check_files(Path(path))
    acc = ea.EventAccumulator(str(path), size_guidance={ea.SCALARS: 0})
    logger = logging.getLogger("tensorboard")
    capture, propagate = _Capture(), logger.propagate
    logger.addHandler(capture)
    logger.propagate = False
    try:
        acc.Reload()
        tags = list(acc.Tags().get("scalars", []))
        by_step: dict[int, dict[str, Any]] = {}
        for tag in tags:
            for event in acc.Scalars(tag):
                by_step.setdefault(event.step, {"step": event.step})[tag] = float(event.value)
    # TensorBoard passes on what protobuf and its record reader raise for damaged files
    except (DecodeError, ValueError, TypeError, KeyError, IndexError, AttributeError, struct.error, OSError,
            OverflowError, RecursionError, MemoryError) as exc:
        text = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise LossLogError(f"{path}: a corrupt TensorBoard event record ({text})") from None
    finally:
        logger.removeHandler(capture)
        logger.propagate = propagate
    if not tags:
        raise LossLogError(f"{path}: no scalar tags in these TensorBoard events")
    return [by_step[s] for s in sorted(by_step)], tags, capture.messages


def _check_files(p: Path) -> None:
    """Refuse event files that are not regular files (TensorBoard would block on a FIFO) or too large."""
    files = [f for f in p.iterdir() if f.name.startswith(EVENT_PREFIX)] if p.is_dir() else [p]
    odd = [f.name for f in files if not _is_regular(f)]
    if odd:
        raise LossLogError(f"{p}: {odd[0][:100]} is not a regular file")
    total = sum(f.stat().st_size for f in files)
    if total > MAX_EVENT_BYTES:
        raise LossLogError(f"{p}: {total:,} bytes of TensorBoard events (limit {MAX_EVENT_BYTES >> 20} MiB)")
