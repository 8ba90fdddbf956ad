"""torch.load(weights_only=True) on many files in one process, one JSON line per file (the fuzz oracle).

Usage: ``python torch_driver.py JOBS.json`` (the driver's job format). For a file torch loads, the plateau
state is located in torch's own tree with the loader's search, so both readers' answers can be compared.
"""

from __future__ import annotations

import faulthandler
import json
import sys
import warnings
from pathlib import Path

TIMEOUT = 10.0


def main() -> None:
    import torch

    from plateau_forensics.errors import ForensicsError
    from plateau_forensics.loader import _TorchTensor, checkpoint_from_tree
    from plateau_forensics.report import _plain_state

    warnings.simplefilter("ignore")
    jobs = json.loads(Path(sys.argv[1]).read_text())

    def wrap(v: object) -> object:
        if isinstance(v, torch.Tensor):
            return _TorchTensor(v)
        if isinstance(v, dict):
            return {k: wrap(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(wrap(x) for x in v)
        return v

    for job in jobs["files"]:
        path = job["path"]
        print(json.dumps({"start": path}), flush=True)
        faulthandler.dump_traceback_later(TIMEOUT, exit=True)
        out: dict[str, object] = {"path": path}
        try:
            tree = torch.load(path, weights_only=True, map_location="cpu")
            out["torch"] = "ok"
        except Exception as exc:  # torch raises many types; all mean "refused"
            out["torch"], out["torch_error"] = "refused", f"{type(exc).__name__}: {str(exc)[:300]}"
        if out["torch"] == "ok":
            try:
                ck = checkpoint_from_tree(wrap(tree), path, loader="torch")
                out["state"] = json.dumps(_plain_state(ck.raw), sort_keys=True)
                out["lrs"] = list(ck.optimizer_lrs) if ck.optimizer_lrs else None
            except ForensicsError as exc:
                out["state_error"] = str(exc)[:300]
            except (RecursionError, TypeError, ValueError) as exc:  # torch's tree of a damaged file
                out["state_error"] = f"{type(exc).__name__}: {exc}"[:300]
        faulthandler.cancel_dump_traceback_later()
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
