"""``python -m plateau_forensics``: the same as the ``plateau-trace`` command."""

from plateau_forensics.cli import main

main()
