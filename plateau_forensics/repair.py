"""Rebuild a scheduler state from the log: the counters a full save would have had at the checkpoint.

For partial saves (timm keeps only best and last_epoch) and lost states: the counters come from
replaying the log up to the checkpoint's row; every changed key is listed, nothing changes silently.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from plateau_forensics.engine import Trace
from plateau_forensics.errors import ForensicsError
from plateau_forensics.state import to_state_dict


#: Story components after which the saved state is not what a correct run would have saved.
STATE_MISTAKES = ("scheduler-not-restored", "partial-restore", "resume-skipped-step", "weights-only-resume")


def repaired_state(trace: Trace) -> tuple[dict[str, Any], list[str], str]:
    """The torch 2.13 state dict the chosen story says should have been loaded, one line per key it changes
    in the checkpoint's state, and a sentence saying which state it is.

    * A mistake at a resume *before* the checkpoint (a fresh scheduler, a partial restore, a lost step): the
      state a correctly resumed run would have had at the checkpoint's row, from the same log.
    * A mistake at a resume *after* the checkpoint: the checkpoint's own state is what should have been
      loaded; it is written as torch 2.13 writes it.
    * A partial state (timm keeps best and last_epoch): the counters rebuilt from the log at its row.
    * Otherwise the state the story reproduces at the checkpoint's row (the saved one).

    ``_last_lr`` comes from the checkpoint's optimizer.

    Raises:
        ForensicsError: the checkpoint was not placed in the log, or the inputs do not determine the state.
    """
    ck, a, verdict = trace.checkpoint, trace.alignment, trace.verdict
    if ck is None or a is None or a.index is None:
        raise ForensicsError("cannot rebuild the state: the checkpoint was not placed in the log (no row matches)")
    why = "the state the story reproduces at the checkpoint's row"
    state = None
    e = verdict.evaluation if verdict is not None else None
    ev = verdict.evidence if verdict is not None else None
    mistakes = [c for c in (verdict.story if verdict is not None else ()) if c in STATE_MISTAKES]
    if ck.partial:
        mistakes = []  # the checkpoint itself lacks the counters: rebuild them from the log at its row
    if e is not None and ev is not None and mistakes and e.anchor_op is not None and e.anchor_op >= 0:
        from plateau_forensics.stories import build, without
        from plateau_forensics.worlds import simulate

        anchor_row = e.plan.rows.index(e.ops[e.anchor_op].row)
        resumes = [b for b in e.plan.boundaries if b.components & set(mistakes)]
        if resumes and all(b.row > anchor_row for b in resumes):
            where = ", ".join(str(ev.label(e.plan.rows[b.row])) for b in resumes)
            why = (f"this checkpoint's own state, which the resume at epoch {where} should have loaded "
                   "(scheduler.load_state_dict)")
            state = ck.state
        else:
            plan = e.plan
            for code in mistakes:
                plan = without(plan, code) or plan
            ops, les, *_ = build(ev, plan)
            if len(ops) == len(e.ops):
                sim = simulate(ev.config, ops, lr_dtypes=ev.lr_dtypes, groups_from_log=ev.groups_from_log)
                w = sim.determined(e.anchor_op)
                if w is None:
                    raise ForensicsError("cannot rebuild the state: the log does not determine what a correct run "
                                         "would have saved at the checkpoint's row")
                state = replace(ck.state, best=w.best_val, num_bad_epochs=w.nb, cooldown_counter=w.cd,
                                last_epoch=les[e.anchor_op] if les[e.anchor_op] is not None else ck.state.last_epoch,
                                best_dtype=None, min_lrs=w.min_lrs)
                why = (f"the state a correctly resumed run would have had after epoch {a.epoch} (undoing "
                       f"{', '.join(mistakes)})")
    if state is None:
        if a.index in trace.unknown:
            raise ForensicsError("cannot rebuild the state: the inputs do not determine it at the checkpoint's row")
        rebuilt = trace.state_at(a.index)
        state = replace(rebuilt, last_epoch=ck.state.last_epoch)
        if ck.partial:
            why = "the counters a full state would have saved, rebuilt from the log at the checkpoint's row"
    state = replace(state, last_lr=tuple(ck.lrs) if ck.lrs else state.last_lr)
    new = to_state_dict(trace.config, state)
    changes = []
    for key, value in new.items():
        old = ck.raw.get(key, "<absent>")
        same = old == value or (isinstance(old, float) and isinstance(value, float) and math.isnan(old)
                                and math.isnan(value))
        if not same:
            changes.append(f"{key}: {old!r} -> {value!r}")
    for key in ck.raw:
        if key not in new:
            changes.append(f"{key}: {ck.raw[key]!r} -> <dropped> (torch 2.13 does not write it)")
    return new, changes, why


def write_state(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``state`` as ``.pt`` (torch.save, loadable with weights_only=True) or ``.json`` (by suffix).

    Raises:
        ForensicsError: an unknown suffix, or ``.pt`` without torch installed.
    """
    p = Path(path)
    if p.suffix == ".json":
        p.write_text(json.dumps(state, indent=1) + "\n")  # Infinity/NaN literals: json.load reads them back
        return
    if p.suffix not in (".pt", ".pth"):
        raise ForensicsError(f"{p}: --write-state writes .pt, .pth or .json")
    try:
        import torch
    except ImportError as exc:
        raise ForensicsError("writing a .pt state needs torch: pip install 'plateau-forensics[torch]'") from exc
    torch.save(state, p)
