"""Checkpoints and logs at URLs (``s3://``, ``gs://``, ``https://``, ``memory://``, ``file://``, any fsspec
filesystem), read by byte ranges.

``open_url`` gives the torch reader (``torchfile``) a seekable, read-only file whose bytes are fetched on
demand, with range requests, into a bounded cache. Reading a ``torch.save`` zip that way costs its last 42
bytes (the end record), the central directory, every member's local header and data descriptor, the pickle
and the few small records (``version``, ``byteorder``, ...), fetched in two concurrent batches: never a
storage's bytes, unless a tensor's value is needed (a 0-dim ``best``, tensor lrs). The reader cannot tell
the difference, so every limit and integrity check holds for a URL exactly as for a file. A legacy
(non-zip) file is a pickle stream: it is read front to back, each pickle within the reader's size limit.

fsspec, and s3fs for ``s3://`` (``pip install "plateau-forensics[s3]"``), are imported when the first URL is
opened, never at import time. Every failure is one typed line: ``RemoteError`` (exit 1: no such bucket or
object, not a file, a scheme no installed filesystem serves, the extra missing) or ``RemoteUnavailable``
(exit 4: network failure, timeout, no credentials, access denied). A server that stops answering is
abandoned: connect and read timeouts of ``PF_REMOTE_TIMEOUT`` seconds (default 30), two attempts, and a hard
deadline of three times that per request.
"""

from __future__ import annotations

import bisect
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from plateau_forensics.errors import RemoteError, RemoteUnavailable

__all__ = ["FetchStats", "RangeFile", "forget", "is_torch_url", "is_url", "open_url", "read_limited", "stats"]

#: ``scheme://`` (a scheme of two characters or more: ``C://`` stays a Windows path); fsspec's chained
#: ``simplecache::s3://`` too.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+(::[A-Za-z][A-Za-z0-9+.\-]+)*://")
#: Environment variable: the connect/read timeout in seconds (default ``DEFAULT_TIMEOUT``).
TIMEOUT_ENV = "PF_REMOTE_TIMEOUT"
DEFAULT_TIMEOUT = 30.0
#: Bytes kept per object (least recently used ranges go first); a read larger than half of it is not kept.
CACHE_BYTES = 16 << 20
#: Objects whose caches are kept (a lazy tensor value reopens its checkpoint after the tree is read).
MAX_OBJECTS = 4
#: Range requests in flight at once for one batch.
CONCURRENCY = 16
#: Ranges of one batch this close are fetched as one request (the bytes between them come too): a zip's
#: local headers and small records sit a few dozen bytes apart; a storage smaller than this between two of
#: them (an optimizer's 0-dim ``step``) may come along, a weight matrix or a bias of 128 floats never does.
GAP_BYTES = 512
#: The local extra field a zip member's data is assumed to follow (torch pads data to 64 bytes with it):
#: a guess that only saves a round trip; what it misses is fetched next.
EXTRA_GUESS = 128
#: An object this small is fetched whole by its first read: one request instead of a dozen round trips.
SMALL_OBJECT_BYTES = 256 << 10
_HTTP = ("http", "https")
#: Environment variables that may change what a filesystem connects to (credentials, endpoint, config).
_ENV_PREFIXES = ("AWS_", "FSSPEC_", "GOOGLE_", "GCS", "AZURE_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
                 "http_proxy", "https_proxy", "no_proxy")
_FILESYSTEMS: dict[Any, Any] = {}
_S3 = ("s3", "s3a")


def is_url(path: object) -> bool:
    """True for ``scheme://...`` strings (``s3://b/k``, ``https://h/p``, ``memory://x``); paths never are."""
    return isinstance(path, str) and _URL.match(path) is not None


def timeout() -> float:
    """The connect/read timeout in seconds: ``PF_REMOTE_TIMEOUT`` if it is a positive number, else 30."""
    try:
        value = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT
    return value if 0 < value < 1e6 else DEFAULT_TIMEOUT


@dataclass
class FetchStats:
    """What reading one URL cost, counted where the bytes arrive (deterministic, unlike timings).

    Attributes:
        url: the object read.
        size: its size in bytes.
        requests: range requests sent (a HEAD-like ``info`` call is not counted).
        bytes_fetched: bytes those requests returned.
        ranges: each request's ``(start, end)``, in the order sent.
    """

    url: str
    size: int
    requests: int = 0
    bytes_fetched: int = 0
    ranges: list[tuple[int, int]] = field(default_factory=list, repr=False)

    @property
    def ratio(self) -> float:
        """``bytes_fetched / size`` (0 for an empty object)."""
        return self.bytes_fetched / self.size if self.size else 0.0


def _one_line(text: object, limit: int = 200) -> str:
    return " ".join(str(text).split())[:limit]


def _translate(exc: BaseException, url: str) -> RemoteError:
    """One typed line for whatever fsspec, s3fs, botocore or aiohttp raised."""
    if isinstance(exc, RemoteError):
        return exc
    name, text = type(exc).__name__, _one_line(exc)
    module = type(exc).__module__ or ""
    status, response = getattr(exc, "status", None), getattr(exc, "response", None)
    if status is None and isinstance(response, dict):  # botocore's ClientError
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    cause = exc.__cause__
    if isinstance(exc, FileNotFoundError) and cause is not None and not isinstance(cause, FileNotFoundError) \
            and getattr(cause, "status", None) != 404 and "nosuchbucket" not in type(cause).__name__.lower():
        # fsspec's http info() says FileNotFoundError for any failure (refused, timed out): the cause tells
        return _translate(cause, url)
    if isinstance(exc, FileNotFoundError) or status == 404:
        # by the store's answer (s3fs: "The specified bucket does not exist", from botocore's NoSuchBucket),
        # never by the URL: a bucket may be called "bucket"
        said = f"{text} {type(exc.__cause__).__name__} {_one_line(exc.__cause__)}".lower()
        bucket = ("nosuchbucket", "bucket does not exist", "headbucket operation")
        what = "no such bucket" if any(b in said for b in bucket) else "no such object"
        return RemoteError(f"{url}: {what}")
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                "NoAuthTokenError", "DefaultCredentialsError"):
        return RemoteUnavailable(f"{url}: no credentials for the object store ({text}; for s3:// set "
                                 "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)")
    if isinstance(exc, PermissionError) or status in (401, 403) or any(
            code in text for code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                                      "ExpiredToken")):
        return RemoteUnavailable(f"{url}: access denied ({text}); check the credentials")
    if isinstance(exc, TimeoutError) or "Timeout" in name:
        return RemoteUnavailable(f"{url}: the server did not answer within {timeout():g} s "
                                 f"({TIMEOUT_ENV} sets the timeout)")
    if isinstance(exc, (ConnectionError, OSError)) or "Connect" in name or module.startswith(
            ("aiohttp", "botocore", "urllib3")):
        return RemoteUnavailable(f"{url}: cannot reach the object store ({name}: {text})")
    if "support range requests" in text:  # fsspec's HTTPFile: the server sent the whole object for a range
        return RemoteError(f"{url}: the server ignores range requests (it answers with the whole object); "
                           "download the file and give its path")
    return RemoteError(f"{url}: cannot read it ({name}: {text})")


def _filesystem(url: str) -> tuple[Any, str, str]:
    """``(fs, path, protocol)`` for the URL, with timeouts set; fsspec's own config (``FSSPEC_S3_*``) kept."""
    try:
        import fsspec
        import fsspec.core
    except ModuleNotFoundError:
        raise RemoteError(f"{url}: reading URLs needs fsspec: pip install "
                          "\"plateau-forensics[s3]\"") from None
    protocol = fsspec.core.split_protocol(url.split("::")[-1])[0] or "file"
    t = timeout()
    opts: dict[str, Any] = {"skip_instance_cache": True}
    user = fsspec.config.conf.get(protocol, {})
    if protocol in _S3:
        opts["config_kwargs"] = {"connect_timeout": min(t, 10.0), "read_timeout": t,
                                 "retries": {"max_attempts": 2, "mode": "standard"},
                                 **user.get("config_kwargs", {})}
    elif protocol in _HTTP:
        try:
            import aiohttp
        except ModuleNotFoundError:
            raise RemoteError(f"{url}: reading http(s) URLs needs aiohttp: pip install "
                              "\"plateau-forensics[s3]\"") from None
        opts["client_kwargs"] = {"timeout": aiohttp.ClientTimeout(sock_connect=min(t, 10.0), sock_read=t),
                                 **user.get("client_kwargs", {})}
    # one filesystem per scheme, timeout, settings and process (a new s3fs session costs ~0.5 s): reused
    # while none of them changes; a chained URL or one carrying options (``?versionId=``) gets its own
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)))
    key = None if "::" in url else (protocol, t, env, repr(user), os.getpid())
    fs = _FILESYSTEMS.get(key) if key is not None else None
    if fs is not None and not type(fs)._get_kwargs_from_urls(url):
        fs.invalidate_cache()  # info() from the store, never from a listing seen earlier
        return fs, type(fs)._strip_protocol(url), protocol
    try:
        fs, path = fsspec.core.url_to_fs(url, **opts)
    except ImportError as exc:  # fsspec knows the scheme, its package is missing ("Install s3fs to ...")
        hint = "pip install \"plateau-forensics[s3]\"" if protocol in _S3 else _one_line(exc)
        raise RemoteError(f"{url}: no filesystem for {protocol}:// is installed ({hint})") from None
    except ValueError as exc:
        if "Protocol not known" in str(exc):
            raise RemoteError(f"{url}: fsspec has no filesystem for {protocol}://") from None
        raise _translate(exc, url) from None
    except Exception as exc:  # a filesystem's constructor may already talk to the server
        raise _translate(exc, url) from None
    if protocol in _S3:
        fs.retries = 1  # s3fs's own retry loop on top of botocore's two attempts would multiply the wait
    if key is not None and not type(fs)._get_kwargs_from_urls(url):
        _FILESYSTEMS[key] = fs
        while len(_FILESYSTEMS) > MAX_OBJECTS:
            _FILESYSTEMS.pop(next(iter(_FILESYSTEMS)))
    return fs, path, protocol


class _Cache:
    """Non-overlapping byte segments of one object, least recently used evicted past ``capacity`` bytes."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.total = capacity, 0
        self.starts: list[int] = []
        self.data: OrderedDict[int, bytes] = OrderedDict()

    def pieces(self, a: int, b: int) -> list[tuple[int, int, bytes | None]]:
        """``[a, b)`` split into cached pieces (their bytes) and gaps (None), in order."""
        out: list[tuple[int, int, bytes | None]] = []
        i = max(bisect.bisect_right(self.starts, a) - 1, 0)
        pos = a
        while pos < b and i < len(self.starts):
            s = self.starts[i]
            d = self.data[s]
            if s + len(d) <= pos:
                i += 1
                continue
            if s >= b:
                break
            if s > pos:
                out.append((pos, s, None))
                pos = s
            end = min(b, s + len(d))
            self.data.move_to_end(s)
            out.append((pos, end, d[pos - s : end - s]))
            pos = end
            i += 1
        if pos < b:
            out.append((pos, b, None))
        return out

    def put(self, a: int, data: bytes) -> None:
        """Keep ``data`` at offset ``a``, merged with the segments it touches or overlaps (a batch's merged
        request may carry bytes already cached: the same bytes)."""
        b = a + len(data)
        if len(data) > self.capacity // 2:
            return  # a big read (the pickle): returned to the reader, not kept
        lo = max(bisect.bisect_right(self.starts, a) - 1, 0)
        hi = bisect.bisect_right(self.starts, b)
        touching = [s for s in self.starts[lo:hi] if s + len(self.data[s]) >= a and s <= b]
        start = min([a, *touching])
        end = max([b, *(s + len(self.data[s]) for s in touching)])
        if end - start > self.capacity // 2:  # kept beside its neighbours, unmerged: the ones it overlaps go
            for s in [s for s in touching if s < b and s + len(self.data[s]) > a]:
                self.total -= len(self.data.pop(s))
                self.starts.remove(s)
            touching, start, end = [], a, b
        buf = bytearray(end - start)
        for s in touching:
            buf[s - start : s - start + len(self.data[s])] = self.data[s]
        buf[a - start : b - start] = data
        for s in touching:
            self.total -= len(self.data.pop(s))
            self.starts.remove(s)
        bisect.insort(self.starts, start)
        self.data[start] = bytes(buf)
        self.total += end - start
        while self.total > self.capacity and len(self.data) > 1:
            old, seg = self.data.popitem(last=False)
            self.starts.remove(old)
            self.total -= len(seg)


class _Object:
    """One object at a URL: its filesystem, size, cache and counters, shared by every ``RangeFile`` on it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.path, self.protocol = _filesystem(url)
        info = self._call(lambda: self.fs.info(self.path, **self._deadline()))
        kind = info.get("type", "file")
        if kind != "file":
            raise RemoteError(f"{url}: not a file (a {kind}); give the URL of one checkpoint or log")
        size = info.get("size")
        if not isinstance(size, int) or size < 0:
            raise RemoteError(f"{url}: the server does not say how large the object is (no Content-Length), "
                              "so "
                              "it cannot be read by ranges")
        self.size = size
        self._kw: dict[str, Any] = {}
        if self.protocol in _S3 and info.get("VersionId"):  # every range from the version seen here
            self._kw["version_id"] = info["VersionId"]
        self._http_file: Any = None
        self.cache = _Cache(CACHE_BYTES)
        self.stats = FetchStats(url, size)

    def _deadline(self) -> dict[str, float]:
        return {"timeout": 3 * timeout()} if getattr(self.fs, "async_impl", False) else {}

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except RemoteError:
            raise
        except Exception as exc:  # fsspec, s3fs, aiohttp and botocore raise many types: one typed line each
            raise _translate(exc, self.url) from None

    # -- fetching ------------------------------------------------------------------------------------
    def _get_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """One request per range; concurrent on async filesystems, each within the hard deadline."""
        if not getattr(self.fs, "async_impl", False):
            return [self.fs.cat_file(self.path, start=a, end=b) for a, b in ranges]
        import asyncio

        from fsspec.asyn import sync

        if self.protocol in _HTTP and self._http_file is None:
            # HTTPFile refuses a server that ignores Range (a 200 with the whole object), never reads it all
            self._http_file = self.fs.open(self.path, "rb", block_size=1 << 16, cache_type="none",
                                           size=self.size)
        limit = 3 * timeout()

        async def one(sem: asyncio.Semaphore, a: int, b: int) -> bytes:
            async with sem:
                if self._http_file is not None:
                    coro = self._http_file.async_fetch_range(a, b)
                else:
                    coro = self.fs._cat_file(self.path, start=a, end=b, **self._kw)
                return await asyncio.wait_for(coro, limit)  # type: ignore[no-any-return]

        async def gather() -> list[bytes]:
            sem = asyncio.Semaphore(CONCURRENCY)
            return list(await asyncio.gather(*(one(sem, a, b) for a, b in ranges)))

        return sync(self.fs.loop, gather)  # type: ignore[no-any-return]

    def fetch(self, ranges: Iterable[tuple[int, int]], keep: bool = True) -> dict[tuple[int, int], bytes]:
        """Fetch what of ``ranges`` is not cached (merged where they overlap or touch), in one batch."""
        want: list[tuple[int, int]] = []
        for a, b in sorted((max(a, 0), min(b, self.size)) for a, b in ranges):
            if a >= b:
                continue
            for pa, pb, got in self.cache.pieces(a, b):
                if got is None:
                    if want and pa <= want[-1][1] + GAP_BYTES:
                        want[-1] = (want[-1][0], max(want[-1][1], pb))
                    else:
                        want.append((pa, pb))
        if not want:
            return {}
        blobs = self._call(lambda: self._get_ranges(want))
        out = {}
        for (a, b), data in zip(want, blobs, strict=True):
            self.stats.requests += 1
            self.stats.ranges.append((a, b))
            self.stats.bytes_fetched += len(data)
            if len(data) != b - a:
                raise RemoteError(f"{self.url}: asked for bytes {a:,}-{b - 1:,}, got {len(data):,} bytes "
                                  "(the "
                                  "object changed while it was read, or the server ignores ranges)")
            if keep:
                self.cache.put(a, data)
            out[(a, b)] = data
        return out

    def read_at(self, pos: int, n: int) -> bytes:
        """``n`` bytes at ``pos`` (fewer at the end of the object), fetching only what is not cached."""
        n = min(n, self.size - pos)
        if n <= 0:
            return b""
        if self.size <= SMALL_OBJECT_BYTES and not self.stats.requests:
            self.fetch([(0, self.size)])
        pieces = self.cache.pieces(pos, pos + n)
        gaps = [(a, b) for a, b, got in pieces if got is None]
        if not gaps:
            return b"".join(got for _, _, got in pieces if got is not None)
        if n > CACHE_BYTES // 2:  # a big read (the pickle): one request, not kept
            return self.fetch([(pos, pos + n)], keep=False).get((pos, pos + n)) or self._slow(pos, n)
        fetched = self.fetch(gaps)
        out = []
        for a, b, got in pieces:
            if got is None:
                got = next(d[a - fa : b - fa] for (fa, fb), d in fetched.items() if fa <= a and b <= fb)
            out.append(got)
        return b"".join(out)

    def _slow(self, pos: int, n: int) -> bytes:
        """A big read partly cached: the pieces in order, gaps fetched without keeping them."""
        out = []
        for a, b, got in self.cache.pieces(pos, pos + n):
            out.append(got if got is not None else self.fetch([(a, b)], keep=False)[(a, b)])
        return b"".join(out)

    def cached(self, pos: int, n: int) -> bytes | None:
        """The bytes if they are all cached, else None (no request)."""
        pieces = self.cache.pieces(pos, min(pos + n, self.size))
        if any(got is None for _, _, got in pieces):
            return None
        return b"".join(got for _, _, got in pieces if got is not None)


_OBJECTS: OrderedDict[str, _Object] = OrderedDict()


def _object(url: str) -> _Object:
    obj = _OBJECTS.get(url)
    if obj is None:
        obj = _Object(url)
        _OBJECTS[url] = obj
        while len(_OBJECTS) > MAX_OBJECTS:
            _OBJECTS.popitem(last=False)
    _OBJECTS.move_to_end(url)
    return obj


class RangeFile:
    """A seekable, read-only binary file over a URL: ``read`` fetches missing ranges, nothing is read ahead.

    It is what ``torchfile`` reads a URL through (``zipfile.ZipFile`` accepts it as it accepts a file).
    ``prefetch_zip`` lets the reader announce the header, descriptor and record ranges of a zip so that they
    arrive in two concurrent batches instead of one request each.
    """

    def __init__(self, obj: _Object) -> None:
        self._obj, self._pos, self.closed = obj, 0, False
        self.name = obj.url

    @property
    def size(self) -> int:
        """The object's size in bytes."""
        return self._obj.size

    @property
    def stats(self) -> FetchStats:
        """What reading this object has cost so far (shared by every file opened on the same URL)."""
        return self._obj.stats

    def readable(self) -> bool:
        """Always True."""
        return True

    def seekable(self) -> bool:
        """Always True."""
        return True

    def writable(self) -> bool:
        """Always False."""
        return False

    def tell(self) -> int:
        """The current position."""
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move like a file's ``seek``; a position before the start is an ``OSError`` as for a file."""
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._obj.size}[whence]
        if base + offset < 0:
            raise OSError(22, "Invalid argument")  # what a file says; zipfile handles it
        self._pos = base + offset
        return self._pos

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes from the current position (``-1``: to the end)."""
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if n is None or n < 0:
            n = self._obj.size - self._pos
        data = self._obj.read_at(self._pos, n)
        self._pos += len(data)
        return data

    def prefetch_zip(self, infos: Sequence[Any], wanted: Sequence[Any]) -> None:
        """Fetch, in two batches, what a zip reader reads besides the central directory.

        The first batch guesses from the central directory alone: each local header with its name, the data
        descriptor before it (16 bytes, where the member before it has one), and each wanted member's data
        (assuming an extra field of at most ``EXTRA_GUESS`` bytes). The second, from the headers read, fetches
        only what the guesses missed: for a torch.save zip, the last descriptor. Nothing else of a member is
        fetched.

        Args:
            infos: every member's ``zipfile.ZipInfo``: their local headers with names and their data
                descriptors (flag bit 3).
            wanted: the members whose data will be read whole (the pickle, small records).
        """
        def name_len(info: Any) -> int:
            return len(info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace"))

        # a record or pickle too big to be kept would be fetched here and again by the reader: the reader
        # fetches it (once); so does a member whose declared compressed size is out of proportion
        whole = {id(i) for i in wanted if i.compress_size <= self._obj.cache.capacity // 4}
        first = []
        by_offset = sorted(infos, key=lambda i: i.header_offset)
        for before, info in zip([None, *by_offset[:-1]], by_offset, strict=True):
            a, b = info.header_offset, info.header_offset + 30 + name_len(info)
            if before is not None and before.flag_bits & 0x8 and a - 16 >= before.header_offset:
                a -= 16  # the member before: its descriptor (signature, crc, two 4-byte sizes) ends here
            if id(info) in whole:
                b += EXTRA_GUESS + info.compress_size
            first.append((a, b))
        self._obj.fetch(first)
        second = []
        for info in infos:
            head = self._obj.cached(info.header_offset, 30)
            if head is None or len(head) < 30 or head[:4] != b"PK\x03\x04":
                continue  # the reader reports it
            flags, n_name, n_extra = struct.unpack("<H18xHH", head[6:30])
            data_start = info.header_offset + 30 + n_name + n_extra
            data_end = data_start + info.compress_size
            if id(info) in whole:
                second.append((info.header_offset + 30 + n_name, data_end))
            if flags & 0x8:
                second.append((data_end, data_end + 24))  # 24: the zip64 descriptor, as the reader reads it
        self._obj.fetch(second)

    def close(self) -> None:
        """Mark the file closed (the object's cache stays for the next open)."""
        self.closed = True

    def __enter__(self) -> RangeFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_url(url: str) -> RangeFile:
    """A ``RangeFile`` on the object at ``url``; the object's size and cache are shared by later opens.

    Raises:
        RemoteError: no such bucket or object, not a file, no filesystem for the scheme (exit 1).
        RemoteUnavailable: network failure, timeout, no credentials, access denied (exit 4).
    """
    return RangeFile(_object(url))


def stats(url: str) -> FetchStats:
    """What reading ``url`` has cost since it was first opened (or since ``forget``)."""
    return _object(url).stats


def forget(url: str | None = None) -> None:
    """Drop the cached object for ``url`` (every URL when None): the next open asks the server again."""
    if url is None:
        _OBJECTS.clear()
    else:
        _OBJECTS.pop(url, None)


def is_torch_url(url: str) -> bool:
    """True when the object starts like a ``torch.save`` output (a zip, or a legacy pickle stream).

    Raises:
        RemoteError, RemoteUnavailable: as ``open_url``.
    """
    with open_url(url) as fh:
        head = fh.read(4)
    return head[:2] == b"PK" or head[:1] == b"\x80"


def read_limited(url: str, limit: int, error: type[Exception], what: str) -> bytes:
    """The whole object, if it holds at most ``limit`` bytes (checked before a byte is fetched).

    Args:
        url: the object.
        limit: the most bytes accepted.
        error: the exception raised for a larger object (``LossLogError`` for a log).
        what: how the message names it (``"a loss log"``).

    Raises:
        error: the object is over ``limit``.
        RemoteError, RemoteUnavailable: as ``open_url``.
    """
    obj = _object(url)
    if obj.size > limit:
        said = f"{limit >> 20} MiB" if limit >= 1 << 20 and not limit % (1 << 20) else f"{limit:,} bytes"
        raise error(f"{url}: {obj.size:,} bytes, over the {said} limit for {what}")  # worded as for a file
    return obj.read_at(0, obj.size) if obj.size else b""
