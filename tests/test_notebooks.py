"""The example notebooks run top to bottom, and the committed copies hold current outputs.

Each notebook is rebuilt by ``examples/make_notebooks.py`` and executed with nbclient in a fresh
``python3`` kernel (``examples/`` as the working directory, as there), in memory: the committed files are
never written. A cell that raises fails the test with the cell and its traceback.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
REGENERATE = "regenerate with: python examples/make_notebooks.py (and review the diff)"

pytestmark = [
    # jupyter_core < 6 warns that it will move its config paths to platformdirs; not ours to fix
    pytest.mark.filterwarnings("ignore:Jupyter is migrating its paths:DeprecationWarning"),
    # the kernel's own TCP/zmq chatter on some jupyter_client versions
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore:.*datetime.datetime.utcnow.*:DeprecationWarning"),
]


def _make_notebooks():
    spec = importlib.util.spec_from_file_location("make_notebooks", EXAMPLES / "make_notebooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make = _make_notebooks()
NAMES = sorted(make.NOTEBOOKS)


@pytest.fixture(scope="module")
def kernel_name() -> str:
    """The ``python3`` kernel nbclient starts: ipykernel's spec (installed with it, or its built-in one)."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(make.KERNEL)
    assert spec.language == "python"
    return make.KERNEL


@pytest.fixture(scope="module")
def executed(kernel_name: str) -> dict[str, object]:
    """Both notebooks, rebuilt from make_notebooks.py and executed in memory."""
    return {name: make.execute(make.build(make.NOTEBOOKS[name])) for name in NAMES}


def _stdout(nb) -> list[str]:
    """Everything the code cells printed to stdout, cell by cell (figures and HTML left out)."""
    return ["".join(o.text for o in c.outputs if o.output_type == "stream" and o.name == "stdout")
            for c in nb.cells if c.cell_type == "code"]


@pytest.mark.parametrize("name", NAMES)
def test_runs_without_errors(executed, name: str) -> None:
    """Every code cell ran (an exception would have raised CellExecutionError) and none printed an error."""
    nb = executed[name]
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        assert cell.execution_count is not None
        assert not [o for o in cell.outputs if o.output_type == "error"]
        stderr = "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stderr")
        assert "Warning" not in stderr, f"{cell.id}: {stderr}"


@pytest.mark.parametrize("name", NAMES)
def test_committed_copy_is_built_from_the_script(name: str) -> None:
    """The committed notebook has the script's cells, in order, with their sources."""
    committed = nbformat.read(EXAMPLES / name, as_version=4)
    built = make.build(make.NOTEBOOKS[name])
    assert [(c.id, c.cell_type, c.source) for c in built.cells] == [
        (c.id, c.cell_type, c.source) for c in committed.cells], REGENERATE


@pytest.mark.parametrize("name", NAMES)
def test_committed_copy_is_executed(name: str) -> None:
    """Every code cell of the committed notebook has run and shows output, and the pictures are there."""
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), REGENERATE
    images = [c for c in code if any("image/png" in o.get("data", {}) for o in c.outputs)]
    assert len(images) >= 2
    silent = [c.id for c in code if not c.outputs and not c.source.startswith("from pathlib")]
    assert not silent, REGENERATE


@pytest.mark.parametrize("name", NAMES)
def test_committed_outputs_are_current(executed, name: str) -> None:
    """What the committed notebook shows as printed output is what the code prints today."""
    committed = nbformat.read(EXAMPLES / name, as_version=4)
    assert _stdout(executed[name]) == _stdout(committed), REGENERATE


def test_story_shows_grid_and_plots() -> None:
    """The story notebook displays the HTML grid and at least two figures (trace and what-if)."""
    nb = nbformat.read(EXAMPLES / "seed000_story.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    html = [o for o in outputs if "text/html" in o.get("data", {}) and "pf-grid" in o["data"]["text/html"]]
    assert len(html) == 1
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2
