"""Safe, torch-free reader of ``torch.save`` files (zip archive and legacy stream) into plain Python values.

Our own pickle machine (``safepickle``) runs every opcode; only our stand-ins for an allowlist of globals
ever run, other globals become inert ``Opaque`` records, and the archive's structure is checked as torch
checks it (refusing what torch and we would read differently) without reading weight bytes.
"""

from __future__ import annotations

import bz2
import lzma
import math
import os
import reprlib
import stat
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
from plateau_forensics.remote import is_url
from plateau_forensics.safepickle import Limits, PickleLimitError, PickleMachine, foreign_opcodes

__all__ = ["Opaque", "TensorRef", "TorchFile", "read_torch_archive", "read_torch_file", "short_repr"]

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
#: Tensors with more dimensions than this are refused (torch itself caps tensors at 64 dimensions).
MAX_TENSOR_DIMS = 64
#: Zip members torch keeps small (byteorder, version, ...) are read with this cap, whatever their headers say.
SMALL_MEMBER_BYTES = 64
#: A storage member up to this size is read whole when a value is needed, so its CRC-32 is verified.
VERIFY_MEMBER_BYTES = 64 * 1024
MAX_MEMBERS = 1_000_000
#: Integrity notes about what was not checked (rather than found wrong) start with this.
NOT_VERIFIED = "not verified: "
MAX_CENTRAL_DIRECTORY = 256 * 2**20
# What zipfile raises on damaged archives (names with a bad UTF-8 flag, corrupt LZMA/bzip2 streams, ...).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, RuntimeError,
               UnicodeDecodeError, ValueError, struct.error, OverflowError, OSError, KeyError)
_ = bz2  # imported so that a bzip2 member fails as BadZipFile/OSError, not ImportError


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]


def short_repr(value: Any, limit: int = 80) -> str:
    """A repr for error messages: capped at about ``limit`` characters, safe for any value the reader
    builds."""
    try:
        text = _SHORT.repr(value)
    except (ValueError, RecursionError, TypeError):  # e.g. an int past Python's int-to-str limit
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _open_binary(path: str, buffering: int = -1) -> IO[bytes]:
    """Open ``path`` for reading: every byte this module reads comes through here (a URL: by byte ranges,
    ``plateau_forensics.remote``)."""
    if is_url(path):
        from plateau_forensics.remote import open_url

        return open_url(path)  # type: ignore[return-value]
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
        except _ZIP_ERRORS as exc:
            what = f"{self.path}: cannot read storage {short_repr(key)}"
            raise CheckpointError(f"{what} ({_one_line(exc)})") from None
        if len(data) != nbytes:
            raise CheckpointError(f"{self.path}: storage {short_repr(key)} is missing or shorter than its "
                                  "tensor")
        self.bytes_read += nbytes
        return data

    def _read_zip(self, fh: IO[bytes], key: str, start: int, nbytes: int) -> bytes:
        with zipfile.ZipFile(fh) as zf:
            info = next((i for i in zf.infolist() if i.filename == f"{self.zip_prefix}data/{key}"), None)
            if info is None or start + nbytes > info.file_size:
                return b""
            if info.file_size <= VERIFY_MEMBER_BYTES:  # small: read it whole so zipfile checks its CRC-32
                return zf.read(info)[start : start + nbytes]
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
        if self.numel > 2**24:
            raise CheckpointError(f"tolist() of a tensor with {self.numel:,} elements (limit 16,777,216)")
        span = sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True)) + 1
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

    def pickle_children(self) -> list[Any]:
        """Everything the pickle gave this record, for depth checks and walks."""
        return [*self.args, *self.kwargs.values(), self.state, *self.items.keys(), *self.items.values(),
                *self.list_items]

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
        raise CheckpointError(f"a tensor is rebuilt from {type(storage).__name__[:80]}, not from a storage")
    if not (isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list))):
        raise CheckpointError(f"malformed tensor (size={short_repr(size)}, stride={short_repr(stride)})")
    if len(size) > MAX_TENSOR_DIMS:
        raise CheckpointError(f"a tensor with {len(size):,} dimensions (limit {MAX_TENSOR_DIMS}, as in "
                              "torch)")
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride) or not all(type(v) is int and v >= 0 for v in (offset, *size, *stride)):
        raise CheckpointError(f"malformed tensor (offset={short_repr(offset)}, size={short_repr(size)}, "
                              f"stride={short_repr(stride)})")
    dtype = dtype or storage.dtype
    itemsize = _DTYPES.get(dtype, (None, 0))[1]
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
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
        raise CheckpointError(f"a tensor has an unknown dtype {short_repr(dtype)}")
    return _tensor(storage, offset, size, stride, requires_grad, dtype.name.removeprefix("torch."))


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any, state: Any = None) -> Any:
    if isinstance(data, TensorRef):
        return replace(data, is_parameter=True, requires_grad=bool(requires_grad))
    return data


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    if not (isinstance(func, (_Allowed, _OpaqueType)) and isinstance(args, tuple)):
        raise CheckpointError(f"a tensor subclass is rebuilt by {short_repr(func)}")
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


_BUILTIN_TYPES = (set, frozenset, complex, OrderedDict)


class _Reader:
    """The hooks our pickle machine calls: the allowlist, storages by persistent id, inert BUILD."""

    def __init__(self, source: _Source, data: bytes, refill: Callable[[int], bytes] | None) -> None:
        self.source = source
        self.storages: dict[str, tuple[str, int]] = {}  # key -> (dtype, nbytes) as the persistent ids say
        self.neutralised: dict[str, None] = {}  # dotted names that became Opaque placeholders, in order
        self.machine = PickleMachine(data, refill, find_class=self.find_class, call=self.call,
                                     build=self.build, persistent_load=self.persistent_load,
                                     set_types=(Opaque,), append_types=(Opaque,))

    def load(self) -> Any:
        return self.machine.load()

    def find_class(self, module: str, name: str) -> Any:
        dotted = f"{module}.{name}"
        if dotted in _ALLOWED:
            return _ALLOWED[dotted]
        if module in ("torch", "torch.cuda", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        self.neutralised.setdefault(dotted)
        return _opaque_class(dotted)

    def call(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], new: bool) -> Any:
        """REDUCE/NEWOBJ/INST/OBJ: only our stand-ins, placeholders and four value types are ever called."""
        if isinstance(func, _OpaqueType):
            return func(*args, **kwargs)
        if isinstance(func, _Allowed) and not new:
            result = func.fn(*args, **kwargs)
            if result is _REFUSED:  # a stand-in declined these arguments: record the call, run nothing
                self.neutralised.setdefault(f"{func.name}(refused arguments)")
                return _opaque_class(func.name)(*args, **kwargs)
            return result
        if func in _BUILTIN_TYPES and not kwargs:
            return self._builtin(func, args, new)
        raise CheckpointError(f"refused: the pickle calls a {type(func).__name__[:80]} value "
                              f"({short_repr(func)}), which is not on the allowlist")

    def _builtin(self, cls: Any, args: tuple[Any, ...], new: bool) -> Any:
        m = self.machine
        if cls is complex:
            if len(args) <= 2 and all(type(a) in (int, float) for a in args):
                return complex(*args)
        elif cls is OrderedDict or cls is set:
            if new or not args:  # cls.__new__ builds an empty one; pickle fills it with SETITEMS/ADDITEMS
                return cls()
            if len(args) == 1 and type(args[0]) in (list, tuple, set, frozenset):
                if cls is set:
                    return {m._key(x) for x in args[0]}
                if all(type(p) in (tuple, list) and len(p) == 2 for p in args[0]):
                    return OrderedDict((m._key(k), v) for k, v in args[0])
        elif cls is frozenset:
            if not args:
                return frozenset()
            if len(args) == 1 and type(args[0]) in (list, tuple, set, frozenset):
                value = frozenset(m._key(x) for x in args[0])
                return m._hashed(value, value)
        raise CheckpointError(f"refused: {cls.__name__} built from {short_repr(args)}")

    def build(self, obj: Any, state: Any) -> None:
        """BUILD: placeholders record their state; an OrderedDict may get plain attributes (``_metadata``)."""
        if isinstance(obj, Opaque) or isinstance(obj, _NumpyDType):
            obj.__setstate__(state)
            return
        if type(obj) is OrderedDict and isinstance(state, dict):
            for key, value in state.items():
                if not (isinstance(key, str) and not key.startswith("__") and not hasattr(OrderedDict, key)):
                    raise CheckpointError(f"refused: the pickle sets attribute {short_repr(key)} on an "
                                          "OrderedDict (it would shadow a method)")
                obj.__dict__[key] = value
            return
        raise CheckpointError(f"the pickle tried to set state on a {type(obj).__name__[:80]}")

    def persistent_load(self, pid: Any) -> Any:
        kind = pid[0] if isinstance(pid, tuple) and pid else None
        if kind in ("module", b"module") and len(pid) == 4:  # legacy: an nn.Module class and its source
            self.neutralised.setdefault("<legacy module source code>")
            return pid[1]
        if kind not in ("storage", b"storage") or len(pid) not in (5, 6):
            raise CheckpointError(f"unknown persistent id {short_repr(pid)}")
        _, storage_type, key, location, numel = pid[:5]
        if len(pid) == 6 and pid[5] is not None:
            raise CheckpointError("legacy storage views (torch < 0.4) are not supported")
        if not (isinstance(storage_type, _StorageType) and isinstance(key, str) and len(key) <= 200
                and type(numel) is int and numel >= 0):
            raise CheckpointError(f"malformed storage id {short_repr(pid)}")
        if isinstance(location, bytes):
            location = location.decode("ascii", "replace")
        if not isinstance(location, str):
            raise CheckpointError(f"malformed storage location {short_repr(location)}")
        nbytes = numel * _DTYPES[storage_type.dtype][1]
        known = self.storages.setdefault(key, (storage_type.dtype, nbytes))
        if known[1] != nbytes:
            raise CheckpointError(f"ambiguous: storage {short_repr(key)} is declared with two sizes "
                                  f"({known[1]} and {nbytes} bytes)")
        return _Storage(key, storage_type.dtype, location[:100], nbytes, self.source)


@dataclass(frozen=True)
class TorchFile:
    """What ``read_torch_archive`` found: the tree, what was neutralised, and what was not verified.

    Attributes:
        obj: the unpickled tree (see ``read_torch_file``).
        neutralised: dotted names of every global that became an inert ``Opaque`` placeholder, and any call
            a stand-in refused (``"builtins.bytes(refused arguments)"``), in the order the pickle named them.
        integrity: one line per structural anomaly, and what could not be verified without reading weights.
        unverified: ``(start, end, what)`` byte ranges of the file that nothing checked (storage data whose
            CRC-32 was not computed, legacy storage bytes).
        storages: storage key -> bytes, as the pickle declared them.
    """

    obj: Any
    neutralised: tuple[str, ...] = ()
    integrity: tuple[str, ...] = ()
    unverified: tuple[tuple[int, int, str], ...] = ()
    storages: dict[str, int] = field(default_factory=dict, repr=False)


def _human(n: int) -> str:
    return f"{n:,} bytes" if n < 10_000 else f"{n / 1e6:,.1f} MB"


def _check_end_record(fh: IO[bytes], size: int) -> tuple[int, int, int] | None:
    """Refuse a central directory that would cost more to parse than any checkpoint needs, or that spans
    disks.

    Returns:
        (members on this disk, members in all, central directory bytes) as the end record gives them, or None
        if none was found.
    """
    tail_len = min(size, 20 + 22)  # without a comment: the end record and a zip64 locator, as torch writes
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    if tail.rfind(b"PK\x05\x06") != len(tail) - 22:  # a comment or damage: search as zipfile does
        tail_len = min(size, 65536 + 22)
        fh.seek(size - tail_len)
        tail = fh.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return None  # zipfile reports the damage
    disk, cd_disk, here, entries, cd_size = struct.unpack("<HHHHI", tail[at + 4 : at + 16])
    locator = tail.rfind(b"PK\x06\x07", 0, at)
    if locator >= 0 and at - locator == 20:  # zip64: the real counts are in the zip64 end record
        (z64_offset,) = struct.unpack("<Q", tail[locator + 8 : locator + 16])
        if 0 <= z64_offset <= size - 56:
            fh.seek(z64_offset)
            rec = fh.read(56)
            if rec[:4] == b"PK\x06\x06":
                disk, cd_disk, here, entries, cd_size = struct.unpack("<IIQQQ", rec[16:48])
    if disk or cd_disk:
        raise CheckpointError("a multi-disk zip archive (torch.load refuses it)")
    if entries > MAX_MEMBERS or cd_size > MAX_CENTRAL_DIRECTORY:
        raise CheckpointError(f"a zip archive with {entries:,} members and a {_human(cd_size)} central "
                              f"directory (limits {MAX_MEMBERS:,} and {MAX_CENTRAL_DIRECTORY >> 20} MiB)")
    return here, entries, cd_size


def _walk_central(fh: IO[bytes], start: int, size: int, count: int) -> None:
    """The central directory's entries, by their declared lengths, must fill it exactly (miniz checks this;
    zipfile silently cuts an overlong comment short)."""
    fh.seek(start)
    cd = fh.read(size)
    pos = 0
    for _ in range(count):
        if cd[pos : pos + 4] != b"PK\x01\x02" or pos + 46 > len(cd):
            break
        name_len, extra_len, comment_len = struct.unpack("<HHH", cd[pos + 28 : pos + 34])
        pos += 46 + name_len + extra_len + comment_len
    if pos != size:
        raise CheckpointError(f"the central directory's entries span {pos:,} bytes, its end record says "
                              f"{size:,} "
                              "(a damaged entry; torch.load refuses it)")


def _check_member(info: zipfile.ZipInfo) -> None:
    """What torch's zip reader (miniz) refuses in a central directory entry, checked for every member."""
    name = short_repr(info.filename)
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise CheckpointError(f"member {name} uses compression method {info.compress_type}; torch.load reads "
                              "only stored or deflated members")
    if info.flag_bits & 0x41:  # encrypted, strongly encrypted
        raise CheckpointError(f"member {name} is marked encrypted (torch.load refuses it)")
    if info.volume:
        raise CheckpointError(f"member {name} is on disk {info.volume} of a multi-disk archive")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size or (
            info.file_size and not info.compress_size):
        raise CheckpointError(f"member {name}: its sizes disagree ({info.compress_size:,} stored, "
                              f"{info.file_size:,} uncompressed)")


def _read_small(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    if info.file_size > SMALL_MEMBER_BYTES:
        raise CheckpointError(f"member {short_repr(info.filename)} holds {info.file_size:,} bytes; torch "
                              "writes "
                              f"at most a few (limit {SMALL_MEMBER_BYTES})")
    with zf.open(info) as member:
        data = member.read(SMALL_MEMBER_BYTES + 1)
    if len(data) > SMALL_MEMBER_BYTES:
        raise CheckpointError(f"member {short_repr(info.filename)} is longer than its header says")
    return data


def _small_int(zf: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> int:
    raw = _read_small(zf, info)
    try:
        return int(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise CheckpointError(f"its {what} record is {short_repr(raw)}, not a number "
                              "(torch.load refuses it too)") from None


def _read_zip(path: str, fh: IO[bytes]) -> TorchFile:
    size = fh.seek(0, os.SEEK_END)
    counted = _check_end_record(fh, size)
    fh.seek(0)
    try:
        with zipfile.ZipFile(fh) as zf:
            infos = zf.infolist()
            if counted is not None and counted[:2] != (len(infos), len(infos)):
                raise CheckpointError(f"the end record counts {counted[1]:,} members ({counted[0]:,} on "
                                      "this disk) "
                                      f"but the central directory holds {len(infos):,} (torch.load refuses "
                                      "it)")
            if counted is not None:
                _walk_central(fh, zf.start_dir, counted[2], len(infos))
            seen: set[str] = set()
            for info in infos:
                if info.filename in seen:
                    raise CheckpointError(f"ambiguous archive: member {short_repr(info.filename)} appears "
                                          "twice "
                                          "(torch.load and this reader could read different copies)")
                seen.add(info.filename)
                _check_member(info)
            # torch's rule: the archive folder is the first member's directory; every record is looked up in
            # it
            first = infos[0].filename if infos else ""
            if "/" not in first:
                raise CheckpointError("not a torch.save file (a zip archive whose first member is not in a "
                                      "folder)")
            prefix = first[: first.index("/") + 1]
            members = {i.filename: i for i in infos}
            pkl = members.get(prefix + "data.pkl")
            if pkl is None:
                raise CheckpointError("not a torch.save file (a zip archive without <prefix>/data.pkl)")
            prefetch = getattr(fh, "prefetch_zip", None)
            if prefetch is not None:  # a URL: the headers, descriptors and records in two batched requests
                prefetch(infos, [i for i in infos if i is pkl and i.file_size <= Limits.pickle_bytes or (
                    i.file_size <= SMALL_MEMBER_BYTES and not i.filename.startswith(prefix + "data/"))])
            version_info = members.get(prefix + ".data/version") or members.get(prefix + "version")
            if version_info is None:
                raise CheckpointError("no version record (torch.load refuses such archives)")
            version = _small_int(zf, version_info, "version")
            if not 1 <= version <= 10:
                raise CheckpointError(f"archive format version {version} (torch 2.13 reads versions 1 to 10)")
            for record in (".format_version", ".storage_alignment"):
                if prefix + record in members:
                    _small_int(zf, members[prefix + record], record)
            if prefix + ".data/serialization_id" in members:  # torch.load decodes it as text
                ident = _read_small(zf, members[prefix + ".data/serialization_id"])
                try:
                    ident.decode("utf-8")
                except UnicodeDecodeError:
                    raise CheckpointError("its .data/serialization_id record is not UTF-8 text "
                                          "(torch.load can refuse it)") from None
            order = "little"  # older torch wrote no byteorder record: little-endian
            if prefix + "byteorder" in members:
                order = _read_small(zf, members[prefix + "byteorder"]).decode("ascii", "replace")
            if pkl.file_size > Limits.pickle_bytes:
                raise PickleLimitError(f"data.pkl holds {_human(pkl.file_size)} (limit "
                                       f"{Limits.pickle_bytes >> 20} "
                                       "MiB: a scheduler checkpoint's pickle is far smaller)")
            with zf.open(pkl) as member:
                data = member.read(Limits.pickle_bytes + 1)
            start_dir = zf.start_dir
    except CheckpointError:
        raise
    except _ZIP_ERRORS as exc:
        raise CheckpointError(f"corrupt or truncated zip archive ({_one_line(exc)})") from None
    if len(data) > Limits.pickle_bytes:
        raise PickleLimitError(f"data.pkl is longer than {Limits.pickle_bytes >> 20} MiB")
    if order not in ("little", "big"):
        raise CheckpointError(f"unknown byteorder record {short_repr(order)}")
    source = _Source(path, order, zip_prefix=prefix)
    reader = _Reader(source, data, None)
    obj = reader.load()
    notes: list[str] = []
    foreign = foreign_opcodes(reader.machine.seen_ops)
    if foreign:
        notes.append(f"the pickle uses opcodes torch.save never writes and torch.load(weights_only=True) "
                     "refuses "
                     f"({', '.join(foreign[:8])}): torch would not read this file")
    if reader.machine.pos < len(data):
        notes.append(f"data.pkl has {len(data) - reader.machine.pos:,} bytes after its STOP opcode (never "
                     "read)")
    unverified: list[tuple[int, int, str]] = []
    stored: dict[str, zipfile.ZipInfo] = {}
    for key, (_, nbytes) in reader.storages.items():
        info = members.get(f"{prefix}data/{key}")
        if info is None:
            raise CheckpointError(f"storage {short_repr(key)} has no member data/{short_repr(key)} "
                                  "(torch.load refuses the file)")
        if info.file_size != nbytes:
            raise CheckpointError(f"member data/{short_repr(key)} holds {info.file_size:,} bytes but its "
                                  "tensors "
                                  f"declare {nbytes:,} (torch.load refuses the file)")
        stored[info.filename] = info
    notes += _zip_layout(fh, infos, start_dir, size, stored, prefix, unverified)
    if unverified:
        total = sum(end - start for start, end, _ in unverified)
        notes.append(f"{NOT_VERIFIED}the CRC-32 of {len(unverified)} storage member(s) ({_human(total)} of "
                     "tensor "
                     "data, never read; torch.load does not check it either)")
    return TorchFile(obj, tuple(reader.neutralised), tuple(notes), tuple(unverified),
                     {k: n for k, (_, n) in reader.storages.items()})


def _zip_layout(fh: IO[bytes], infos: list[zipfile.ZipInfo], start_dir: int, size: int,
                stored: dict[str, zipfile.ZipInfo], prefix: str,
                unverified: list[tuple[int, int, str]]) -> list[str]:
    """Compare every local header and data descriptor with the central directory; find gaps and overlaps.

    Reads 30 bytes plus the name per member and each data descriptor: no member data.
    """
    notes: list[str] = []
    end_of_previous = 0
    for info in sorted(infos, key=lambda i: i.header_offset):
        fh.seek(info.header_offset)
        header = fh.read(30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            raise CheckpointError(f"member {short_repr(info.filename)}: no local header where the central "
                                  "directory points "
                                  "(torch.load refuses the file)")
        flags, method, crc, csize, usize, name_len, extra_len = struct.unpack("<2xHH4xIIIHH", header[4:30])
        local_name = fh.read(name_len)
        central_name = info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace")
        if local_name != central_name:
            notes.append(f"member {short_repr(info.filename)}: its local header names "
                         f"{short_repr(local_name)}")
        if method != info.compress_type:
            notes.append(f"member {short_repr(info.filename)}: local header says compression {method}, the "
                         "central directory "
                         f"{info.compress_type}")
        data_start = info.header_offset + 30 + name_len + extra_len
        data_end = data_start + info.compress_size
        if data_end > start_dir:
            raise CheckpointError(f"member {short_repr(info.filename)} extends past the central directory "
                                  "(truncated or damaged)")
        if info.header_offset < end_of_previous:
            notes.append(f"member {short_repr(info.filename)} overlaps the member before it")
        elif info.header_offset > end_of_previous:
            notes.append(f"{info.header_offset - end_of_previous:,} bytes before member "
                         f"{short_repr(info.filename)} belong to no member")
        if flags & 0x8:  # sizes and CRC follow the data
            fh.seek(data_end)
            desc = fh.read(24)
            body = desc[4:] if desc[:4] == b"PK\x07\x08" else desc
            zip64 = info.file_size >= 0xFFFFFFFF or info.compress_size >= 0xFFFFFFFF or \
                info.header_offset >= 0xFFFFFFFF
            fmt = "<IQQ" if zip64 else "<III"
            need = struct.calcsize(fmt)
            if len(body) < need:
                raise CheckpointError(f"member {short_repr(info.filename)}: its data descriptor is cut off "
                                      "(truncated file)")
            d_crc, d_csize, d_usize = struct.unpack(fmt, body[:need])
            if (d_crc, d_csize, d_usize) != (info.CRC, info.compress_size, info.file_size):
                notes.append(f"member {short_repr(info.filename)}: its data descriptor disagrees with the "
                             "central directory")
            end_of_previous = data_end + need + (4 if desc[:4] == b"PK\x07\x08" else 0)
        else:
            if (crc, csize, usize) != (info.CRC, info.compress_size, info.file_size):
                notes.append(f"member {short_repr(info.filename)}: its local header disagrees with the "
                             "central directory")
            end_of_previous = data_end
        if info.filename in stored and info.file_size > 0:
            unverified.append((data_start, data_end, info.filename))
        elif not info.filename.startswith(prefix):
            notes.append(f"member {short_repr(info.filename)} is outside the archive folder "
                         f"{short_repr(prefix)} (torch ignores it)")
        elif info.filename.startswith(prefix + "data/") and info.filename not in stored:
            notes.append(f"member {short_repr(info.filename)} is referenced by no tensor (never read)")
    if start_dir > end_of_previous:
        notes.append(f"{start_dir - end_of_previous:,} bytes before the central directory belong to no "
                     "member")
    return notes


def _read_legacy(path: str, fh: IO[bytes]) -> TorchFile:
    head = fh.read(262)
    fh.seek(0)
    if not head:
        raise CheckpointError("not a torch.save file (empty file)")
    if head[257:262] == b"ustar":
        raise CheckpointError("legacy tar checkpoints (torch < 0.4) are not supported")
    if head[:1] != b"\x80":  # PROTO: torch's legacy stream starts with a pickle of protocol >= 2
        raise CheckpointError("not a torch.save file (neither a zip archive nor a legacy pickle stream)")
    source = _Source(path)
    reader = _Reader(source, b"", lambda n: fh.read(max(n, 65536)))
    try:
        magic = reader.load()
    except CheckpointError:
        magic = None
    if type(magic) is not int or magic != _LEGACY_MAGIC:
        raise CheckpointError("not a torch.save file (a pickle without torch's legacy magic number)")
    if (version := reader.load()) != _LEGACY_PROTOCOL:
        raise CheckpointError(f"unsupported legacy protocol version {short_repr(version)}")
    sys_info = reader.load()
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
        source.byteorder = "big"
    result = reader.load()
    keys = reader.load()
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise CheckpointError("corrupt legacy file (its storage key list is not a list of strings)")
    if len(set(keys)) != len(keys):
        raise CheckpointError("ambiguous legacy file: a storage key is listed twice")
    pickle_end = reader.machine.offset
    notes = _index_legacy_storages(source, pickle_end, keys, reader.storages)
    foreign = foreign_opcodes(reader.machine.seen_ops)
    if foreign:
        notes.insert(0, f"the pickle uses opcodes torch.save never writes and torch.load(weights_only=True) "
                        "refuses "
                        f"({', '.join(foreign[:8])}): torch would not read this file")
    unverified = [(0, pickle_end, "<legacy pickles>")]
    unverified += [(offset, offset + n, key) for key, (offset, n) in source.offsets.items() if n]
    total = sum(n for _, n in source.offsets.values())
    notes.append(f"{NOT_VERIFIED}the legacy format has no checksums: its pickles ({_human(pickle_end)}) and "
                 f"{len(source.offsets)} storage(s) ({_human(total)}, never read) could be damaged unnoticed")
    return TorchFile(result, tuple(reader.neutralised), tuple(notes), tuple(unverified),
                     {k: n for k, (_, n) in reader.storages.items()})


def _index_legacy_storages(source: _Source, pos: int, keys: list[str],
                           storages: dict[str, tuple[str, int]]) -> list[str]:
    """Record where each storage's bytes start: read only the 8-byte element counts, seek past the data."""
    end = "<" if source.byteorder == "little" else ">"
    with _open_binary(source.path, buffering=0) as raw:  # unbuffered: no weight byte lands in a read-ahead
        size = raw.seek(0, os.SEEK_END)
        for key in keys:  # _legacy_save writes, in this order: int64 numel, then numel * itemsize bytes
            if key not in storages:
                raise CheckpointError(f"corrupt legacy file (storage {short_repr(key)} is listed but never "
                                      "used)")
            dtype, declared = storages[key]
            raw.seek(pos)
            header = raw.read(8)
            count = struct.unpack(end + "q", header)[0] if len(header) == 8 else -1
            nbytes = count * _DTYPES[dtype][1]
            if count < 0 or pos + 8 + nbytes > size:
                raise CheckpointError(f"truncated legacy file (storage {short_repr(key)} ends past the end)")
            if nbytes != declared:
                raise CheckpointError(f"corrupt legacy file (storage {short_repr(key)} holds {nbytes:,} "
                                      "bytes, its "
                                      f"tensors declare {declared:,}; torch.load refuses it)")
            source.offsets[key] = (pos + 8, nbytes)
            pos += 8 + nbytes
    missing = [k for k in storages if k not in source.offsets]
    if missing:
        raise CheckpointError(f"corrupt legacy file (storage {short_repr(missing[0])} is used but not "
                              "listed)")
    return [f"{size - pos:,} bytes after the last storage (never read)"] if size > pos else []


def read_torch_archive(path: str | os.PathLike[str]) -> TorchFile:
    """Read a ``torch.save`` file without torch and without running anything it names, with what was found.

    Tensors become lazy ``TensorRef`` values (no storage byte is read here); globals outside our allowlist
    become inert ``Opaque`` records, listed in ``neutralised``. Archives that torch and this reader could
    read differently (a member twice, records torch requires missing or mis-sized) are refused; what could
    not be verified without reading weight bytes is listed in ``integrity``.

    Args:
        path: A file written by ``torch.save`` (zip format, or ``_use_new_zipfile_serialization=False``).

    Returns:
        A ``TorchFile``.

    Raises:
        CheckpointError: The file is missing, unreadable, truncated, corrupt, ambiguous, over a limit, or not
            written by ``torch.save``.
    """
    name = os.fspath(path)
    try:
        mode = stat.S_IFREG if is_url(name) else os.stat(name).st_mode  # a URL: remote.py checks it is a file
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(name)
        if not stat.S_ISREG(mode):  # a FIFO would block, /dev/zero would never end
            raise CheckpointError("not a regular file")
        with _open_binary(name) as fh:
            is_zip = fh.read(4) == b"PK\x03\x04"
            fh.seek(0)
            return _read_zip(name, fh) if is_zip else _read_legacy(name, fh)
    except CheckpointError as exc:
        raise type(exc)(f"{name}: {exc}") from None
    except FileNotFoundError:
        raise CheckpointError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{name}: is a directory, not a checkpoint file") from None
    except OSError as exc:
        raise CheckpointError(f"{name}: cannot read ({exc.strerror or _one_line(exc)})") from None


def read_torch_file(path: str | os.PathLike[str]) -> Any:
    """Read a ``torch.save`` file without torch, and without running anything the file names.

    Tensors become lazy ``TensorRef`` values (no storage byte is read here); globals outside our allowlist
    become inert ``Opaque`` records. ``read_torch_archive`` also says what was neutralised and not verified.

    Args:
        path: A file written by ``torch.save`` (zip format, or ``_use_new_zipfile_serialization=False``).

    Returns:
        The unpickled tree: dict/OrderedDict, list, tuple, set, str, bytes, numbers, None, ``TensorRef`` and
        ``Opaque``.

    Raises:
        CheckpointError: The file is missing, unreadable, truncated, corrupt or not written by ``torch.save``.
    """
    return read_torch_archive(path).obj
