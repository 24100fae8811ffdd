"""One TLS handshake over loopback, for tests of what a server context lets through."""
from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, seen: Callable[[ssl.SSLSocket], object],
              timeout_s: float = 10.0) -> tuple[object, Exception | None]:
    """(what `seen` read from the server's socket, or the server's exception; the client's exception or None)."""
    lsock = socket.create_server(("127.0.0.1", 0))
    result = {}

    def serve():
        conn, _ = lsock.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as s:
                result["seen"] = seen(s)
                s.sendall(b"ok")
        except (ssl.SSLError, OSError) as e:
            result["seen"] = e

    t = threading.Thread(target=serve)
    t.start()
    err = None
    try:
        with socket.create_connection(lsock.getsockname()) as raw, \
                client_ctx.wrap_socket(raw, server_hostname="localhost") as c:
            if c.recv(2) != b"ok":
                err = ConnectionError("no data")
    except (ssl.SSLError, OSError) as e:
        err = e
    t.join(timeout_s)
    lsock.close()
    return result.get("seen"), err
