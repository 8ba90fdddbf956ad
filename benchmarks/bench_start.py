"""Start-up cost of ``plateau-trace --help`` against ``python -c "import click"``, whole process.

Target (issue): ``plateau-trace --help`` takes at most 1.5x the time of a bare ``import click``.
Also shows, from ``python -X importtime``, that ``--help`` imports neither torch nor pandas.
Run: ``python benchmarks/bench_start.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

TARGET = 1.5
HEAVY = ("torch", "pandas", "numpy", "tabulate", "matplotlib")


def console_script(name: str) -> Path:
    """The installed entry point itself, not a shim (pyenv's bash shim adds ~0.1 s to every call)."""
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.exists():
        sys.exit(f"{path} not found: install the package first (pip install -e .)")
    return path


def time_interleaved(cmds: dict[str, list[str]], repeats: int) -> dict[str, list[float]]:
    """Whole-process wall time of each command: one untimed warm-up each, then ``repeats`` rounds
    that run every command once, so drift on the machine hits all of them alike."""
    for argv in cmds.values():
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(repeats):
        for key, argv in cmds.items():
            t0 = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times[key].append(time.perf_counter() - t0)
    return times


Rows = list[tuple[int, str]]  # (cumulative µs, module)


def import_profile(argv: list[str]) -> tuple[set[str], Rows, dict[str, Rows]]:
    """What a process imports, from ``-X importtime``: every module name, the top-level imports with their
    cumulative µs, and each module's direct children (cumulative µs, name)."""
    out = subprocess.run([sys.executable, "-X", "importtime", *argv],
                         capture_output=True, text=True, check=True)
    names: set[str] = set()
    children: dict[str, Rows] = {}
    pending: dict[int, Rows] = {}  # depth -> rows waiting for their parent (which is printed after them)
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, cumulative, raw = line.split("|")
        name, depth = raw.strip(), len(raw) - len(raw.lstrip())
        names.add(name)
        children[name] = sorted(pending.pop(depth + 2, []), reverse=True)
        pending.setdefault(depth, []).append((int(cumulative), name))
    top = sorted(pending[min(pending)], reverse=True)
    return names, top, children


def _ms(rows: Rows, n: int = 6) -> str:
    return ", ".join(f"{name} {us / 1000:.1f} ms" for us, name in rows[:n]) or "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    script = console_script("plateau-trace")
    help_out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    assert help_out.startswith("Usage: plateau-trace"), help_out[:200]

    ours_key, base_key = "plateau-trace --help", 'python -c "import click"'
    cmds = {ours_key: [str(script), "--help"], base_key: [sys.executable, "-c", "import click"]}
    times = time_interleaved(cmds, args.repeats)
    med = {k: statistics.median(t) for k, t in times.items()}

    print(f"bench_start: {args.repeats} interleaved runs each after 1 warm-up; "
          f"python {sys.version.split()[0]}")
    print(f"  console script: {script}")
    for key, ts in times.items():
        print(f"  {key:28s} median {med[key]:7.3f} s   "
              f"min {min(ts):7.3f} s   all " + " ".join(f"{t:.3f}" for t in ts))
    ratio = med[ours_key] / med[base_key]
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(f"  ratio plateau-trace --help / import click = {ratio:.2f}x (median), "
          f"{min(times[ours_key]) / min(times[base_key]):.2f}x (min); target <= {TARGET}x: {verdict}")

    names, top, children = import_profile([str(script), "--help"])
    heavy = {h: any(n == h or n.startswith(h + ".") for n in names) for h in HEAVY}
    print(f"  imports during --help (python -X importtime): {len(names)} modules; "
          + ", ".join(f"{h}: {'YES' if v else 'no'}" for h, v in heavy.items()))
    _, base_top, _ = import_profile(["-c", "import click"])
    print("  import times below are cumulative, from one -X importtime run (which inflates them):")
    print(f"    top level, plateau-trace --help: {_ms(top, 3)}")
    print(f"    top level, import click:         {_ms(base_top, 3)}")
    for mod in ("plateau_forensics.cli", "plateau_forensics"):
        print(f"    inside {mod}: {_ms(children.get(mod, []))}")
    pf = [n for n in names if n == "plateau_forensics" or n.startswith("plateau_forensics.")]
    print(f"  plateau_forensics modules loaded by --help: {', '.join(sorted(pf))}")


if __name__ == "__main__":
    main()
