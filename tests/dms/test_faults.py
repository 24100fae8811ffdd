"""Faults during a pull: streams cut, the source stopping, the client leaving, the disk filling up.

No corrupt or partial file may ever appear under its final name, and a resumed transfer must fetch
only the ranges that are missing (asserted on the ranges the source was asked for).
"""
from __future__ import annotations

import errno
import http.client
import os
import socket
import subprocess
import threading
import time

import pytest

from dms.dmts import make_dmts_server, part_paths
from dms.source import make_source_server


def copy(port, path, headers, ctx=None):
    conn = (http.client.HTTPSConnection("localhost", port, context=ctx, timeout=60) if ctx
            else http.client.HTTPConnection("127.0.0.1", port, timeout=60))
    conn.request("COPY", path, headers=headers)
    resp = conn.getresponse()
    body = resp.read().decode(errors="replace")
    conn.close()
    return resp.status, body


def wait_for(cond, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_streams_cut_mid_transfer_are_resumed_from_the_cut(tmp_path, serve, make_file, proxy, server_tls,
                                                            service_client_ctx, client_ctx):
    data = make_file(tmp_path / "src" / "f.bin", 3 * 1024 * 1024, seed=21)
    (tmp_path / "dst").mkdir()
    source = serve(make_source_server(tmp_path / "src", tls=server_tls))
    cut = 300_000
    # The first six connections are cut after 300 kB. HEADs end before that; the DMTS keeps connections
    # alive, so a stream may go on a connection a HEAD used. There are at most five connections before
    # the first retry (the HEADs and four streams), so each stream is cut at least once in its first
    # chunk (384 KiB), and a retry or a later chunk that lands on one of the six is cut again.
    relay = proxy(source.port, cut_after=cut, cut_count=6)
    dmts = serve(make_dmts_server(tmp_path / "dst", tls=server_tls, client_tls=service_client_ctx))
    status, body = copy(dmts.port, "/f.bin", {"Source": f"https://localhost:{relay.port}/f.bin",
                                              "X-Number-Of-Streams": "4"}, client_ctx())
    assert status == 202 and body.endswith("success: Created\n"), body
    assert (tmp_path / "dst" / "f.bin").read_bytes() == data
    # Each retry asks only from the last byte written before its stream was cut, not from the chunk's start.
    starts: dict[int, list[int]] = {}
    for _, s, e in source.server.ranges_served:
        starts.setdefault(e, []).append(s)
    assert sum(1 for v in starts.values() if len(v) >= 2) >= 4  # every stream was cut
    assert all(a < b for v in starts.values() for a, b in zip(v, v[1:], strict=False))
    # On the wire: the file, plus at most what each cut connection carried, plus TLS framing and handshakes.
    assert relay.down_bytes <= len(data) * 1.01 + relay.cuts * cut + 6 * 8192
    assert [p.name for p in (tmp_path / "dst").iterdir()] == ["f.bin"]


@pytest.fixture
def slow_plain(tmp_path, serve, make_file, proxy):
    """A plain source behind a relay that gives each connection 1.5 MB/s, and a DMTS that retries quickly."""
    data = make_file(tmp_path / "src" / "f.bin", 4 * 1024 * 1024, seed=22)
    (tmp_path / "dst").mkdir()
    source = serve(make_source_server(tmp_path / "src", tls=None))
    relay = proxy(source.port, rate=1.5e6)
    dmts = serve(make_dmts_server(tmp_path / "dst", tls=None))
    dmts.server.retries = 2
    return data, source, relay, dmts, tmp_path / "dst"


def test_source_stops_then_a_new_copy_fetches_only_missing_ranges(slow_plain):
    data, source, relay, dmts, dst = slow_plain
    headers = {"Source": f"http://127.0.0.1:{relay.port}/f.bin", "X-Number-Of-Streams": "2"}
    result = {}

    def run():
        result["status"], result["body"] = copy(dmts.port, "/f.bin", headers)

    t = threading.Thread(target=run)
    t.start()
    wait_for(lambda: dmts.server.transfer_status() and dmts.server.transfer_status()[0]["bytes"] > 1_000_000,
             what="a megabyte to arrive")
    relay.block()  # the source goes away mid-transfer
    t.join(60)
    assert "failure: stream" in result["body"] and "gave up" in result["body"], result
    part, journal = part_paths(dst / "f.bin")
    assert not (dst / "f.bin").exists()
    assert part.exists() and journal.exists()  # kept for resumption, under a name that is not the final one

    relay.unblock()
    relay.rate = None
    first = list(source.server.ranges_served)
    status, body = copy(dmts.port, "/f.bin", headers)
    assert body.endswith("success: Created\n"), body
    assert (dst / "f.bin").read_bytes() == data  # adler32 of old and new pieces matched the source's Digest
    snap = dmts.server.transfer_status()[-1]
    assert snap["resumed_bytes"] > 1_000_000
    second = source.server.ranges_served[len(first):]
    fetched = sum(e - s for _, s, e in second)
    assert fetched == len(data) - snap["resumed_bytes"]  # only the missing ranges were asked for
    assert sorted(p.name for p in dst.iterdir()) == ["f.bin"]


def test_client_disconnect_cancels_and_removes_the_partial_file(slow_plain):
    data, source, relay, dmts, dst = slow_plain
    sock = socket.create_connection(("127.0.0.1", dmts.port))
    sock.sendall(f"COPY /f.bin HTTP/1.1\r\nHost: x\r\nSource: http://127.0.0.1:{relay.port}/f.bin\r\n"
                 "X-Number-Of-Streams: 2\r\n\r\n".encode())
    assert sock.recv(100).startswith(b"HTTP/1.1 202")
    wait_for(lambda: dmts.server.transfer_status()[0]["bytes"] > 500_000, what="data to arrive")
    sock.close()
    wait_for(lambda: dmts.server.transfer_status()[0]["state"] == "cancelled", what="the transfer to be cancelled")
    wait_for(lambda: not list(dst.iterdir()), timeout=5, what="the partial file to be removed")


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    assert out.returncode == 0, f"cannot mount a tmpfs (the fault tests need root): {out.stderr}"
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_fails_cleanly(tmp_path, small_disk, serve, make_file):
    make_file(tmp_path / "src" / "big.bin", 3 * 1024 * 1024, seed=23)  # bigger than the 2 MiB disk
    small = make_file(tmp_path / "src" / "small.bin", 1024 * 1024, seed=24)
    source = serve(make_source_server(tmp_path / "src", tls=None))
    dmts = serve(make_dmts_server(small_disk, tls=None))
    status, body = copy(dmts.port, "/big.bin", {"Source": f"http://127.0.0.1:{source.port}/big.bin",
                                                "X-Number-Of-Streams": "2"})
    assert status == 202 and "failure: no space left on device" in body, body
    assert list(small_disk.iterdir()) == []
    # The disk is usable afterwards: what fits still arrives intact.
    status, body = copy(dmts.port, "/small.bin", {"Source": f"http://127.0.0.1:{source.port}/small.bin"})
    assert body.endswith("success: Created\n") and (small_disk / "small.bin").read_bytes() == small


def test_cancel_by_id_reports_failure_and_removes_the_partial_file(slow_plain):
    data, source, relay, dmts, dst = slow_plain
    result = {}

    def run():
        result["status"], result["body"] = copy(dmts.port, "/f.bin", {"Source": f"http://127.0.0.1:{relay.port}/f.bin"})

    t = threading.Thread(target=run)
    t.start()
    wait_for(lambda: dmts.server.transfer_status() and dmts.server.transfer_status()[0]["bytes"] > 300_000,
             what="data to arrive")
    assert dmts.server.cancel(dmts.server.transfer_status()[0]["id"], "stopped by the operator")
    t.join(30)
    assert result["body"].endswith("failure: stopped by the operator\n"), result
    assert dmts.server.transfer_status()[0]["state"] == "cancelled"
    assert list(dst.iterdir()) == []
    assert not dmts.server.cancel("no-such-id")


def test_disk_filling_mid_transfer_fails_cleanly(tmp_path, small_disk, serve, make_file, monkeypatch):
    """A file system without fallocate: the disk fills while the streams write, not before."""
    def no_fallocate(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", no_fallocate)
    make_file(tmp_path / "src" / "big.bin", 3 * 1024 * 1024, seed=25)
    source = serve(make_source_server(tmp_path / "src", tls=None))
    dmts = serve(make_dmts_server(small_disk, tls=None))
    status, body = copy(dmts.port, "/big.bin", {"Source": f"http://127.0.0.1:{source.port}/big.bin",
                                                "X-Number-Of-Streams": "3"})
    assert status == 202 and "failure: no space left on device writing big.bin" in body, body
    assert list(small_disk.iterdir()) == []


def test_a_changed_source_is_not_resumed(slow_plain, make_file):
    data, source, relay, dmts, dst = slow_plain
    headers = {"Source": f"http://127.0.0.1:{relay.port}/f.bin", "X-Number-Of-Streams": "2"}
    t = threading.Thread(target=copy, args=(dmts.port, "/f.bin", headers))
    t.start()
    wait_for(lambda: dmts.server.transfer_status() and dmts.server.transfer_status()[0]["bytes"] > 500_000,
             what="data to arrive")
    relay.block()
    t.join(60)
    assert part_paths(dst / "f.bin")[1].exists()
    relay.unblock()
    relay.rate = None
    new = make_file(source.server.root / "f.bin", len(data), seed=99)  # same size, new content and mtime
    os.utime(source.server.root / "f.bin", (1_700_000_000, 1_700_000_000))
    status, body = copy(dmts.port, "/f.bin", headers)
    assert body.endswith("success: Created\n"), body
    assert dmts.server.transfer_status()[-1]["resumed_bytes"] == 0
    assert (dst / "f.bin").read_bytes() == new
