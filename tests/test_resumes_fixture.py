"""The committed resume scenarios in ``sample_checkpoints/resumes/`` regenerate identically."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from torch_oracle import assert_same

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
RESUMES = ROOT / "sample_checkpoints" / "resumes"
SCRIPT = ROOT / "sample_checkpoints" / "make_resumes.py"
SCENARIOS = sorted(p.name for p in RESUMES.iterdir() if p.is_dir())
FILES = ("ckpt.pt", "log.csv", "scenario.json")


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)




@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resumes")
    subprocess.run([sys.executable, str(SCRIPT), str(out)], check=True, capture_output=True, timeout=120)
    return out


def test_scenario_folders_match(regenerated: Path) -> None:
    """make_resumes.py writes exactly the committed scenario folders, each with its three files."""
    assert len(SCENARIOS) == 21
    assert sorted(p.name for p in regenerated.iterdir()) == SCENARIOS
    for name in SCENARIOS:
        assert sorted(p.name for p in (RESUMES / name).iterdir()) == sorted(FILES)


@pytest.mark.parametrize("name", SCENARIOS)
def test_regenerated_texts_are_byte_identical(regenerated: Path, name: str) -> None:
    """Rerunning the generator writes the committed log.csv and scenario.json byte for byte."""
    for file in ("log.csv", "scenario.json"):
        assert (RESUMES / name / file).read_bytes() == (regenerated / name / file).read_bytes(), file


@pytest.mark.parametrize("name", SCENARIOS)
def test_regenerated_checkpoint_loads_equal(regenerated: Path, name: str) -> None:
    """Rerunning the generator writes a checkpoint whose weights_only load equals the committed one."""
    assert_same(load(RESUMES / name / "ckpt.pt"), load(regenerated / name / "ckpt.pt"))


@pytest.mark.parametrize("name", SCENARIOS)
def test_ground_truth_matches_checkpoint_and_log(name: str) -> None:
    """scenario.json names a finding and its checkpoint/resume epochs agree with ckpt.pt and log.csv."""
    info = json.loads((RESUMES / name / "scenario.json").read_text())
    ckpt = load(RESUMES / name / "ckpt.pt")
    assert name.startswith(info["finding"]) and info["description"]
    assert list(ckpt)[:4] == ["epoch", "model", "optimizer", "scheduler"]
    assert info["checkpoint_epoch"] == ckpt["epoch"]
    lines = (RESUMES / name / "log.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,train_loss,val_loss,")
    epochs = [int(line.split(",")[0]) for line in lines[1:]]
    assert ckpt["epoch"] in epochs
    if info["resume_epoch"] is not None:
        assert info["resume_epoch"] == info["checkpoint_epoch"] + 1 and info["resume_epoch"] in epochs


def test_resumes_stay_small() -> None:
    """All scenario files together stay under 300 KB."""
    assert sum(p.stat().st_size for p in RESUMES.rglob("*") if p.is_file()) < 300_000
