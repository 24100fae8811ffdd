"""The source endpoint over a real socket (TLS and plain), and the checksum/path/manifest helpers it uses."""
from __future__ import annotations

import base64
import hashlib
import http.client
import json
import zlib

import pytest

from dms import checksum as ck
from dms.manifest import file_entries
from dms.paths import PathError, resolve_under, split_request_path
from dms.source import RangeError, make_source_server, parse_range


@pytest.mark.parametrize("header,size,want", [
    ("bytes=0-9", 100, (0, 10)), ("bytes=90-", 100, (90, 100)), ("bytes=-10", 100, (90, 100)),
    ("bytes=-500", 100, (0, 100)), ("bytes=95-200", 100, (95, 100)), ("BYTES = 1-1", 100, (1, 2)),
])
def test_parse_range(header, size, want):
    assert parse_range(header, size) == want


@pytest.mark.parametrize("header,size,status", [
    ("bytes=100-", 100, 416), ("bytes=-0", 100, 416), ("bytes=0-", 0, 416), ("bytes=5-1", 100, 400),
    ("bytes=a-b", 100, 400), ("items=0-1", 100, 400), ("bytes=0-1,4-5", 100, 400), ("bytes=-", 100, 400),
])
def test_parse_range_errors(header, size, status):
    with pytest.raises(RangeError) as e:
        parse_range(header, size)
    assert e.value.status == status and header in str(e.value)


def test_checksum_forms():
    data = b"hello world" * 1000
    assert ck.parse_want_digest("SHA256;q=0.3, ADLER32, md5;q=0, crc32c") == ["adler32", "sha-256"]
    assert ck.parse_want_digest("sha-256, Adler32;q=0.9, MD5;q=0.1") == ["sha-256", "adler32", "md5"]
    hexes = {"adler32": f"{zlib.adler32(data):08x}", "md5": hashlib.md5(data).hexdigest(),
             "sha-256": hashlib.sha256(data).hexdigest()}
    header = ck.format_digest(hexes)
    assert f"adler32={zlib.adler32(data):08x}" in header
    assert "sha-256=" + base64.b64encode(hashlib.sha256(data).digest()).decode() in header
    assert ck.parse_digest(header.upper().replace("SHA-256", "SHA-256")) is not None
    assert ck.parse_digest(header) == hexes
    a, b = data[:777], data[777:]
    assert ck.adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(data)
    assert ck.parse_checksum("ADLER32:1") == ("adler32", "00000001")
    for bad in ("adler32", "crc:00", "md5:xyz", "sha256:00"):
        with pytest.raises(ck.ChecksumError, match="checksum"):
            ck.parse_checksum(bad)


def test_paths(tmp_path):
    (tmp_path / "root" / "d").mkdir(parents=True)
    (tmp_path / "root" / "out").symlink_to(tmp_path)
    (tmp_path / "root" / "in").symlink_to(tmp_path / "root" / "d")
    root = tmp_path / "root"
    assert resolve_under(root, "/d/x") == root / "d" / "x"
    assert resolve_under(root, "/in/x") == root / "d" / "x"
    assert split_request_path("/a/./b/") == ["a", "b"]
    for bad, reason, status in [("/../x", "'..'", 400), ("/d/../../x", "'..'", 400), ("//etc/passwd", "absolute", 400),
                                ("/a\x00b", "NUL", 400), ("/out/elsewhere", "leaves the served root", 403)]:
        with pytest.raises(PathError, match=reason) as e:
            resolve_under(root, bad)
        assert e.value.status == status and repr(bad) in str(e.value)


@pytest.fixture
def tree(tmp_path, make_file):
    root = tmp_path / "root"
    data = make_file(root / "ds" / "a.bin", 1_500_000, seed=3)
    make_file(root / "ds" / "sub" / "b.bin", 1000, seed=4)
    (root / "ds" / "a.bin").chmod(0o640)
    (root / "ds" / "escape").symlink_to(tmp_path)
    return root, data


def _get(port, path, ctx=None, headers=None, method="GET"):
    conn = (http.client.HTTPSConnection("localhost", port, context=ctx, timeout=30) if ctx
            else http.client.HTTPConnection("127.0.0.1", port, timeout=30))
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


@pytest.mark.parametrize("use_tls", [True, False])
def test_source_ranges_digest_manifest(tree, serve, server_tls, client_ctx, use_tls):
    root, data = tree
    srv = serve(make_source_server(root, tls=server_tls if use_tls else None))
    ctx = client_ctx() if use_tls else None
    resp, body = _get(srv.port, "/ds/a.bin", ctx)
    assert resp.status == 200 and body == data
    assert resp.getheader("X-Daaas-Mode") == "0640" and float(resp.getheader("X-Daaas-Mtime")) == 1_600_000_000
    resp, body = _get(srv.port, "/ds/a.bin", ctx, {"Range": "bytes=1000-1999999"})
    assert resp.status == 206 and body == data[1000:]
    assert resp.getheader("Content-Range") == f"bytes 1000-{len(data) - 1}/{len(data)}"
    resp, body = _get(srv.port, "/ds/a.bin", ctx, {"Range": "bytes=-100"})
    assert resp.status == 206 and body == data[-100:]
    resp, body = _get(srv.port, "/ds/a.bin", ctx, {"Range": f"bytes={len(data)}-"})
    assert resp.status == 416 and resp.getheader("Content-Range") == f"bytes */{len(data)}"
    assert b"past the end" in body
    resp, _ = _get(srv.port, "/ds/a.bin", ctx, {"Want-Digest": "SHA256;q=0.5, ADLER32, md5"}, method="HEAD")
    assert ck.parse_digest(resp.getheader("Digest")) == {
        "adler32": f"{zlib.adler32(data):08x}", "sha-256": hashlib.sha256(data).hexdigest(),
        "md5": hashlib.md5(data).hexdigest()}
    for path in ("/ds/?manifest", "/.manifest/ds"):
        resp, body = _get(srv.port, path, ctx)
        m = json.loads(body)
        assert [e["path"] for e in m["entries"]] == ["ds/a.bin", "ds/sub"]  # the escaping symlink is left out
        assert m["entries"][0]["checksum"] == f"adler32:{zlib.adler32(data):08x}"
        assert m["entries"][0]["mode"] == 0o640 and m["entries"][0]["size"] == len(data)
    resp, body = _get(srv.port, "/.manifest/ds?recursive=1", ctx)
    assert [f.path for f in file_entries(json.loads(body))] == ["ds/a.bin", "ds/sub/b.bin"]
    resp, body = _get(srv.port, "/ds", ctx)
    assert resp.status == 403 and b"manifest" in body
    resp, _ = _get(srv.port, "/ds/missing", ctx)
    assert resp.status == 404
    assert sum(e - s for _, s, e in srv.server.ranges_served) == len(data) * 2 - 1000 + 100
