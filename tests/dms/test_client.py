"""The HTTP-TPC client: marker parsing on text, then copies through a real DMTS pulling from a real
source over mutual TLS, and the error paths (refusal, `failure:` line, no final line)."""
from __future__ import annotations

import http.server

import pytest

from dms import client

MARKERS = """Perf Marker
\tTimestamp: 1700000000
\tStripe Index: 0
\tStripe Bytes Transferred: 100
\tTotal Stripe Count: 2
End
Perf Marker
\tTimestamp: 1700000001
\tStripe Index: 1
\tStripe Bytes Transferred: 50
\tTotal Stripe Count: 2
End

success: Created
"""


def test_parse_markers():
    items = list(client.parse_markers(MARKERS.splitlines(keepends=True)))
    assert [k for k, _ in items] == ["marker", "marker", "final"]
    assert items[0][1]["Stripe Bytes Transferred"] == "100" and items[1][1]["Stripe Index"] == "1"
    assert items[2][1] == "success: Created"


class _Fake(http.server.BaseHTTPRequestHandler):
    """A stand-in destination for the error paths a real DMTS should never take."""

    protocol_version = "HTTP/1.1"
    body = b""
    status = 202

    def do_COPY(self):  # noqa: N802
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *a):
        pass


@pytest.fixture
def fake(serve):
    def start(status, body):
        handler = type("H", (_Fake,), {"status": status, "body": body})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        return f"http://127.0.0.1:{serve(srv).port}/f"
    return start


def test_copy_error_paths(fake):
    seen = []
    url = fake(202, MARKERS.encode())
    res = client.copy("https://src/x", url, streams=2, on_progress=seen.append)
    assert res.final == "success: Created" and res.bytes_done == 150 and seen[-1].bytes_done == 150
    with pytest.raises(client.CopyError, match="disk full") as e:
        client.copy("https://src/x", fake(202, MARKERS.replace("success: Created", "failure: disk full").encode()))
    assert e.value.reason == "disk full"
    with pytest.raises(client.CopyError, match="without a success or failure"):
        client.copy("https://src/x", fake(202, MARKERS.rsplit("success", 1)[0].encode()))
    with pytest.raises(client.CopyError, match="403") as e:
        client.copy("https://src/x", fake(403, b"subject not allowed"))
    assert e.value.status == 403
    with pytest.raises(ValueError, match="streams"):
        client.copy("https://src/x", url, streams=0)
    with pytest.raises(ValueError, match="source"):
        client.copy("file:///etc/passwd", url)


def test_cancel_before_start_raises_cancelled(fake):
    job = client.TpcCopy("https://src/x", fake(202, MARKERS.encode()))
    job.cancel()
    with pytest.raises(client.CopyCancelled):
        job.run()


def test_real_copy_with_streams_and_checksum(tmp_path, serve, server_tls, service_client_ctx, client_ctx,
                                             make_file):
    from dms.checksum import file_checksums
    from dms.dmts import make_dmts_server
    from dms.source import make_source_server
    src, dst = tmp_path / "src", tmp_path / "dst"
    dst.mkdir()
    data = make_file(src / "d" / "f.bin", 5_000_000, seed=7)
    source = serve(make_source_server(src, tls=server_tls))
    dmts = serve(make_dmts_server(dst, tls=server_tls, client_tls=service_client_ctx))
    seen = []
    s_url, d_url = f"https://127.0.0.1:{source.port}/d/f.bin", f"https://127.0.0.1:{dmts.port}/d/f.bin"
    res = client.copy(s_url, d_url, streams=4, tls=client_ctx(), on_progress=seen.append,
                      checksum="adler32:" + file_checksums(src / "d" / "f.bin", ["adler32"])["adler32"])
    assert res.final.startswith("success") and (dst / "d" / "f.bin").read_bytes() == data
    assert seen and seen[-1].bytes_done <= len(data)
    with pytest.raises(client.CopyError, match="(?i)checksum|adler32"):
        client.copy(s_url, f"https://127.0.0.1:{dmts.port}/d/g.bin", tls=client_ctx(), checksum="adler32:00000001")
    assert not (dst / "d" / "g.bin").exists()
    entries = client.fetch_manifest(f"https://127.0.0.1:{source.port}", "d", tls=client_ctx())
    assert [(e.path, e.size) for e in entries] == [("d/f.bin", 5_000_000)]
