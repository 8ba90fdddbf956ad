"""examples/schedulers.ipynb runs top to bottom, and the committed copy is the generator's, executed and
current.

It is rebuilt by ``examples/make_schedulers_notebook.py`` and executed in memory in a fresh ``python3`` kernel
(``examples/`` as the working directory); the committed file is never written.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
REGENERATE = "regenerate with: python examples/make_schedulers_notebook.py (and review the diff)"

pytestmark = [
    pytest.mark.filterwarnings("ignore:Jupyter is migrating its paths:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore:.*datetime.datetime.utcnow.*:DeprecationWarning"),
]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load("make_schedulers_notebook")
make = _load("make_notebooks")


@pytest.fixture(scope="module")
def executed():
    """The notebook rebuilt from the generator and executed in memory."""
    return make.execute(make.build(gen.CELLS))


def _stdout(nb) -> list[str]:
    return [
        "".join(o.text for o in c.outputs if o.output_type == "stream" and o.name == "stdout")
        for c in nb.cells
        if c.cell_type == "code"
    ]


def test_runs_without_errors(executed) -> None:
    """Every code cell ran, none raised or wrote a warning to stderr."""
    for cell in executed.cells:
        if cell.cell_type == "code":
            assert cell.execution_count is not None
            assert not [o for o in cell.outputs if o.output_type == "error"]
            stderr = "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stderr")
            assert "Warning" not in stderr, f"{cell.id}: {stderr}"


def test_committed_copy_is_current(executed) -> None:
    """The committed notebook has the generator's cells and prints what the code prints today."""
    committed = nbformat.read(EXAMPLES / gen.NAME, as_version=4)
    assert [(c.id, c.cell_type, c.source) for c in make.build(gen.CELLS).cells] == [
        (c.id, c.cell_type, c.source) for c in committed.cells
    ], REGENERATE
    assert _stdout(executed) == _stdout(committed), REGENERATE
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), REGENERATE


def test_draws_every_scheduler_with_the_seed_parameters() -> None:
    """Each torch scheduler is drawn, with the seed notes' parameters where they give them."""
    committed = nbformat.read(EXAMPLES / gen.NAME, as_version=4)
    source = "\n".join(c.source for c in committed.cells if c.cell_type == "code")
    for text in (
        "MultiStepLR(milestones=[100, 210], gamma=0.1)",
        "CosineAnnealingWarmRestarts(T_0=10, T_mult=1, eta_min=1e-5)",
        'CyclicLR(base_lr=5e-5, max_lr=1e-4, step_size_up=5, mode="exp_range", gamma=0.5)',
        '"0.95 ** epoch"',
        "StepLR(step_size=10, gamma=0.5)",
        "CosineAnnealingLR(T_max=50, eta_min=0)",
        "ExponentialLR(gamma=0.5)",
        "OneCycleLR(",
        "LinearLR(",
        "ConstantLR(",
        "PolynomialLR(",
        "SequentialLR(",
        "ChainedScheduler(",
        "MultiplicativeLR(",
        "replay_composed(",
        "pf.trace(",
    ):
        assert text in source, text
    images = sum(
        "image/png" in o.get("data", {}) for c in committed.cells if c.cell_type == "code" for o in c.outputs
    )
    assert images >= 20
    assert committed.cells[-1].cell_type == "code" and "seed000.pt" in committed.cells[-1].source
