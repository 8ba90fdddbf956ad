"""The README tells the truth: its output block, its commands and its API claims are checked here."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner
from conftest import ROOT

import plateau_forensics as pf
from plateau_forensics.cli import main

README = (ROOT / "README.md").read_text()


START, END = "<!-- quickstart-output:start -->\n```\n", "```\n<!-- quickstart-output:end -->"


def test_quickstart_output_is_real(in_root: Path, update_goldens: bool) -> None:
    """The grid shown under Quick start is what the command prints at width 100 (--update-goldens rewrites it)."""
    r = CliRunner().invoke(main, ["sample_checkpoints/seed000.pt", "sample_checkpoints/seed000.csv", "--width", "100"])
    assert r.exit_code == 0
    head, rest = README.split(START)
    block, tail = rest.split(END)
    if update_goldens:
        (ROOT / "README.md").write_text(head + START + r.stdout + END + tail)
        block = r.stdout
    assert block == r.stdout


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run runs the README's test command verbatim."""
    command = re.search(r"^pip install torch==2\.13\.0 && .*pytest$", README, re.M)
    assert command is not None
    assert command.group(0) in (ROOT / ".ci" / "run").read_text().splitlines()


def test_api_claims(in_root: Path) -> None:
    """The numbers quoted in the README's Python API section are what the API returns."""
    t = pf.trace("sample_checkpoints/seed000.pt", "sample_checkpoints/seed000.csv")
    assert (t.alignment.epoch, t.alignment.epoch_offset) == (33, 10)
    assert [s.epoch for s in t.reductions()] == [29, 35, 41, 47]
    assert t.forecast().sentence().startswith("no improvement below 0.4143 by epoch 53 -> ")
    assert len(t.to_frame()) == len(t)
    t3 = pf.replay([1.0, 1.2, 1.3], pf.PlateauConfig(patience=1), lrs=[0.1])
    assert t3.steps[-1].event is pf.Event.REDUCED
