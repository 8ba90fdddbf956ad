"""Fast start: importing the package and running --help load neither torch nor pandas."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "pandas", "numpy", "matplotlib", "tabulate")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules), file=sys.stderr)"],
                         capture_output=True, text=True, check=True)
    return set(out.stderr.split())


def test_import_package_is_light() -> None:
    """``import plateau_forensics`` pulls in none of the heavy libraries."""
    loaded = _modules_after("import plateau_forensics")
    assert not {m for m in HEAVY if m in loaded}


def test_help_is_light() -> None:
    """``plateau-trace --help`` prints help without importing torch or pandas."""
    code = (
        "import sys\nfrom plateau_forensics.cli import main\nsys.argv = ['plateau-trace', '--help']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0\n"
    )
    loaded = _modules_after(code)
    assert not {m for m in HEAVY if m in loaded}


def test_entry_point_help_runs() -> None:
    """The installed console script answers --help with exit 0."""
    out = subprocess.run(["plateau-trace", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "Usage: plateau-trace" in out.stdout
