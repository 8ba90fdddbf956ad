"""The seed's epoch grid as an HTML table, for Jupyter (``Trace._repr_html_``).

Inline styles only (no ``<style>`` block), so the highlighting survives sanitising renderers such as
GitHub's; every highlight also has a text mark (``LR``, ``lr=``, ``cool``, ``+ckpt``) for grey-scale reading.
"""

from __future__ import annotations

import html as _html
from typing import TYPE_CHECKING

from plateau_forensics.report import (
    _EVENT_MARK,
    _lr_cell,
    checkpoint_index,
    g,
    resume_index,
    summary_lines,
    visible_columns,
)

if TYPE_CHECKING:
    from plateau_forensics.engine import Step, Trace

_REDUCED, _SUPPRESSED = 3, 4

# background per kind of column; the event row says the same in words
STYLES = {
    "reduced": "background:#f9d6d2;font-weight:bold",
    "suppressed": "background:#fcefc7;font-weight:bold",
    "cooldown": "background:#ececec;color:#555",
    "checkpoint": "border-left:2px solid #000;border-right:2px solid #000",
    "resume": "border-left:2px dotted #000",
    "gap": "color:#888;text-align:center",
}
# font, size, alignment and wrapping inherit from the table; only padding has to be on every cell
_TABLE = "border-collapse:collapse;font-family:monospace;font-size:12px;white-space:nowrap;text-align:right"
_CELL = "padding:1px 6px"
_HEAD = "padding:1px 6px;text-align:left"
ROWS = ("epoch", "last_epoch", "metric", "best", "num_bad", "cooldown", "lr", "event")


def _esc(x: object) -> str:
    return _html.escape(str(x), quote=True)


def _column_style(t: Trace, i: int, ck: int | None, resume: int | None) -> tuple[str, list[str]]:
    c = t._cols
    e = c.events[i]
    classes = []
    style = ""
    if e == _REDUCED:
        classes.append("pf-reduced")
        style = STYLES["reduced"]
    elif e == _SUPPRESSED:
        classes.append("pf-suppressed")
        style = STYLES["suppressed"]
    else:
        start = t._start_for(i)
        cd_before = start.state.cooldown_counter if i == start.index else c.cooldown[i - 1]
        if cd_before > 0:
            classes.append("pf-cooldown")
            style = STYLES["cooldown"]
    if i == ck:
        classes.append("pf-checkpoint")
        style = ";".join(filter(None, (style, STYLES["checkpoint"])))
    if i == resume:
        classes.append("pf-resume")
        style = ";".join(filter(None, (style, STYLES["resume"])))
    return style, classes


def _cells(t: Trace, s: Step, ck: int | None) -> list[str]:
    mark = _EVENT_MARK[s.event] + ("+ckpt" if s.index == ck else "")
    return [g(s.epoch), g(s.last_epoch), g(s.metric), g(s.best), str(s.num_bad_epochs),
            str(s.cooldown_counter),
            _lr_cell(s.lr), mark]


def trace_html(trace: Trace, max_columns: int = 60, context: int = 2) -> str:
    """The trace as the seed's grid (rows epoch ... event, one column per step) plus the summary lines.

    Args:
        trace: a ``Trace``.
        max_columns: above this many steps, long uneventful stretches collapse into "…" columns
            (see ``visible_columns``); every reduction column stays.
        context: steps shown either side of each reduction, the checkpoint and the resume point.

    Returns:
        An HTML fragment (a ``<div>``) with inline styles; all text is escaped.
    """
    t = trace
    n = len(t)
    ck, resume = checkpoint_index(t), resume_index(t)
    cols = visible_columns(t, max_columns, context)
    grid: list[list[str]] = [[] for _ in ROWS]
    for col in cols:
        if isinstance(col, tuple):
            a, b = col
            hidden = b - a + 1
            title = _esc(f"epochs {g(t.epochs[a])}-{g(t.epochs[b])} hidden: "
                         f"{hidden} steps without a reduction")
            for k in range(len(ROWS)):
                tag = "th" if k == 0 else "td"
                css = f"{_CELL};{STYLES['gap']}"
                grid[k].append(f'<{tag} class="pf-gap" title="{title}" style="{css}">…</{tag}>')
            continue
        s = t.step(col)
        style, classes = _column_style(t, col, ck, resume)
        cls = " ".join(classes)
        for k, text in enumerate(_cells(t, s, ck)):
            tag = "th" if k == 0 else "td"
            extra = f' title="{_esc(s.explain())}"' if ROWS[k] == "event" else ""
            attr_cls = f' class="{cls}"' if cls else ""
            css = f"{_CELL};{style}" if style else _CELL
            grid[k].append(f'<{tag}{attr_cls}{extra} style="{css}">{_esc(text)}</{tag}>')
    head = grid[0]
    out = ['<div class="pf-trace">']
    shown = sum(1 for c in cols if not isinstance(c, tuple))
    reds = sum(1 for e in t._cols.events if e == _REDUCED)
    sup = sum(1 for e in t._cols.events if e == _SUPPRESSED)
    caption = f"{n} steps, {reds} reduction{'s' if reds != 1 else ''}"
    if sup:
        caption += f", {sup} suppressed (min_lr/eps)"
    if shown < n:
        caption += f"; {shown} columns shown, quiet stretches collapsed (…)"
    out.append(f'<p style="margin:2px 0;font-family:monospace;font-size:12px">{_esc(caption)}. '
               f'<span style="{STYLES["reduced"]}">&nbsp;LR&nbsp;</span> reduced '
               f'<span style="{STYLES["suppressed"]}">&nbsp;lr=&nbsp;</span> suppressed '
               f'<span style="{STYLES["cooldown"]}">&nbsp;cool&nbsp;</span> cooldown '
               f'<span style="{STYLES["checkpoint"]}">&nbsp;+ckpt&nbsp;</span> checkpoint. '
               'Values are after each step; hover an event for the reason.</p>')
    if n:
        out.append(f'<div style="overflow-x:auto"><table class="pf-grid" style="{_TABLE}">')
        out.append(f'<thead><tr><th style="{_HEAD}">epoch</th>{"".join(head)}</tr></thead><tbody>')
        for name, cells in zip(ROWS[1:], grid[1:], strict=False):
            out.append(f'<tr><th style="{_HEAD}">{_esc(name)}</th>{"".join(cells)}</tr>')
        out.append("</tbody></table></div>")
    out.append(_summary_html(t))
    out.append("</div>")
    return "\n".join(out)


def _summary_html(t: Trace) -> str:
    lines = summary_lines(t)
    rows = "".join(f'<tr><th style="{_HEAD};vertical-align:top">{_esc(k)}</th>'
                   f'<td style="{_CELL};white-space:normal">{_esc(v)}</td></tr>' for k, v in lines)
    return (f'<table class="pf-summary" style="border-collapse:collapse;margin-top:6px;font-family:monospace;'
            f'font-size:12px;text-align:left">{rows}</table>')
