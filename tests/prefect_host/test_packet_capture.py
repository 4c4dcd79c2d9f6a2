"""The e2e tests' packet capture sees what crosses an interface: checked on loopback."""

from __future__ import annotations

import http.server
import socket
import threading

from packet_capture import PacketCapture


def test_a_secret_in_a_plaintext_request_is_found_and_tls_is_told_apart():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = b"c2VjcmV0LWNhbmFyeQ=="
    try:
        with PacketCapture("lo", [secret], server_ip="127.0.0.1", watch_ports={port}) as capture:
            # Split across two segments: only the reassembled flow holds the whole secret.
            with socket.create_connection(("127.0.0.1", port)) as plain:
                plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + secret[:8])
                plain.recv(0)
                threading.Event().wait(0.1)
                plain.sendall(secret[8:] + b"\r\n\r\n")
                plain.recv(4096)
            with socket.create_connection(("127.0.0.1", port)) as tls_like:
                tls_like.sendall(b"\x16\x03\x01\x00\x05hello")
            threading.Event().wait(0.5)
    finally:
        server.shutdown()
        server.server_close()
    assert capture.frames > 0 and capture.dropped == 0
    assert capture.hits == []  # never whole in one segment
    ((needle, flow),) = capture.plaintext_hits()
    assert needle == secret and flow.server == ("127.0.0.1", port) and not flow.tls
    assert sum(1 for f in capture.flows.values() if f.tls) == 1
