"""Log styles of the scenario matrix: how a training loop prints its rows (CSV, JSON Lines, 3 text layouts).

A style fixes the float format of the metrics and of the lr, whether the lr column is read before the epoch's
``scheduler.step`` (the lr used during the epoch), after it, or not logged, the epoch base and one log file or
one per process. ``render`` turns the live rows into the files and keeps, per row, the exact text it wrote.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

TQDM = "100%|\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588| 16/16 [00:00<00:00, 812.35it/s]"
KERAS_BAR = "\u2501" * 20


@dataclass(frozen=True)
class Style:
    """One way of logging; ``name`` is the short id used in cell folder names."""

    name: str
    format: str  # csv | jsonl | text
    float: str = "repr"  # repr | .4f | .6f  (metrics and train loss)
    lr: str | None = "before"  # before | after | None (no lr column)
    lr_float: str = "repr"  # repr | g (%.6g) | keras (.4f, or .4e at or below 1e-3)
    epoch_base: int = 1
    files: str = "one"  # one | per-process
    text: str | None = None  # epoch-of | kv | keras  (format == "text")
    lr_name: str = "lr"

    def truth(self) -> dict[str, Any]:
        """The ``log_style`` object of truth.json."""
        d = asdict(self)
        d.pop("name")
        return d

    @property
    def ext(self) -> str:
        return {"csv": "csv", "jsonl": "jsonl", "text": "log"}[self.format]


STYLES: tuple[Style, ...] = (
    Style("csv-repr", "csv"),
    Style("csv-4f-after-b0", "csv", ".4f", "after", "g", 0, "per-process", lr_name="learning_rate"),
    Style("jsonl-6f-b0", "jsonl", ".6f", "before", "g", 0),
    Style("jsonl-repr-after", "jsonl", "repr", "after", "repr", 1, "per-process"),
    Style("text-epochof-4f", "text", ".4f", "before", "g", 1, text="epoch-of"),
    Style("text-kv-6f-after-b0", "text", ".6f", "after", "g", 0, "per-process", text="kv"),
    Style("keras", "text", ".4f", "before", "keras", 1, text="keras", lr_name="learning_rate"),
    Style("csv-4f-nolr", "csv", ".4f", None, "repr", 1, "per-process"),
    Style("text-kv-repr-nolr-b0", "text", "repr", None, "repr", 0, text="kv"),
    Style(
        "keras-after",
        "text",
        ".4f",
        "after",
        "keras",
        1,
        "per-process",
        text="keras",
        lr_name="learning_rate",
    ),
)


def fmt_metric(v: float, style: Style) -> str:
    """A metric as the style prints it (Keras' progress bar uses .4f, or .4e for tiny values)."""
    if style.text == "keras":
        return _keras(v)
    return repr(float(v)) if style.float == "repr" else format(v, style.float)


def fmt_lr(v: float, style: Style) -> str:
    """An lr as the style prints it."""
    if style.lr_float == "keras":
        return _keras(v)
    return repr(float(v)) if style.lr_float == "repr" else format(v, ".6g")


def _keras(v: float) -> str:
    return format(v, ".4f") if abs(v) > 1e-3 else format(v, ".4e")


def decimals(style: Style, column: str) -> int | None:
    """Fixed decimals of a column's printed values (None: repr, exact; keras lr: mixed, see fmt_lr)."""
    fmt = style.lr_float if column == "lr" else style.float
    if style.text == "keras" and column != "lr":
        return 4
    return {".4f": 4, ".6f": 6}.get(fmt)


@dataclass
class LineRow:
    """What one row of a live run prints: its label and the text of every value."""

    label: int
    tokens: dict[str, str]  # column -> printed text
    total: int


def row_tokens(row: Any, style: Style) -> LineRow:
    """Print one live row (``matrix_torch.Row``-like) in ``style``."""
    label = row.epoch - 1 + style.epoch_base
    tok = {"train_loss": fmt_metric(row.train_loss, style), "val_loss": fmt_metric(row.val_loss, style)}
    if row.val_acc is not None:
        tok["val_acc"] = fmt_metric(row.val_acc, style)
    if style.lr is not None:
        tok["lr"] = fmt_lr((row.lr_used if style.lr == "before" else row.lr_end)[0], style)
    return LineRow(label, tok, row.total - 1 + style.epoch_base)


def render(
    rows: list[Any],
    style: Style,
    notes_before: dict[int, list[str]],
    notes_after: dict[int, list[str]],
    header: bool = True,
) -> str:
    """One log file's text; ``notes_*[i]``: extra lines printed before / after row ``i`` (text logs only)."""
    out: list[str] = []
    lines = [row_tokens(r, style) for r in rows]
    cols = [c for c in ("train_loss", "val_loss", "val_acc", "lr") if lines and c in lines[0].tokens]
    names = {"lr": style.lr_name}
    if style.format == "csv":
        out.append(",".join(["epoch", *(names.get(c, c) for c in cols)]))
        out += [",".join([str(ln.label), *(ln.tokens[c] for c in cols)]) for ln in lines]
    elif style.format == "jsonl":
        for ln in lines:  # the printed text is the JSON number token itself
            cells = [f'"epoch": {ln.label}'] + [
                f"{json.dumps(names.get(c, c))}: {ln.tokens[c]}" for c in cols
            ]
            out.append("{" + ", ".join(cells) + "}")
    else:
        if header:
            out.append("Training 8-16-1 MLP on cpu (128 train / 128 val samples, 16 batches per epoch)")
        for i, ln in enumerate(lines):
            out += notes_before.get(i, [])
            out += _text_lines(ln, style, cols)
            out += notes_after.get(i, [])
    return "\n".join(out) + "\n"


def _text_lines(ln: LineRow, style: Style, cols: list[str]) -> list[str]:
    t = ln.tokens
    if style.text == "epoch-of":
        parts = [f"Epoch {ln.label}/{ln.total}", f"loss: {t['train_loss']}", f"val_loss: {t['val_loss']}"]
        parts += [f"val_acc: {t['val_acc']}"] if "val_acc" in t else []
        parts += [f"lr: {t['lr']}"] if "lr" in t else []
        return [TQDM, " - ".join(parts)]
    if style.text == "kv":
        kv = [f"train_loss={t['train_loss']}", f"val_loss={t['val_loss']}"]
        kv += [f"val_acc={t['val_acc']}"] if "val_acc" in t else []
        kv += [f"lr={t['lr']}"] if "lr" in t else []
        return [f"epoch {ln.label}: " + " ".join(kv)]
    if style.text == "keras":
        parts = [f"16/16 {KERAS_BAR} 0s 2ms/step", f"loss: {t['train_loss']}"]
        parts += [f"val_acc: {t['val_acc']}"] if "val_acc" in t else []
        parts += [f"val_loss: {t['val_loss']}"]
        parts += [f"{style.lr_name}: {t['lr']}"] if "lr" in t else []
        return [f"Epoch {ln.label}/{ln.total}", " - ".join(parts)]
    raise ValueError(style.text)
