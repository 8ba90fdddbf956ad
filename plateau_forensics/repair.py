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


def repaired_state(trace: Trace) -> tuple[dict[str, Any], list[str]]:
    """The torch 2.13 state dict the checkpoint should have held, and one line per changed key.

    ``last_epoch`` stays as saved (the loop may rely on it); ``best``, ``num_bad_epochs`` and
    ``cooldown_counter`` come from the replay at the checkpoint's row; ``_last_lr`` from the optimizer.

    Raises:
        ForensicsError: the checkpoint could not be placed in the log, so there is nothing to rebuild from.
    """
    ck, a = trace.checkpoint, trace.alignment
    if ck is None or a is None or a.index is None:
        raise ForensicsError("cannot rebuild the state: the checkpoint was not placed in the log (no row matches)")
    rebuilt = trace.state_at(a.index - a.start_index)
    state = replace(rebuilt, last_epoch=ck.state.last_epoch, last_lr=tuple(ck.lrs) if ck.lrs else rebuilt.last_lr)
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
    return new, changes


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
