"""A pickle virtual machine of our own: every opcode is interpreted here, none by CPython's unpickler.

Globals, calls and BUILD go through hooks the caller supplies; EXT opcodes are refused; nesting depth,
object count, integer size, memo size and hash collisions are bounded, so no file can crash, hang or
exhaust memory through it, and nothing depends on process state (``copyreg``'s extension cache).
"""

from __future__ import annotations

import _compat_pickle
import codecs
import struct
from collections.abc import Callable
from typing import Any

from plateau_forensics.errors import CheckpointError, CheckpointLimitError

__all__ = ["Limits", "PickleLimitError", "PickleMachine", "MAX_DEPTH", "TORCH_OPCODES", "foreign_opcodes"]

#: Nesting deeper than this is refused: a scheduler checkpoint needs a few dozen levels at most, and
#: CPython hashes, compares and prints nested tuples with C recursion that a deeper file would overflow.
MAX_DEPTH = 100


class Limits:
    """The bounds the machine enforces; each error message names the one that was hit."""

    pickle_bytes = 64 * 2**20  # one pickle stream (data.pkl, or one legacy pickle)
    memory = 128 * 2**20  # estimated bytes of the objects one stream builds (stack, containers, memo)
    memo_entries = 1_000_000
    marks = 2 * 100  # MARKs open at once: each is a container being built
    int_bits = 2048  # below Python's int-to-str limit (640 digits at its lowest setting)
    name_chars = 1000  # a global's module or name
    hash_collisions = 1000  # distinct keys sharing one hash value (hash flooding)
    memo_index = 2**32 - 1


PickleLimitError = CheckpointLimitError  # a pickle exceeds one of the reader's limits


_UNPACK_D = struct.Struct(">d").unpack_from
_UNPACK_I = struct.Struct("<i").unpack_from
_UNPACK_UI = struct.Struct("<I").unpack_from
_MISSING = object()
_CORRUPT = (
    struct.error,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    OverflowError,
    UnicodeDecodeError,
    AttributeError,
    RecursionError,
    MemoryError,
)
_HASHED = (tuple, frozenset)
_NESTING = frozenset({list, dict, tuple, set, frozenset})


class PickleMachine:
    """Interprets one pickle stream at a time from a buffer that a ``refill`` callback can extend.

    Args:
        data: the bytes available now.
        refill: called with the number of bytes still needed; returns more bytes (b"" at the end), or None
            when ``data`` is the whole stream.
        find_class: ``(module, name) -> object`` for GLOBAL/STACK_GLOBAL/INST.
        call: ``(func, args, kwargs, new) -> object`` for REDUCE/INST/OBJ (``new`` False: ``func(*args)``) and
            NEWOBJ/NEWOBJ_EX (``new`` True: ``cls.__new__(cls, *args, **kwargs)``).
        build: ``(obj, state) -> None`` for BUILD.
        persistent_load: ``pid -> object`` for PERSID/BINPERSID.
        set_types: extra types that SETITEM(S) may fill through their ``__setitem__`` (placeholders).
        append_types: extra types that APPEND(S)/ADDITEMS may fill through ``append``/``extend``.
    """

    def __init__(
        self,
        data: bytes,
        refill: Callable[[int], bytes] | None,
        *,
        find_class: Callable[[str, str], Any],
        call: Callable[[Any, tuple[Any, ...], dict[str, Any], bool], Any],
        build: Callable[[Any, Any], None],
        persistent_load: Callable[[Any], Any],
        set_types: tuple[type, ...] = (),
        append_types: tuple[type, ...] = (),
    ) -> None:
        self.data, self.pos, self.refill = data, 0, refill
        self.consumed = 0  # bytes of earlier streams and refills dropped from the front of ``data``
        self.find_class, self.call, self.build, self.persistent_load = (
            find_class,
            call,
            build,
            persistent_load,
        )
        self.set_types, self.append_types = set_types, append_types
        self.budget = Limits.memory
        self.hash_seen: dict[int, Any] = {}
        self.collisions = 0
        self.deep: dict[
            int, tuple[Any, int]
        ] = {}  # id -> (tuple/frozenset, its nesting depth) when depth > 1
        self.seen_ops = bytearray(256)  # opcodes met so far, all streams

    # -- reading bytes -----------------------------------------------------------------------------
    @property
    def offset(self) -> int:
        """Offset of the next unread byte, counted from the start of the first stream."""
        return self.consumed + self.pos

    def _more(self, n: int) -> None:
        """Make ``n`` more bytes available at ``pos`` or raise."""
        if self.offset - self.stream_start + n > Limits.pickle_bytes:
            raise PickleLimitError(
                f"a pickle longer than {Limits.pickle_bytes >> 20} MiB "
                "(a scheduler checkpoint's pickle is far smaller)"
            )
        while len(self.data) - self.pos < n:
            extra = self.refill(n - (len(self.data) - self.pos)) if self.refill is not None else b""
            if not extra:
                raise CheckpointError(
                    f"truncated pickle (it ends at byte {self.offset + len(self.data) - self.pos} "
                    "before its STOP opcode)"
                )
            self.consumed += self.pos
            self.data, self.pos = self.data[self.pos :] + extra, 0

    def _take(self, n: int) -> bytes:
        if len(self.data) - self.pos < n:
            self._more(n)
        p = self.pos
        self.pos = p + n
        return self.data[p : p + n]

    def _line(self) -> bytes:
        while True:
            end = self.data.find(b"\n", self.pos)
            if end >= 0:
                line = self.data[self.pos : end]
                self.pos = end + 1
                return line
            self._more(len(self.data) - self.pos + 1)

    def _spend(self, n: int) -> None:
        self.budget -= n
        if self.budget < 0:
            raise PickleLimitError(
                f"a pickle whose objects would take more than {Limits.memory >> 20} MiB "
                "(a scheduler checkpoint needs far less)"
            )

    # -- the machine ---------------------------------------------------------------------------------
    def load(self) -> Any:
        """Run one stream to its STOP opcode and return its value (depth-checked)."""
        self.stream_start = self.offset
        self.budget = Limits.memory
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.proto = 0
        try:
            value = self._run()
        except CheckpointError:
            raise
        except _CORRUPT as exc:
            text = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
            raise CheckpointError(f"corrupt pickle at byte {self.offset} ({text})") from None
        finally:  # drop what was built now: an error's traceback must not keep a memory bomb alive
            self.memo, self.stack, self.metastack = {}, [], []
            self.hash_seen, self.deep = {}, {}
        check_depth(value)
        return value

    def _run(self) -> Any:
        """The dispatch loop. The opcodes that make up most of a torch pickle run inline on local variables
        while at least 9 bytes are buffered; every other opcode, and any opcode near the end of the buffer
        (where a legacy file refills it), goes through its handler."""
        dispatch, seen, memo = _DISPATCH, self.seen_ops, self.memo
        memo_cap, text_cap = Limits.memo_entries, Limits.pickle_bytes
        data, pos, budget, stack = self.data, self.pos, self.budget, self.stack
        end = len(data)
        while True:
            if pos + 9 <= end:
                op = data[pos]
                seen[op] = 1
                budget -= 8  # a stack slot
                if budget < 0:
                    self.budget = budget
                    self._spend(0)
                if op == 0x47:  # BINFLOAT
                    stack.append(_UNPACK_D(data, pos + 1)[0])
                    pos += 9
                    continue
                if op == 0x4B:  # BININT1
                    stack.append(data[pos + 1])
                    pos += 2
                    continue
                if op == 0x71 or op == 0x72:  # BINPUT, LONG_BINPUT
                    if op == 0x71:
                        idx, pos = data[pos + 1], pos + 2
                    else:
                        idx, pos = _UNPACK_UI(data, pos + 1)[0], pos + 5
                    if not stack or (len(memo) >= memo_cap and idx not in memo):
                        self.pos, self.budget = pos, budget
                        self._memo_put(idx)  # raises the right error
                    budget -= 100
                    memo[idx] = stack[-1]
                    continue
                if op == 0x68 or op == 0x6A:  # BINGET, LONG_BINGET
                    if op == 0x68:
                        idx, pos = data[pos + 1], pos + 2
                    else:
                        idx, pos = _UNPACK_UI(data, pos + 1)[0], pos + 5
                    got = memo.get(idx, _MISSING)
                    if got is _MISSING:
                        self._memo_get(idx)
                    stack.append(got)
                    continue
                if op == 0x58:  # BINUNICODE
                    n = _UNPACK_UI(data, pos + 1)[0]
                    if n <= text_cap and pos + 5 + n <= end:
                        budget -= n + 64
                        stack.append(data[pos + 5 : pos + 5 + n].decode("utf-8", "surrogatepass"))
                        pos += 5 + n
                        continue
                elif op == 0x4A:  # BININT
                    stack.append(_UNPACK_I(data, pos + 1)[0])
                    pos += 5
                    continue
                elif op == 0x4E:  # NONE
                    stack.append(None)
                    pos += 1
                    continue
                elif op == 0x29:  # EMPTY_TUPLE
                    stack.append(())
                    pos += 1
                    continue
                elif op == 0x5D:  # EMPTY_LIST
                    budget -= 56
                    stack.append([])
                    pos += 1
                    continue
                elif op == 0x7D:  # EMPTY_DICT
                    budget -= 64
                    stack.append({})
                    pos += 1
                    continue
                elif op == 0x89 or op == 0x88:  # NEWFALSE, NEWTRUE
                    stack.append(op == 0x88)
                    pos += 1
                    continue
                elif op == 0x28 and len(self.metastack) < Limits.marks:  # MARK
                    budget -= 64
                    self.metastack.append(stack)
                    stack = self.stack = []
                    pos += 1
                    continue
                elif op == 0x74 and self.metastack:  # TUPLE
                    items = stack
                    stack = self.stack = self.metastack.pop()
                    self.budget = budget
                    stack.append(self._tuple(items))
                    budget = self.budget
                    pos += 1
                    continue
                elif 0x85 <= op <= 0x87 and len(stack) > op - 0x85:  # TUPLE1, TUPLE2, TUPLE3
                    n = op - 0x84
                    items = stack[-n:]
                    del stack[-n:]
                    self.budget = budget
                    stack.append(self._tuple(items))
                    budget = self.budget
                    pos += 1
                    continue
                elif op == 0x52 and len(stack) >= 2:  # REDUCE
                    self.pos, self.budget = pos + 1, budget
                    self._op_REDUCE()
                    pos, budget = self.pos, self.budget
                    continue
                budget += 8  # the handler below charges it
            self.pos, self.budget = pos, budget
            if pos >= len(data):
                self._more(1)
            op = self.data[self.pos]
            self.pos += 1
            self.budget -= 8
            seen[op] = 1
            if op == 0x2E:  # STOP
                return self._pop()
            handler = dispatch.get(op)
            if handler is None:
                raise CheckpointError(f"corrupt pickle (unknown opcode 0x{op:02x} at byte {self.offset - 1})")
            handler(self)
            data, pos, budget, stack = self.data, self.pos, self.budget, self.stack
            end = len(data)

    def _push(self, value: Any) -> None:
        self.stack.append(value)

    def _pop_mark(self) -> list[Any]:
        if not self.metastack:
            raise CheckpointError("corrupt pickle (no MARK on the stack)")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def _pop(self) -> Any:
        if not self.stack:
            raise CheckpointError("corrupt pickle (pop from an empty stack)")
        return self.stack.pop()

    def _top(self) -> Any:
        if not self.stack:
            raise CheckpointError("corrupt pickle (empty stack)")
        return self.stack[-1]

    def _int(self, value: int) -> int:
        if value.bit_length() > Limits.int_bits:
            raise PickleLimitError(
                f"an integer of {value.bit_length():,} bits (limit {Limits.int_bits}: "
                "what a scheduler checkpoint could need)"
            )
        return value

    def _key(self, key: Any) -> Any:
        """Check a dict key or set element before CPython hashes it: bounded depth, no hash flooding."""
        h = hash(key)  # depth of tuples/frozensets was bounded when they were built
        first = self.hash_seen.setdefault(h, key)
        if first is not key and first != key:
            self.collisions += 1
            if self.collisions > Limits.hash_collisions:
                raise PickleLimitError(
                    f"more than {Limits.hash_collisions} distinct dict keys or set elements "
                    "with colliding hashes (a hash-flooding file)"
                )
        return key

    def _hashed(self, container: Any, items: Any) -> Any:
        """Record the nesting depth of a new tuple/frozenset; refuse one nested deeper than MAX_DEPTH."""
        deep = self.deep
        depth = 1
        for item in items:
            if type(item) in _HASHED:
                entry = deep.get(id(item))
                d = entry[1] + 1 if entry is not None and entry[0] is item else 2
                if d > depth:
                    depth = d
        if depth > 1:
            if depth > MAX_DEPTH:
                raise PickleLimitError(f"tuples or frozensets nested deeper than {MAX_DEPTH} levels")
            deep[id(container)] = (container, depth)
        return container

    def _tuple(self, items: list[Any] | tuple[Any, ...]) -> tuple[Any, ...]:
        self._spend(48 + 8 * len(items))
        value = tuple(items)
        return self._hashed(value, value) if value else value

    def _setitems(self, target: Any, items: list[Any]) -> None:
        if len(items) % 2:
            raise CheckpointError("corrupt pickle (SETITEMS with an odd number of items)")
        self._spend(50 * len(items))  # a dict slot and its share of the table, per key
        if type(target) is dict or (isinstance(target, dict) and type(target).__module__ == "collections"):
            for i in range(0, len(items), 2):
                target[self._key(items[i])] = items[i + 1]
        elif isinstance(target, self.set_types):
            for i in range(0, len(items), 2):
                target[self._key(items[i])] = items[i + 1]
        else:
            raise CheckpointError(f"corrupt pickle (SETITEM into a {type(target).__name__})")
        self._nested(target, items[1::2])

    def _appends(self, target: Any, items: list[Any]) -> None:
        self._spend(8 * len(items))
        if type(target) is list or isinstance(target, self.append_types):
            target.extend(items)
        else:
            raise CheckpointError(f"corrupt pickle (APPEND to a {type(target).__name__})")
        self._nested(target, items)

    def _nested(self, target: Any, items: list[Any]) -> None:
        """Raise the depth recorded for ``target`` to one more than its deepest new item's, so a deep chain
        fails after MAX_DEPTH steps instead of after the whole stream (``check_depth`` still has the last
        word: an item filled in after it was inserted is not seen here)."""
        deep = self.deep
        depth = 0
        for item in items:
            if type(item) in _NESTING:
                entry = deep.get(id(item))
                d = entry[1] if entry is not None and entry[0] is item else 1
                if d > depth:
                    depth = d
        if depth:
            entry = deep.get(id(target))
            mine = entry[1] if entry is not None and entry[0] is target else 1
            if depth + 1 > mine:
                if depth + 1 > MAX_DEPTH:
                    raise PickleLimitError(f"containers nested deeper than {MAX_DEPTH} levels "
                                           "(a scheduler checkpoint needs far fewer)")
                deep[id(target)] = (target, depth + 1)

    def _memo_put(self, index: int) -> None:
        if not 0 <= index <= Limits.memo_index:
            raise CheckpointError(f"corrupt pickle (memo index {index})")
        if len(self.memo) >= Limits.memo_entries and index not in self.memo:
            raise PickleLimitError(f"a pickle with more than {Limits.memo_entries:,} memo entries")
        self._spend(100)
        self.memo[index] = self._top()

    def _memo_get(self, index: int) -> None:
        try:
            self._push(self.memo[index])
        except KeyError:
            raise CheckpointError(f"corrupt pickle (memo index {index} was never stored)") from None

    def _global(self, module: Any, name: Any) -> None:
        if not (isinstance(module, str) and isinstance(name, str)):
            raise CheckpointError("corrupt pickle (STACK_GLOBAL with non-string names)")
        if len(module) > Limits.name_chars or len(name) > Limits.name_chars:
            raise PickleLimitError(f"a global name longer than {Limits.name_chars} characters")
        if self.proto < 3:  # protocol 2 writes Python 2 names (__builtin__.set): map back as pickle does
            module, name = _compat_pickle.NAME_MAPPING.get(
                (module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
            )
        self._spend(len(module) + len(name) + 200)
        self._push(self.find_class(module, name))

    def _decode(self, raw: bytes) -> Any:
        return raw.decode("utf-8")  # torch.load's encoding for Python 2 str

    # -- opcodes (names as in pickletools) -----------------------------------------------------------
    def _op_PROTO(self) -> None:
        self.proto = self._take(1)[0]
        if self.proto > 5:
            raise CheckpointError(f"unsupported pickle protocol {self.proto}")

    def _op_FRAME(self) -> None:
        self._take(8)  # frames only group opcodes; the machine reads linearly

    def _op_MARK(self) -> None:
        if len(self.metastack) >= Limits.marks:
            raise PickleLimitError(
                f"more than {Limits.marks} MARKs open at once (containers nested too deep)"
            )
        self._spend(64)
        self.metastack.append(self.stack)
        self.stack = []

    def _op_POP(self) -> None:
        if self.stack:
            self.stack.pop()
        else:
            self._pop_mark()

    def _op_POP_MARK(self) -> None:
        self._pop_mark()

    def _op_DUP(self) -> None:
        self._push(self._top())

    def _op_NONE(self) -> None:
        self._push(None)

    def _op_NEWTRUE(self) -> None:
        self._push(True)

    def _op_NEWFALSE(self) -> None:
        self._push(False)

    def _op_INT(self) -> None:
        line = self._line()
        if line == b"00":
            self._push(False)
        elif line == b"01":
            self._push(True)
        else:
            self._push(self._int(int(_digits(line), 0)))

    def _op_BININT(self) -> None:
        self._push(struct.unpack("<i", self._take(4))[0])

    def _op_BININT1(self) -> None:
        self._push(self._take(1)[0])

    def _op_BININT2(self) -> None:
        self._push(struct.unpack("<H", self._take(2))[0])

    def _op_LONG(self) -> None:
        line = self._line()
        self._push(self._int(int(_digits(line[:-1] if line.endswith(b"L") else line), 0)))

    def _long(self, n: int) -> None:
        if n > Limits.int_bits // 8 + 1:
            raise PickleLimitError(
                f"an integer of {n:,} bytes (limit {Limits.int_bits // 8}: "
                "what a scheduler checkpoint could need)"
            )
        self._push(self._int(int.from_bytes(self._take(n), "little", signed=True)))

    def _op_LONG1(self) -> None:
        self._long(self._take(1)[0])

    def _op_LONG4(self) -> None:
        n = struct.unpack("<i", self._take(4))[0]
        if n < 0:
            raise CheckpointError("corrupt pickle (LONG4 with a negative length)")
        self._long(n)

    def _op_FLOAT(self) -> None:
        self._push(float(_digits(self._line())))

    def _op_BINFLOAT(self) -> None:
        self._push(struct.unpack(">d", self._take(8))[0])

    def _sized(self, n: int) -> bytes:
        if n < 0:
            raise CheckpointError("corrupt pickle (negative length)")
        if n > Limits.pickle_bytes:
            raise PickleLimitError(f"a {n:,}-byte string in a pickle (limit {Limits.pickle_bytes >> 20} MiB)")
        self._spend(n + 64)
        return self._take(n)

    def _op_STRING(self) -> None:
        line = self._line()
        if len(line) < 2 or line[0] != line[-1] or line[:1] not in (b"'", b'"'):
            raise CheckpointError("corrupt pickle (STRING opcode argument must be quoted)")
        self._spend(len(line) + 64)
        self._push(self._decode(codecs.escape_decode(line[1:-1])[0]))

    def _op_BINSTRING(self) -> None:
        self._push(self._decode(self._sized(struct.unpack("<i", self._take(4))[0])))

    def _op_SHORT_BINSTRING(self) -> None:
        self._push(self._decode(self._sized(self._take(1)[0])))

    def _op_BINBYTES(self) -> None:
        self._push(bytes(self._sized(struct.unpack("<I", self._take(4))[0])))

    def _op_SHORT_BINBYTES(self) -> None:
        self._push(bytes(self._sized(self._take(1)[0])))

    def _op_BINBYTES8(self) -> None:
        self._push(bytes(self._sized(_size8(self._take(8)))))

    def _op_BYTEARRAY8(self) -> None:
        self._push(bytearray(self._sized(_size8(self._take(8)))))

    def _op_UNICODE(self) -> None:
        line = self._line()
        self._spend(4 * len(line) + 64)
        self._push(line.decode("raw-unicode-escape"))

    def _op_BINUNICODE(self) -> None:
        self._push(self._sized(struct.unpack("<I", self._take(4))[0]).decode("utf-8", "surrogatepass"))

    def _op_SHORT_BINUNICODE(self) -> None:
        self._push(self._sized(self._take(1)[0]).decode("utf-8", "surrogatepass"))

    def _op_BINUNICODE8(self) -> None:
        self._push(self._sized(_size8(self._take(8))).decode("utf-8", "surrogatepass"))

    def _op_NEXT_BUFFER(self) -> None:
        raise CheckpointError("corrupt pickle (out-of-band buffers are not part of torch.save files)")

    _op_READONLY_BUFFER = _op_NEXT_BUFFER

    def _op_EMPTY_TUPLE(self) -> None:
        self._push(())

    def _op_TUPLE(self) -> None:
        self._push(self._tuple(self._pop_mark()))

    def _op_TUPLE1(self) -> None:
        self._push(self._tuple([self._pop()]))

    def _op_TUPLE2(self) -> None:
        b, a = self._pop(), self._pop()
        self._push(self._tuple([a, b]))

    def _op_TUPLE3(self) -> None:
        c, b, a = self._pop(), self._pop(), self._pop()
        self._push(self._tuple([a, b, c]))

    def _op_EMPTY_LIST(self) -> None:
        self._spend(56)
        self._push([])

    def _op_LIST(self) -> None:
        items = self._pop_mark()
        self._spend(56 + 8 * len(items))
        self._push(items)

    def _op_EMPTY_DICT(self) -> None:
        self._spend(64)
        self._push({})

    def _op_DICT(self) -> None:
        items = self._pop_mark()
        self._spend(64)
        value: dict[Any, Any] = {}
        self._setitems(value, items)
        self._push(value)

    def _op_EMPTY_SET(self) -> None:
        self._spend(216)
        self._push(set())

    def _op_FROZENSET(self) -> None:
        items = [self._key(x) for x in self._pop_mark()]
        self._spend(216 + 40 * len(items))
        value = frozenset(items)
        self._push(self._hashed(value, value))

    def _op_APPEND(self) -> None:
        value = self._pop()
        self._appends(self._top(), [value])

    def _op_APPENDS(self) -> None:
        items = self._pop_mark()
        self._appends(self._top(), items)

    def _op_SETITEM(self) -> None:
        value, key = self._pop(), self._pop()
        self._setitems(self._top(), [key, value])

    def _op_SETITEMS(self) -> None:
        items = self._pop_mark()
        self._setitems(self._top(), items)

    def _op_ADDITEMS(self) -> None:
        items = self._pop_mark()
        target = self._top()
        self._spend(40 * len(items))
        if type(target) is set:
            for x in items:
                target.add(self._key(x))
        elif isinstance(target, self.append_types):
            target.extend(items)
        else:
            raise CheckpointError(f"corrupt pickle (ADDITEMS to a {type(target).__name__})")

    def _op_GET(self) -> None:
        self._memo_get(int(_digits(self._line())))

    def _op_BINGET(self) -> None:
        self._memo_get(self._take(1)[0])

    def _op_LONG_BINGET(self) -> None:
        self._memo_get(struct.unpack("<I", self._take(4))[0])

    def _op_PUT(self) -> None:
        self._memo_put(int(_digits(self._line())))

    def _op_BINPUT(self) -> None:
        self._memo_put(self._take(1)[0])

    def _op_LONG_BINPUT(self) -> None:
        self._memo_put(struct.unpack("<I", self._take(4))[0])

    def _op_MEMOIZE(self) -> None:
        self._memo_put(len(self.memo))

    def _op_GLOBAL(self) -> None:
        module = self._line().decode("utf-8")
        name = self._line().decode("utf-8")
        self._global(module, name)

    def _op_STACK_GLOBAL(self) -> None:
        name, module = self._pop(), self._pop()
        self._global(module, name)

    def _op_EXT1(self) -> None:
        self._ext(self._take(1)[0], "EXT1")

    def _op_EXT2(self) -> None:
        self._ext(struct.unpack("<H", self._take(2))[0], "EXT2")

    def _op_EXT4(self) -> None:
        self._ext(struct.unpack("<i", self._take(4))[0], "EXT4")

    def _ext(self, code: int, op: str) -> None:
        # copyreg's extension registry is process state: what a code means depends on what else was imported
        # and unpickled before, so no code is ever resolved (torch.save never writes EXT opcodes).
        raise CheckpointError(
            f"refused: the pickle uses {op} {code} (a copyreg extension code, resolved through "
            "process state outside the file)"
        )

    def _op_REDUCE(self) -> None:
        args, func = self._pop(), self._pop()
        if type(args) is not tuple:
            raise CheckpointError(
                f"corrupt pickle (REDUCE arguments are a {type(args).__name__}, not a tuple)"
            )
        self._spend(100)
        self._push(self.call(func, args, {}, False))

    def _op_NEWOBJ(self) -> None:
        args, cls = self._pop(), self._pop()
        if type(args) is not tuple:
            raise CheckpointError("corrupt pickle (NEWOBJ arguments are not a tuple)")
        self._spend(100)
        self._push(self.call(cls, args, {}, True))

    def _op_NEWOBJ_EX(self) -> None:
        kwargs, args, cls = self._pop(), self._pop(), self._pop()
        if type(args) is not tuple or type(kwargs) is not dict or not all(isinstance(k, str) for k in kwargs):
            raise CheckpointError("corrupt pickle (NEWOBJ_EX arguments are not a tuple and a dict)")
        self._spend(100)
        self._push(self.call(cls, args, kwargs, True))

    def _op_INST(self) -> None:
        module = self._line().decode("utf-8")
        name = self._line().decode("utf-8")
        args = tuple(self._pop_mark())
        self._global(module, name)
        self._spend(100)
        self._push(self.call(self._pop(), args, {}, not args))

    def _op_OBJ(self) -> None:
        items = self._pop_mark()
        if not items:
            raise CheckpointError("corrupt pickle (OBJ without a class)")
        self._spend(100)
        self._push(self.call(items[0], tuple(items[1:]), {}, len(items) == 1))

    def _op_BUILD(self) -> None:
        state = self._pop()
        self.build(self._top(), state)

    def _op_PERSID(self) -> None:
        self._push(self.persistent_load(self._line().decode("ascii")))

    def _op_BINPERSID(self) -> None:
        self._push(self.persistent_load(self._pop()))


def _digits(line: bytes) -> str:
    text = line.decode("ascii").strip()
    if len(text) > Limits.int_bits // 3 + 2:
        raise PickleLimitError(
            f"a number written with {len(text):,} characters (limit {Limits.int_bits // 3})"
        )
    return text


def _size8(raw: bytes) -> int:
    n: int = struct.unpack("<Q", raw)[0]
    if n > Limits.pickle_bytes:
        raise PickleLimitError(f"a {n:,}-byte string in a pickle (limit {Limits.pickle_bytes >> 20} MiB)")
    return n


_OPCODES: dict[str, bytes] = {
    "MARK": b"(",
    "POP": b"0",
    "POP_MARK": b"1",
    "DUP": b"2",
    "FLOAT": b"F",
    "INT": b"I",
    "BININT": b"J",
    "BININT1": b"K",
    "LONG": b"L",
    "BININT2": b"M",
    "NONE": b"N",
    "PERSID": b"P",
    "BINPERSID": b"Q",
    "REDUCE": b"R",
    "STRING": b"S",
    "BINSTRING": b"T",
    "SHORT_BINSTRING": b"U",
    "UNICODE": b"V",
    "BINUNICODE": b"X",
    "APPEND": b"a",
    "BUILD": b"b",
    "GLOBAL": b"c",
    "DICT": b"d",
    "EMPTY_DICT": b"}",
    "APPENDS": b"e",
    "GET": b"g",
    "BINGET": b"h",
    "INST": b"i",
    "LONG_BINGET": b"j",
    "LIST": b"l",
    "EMPTY_LIST": b"]",
    "OBJ": b"o",
    "PUT": b"p",
    "BINPUT": b"q",
    "LONG_BINPUT": b"r",
    "SETITEM": b"s",
    "TUPLE": b"t",
    "EMPTY_TUPLE": b")",
    "SETITEMS": b"u",
    "BINFLOAT": b"G",
    "PROTO": b"\x80",
    "NEWOBJ": b"\x81",
    "EXT1": b"\x82",
    "EXT2": b"\x83",
    "EXT4": b"\x84",
    "TUPLE1": b"\x85",
    "TUPLE2": b"\x86",
    "TUPLE3": b"\x87",
    "NEWTRUE": b"\x88",
    "NEWFALSE": b"\x89",
    "LONG1": b"\x8a",
    "LONG4": b"\x8b",
    "BINBYTES": b"B",
    "SHORT_BINBYTES": b"C",
    "SHORT_BINUNICODE": b"\x8c",
    "BINUNICODE8": b"\x8d",
    "BINBYTES8": b"\x8e",
    "EMPTY_SET": b"\x8f",
    "ADDITEMS": b"\x90",
    "FROZENSET": b"\x91",
    "NEWOBJ_EX": b"\x92",
    "STACK_GLOBAL": b"\x93",
    "MEMOIZE": b"\x94",
    "FRAME": b"\x95",
    "BYTEARRAY8": b"\x96",
    "NEXT_BUFFER": b"\x97",
    "READONLY_BUFFER": b"\x98",
}


#: The opcodes torch.load(weights_only=True) executes (torch/_weights_only_unpickler.py): torch.save's
#: protocol 2.
TORCH_OPCODES = frozenset(
    _OPCODES[name][0]
    for name in (
        "APPEND",
        "APPENDS",
        "BINFLOAT",
        "BINGET",
        "BININT",
        "BININT1",
        "BININT2",
        "BINPERSID",
        "BINPUT",
        "BINUNICODE",
        "BUILD",
        "EMPTY_DICT",
        "EMPTY_LIST",
        "EMPTY_SET",
        "EMPTY_TUPLE",
        "GLOBAL",
        "LONG1",
        "LONG_BINGET",
        "LONG_BINPUT",
        "MARK",
        "NEWFALSE",
        "NEWOBJ",
        "NEWTRUE",
        "NONE",
        "PROTO",
        "REDUCE",
        "SETITEM",
        "SETITEMS",
        "SHORT_BINSTRING",
        "TUPLE",
        "TUPLE1",
        "TUPLE2",
        "TUPLE3",
    )
)
OPCODE_NAMES = {code[0]: name for name, code in _OPCODES.items()}


def foreign_opcodes(seen: bytearray) -> list[str]:
    """Names of the opcodes in ``seen`` that torch.load(weights_only=True) refuses (STOP excluded)."""
    return [
        OPCODE_NAMES.get(op, f"0x{op:02x}")
        for op in range(256)
        if seen[op] and op not in TORCH_OPCODES and op != 0x2E
    ]


def children(obj: Any) -> list[Any] | tuple[Any, ...] | None:
    """The values inside a container the machine can build (dict keys too), or None for a leaf."""
    t = type(obj)
    if t is list or t is tuple:
        return obj  # type: ignore[no-any-return]
    if isinstance(obj, dict):
        out = [*obj.keys(), *obj.values()]
        extra = getattr(obj, "__dict__", None)  # an OrderedDict's attributes (state_dict()._metadata)
        return out + list(extra.values()) if extra else out
    if t is set or t is frozenset:
        return list(obj)
    inner = getattr(type(obj), "pickle_children", None)
    return inner(obj) if inner is not None else None  # type: ignore[no-any-return]


_SCALARS = frozenset({int, float, str, bytes, bool, type(None), complex, bytearray})


def check_depth(root: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse a value nested deeper than ``limit`` (cycles are allowed: a back edge adds no depth).

    Iterative, and every object is visited once, so a DAG of shared sub-objects costs its size.

    Raises:
        PickleLimitError: some path from the root is longer than ``limit`` containers.
    """
    height: dict[int, int] = {}  # id -> height of a finished container
    active: set[int] = set()
    keep: list[Any] = []  # keeps ids stable while we look at them
    if children(root) is None:
        return
    stack: list[tuple[Any, Any, int]] = [(root, iter(children(root) or ()), 0)]
    active.add(id(root))
    keep.append(root)
    while stack:
        node, it, best = stack[-1]
        for child in it:
            if type(child) in _SCALARS:
                continue
            kids = children(child)
            if kids is None:
                continue
            cid = id(child)
            if cid in active:
                continue
            h = height.get(cid)
            if h is not None:
                if h > best:
                    best = h
                    stack[-1] = (node, it, best)
                continue
            if len(stack) >= limit:
                raise PickleLimitError(
                    f"containers nested deeper than {limit} levels (a scheduler checkpoint needs far fewer)"
                )
            keep.append(child)
            active.add(cid)
            stack[-1] = (node, it, best)
            stack.append((child, iter(kids), 0))
            break
        else:
            stack.pop()
            active.discard(id(node))
            height[id(node)] = best + 1
            if stack:
                parent, pit, pbest = stack[-1]
                if best + 1 > pbest:
                    stack[-1] = (parent, pit, best + 1)


_DISPATCH: dict[int, Callable[[PickleMachine], None]] = {
    op[0]: getattr(PickleMachine, f"_op_{name}") for name, op in _OPCODES.items()
}
