"""Checkpoints and logs at URLs (``plateau_forensics/remote.py``): a local S3 emulator (moto's server mode), a
threaded ``http.server`` with Range support, and fsspec's ``memory://``.

What a URL must give is what the same file gives read locally: the same output, the same limits, the same
refusals, and only the pickle's bytes fetched (never the weights). Failures are one ``Error:`` line, exit 1
for a bad URL and exit 4 when the store cannot be asked.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import plateau_forensics as pf
from plateau_forensics import remote
from plateau_forensics.cli import main
from plateau_forensics.errors import CheckpointError, RemoteError, RemoteUnavailable

_HOSTILE_DIR = str(Path(__file__).parent / "hostile")
if _HOSTILE_DIR not in sys.path:
    sys.path.append(_HOSTILE_DIR)  # appended, as tests/hostile/conftest.py does: no name there shadows tests/
import payloads  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
S = "sample_checkpoints"
BUCKET = "bucket"  # a bucket called "bucket": its name must never decide what an error says

#: (checkpoint, log) pairs read both ways: torch.save zips, the legacy format, Lightning, timm.
SAMPLES = [
    (f"{S}/seed000.pt", f"{S}/seed000.csv"),
    (f"{S}/clean.pt", f"{S}/clean.csv"),
    (f"{S}/two_groups.pt", f"{S}/two_groups.csv"),
    (f"{S}/legacy_format.pt", f"{S}/clean.csv"),
    (f"{S}/lightning/plain/csv_logs/version_0/checkpoints/last.ckpt", f"{S}/lightning/plain/metrics.csv"),
    (f"{S}/timm/defaults/last.pth.tar", f"{S}/timm/defaults/summary.csv"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def url_for(prefix: str, local: str) -> str:
    """A URL as long as ``local`` (``prefix`` + the path's tail), so that wrapped text wraps alike."""
    assert len(local) > len(prefix) + 3
    return prefix + local[len(prefix):]


def one_error_line(r: object) -> str:
    """The CLI's stderr, asserted to be a single ``Error:`` line without a traceback."""
    err = r.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in err, err
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)  # type: ignore[attr-defined]
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    return str(lines[0])


# -- servers -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """A moto S3 server on a free loopback port with a bucket, and the environment that points s3fs at it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        mp.delenv("AWS_PROFILE", raising=False)
        mp.delenv("AWS_SESSION_TOKEN", raising=False)
        import boto3

        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        for ckpt, log in SAMPLES:
            for local in (ckpt, log):
                client.put_object(Bucket=BUCKET, Key=url_for(f"s3://{BUCKET}/", local)[len(f"s3://{BUCKET}/"):],
                                  Body=(ROOT / local).read_bytes())
        client.put_object(Bucket=BUCKET, Key="run/dir/ckpt.pt", Body=(ROOT / SAMPLES[0][0]).read_bytes())
        yield {**env, "client": client}  # type: ignore[dict-item]
    server.stop()


def s3_put(s3: dict[str, object], key: str, body: bytes) -> str:
    s3["client"].put_object(Bucket=BUCKET, Key=key, Body=body)  # type: ignore[attr-defined]
    return f"s3://{BUCKET}/{key}"


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` with HEAD and single-range GET (206), or, with ``server.ranges`` off, the
    whole body (200) as a server that ignores Range does."""

    def log_message(self, *args: object) -> None:
        pass

    def _body(self) -> bytes | None:
        data = self.server.files.get(self.path)  # type: ignore[attr-defined]
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
        return data  # type: ignore[no-any-return]

    def do_HEAD(self) -> None:
        data = self._body()
        if data is not None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

    def do_GET(self) -> None:
        data = self._body()
        if data is None:
            return
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if m and self.server.ranges:  # type: ignore[attr-defined]
            a = int(m.group(1))
            b = min(int(m.group(2)) + 1 if m.group(2) else len(data), len(data))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {a}-{b - 1}/{len(data)}")
            part = data[a:b]
        else:
            self.send_response(200)
            part = data
        self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        self.wfile.write(part)


@pytest.fixture(scope="module")
def http_server() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    server.files = {}  # type: ignore[attr-defined]
    server.ranges = True  # type: ignore[attr-defined]
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def http_put(server: http.server.ThreadingHTTPServer, path: str, body: bytes) -> str:
    server.files[path] = body  # type: ignore[attr-defined]
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung server); closed after the test."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(sock.getsockname()[1])
    stop.set()
    thread.join(2)
    for c in held:
        c.close()
    sock.close()


def memory_put(path: str, body: bytes) -> str:
    import fsspec

    fsspec.filesystem("memory").pipe(path, body)
    return f"memory://{path.lstrip('/')}"


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    remote.forget()  # no object (size, cache, counters) carried from one test's server to the next
    yield
    remote.forget()


@pytest.fixture(name="runner")
def _runner() -> CliRunner:
    return CliRunner()


# -- the same output as the local file -----------------------------------------------------------------------
class TestSameAsLocal:
    """A checkpoint and its log at URLs give byte for byte the output of the same files read locally."""

    @pytest.mark.parametrize(("ckpt", "log"), SAMPLES, ids=[Path(c).name for c, _ in SAMPLES])
    def test_cli_s3(self, runner: CliRunner, in_root: Path, s3: dict[str, str], ckpt: str, log: str) -> None:
        """``plateau-trace s3://.../ckpt s3://.../log``: the grid and the JSON equal the local run's."""
        uc, ul = url_for(f"s3://{BUCKET}/", ckpt), url_for(f"s3://{BUCKET}/", log)
        for fmt in ("grid", "json"):
            local = runner.invoke(main, [ckpt, log, "--width", "100", "--format", fmt])
            assert local.exit_code == 0, local.stderr
            got = runner.invoke(main, [uc, ul, "--width", "100", "--format", fmt])
            assert got.exit_code == 0, got.stderr
            assert got.stdout.replace(uc, ckpt).replace(ul, log) == local.stdout
            assert got.stderr == local.stderr

    def test_mixed_local_and_url(self, runner: CliRunner, in_root: Path, s3: dict[str, str]) -> None:
        """A URL checkpoint with a local log, and a local checkpoint with a URL log."""
        ckpt, log = SAMPLES[1]
        uc, ul = url_for(f"s3://{BUCKET}/", ckpt), url_for(f"s3://{BUCKET}/", log)
        local = runner.invoke(main, [ckpt, log, "--width", "100"]).stdout
        assert runner.invoke(main, [uc, log, "--width", "100"]).stdout.replace(uc, ckpt) == local
        assert runner.invoke(main, [ckpt, ul, "--width", "100"]).stdout.replace(ul, log) == local

    def test_log_alone_at_url(self, runner: CliRunner, in_root: Path, s3: dict[str, str]) -> None:
        """A log alone at a URL (teaching mode) is told from a checkpoint by its first bytes, read alike."""
        log = SAMPLES[0][1]
        ul = url_for(f"s3://{BUCKET}/", log)
        args = ["--patience", "2", "--factor", "0.8", "--cooldown", "3", "--lr", "1.5e-3", "--width", "100"]
        local = runner.invoke(main, [log, *args])
        assert local.exit_code == 0, local.stderr
        got = runner.invoke(main, [ul, *args])
        assert got.exit_code == 0, got.stderr
        assert got.stdout.replace(ul, log) == local.stdout

    def test_json_lines_log(self, runner: CliRunner, in_root: Path, tmp_path: Path,
                            s3: dict[str, str]) -> None:
        """A JSON Lines log at a URL reads as the same file on disk."""
        import csv

        ckpt, log = SAMPLES[0]
        with open(ROOT / log) as fh:
            rows = [{k: int(v) if k == "epoch" else float(v) for k, v in r.items()}
                    for r in csv.DictReader(fh)]
        body = "".join(json.dumps(r) + "\n" for r in rows).encode()
        local = tmp_path / "log.jsonl"
        local.write_bytes(body)
        url = s3_put(s3, "jsonl/log.jsonl", body)
        a = runner.invoke(main, [ckpt, str(local), "--format", "json"])
        b = runner.invoke(main, [ckpt, url, "--format", "json"])
        assert a.exit_code == b.exit_code == 0, b.stderr
        assert b.stdout.replace(url, str(local)) == a.stdout

    @pytest.mark.parametrize(("ckpt", "log"), [SAMPLES[0], SAMPLES[3], SAMPLES[4]],
                             ids=["zip", "legacy", "lightning"])
    def test_api(self, in_root: Path, s3: dict[str, str], ckpt: str, log: str) -> None:
        """``pf.load_checkpoint`` and ``pf.trace`` on URLs: the same state, key path and report."""
        from plateau_forensics import report

        uc, ul = url_for(f"s3://{BUCKET}/", ckpt), url_for(f"s3://{BUCKET}/", log)
        a, b = pf.load_checkpoint(ckpt), pf.load_checkpoint(uc)
        assert (b.state, b.config, b.key_path) == (a.state, a.config, a.key_path)
        ta, tb = pf.trace(ckpt, log), pf.trace(uc, ul)
        assert report.render(tb, "json").replace(uc, ckpt).replace(ul, log) == report.render(ta, "json")

    def test_memory_and_http(self, runner: CliRunner, in_root: Path,
                             http_server: http.server.ThreadingHTTPServer) -> None:
        """``memory://`` and ``http://`` (a server answering Range requests) read like the file."""
        for ckpt, log in (SAMPLES[0], SAMPLES[3]):
            local = runner.invoke(main, [ckpt, log, "--format", "json"]).stdout
            for put in (lambda p, b: memory_put("/" + p, b), lambda p, b: http_put(http_server, "/" + p, b)):
                uc, ul = put(ckpt, (ROOT / ckpt).read_bytes()), put(log, (ROOT / log).read_bytes())
                got = runner.invoke(main, [uc, ul, "--format", "json"])
                assert got.exit_code == 0, got.stderr
                assert got.stdout.replace(uc, ckpt).replace(ul, log) == local


# -- bytes fetched -------------------------------------------------------------------------------------------
def _storage_spans(path: Path) -> list[tuple[int, int]]:
    """Where each storage's bytes lie in a torch.save zip, read with zipfile and struct (not our reader)."""
    spans = []
    with open(path, "rb") as fh, zipfile.ZipFile(fh) as zf:
        for info in zf.infolist():
            if "/data/" not in info.filename or info.filename.endswith("/"):
                continue
            fh.seek(info.header_offset)
            n_name, n_extra = struct.unpack("<26xHH", fh.read(30))
            start = info.header_offset + 30 + n_name + n_extra
            spans.append((start, start + info.compress_size))
    return spans


@pytest.fixture(scope="module")
def big_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """~50 MB of weights (3 linear layers of 2048x2048, SGD) and a real ReduceLROnPlateau stepped over a
    scripted val loss, saved with torch.save after the last step; its log beside it."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(2048, 2048) for _ in range(3)])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=2, factor=0.5)
    losses = [1.0, 0.9, 0.85, 0.86, 0.87, 0.88, 0.84, 0.85, 0.85, 0.86, 0.83, 0.84]
    rows = ["epoch,val_loss,lr"]
    for epoch, loss in enumerate(losses, 1):
        rows.append(f"{epoch},{loss!r},{opt.param_groups[0]['lr']!r}")
        sched.step(loss)
    d = tmp_path_factory.mktemp("big")
    ckpt, log = d / "big.pt", d / "big.csv"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "epoch": len(losses)}, ckpt)
    log.write_text("\n".join(rows) + "\n")
    return ckpt, log


class TestBytesFetched:
    """Only the pickle and the zip's bookkeeping are fetched: never a weight."""

    def test_big_checkpoint_over_s3(self, s3: dict[str, str], big_checkpoint: tuple[Path, Path]) -> None:
        """Under 1% of a ~50 MB checkpoint is fetched, no storage byte in it, the same ranges every time."""
        ckpt, log = big_checkpoint
        size = ckpt.stat().st_size
        assert size > 48 << 20
        url = s3_put(s3, "big/ckpt.pt", ckpt.read_bytes())
        local = pf.trace(str(ckpt), str(log))
        got = pf.trace(url, str(log))
        assert got.checkpoint.state == local.checkpoint.state
        assert got.checkpoint.config == local.checkpoint.config
        first = remote.stats(url)
        assert first.size == size
        assert first.bytes_fetched < size / 100, first
        spans = _storage_spans(ckpt)
        assert len(spans) == 6
        weights = [(a, b) for a, b in spans if b - a > remote.GAP_BYTES]
        for a, b in first.ranges:
            assert not any(a < wb and wa < b for wa, wb in weights), (a, b)
        remote.forget()
        mem = memory_put("/big/ckpt.pt", ckpt.read_bytes())
        pf.load_checkpoint(mem)
        again = remote.stats(mem)  # counted where the bytes arrive: the same on any filesystem, every time
        assert (again.requests, again.bytes_fetched, again.ranges) == (first.requests, first.bytes_fetched,
                                                                      first.ranges)
        import fsspec

        fsspec.filesystem("memory").rm("/big/ckpt.pt")

    @pytest.mark.parametrize("cache", [16 << 20, 3000], ids=["default-cache", "pickle-over-half-the-cache"])
    def test_pickle_fetched_once(self, in_root: Path, monkeypatch: pytest.MonkeyPatch, cache: int) -> None:
        """The pickle's bytes arrive once, whether the cache keeps it (prefetched) or not (read directly)."""
        monkeypatch.setattr(remote, "SMALL_OBJECT_BYTES", 0)
        monkeypatch.setattr(remote, "CACHE_BYTES", cache)
        path = ROOT / SAMPLES[0][0]
        with open(path, "rb") as fh, zipfile.ZipFile(fh) as zf:
            info = next(i for i in zf.infolist() if i.filename.endswith("/data.pkl"))
            fh.seek(info.header_offset)
            n_name, n_extra = struct.unpack("<26xHH", fh.read(30))
        a = info.header_offset + 30 + n_name + n_extra
        b = a + info.compress_size
        assert (b - a > cache // 2) == (cache == 3000)
        url = memory_put("/once/ck.pt", path.read_bytes())
        assert pf.load_checkpoint(url).state == pf.load_checkpoint(str(path)).state
        covered = [max(0, min(b, rb) - max(a, ra)) for ra, rb in remote.stats(url).ranges]
        assert sum(covered) == b - a

    def test_small_object_in_one_request(self, in_root: Path) -> None:
        """A checkpoint of a few KB is fetched whole by its first read: one request."""
        ckpt = SAMPLES[0][0]
        url = memory_put("/small/ck.pt", (ROOT / ckpt).read_bytes())
        pf.load_checkpoint(url)
        st_ = remote.stats(url)
        assert (st_.requests, st_.bytes_fetched) == (1, (ROOT / ckpt).stat().st_size)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=3000),
       reads=st.lists(st.tuples(st.integers(0, 3100), st.integers(-1, 1200)), min_size=1, max_size=25),
       batches=st.lists(st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 300)), max_size=6),
                        max_size=3))
def test_range_file_reads_like_a_file(monkeypatch: pytest.MonkeyPatch, data: bytes,
                                      reads: list[tuple[int, int]],
                                      batches: list[list[tuple[int, int]]]) -> None:
    """Any seek/read sequence, with prefetched batches and a tiny evicting cache, returns the file's bytes."""
    monkeypatch.setattr(remote, "CACHE_BYTES", 512)
    monkeypatch.setattr(remote, "GAP_BYTES", 40)
    monkeypatch.setattr(remote, "SMALL_OBJECT_BYTES", 0)
    remote.forget()
    url = memory_put("/prop/blob.bin", data)
    fh = remote.open_url(url)
    for i, (pos, n) in enumerate(reads):
        if i < len(batches):
            fh._obj.fetch((a, a + k) for a, k in batches[i])
        fh.seek(pos)
        assert fh.read(n) == (data[pos:] if n < 0 else data[pos : pos + n])
        assert fh.tell() == min(pos + (len(data) if n < 0 else n), max(len(data), pos))
        segs = sorted((s, s + len(d)) for s, d in fh._obj.cache.data.items())
        assert all(b <= c for (_, b), (c, _) in zip(segs, segs[1:], strict=False))  # never overlapping
        assert all(fh._obj.cache.data[s] == data[s : s + len(fh._obj.cache.data[s])] for s, _ in segs)
    remote.forget()


# -- errors --------------------------------------------------------------------------------------------------
class TestErrors:
    """One ``Error:`` line, exit 1 for a URL that names nothing readable, 4 when the store cannot be asked."""

    @pytest.mark.parametrize(("url", "said"), [
        ("s3://no-such-bucket-here/run/ckpt.pt", "no such bucket"),
        (f"s3://{BUCKET}/run/missing.pt", "no such object"),
        (f"s3://{BUCKET}/run/dir", "not a file"),
        (f"s3://{BUCKET}/run/dir/", "not a file"),
        ("nosuchscheme://host/ckpt.pt", "fsspec has no filesystem for nosuchscheme://"),
    ], ids=["bucket", "object", "prefix", "prefix-slash", "scheme"])
    def test_exit_1(self, runner: CliRunner, in_root: Path, s3: dict[str, str], url: str, said: str) -> None:
        """No such bucket or object, a directory-like prefix, a scheme nobody serves: exit 1, named."""
        for args in ([url, SAMPLES[0][1]], [url]):
            r = runner.invoke(main, args)
            line = one_error_line(r)
            assert r.exit_code == 1, line
            assert line == f"Error: {url}: {said}" or line.startswith(f"Error: {url}: {said} "), line

    def test_log_url_missing(self, runner: CliRunner, in_root: Path, s3: dict[str, str]) -> None:
        """A checkpoint that exists with a log that does not: exit 1 naming the log."""
        ul = f"s3://{BUCKET}/run/missing.csv"
        r = runner.invoke(main, [url_for(f"s3://{BUCKET}/", SAMPLES[0][0]), ul])
        assert (r.exit_code, one_error_line(r)) == (1, f"Error: {ul}: no such object")

    def test_loader_torch_refused(self, runner: CliRunner, in_root: Path) -> None:
        """``--loader torch`` at a URL is a usage error (exit 2): torch.load would fetch every weight."""
        url = memory_put("/loader/ck.pt", (ROOT / SAMPLES[0][0]).read_bytes())
        r = runner.invoke(main, [url, SAMPLES[0][1], "--loader", "torch"])
        assert r.exit_code == 2, r.stderr
        assert "Traceback" not in r.stderr
        assert r.stderr.splitlines()[-1].startswith("Error: --loader torch reads local files only")
        assert remote.stats(url).bytes_fetched <= 4  # at most the first bytes that told it is a checkpoint

    def test_api_types(self, s3: dict[str, str]) -> None:
        """The library raises the typed errors; RemoteUnavailable is a RemoteError."""
        with pytest.raises(RemoteError, match="no such object") as info:
            pf.load_checkpoint(f"s3://{BUCKET}/run/missing.pt")
        assert not isinstance(info.value, RemoteUnavailable)
        assert issubclass(RemoteUnavailable, RemoteError)

    def test_connection_refused(self, runner: CliRunner, in_root: Path, s3: dict[str, str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
        """An S3 endpoint or http server nobody listens on: exit 4, "cannot reach"."""
        port = free_port()
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("PF_REMOTE_TIMEOUT", "2")
        for url in (f"s3://{BUCKET}/run/ckpt.pt", f"http://127.0.0.1:{port}/ckpt.pt"):
            r = runner.invoke(main, [url, SAMPLES[0][1]])
            line = one_error_line(r)
            assert r.exit_code == 4, line
            assert line.startswith(f"Error: {url}: cannot reach the object store"), line

    @pytest.mark.parametrize("scheme", ["s3", "http"])
    def test_server_never_answers(self, runner: CliRunner, in_root: Path, s3: dict[str, str],
                                  monkeypatch: pytest.MonkeyPatch, silent_server: int, scheme: str) -> None:
        """A server that accepts and never answers: exit 4 within a few PF_REMOTE_TIMEOUT."""
        monkeypatch.setenv("PF_REMOTE_TIMEOUT", "0.5")
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{silent_server}")
        url = f"s3://{BUCKET}/run/ckpt.pt" if scheme == "s3" else f"http://127.0.0.1:{silent_server}/ckpt.pt"
        t0 = time.monotonic()
        r = runner.invoke(main, [url, SAMPLES[0][1]])
        elapsed = time.monotonic() - t0
        line = one_error_line(r)
        assert r.exit_code == 4, line
        assert line.startswith(f"Error: {url}: "), line
        assert "0.5 s" in line or "cannot reach" in line, line
        assert elapsed < 8, elapsed

    def test_bad_credentials(self, runner: CliRunner, in_root: Path, s3: dict[str, str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
        """With moto's authentication on, an unknown access key is refused: exit 4, "access denied"."""
        reset = f"{s3['AWS_ENDPOINT_URL']}/moto-api/reset-auth"
        plain = {"Content-Type": "text/plain"}  # moto reads the raw body (a form body would be parsed away)
        urllib.request.urlopen(urllib.request.Request(reset, b"0", plain, method="POST"), timeout=10).read()
        try:
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
            url = url_for(f"s3://{BUCKET}/", SAMPLES[0][0])
            r = runner.invoke(main, [url, SAMPLES[0][1]])
        finally:
            urllib.request.urlopen(urllib.request.Request(reset, b"inf", plain, method="POST"),
                                   timeout=10).read()
        line = one_error_line(r)
        assert r.exit_code == 4, line
        assert line.startswith(f"Error: {url}: access denied"), line

    def test_no_credentials(self, runner: CliRunner, in_root: Path, s3: dict[str, str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
        """No credentials anywhere (the instance metadata lookup is off: no traffic leaves the machine):
        exit 4, naming the variables to set."""
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        url = url_for(f"s3://{BUCKET}/", SAMPLES[0][0])
        r = runner.invoke(main, [url, SAMPLES[0][1]])
        line = one_error_line(r)
        assert r.exit_code == 4, line
        assert line.startswith(f"Error: {url}: no credentials for the object store"), line
        assert "AWS_ACCESS_KEY_ID" in line

    def test_http_server_ignoring_ranges(self, runner: CliRunner, in_root: Path,
                                         http_server: http.server.ThreadingHTTPServer) -> None:
        """A server that answers a Range request with the whole object: refused (exit 1), not read whole."""
        big = bytes(300 << 10)  # over the size fetched whole in one request
        url = http_put(http_server, "/norange/ck.pt", b"PK\x03\x04" + big)
        http_server.ranges = False  # type: ignore[attr-defined]
        try:
            r = runner.invoke(main, [url, SAMPLES[0][1]])
        finally:
            http_server.ranges = True  # type: ignore[attr-defined]
        line = one_error_line(r)
        assert r.exit_code == 1, line
        assert line.startswith(f"Error: {url}: the server ignores range requests"), line


# -- the reader's limits hold at a URL -----------------------------------------------------------------------
HOSTILE = ["os.system@zip-embedded", "subprocess.Popen-reduce@legacy-root", "byteorder-bomb", "mark-flood",
           "quoted-10kb-mode", "trailing-gigabyte-data-pkl"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_file_at_url(runner: CliRunner, in_root: Path, tmp_path: Path, name: str) -> None:
    """A hostile file served by ``memory://`` is handled as the local file is (the same refusal, or the same
    neutralised load), and runs nothing."""
    canary = tmp_path / "canary"
    canary.mkdir()
    pname, _, cname = name.partition("@")
    if cname:
        body = payloads.CONTAINERS[cname](payloads.classic_payloads(canary / cname)[pname])
        expect: str | None = None  # judged against the local file alone
    else:
        case = next(c for c in payloads.special_cases(canary) if c.name == name)
        case.build(tmp_path / "case")
        body, expect = (tmp_path / "case").read_bytes(), case.expect
    local = tmp_path / "hostile.pt"
    local.write_bytes(body)
    url = memory_put(f"/hostile/{name}.pt", body)
    a = runner.invoke(main, [str(local), SAMPLES[0][1], "--format", "json"])
    b = runner.invoke(main, [url, SAMPLES[0][1], "--format", "json"])
    assert "Traceback" not in a.stderr + b.stderr
    assert b.exit_code == a.exit_code
    assert (b.stdout.replace(url, str(local)), b.stderr.replace(url, str(local))) == (a.stdout, a.stderr)
    if a.exit_code:
        line = one_error_line(b)
        assert expect is None or re.search(expect, line), line
        with pytest.raises(CheckpointError):
            pf.load_checkpoint(url)
    else:
        assert pf.load_checkpoint(url).neutralised == pf.load_checkpoint(local).neutralised != ()
    assert not any(canary.rglob("*")), list(canary.rglob("*"))


def test_every_classic_payload_at_url(tmp_path: Path) -> None:
    """Each code-running payload of the hostile suite, in each of its six containers (zip and legacy), read
    from ``memory://``: the same error or the same neutralised load as the local file, and nothing runs."""
    from plateau_forensics.errors import ForensicsError

    canary = tmp_path / "canary"
    canary.mkdir()
    local = tmp_path / "x.pt"

    def outcome(path: str) -> tuple[str, object]:
        try:
            return "loaded", pf.load_checkpoint(path).neutralised
        except ForensicsError as exc:
            return type(exc).__name__, str(exc).replace(path, "<file>")

    n = 0
    for cname, wrap in payloads.CONTAINERS.items():
        for pname, payload in payloads.classic_payloads(canary / cname).items():
            body = wrap(payload)
            local.write_bytes(body)
            url = memory_put("/classic/x.pt", body)
            remote.forget(url)
            assert outcome(url) == outcome(str(local)), (pname, cname)
            n += 1
    assert n > 300
    assert not any(canary.rglob("*")), list(canary.rglob("*"))


def test_log_limit_at_url(runner: CliRunner, in_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A log over the reader's size limit is refused by its size, before a byte is fetched."""
    from plateau_forensics import logtable

    monkeypatch.setattr(logtable, "MAX_LOG_BYTES", 1000)
    body = (ROOT / SAMPLES[0][1]).read_bytes()
    assert len(body) > 1000
    url = memory_put("/limits/log.csv", body)
    local = one_error_line(runner.invoke(main, [SAMPLES[0][0], SAMPLES[0][1]]))
    r = runner.invoke(main, [SAMPLES[0][0], url])
    line = one_error_line(r)
    assert r.exit_code == 1
    assert line == f"Error: {url}: {len(body):,} bytes, over the 1,000 bytes limit for a loss log", line
    assert line.replace(url, SAMPLES[0][1]) == local
    assert remote.stats(url).bytes_fetched == 0


# -- light import --------------------------------------------------------------------------------------------
def test_import_does_not_load_fsspec() -> None:
    """``import plateau_forensics`` and ``--help`` load neither fsspec, s3fs, botocore nor aiohttp."""
    code = ("import sys\nimport plateau_forensics\nfrom plateau_forensics.cli import main\n"
            "sys.argv = ['plateau-trace', '--help']\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(' '.join(sys.modules), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {m.split(".")[0] for m in out.stderr.split()}
    assert "plateau_forensics" in loaded
    assert not loaded & {"fsspec", "s3fs", "botocore", "aiobotocore", "aiohttp", "boto3"}


def test_extra_missing() -> None:
    """Without s3fs, or without fsspec, a URL is one exit-1 line naming the ``[s3]`` extra."""
    code = (
        "import sys\nsys.modules['s3fs'] = None\n"
        "from click.testing import CliRunner\nfrom plateau_forensics.cli import main\n"
        "def run():\n    r = CliRunner().invoke(main, ['s3://bucket/run/ckpt.pt', 'log.csv'])\n"
        "    print(r.exit_code, r.stderr.strip())\n"
        "run()\n"
        "for k in [m for m in sys.modules if m == 'fsspec' or m.startswith('fsspec.')]:\n"
        "    sys.modules[k] = None\n"
        "run()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    hint = 'pip install "plateau-forensics[s3]"'
    assert out.stdout.splitlines() == [
        f"1 Error: s3://bucket/run/ckpt.pt: no filesystem for s3:// is installed ({hint})",
        f"1 Error: s3://bucket/run/ckpt.pt: reading URLs needs fsspec: {hint}",
    ], out.stdout + out.stderr


def test_json_is_json(runner: CliRunner, in_root: Path) -> None:
    """The URL path keeps --format json machine-readable (nothing else printed on stdout)."""
    ckpt, log = SAMPLES[0]
    url = memory_put("/json/ck.pt", (ROOT / ckpt).read_bytes())
    r = runner.invoke(main, [url, log, "--format", "json"])
    assert r.exit_code == 0, r.stderr
    json.loads(r.stdout)
