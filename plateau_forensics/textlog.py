"""Read a printed training log (what a script prints to the terminal) as key/value rows.

Lines such as ``Epoch 12/50 - loss: 0.51 - val_loss: 0.4321 - lr: 0.001``,
``epoch 3: train_loss=0.5123 val_loss=0.4321 lr=1e-3`` and Keras' progress lines (a line ``Epoch 3/50``, then
``8/8 ━━━━ 0s 2ms/step - loss: 0.5123 - val_loss: 0.4876 - learning_rate: 0.0010``) become one row each,
with the epoch taken from the line itself or from the last ``Epoch N`` line above it. Every ``key: number``
or ``key=number`` pair is a cell, kept as text so that its printed precision is known. Lines without
pairs (banners, "Saving checkpoint...", a bare progress bar) are not rows; a carriage return ends a line
(progress bars rewrite themselves with ``\\r``).
"""

from __future__ import annotations

import re

from plateau_forensics.errors import LossLogError

__all__ = ["looks_like_text_log", "parse_text_log"]

_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:nan|NaN|inf|Inf|Infinity)"
_KV = re.compile(r"(?<![\w./-])([A-Za-z_][\w./-]*)\s*[:=]\s*(" + _NUM + r")(?![\w.])")
_EPOCH = re.compile(r"(?<![A-Za-z_])[Ee]poch\s*[:=#]?\s*(\d+)(?:\s*/\s*\d+)?")
_NAME = re.compile(r"[^\W\d][\w./\- \[\]]{0,63}|\d+")  # a column name: no parentheses, no prose
_MAX_LINE = 100_000  # characters; a longer line is not a training log line


def _lines(text: str) -> list[tuple[int, str]]:
    out = []
    for n, line in enumerate(text.split("\n"), 1):
        if "\r" in line:
            parts = [p for p in line.split("\r") if p.strip()]
            line = parts[-1] if parts else ""
        if line.strip():
            out.append((n, line))
    return out


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
    lines = _lines(text[:200_000])[:50]
    if not lines or _is_csv(lines):
        return False
    kv = sum(1 for _, line in lines if _KV.search(line))
    return kv >= 1 and kv * 4 >= len(lines)  # progress bars and banners may outnumber the metric lines


def parse_text_log(text: str, source: str) -> tuple[list[str], list[dict[str, str]], list[int]]:
    """The header (``epoch`` first when any line names an epoch), one row of text cells per line with pairs,
    and each row's line number.

    Raises:
        LossLogError: a key printed twice on one line with different values (which one was meant?).
    """
    header: dict[str, None] = {}
    rows: list[dict[str, str]] = []
    numbers: list[int] = []
    epoch: str | None = None
    any_epoch = False
    for n, line in _lines(text):
        if len(line) > _MAX_LINE:
            continue
        m = _EPOCH.search(line)
        if m:
            epoch = m.group(1)
            any_epoch = True
        cells: dict[str, str] = {}
        for km in _KV.finditer(line):
            key, value = km.group(1), km.group(2)
            if key.lower() == "epoch":
                epoch = value
                any_epoch = True
                continue
            if key in cells and cells[key] != value:
                raise LossLogError(f"{source}: line {n} prints '{key}' twice ({cells[key]} and {value})")
            cells[key] = value
        if not cells:
            continue
        if epoch is not None:
            cells["epoch"] = epoch
        header.update(dict.fromkeys(cells))
        rows.append(cells)
        numbers.append(n)
    keys = list(header)
    if any_epoch and "epoch" in keys:
        keys.remove("epoch")
        keys.insert(0, "epoch")
    return keys, rows, numbers
