"""The DMTS over real sockets: pull copies, streams, verification, metadata, request validation, WebDAV."""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import stat
import zlib

import pytest

from dms.dmts import combined_adler32, make_dmts_server, missing_ranges
from dms.source import make_source_server


def copy(port, path, headers, ctx=None, method="COPY"):
    conn = (http.client.HTTPSConnection("localhost", port, context=ctx, timeout=60) if ctx
            else http.client.HTTPConnection("127.0.0.1", port, timeout=60))
    conn.request(method, path, headers=headers)
    resp = conn.getresponse()
    body = resp.read().decode(errors="replace")
    conn.close()
    return resp, body


@pytest.fixture
def plain(tmp_path, serve, make_file):
    src_root, dst_root = tmp_path / "src", tmp_path / "dst"
    dst_root.mkdir()
    data = make_file(src_root / "f.bin", 4 * 1024 * 1024 + 3, seed=11)
    (src_root / "f.bin").chmod(0o604)
    source = serve(make_source_server(src_root, tls=None))
    dmts = serve(make_dmts_server(dst_root, tls=None))
    return src_root, dst_root, data, source, dmts


def test_range_bookkeeping():
    pieces = [(0, 10, zlib.adler32(b"a" * 10)), (20, 30, zlib.adler32(b"c" * 10))]
    assert missing_ranges(40, pieces) == [(10, 20), (30, 40)]
    assert combined_adler32(30, pieces) is None
    pieces.append((10, 20, zlib.adler32(b"b" * 10)))
    assert combined_adler32(30, pieces) == zlib.adler32(b"a" * 10 + b"b" * 10 + b"c" * 10)


def test_pull_with_streams_markers_and_metadata(plain):
    src_root, dst_root, data, source, dmts = plain
    resp, body = copy(dmts.port, "/deep/dir/f.bin", {
        "Source": f"http://127.0.0.1:{source.port}/f.bin", "X-Number-Of-Streams": "4"})
    assert resp.status == 202 and resp.getheader("Transfer-Encoding") == "chunked"
    assert body.endswith("success: Created\n"), body
    blocks = re.findall(r"Perf Marker\n\tTimestamp: \d+\n\tStripe Index: (\d)\n\tStripe Bytes Transferred: (\d+)\n"
                        r"\tTotal Stripe Count: 4\nEnd\n", body)
    final = {int(i): int(n) for i, n in blocks}
    assert sorted(final) == [0, 1, 2, 3] and sum(final.values()) == len(data)
    assert all(n > 0 for n in final.values())  # every stream carried part of the file
    out = dst_root / "deep" / "dir" / "f.bin"
    assert out.read_bytes() == data
    st = out.stat()
    assert stat.S_IMODE(st.st_mode) == 0o604 and st.st_mtime == 1_600_000_000
    assert [p.name for p in out.parent.iterdir()] == ["f.bin"]  # no part file or journal left behind
    # the source served disjoint ranges that together are exactly the file: nothing fetched twice
    served = sorted((s, e, 0) for _, s, e in source.server.ranges_served)
    assert len(served) >= 4 and missing_ranges(len(data), served) == []
    assert sum(e - s for s, e, _ in served) == len(data)


def test_client_checksum_metadata_and_forwarded_headers(plain, proxy):
    src_root, dst_root, data, source, dmts = plain
    relay = proxy(source.port)
    good = f"md5:{hashlib.md5(data).hexdigest()}"
    resp, body = copy(dmts.port, "/g.bin", {
        "Source": f"http://127.0.0.1:{relay.port}/f.bin", "X-Number-Of-Streams": "2", "X-Daaas-Checksum": good,
        "X-Daaas-Mode": "0600", "X-Daaas-Mtime": "1500000000.5", "X-Daaas-Owner": "1234:2345",
        "TransferHeaderAuthorization": "Bearer t0k",
        "TransferHeaderX-Trace": "abc"})
    assert body.endswith("success: Created\n"), body
    assert (dst_root / "g.bin").read_bytes() == data
    st = (dst_root / "g.bin").stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_mtime == 1_500_000_000.5
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (1234, 2345)
    sent = bytes(relay.upstream_data)
    assert sent.count(b"Authorization: Bearer t0k") >= 2 and b"X-Trace: abc" in sent  # on HEAD and every GET
    assert b"TransferHeader" not in sent

    bad = "adler32:" + f"{(zlib.adler32(data) + 1) & 0xffffffff:08x}"
    resp, body = copy(dmts.port, "/h.bin", {"Source": f"http://127.0.0.1:{source.port}/f.bin",
                                            "X-Daaas-Checksum": bad})
    assert resp.status == 202 and "failure: checksum mismatch" in body
    assert sorted(p.name for p in dst_root.iterdir()) == ["g.bin"]


def test_source_digest_mismatch_is_a_failure(plain, monkeypatch):
    src_root, dst_root, data, source, dmts = plain
    from dms import checksum as ck
    real_get = ck.ChecksumCache.get
    monkeypatch.setattr(ck.ChecksumCache, "get", lambda self, p, a, st=None: "0" * len(real_get(self, p, a, st)))
    resp, body = copy(dmts.port, "/x.bin", {"Source": f"http://127.0.0.1:{source.port}/f.bin"})
    assert "failure: checksum mismatch: adler32 of the received file" in body
    assert list(dst_root.iterdir()) == []


@pytest.mark.parametrize("headers,status,reason", [
    ({}, 400, "needs a Source"),
    ({"Source": "http://127.0.0.1:1/f", "Destination": "http://127.0.0.1:1/g"}, 400, "both Source and Destination"),
    ({"Destination": "http://127.0.0.1:1/g"}, 501, "push mode"),
    ({"Source": "http://127.0.0.1:1/f", "X-Number-Of-Streams": "0"}, 400, "X-Number-Of-Streams"),
    ({"Source": "http://127.0.0.1:1/f", "X-Number-Of-Streams": "99"}, 400, "X-Number-Of-Streams"),
    ({"Source": "http://127.0.0.1:1/f", "X-Daaas-Checksum": "crc:1"}, 400, "X-Daaas-Checksum"),
    ({"Source": "http://127.0.0.1:1/f", "X-Daaas-Mode": "rwx"}, 400, "X-Daaas-Mode"),
    ({"Source": "http://127.0.0.1:1/f", "Overwrite": "maybe"}, 400, "Overwrite"),
    ({"Source": "ftp://127.0.0.1/f"}, 400, "http:// or https://"),
])
def test_bad_copy_requests(plain, headers, status, reason):
    _, dst_root, _, _, dmts = plain
    resp, body = copy(dmts.port, "/new.bin", headers)
    assert resp.status == status and reason in body, body
    assert list(dst_root.iterdir()) == []


def test_overwrite_and_webdav(plain):
    src_root, dst_root, data, source, dmts = plain
    (dst_root / "old.bin").write_bytes(b"old")
    resp, body = copy(dmts.port, "/old.bin", {"Source": f"http://127.0.0.1:{source.port}/f.bin", "Overwrite": "F"})
    assert resp.status == 412 and (dst_root / "old.bin").read_bytes() == b"old"
    resp, body = copy(dmts.port, "/old.bin", {"Source": f"http://127.0.0.1:{source.port}/f.bin"})
    assert body.endswith("success: Created\n") and (dst_root / "old.bin").read_bytes() == data
    resp, body = copy(dmts.port, "/", {"Depth": "1"}, method="PROPFIND")
    assert resp.status == 207 and f"<D:getcontentlength>{len(data)}</D:getcontentlength>" in body
    resp, body = copy(dmts.port, "/nothing", {"Depth": "0"}, method="PROPFIND")
    assert resp.status == 404
    resp, _ = copy(dmts.port, "/old.bin", {"Want-Digest": "adler32"}, method="HEAD")
    assert resp.getheader("Digest") == f"adler32={zlib.adler32(data):08x}"
    resp, body = copy(dmts.port, "/old.bin", {}, method="POST")
    assert resp.status == 501
    resp, _ = copy(dmts.port, "/old.bin", {}, method="DELETE")
    assert resp.status == 204 and not (dst_root / "old.bin").exists()
    resp, _ = copy(dmts.port, "/old.bin", {}, method="DELETE")
    assert resp.status == 404
    resp, _ = copy(dmts.port, "/newdir", {}, method="MKCOL")
    assert resp.status == 201 and (dst_root / "newdir").is_dir()


def test_pull_over_mutual_tls(tmp_path, serve, make_file, server_tls, service_client_ctx, client_ctx):
    src_root, dst_root = tmp_path / "src", tmp_path / "dst"
    dst_root.mkdir()
    data = make_file(src_root / "a" / "f.bin", 2 * 1024 * 1024, seed=5)
    source = serve(make_source_server(src_root, tls=server_tls))
    dmts = serve(make_dmts_server(dst_root, tls=server_tls, client_tls=service_client_ctx))
    resp, body = copy(dmts.port, "/f.bin", {"Source": f"https://localhost:{source.port}/a/f.bin",
                                            "X-Number-Of-Streams": "3"}, ctx=client_ctx())
    assert body.endswith("success: Created\n"), body
    assert (dst_root / "f.bin").read_bytes() == data
    snap = dmts.server.transfer_status()[0]
    assert snap["state"] == "succeeded" and snap["bytes"] == len(data) and snap["streams"] == 3
    assert os.listdir(dst_root) == ["f.bin"]



@pytest.mark.parametrize("size,streams", [(0, 1), (1, 4), (300_001, 8)])
def test_tiny_and_empty_files(tmp_path, serve, make_file, size, streams):
    data = make_file(tmp_path / "src" / "t.bin", size, seed=size)
    (tmp_path / "dst").mkdir()
    source = serve(make_source_server(tmp_path / "src", tls=None))
    dmts = serve(make_dmts_server(tmp_path / "dst", tls=None))
    resp, body = copy(dmts.port, "/t.bin", {"Source": f"http://127.0.0.1:{source.port}/t.bin",
                                            "X-Number-Of-Streams": str(streams)})
    assert body.endswith("success: Created\n"), body
    assert (tmp_path / "dst" / "t.bin").read_bytes() == data
