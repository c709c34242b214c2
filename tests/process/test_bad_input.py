"""Bad input against a real twistd: oversized bodies refused early, malformed forms and media refused by name."""

from __future__ import annotations

import socket
import time

from tests.process.harness import Deployment, request, send_webhook, webhook_params

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def raw_exchange(base: str, data: bytes, timeout: float = 2.0) -> tuple[bytes, float, bool]:
    """Send ``data`` on a fresh connection and read until the server closes it or ``timeout`` passes.

    Returns what was read, the seconds it took, and whether the server closed the connection.
    """
    host, port = base.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        closed = False
        deadline = started + timeout
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
    return received, time.monotonic() - started, closed


def head(length: bytes, path: bytes = b"/queue/open") -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n" + length + b"\r\n")


def test_bad_input(deployment: Deployment) -> None:
    """Oversized bodies get 413 without being read; non-UTF-8 forms and missing media are 400 naming the field."""
    web, base = deployment.twistd("--app", "app", "--role", "web")
    web.wait_healthy(base)

    # a Content-Length of 100 MB with a few bytes of body: 413 at once, connection closed, body never sent
    answer, took, closed = raw_exchange(base, head(b"Content-Length: 100000000\r\n") + b"Body=hi")
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert b"Connection: close" in answer
    assert closed and took < 2.0

    # the same with Expect: 100-continue: the 413 alone, never an invitation to send the body
    answer, took, closed = raw_exchange(base, head(b"Content-Length: 100000000\r\nExpect: 100-continue\r\n"))
    assert answer.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in answer, answer
    assert closed and took < 2.0

    # a chunked body is refused once it passes 64 KiB, while the client is still sending
    piece = b"x" * 8192
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(9))
    answer, took, closed = raw_exchange(base, head(b"Transfer-Encoding: chunked\r\n") + chunks)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert closed and took < 2.0

    # a form body that is not UTF-8, raw or percent-encoded
    for body in (b"MessageSid=SMx1&From=%2B15551234567&Body=\xff\xfe", b"MessageSid=SMx2&From=%2B1&Body=%ff%fe"):
        status, _, text = request("POST", f"{base}/queue/open", body, FORM)
        assert status == 400 and b"UTF-8" in text, (status, text)

    # NumMedia that media parameters do not match, and absurd NumMedia values
    status, text = send_webhook(base, "open", webhook_params("SMmedia", "look", NumMedia="5"), token=None)
    assert status == 400 and "MediaUrl0" in text, (status, text)
    params = webhook_params("SMmedia2", "look", NumMedia="2", MediaUrl0="https://example.com/a.png")
    status, text = send_webhook(base, "open", params, token=None)
    assert status == 400 and "MediaUrl1" in text, (status, text)
    for count in ("-1", "999999999999", "1e9", "9" * 5000):
        status, text = send_webhook(base, "open", webhook_params("SMabsurd", "hi", NumMedia=count), token=None)
        assert status == 400 and "NumMedia" in text, (count, status, text)

    # the process is unharmed: still healthy, no traceback, no secret in the log, exits 0 on SIGTERM
    assert request("GET", f"{base}/health")[0] == 200
    assert "Traceback" not in web.output
    assert "test-auth-token" not in web.output
    assert web.terminate() == 0
