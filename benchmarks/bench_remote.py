"""A checkpoint in an object store: ``plateau-trace s3://...`` by range requests vs downloading the object.

Target (issue 13): on a ~200 MB checkpoint (3 x Linear(4096, 4096), SGD, a real ReduceLROnPlateau state,
``torch.save``) served by a local S3 emulator (moto's server mode on a loopback port), reading the scheduler
fetches under 1% of the object. ``plateau_forensics.remote.stats`` counts the bytes and requests where they
arrive, so that number is deterministic. The wall time is printed beside a baseline measured in the same run:
downloading the whole object with the same s3fs filesystem (``fs.cat_file``), which is the least a reader
that does not use ranges has to do, and that download followed by reading the local copy.

The same reads are timed against a threaded ``http.server`` that reads only the asked bytes from disk.

Run: ``python benchmarks/bench_remote.py [--repeats N] [--keep]`` (~1-2 min on 2 cores, most of it building
the file and uploading it). Needs torch (to build the file) and the test extra (fsspec, s3fs, moto, flask).

moto is not S3: it answers a ranged GET by reading the whole stored object, so each request costs time
proportional to the object's size there, and no network latency is added. The timings show the shape, the
byte counts are what a real store would bill.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

WORK = Path(__file__).resolve().parent / "_work"  # gitignored
WIDTH, LAYERS = 4096, 3  # 3 x Linear(4096, 4096): 50.3M params, ~201 MB
TARGET_RATIO = 0.01
BUCKET = "bench"

_MAKE = """
import sys, torch
path, width, layers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
opt = torch.optim.SGD(model.parameters(), lr=0.1)
sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=2, cooldown=1, factor=0.5)
for loss in [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99]:
    sched.step(loss)
torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "epoch": 7}, path)
"""


def make_checkpoint(path: Path) -> None:
    if path.exists():
        print(f"  reusing {path.name} ({path.stat().st_size / 1e6:.1f} MB)")
        return
    t0 = time.perf_counter()
    tmp = path.with_suffix(".tmp")
    subprocess.run([sys.executable, "-c", _MAKE, str(tmp), str(WIDTH), str(LAYERS)], check=True)
    tmp.rename(path)
    print(f"  wrote {path.name}: {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s "
          f"(torch.save of {LAYERS} x Linear({WIDTH}, {WIDTH}) + SGD + ReduceLROnPlateau state)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_file(path: Path) -> tuple[object, str]:
    """A threaded ``http.server`` on a loopback port serving ``path`` with HEAD and single-range GET (206),
    reading only the asked bytes from disk: what a store that does not read whole objects costs."""
    import http.server
    import re
    import threading

    size = path.stat().st_size

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

        def do_GET(self) -> None:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            a, b = (int(m.group(1)), min(int(m.group(2) or size - 1) + 1, size)) if m else (0, size)
            self.send_response(206 if m else 200)
            if m:
                self.send_header("Content-Range", f"bytes {a}-{b - 1}/{size}")
            self.send_header("Content-Length", str(b - a))
            self.end_headers()
            with open(path, "rb") as fh:
                fh.seek(a)
                left = b - a
                while left:
                    chunk = fh.read(min(left, 1 << 20))
                    self.wfile.write(chunk)
                    left -= len(chunk)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/ckpt.pt"


def timed_rounds(runs: dict[str, object], repeats: int) -> dict[str, list[float]]:
    """One untimed warm-up of each, then ``repeats`` interleaved rounds (a round runs every function once)."""
    for fn in runs.values():
        fn()  # type: ignore[operator]
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for key, fn in runs.items():
            t0 = time.perf_counter()
            fn()  # type: ignore[operator]
            times[key].append(time.perf_counter() - t0)
    return times


def show(times: dict[str, list[float]]) -> dict[str, float]:
    med = {k: statistics.median(v) for k, v in times.items()}
    for key, ts in times.items():
        print(f"  {key:46s} median {med[key]:7.3f} s  min {min(ts):7.3f} s")
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the checkpoint in benchmarks/_work/")
    args = parser.parse_args()
    print(f"bench_remote: {args.repeats} interleaved rounds after 1 warm-up; moto S3 server on 127.0.0.1")
    WORK.mkdir(exist_ok=True)
    ckpt = WORK / "remote_200mb.pt"
    make_checkpoint(ckpt)
    size = ckpt.stat().st_size

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_EC2_METADATA_DISABLED": "true"}
    os.environ.update(env)
    try:
        import boto3

        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        t0 = time.perf_counter()
        client.upload_file(str(ckpt), BUCKET, "run/ckpt.pt")
        url = f"s3://{BUCKET}/run/ckpt.pt"
        print(f"  uploaded {size / 1e6:.1f} MB to {url} in {time.perf_counter() - t0:.1f} s")

        import plateau_forensics as pf
        from plateau_forensics import remote

        fs, path, _ = remote._filesystem(url)  # the same (cached) s3fs filesystem the reader uses

        def ours() -> object:
            remote.forget(url)  # no cached bytes: every round fetches again
            return pf.load_checkpoint(url)

        def download() -> bytes:
            return fs.cat_file(path)  # type: ignore[no-any-return]

        def download_and_read() -> object:
            data = fs.cat_file(path)
            local = WORK / "remote_download.pt"
            local.write_bytes(data)
            return pf.load_checkpoint(str(local))

        runs = {"(a) pf.load_checkpoint(s3://...) by ranges": ours,
                "(b) download the object (fs.cat_file)": download,
                "(c) download, then read the local copy": download_and_read}
        ck_remote, ck_local = ours(), pf.load_checkpoint(str(ckpt))
        st = remote.stats(url)
        same = (ck_remote.state, ck_remote.config) == (ck_local.state, ck_local.config)  # type: ignore[attr-defined]
        assert len(download()) == size
        times = timed_rounds(runs, args.repeats)

        httpd, hurl = serve_file(ckpt)
        hfs, hpath, _ = remote._filesystem(hurl)

        def ours_http() -> object:
            remote.forget(hurl)
            return pf.load_checkpoint(hurl)

        http_times = timed_rounds({"(d) pf.load_checkpoint(http://...) by ranges": ours_http,
                                   "(e) download the object over http": lambda: hfs.cat_file(hpath)},
                                  args.repeats)
        hst = remote.stats(hurl)
        httpd.shutdown()  # type: ignore[attr-defined]

        cli = Path(sysconfig.get_path("scripts")) / "plateau-trace"
        t0 = time.perf_counter()
        out = subprocess.run([str(cli), url, "--format", "json"], capture_output=True, text=True,
                             env={**os.environ, **env})
        cli_time = time.perf_counter() - t0
        local_out = subprocess.run([str(cli), str(ckpt), "--format", "json"], capture_output=True, text=True)
        cli_same = out.returncode == 0 and out.stdout.replace(url, str(ckpt)) == local_out.stdout

        print(f"  file size        {size:>13,} bytes")
        print(f"  bytes fetched    {st.bytes_fetched:>13,} bytes in {st.requests} range requests "
              f"(counted by remote.stats, the same every run)")
        print(f"  the same scheduler state as the local file: {same}; the CLI's JSON equals the local run's: "
              f"{cli_same}")
        print("  S3 emulator (moto reads the whole stored object for every ranged GET):")
        a, b, c = show(times).values()
        print(f"  time: download/ranges (b)/(a) = {b / a:.1f}x, download+read/ranges (c)/(a) = {c / a:.1f}x "
              "(median; not a target)")
        print(f"  http.server reading only the asked bytes ({hst.bytes_fetched:,} bytes in {hst.requests} "
              "requests):")
        d, e = show(http_times).values()
        print(f"  time: download/ranges (e)/(d) = {e / d:.1f}x (median; not a target)")
        print(f"  plateau-trace s3://... --format json, whole process (imports included): {cli_time:.2f} s")
        verdict = "PASS" if st.ratio < TARGET_RATIO and same else "FAIL"
        print(f"  bytes fetched / file size = {st.ratio:.5%}; target < {TARGET_RATIO:.0%}: {verdict}")
    finally:
        server.stop()
        (WORK / "remote_download.pt").unlink(missing_ok=True)
        if not args.keep:
            ckpt.unlink(missing_ok=True)
            print(f"  deleted the checkpoint in {WORK} (pass --keep to keep it)")


if __name__ == "__main__":
    main()
