"""Tests for the torch-free checkpoint reader, with real ``torch.save`` files and torch as the oracle.

Every fixture writes a real checkpoint to ``tmp_path`` in both the zip and the legacy format.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import pickle
import struct
import subprocess
import sys
import types
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from plateau_forensics import torchfile
from plateau_forensics.errors import CheckpointError
from plateau_forensics.torchfile import Opaque, TensorRef, read_torch_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["zip", "legacy"])
def save(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Return a function that torch.saves an object in the parametrized format and returns the path."""

    def _save(obj: Any, name: str = "ckpt.pt") -> Path:
        path = tmp_path / name
        torch.save(obj, path, _use_new_zipfile_serialization=request.param == "zip")
        return path

    return _save


def assert_same(ours: Any, theirs: Any, where: str = "root") -> None:
    """Assert our tree equals torch's: same containers and keys, floats bit-exact, tensors by value."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, TensorRef), where
        assert ours.dtype == str(theirs.dtype).removeprefix("torch."), where
        assert ours.shape == tuple(theirs.shape), where
        assert_same(ours.tolist(), theirs.tolist(), where)
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict) and list(ours) == list(theirs), where
        for key, value in theirs.items():
            assert_same(ours[key], value, f"{where}[{key!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(theirs, float):
        assert type(ours) is float and struct.pack("<d", ours) == struct.pack("<d", theirs), where
    else:
        assert type(ours) is type(theirs) and ours == theirs, where


def stepped_scheduler() -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
    """Build a tiny model, an Adam optimizer after one step and a ReduceLROnPlateau after a reduction."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=1, cooldown=1, min_lr=1e-3)
    for loss in [1.0, 1.2, 1.3, 1.4, 0.5]:
        sched.step(loss)
    return model, opt, sched


def test_plateau_state_dict_matches_torch(save: Any) -> None:
    """A plain ReduceLROnPlateau.state_dict() reads back equal to torch.load's, inf included."""
    _, _, sched = stepped_scheduler()
    path = save(sched.state_dict())
    expected = torch.load(path, weights_only=True)
    assert expected["mode_worse"] == float("inf")
    assert_same(read_torch_file(path), expected)


def test_full_checkpoint_matches_torch(save: Any) -> None:
    """A model/optimizer/scheduler checkpoint gives TensorRefs whose dtype, shape and values match torch."""
    model, opt, sched = stepped_scheduler()
    ckpt = {"epoch": 5, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict()}
    path = save(ckpt)
    ours = read_torch_file(path)
    assert_same(ours, torch.load(path, weights_only=True))
    assert ours["model"]["0.weight"].is_parameter is False and ours["model"]["0.weight"].shape == (2, 3)
    assert ours["optimizer"]["state"][0]["step"].item() == 1.0


def test_zero_dim_best_tensor_item(save: Any) -> None:
    """A 0-dim tensor `best` becomes a TensorRef whose item() is the saved value."""
    _, _, sched = stepped_scheduler()
    state = sched.state_dict()
    state["best"] = torch.tensor(0.25)
    best = read_torch_file(save(state))["best"]
    assert isinstance(best, TensorRef) and best.shape == () and best.numel == 1
    assert best.item() == 0.25 and best.tolist() == 0.25


def test_tensor_lr_in_param_groups(save: Any) -> None:
    """An SGD optimizer built with a tensor lr keeps it as a TensorRef that item() reads back."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=torch.tensor(0.5))
    lr = read_torch_file(save(opt.state_dict()))["param_groups"][0]["lr"]
    assert isinstance(lr, TensorRef) and lr.item() == 0.5


@pytest.mark.parametrize(
    "value",
    [torch.tensor(1 / 3, dtype=torch.float16), torch.tensor(1 / 3, dtype=torch.bfloat16),
     torch.tensor(1 / 3, dtype=torch.float32), torch.tensor(1 / 3, dtype=torch.float64),
     torch.tensor(-(2**40), dtype=torch.int64), torch.tensor(-5, dtype=torch.int8),
     torch.tensor(200, dtype=torch.uint8), torch.tensor(True), torch.tensor(1.5 - 2j, dtype=torch.complex64),
     torch.tensor(60000, dtype=torch.uint16)],
    ids=lambda value: str(value.dtype).removeprefix("torch."),
)
def test_zero_dim_item_per_dtype(save: Any, value: torch.Tensor) -> None:
    """item() of a 0-dim tensor of each dtype equals torch's .item() exactly, with the same Python type."""
    # uint16 has no legacy *Storage class: it goes through _rebuild_tensor_v3 with an untyped storage
    # (torch 2.13 writes such a legacy file but cannot load it back; we can).
    ref = read_torch_file(save({"v": value}))["v"]
    assert ref.dtype == str(value.dtype).removeprefix("torch.")
    assert type(ref.item()) is type(value.item()) and ref.item() == value.item()


def test_views_and_offsets_tolist(save: Any) -> None:
    """Slices, transposes and columns that share one storage read back with torch's tolist()."""
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    views = {"rows": base[1:3], "t": base.t(), "col": base[:, 2], "elem": base[2, 3], "empty": base[:0]}
    path = save(views)
    ours = read_torch_file(path)
    assert ours["rows"].storage_offset == 6 and ours["t"].stride == (1, 6)
    assert len({ref.storage_key for ref in ours.values()}) == 1
    assert_same(ours, torch.load(path, weights_only=True))


def test_bfloat16_tolist_exact(save: Any) -> None:
    """bfloat16 values widen to the exact floats torch reports."""
    value = torch.tensor([[1 / 3, -2.5e-3], [1e30, float("-inf")]], dtype=torch.bfloat16)
    assert read_torch_file(save({"v": value}))["v"].tolist() == value.tolist()


def test_item_rejects_multi_element_tensor(save: Any) -> None:
    """item() on a tensor with several elements raises CheckpointError, as torch raises."""
    ref = read_torch_file(save({"v": torch.zeros(3)}))["v"]
    with pytest.raises(CheckpointError, match=r"one-element"):
        ref.item()


def test_tensor_ref_is_hashable_value(save: Any) -> None:
    """TensorRef hashes and compares by metadata, and its repr shows dtype and shape but no data."""
    ref = read_torch_file(save({"v": torch.full((2, 3), 7.0)}))["v"]
    assert hash(ref) == hash(ref) and {"x": ref}["x"] == ref
    assert repr(ref) == "TensorRef(dtype='float32', shape=(2, 3), device='cpu')"


@pytest.mark.parametrize("prefix_from", ["file_stem", "buffer"])
def test_zip_prefix_is_found(tmp_path: Path, prefix_from: str) -> None:
    """The data.pkl prefix is found whether torch named it after the file or 'archive'."""
    path = tmp_path / "my_run.pt"
    if prefix_from == "buffer":
        buffer = io.BytesIO()
        torch.save({"v": torch.tensor(2.0)}, buffer)
        path.write_bytes(buffer.getvalue())
    else:
        torch.save({"v": torch.tensor(2.0)}, path)
    expected = "archive/data.pkl" if prefix_from == "buffer" else "my_run/data.pkl"
    assert expected in zipfile.ZipFile(path).namelist()
    assert read_torch_file(path)["v"].item() == 2.0


@pytest.mark.parametrize(
    "compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
def test_rezipped_archive_without_byteorder(tmp_path: Path, compression: int) -> None:
    """An archive with no byteorder record (older torch), even re-zipped with compression, reads back."""
    src, dst = tmp_path / "src.pt", tmp_path / "old.pt"
    torch.save({"v": torch.arange(1000, dtype=torch.float64)}, src)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=compression) as zout:
        for info in zin.infolist():
            if not info.filename.endswith("/byteorder"):
                zout.writestr(info.filename, zin.read(info))
    ref = read_torch_file(dst)["v"]
    assert ref.tolist() == list(map(float, range(1000)))
    assert replace_offset(ref, 998).item() == 998.0


def replace_offset(ref: TensorRef, offset: int) -> TensorRef:
    """Return a one-element view of the same storage at another offset."""
    return dataclasses.replace(ref, shape=(), stride=(), storage_offset=offset)


class TaggedTensor(torch.Tensor):
    """A tensor subclass, which torch pickles through _rebuild_from_type_v2."""


def test_tensor_subclass_and_class_globals(save: Any) -> None:
    """A tensor subclass reads as a TensorRef, and a class stored as a value is a named Opaque type."""
    tagged = torch.tensor([1.0, 2.0]).as_subclass(TaggedTensor)
    obj = read_torch_file(save({"t": tagged, "optimizer_class": torch.optim.Adam}))
    assert isinstance(obj["t"], TensorRef) and obj["t"].tolist() == [1.0, 2.0]
    optimizer_class = obj["optimizer_class"]
    assert issubclass(optimizer_class, Opaque) and optimizer_class.name == "torch.optim.adam.Adam"
    assert repr(optimizer_class) == "<Opaque global torch.optim.adam.Adam>"


def test_pickled_scheduler_object_is_opaque(save: Any) -> None:
    """torch.save of the scheduler object gives an Opaque whose mapping() holds the plateau state."""
    _, _, sched = stepped_scheduler()
    obj = read_torch_file(save(sched))
    assert isinstance(obj, Opaque) and obj.name == "torch.optim.lr_scheduler.ReduceLROnPlateau"
    state = obj.mapping()
    assert {k: state[k] for k in ("num_bad_epochs", "cooldown_counter", "best", "last_epoch")} == {
        "num_bad_epochs": sched.num_bad_epochs, "cooldown_counter": sched.cooldown_counter,
        "best": sched.best, "last_epoch": sched.last_epoch}
    optimizer = state["optimizer"]
    assert isinstance(optimizer, Opaque) and optimizer.name == "torch.optim.adam.Adam"
    assert optimizer.mapping()["param_groups"][0]["lr"] == sched.optimizer.param_groups[0]["lr"] < 0.1


def test_pickled_module_is_opaque_with_parameters(save: Any) -> None:
    """torch.save of a whole nn.Module gives an Opaque whose _parameters are TensorRef parameters."""
    model = torch.nn.Linear(3, 2)
    obj = read_torch_file(save(model))
    assert obj.name == "torch.nn.modules.linear.Linear"
    weight = obj.mapping()["_parameters"]["weight"]
    assert weight.is_parameter and weight.requires_grad and weight.tolist() == model.weight.tolist()


@dataclasses.dataclass
class Config:
    """A user config object as training scripts put them in checkpoints."""

    lr: float = 0.1
    layers: tuple[int, ...] = (64, 32)


class AttributeDict(dict):  # type: ignore[type-arg]
    """Stand-in for Lightning's AttributeDict: a dict subclass with attribute access."""

    def __getattr__(self, key: str) -> Any:
        return self[key]


def test_config_objects_are_recorded(save: Any) -> None:
    """argparse.Namespace, a dataclass and a dict subclass become Opaque records with their contents."""
    obj = read_torch_file(save({"args": argparse.Namespace(lr=0.1), "cfg": Config(),
                                "hparams": AttributeDict(patience=3, factor=0.5)}))
    assert obj["args"].name == "argparse.Namespace" and obj["args"].mapping() == {"lr": 0.1}
    assert obj["cfg"].name == f"{__name__}.Config" and obj["cfg"].mapping() == {"lr": 0.1, "layers": (64, 32)}
    assert obj["hparams"].name == f"{__name__}.AttributeDict"
    assert obj["hparams"].items == {"patience": 3, "factor": 0.5} == obj["hparams"].mapping()


def test_classes_are_never_imported(save: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A class from a module that no longer exists is named, not imported."""
    ghost = types.ModuleType("ghost_training_code")
    exec("class Trainer:\n    def __init__(self):\n        self.patience = 4\n", ghost.__dict__)
    monkeypatch.setitem(sys.modules, "ghost_training_code", ghost)
    path = save({"trainer": ghost.Trainer()})
    monkeypatch.delitem(sys.modules, "ghost_training_code")
    trainer = read_torch_file(path)["trainer"]
    assert trainer.name == "ghost_training_code.Trainer" and trainer.mapping() == {"patience": 4}
    assert "ghost_training_code" not in sys.modules


def test_numpy_scalars_are_decoded(save: Any) -> None:
    """numpy float64/float32/float16/int64/bool scalars become exact Python numbers; arrays stay Opaque."""
    values = {"f8": np.float64(0.1), "f4": np.float32(0.1), "f2": np.float16(0.1), "i8": np.int64(-7),
              "u1": np.uint8(250), "b": np.bool_(True)}
    obj = read_torch_file(save({**values, "array": np.arange(3.0)}))
    for key, value in values.items():
        assert type(obj[key]) is type(value.item()) and obj[key] == value.item(), key
    assert isinstance(obj["array"], Opaque) and obj["array"].name.endswith("multiarray._reconstruct")


def test_misc_builtins(save: Any) -> None:
    """Sets, complex numbers, bytes, torch.Size and devices read back as values or named records."""
    obj = read_torch_file(save({"set": {1, 2}, "fs": frozenset("ab"), "c": 1 + 2j, "empty": b"",
                                "b": b"\x00\xff", "ba": bytearray(b"xy"), "size": torch.Size([2, 3]),
                                "dev": torch.device("cuda", 0), "dtype": torch.float32}))
    assert obj["set"] == {1, 2} and obj["fs"] == frozenset("ab") and obj["c"] == 1 + 2j
    assert (obj["empty"], obj["b"], obj["ba"], obj["size"]) == (b"", b"\x00\xff", bytearray(b"xy"), (2, 3))
    assert obj["dev"].name == "torch.device" and obj["dev"].args == ("cuda", 0)
    assert obj["dtype"].name == "torch.float32"


class Pwn:
    """An object whose unpickling would run a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


class EvalPwn:
    """An object whose unpickling would eval/exec a string."""

    def __init__(self, func: Any, source: str) -> None:
        self.func, self.source = func, source

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, (self.source,))


def test_malicious_reduce_stays_inert(save: Any, tmp_path: Path) -> None:
    """os.system, eval and exec named by the pickle are recorded, never called."""
    target = tmp_path / "pwned"
    obj = read_torch_file(save({
        "system": Pwn(f"touch {target}"),
        "eval": EvalPwn(eval, f"open({str(target)!r}, 'w')"),
        "exec": EvalPwn(exec, f"open({str(target)!r}, 'w')")}))
    assert not target.exists()
    assert obj["system"].name in {"posix.system", "os.system"} and obj["system"].args == (f"touch {target}",)
    assert (obj["eval"].name, obj["exec"].name) == ("builtins.eval", "builtins.exec")
    shown = repr(obj["system"])  # the call, its argument clipped to a bounded length (tmp paths vary)
    assert shown.startswith(f"<Opaque {obj['system'].name} args=('touch ") and shown.endswith(">")
    assert len(shown) <= len(f"<Opaque {obj['system'].name} args=('touch {target}',)>")


def write_zip_pickle(path: Path, pickle_bytes: bytes) -> Path:
    """Write a minimal torch-style archive whose data.pkl is the given (hostile) pickle."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("evil/data.pkl", pickle_bytes)
        zf.writestr("evil/version", b"3\n")  # torch.load requires it, and so does our reader
    return path


def test_build_cannot_patch_the_allowlist(tmp_path: Path) -> None:
    """A BUILD aimed at an allowlisted function is refused, and the allowlist stays intact."""
    before = dict(torchfile._ALLOWED)
    hostile = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}X\x02\x00\x00\x00fnK\x01sb."
    with pytest.raises(CheckpointError, match=r"set state"):
        read_torch_file(write_zip_pickle(tmp_path / "evil.pt", hostile))
    assert torchfile._ALLOWED == before
    assert torchfile._ALLOWED["torch._utils._rebuild_tensor_v2"].fn.__name__ == "_rebuild_tensor_v2"


def test_long_repr_is_truncated(save: Any) -> None:
    """An Opaque holding a huge state has a short repr."""
    namespace = argparse.Namespace(blob="x" * 10_000, **{f"k{i}": i for i in range(500)})
    text = repr(read_torch_file(save({"args": namespace}))["args"])
    assert len(text) <= 401 and text.startswith("<Opaque argparse.Namespace state={")


def half_of_real_checkpoint(tmp_path: Path, legacy: bool) -> bytes:
    """Return the first half of the bytes of a real checkpoint."""
    path = tmp_path / "real.pt"
    torch.save({"w": torch.zeros(1000)}, path, _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("content", "message"),
    [(lambda p: b"", "empty file"),
     (lambda p: b"epoch,val_loss\n1,0.5\n", "not a torch.save file"),
     (lambda p: bytes(range(256)) * 8, "not a torch.save file"),
     (lambda p: b"\x80\x02}q\x00X\x01\x00\x00\x00aK\x01s.", "without torch's legacy magic number"),
     (lambda p: half_of_real_checkpoint(p, legacy=False), "corrupt or truncated zip archive"),
     (lambda p: half_of_real_checkpoint(p, legacy=True), "truncated legacy file")],
    ids=["empty", "csv", "random_bytes", "plain_pickle", "truncated_zip", "truncated_legacy"],
)
def test_non_torch_inputs_raise_checkpoint_error(tmp_path: Path, content: Any, message: str) -> None:
    """Files torch.save did not write (or half wrote) raise a one-line CheckpointError naming the file."""
    path = tmp_path / "input.pt"
    path.write_bytes(content(tmp_path))
    with pytest.raises(CheckpointError) as info:
        read_torch_file(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_paths_raise_checkpoint_error(tmp_path: Path, kind: str) -> None:
    """A missing path or a directory raises CheckpointError, not OSError."""
    path = tmp_path / "nothing.pt"
    if kind == "directory":
        path.mkdir()
    with pytest.raises(CheckpointError, match=r"no such file|is a directory"):
        read_torch_file(str(path))


@pytest.fixture
def disk_bytes(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count every byte the reader pulls from disk through its single file-opening helper."""
    counter = {"bytes": 0}

    class CountingFile(io.FileIO):
        def readinto(self, buffer: Any) -> int | None:
            n = super().readinto(buffer)
            counter["bytes"] += n or 0
            return n

        def read(self, size: int = -1) -> bytes:
            data = super().read(size)
            counter["bytes"] += len(data or b"")
            return data

    def counting_open(path: str, buffering: int = -1) -> Any:
        raw = CountingFile(path, "r")
        return raw if buffering == 0 else io.BufferedReader(raw)

    monkeypatch.setattr(torchfile, "_open_binary", counting_open)
    return counter


def test_weights_are_never_read(
    save: Any, disk_bytes: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading a checkpoint with a 50 MB weight reads only its pickle; item() then reads just 4 bytes."""
    _, _, sched = stepped_scheduler()
    path = save({"model": {"w": torch.zeros(13_107_200)}, "scheduler": sched.state_dict(),
                 "best": torch.tensor(0.75)})
    assert path.stat().st_size > 50_000_000
    with monkeypatch.context() as patch:
        patch.setattr(torchfile._Source, "read", lambda *a: pytest.fail("storage bytes were read"))
        obj = read_torch_file(path)
    assert disk_bytes["bytes"] < 200_000
    disk_bytes["bytes"] = 0
    assert obj["best"].item() == 0.75 and obj["best"]._source.bytes_read == 4
    assert disk_bytes["bytes"] < 200_000


def test_import_does_not_pull_in_torch() -> None:
    """Importing the reader in a fresh interpreter does not import torch."""
    code = "import plateau_forensics.torchfile, sys; assert 'torch' not in sys.modules"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env=env)


# --- the pickle machine against CPython's unpickler, and the reader's limits
# ---------------------------------

def machine_load(data: bytes) -> Any:
    """Run our pickle machine (with the reader's allowlist) over one pickle stream."""
    return torchfile._Reader(torchfile._Source("<memory>"), data, None).load()


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**600), 2**600), st.floats(allow_nan=False),
                     st.text(max_size=20), st.binary(max_size=20), st.complex_numbers(allow_nan=False))
_hashables = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5)),
                          lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
                          max_leaves=6)
_values = st.recursive(
    _scalars | st.sets(_hashables, max_size=4) | st.frozensets(_hashables, max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(_hashables, inner, max_size=4), max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(value=_values, protocol=st.integers(0, 5))
def test_machine_equals_cpython_on_plain_values(value: Any, protocol: int) -> None:
    """For plain values, every protocol 0-5, our machine builds exactly what pickle.loads builds."""
    data = pickle.dumps(value, protocol=protocol)
    assert repr(machine_load(data)) == repr(pickle.loads(data))


def test_shared_and_self_referencing_values() -> None:
    """Memo references rebuild shared objects and cycles as CPython does."""
    shared = [1, 2]
    cyclic: list[Any] = [shared, shared]
    cyclic.append(cyclic)
    out = machine_load(pickle.dumps(cyclic, protocol=2))
    assert out[0] is out[1] and out[2] is out and out[0] == [1, 2]


@pytest.mark.parametrize("op", [b"\x82\x01", b"\x83\x01\x00", b"\x84\x01\x00\x00\x00"],
                         ids=["EXT1", "EXT2", "EXT4"])
def test_ext_opcodes_are_refused(op: bytes) -> None:
    """EXT opcodes are refused outright: their meaning lives in copyreg's process-wide registry."""
    with pytest.raises(CheckpointError, match=r"refused: the pickle uses EXT"):
        machine_load(b"\x80\x02" + op + b".")


def test_nesting_limit_is_exact() -> None:
    """A tuple nested 99 deep works as a dict key; 101 deep is refused before CPython hashes it."""
    ok = b"\x80\x02}" + b")" + b"\x85" * 98 + b"Ns."
    assert len(machine_load(ok)) == 1
    with pytest.raises(CheckpointError, match=r"nested deeper than 100"):
        machine_load(b"\x80\x02}" + b")" + b"\x85" * 100 + b"Ns.")


def test_damaged_weight_is_reported_unverified(tmp_path: Path) -> None:
    """A flipped weight byte goes unnoticed by torch.load and by us; we say those bytes were not verified."""
    _, _, sched = stepped_scheduler()
    path = tmp_path / "w.pt"
    torch.save({"w": torch.arange(64.0), "scheduler": sched.state_dict()}, path)
    info = next(i for i in zipfile.ZipFile(path).infolist() if i.filename.endswith("/data/0"))
    raw = bytearray(path.read_bytes())
    with open(path, "rb") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", fh.read(4))
    at = info.header_offset + 30 + name_len + extra_len + 100
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert torch.load(path, weights_only=True)["w"][25].item() != 25.0  # torch reads the damage silently
    archive = torchfile.read_torch_archive(path)
    assert archive.obj["scheduler"]["best"] == sched.best
    assert any(start <= at < end for start, end, _ in archive.unverified)
    assert archive.integrity == (
        "not verified: the CRC-32 of 1 storage member(s) (256 bytes of tensor data, never read; "
        "torch.load does not check it either)",)


def test_legacy_files_say_they_have_no_checksums(tmp_path: Path) -> None:
    """A legacy file's integrity note says neither its pickles nor its storages can be verified."""
    path = tmp_path / "l.pt"
    torch.save({"w": torch.zeros(4)}, path, _use_new_zipfile_serialization=False)
    (note,) = torchfile.read_torch_archive(path).integrity
    assert note.startswith("not verified: the legacy format has no checksums") and "1 storage(s)" in note


def test_protocol_4_file_reads_with_a_note(tmp_path: Path) -> None:
    """torch.save(pickle_protocol=4) reads back equal, with a note that torch's weights-only loader refuses
    it."""
    _, _, sched = stepped_scheduler()
    path = tmp_path / "p4.pt"
    torch.save(sched.state_dict(), path, pickle_protocol=4)
    archive = torchfile.read_torch_archive(path)
    assert archive.obj == sched.state_dict()
    assert any("torch.load(weights_only=True) refuses (" in n for n in archive.integrity), archive.integrity


def test_duplicate_member_is_ambiguous(tmp_path: Path) -> None:
    """A zip holding data.pkl twice is refused: torch and zipfile would each pick a different copy."""
    src, dst = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save({"v": 1}, src)
    with zipfile.ZipFile(src) as zin, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        with zipfile.ZipFile(dst, "w") as zout:
            for info in zin.infolist():
                zout.writestr(info.filename, zin.read(info))
            pkl = next(n for n in zin.namelist() if n.endswith("data.pkl"))
            zout.writestr(pkl, pickle.dumps({"v": 2}, 2))
    with pytest.raises(CheckpointError, match=r"ambiguous archive: member '.*/data\.pkl' appears twice"):
        read_torch_file(dst)
