"""Read a printed training log (what a script prints to the terminal) as key/value rows.

Lines such as ``Epoch 12/50 - loss: 0.51 - val_loss: 0.4321 - lr: 0.001``,
``epoch 3: train_loss=0.5123 val_loss=0.4321 lr=1e-3`` and Keras' progress lines (a line ``Epoch 3/50``, then
``8/8 ━━━━ 0s 2ms/step - loss: 0.5123 - val_loss: 0.4876 - learning_rate: 0.0010``) become one row each,
with the epoch taken from the line itself or from the last ``Epoch N`` line above it. Every ``key: number``
or ``key=number`` pair is a cell, kept as text so that its printed precision is known. Lines without
pairs (banners, "Saving checkpoint...", a bare progress bar) are not rows; a carriage return ends a line
(progress bars rewrite themselves with ``\\r``). A line without pairs that says the run was resumed
(``Resuming from ckpt.pt``, Lightning's ``Restoring states from the checkpoint path at ...``, HF's
``Continuing training from checkpoint``, ``=> loading checkpoint 'x'``, ``Loading weights from ...``) is kept
as a restart: the log itself shows a resume before the next row (``TextLogParser.restarts``). A value written with digit separators (``1_000``) or
non-ASCII digits is captured as it is, so that the reader refuses it as a number instead of skipping it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from plateau_forensics.errors import LossLogError

__all__ = ["TextLogParser", "looks_like_text_log", "parse_text_log", "text_lines"]

# \d is Unicode on purpose (see the module docstring); ``_`` inside the digits is captured for the same reason
_DIGITS = r"\d[\d_]*"
_NUM = (rf"[+-]?(?:{_DIGITS}(?:\.(?:{_DIGITS})?)?|\.{_DIGITS})(?:[eE][+-]?\d+)?"
        r"|[+-]?(?:nan|NaN|inf|Inf|Infinity)")
_KV = re.compile(r"(?<![\w./-])([A-Za-z_][\w./-]*)\s*[:=]\s*(" + _NUM + r")(?![\w.])")
_EPOCH = re.compile(r"(?<![A-Za-z_])[Ee]poch\s*[:=#]?\s*(\d+)(?:\s*/\s*\d+)?")
_EPOCH_KEY = re.compile(r"epoch", re.IGNORECASE)
_NAME = re.compile(r"[^\W\d][\w./\- \[\]]{0,63}|\d+")  # a column name: no parentheses, no prose
#: a line saying the process resumed from (or loaded) a checkpoint: a restart the log itself shows
_RESTART = re.compile(
    r"\bresum(?:ed|ing)(?: (?:training|the run|run))?\s+(?:from|at)\b|\b(?:training|run) resumed\b|\bresuming training\b"
    r"|\brestor(?:ed|ing) (?:all )?(?:training )?states?\b|\bcontinu(?:e|ing) training from\b"
    r"|\bload(?:ing|ed) (?:the )?(?:weights|checkpoint|state)s? (?:from|at)\b|=>\s*load(?:ing|ed) checkpoint\b",
    re.IGNORECASE)
_SHOWN = 80  # characters of a key or value quoted in an error


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text):,} characters)"


def text_lines(lines: Iterable[str], first: int = 1) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each non-blank line, keeping only what a carriage return left visible."""
    for n, line in enumerate(lines, first):
        if "\r" in line:
            parts = [p for p in line.split("\r") if p.strip()]
            line = parts[-1] if parts else ""
        if line.strip():
            yield n, line


def _is_csv(lines: list[tuple[int, str]]) -> bool:
    """A header of two or more names followed by a row with as many fields: a CSV (or TSV) file."""
    head = lines[0][1]
    nxt = lines[1][1] if len(lines) > 1 else ""
    for sep in (",", "\t"):
        fields = [f.strip().strip('"') for f in head.split(sep)]
        if len(fields) >= 2 and all(_NAME.fullmatch(f) for f in fields) and not _KV.search(head) and (
                not nxt or len(nxt.split(sep)) == len(fields)):
            return True
    return False


def looks_like_text_log(text: str) -> bool:
    """A printed log rather than CSV: most of its first lines carry ``key: number`` pairs or ``Epoch N``."""
    lines = list(text_lines(text[:200_000].split("\n")))[:50]
    if not lines or _is_csv(lines):
        return False
    kv = sum(1 for _, line in lines if _KV.search(line))
    return kv >= 1 and kv * 4 >= len(lines)  # progress bars and banners may outnumber the metric lines


class TextLogParser:
    """Turns the lines of a printed log into rows one line at a time (so a long log is never held whole).

    ``feed`` returns a line's cells (``epoch`` included when a line named one) or None for a line without
    pairs; ``header`` is every key seen, ``epoch`` first when any line named an epoch; ``restarts`` the line
    numbers of lines without pairs that say the run resumed from a checkpoint.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self._keys: dict[str, object] = {}  # every key seen, in first-seen order
        self._epoch: str | None = None
        self._any_epoch = False
        self.restarts: list[int] = []

    def feed(self, n: int, line: str) -> dict[str, str] | None:
        """The cells of line ``n``.

        Raises:
            LossLogError: a key printed twice on the line with different values (which one was meant?).
        """
        m = _EPOCH.search(line)
        if m:
            self._epoch = m.group(1)
            self._any_epoch = True
        pairs = _KV.findall(line)
        if not pairs:
            if _RESTART.search(line[:500]):
                self.restarts.append(n)
            return None
        cells = dict(pairs)
        if _EPOCH_KEY.search(line):  # an ``epoch=3`` pair sets the epoch and is not a cell
            named = [k for k in cells if k.lower() == "epoch"]
            if named:
                for k, v in pairs:
                    if k.lower() == "epoch":
                        self._epoch = v
                        self._any_epoch = True
                for k in named:
                    del cells[k]
                pairs = [(k, v) for k, v in pairs if k.lower() != "epoch"]
        if len(cells) != len(pairs):  # a key printed twice
            seen: dict[str, str] = {}
            for key, value in pairs:
                if key in seen and seen[key] != value:
                    raise LossLogError(f"{self.source}: line {n} prints '{_clip(key)}' twice "
                                       f"({_clip(seen[key])} and {_clip(value)})")
                seen[key] = value
        if not cells:
            return None
        if self._epoch is not None:
            cells["epoch"] = self._epoch
        self._keys.update(cells)
        return cells

    def header(self) -> list[str]:
        """Every key seen so far, in first-seen order, ``epoch`` first when any line named an epoch."""
        keys = list(self._keys)
        if self._any_epoch and "epoch" in keys:
            keys.remove("epoch")
            keys.insert(0, "epoch")
        return keys


def parse_text_log(text: str, source: str) -> tuple[list[str], list[dict[str, str]], list[int]]:
    """The header (``epoch`` first when any line names an epoch), one row of text cells per line with pairs,
    and each row's line number.

    Raises:
        LossLogError: a key printed twice on one line with different values (which one was meant?).
    """
    parser = TextLogParser(source)
    rows: list[dict[str, str]] = []
    numbers: list[int] = []
    for n, line in text_lines(text.split("\n")):
        cells = parser.feed(n, line)
        if cells is not None:
            rows.append(cells)
            numbers.append(n)
    return parser.header(), rows, numbers
