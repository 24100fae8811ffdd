#!/usr/bin/env python3
"""DMTS throughput against reference tools, each comparison in one run, printing both figures and the ratio.

    .venv/bin/python bench/dmts_throughput.py [--quick] [--only loopback,wan,dataset,order,plain] [--reps N]

- loopback: one large file over mutual TLS, DMTS with 1 stream vs curl (client certificate) from
  the same source, both writing to the same disk. Target ratio >= 0.9. Also printed: curl followed by
  an fdatasync of its file, since the DMTS makes the file durable before renaming it.
- wan: the source in one network namespace, the DMTS in another, joined by ../shared/tools/wanlink.py
  (50 ms RTT, 1 Gbit/s); DMTS 1, 4, 8 streams vs iperf3 -P 1, 4, 8 on the same link.
  Targets: 8 streams >= 0.8x iperf3 -P 8 and >= 1.7x DMTS with 1 stream. Needs root.
- dataset: 1,000 small files (4 KiB-1 MiB) + four 512 MiB files over mutual TLS: daaas through the DMS
  API (adapter "everything", size-blind like rclone) vs `rclone copy` from `rclone serve http` (TLS +
  client CA), --transfers 4 --multi-thread-streams 4. Target >= 1.5x.
- order: on that dataset, the time until every small file is usable, small_first vs size-blind (path) order.
- plain: the source without TLS (sendfile) and a plain DMTS, 1 stream, beside iperf3 -P 1 on loopback.

`--quick` scales every size down (a few seconds per comparison); figures are then only indicative.
Every server runs as its own process (`daaas dms serve-*`), stopped by PID and waited for.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dms import client, pki  # noqa: E402
from dms.tls import client_context  # noqa: E402

PY = sys.executable
WANLINK = Path("/work/shared/tools/wanlink.py")
WAN_NS, WAN_ADDR = ("daaasA", "daaasB"), ("10.201.0.1", "10.201.0.2")
MiB = 2**20


class Proc:
    """A server process started from the CLI; waits for its 'listening on HOST:PORT' line."""

    def __init__(self, cmd: list[str], *, netns: str | None = None, ready: str = "listening on", timeout=30.0):
        full = (["ip", "netns", "exec", netns] if netns else []) + cmd
        self.p = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
        self.port = None
        deadline = time.monotonic() + timeout
        lines = []
        while time.monotonic() < deadline:
            line = self.p.stdout.readline()
            if not line:
                break
            lines.append(line)
            if ready in line:
                tail = line.rsplit(ready, 1)[1].split()
                if tail:
                    self.port = int(tail[0].rsplit(":", 1)[1])
                # Keep draining output so the child never blocks on a full pipe.
                threading.Thread(target=self.p.stdout.read, daemon=True).start()
                return
        self.stop()
        raise RuntimeError(f"{' '.join(full)} did not start: {''.join(lines)[-2000:]}")

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def make_pki(d: Path, ips: tuple[str, ...]) -> dict[str, pki.Issued]:
    pki.init_ca(d, common_name="daaas bench CA")
    out = {name: pki.issue(d, name, role=role, ip_addresses=ips)
           for name, role in (("source", "service"), ("dmts", "service"), ("dms-api", "service"),
                              ("bench", "user"))}
    return out


def write_random(path: Path, size: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(seed)
    block = rnd.randbytes(min(size, 8 * MiB))
    with path.open("wb") as f:
        left = size
        while left > 0:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
            block = block[1:] + block[:1] if left else block  # vary blocks a little
    os.utime(path, (1.6e9, 1.6e9))


def warm(paths) -> None:
    """Read files once so every contender reads them from the page cache."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(16 * MiB):
                pass


def drop(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def rate(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6 if seconds > 0 else math.inf


def iperf3(port: int, streams: int, seconds: int, *, server_ns=None, client_ns=None, host="127.0.0.1") -> float:
    """iperf3 throughput in MB/s (receiver side), server and client in the given namespaces."""
    srv = subprocess.Popen((["ip", "netns", "exec", server_ns] if server_ns else []) +
                           ["iperf3", "-s", "-1", "-B", host, "-p", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        out = subprocess.run((["ip", "netns", "exec", client_ns] if client_ns else []) +
                             ["iperf3", "-c", host, "-p", str(port), "-P", str(streams), "-t", str(seconds), "-J"],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 8 / 1e6
    finally:
        try:
            srv.wait(15)  # -1: it exits after one test
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()


def dmts_copy(src_url: str, dst_url: str, streams: int, tls, size: int) -> float:
    t0 = time.perf_counter()
    client.copy(src_url, dst_url, streams=streams, tls=tls, timeout=300)
    return rate(size, time.perf_counter() - t0)


def dmts_and_curl(reps: int, dst: Path, name: str, src_url: str, dmts_url: str, tls, size: int,
                  curl_args: list[str], synced: Path | None = None) -> tuple[float, float, float]:
    """Medians over `reps` alternating rounds (MB/s): the DMTS pulling `src_url` to `name` with 1 stream, curl
    fetching it with `curl_args`, and curl followed by an fdatasync of `synced` (0 without one)."""
    d_rates, c_rates, cs_rates = [], [], []
    for _ in range(reps):
        drop(dst / name)
        d_rates.append(dmts_copy(src_url, f"{dmts_url}/{name}", 1, tls, size))
        drop(dst / name)
        t0 = time.perf_counter()
        subprocess.run(["curl", "-sS", "--fail", *curl_args, src_url], check=True)
        c_rates.append(rate(size, time.perf_counter() - t0))
        if synced is not None:
            fd = os.open(synced, os.O_RDONLY)
            try:
                os.fdatasync(fd)  # what the DMTS does before its rename: the file is on disk
            finally:
                os.close(fd)
            cs_rates.append(rate(size, time.perf_counter() - t0))
            drop(synced)
    return (statistics.median(d_rates), statistics.median(c_rates),
            statistics.median(cs_rates) if cs_rates else 0.0)


def copy_in_ns(ns: str, src_url: str, dst_url: str, streams: int, pki_dir: Path, size: int) -> float:
    """Time one copy from inside a namespace (the DMTS is reachable only there), without interpreter start-up."""
    out = subprocess.run(["ip", "netns", "exec", ns, PY, str(Path(__file__).resolve()), "--timed-copy", src_url,
                          dst_url, str(streams), str(pki_dir)], check=True, cwd=REPO, capture_output=True, text=True)
    return rate(size, float(out.stdout.strip().splitlines()[-1]))


def timed_copy(src_url: str, dst_url: str, streams: str, pki_dir: str) -> int:
    d = Path(pki_dir)
    tls = client_context(cert=d / "certs" / "bench.pem", key=d / "certs" / "bench.key", ca=pki.ca_cert_path(d))
    t0 = time.perf_counter()
    client.copy(src_url, dst_url, streams=int(streams), tls=tls, timeout=300)
    print(time.perf_counter() - t0)
    return 0


def report(title: str, rows: list[tuple[str, float]], ratios: list[tuple[str, float, float | None]]) -> None:
    print(f"\n== {title}")
    for name, v in rows:
        print(f"  {name:<44} {v:10.1f} MB/s" if not name.endswith(" s") else f"  {name:<44} {v:10.2f}")
    for name, r, target in ratios:
        met = "met" if target is not None and r >= target else "MISSED"
        verdict = "" if target is None else f"  (target >= {target:.2f}: {met})"
        print(f"  ratio {name:<38} {r:10.2f}{verdict}")
    sys.stdout.flush()


def serve_args(kind: str, root: Path, pki_dir: Path, *, host="127.0.0.1", plain=False) -> list[str]:
    cmd = [PY, "-m", "cli", "dms", f"serve-{kind}", str(root), "--host", host, "--port", "0"]
    return cmd + (["--plain"] if plain else ["--pki", str(pki_dir)])


# ---- comparisons -------------------------------------------------------------------------------------


def bench_loopback(work: Path, pki_dir: Path, certs, size: int, reps: int) -> None:
    src, dst = work / "lo-src", work / "lo-dst"
    write_random(src / "big.bin", size, 1)
    dst.mkdir(exist_ok=True)
    warm([src / "big.bin"])
    source = Proc(serve_args("source", src, pki_dir))
    dmts = Proc(serve_args("dmts", dst, pki_dir))
    tls = client_context(cert=certs["bench"].cert, key=certs["bench"].key, ca=pki.ca_cert_path(pki_dir))
    try:
        d, c, cs = dmts_and_curl(
            reps, dst, "big.bin", f"https://127.0.0.1:{source.port}/big.bin", f"https://127.0.0.1:{dmts.port}",
            tls, size, ["--cert", str(certs["bench"].cert), "--key", str(certs["bench"].key), "--cacert",
                        str(pki.ca_cert_path(pki_dir)), "-o", str(dst / "curl.bin")], synced=dst / "curl.bin")
        report(f"loopback, {size / MiB:.0f} MiB over mutual TLS (median of {reps})",
               [("DMTS, 1 stream (verified, fsync'd, renamed)", d), ("curl --cert, same source", c),
                ("curl --cert, then fdatasync of its file", cs)],
               [("DMTS 1 stream / curl", d / c, 0.9), ("DMTS 1 stream / (curl + fdatasync)", d / cs, None)])
    finally:
        source.stop()
        dmts.stop()
        drop(dst)


def bench_wan(work: Path, pki_dir: Path, size: int, seconds: int) -> None:
    if os.geteuid() != 0:
        raise SystemExit("wan: needs root (network namespaces)")
    src, dst = work / "wan-src", work / "wan-dst"
    write_random(src / "wan.bin", size, 2)
    dst.mkdir(exist_ok=True)
    warm([src / "wan.bin"])
    link = subprocess.Popen([sys.executable, str(WANLINK), "--ns", *WAN_NS, "--addr", *WAN_ADDR,
                             "--rtt-ms", "50", "--rate-mbit", "1000", "--seconds", "3600"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = link.stdout.readline()
        if "link up" not in line:
            raise RuntimeError(f"wanlink did not come up: {line}")
        source = Proc(serve_args("source", src, pki_dir, host=WAN_ADDR[0]), netns=WAN_NS[0])
        dmts = Proc(serve_args("dmts", dst, pki_dir, host=WAN_ADDR[1]), netns=WAN_NS[1])
        try:
            ip_rates = {n: iperf3(5201, n, seconds, server_ns=WAN_NS[1], client_ns=WAN_NS[0], host=WAN_ADDR[1])
                        for n in (1, 4, 8)}
            d_rates = {}
            for n in (1, 4, 8):
                drop(dst / "wan.bin")
                d_rates[n] = copy_in_ns(WAN_NS[1], f"https://{WAN_ADDR[0]}:{source.port}/wan.bin",
                                            f"https://{WAN_ADDR[1]}:{dmts.port}/wan.bin", n, pki_dir, size)
        finally:
            source.stop()
            dmts.stop()
        rows = []
        for n in (1, 4, 8):
            rows += [(f"DMTS, {n} stream(s)", d_rates[n]), (f"iperf3 -P {n}", ip_rates[n])]
        report(f"emulated WAN (50 ms RTT, 1 Gbit/s), {size / MiB:.0f} MiB file", rows,
               [("DMTS 8 / iperf3 -P 8", d_rates[8] / ip_rates[8], 0.8),
                ("DMTS 8 / DMTS 1", d_rates[8] / d_rates[1], 1.7),
                ("DMTS 4 / iperf3 -P 4", d_rates[4] / ip_rates[4], None),
                ("DMTS 1 / iperf3 -P 1", d_rates[1] / ip_rates[1], None)])
    finally:
        link.send_signal(signal.SIGTERM)
        link.wait(15)
        drop(dst)


def make_dataset(root: Path, n_small: int, big: int, n_big: int = 4) -> tuple[int, list[str], list[str]]:
    rnd = random.Random(42)
    small, large, total = [], [], 0
    for i in range(n_small):
        size = int(math.exp(rnd.uniform(math.log(4096), math.log(MiB))))
        rel = f"ds/small/{i // 100:02d}/f{i:04d}.dat"
        write_random(root / rel, size, i)
        small.append(rel)
        total += size
    for i in range(n_big):
        rel = f"ds/big_{i}.bin"
        write_random(root / rel, big, 1000 + i)
        large.append(rel)
        total += big
    return total, small, large


def api_transfer(api_url: str, sess: requests.Session, body: dict) -> tuple[float, dict, float]:
    t0 = time.time()
    r = sess.post(f"{api_url}/transfers", json=body, timeout=300)
    r.raise_for_status()
    tid = r.json()["id"]
    while True:
        st = sess.get(f"{api_url}/transfers/{tid}?files=0", timeout=30).json()
        if st["state"] in ("done", "failed", "cancelled"):
            break
        time.sleep(0.1)  # each poll costs the API (and this process) CPU that the transfer could use
    elapsed = time.time() - t0
    st = sess.get(f"{api_url}/transfers/{tid}", timeout=30).json()
    if st["state"] != "done":
        raise RuntimeError(f"transfer {tid} ended {st['state']}: {st['error']}")
    return elapsed, st, t0


def start_api(work: Path, pki_dir: Path) -> Proc:
    cfg = work / "api.yaml"
    cfg.write_text(f"db: {work / 'api.sqlite'}\nevent_log: {work / 'api-events.jsonl'}\nport: 0\n"
                   "max_parallel_files: 64\n")
    return Proc([PY, "-m", "cli", "dms", "serve-api", "--config", str(cfg), "--pki", str(pki_dir)])


def bench_dataset(work: Path, pki_dir: Path, certs, n_small: int, big: int, parallel: int, streams: int,
                  only: set[str]) -> None:
    src, dst = work / "ds-src", work / "ds-dst"
    total, small, _large = make_dataset(src, n_small, big)
    dst.mkdir(exist_ok=True)
    warm(sorted(p for p in src.rglob("*") if p.is_file()))
    source = Proc(serve_args("source", src, pki_dir))
    dmts = Proc(serve_args("dmts", dst, pki_dir))
    api = start_api(work, pki_dir)
    sess = requests.Session()
    sess.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment replaces `verify`
    sess.cert = (str(certs["bench"].cert), str(certs["bench"].key))
    sess.verify = str(pki.ca_cert_path(pki_dir))
    api_url = f"https://127.0.0.1:{api.port}"
    common = {"source": f"https://127.0.0.1:{source.port}", "destination": f"https://127.0.0.1:{dmts.port}",
              "directory": "ds", "streams": streams, "parallel_files": parallel}
    try:
        if "dataset" in only:
            drop(dst)
            dst.mkdir()
            # Size-blind order, like rclone's: the large files start first and the small ones go beside them.
            # (small_first serves another goal, small files early; "order" below measures it.)
            secs, _, _ = api_transfer(api_url, sess, {**common, "adapter": "everything"})
            daaas = rate(total, secs)
            drop(dst)
            rc_port = free_port()
            rc = subprocess.Popen(["rclone", "serve", "http", str(src), "--addr", f"127.0.0.1:{rc_port}",
                                   "--cert", str(certs["source"].cert), "--key", str(certs["source"].key),
                                   "--client-ca", str(pki.ca_cert_path(pki_dir))],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(1.0)
                t0 = time.perf_counter()
                subprocess.run(["rclone", "copy", ":http:ds", str(dst / "ds"), "--http-url",
                                f"https://127.0.0.1:{rc_port}", "--ca-cert", str(pki.ca_cert_path(pki_dir)),
                                "--client-cert", str(certs["bench"].cert), "--client-key", str(certs["bench"].key),
                                "--transfers", "4", "--multi-thread-streams", "4", "--multi-thread-cutoff", "128M"],
                               check=True, stdout=subprocess.DEVNULL)
                rcl = rate(total, time.perf_counter() - t0)
            finally:
                rc.terminate()
                rc.wait(15)
            n_got = sum(1 for p in (dst / "ds").rglob("*") if p.is_file())
            if n_got != n_small + 4:
                raise RuntimeError(f"rclone copied {n_got} files, expected {n_small + 4}")
            report(f"dataset: {n_small} small files + 4 x {big / MiB:.0f} MiB ({total / 1e9:.2f} GB), mutual TLS",
                   [(f"daaas via DMS API, adapter everything ({parallel} files x {streams} streams)", daaas),
                    ("rclone copy --transfers 4 --multi-thread-streams 4", rcl)],
                   [("daaas / rclone", daaas / rcl, 1.5)])
        if "order" in only:
            results = {}
            for adapter in ("small_first", "everything"):
                drop(dst)
                dst.mkdir()
                secs, st, t0 = api_transfer(api_url, sess, {**common, "adapter": adapter})
                smalls = set(small)
                last_small = max(f["finished"] for f in st["files"] if f["path"] in smalls) - t0
                results[adapter] = (last_small, secs)
            sf, ev = results["small_first"], results["everything"]
            print(f"\n== order: time until all {n_small} small files are usable (same dataset, same DMS API)")
            print(f"  small_first: small files after {sf[0]:7.2f} s (all after {sf[1]:.2f} s)")
            print(f"  everything (path order, size-blind): small files after {ev[0]:7.2f} s (all after {ev[1]:.2f} s)")
            print(f"  ratio size-blind / small_first {ev[0] / sf[0]:10.2f}")
    finally:
        for p in (api, source, dmts):
            p.stop()
        drop(dst)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_plain(work: Path, pki_dir: Path, size: int, reps: int) -> None:
    src, dst = work / "pl-src", work / "pl-dst"
    write_random(src / "plain.bin", size, 3)
    dst.mkdir(exist_ok=True)
    warm([src / "plain.bin"])
    source = Proc(serve_args("source", src, pki_dir, plain=True))
    dmts = Proc(serve_args("dmts", dst, pki_dir, plain=True))
    try:
        d, c, _ = dmts_and_curl(reps, dst, "plain.bin", f"http://127.0.0.1:{source.port}/plain.bin",
                                f"http://127.0.0.1:{dmts.port}", None, size, ["-o", "/dev/null"])
        ip = iperf3(free_port(), 1, 5)
        report(f"plain (no TLS) loopback, {size / MiB:.0f} MiB, source sends with sendfile",
               [("DMTS, 1 stream (to disk)", d), ("curl from the source (to /dev/null)", c),
                ("iperf3 -P 1", ip)],
               [("DMTS 1 stream / iperf3 -P 1", d / ip, None), ("source via curl / iperf3 -P 1", c / ip, None)])
    finally:
        source.stop()
        dmts.stop()
        drop(dst)


def main() -> int:
    if len(sys.argv) == 6 and sys.argv[1] == "--timed-copy":  # the WAN comparison's helper, run in a namespace
        return timed_copy(*sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run, figures only indicative")
    ap.add_argument("--only", default="loopback,wan,dataset,order,plain",
                    help="comma-separated subset of: loopback, wan, dataset, order, plain")
    ap.add_argument("--reps", type=int, default=None, help="repetitions for loopback/plain (median)")
    ap.add_argument("--parallel-files", type=int, default=8, help="files at once in the DMS API transfers")
    ap.add_argument("--streams", type=int, default=4, help="streams per file in the DMS API transfers")
    ap.add_argument("--n-small", type=int, default=None, help="small files in the dataset (default 1000; quick 100)")
    ap.add_argument("--big-mib", type=int, default=None, help="size of each of the 4 large dataset files in MiB "
                    "(default 512; quick 32)")
    ap.add_argument("--workdir", type=Path, default=None, help="where files go (default: a temporary directory)")
    a = ap.parse_args()
    only = {s.strip() for s in a.only.split(",") if s.strip()}
    unknown = only - {"loopback", "wan", "dataset", "order", "plain"}
    if unknown:
        ap.error(f"--only: unknown comparison(s) {sorted(unknown)}")
    for tool, need in (("curl", {"loopback", "plain"}), ("iperf3", {"wan", "plain"}), ("rclone", {"dataset"})):
        if only & need and not shutil.which(tool):
            raise SystemExit(f"{tool}: not installed (apt-get install {tool}); needed by {sorted(only & need)}")
    reps = a.reps or (1 if a.quick else 3)
    work = Path(tempfile.mkdtemp(prefix="dmts-bench-", dir=a.workdir))
    try:
        pki_dir = work / "pki"
        certs = make_pki(pki_dir, ("127.0.0.1", *WAN_ADDR))
        if "loopback" in only:
            bench_loopback(work, pki_dir, certs, (256 if a.quick else 2048) * MiB, reps)
        if "wan" in only:
            bench_wan(work, pki_dir, (64 if a.quick else 512) * MiB, 4 if a.quick else 10)
        if only & {"dataset", "order"}:
            n_small = a.n_small if a.n_small is not None else (100 if a.quick else 1000)
            big = a.big_mib if a.big_mib is not None else (32 if a.quick else 512)
            bench_dataset(work, pki_dir, certs, n_small, big * MiB,
                          a.parallel_files, a.streams, only)
        if "plain" in only:
            bench_plain(work, pki_dir, (256 if a.quick else 2048) * MiB, reps)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
