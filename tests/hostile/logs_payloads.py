"""Hostile and broken loss logs, built from code (issue 14): what each must give is recorded with it.

``expect`` is a regex the one-line error must match, or None for a log that must be read (``anomalies`` then
lists kinds it must report). Big files are sparse where only their size matters.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_checkpoints"
MB = 1 << 20


@dataclass
class LogCase:
    """One hostile log: how to run it and what it must give."""

    expect: str | None  # regex of the error, or None: it reads
    cli: bool = True  # also run ``plateau-trace LOG --format json``
    full: bool = True  # also trace it and render grid and JSON
    anomalies: tuple[str, ...] = ()  # kinds the log must report
    big: bool = False  # run in a driver of its own, so its peak memory is its own
    writer: object = field(default=None, repr=False)


def _rows(n: int) -> str:
    return "".join(f"{i},{0.5 + (i % 7) / 100!r},0.1\n" for i in range(n))


def _text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _sparse(path: Path, head: bytes, size: int) -> None:
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)


def cases() -> dict[str, tuple[LogCase, object]]:
    """name -> (case, function writing it to a path)."""
    digits = "epoch,val_loss,lr\n0,0.5,0.1\n1,{},0.1\n"
    out: dict[str, tuple[LogCase, object]] = {
        # recursion and Python's integer limits
        "json-deep-list": (
            LogCase(r"line 1 is nested too deeply"),
            lambda p: _text(p, '{"val_loss": ' + "[" * 100_000 + "]" * 100_000 + "}\n"),
        ),
        "json-deep-object": (
            LogCase(r"line 1 is nested too deeply"),
            lambda p: _text(p, '{"val_loss": ' + '{"a": ' * 60_000 + "1" + "}" * 60_001 + "\n"),
        ),
        "json-5000-digit-int": (
            LogCase(r"line 1 holds an integer too long to read"),
            lambda p: _text(p, '{"epoch": ' + "7" * 5000 + ', "val_loss": 0.5}\n'),
        ),
        "json-4000-digit-metric": (
            LogCase(r"an integer of 13,2\d\d bits is not a number \(beyond a float's range\)"),
            lambda p: _text(p, '{"epoch": 1, "val_loss": ' + "9" * 4000 + "}\n"),
        ),
        "csv-5000-digit-epoch": (
            LogCase(
                r"column 'epoch': '7{80}'\.\.\. \(5,000 characters\) is not a number "
                r"\(beyond a float's range\)"
            ),
            lambda p: _text(p, "epoch,val_loss\n" + "7" * 5000 + ",0.5\n"),
        ),
        "csv-1e999": (
            LogCase(r"'1e999' is not a number \(beyond a float's range\)"),
            lambda p: _text(p, digits.format("1e999")),
        ),
        "json-1e999": (
            LogCase(r"'1e999' is not a number \(beyond a float's range\)"),
            lambda p: _text(p, '{"epoch": 0, "val_loss": 1e999}\n'),
        ),
        # numbers float() reads and a log never writes
        "csv-underscore": (
            LogCase(r"'1_000' is not a number \(a '_' digit separator"),
            lambda p: _text(p, digits.format("1_000")),
        ),
        "csv-arabic-indic": (
            LogCase(r"is not a number \(written with non-ASCII characters"),
            lambda p: _text(p, digits.format("\u0660.\u0664\u0665")),
        ),
        "csv-full-width": (
            LogCase(r"is not a number \(written with non-ASCII characters"),
            lambda p: _text(p, digits.format("\uff10.\uff14\uff15")),
        ),
        "json-string-underscore": (
            LogCase(r"'1_000' is not a number"),
            lambda p: _text(p, '{"epoch": 0, "val_loss": "1_000"}\n'),
        ),
        "printed-underscore": (
            LogCase(r"'1_000' is not a number"),
            lambda p: _text(p, "epoch 1: val_loss=0.5\nepoch 2: val_loss=1_000\n"),
        ),
        "printed-arabic-indic": (
            LogCase(r"is not a number \(written with non-ASCII characters"),
            lambda p: _text(p, "epoch 1: val_loss=0.5\nepoch 2: val_loss=\u0660.\u0664\n"),
        ),
        # names that read alike, rows cut short, keys named twice
        "csv-lr-and-LR": (
            LogCase(r"columns 'lr' and 'LR' both read as the lr of param group 0"),
            lambda p: _text(p, "epoch,val_loss,lr,LR\n0,0.5,0.1,0.2\n"),
        ),
        "csv-epoch-and-Epoch": (
            LogCase(r"columns epoch, Epoch all read as the epoch column"),
            lambda p: _text(p, "epoch,Epoch,val_loss\n0,0,0.5\n"),
        ),
        "csv-truncated-last-row": (
            LogCase(None, anomalies=("truncated-row",)),
            lambda p: _text(p, "epoch,val_loss,lr\n" + _rows(20) + "20,0.4"),
        ),
        "csv-short-rows": (
            LogCase(None, anomalies=("short-rows",)),
            lambda p: _text(p, "epoch,val_loss,lr\n0,0.5\n" + _rows(20)[7:]),
        ),
        "json-duplicate-key-same": (
            LogCase(None, anomalies=("duplicate-keys",)),
            lambda p: _text(
                p,
                "".join(
                    json.dumps({"epoch": i, "val_loss": 0.5}).replace("}", ', "val_loss": 0.5}') + "\n"
                    for i in range(5)
                ),
            ),
        ),
        "json-duplicate-key-differs": (
            LogCase(r"names 'val_loss' twice, with different values"),
            lambda p: _text(p, '{"epoch": 0, "val_loss": 0.5, "val_loss": 0.6}\n'),
        ),
        # sizes: refused by a named limit, fast
        "csv-200MB-sparse": (
            LogCase(r"209,715,200 bytes, over the 128 MiB limit"),
            lambda p: _sparse(p, b"epoch,val_loss\n", 200 * MB),
        ),
        "jsonl-200MB-sparse": (
            LogCase(r"209,715,200 bytes, over the 128 MiB limit"),
            lambda p: _sparse(p, b'{"val_loss": 1}\n', 200 * MB),
        ),
        "single-line-100MB": (
            LogCase(r"line 2 is longer than 1 MiB", big=True),
            lambda p: _bytes(p, b"epoch,val_loss\n0," + b"5" * (100 * MB) + b"\n"),
        ),
        "csv-250000-columns": (
            LogCase(r"line 1 is longer than 1 MiB|250,000 columns"),
            lambda p: _text(p, ",".join(f"c{i}" for i in range(250_000)) + "\n"),
        ),
        "csv-250000-short-names": (
            LogCase(r"250,001 columns \(the limit is 10,000\)"),
            lambda p: _text(p, ",".join(["a"] * 250_000) + ",val_loss\n1\n"),
        ),
        "csv-3M-lines": (
            LogCase(r"3,000,001 lines, over the 2,000,000 lines a loss log may have"),
            lambda p: _bytes(p, b"val_loss\n" + b"1\n" * 3_000_000),
        ),
        "jsonl-2M-lines": (
            LogCase(r"lines, over the 1,250,000 lines a JSON Lines log may have", big=True),
            lambda p: _bytes(p, b'{"val_loss": 1}\n' * 2_000_000),
        ),
        "jsonl-20000-keys": (
            LogCase(r"more than 10,000 columns"),
            lambda p: _text(
                p, "".join(json.dumps({"val_loss": 1, f"k{i}": 1}) + "\n" for i in range(20_000))
            ),
        ),
        "csv-10KB-cell": (
            LogCase(r"'x{80}'\.\.\. \(10,000 characters\) is not a number"),
            lambda p: _text(p, "epoch,val_loss\n0," + "x" * 10_000 + "\n"),
        ),
        "csv-10KB-names": (
            LogCase(r"no validation-loss column; columns are: .* and 25 more"),
            lambda p: _text(p, ",".join(f"n{i}" + "y" * 10_000 for i in range(30)) + "\n"),
        ),
        "json-900KB-string": (
            LogCase(r"\.\.\. \(900,000 characters\) is not a number"),
            lambda p: _text(p, json.dumps({"epoch": 0, "val_loss": "z" * 900_000}) + "\n"),
        ),
        "printed-100000-keys": (
            LogCase(r"more than 10,000 columns"),
            lambda p: _text(p, "epoch 1: " + " ".join(f"k{i}=1" for i in range(100_000)) + " val_loss=0.5\n"),
        ),
        # within the limits: read, bounded (a million rows is issue 10's long log)
        "csv-1M-rows": (
            LogCase(None, cli=False, full=False, big=True),
            lambda p: _text(
                p,
                "epoch,val_loss,lr\n"
                + "".join(
                    f"{i},{(i * 7919 % 10007) / 10007!r},{0.1 * 0.5 ** (i // 100_000)!r}\n"
                    for i in range(1_000_000)
                ),
            ),
        ),
        "jsonl-300k-rows": (
            LogCase(None, cli=False, full=False, big=True),
            lambda p: _text(
                p,
                "".join(
                    json.dumps({"epoch": i, "val_loss": (i % 97) / 97, "lr": 0.1}) + "\n"
                    for i in range(300_000)
                ),
            ),
        ),
        "printed-200k-lines": (
            LogCase(None, cli=False, full=False, big=True),
            lambda p: _text(
                p,
                "".join(
                    f"Epoch {i}/200000 - loss: {(i % 89) / 89:.4f} - val_loss: "
                    f"{(i % 97) / 97:.4f} - lr: 0.001\n"
                    for i in range(200_000)
                ),
            ),
        ),
        "csv-5000-columns": (
            LogCase(None, cli=False, full=False, big=True),
            lambda p: _text(
                p,
                ",".join(["epoch", "val_loss", *(f"c{i}" for i in range(4998))])
                + "\n"
                + "".join(",".join([str(r), "0.5", *["1.5"] * 4998]) + "\n" for r in range(100)),
            ),
        ),
        # encodings, line ends, odd bytes
        "not-utf8": (LogCase(r"not a UTF-8 text file"), lambda p: _bytes(p, b"epoch,val_loss\n0,\xff\xfe\n")),
        "nul-bytes": (
            LogCase(r"is not a number|no validation-loss column"),
            lambda p: _bytes(p, b"epoch,val_loss\n0,0.5\x00\n1,\x00\x00\n"),
        ),
        "bom-crlf": (LogCase(None), lambda p: _bytes(p, b"\xef\xbb\xbfepoch,val_loss\r\n0,0.5\r\n1,0.4\r\n")),
        "cr-only": (LogCase(None), lambda p: _bytes(p, b"epoch,val_loss\r0,0.5\r1,0.4\r")),
        "quoted-newlines": (
            LogCase(None),
            lambda p: _text(p, 'epoch,"val_loss","note"\n0,0.5,"a\nb"\n1,"0.4",x\n'),
        ),
        "quote-never-closed": (
            LogCase(r"not a well-formed CSV file"),
            lambda p: _text(p, 'epoch,val_loss\n0,"0.5\n1,0.4\n'),
        ),
        "binary-garbage": (LogCase(r".+"), lambda p: _bytes(p, bytes(range(256)) * 50)),
        "empty": (LogCase(r"the file is empty"), lambda p: _bytes(p, b"")),
        "only-whitespace": (LogCase(r"the file is empty"), lambda p: _bytes(p, b" \n\t\r\n  \n")),
        "header-only": (LogCase(r"has no values"), lambda p: _text(p, "epoch,val_loss\n")),
        "all-nan": (
            LogCase(None, anomalies=("non-finite-metric",)),
            lambda p: _text(p, "epoch,val_loss\n0,nan\n1,NaN\n2,-inf\n"),
        ),
        "tsv-ragged": (
            LogCase(r"not a well-formed CSV file \(Expected 2 fields in line 3, saw 4\)"),
            lambda p: _text(p, "epoch\tval_loss\n0\t0.5\n1\t0.4\t3\t4\n"),
        ),
    }
    return out


def build_all(files: Path) -> dict[str, LogCase]:
    """Write every case into ``files``, and the special files: a FIFO, /dev/zero, a directory, a loop."""
    built = {}
    for name, (case, writer) in cases().items():
        writer(files / name)  # type: ignore[operator]
        built[name] = case
    if hasattr(os, "mkfifo"):
        os.mkfifo(files / "fifo")
        built["fifo"] = LogCase(r"not a regular file \(a FIFO\); a loss log is read only from a file")
    if os.path.exists("/dev/zero"):
        os.symlink("/dev/zero", files / "dev-zero")
        built["dev-zero"] = LogCase(r"not a regular file \(a character device\)")
    (files / "a-directory").mkdir()
    built["a-directory"] = LogCase(r"Is a directory|a directory with neither", full=False)
    os.symlink(files / "loop-b", files / "loop-a")
    os.symlink(files / "loop-a", files / "loop-b")
    built["loop-a"] = LogCase(r"cannot read the file \(Too many levels of symbolic links\)|no such file")
    return built
