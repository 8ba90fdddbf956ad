"""A seeded mutator over the shipped loss logs: byte flips, truncations, insertions, deletions, line swaps and
duplicates, digit substitutions, fields removed or added.

Sources: every CSV in ``sample_checkpoints`` (the samples, each resume scenario's ``log.csv`` with its
checkpoint, Lightning's ``metrics.csv``), and a JSON Lines and a printed log written here from the samples.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_checkpoints"

# what an insertion puts in: the separators, quotes and brackets the readers split on, and numbers a log
# should never hold (digit separators, non-ASCII digits, overflow), besides random bytes
SNIPPETS = [
    b",",
    b"\n",
    b"\r",
    b"\r\n",
    b'"',
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b"_",
    b"e999",
    b"nan",
    b"inf",
    b"-",
    b".",
    b"\t",
    b" ",
    b"\x00",
    "\u0661".encode(),
    "\uff11".encode(),
    b"0" * 40,
    b"9" * 400,
    b"1_000",
    b'"val_loss": 1',
    b",,,,",
    b"\xff",
    b"epoch",
]
DIGITS = [b"_", "\u0663".encode(), "\uff13".encode(), b"e", b"."] + [bytes([c]) for c in b"0123456789"]


@dataclass
class LogMutant:
    """One mutated log: its bytes, how it was made, and the checkpoint of its run (resume scenarios)."""

    name: str
    source: Path
    kind: str
    data: bytes
    ckpt: Path | None = None


def _jsonl_from(csv_path: Path) -> bytes:
    """A JSON Lines log of the same rows (numbers as JSON numbers written by json.dumps)."""
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return "".join(
        json.dumps({k: (float(v) if v else None) for k, v in r.items()}) + "\n" for r in rows
    ).encode()


def _printed_from(csv_path: Path) -> bytes:
    """A printed log of the same run, the way a training script would print it."""
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = ["Training...\n"]
    for r in rows:
        out.append(
            f"Epoch {r['epoch']}/{len(rows)} - loss: {float(r['train_loss']):.4f} - val_loss: "
            f"{float(r['val_loss']):.4f} - lr: {r['lr']}\n"
        )
        if int(r["epoch"]) % 7 == 0:
            out.append("Saving checkpoint...\n")
    return "".join(out).encode()


def sources(work: Path) -> list[tuple[Path, Path | None]]:
    """(log, its checkpoint or None) for every shipped log, and the JSON Lines and printed logs made here."""
    found: list[tuple[Path, Path | None]] = [(p, None) for p in sorted(SAMPLES.glob("*.csv"))]
    found += [(p, p.parent / "ckpt.pt") for p in sorted(SAMPLES.glob("resumes/*/log.csv"))]
    found += [(p, None) for p in sorted(SAMPLES.glob("lightning/**/metrics.csv"))]
    for name, make in (("seed000.jsonl", _jsonl_from), ("seed000.log", _printed_from)):
        path = work / name
        path.write_bytes(make(SAMPLES / "seed000.csv"))
        found.append((path, None))
    jsonl = work / "two_groups.jsonl"
    jsonl.write_bytes(_jsonl_from(SAMPLES / "two_groups.csv"))
    found.append((jsonl, None))
    return found


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random mutation of a log's bytes."""
    kind = rng.choice(
        ["flip", "truncate", "insert", "delete", "swap-lines", "duplicate-line", "digit", "field"]
    )
    if kind == "flip":
        b = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] ^= rng.randrange(1, 256)
        return kind, bytes(b)
    if kind == "truncate":
        return kind, data[: rng.randrange(len(data))]
    if kind == "insert":
        at = rng.randrange(len(data) + 1)
        snippet = rng.choice(SNIPPETS) if rng.random() < 0.8 else rng.randbytes(rng.randint(1, 8))
        return kind, data[:at] + snippet + data[at:]
    if kind == "delete":
        at = rng.randrange(len(data))
        return kind, data[:at] + data[at + rng.randint(1, 20) :]
    lines = data.split(b"\n")
    if kind in ("swap-lines", "duplicate-line") and len(lines) > 2:
        i, j = rng.sample(range(len(lines)), 2)
        if kind == "swap-lines":
            lines[i], lines[j] = lines[j], lines[i]
        else:
            lines.insert(j, lines[i])
        return kind, b"\n".join(lines)
    if kind == "digit":
        spots = [i for i, c in enumerate(data) if 48 <= c <= 57]
        if spots:
            at = rng.choice(spots)
            return kind, data[:at] + rng.choice(DIGITS) + data[at + 1 :]
    k = rng.randrange(len(lines))  # "field": a field removed from, or added to, one line
    fields = lines[k].split(b",")
    if len(fields) > 1 and rng.random() < 0.5:
        del fields[rng.randrange(len(fields))]
    else:
        fields.insert(rng.randrange(len(fields) + 1), rng.choice([b"", b"1", b"0.5", b"x"]))
    lines[k] = b",".join(fields)
    return "field", b"\n".join(lines)


def mutants(seed: int, n: int, work: Path) -> list[LogMutant]:
    """``n`` mutants of the shipped logs, the same for the same seed."""
    rng = random.Random(seed)
    pool = sources(work)
    out = []
    for i in range(n):
        source, ckpt = pool[i % len(pool)]
        kind, data = mutate(source.read_bytes(), rng)
        out.append(LogMutant(f"{i:05d}-{kind}-{source.parent.name}-{source.name}", source, kind, data, ckpt))
    return out
