"""Reading the scheduler out of a big checkpoint: ``plateau-trace BIG.pt --format json`` vs ``torch.load``.

Targets (issue): on a ~600 MB checkpoint (model + Adam state + ReduceLROnPlateau state, real ``torch.save``),
(a) ``plateau-trace BIG.pt --format json`` is at least 10x faster than (b) a process that runs
``torch.load(BIG.pt, weights_only=True)`` and prints ``sd['scheduler']``; and (a) is within 1.2x of
(c) ``plateau-trace SMALL.pt --format json`` on a ~30 MB checkpoint built the same way.
A pickle-heavy file (issue 14: our own pickle machine reads every opcode in Python) is timed too: (d)
``plateau-trace MANY.pt`` on 1,500 x Linear(4, 4) + Adam (9,000 tensors, a 1.3 MB data.pkl) must stay at least
2x faster than (e) ``torch.load(MANY.pt, weights_only=True)``.
Run: ``python benchmarks/bench_checkpoint.py [--repeats N] [--keep]``. Needs torch to build the files.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

WORK = Path(__file__).resolve().parent / "_work"  # gitignored
BIG_WIDTH, SMALL_WIDTH, LAYERS = 4096, 912, 3  # 3 x Linear(w, w): 50.3M params (604 MB), 2.5M params (30 MB)
TARGET_VS_TORCH, TARGET_VS_SMALL, TARGET_MANY = 10.0, 1.2, 2.0
MANY_LAYERS = 1500
HEAVY = ("torch", "pandas", "numpy", "tabulate")

_MAKE = """
import sys, torch
path, width, layers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=2, cooldown=1, factor=0.5)
model(torch.randn(8, width)).square().mean().backward()
opt.step()  # Adam now holds exp_avg and exp_avg_sq for every parameter: 3x the weights in total
for loss in [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99]:
    sched.step(loss)
torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "epoch": 7}, path)
"""
_MAKE_MANY = _MAKE.replace("width, layers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])",
                           "width, layers = sys.argv[1], 4, int(sys.argv[3])")

_BASELINE = "import torch; sd = torch.load({path!r}, weights_only=True); print(sd['scheduler'])"

# Appended to a process's code: what it read from files and pipes, and which modules it loaded.
_REPORT_IO = """
finally:
    rchar = [ln.split()[1] for ln in open("/proc/self/io").read().splitlines() if ln.startswith("rchar")][0]
    print("RCHAR", rchar, "MODULES", " ".join(sys.modules), file=sys.stderr)
"""


def console_script(name: str) -> Path:
    """The installed entry point itself, not a shim (pyenv's bash shim adds ~0.1 s to every call)."""
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.exists():
        sys.exit(f"{path} not found: install the package first (pip install -e .)")
    return path


def make_checkpoint(path: Path, width: int, layers: int = LAYERS, code: str = _MAKE) -> None:
    if path.exists():
        print(f"  reusing {path.name} ({path.stat().st_size / 1e6:.1f} MB)")
        return
    t0 = time.perf_counter()
    tmp = path.with_suffix(".tmp")
    subprocess.run([sys.executable, "-c", code, str(tmp), str(width), str(layers)], check=True)
    tmp.rename(path)
    print(f"  wrote {path.name}: {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s "
          f"(torch.save of {layers} x Linear({width}, {width}) + Adam state + ReduceLROnPlateau state)")


def run_timed(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (kB) of one whole process; output discarded."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"command failed with exit {proc.returncode}: {argv}")
    return elapsed, usage.ru_maxrss


def io_probe(argv: list[str]) -> tuple[int, set[str]]:
    """Bytes the process read (``rchar``: files, including .py/.pyc, and pipes) and the modules it loaded."""
    if argv[:2] == [sys.executable, "-c"]:
        body = f"exec({argv[2]!r})"
    else:  # a console script: run it as __main__ in this same process
        body = (f"sys.argv = {argv!r}\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
                "except SystemExit:\n    pass")
    cmd = [sys.executable, "-c", f"import runpy, sys\ntry:\n    {body}{_REPORT_IO}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    line = next(ln for ln in out.stderr.splitlines() if ln.startswith("RCHAR "))
    _, rchar, _, *mods = line.split()
    return int(rchar), set(mods)


def check_outputs(ours_argv: list[str], base_argv: list[str]) -> str:
    """Both commands must report the same scheduler state (here: ``best`` and ``num_bad_epochs``)."""
    ours = json.loads(subprocess.run(ours_argv, capture_output=True, text=True, check=True).stdout)
    base = subprocess.run(base_argv, capture_output=True, text=True, check=True).stdout
    state = ours["checkpoint"]["state"]
    best = float(re.search(r"'best': ([^,}]+)", base).group(1))
    nbad = int(re.search(r"'num_bad_epochs': (\d+)", base).group(1))
    if (state["best"], state["num_bad_epochs"]) != (best, nbad):
        raise SystemExit(f"outputs disagree: ours {state}, torch.load {base}")
    return f"best {best}, num_bad_epochs {nbad}, last_epoch {state['last_epoch']}, lr {state['_last_lr']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", action="store_true",
                        help=f"keep the checkpoints in {WORK} (reused next run)")
    args = parser.parse_args()

    WORK.mkdir(exist_ok=True)
    big, small = WORK / f"big_w{BIG_WIDTH}.pt", WORK / f"small_w{SMALL_WIDTH}.pt"
    many = WORK / f"many_l{MANY_LAYERS}.pt"
    print(f"bench_checkpoint: {args.repeats} interleaved runs each after 1 warm-up; "
          f"python {sys.version.split()[0]}")
    try:
        make_checkpoint(big, BIG_WIDTH)
        make_checkpoint(small, SMALL_WIDTH)
        make_checkpoint(many, 4, MANY_LAYERS, _MAKE_MANY)
        os.sync()  # flush the freshly written files now, or their writeback slows the first timed rounds
        script = str(console_script("plateau-trace"))
        key_a, key_b = "(a) plateau-trace BIG --format json", "(b) python -c torch.load(BIG)"
        cmds = {
            key_a: [script, str(big), "--format", "json"],
            key_b: [sys.executable, "-c", _BASELINE.format(path=str(big))],
            "(c) plateau-trace SMALL --format json": [script, str(small), "--format", "json"],
            "(d) plateau-trace MANY --format json": [script, str(many), "--format", "json"],
            "(e) python -c torch.load(MANY)": [sys.executable, "-c", _BASELINE.format(path=str(many))],
        }
        # warm-up: puts both files in the page cache (we cannot drop it without root), so all are timed warm
        agreed = check_outputs(cmds[key_a], cmds[key_b])
        for argv in cmds.values():
            run_timed(argv)
        times: dict[str, list[float]] = {k: [] for k in cmds}
        rss: dict[str, int] = {}
        for _ in range(args.repeats):
            for key, argv in cmds.items():
                elapsed, peak = run_timed(argv)
                times[key].append(elapsed)
                rss[key] = max(rss.get(key, 0), peak)

        print(f"  sizes: BIG {big.stat().st_size / 1e6:.1f} MB, SMALL {small.stat().st_size / 1e6:.1f} MB; "
              "all runs warm (page cache filled by the warm-up run)")
        print(f"  both read the same scheduler state: {agreed}")
        med = {k: statistics.median(v) for k, v in times.items()}
        for key, ts in times.items():
            print(f"  {key:38s} median {med[key]:6.3f} s  min {min(ts):6.3f} s  "
                  f"peak RSS {rss[key] / 1024:4.0f} MB  all {' '.join(f'{t:.3f}' for t in ts)}")
        a, b, c, d, e = med.values()
        v1 = "PASS" if b / a >= TARGET_VS_TORCH else "FAIL"
        v2 = "PASS" if a / c <= TARGET_VS_SMALL else "FAIL"
        print(f"  speed-up (b)/(a) = {b / a:.2f}x (median); target >= {TARGET_VS_TORCH:g}x: {v1}")
        print(f"  size cost (a)/(c) = {a / c:.2f}x (median); target <= {TARGET_VS_SMALL:g}x: {v2}")
        v3 = "PASS" if e / d >= TARGET_MANY else "FAIL"
        print(f"  pickle-heavy speed-up (e)/(d) = {e / d:.2f}x (median); target >= {TARGET_MANY:g}x: {v3}")

        for key in (key_a, key_b):
            rchar, mods = io_probe(cmds[key])
            heavy = ", ".join(f"{h}: {'YES' if h in mods else 'no'}" for h in HEAVY)
            print(f"  {key}: read {rchar / 1e6:.1f} MB in all (files + pipes, /proc/self/io rchar); {heavy}")
    finally:
        if not args.keep:
            for path in (big, small, many):
                path.unlink(missing_ok=True)
            print(f"  deleted the checkpoints in {WORK} (pass --keep to keep them)")


if __name__ == "__main__":
    main()
