"""Safe, torch-free reader of ``torch.save`` files (zip archive and legacy stream) into plain Python values.

Only our own stand-ins for an allowlist of globals ever run; other globals become inert ``Opaque`` records.
"""

from __future__ import annotations

import _compat_pickle
import io
import math
import os
import pickle
import reprlib
import struct
import sys
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import IO, Any, ClassVar

from plateau_forensics.errors import CheckpointError

__all__ = ["Opaque", "TensorRef", "read_torch_file"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py: MAGIC_NUMBER, then PROTOCOL_VERSION
_LEGACY_PROTOCOL = 1001

# dtype name (str(torch.dtype) minus "torch.") -> (struct code, or None if we cannot decode it; itemsize)
_DTYPES: dict[str, tuple[str | None, int]] = {
    "float64": ("d", 8), "float32": ("f", 4), "float16": ("e", 2), "bfloat16": ("H", 2), "int64": ("q", 8),
    "int32": ("i", 4), "int16": ("h", 2), "int8": ("b", 1), "uint64": ("Q", 8), "uint32": ("I", 4),
    "uint16": ("H", 2), "uint8": ("B", 1), "bool": ("?", 1), "complex128": ("d", 16), "complex64": ("f", 8),
    "complex32": (None, 4), "qint32": (None, 4), "qint8": (None, 1), "quint8": (None, 1),
    "quint4x2": (None, 1), "quint2x4": (None, 1), "float8_e5m2": (None, 1), "float8_e4m3fn": (None, 1),
    "float8_e5m2fnuz": (None, 1), "float8_e4m3fnuz": (None, 1), "float8_e8m0fnu": (None, 1),
}
# Storage-class globals in persistent ids (torch/storage.py _dtype_to_storage_type_map); untyped = bytes.
_STORAGE_DTYPES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "QInt8Storage": "qint8", "QInt32Storage": "qint32",
    "QUInt8Storage": "quint8", "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
    "UntypedStorage": "uint8",
}
# What a hostile or damaged pickle can make the C unpickler, or our stand-ins given odd arguments, raise.
_CORRUPT = (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, KeyError, IndexError,
            struct.error, OverflowError, RecursionError, MemoryError)


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]


def _open_binary(path: str, buffering: int = -1) -> IO[bytes]:
    """Open ``path`` for reading: every byte this module reads from disk comes through here."""
    return open(path, "rb", buffering=buffering)


class _Inert:
    """Refuses pickle's BUILD, which would otherwise write straight into a frozen dataclass's ``__dict__``."""

    def __setstate__(self, state: Any) -> None:
        raise CheckpointError(f"the pickle tried to set state on a {type(self).__name__}")

    def __copy__(self) -> Any:  # immutable: a copy is the object itself
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self


class _Source:
    """Reads storage bytes of one file on demand: opens the file per call and keeps no buffers."""

    def __init__(self, path: str, byteorder: str = "little", zip_prefix: str | None = None) -> None:
        self.path, self.byteorder, self.zip_prefix, self.bytes_read = path, byteorder, zip_prefix, 0
        self.offsets: dict[str, tuple[int, int]] = {}  # legacy: key -> (file offset of the data, nbytes)

    def read(self, key: str, start: int, nbytes: int) -> bytes:
        try:
            with _open_binary(self.path) as fh:
                data = self._read_zip(fh, key, start, nbytes) if self.zip_prefix is not None else (
                    self._read_legacy(fh, key, start, nbytes))
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise CheckpointError(f"{self.path}: cannot read storage {key!r} ({_one_line(exc)})") from None
        if len(data) != nbytes:
            raise CheckpointError(f"{self.path}: storage {key!r} is missing or shorter than its tensor")
        self.bytes_read += nbytes
        return data

    def _read_zip(self, fh: IO[bytes], key: str, start: int, nbytes: int) -> bytes:
        with zipfile.ZipFile(fh) as zf:
            info = next((i for i in zf.infolist() if i.filename == f"{self.zip_prefix}data/{key}"), None)
            if info is None or start + nbytes > info.file_size:
                return b""
            if info.compress_type != zipfile.ZIP_STORED:  # someone re-zipped it: inflate up to our bytes
                with zf.open(info) as member:
                    member.seek(start)
                    return member.read(nbytes)
        fh.seek(info.header_offset)  # torch stores members uncompressed: skip the local header, then seek
        header = fh.read(30)
        if header[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"bad local header for {info.filename}")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        fh.seek(info.header_offset + 30 + name_len + extra_len + start)
        return fh.read(nbytes)

    def _read_legacy(self, fh: IO[bytes], key: str, start: int, nbytes: int) -> bytes:
        offset, size = self.offsets.get(key, (0, -1))
        if start + nbytes > size:
            return b""
        fh.seek(offset + start)
        return fh.read(nbytes)


@dataclass(frozen=True)
class _StorageType(_Inert):
    dtype: str


@dataclass(frozen=True)
class _Storage(_Inert):
    key: str
    dtype: str
    device: str
    nbytes: int
    source: _Source = field(repr=False)


def _decode(dtype: str, raw: bytes, byteorder: str) -> list[Any]:
    """Decode storage bytes to Python numbers; bfloat16 is a float32's top half, so it widens exactly."""
    code, size = _DTYPES.get(dtype, (None, 0))
    if code is None:
        raise CheckpointError(f"cannot decode {dtype} tensors without torch")
    end, n = ("<" if byteorder == "little" else ">"), len(raw) // size
    if dtype == "bfloat16":
        halves = struct.unpack(f"{end}{n}H", raw)
        return list(struct.unpack(f"<{n}f", struct.pack(f"<{n}I", *(h << 16 for h in halves))))
    if dtype.startswith("complex"):
        parts = struct.unpack(f"{end}{2 * n}{code}", raw)
        return [complex(parts[i], parts[i + 1]) for i in range(0, 2 * n, 2)]
    return list(struct.unpack(f"{end}{n}{code}", raw))


@dataclass(frozen=True)
class TensorRef(_Inert):
    """A tensor from the pickle: its metadata now, its values only when ``item()`` or ``tolist()`` ask.

    Attributes:
        dtype: torch's dtype name without ``torch.`` (``"float32"``, ``"bfloat16"``, ``"int64"``, ...).
        shape: One int per dimension; ``()`` for a 0-dim tensor.
        stride: Strides in elements, as torch saved them.
        storage_offset: Position of element 0 in the storage, in elements.
        storage_key: The storage's record name (``<prefix>/data/<key>`` in the zip, or the legacy key).
        device: Where torch saved the storage from (``"cpu"``, ``"cuda:0"``).
        requires_grad: The tensor's ``requires_grad`` flag.
        is_parameter: True if it was pickled as an ``nn.Parameter``.
    """

    dtype: str
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    storage_offset: int
    storage_key: str
    device: str
    requires_grad: bool = False
    is_parameter: bool = False
    _source: _Source | None = field(default=None, compare=False, repr=False)

    @property
    def numel(self) -> int:
        """Number of elements (1 for a 0-dim tensor)."""
        return math.prod(self.shape)

    def item(self) -> Any:
        """Read the one value, like ``Tensor.item()``, reading only its bytes.

        Returns:
            A Python float, int, bool or complex.

        Raises:
            CheckpointError: The tensor does not have exactly one element, or its bytes can't be read/decoded.
        """
        if self.numel != 1:
            raise CheckpointError(f"item() needs a one-element tensor, got shape {self.shape}")
        return self._values(self.storage_offset, 1)[0]

    def tolist(self) -> Any:
        """Read the values as nested lists like ``Tensor.tolist()`` (a number for a 0-dim tensor).

        Raises:
            CheckpointError: The bytes can't be read or decoded.
        """
        span = sum((n - 1) * s for n, s in zip(self.shape, self.stride)) + 1
        flat = self._values(self.storage_offset, span) if self.numel else []

        def build(dim: int, base: int) -> Any:
            if dim == len(self.shape):
                return flat[base]
            return [build(dim + 1, base + i * self.stride[dim]) for i in range(self.shape[dim])]

        return build(0, 0)

    def _values(self, start: int, count: int) -> list[Any]:
        if self._source is None:
            raise CheckpointError("this TensorRef has no file to read its values from")
        size = _DTYPES.get(self.dtype, (None, 1))[1]
        raw = self._source.read(self.storage_key, start * size, count * size)
        return _decode(self.dtype, raw, self._source.byteorder)

    def __repr__(self) -> str:
        kind = ", parameter" if self.is_parameter else ""
        return f"TensorRef(dtype={self.dtype!r}, shape={self.shape!r}, device={self.device!r}{kind})"


class _ShortRepr(reprlib.Repr):
    def repr1(self, x: Any, level: int) -> str:
        if isinstance(x, Opaque):  # name only: nested records can be deep or cyclic
            return f"<Opaque {x.name}>"
        return super().repr1(x, level)


_SHORT = _ShortRepr()
_SHORT.maxstring = _SHORT.maxother = 80


class _OpaqueType(type):
    name: str

    def __repr__(cls) -> str:
        return f"<Opaque global {cls.name}>"


class Opaque(metaclass=_OpaqueType):
    """An object the pickle asked for and we did not build: its global's dotted name and what it was given.

    ``find_class`` returns a cached subclass per name (NEWOBJ needs a type). REDUCE, NEWOBJ, BUILD, SETITEMS
    and APPENDS are only recorded; nothing an Opaque receives is ever called.

    Attributes:
        name: Dotted name of the global, e.g. ``"argparse.Namespace"`` or ``"posix.system"``.
        args: Positional arguments from REDUCE/NEWOBJ/NEWOBJ_EX.
        kwargs: Keyword arguments from NEWOBJ_EX.
        state: The BUILD state (usually the object's ``__dict__``), or None.
        items: Pairs from SETITEM(S), e.g. the contents of a dict subclass.
        list_items: Values from APPEND(S), e.g. the contents of a list subclass.
    """

    __slots__ = ("args", "kwargs", "state", "items", "list_items")
    name: ClassVar[str] = ""
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: Any
    items: dict[Any, Any]
    list_items: list[Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> Opaque:
        self = object.__new__(cls)
        self.args, self.kwargs, self.state, self.items, self.list_items = args, kwargs, None, {}, []
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Do nothing: REDUCE calls ``cls(*args)`` and ``__new__`` has recorded them already."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        """Record an APPEND."""
        self.list_items.append(value)

    def extend(self, values: list[Any]) -> None:
        """Record an APPENDS."""
        self.list_items.extend(values)

    def mapping(self) -> dict[Any, Any]:
        """Merge the attributes and items the pickle gave this object into one dict, to search in.

        Returns:
            ``state`` if it is a dict (or both dict halves of a ``(state, slotstate)`` pair), updated with
            ``items``.
        """
        merged: dict[Any, Any] = {}
        parts = self.state if isinstance(self.state, tuple) and len(self.state) == 2 else (self.state,)
        for part in parts:
            if isinstance(part, dict):
                merged.update(part)
        merged.update(self.items)
        return merged

    def __repr__(self) -> str:
        shown = [f"{label}={_SHORT.repr(getattr(self, label))}"
                 for label in ("args", "kwargs", "state", "items", "list_items")
                 if getattr(self, label) not in (None, (), {}, [])]
        return " ".join([f"<Opaque {self.name}", *shown])[:400] + ">"


@lru_cache(maxsize=4096)
def _opaque_class(name: str) -> type[Opaque]:
    return _OpaqueType(f"Opaque[{name}]", (Opaque,), {"__slots__": (), "name": name, "__module__": __name__})


# --- The allowlist: our own stand-ins, called in place of the globals the pickle names. ---

_REFUSED = object()  # a stand-in returns this for arguments it won't take: the call is recorded as an Opaque


@dataclass(frozen=True)
class _Allowed(_Inert):
    name: str
    fn: Callable[..., Any]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self.fn(*args, **kwargs)
        return _opaque_class(self.name)(*args, **kwargs) if result is _REFUSED else result


def _tensor(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
            dtype: str | None = None) -> TensorRef:
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"a tensor is rebuilt from {type(storage).__name__}, not from a storage")
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride) or not all(type(v) is int and v >= 0 for v in (offset, *size, *stride)):
        raise CheckpointError(f"malformed tensor (offset={offset!r}, size={size!r}, stride={stride!r})")
    dtype = dtype or storage.dtype
    itemsize = _DTYPES.get(dtype, (None, 0))[1]
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if itemsize and math.prod(size) and (last + 1) * itemsize > storage.nbytes:
        raise CheckpointError(f"a tensor of size {size} at offset {offset} overruns storage {storage.key!r}")
    return TensorRef(dtype, size, stride, offset, storage.key, storage.device, bool(requires_grad),
                     _source=storage.source)


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, metadata: Any = None) -> TensorRef:
    return _tensor(storage, offset, size, stride, requires_grad)  # metadata holds conj/neg bits: ignored


def _rebuild_tensor_v3(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, dtype: Any, metadata: Any = None) -> TensorRef:
    # torch uses v3 for dtypes without a *Storage class (uint16, float8...): untyped storage + a dtype global.
    if not (isinstance(dtype, _OpaqueType) and dtype.name.startswith("torch.")):
        raise CheckpointError(f"a tensor has an unknown dtype {dtype!r}")
    return _tensor(storage, offset, size, stride, requires_grad, dtype.name.removeprefix("torch."))


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any, state: Any = None) -> Any:
    if isinstance(data, TensorRef):
        return replace(data, is_parameter=True, requires_grad=bool(requires_grad))
    return data


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    if not (isinstance(func, (_Allowed, _OpaqueType)) and isinstance(args, tuple)):
        raise CheckpointError(f"a tensor subclass is rebuilt by {func!r}")
    return func(*args)  # a tensor subclass (new_type) and its state are dropped: the tensor is what we need


def _latin1_bytes(obj: Any = b"", encoding: Any = None, errors: Any = None) -> Any:
    # Protocol 2 has no bytes opcode: bytes arrive as _codecs.encode(str, "latin1"), or bytes() when empty.
    if isinstance(obj, str) and encoding in ("latin1", "latin-1") and errors in (None, "strict"):
        return obj.encode("latin-1")
    return obj if isinstance(obj, bytes) and encoding is None else _REFUSED  # bytes(10**10) would allocate


class _NumpyDType(_Inert):
    """A pickled ``numpy.dtype``: its type code (``"f8"``) and, once BUILD has run, its byte order."""

    def __init__(self, code: str) -> None:
        self.code, self.byteorder = code, "="

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and isinstance(state[1], str):
            self.byteorder = state[1]

    def __repr__(self) -> str:
        return f"numpy.dtype({self.byteorder + self.code!r})"


_NUMPY_CODES = {"f2": "e", "f4": "f", "f8": "d", "i1": "b", "i2": "h", "i4": "i", "i8": "q",
                "u1": "B", "u2": "H", "u4": "I", "u8": "Q", "b1": "?"}


def _decode_numpy_scalar(code: str, byteorder: str, raw: bytes) -> float | int | bool | None:
    """Decode a pickled numpy scalar's bytes without numpy: float16/32/64 (widened exactly), ints, bool.

    Returns:
        The Python value, or None for a dtype we do not decode.
    """
    fmt = _NUMPY_CODES.get(code)
    end = {"<": "<", ">": ">", "|": "<", "=": "<" if sys.byteorder == "little" else ">"}.get(byteorder)
    if fmt is None or end is None or struct.calcsize(fmt) != len(raw):
        return None
    value: float | int | bool = struct.unpack(end + fmt, raw)[0]
    return value


def _numpy_scalar(dtype: Any, raw: Any = None) -> Any:
    if isinstance(dtype, _NumpyDType) and isinstance(raw, bytes):
        value = _decode_numpy_scalar(dtype.code, dtype.byteorder, raw)
        if value is not None:
            return value
    return _REFUSED


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "torch._utils._rebuild_tensor": _tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
    "torch.tensor._rebuild_from_type_v2": _rebuild_from_type_v2,  # the module's name before torch 1.8
    "torch.Size": lambda dims=(): tuple(dims) if isinstance(dims, (tuple, list)) else _REFUSED,
    "_codecs.encode": _latin1_bytes,
    "builtins.bytes": _latin1_bytes,
    "builtins.bytearray": lambda *a: bytearray(b) if isinstance(b := _latin1_bytes(*a), bytes) else b,
    "numpy.dtype": lambda code, *a: _NumpyDType(code) if isinstance(code, str) else _REFUSED,
    "numpy.core.multiarray.scalar": _numpy_scalar,
    "numpy._core.multiarray.scalar": _numpy_scalar,  # numpy >= 2
}
# Immutable builtin types whose constructors only build values (NEWOBJ needs real types, not stand-ins).
_ALLOWED: dict[str, Any] = {"builtins.set": set, "builtins.frozenset": frozenset, "builtins.complex": complex,
                            "collections.OrderedDict": OrderedDict,
                            **{name: _Allowed(name, fn) for name, fn in _FUNCTIONS.items()}}


class _Unpickler(pickle.Unpickler):
    """Resolves globals to the allowlist, storage-type markers or ``Opaque`` only, and storages lazily."""

    def __init__(self, file: IO[bytes], source: _Source) -> None:
        super().__init__(file, encoding="utf-8")  # torch.load's default for Python 2 strings
        self.source = source
        self.storage_dtypes: dict[str, str] = {}  # key -> dtype, to size the legacy storages

    def find_class(self, module: str, name: str) -> Any:
        # torch.save uses protocol 2, which writes Python 2 names (__builtin__.set): map back as pickle does.
        module, name = _compat_pickle.NAME_MAPPING.get(
            (module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        if f"{module}.{name}" in _ALLOWED:
            return _ALLOWED[f"{module}.{name}"]
        if module in ("torch", "torch.cuda", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        return _opaque_class(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        kind = pid[0] if isinstance(pid, tuple) and pid else None
        if kind in ("module", b"module") and len(pid) == 4:  # legacy: an nn.Module class and its source
            return pid[1]
        if kind not in ("storage", b"storage") or len(pid) not in (5, 6):
            raise CheckpointError(f"unknown persistent id {_SHORT.repr(pid)}")
        _, storage_type, key, location, numel = pid[:5]
        if len(pid) == 6 and pid[5] is not None:
            raise CheckpointError("legacy storage views (torch < 0.4) are not supported")
        if not (isinstance(storage_type, _StorageType) and isinstance(key, str) and type(numel) is int):
            raise CheckpointError(f"malformed storage id {_SHORT.repr(pid)}")
        if isinstance(location, bytes):
            location = location.decode("ascii", "replace")
        self.storage_dtypes[key] = storage_type.dtype
        nbytes = numel * _DTYPES[storage_type.dtype][1]
        return _Storage(key, storage_type.dtype, str(location), nbytes, self.source)


def _unpickle(fh: IO[bytes], source: _Source) -> tuple[Any, _Unpickler]:
    unpickler = _Unpickler(fh, source)
    try:
        return unpickler.load(), unpickler
    except _CORRUPT as exc:
        raise CheckpointError(f"corrupt or truncated pickle ({_one_line(exc)})") from None


def _read_zip(path: str, fh: IO[bytes]) -> Any:
    try:
        with zipfile.ZipFile(fh) as zf:
            names = zf.namelist()
            # The prefix is the file's stem when torch wrote to a path, "archive" when it wrote to a buffer.
            pkl = next((n for n in names if n.endswith("/data.pkl") and n.count("/") == 1), None)
            if pkl is None:
                raise CheckpointError("not a torch.save file (a zip archive without <prefix>/data.pkl)")
            prefix = pkl.removesuffix("data.pkl")
            has_order = prefix + "byteorder" in names  # older torch wrote none: little-endian
            order = zf.read(prefix + "byteorder").decode("ascii", "replace") if has_order else "little"
            data = zf.read(pkl)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise CheckpointError(f"corrupt or truncated zip archive ({_one_line(exc)})") from None
    if order not in ("little", "big"):
        raise CheckpointError(f"unknown byteorder record {order!r}")
    return _unpickle(io.BytesIO(data), _Source(path, order, zip_prefix=prefix))[0]


def _read_legacy(path: str, fh: IO[bytes]) -> Any:
    head = fh.read(262)
    fh.seek(0)
    if not head:
        raise CheckpointError("not a torch.save file (empty file)")
    if head[257:262] == b"ustar":
        raise CheckpointError("legacy tar checkpoints (torch < 0.4) are not supported")
    if head[:1] != b"\x80":  # PROTO: torch's legacy stream starts with a pickle of protocol >= 2
        raise CheckpointError("not a torch.save file (neither a zip archive nor a legacy pickle stream)")
    source = _Source(path)
    try:
        magic = _unpickle(fh, source)[0]
    except CheckpointError:
        magic = None
    if type(magic) is not int or magic != _LEGACY_MAGIC:
        raise CheckpointError("not a torch.save file (a pickle without torch's legacy magic number)")
    if (version := _unpickle(fh, source)[0]) != _LEGACY_PROTOCOL:
        raise CheckpointError(f"unsupported legacy protocol version {_SHORT.repr(version)}")
    sys_info = _unpickle(fh, source)[0]
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
        source.byteorder = "big"
    result, unpickler = _unpickle(fh, source)
    keys = _unpickle(fh, source)[0]
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise CheckpointError("corrupt legacy file (its storage key list is not a list of strings)")
    _index_legacy_storages(source, fh.tell(), keys, unpickler.storage_dtypes)
    return result


def _index_legacy_storages(source: _Source, pos: int, keys: list[str], dtypes: dict[str, str]) -> None:
    """Record where each storage's bytes start: read only the 8-byte element counts, seek past the data."""
    end = "<" if source.byteorder == "little" else ">"
    with _open_binary(source.path, buffering=0) as raw:  # unbuffered: no weight byte lands in a read-ahead
        size = raw.seek(0, os.SEEK_END)
        for key in keys:  # _legacy_save writes, in this order: int64 numel, then numel * itemsize bytes
            if key not in dtypes:
                raise CheckpointError(f"corrupt legacy file (storage {key!r} is listed but never used)")
            raw.seek(pos)
            header = raw.read(8)
            count = struct.unpack(end + "q", header)[0] if len(header) == 8 else -1
            nbytes = count * _DTYPES[dtypes[key]][1]
            if count < 0 or pos + 8 + nbytes > size:
                raise CheckpointError(f"truncated legacy file (storage {key!r} ends past the end)")
            source.offsets[key] = (pos + 8, nbytes)
            pos += 8 + nbytes


def read_torch_file(path: str | os.PathLike[str]) -> Any:
    """Read a ``torch.save`` file without torch, and without running anything the file names.

    Tensors become lazy ``TensorRef`` values (no storage byte is read here); globals outside our allowlist
    become inert ``Opaque`` records.

    Args:
        path: A file written by ``torch.save`` (zip format, or ``_use_new_zipfile_serialization=False``).

    Returns:
        The unpickled tree: dict/OrderedDict, list, tuple, set, str, bytes, numbers, None, ``TensorRef`` and
        ``Opaque``.

    Raises:
        CheckpointError: The file is missing, unreadable, truncated, corrupt or not written by ``torch.save``.
    """
    name = os.fspath(path)
    try:
        with _open_binary(name) as fh:
            is_zip = fh.read(4) == b"PK\x03\x04"
            fh.seek(0)
            return _read_zip(name, fh) if is_zip else _read_legacy(name, fh)
    except CheckpointError as exc:
        raise CheckpointError(f"{name}: {exc}") from None
    except FileNotFoundError:
        raise CheckpointError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{name}: is a directory, not a checkpoint file") from None
    except OSError as exc:
        raise CheckpointError(f"{name}: cannot read ({exc.strerror or _one_line(exc)})") from None
