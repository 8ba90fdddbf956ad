"""Hand-built hostile and broken checkpoint files: a small pickle assembler, zip/legacy containers, and the
cases.

Every case is built from code here (nothing binary is committed). A payload that would run code tries to
create ``<canary_dir>/<case name>``; the tests assert that no such file ever appears.
"""

from __future__ import annotations

import lzma
import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
PROTO2 = b"\x80\x02"
STOP = b"."

# -- a tiny pickle assembler (values without memo, so payloads may use any memo index they like) -------------


def uni(s: str) -> bytes:
    raw = s.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(raw)) + raw


def num(v: int | float) -> bytes:
    if isinstance(v, bool):
        return b"\x88" if v else b"\x89"
    if isinstance(v, float):
        return b"G" + struct.pack(">d", v)
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if -(2**31) <= v < 2**31:
        return b"J" + struct.pack("<i", v)
    raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return (b"\x8a" + bytes([len(raw)]) if len(raw) < 256 else b"\x8b" + struct.pack("<i", len(raw))) + raw


def val(v: Any) -> bytes:
    """Plain values (dict/list/tuple/str/bytes/numbers/None) and ``Raw`` fragments as opcodes."""
    if isinstance(v, Raw):
        return v.code
    if v is None:
        return b"N"
    if isinstance(v, (bool, int, float)):
        return num(v)
    if isinstance(v, str):
        return uni(v)
    if isinstance(v, bytes):  # B included
        v = bytes(v)
        return b"C" + bytes([len(v)]) + v if len(v) < 256 else b"B" + struct.pack("<I", len(v)) + v
    if isinstance(v, tuple):
        return b"(" + b"".join(val(x) for x in v) + b"t"
    if isinstance(v, list):
        return b"](" + b"".join(val(x) for x in v) + b"e" if v else b"]"
    if isinstance(v, dict):
        body = b"".join(val(k) + val(x) for k, x in v.items())
        return b"}(" + body + b"u" if v else b"}"
    raise TypeError(type(v))


@dataclass(frozen=True)
class Raw:
    """Opcodes for one value, spliced into a plain structure by ``val``."""

    code: bytes


class B(bytes):
    """A bytes *value* among ``call`` arguments (plain bytes there are opcode fragments)."""


def g(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def sg(module: str, name: str) -> bytes:
    return uni(module) + uni(name) + b"\x93"


def call(func: bytes, *args: Any) -> bytes:
    """``func(*args)`` by REDUCE; an argument of type ``bytes`` is the opcodes of a value, ``B`` a bytes
    value."""
    return func + val(tuple(Raw(a) if type(a) is bytes else a for a in args)) + b"R"


def pickle_of(value_code: bytes, proto: bytes = PROTO2) -> bytes:
    return proto + value_code + STOP


def plateau_state(**override: Any) -> dict[str, Any]:
    """A valid torch 2.13 ReduceLROnPlateau.state_dict() as plain values (what torch.save writes)."""
    state = {
        "factor": 0.5,
        "default_min_lr": 0.0,
        "min_lrs": [0.0],
        "patience": 2,
        "cooldown": 1,
        "eps": 1e-8,
        "last_epoch": 5,
        "_last_lr": [0.05],
        "mode_worse": float("inf"),
        "mode": "min",
        "threshold": 1e-4,
        "threshold_mode": "rel",
        "best": 0.25,
        "cooldown_counter": 0,
        "num_bad_epochs": 1,
    }
    state.update(override)
    return state


# -- containers --------------------------------------------------------------------------------------------


@dataclass
class Member:
    name: bytes
    data: bytes  # as stored (compressed when method != 0)
    crc: int
    size: int
    method: int = 0
    flags: int = 0


def member(name: str | bytes, data: bytes, method: int = 0) -> Member:
    raw_name = name.encode() if isinstance(name, str) else name
    stored = data
    if method == zipfile.ZIP_DEFLATED:
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        stored = c.compress(data) + c.flush()
    elif method == zipfile.ZIP_LZMA:
        c2 = lzma.LZMACompressor(lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA1}])
        props = lzma._encode_filter_properties({"id": lzma.FILTER_LZMA1})  # type: ignore[attr-defined]
        stored = struct.pack("<BBH", 9, 4, len(props)) + props + c2.compress(data) + c2.flush()
    return Member(raw_name, stored, zlib.crc32(data), len(data), method)


def raw_zip(members: list[Member]) -> bytes:
    """A zip archive written field by field (so names, flags, duplicates and sizes can be anything)."""
    out, central = bytearray(), bytearray()
    for m in members:
        offset = len(out)
        out += (
            struct.pack(
                "<IHHHHHIIIHH",
                0x04034B50,
                20,
                m.flags,
                m.method,
                0,
                0x21,
                m.crc,
                len(m.data),
                m.size,
                len(m.name),
                0,
            )
            + m.name
            + m.data
        )
        central += (
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                20,
                20,
                m.flags,
                m.method,
                0,
                0x21,
                m.crc,
                len(m.data),
                m.size,
                len(m.name),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + m.name
        )
    start = len(out)
    out += central + struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), start, 0
    )
    return bytes(out)


def torch_zip(pkl: bytes, extra: list[Member] | None = None, prefix: str = "archive") -> bytes:
    """A minimal archive as torch.load expects it: data.pkl, byteorder, version (plus ``extra``)."""
    return raw_zip(
        [
            member(f"{prefix}/data.pkl", pkl),
            member(f"{prefix}/byteorder", b"little"),
            *(extra or []),
            member(f"{prefix}/version", b"3\n"),
        ]
    )


def legacy(
    main_code: bytes, magic_code: bytes | None = None, keys: list[str] | None = None, storages: bytes = b""
) -> bytes:
    """torch's legacy stream: magic, protocol version, sys_info, the object, the storage keys, storages."""
    sys_info = {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    return (
        pickle_of(magic_code if magic_code is not None else num(LEGACY_MAGIC))
        + pickle_of(num(1001))
        + pickle_of(val(sys_info))
        + pickle_of(main_code)
        + pickle_of(val(keys or []))
        + storages
    )


CONTAINERS: dict[str, Callable[[bytes], bytes]] = {
    "zip-root": lambda p: torch_zip(pickle_of(p)),
    "zip-embedded": lambda p: torch_zip(
        pickle_of(val({"epoch": 5, "scheduler": plateau_state(), "evil": Raw(p)}))
    ),
    "zip-in-state": lambda p: torch_zip(pickle_of(val({"scheduler": plateau_state(extra=Raw(p))}))),
    "legacy-root": lambda p: legacy(p),
    "legacy-embedded": lambda p: legacy(val({"epoch": 5, "scheduler": plateau_state(), "evil": Raw(p)})),
    "legacy-magic": lambda p: legacy(val({"scheduler": plateau_state()}), magic_code=p),
}

# -- the classic payloads ------------------------------------------------------------------------------------


def classic_payloads(canary: Path) -> dict[str, bytes]:
    """66 payloads, each the opcodes of one value whose construction by a normal unpickler would run code.

    Every one tries to create ``canary`` (a shell command, an ``open(..., 'w')`` or a file copy).
    """
    c = str(canary)
    sh = f"touch {c}"
    py = f"open({c!r}, 'w').close()"
    imp_os = call(g("builtins", "__import__"), "os")
    getattr_os_system = call(g("builtins", "getattr"), imp_os, "system")
    p: dict[str, bytes] = {
        "os.system": call(g("os", "system"), sh),
        "posix.system": call(g("posix", "system"), sh),
        "nt.system": call(g("nt", "system"), sh),
        "os.popen": call(g("os", "popen"), sh),
        "os.posix_spawnp": call(g("os", "posix_spawnp"), "touch", ["touch", c], {}),
        "os.spawnlp": call(g("os", "spawnlp"), 0, "touch", "touch", c),
        "subprocess.call": call(g("subprocess", "call"), ["touch", c]),
        "subprocess.run": call(g("subprocess", "run"), ["touch", c]),
        "subprocess.check_output": call(g("subprocess", "check_output"), ["touch", c]),
        "subprocess.getoutput": call(g("subprocess", "getoutput"), sh),
        "subprocess.Popen-reduce": call(g("subprocess", "Popen"), ["touch", c]),
        "subprocess.Popen-newobj": g("subprocess", "Popen") + val((["touch", c],)) + b"\x81",
        "subprocess.Popen-newobj_ex": g("subprocess", "Popen")
        + val(())
        + val({"args": ["touch", c]})
        + b"\x92",
        "pty.spawn": call(g("pty", "spawn"), ["touch", c]),
        "builtins.eval": call(g("builtins", "eval"), py),
        "builtins.exec": call(g("builtins", "exec"), py),
        "__builtin__.eval": call(g("__builtin__", "eval"), py),
        "builtins.compile-exec": call(
            g("builtins", "exec"), call(g("builtins", "compile"), py, "<x>", "exec")
        ),
        "builtins.open": call(g("builtins", "open"), c, "w"),
        "io.open": call(g("io", "open"), c, "w"),
        "_io.open": call(g("_io", "open"), c, "w"),
        "codecs.open": call(g("codecs", "open"), c, "w"),
        "stack_global-os.system": call(sg("os", "system"), sh),
        "stack_global-eval": call(sg("builtins", "eval"), py),
        "stack_global-dotted": call(sg("os", "path.os.system"), sh),
        "getattr-import-os": call(getattr_os_system, sh),
        "getattr-builtins-eval": call(
            call(g("builtins", "getattr"), call(g("builtins", "__import__"), "builtins"), "eval"), py
        ),
        "importlib.import_module": call(
            call(g("builtins", "getattr"), call(g("importlib", "import_module"), "os"), "system"), sh
        ),
        "importlib.__import__": call(
            call(g("builtins", "getattr"), call(g("importlib", "__import__"), "os"), "system"), sh
        ),
        "operator.methodcaller": call(call(g("operator", "methodcaller"), "system", sh), imp_os),
        "operator.attrgetter": call(call(call(g("operator", "attrgetter"), "system"), imp_os), sh),
        "functools.partial": call(call(g("functools", "partial"), g("os", "system"), sh)),
        "functools.reduce": call(g("functools", "reduce"), g("os", "system"), [sh]),
        "map-list": call(g("builtins", "list"), call(g("builtins", "map"), g("os", "system"), [sh])),
        "pathlib.touch": call(call(g("builtins", "getattr"), call(g("pathlib", "Path"), c), "touch")),
        "shutil.copyfile": call(g("shutil", "copyfile"), "/etc/hostname", c),
        "timeit.timeit": call(g("timeit", "timeit"), py, "pass", None, 1),
        "cProfile.run": call(g("cProfile", "run"), py),
        "runpy._run_code": call(g("runpy", "_run_code"), py, {}),
        "code.interact-runsource": call(
            call(g("builtins", "getattr"), call(g("code", "InteractiveInterpreter")), "runsource"), py
        ),
        "pickle.loads-nested": call(
            g("pickle", "loads"), B(pickle_of(call(g("os", "system"), sh), b"\x80\x04"))
        ),
        "_pickle.loads-nested": call(g("_pickle", "loads"), B(pickle_of(call(g("posix", "system"), sh)))),
        "marshal-function": call(
            g("types", "FunctionType"), call(g("marshal", "loads"), B(b"\xe3" + b"\x00" * 20)), {}
        ),
        "copyreg._reconstructor": call(
            g("copyreg", "_reconstructor"), g("subprocess", "Popen"), g("subprocess", "Popen"), ["touch", c]
        ),
        "copy_reg-compat": call(
            g("copy_reg", "_reconstructor"), g("subprocess", "Popen"), g("subprocess", "Popen"), ["touch", c]
        ),
        "numpy-runstring": call(g("numpy.testing._private.utils", "runstring"), py, {}),
        "inst-os.system": b"(" + uni(sh) + b"ios\nsystem\n",
        "inst-eval": b"(" + uni(py) + b"ibuiltins\neval\n",
        "obj-os.system": b"(" + g("os", "system") + uni(sh) + b"o",
        "obj-subprocess": b"(" + g("subprocess", "Popen") + val(["touch", c]) + b"o",
        "nested-reduce-format": call(g("os", "system"), call(g("builtins", "str"), sh)),
        "nested-reduce-join": call(
            g("os", "system"), call(call(g("builtins", "getattr"), " ", "join"), ["touch", c])
        ),
        "build-setstate-hijack": (
            call(g("argparse", "Namespace"))
            + val((None, {"__setstate__": Raw(g("os", "system"))}))
            + b"b"
            + uni(sh)
            + b"b"
        ),
        "build-setstate-ordereddict": (
            call(g("collections", "OrderedDict"))
            + val(({"__setstate__": Raw(g("os", "system"))}, None))
            + b"b"
            + uni(sh)
            + b"b"
        ),
        "build-dict-setstate": call(g("collections", "OrderedDict"))
        + val({"__setstate__": Raw(g("os", "system"))})
        + b"b"
        + uni(sh)
        + b"b",
        "build-on-global": g("os", "system") + val({"__call__": Raw(g("builtins", "eval"))}) + b"b",
        "persid-storage-type": val(("storage", Raw(g("os", "system")), "0", "cpu", 1)) + b"Q",
        "persid-reduce": call(g("os", "system"), sh) + b"Q",
        "persid-text": b"Pos.system\n",
        "persid-module": val(("module", Raw(g("os", "system")), sh, None)) + b"Q",
        "memo-swap": (
            uni("harmless")
            + b"r\x10\x27\x00\x00"
            + b"0"
            + g("os", "system")
            + b"r\x10\x27\x00\x00"
            + b"0"
            + b"j\x10\x27\x00\x00"
            + val((sh,))
            + b"R"
        ),
        "memo-get-unset": b"j\xff\xff\x00\x00" + val((sh,)) + b"R",
        "rebuild-tensor-hostile-storage": call(
            g("torch._utils", "_rebuild_tensor_v2"), call(g("os", "system"), sh), 0, (1,), (1,), False, {}
        ),
        "rebuild-from-type-system": call(
            g("torch._tensor", "_rebuild_from_type_v2"),
            g("os", "system"),
            g("subprocess", "Popen"),
            (sh,),
            {},
        ),
        "rebuild-from-type-getattr": call(
            g("torch._tensor", "_rebuild_from_type_v2"),
            g("builtins", "getattr"),
            g("os", "system"),
            (imp_os, "system"),
            {},
        ),
        "rebuild-parameter-reduce": call(
            g("torch._utils", "_rebuild_parameter"), call(g("os", "system"), sh), False, {}
        ),
        "rebuild-tensor-v3-dtype": call(
            g("torch._utils", "_rebuild_tensor_v3"),
            None,
            0,
            (1,),
            (1,),
            False,
            {},
            call(g("os", "system"), sh),
        ),
        "numpy-scalar-hostile": call(
            g("numpy.core.multiarray", "scalar"), call(g("os", "system"), sh), B(b"x")
        ),
        "torch.load-global": call(g("torch.serialization", "load"), c),
    }
    return p


# -- the catalogue of special cases
# ---------------------------------------------------------------------------


@dataclass
class Case:
    """One hostile input and what the reader must do with it.

    ``expect`` is a regex the one-line error must match (None: the file must load, exit 0); ``neutralised``
    names that ``Checkpoint.neutralised`` must contain when it loads.
    """

    name: str
    build: Callable[[Path], None]  # writes the file (or directory) at the given path
    expect: str | None = None
    neutralised: tuple[str, ...] = ()
    cli: bool = True  # also run the CLI in the driver (a lone FIFO is read as a log by the log reader)
    payload: str | None = None


def _writer(data: bytes | Callable[[], bytes]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_bytes(data() if callable(data) else data)

    return write


def _lazy(make: Callable[[], bytes]) -> Callable[[Path], None]:
    """A writer that builds its bytes only when the file is written (big cases stay cheap to list)."""
    return _writer(make)


def deep_tuple(n: int) -> bytes:
    return b")" + b"\x85" * n  # EMPTY_TUPLE then TUPLE1 n times: ((((),),),)


def deep_frozenset(n: int) -> bytes:
    """frozenset({frozenset({...})}) n levels deep, by REDUCE (no MARKs), the level below kept in memo 0."""
    step = b"r\x00\x00\x00\x00" + b"0" + g("builtins", "frozenset") + b"j\x00\x00\x00\x00\x85\x85R"
    return g("builtins", "frozenset") + b")R" + step * n


def deep_dict(n: int) -> bytes:
    """{"k": {"k": ...}} n levels deep, built inside out with the level below in memo 0."""
    return b"}r\x00\x00\x00\x00" + (b"0}" + uni("k") + b"j\x00\x00\x00\x00sr\x00\x00\x00\x00") * n


def deep_list(n: int) -> bytes:
    return b"]" * n + b"a" * (n - 1)  # n empty lists, each appended to the one below


def colliding_ints(n: int) -> bytes:
    modulus = 2**61 - 1  # CPython hashes ints modulo this: every key below hashes to 0
    return b"}(" + b"".join(num(i * modulus) + b"N" for i in range(1, n + 1)) + b"u"


def bomb_zip(member_name: str, declared_honestly: bool = True) -> bytes:
    """An archive whose ``member_name`` inflates to 1 GiB from about 1 MB (a repeated full-flush deflate
    block)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    stream = segment * 1024 + c.flush(zlib.Z_FINISH)
    crc = 0
    zeros = bytes(1 << 20)
    for _ in range(1024):
        crc = zlib.crc32(zeros, crc)
    bomb = Member(f"archive/{member_name}".encode(), stream, crc, 1 << 30 if declared_honestly else 6, 8)
    pkl = pickle_of(val({"scheduler": plateau_state()}))
    members = [
        member("archive/data.pkl", pkl),
        member("archive/byteorder", b"little"),
        member("archive/version", b"3\n"),
    ]
    members = [bomb if m.name == bomb.name else m for m in members]
    return raw_zip(members)


def trailing_pickle_zip() -> bytes:
    """data.pkl = a valid pickle followed by 1 GiB of zeros, deflated to about 1 MB."""
    pkl = pickle_of(val({"scheduler": plateau_state()}))
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(pkl) + c.flush(zlib.Z_FULL_FLUSH)
    segment = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    stream = head + segment * 1024 + c.flush(zlib.Z_FINISH)
    crc = zlib.crc32(pkl)
    zeros = bytes(1 << 20)
    for _ in range(1024):
        crc = zlib.crc32(zeros, crc)
    return raw_zip(
        [
            Member(b"archive/data.pkl", stream, crc, len(pkl) + (1 << 30), 8),
            member("archive/byteorder", b"little"),
            member("archive/version", b"3\n"),
        ]
    )


def tensor_of_dims(n: int) -> bytes:
    storage = val(("storage", Raw(g("torch", "FloatStorage")), "0", "cpu", 1)) + b"Q"
    return call(
        g("torch._utils", "_rebuild_tensor_v2"),
        storage,
        0,
        tuple([1] * n),
        tuple([1] * n),
        False,
        Raw(g("collections", "OrderedDict") + b")R"),
    )


def state_zip(state: Any, extra_members: list[Member] | None = None) -> bytes:
    return torch_zip(pickle_of(val({"scheduler": state})), extra_members)


def hf_dir(trainer_state: bytes) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.mkdir()
        (path / "scheduler.pt").write_bytes(torch_zip(pickle_of(val(plateau_state()))))
        (path / "trainer_state.json").write_bytes(trainer_state)

    return write


def special_cases(canary_dir: Path) -> list[Case]:
    """The issue's crashes, hangs, memory bombs, tracebacks, silent acceptances and ambiguous archives."""
    big = 10**4999  # 5,000 digits
    inf = float("inf")
    dag = b"]"  # 25 levels, each a list holding the level below 10 times: 10**25 paths, 25 objects
    for level in range(25):
        dag += b"r" + struct.pack("<I", level) + b"0" + b"](" + (b"j" + struct.pack("<I", level)) * 10 + b"e"
    self_ref_list = b"]r\x00\x00\x00\x00j\x00\x00\x00\x00a"
    items = b"".join(val(k) + val(v) for k, v in plateau_state().items())
    self_ref_state = b"}r\x00\x00\x00\x00(" + items + b"u" + uni("me") + b"j\x00\x00\x00\x00s"
    return [
        # crashes (C recursion)
        Case(
            "deep-tuple-dict-key-zip",
            _lazy(lambda: torch_zip(pickle_of(b"}" + deep_tuple(1_000_000) + b"Ns"))),
            r"nested deeper than 100",
        ),
        Case(
            "deep-tuple-dict-key-legacy",
            _lazy(lambda: legacy(b"}" + deep_tuple(1_000_000) + b"Ns")),
            r"nested deeper than 100",
        ),
        Case(
            "deep-tuple-in-set",
            _lazy(lambda: torch_zip(pickle_of(b"\x8f(" + deep_tuple(1_000_000) + b"\x90"))),
            r"nested deeper than 100",
        ),
        Case(
            "deep-frozenset",
            _lazy(lambda: torch_zip(pickle_of(deep_frozenset(100_000)))),
            r"nested deeper than 100",
        ),
        Case(
            "deep-dict-key-in-frozenset",
            _lazy(lambda: torch_zip(pickle_of(b"}" + deep_frozenset(1000) + b"Ns"))),
            r"nested deeper than 100",
        ),
        Case(
            "deep-list-in-state",
            _lazy(lambda: state_zip(plateau_state(extra=Raw(deep_list(1_000_000))))),
            r"nested deeper than 100",
        ),
        Case("deep-list-json-ok", _lazy(lambda: state_zip(plateau_state(extra=Raw(deep_list(90))))), None),
        Case(
            "deep-dict-in-state",
            _lazy(lambda: state_zip(plateau_state(extra=Raw(deep_dict(200_000))))),
            r"nested deeper than 100",
        ),
        # hangs
        Case("dag-shared-subobjects", _lazy(lambda: state_zip(plateau_state(extra=Raw(dag)))), None),
        Case(
            "dag-at-root",
            _lazy(lambda: torch_zip(pickle_of(val({"a": Raw(dag), "scheduler": plateau_state()})))),
            None,
        ),
        Case(
            "self-referencing-list", _lazy(lambda: state_zip(plateau_state(extra=Raw(self_ref_list)))), None
        ),
        Case(
            "self-referencing-state",
            _lazy(lambda: torch_zip(pickle_of(val({"scheduler": Raw(self_ref_state)})))),
            None,
        ),
        Case("byteorder-bomb", _lazy(lambda: bomb_zip("byteorder")), r"byteorder.*limit 64"),
        Case(
            "byteorder-bomb-lying-size",
            _lazy(lambda: bomb_zip("byteorder", declared_honestly=False)),
            r"byteorder|Bad CRC|corrupt",
        ),
        Case("version-bomb", _lazy(lambda: bomb_zip("version")), r"version.*limit 64"),
        Case(
            "colliding-hash-keys",
            _lazy(lambda: torch_zip(pickle_of(colliding_ints(60_000)))),
            r"colliding hashes",
        ),
        Case(
            "tensor-200000-dims",
            _lazy(
                lambda: torch_zip(
                    pickle_of(val({"scheduler": plateau_state(), "t": Raw(tensor_of_dims(200_000))})),
                    [member("archive/data/0", b"\0" * 4)],
                )
            ),
            r"200,000 dimensions \(limit 64",
        ),
        # memory
        Case(
            "long-binput-2-28",
            _lazy(lambda: torch_zip(pickle_of(b"N" + b"r" + struct.pack("<I", 2**28)))),
            r"no ReduceLROnPlateau state",
        ),
        Case(
            "long-binput-2-29-state",
            _lazy(lambda: state_zip(Raw(val(plateau_state())[:-1] + b"r" + struct.pack("<I", 2**29) + b"u"))),
            None,
        ),
        Case(
            "memo-flood",
            _lazy(
                lambda: torch_zip(
                    pickle_of(b"N" + b"".join(b"r" + struct.pack("<I", i) for i in range(1_100_000)) + b"0N")
                )
            ),
            r"memo entries",
        ),
        Case("object-flood", _lazy(lambda: torch_zip(pickle_of(b"](" + b"}" * 6_000_000 + b"e"))), r"MiB"),
        Case("set-flood", _lazy(lambda: torch_zip(pickle_of(b"](" + b"\x8f" * 3_000_000 + b"e"))), r"MiB"),
        Case("mark-flood", _lazy(lambda: torch_zip(pickle_of(b"(" * 5_000_000 + b"N"))), r"MARKs"),
        Case("trailing-gigabyte-data-pkl", _lazy(trailing_pickle_zip), r"data\.pkl holds .*limit 64 MiB"),
        Case(
            "binunicode8-huge-length",
            _lazy(lambda: torch_zip(pickle_of(b"\x8d" + struct.pack("<Q", 2**62)))),
            r"string in a pickle \(limit",
        ),
        Case(
            "binbytes-past-end",
            _lazy(lambda: torch_zip(pickle_of(b"B" + struct.pack("<I", 2**31)))),
            r"truncated pickle|limit",
        ),
        # tracebacks
        Case(
            "best-string",
            _lazy(lambda: state_zip(plateau_state(best="0.25"))),
            r"best holds '0\.25', not a number",
        ),
        Case(
            "best-none", _lazy(lambda: state_zip(plateau_state(best=None))), r"best holds None, not a number"
        ),
        Case(
            "last-epoch-5000-digits",
            _lazy(lambda: state_zip(plateau_state(last_epoch=big))),
            r"an integer of 2,076 bytes \(limit 256",
        ),
        Case(
            "dict-key-5000-digits",
            _lazy(lambda: torch_zip(pickle_of(val({big: 1, "scheduler": plateau_state()})))),
            r"an integer of 2,076 bytes \(limit 256",
        ),
        Case(
            "last-epoch-2000-bits",
            _lazy(lambda: state_zip(plateau_state(last_epoch=2**2000))),
            r"last_epoch holds an integer of 2001 bits, too large for a float",
        ),
        Case(
            "last-epoch-2-70",
            _lazy(lambda: state_zip(plateau_state(last_epoch=2**70))),
            r"last_epoch is 1180591620717411303424: out of range for a counter",
        ),
        Case(
            "legacy-header-5000-digits",
            _lazy(lambda: legacy(val({"scheduler": plateau_state()}), magic_code=num(big))),
            r"legacy magic number",
        ),
        Case(
            "text-long-5000-digits",
            _lazy(lambda: torch_zip(pickle_of(b"L" + b"9" * 5000 + b"L\n"))),
            r"a number written with 5,000 characters \(limit",
        ),
        Case(
            "min-lrs-too-large",
            _lazy(lambda: state_zip(plateau_state(min_lrs=[2**1100]))),
            r"too large for a float",
        ),
        Case(
            "last-lr-too-large",
            _lazy(lambda: state_zip(plateau_state(_last_lr=[2**1500]))),
            r"too large for a float",
        ),
        Case(
            "bytes-set-opaque-in-state",
            _lazy(
                lambda: state_zip(
                    plateau_state(
                        blob=b"\x00\xff" * 10,
                        tags=Raw(b"\x8f(" + uni("a") + uni("b") + b"\x90"),
                        frozen=Raw(b"(" + num(1) + b"\x91"),
                        cfg=Raw(call(g("argparse", "Namespace"))),
                        cls=Raw(g("torch", "float32")),
                        cx=Raw(call(g("builtins", "complex"), 1.0, 2.0)),
                    )
                )
            ),
            None,
            neutralised=("argparse.Namespace", "torch.float32"),
        ),
        Case(
            "dtype-and-class-values",
            _lazy(
                lambda: torch_zip(
                    pickle_of(
                        val(
                            {
                                "dtype": Raw(g("torch", "float32")),
                                "config": {"optimizer_class": Raw(g("torch.optim.adam", "Adam"))},
                                "scheduler": plateau_state(),
                            }
                        )
                    )
                )
            ),
            None,
            neutralised=("torch.float32", "torch.optim.adam.Adam"),
        ),
        Case(
            "ordereddict-items-hijack",
            _lazy(
                lambda: torch_zip(
                    pickle_of(
                        val(
                            {
                                "scheduler": Raw(
                                    call(g("collections", "OrderedDict"))
                                    + val({"items": Raw(g("os", "system"))})
                                    + b"b"
                                )
                            }
                        )
                    )
                )
            ),
            r"shadow a method",
        ),
        Case(
            "ordereddict-reduce-hijack",
            _lazy(
                lambda: torch_zip(
                    pickle_of(
                        val(
                            {
                                "scheduler": Raw(
                                    call(g("collections", "OrderedDict"), Raw(call(g("os", "system"), "x")))
                                )
                            }
                        )
                    )
                )
            ),
            r"refused: OrderedDict built from|not on the allowlist",
        ),
        Case(
            "ordereddict-metadata-ok",
            _lazy(
                lambda: torch_zip(
                    pickle_of(
                        val(
                            {
                                "scheduler": Raw(
                                    call(g("collections", "OrderedDict"))
                                    + b"("
                                    + b"".join(val(k) + val(v) for k, v in plateau_state().items())
                                    + b"u"
                                    + val({"_metadata": {"": {"version": 1}}})
                                    + b"b"
                                )
                            }
                        )
                    )
                )
            ),
            None,
        ),
        Case(
            "zip-bad-utf8-name",
            _lazy(lambda: _bad_utf8_zip()),
            r"corrupt or truncated zip|UnicodeDecodeError",
        ),
        Case("zip-corrupt-lzma", _lazy(lambda: _lzma_zip(corrupt=True)), r"compression method 14"),
        Case("zip-lzma", _lazy(lambda: _lzma_zip(corrupt=False)), r"compression method 14"),
        Case("hf-trainer-state-deep", hf_dir(b"[" * 100_000 + b"]" * 100_000), r"trainer_state\.json"),
        Case("hf-trainer-state-deep-object", hf_dir(b'{"a":' * 150 + b"1" + b"}" * 150), r"nested deeper"),
        Case("hf-trainer-state-list", hf_dir(b"[1, 2]"), r"top level is a JSON list"),
        Case(
            "hf-trainer-state-string-epoch",
            hf_dir(b'{"epoch": "5", "global_step": 10, "log_history": []}'),
            r"epoch is '5', not a number",
        ),
        Case("hf-trainer-state-big-int", hf_dir(b'{"epoch": ' + b"9" * 5000 + b"}"), r"not readable JSON"),
        Case("hf-trainer-state-history-not-list", hf_dir(b'{"log_history": {"a": 1}}'), r"log_history"),
        Case("quoted-10kb-mode", _lazy(lambda: state_zip(plateau_state(mode="x" * 10_000))), r"mode is 'xxx"),
        Case(
            "quoted-10kb-key",
            _lazy(lambda: torch_zip(pickle_of(val({"k" * 10_000: 1})))),
            r"no ReduceLROnPlateau",
        ),
        Case(
            "quoted-10kb-global",
            _lazy(lambda: torch_zip(pickle_of(g("m" * 10_000, "x")))),
            r"global name longer",
        ),
        # silent acceptance -> exit 1 (bad file) with the key named
        Case(
            "factor-one",
            _lazy(lambda: state_zip(plateau_state(factor=1.0))),
            r"factor is 1\.0; torch requires",
        ),
        Case("mode-bogus", _lazy(lambda: state_zip(plateau_state(mode="bogus"))), r"mode is 'bogus'"),
        Case(
            "threshold-mode-bogus",
            _lazy(lambda: state_zip(plateau_state(threshold_mode="bogus"))),
            r"threshold_mode is 'bogus'",
        ),
        Case(
            "patience-string",
            _lazy(lambda: state_zip(plateau_state(patience="2"))),
            r"patience holds '2', not a number",
        ),
        Case("factor-nan-loads", _lazy(lambda: state_zip(plateau_state(factor=float("nan")))), None),
        Case(
            "impossible-counters-load",
            _lazy(
                lambda: state_zip(plateau_state(cooldown_counter=5, eps=1.5, num_bad_epochs=9, factor=-0.5))
            ),
            None,
        ),
        Case("mode-worse-wrong", _lazy(lambda: state_zip(plateau_state(mode_worse=-inf))), None),
        # ambiguous archives
        Case(
            "two-data-pkl",
            _lazy(
                lambda: raw_zip(
                    [
                        member("archive/data.pkl", pickle_of(val({"scheduler": plateau_state()}))),
                        member("archive/data.pkl", pickle_of(val({"scheduler": plateau_state(best=0.75)}))),
                        member("archive/version", b"3\n"),
                    ]
                )
            ),
            r"ambiguous archive",
        ),
        Case(
            "two-members-one-storage",
            _lazy(
                lambda: torch_zip(
                    pickle_of(val({"scheduler": plateau_state(best=Raw(tensor_of_dims(0)))})),
                    [
                        member("archive/data/0", struct.pack("<f", 0.25)),
                        member("archive/data/0", struct.pack("<f", 0.75)),
                    ],
                )
            ),
            r"ambiguous archive",
        ),
        Case(
            "second-prefix-ignored",
            _lazy(
                lambda: raw_zip(
                    [
                        member("a/data.pkl", pickle_of(val({"scheduler": plateau_state()}))),
                        member("a/version", b"3\n"),
                        member("b/data.pkl", pickle_of(val({"scheduler": plateau_state(best=0.75)}))),
                        member("b/version", b"3\n"),
                    ]
                )
            ),
            None,
        ),
        Case(
            "storage-member-missing",
            _lazy(
                lambda: torch_zip(pickle_of(val({"scheduler": plateau_state(best=Raw(tensor_of_dims(0)))})))
            ),
            r"has no member data/'0'",
        ),
        Case(
            "storage-member-short",
            _lazy(
                lambda: torch_zip(
                    pickle_of(val({"scheduler": plateau_state(best=Raw(tensor_of_dims(0)))})),
                    [member("archive/data/0", b"\0\0")],
                )
            ),
            r"holds 2 bytes",
        ),
        Case(
            "no-version-record",
            _lazy(
                lambda: raw_zip([member("archive/data.pkl", pickle_of(val({"scheduler": plateau_state()})))])
            ),
            r"no version record",
        ),
        Case(
            "version-99",
            _lazy(
                lambda: raw_zip(
                    [
                        member("archive/data.pkl", pickle_of(val({"scheduler": plateau_state()}))),
                        member("archive/version", b"99"),
                    ]
                )
            ),
            r"version 99",
        ),
        # process state: EXT codes are refused whatever copyreg holds
        Case(
            "ext1-240",
            _lazy(
                lambda: torch_zip(pickle_of(b"\x82\xf0" + val((f"touch {canary_dir / 'ext1-240'}",)) + b"R"))
            ),
            r"EXT1 240",
        ),
        Case("ext2", _lazy(lambda: torch_zip(pickle_of(b"\x83\xf0\x00" + val(("x",)) + b"R"))), r"EXT2 240"),
        Case(
            "ext4",
            _lazy(lambda: torch_zip(pickle_of(b"\x84\xf0\x00\x00\x00" + val(("x",)) + b"R"))),
            r"EXT4 240",
        ),
        Case("fifo", lambda path: os.mkfifo(path), r"not a regular file", cli=False),
    ]


def _bad_utf8_zip() -> bytes:
    pkl = pickle_of(val({"scheduler": plateau_state()}))
    bad = Member(b"archive/\xff\xfe.pkl", b"x", zlib.crc32(b"x"), 1, 0, 0x800)
    return raw_zip([member("archive/data.pkl", pkl), bad, member("archive/version", b"3\n")])


def _lzma_zip(corrupt: bool) -> bytes:
    pkl = pickle_of(val({"scheduler": plateau_state()}))
    m = member("archive/data.pkl", pkl, zipfile.ZIP_LZMA)
    if corrupt:
        m.data = m.data[:9] + bytes(len(m.data) - 9)
    return raw_zip([m, member("archive/version", b"3\n")])


def build_all(out: Path, canary_dir: Path) -> dict[str, Case]:
    """Write every case under ``out``: the classic payloads in each of the six containers, then the special
    ones.

    A classic payload's canary is ``canary_dir/<container>``; the driver checks the directory after every
    file.
    """
    cases: dict[str, Case] = {}
    for cname, wrap in CONTAINERS.items():
        for pname, payload in classic_payloads(canary_dir / cname).items():
            name = f"{pname}@{cname}"
            cases[name] = Case(name, _writer(wrap(payload)), expect=r".", payload=pname)
    for case in special_cases(canary_dir):
        cases[case.name] = case
    for name, case in cases.items():
        case.build(out / name)
    return cases


def case_names() -> list[str]:
    """Every case's name, without building anything (for test ids)."""
    canary = Path("/nonexistent")
    return [f"{p}@{c}" for c in CONTAINERS for p in classic_payloads(canary)] + [
        c.name for c in special_cases(canary)
    ]
