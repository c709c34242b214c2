"""Open-loop webhook sender for bench/latency.py and bench/memory.py (runs on the load core).

    python bench/sender.py --url URL --out FILE (--rate R --duration S | --count N --window W)
                           [--warmup S] [--connections K]

With ``--rate``, sends signed webhooks on a fixed schedule (R per second for S seconds,
after ``--warmup`` seconds at the same rate), each on an idle keep-alive connection of a
pool of K (a new one is opened when all are busy, so a slow answer never delays the
schedule).  The Body is ``"t <time.time() at send> <n>"`` (``"w ..."`` during warm-up);
the signature is computed after the time is taken, as part of the send.

With ``--count``, sends N webhooks as fast as K connections allow (closed loop), never
more than ``--window`` ahead of the replies counted by ``--progress-redis PORT KEY``
(LLEN of the completed list), so the queue in Redis stays short.

Writes a JSON summary (sent, answered, non-200, webhook answer times, schedule lateness)
to FILE.  Standard library plus pyrowire.signature only.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Redis, percentile, signed_webhook


class Conn:
    def __init__(self, host: str, port: int, sel: selectors.BaseSelector) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buf = b""
        self.sent_at: float | None = None
        sel.register(self.sock, selectors.EVENT_READ, self)

    def response(self) -> int | None:
        """The status of a complete response in the buffer (consumed), or None."""
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = self.buf[:head_end].decode("latin-1")
        length, chunked = 0, False
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:  # twisted.web answers a Deferred body chunked: wait for the last chunk
            last = self.buf.find(b"\r\n0\r\n\r\n", head_end + 2)
            if last < 0:
                return None
            end = last + 7
        else:
            end = head_end + 4 + length
            if len(self.buf) < end:
                return None
        self.buf = self.buf[end:]
        return int(head.split(" ", 2)[1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--rate", type=float)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=0.0)
    p.add_argument("--count", type=int)
    p.add_argument("--window", type=int, default=500)
    p.add_argument("--progress-redis", nargs=2, metavar=("PORT", "KEY"))
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--sid-prefix", default="SMbench")
    args = p.parse_args()

    parts = urlsplit(args.url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
    sel = selectors.DefaultSelector()
    conns = [Conn(host, port, sel) for _ in range(args.connections)]
    idle = list(conns)
    stats = {"sent": 0, "answered": 0, "non_200": 0, "connections_opened": len(conns)}
    answer_ms: list[float] = []
    lateness_ms: list[float] = []
    measuring_from = 0

    def send(n: int, warm: bool) -> None:
        conn = idle.pop() if idle else None
        if conn is None:
            conn = Conn(host, port, sel)
            conns.append(conn)
            stats["connections_opened"] += 1
        stamp = time.time()
        sig, body = signed_webhook(args.url, f"{args.sid_prefix}{n:026d}", f"{'w' if warm else 't'} {stamp:.6f} {n}")
        conn.sent_at = time.perf_counter()
        conn.sock.sendall(b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                          b"X-Twilio-Signature: %s\r\nContent-Length: %d\r\n\r\n%s"
                          % (path.encode(), host.encode(), port, sig.encode(), len(body), body))
        stats["sent"] += 1

    def pump(timeout: float) -> None:
        for key, _ in sel.select(timeout):
            conn: Conn = key.data
            chunk = conn.sock.recv(65536)
            if not chunk and conn.sent_at is None and conn in idle:
                # twisted.web closes a keep-alive connection left idle for a minute: forget it
                sel.unregister(conn.sock)
                conn.sock.close()
                idle.remove(conn)
                conns.remove(conn)
                continue
            if not chunk:
                raise RuntimeError("the server closed a connection while a request was outstanding")
            conn.buf += chunk
            status = conn.response()
            if status is not None:
                stats["answered"] += 1
                if status != 200:
                    stats["non_200"] += 1
                if conn.sent_at is not None and stats["sent"] > measuring_from:
                    answer_ms.append((time.perf_counter() - conn.sent_at) * 1000)
                conn.sent_at = None
                idle.append(conn)

    if args.rate:
        interval = 1.0 / args.rate
        warm_n = int(args.warmup * args.rate)
        total = warm_n + int(args.duration * args.rate)
        start = time.perf_counter()
        n = 0
        while n < total:
            due = start + n * interval
            now = time.perf_counter()
            if now >= due:
                if n == warm_n:
                    measuring_from = stats["sent"]
                if n >= warm_n:
                    lateness_ms.append((now - due) * 1000)
                send(n, n < warm_n)
                n += 1
                continue
            pump(due - now)
        stats["measured"] = total - warm_n
    else:
        progress = Redis(int(args.progress_redis[0])) if args.progress_redis else None
        done_seen = 0
        n = 0
        while n < args.count:
            if progress is not None and n - done_seen >= args.window:
                done_seen = progress.llen(args.progress_redis[1])
                if n - done_seen >= args.window:
                    pump(0.005)
                    continue
            if idle:
                send(n, False)
                n += 1
            else:
                pump(1.0)
        stats["measured"] = n
    deadline = time.monotonic() + 30
    while len(idle) < len(conns) and time.monotonic() < deadline:
        pump(0.1)
    stats.update(answer_p50_ms=percentile(answer_ms, 50), answer_p99_ms=percentile(answer_ms, 99),
                 late_p99_ms=percentile(lateness_ms, 99), late_max_ms=max(lateness_ms, default=None))
    Path(args.out).write_text(json.dumps(stats))
    for c in conns:
        c.sock.close()


if __name__ == "__main__":
    main()
