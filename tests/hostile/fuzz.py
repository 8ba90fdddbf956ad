"""A seeded mutator over the shipped samples: byte flips, truncations, insertions, member swaps, opcode swaps.

Each mutant records which byte range of the file it changed, so a test can ask whether the reader looked at
those bytes. Zip members whose content is changed on purpose (opcode substitutions, flips inside data.pkl)
get a correct CRC-32, so the damage reaches the pickle machine instead of stopping at the checksum.
"""

from __future__ import annotations

import glob
import io
import pickletools
import random
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_checkpoints"


@dataclass
class Mutant:
    """One mutated file: its bytes, how it was made, and the byte range it changed (end exclusive)."""

    name: str
    source: Path
    kind: str
    data: bytes
    changed: tuple[int, int]
    log: Path | None = None  # for event-file mutants: the checkpoint traced against them


def checkpoint_sources() -> list[Path]:
    """Shipped checkpoints: plain and legacy samples, Lightning .ckpt, HF scheduler/optimizer, TensorBoard
    runs."""
    found = sorted(SAMPLES.glob("*.pt"))
    found += sorted(
        Path(p) for p in glob.glob(str(SAMPLES / "lightning/*/csv_logs/version_*/checkpoints/last.ckpt"))
    )
    found += sorted(SAMPLES.glob("hf/epoch/checkpoint-160/*.pt"))
    found += sorted(SAMPLES.glob("tensorboard/*/ckpt_epoch20.pt"))
    return [p for p in found if p.name not in ("rng_state.pth", "training_args.bin")]


def event_sources() -> list[tuple[Path, Path]]:
    """(event file, the checkpoint of the same run) pairs."""
    pairs = []
    for run in sorted(SAMPLES.glob("tensorboard/*")):
        for ev in sorted(run.glob("run/events.out.tfevents.*")):
            pairs.append((ev, sorted(run.glob("ckpt_epoch*.pt"))[-1]))
    return pairs


def _rezip(
    data: bytes, edit: dict[str, bytes] | None = None, swap: tuple[str, str] | None = None
) -> tuple[bytes, tuple[int, int]]:
    """The same archive rewritten by zipfile with some members' contents replaced or two exchanged, and the
    byte range spanned by the changed members' data in the new archive."""
    src = zipfile.ZipFile(io.BytesIO(data))
    contents = {i.filename: src.read(i) for i in src.infolist()}
    if swap is not None:
        a, b = swap
        contents[a], contents[b] = contents[b], contents[a]
    contents.update(edit or {})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, contents[info.filename])
    changed = set(edit or ()) | set(swap or ())
    new = out.getvalue()
    spans = [
        (i.header_offset, i.header_offset + 30 + len(i.filename.encode()) + i.compress_size)
        for i in zipfile.ZipFile(io.BytesIO(new)).infolist()
        if i.filename in changed
    ]
    return new, (min(a for a, _ in spans), max(b for _, b in spans))


def _pickle_member(data: bytes) -> tuple[str, bytes] | None:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return None
    name = next(n for n in zf.namelist() if n.endswith("/data.pkl"))
    return name, zf.read(name)


_OPCODE_BYTES = [op.code.encode("latin-1") for op in pickletools.opcodes]


def _substitute_opcode(pkl: bytes, rng: random.Random) -> bytes:
    positions = [pos for _, _, pos in pickletools.genops(pkl)]
    at = rng.choice(positions)
    return pkl[:at] + rng.choice(_OPCODE_BYTES) + pkl[at + 1 :]


def _legacy_pickle_span(data: bytes) -> tuple[int, int]:
    """Byte span of the legacy file's main pickle (the 4th stream)."""
    pos = 0
    spans = []
    for _ in range(5):
        end = pos
        for _, _, p in pickletools.genops(io.BytesIO(data[pos:])):
            end = pos + p
        spans.append((pos, end + 1))
        pos = end + 1
    return spans[3]


def mutate_checkpoint(source: Path, rng: random.Random, index: int) -> Mutant:
    """One random mutation of a checkpoint file."""
    data = source.read_bytes()
    is_zip = data[:4] == b"PK\x03\x04"
    kinds = ["flip", "truncate", "insert", "swap", "opcode", "pickle-flip"]
    kind = rng.choice(kinds)
    name = f"{index:05d}-{kind}-{source.stem}"
    if kind == "flip":
        at = rng.randrange(len(data))
        n = rng.randint(1, 4)
        b = bytearray(data)
        for i in range(at, min(at + n, len(b))):
            b[i] ^= rng.randrange(1, 256)
        return Mutant(name, source, kind, bytes(b), (at, at + n))
    if kind == "truncate":
        at = rng.randrange(len(data))
        return Mutant(name, source, kind, data[:at], (at, len(data)))
    if kind == "insert":
        at = rng.randrange(len(data) + 1)
        return Mutant(
            name, source, kind, data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:], (at, len(data))
        )
    if not is_zip:  # legacy: swap/opcode/pickle-flip act on the main pickle bytes directly (no checksums)
        start, end = _legacy_pickle_span(data)
        pkl = data[start:end]
        if kind == "opcode":
            new = _substitute_opcode(pkl, rng)
        elif kind == "swap":  # swap two 8-byte windows of the pickle
            i, j = sorted(rng.sample(range(max(1, len(pkl) - 8)), 2))
            new = pkl[:i] + pkl[j : j + 8] + pkl[i + 8 : j] + pkl[i : i + 8] + pkl[j + 8 :]
        else:
            b = bytearray(pkl)
            b[rng.randrange(len(b))] ^= rng.randrange(1, 256)
            new = bytes(b)
        return Mutant(name, source, kind, data[:start] + new + data[end:], (start, end))
    member = _pickle_member(data)
    assert member is not None
    pkl_name, pkl = member
    if kind == "swap":
        names = [i.filename for i in zipfile.ZipFile(io.BytesIO(data)).infolist()]
        a, b = rng.sample(names, 2)
        return Mutant(name + f"-{Path(a).name}-{Path(b).name}", source, kind, *_rezip(data, swap=(a, b)))
    if kind == "opcode":
        new = _substitute_opcode(pkl, rng)
    else:
        b2 = bytearray(pkl)
        b2[rng.randrange(len(b2))] ^= rng.randrange(1, 256)
        new = bytes(b2)
    return Mutant(name, source, kind, *_rezip(data, edit={pkl_name: new}))


def _records(data: bytes) -> list[bytes]:
    out, i = [], 0
    while i + 12 <= len(data):
        (n,) = struct.unpack("<Q", data[i : i + 8])
        out.append(data[i + 12 : i + 12 + n])
        i += 12 + n + 4
    return out


def _frame(record: bytes) -> bytes:
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    head = struct.pack("<Q", len(record))
    return head + struct.pack("<I", masked_crc32c(head)) + record + struct.pack("<I", masked_crc32c(record))


def mutate_events(source: Path, ckpt: Path, rng: random.Random, index: int) -> Mutant:
    """One random mutation of an event file: raw bytes, or one record's content behind valid checksums."""
    data = source.read_bytes()
    kind = rng.choice(["flip", "truncate", "insert", "record-flip", "record-cut", "record-insert"])
    name = (
        f"events.out.tfevents.{index:05d}-{kind}-{source.parent.parent.name}"  # TensorBoard needs the prefix
    )
    if kind in ("flip", "truncate", "insert"):
        at = rng.randrange(len(data))
        if kind == "flip":
            b = bytearray(data)
            b[at] ^= rng.randrange(1, 256)
            new = bytes(b)
        elif kind == "truncate":
            new = data[:at]
        else:
            new = data[:at] + rng.randbytes(rng.randint(1, 8)) + data[at:]
        return Mutant(name, source, kind, new, (at, len(data)), log=ckpt)
    recs = _records(data)
    k = rng.randrange(len(recs))
    r = bytearray(recs[k])
    if kind == "record-flip" and r:
        r[rng.randrange(len(r))] ^= rng.randrange(1, 256)
    elif kind == "record-cut":
        r = r[: rng.randrange(len(r) + 1)]
    else:
        at = rng.randrange(len(r) + 1)
        r[at:at] = rng.randbytes(rng.randint(1, 6))
    recs[k] = bytes(r)
    return Mutant(name, source, kind, b"".join(_frame(x) for x in recs), (0, len(data)), log=ckpt)


def mutants(seed: int, n_checkpoints: int, n_events: int) -> list[Mutant]:
    """``n_checkpoints`` checkpoint and ``n_events`` event-file mutants, the same for the same seed."""
    rng = random.Random(seed)
    sources = checkpoint_sources()
    out = [mutate_checkpoint(sources[i % len(sources)], rng, i) for i in range(n_checkpoints)]
    pairs = event_sources()
    out += [mutate_events(*pairs[i % len(pairs)], rng, n_checkpoints + i) for i in range(n_events)]
    return out
