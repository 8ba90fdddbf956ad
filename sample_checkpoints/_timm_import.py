"""Import timm's scheduler code without running ``timm/__init__.py`` (which needs torchvision).

timm's ``PlateauLRScheduler`` (``timm/scheduler/plateau_lr.py`` and its base ``scheduler.py``) and its summary
writer (``timm/utils/summary.py``) need only torch and the standard library, but ``import timm`` runs
``timm/__init__.py``, which imports the model zoo and through it torchvision, whose PyPI build does not load with
the CPU torch 2.13.0 used here. So ``timm``, ``timm.scheduler`` and ``timm.utils`` are registered as bare package
modules whose ``__path__`` is the installed folder: their ``__init__`` files never run, and the submodules imported
through them are timm's own files, unmodified.

Install: ``pip install --no-deps timm==1.0.31`` (see README, "Training stacks"). Shared by the generator
(``make_timm.py``) and the tests (``tests/test_timm.py``, through ``sys.path``); nothing in ``plateau_forensics``
imports timm.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

#: The timm release the fixtures were generated with and CI installs (``pip install --no-deps timm==...``).
TIMM_VERSION = "1.0.31"
#: Bare packages registered in ``sys.modules``: their ``__init__`` imports torchvision (or the model zoo).
BARE = ("timm", "timm.scheduler", "timm.utils")


def timm_folder() -> Path | None:
    """The installed ``timm`` package folder (found without importing it), or None when timm is absent."""
    spec = importlib.util.find_spec("timm") if "timm" not in sys.modules else sys.modules["timm"].__spec__
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def timm_version() -> str | None:
    """The installed timm distribution's version (from its metadata), or None."""
    try:
        return importlib.metadata.version("timm")
    except importlib.metadata.PackageNotFoundError:
        return None


def _bare(name: str, folder: Path) -> None:
    if name in sys.modules:
        return
    module = types.ModuleType(name, f"bare package: {folder} (its __init__.py is not run)")
    module.__path__ = [str(folder)]  # a package: submodules are found in the installed folder
    module.__file__ = None
    spec = importlib.util.spec_from_loader(name, loader=None, is_package=True)
    assert spec is not None
    spec.submodule_search_locations = [str(folder)]
    module.__spec__ = spec
    module.__package__ = name
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)


def import_timm(submodule: str) -> Any:
    """``timm.<submodule>`` (e.g. ``"scheduler.plateau_lr"``), imported without any timm ``__init__.py``.

    Raises:
        ModuleNotFoundError: timm is not installed (``pip install --no-deps timm==1.0.31``).
    """
    root = timm_folder()
    if root is None:
        raise ModuleNotFoundError("timm is not installed: pip install --no-deps timm==" + TIMM_VERSION,
                                  name="timm")
    for name in BARE:
        _bare(name, root.joinpath(*name.split(".")[1:]))
    return importlib.import_module(f"timm.{submodule}")


def plateau_scheduler_class() -> type:
    """timm's own ``PlateauLRScheduler`` class (``timm/scheduler/plateau_lr.py``, unmodified)."""
    return import_timm("scheduler.plateau_lr").PlateauLRScheduler  # type: ignore[no-any-return]
