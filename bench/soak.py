"""Soak: N webhooks through 1 web and 2 worker processes while one worker is SIGKILLed and restarted.

    python bench/soak.py [--messages 20000] [--kill-every 3]

Prints one JSON line: accepted, completed, replied, handled twice, sends repeated, time.
Everything runs on 127.0.0.1 (a Redis of its own, a fake Twilio, twistd processes) under a
temp folder that is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyrowire.signature import compute  # noqa: E402
from tests.process.harness import FakeTwilioProcess, request, wait_for  # noqa: E402
from tests.redis_server import RedisServer, free_port  # noqa: E402

TOKEN = "soak-auth-token-0123456789"
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def redis(port: int, *args: str) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for a in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()))
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"".join(parts))
        data = b""
        while True:
            chunk = s.recv(1 << 20)
            data += chunk
            if not chunk or _complete(data):
                return data


def _complete(data: bytes) -> bool:
    try:
        _parse(data, 0)
        return True
    except (IndexError, ValueError):
        return False


def _parse(data: bytes, i: int) -> tuple[object, int]:
    end = data.index(b"\r\n", i)
    kind, rest = data[i:i + 1], data[i + 1:end]
    if kind in b"+-:":
        return rest, end + 2
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None, end + 2
        if len(data) < end + 2 + n + 2:
            raise IndexError
        return data[end + 2:end + 2 + n], end + 2 + n + 2
    items = []
    j = end + 2
    for _ in range(int(rest)):
        item, j = _parse(data, j)
        items.append(item)
    return items, j


def lrange(port: int, key: str) -> list[bytes]:
    value, _ = _parse(redis(port, "LRANGE", key, "0", "-1"), 0)
    assert isinstance(value, list)
    return value


class Twistd:
    def __init__(self, cwd: Path, env: dict[str, str], *options: str) -> None:
        self.log = open(cwd / f"twistd-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen([TWISTD, "-n", "--pidfile=", "pyrowire", "--app", "app", *options],
                                        cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.process.wait(60)
        self.log.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--kill-every", type=float, default=3.0)
    parser.add_argument("--senders", type=int, default=8)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="pyrowire-soak-"))
    app_dir = tmp / "app"
    shutil.copytree(ROOT / "bench" / "soak_app", app_dir)
    server = RedisServer().start()
    twilio = FakeTwilioProcess(tmp)
    env = dict(os.environ, ENV="soak", SOAK_REDIS_URL=server.url, TWILIO_API_BASE=twilio.url, PYTHONUNBUFFERED="1")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web = Twistd(app_dir, env, "--role", "web", "--listen", f"tcp:port={port}:interface=127.0.0.1")
    steady = Twistd(app_dir, env, "--role", "worker", "--concurrency", "16")
    victim = [Twistd(app_dir, env, "--role", "worker", "--concurrency", "16")]
    wait_for(lambda: _healthy(base), 20, "the web process")

    accepted = Counter[str]()
    lock = threading.Lock()
    url = f"{base}/queue/soak"
    started = time.monotonic()

    def sender(offset: int) -> None:
        for n in range(offset, args.messages, args.senders):
            sid = f"SMsoak{n:08d}"
            params = {"MessageSid": sid, "From": "+15551230000", "To": "+15005550006", "Body": f"m{n}"}
            headers = {"Content-Type": "application/x-www-form-urlencoded",
                       "X-Twilio-Signature": compute(url, {k: [v] for k, v in params.items()}, TOKEN)}
            status, _, body = request("POST", url, urlencode(params).encode(), headers)
            if status == 200 and b"error" not in body:
                with lock:
                    accepted[sid] += 1

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(args.senders)]
    for t in threads:
        t.start()
    kills = 0
    while any(t.is_alive() for t in threads) or int(redis(server.port, "LLEN", "pyrowire:{soak}:queue")[1:]) > 0:
        time.sleep(args.kill_every)
        victim[0].stop(signal.SIGKILL)
        kills += 1
        victim[0] = Twistd(app_dir, env, "--role", "worker", "--concurrency", "16")
    sent_done = time.monotonic()

    def all_complete() -> bool:
        return int(redis(server.port, "LLEN", "pyrowire:{soak}:complete")[1:]) >= len(accepted)

    wait_for(all_complete, 120, "every accepted message to complete", interval=0.5)
    elapsed = time.monotonic() - started
    completes = Counter(json.loads(r)["message"]["sid"] for r in lrange(server.port, "pyrowire:{soak}:complete"))
    attempts = Counter(json.loads(r).get("attempt", 1) for r in lrange(server.port, "pyrowire:{soak}:complete"))
    replies = Counter(m["body"][len("re: m"):] for m in twilio.messages())
    missing_complete = [s for s in accepted if s not in completes]
    missing_reply = [s for s in accepted if str(int(s[len("SMsoak"):])) not in replies]
    result = {
        "scenario": "soak",
        "messages": args.messages,
        "accepted": len(accepted),
        "completed": len(completes),
        "completed_twice": sum(1 for c in completes.values() if c > 1),
        "started_more_than_once": sum(n for a, n in attempts.items() if a > 1),
        "replies": sum(replies.values()),
        "replied_twice": sum(1 for c in replies.values() if c > 1),
        "missing_complete": len(missing_complete),
        "missing_reply": len(missing_reply),
        "worker_kills": kills,
        "send_seconds": round(sent_done - started, 1),
        "total_seconds": round(elapsed, 1),
    }
    print(json.dumps(result))
    for p in (web, steady, victim[0]):
        p.stop()
    twilio.stop()
    server.close()
    shutil.rmtree(tmp, ignore_errors=True)


def _healthy(base: str) -> bool:
    try:
        return request("GET", f"{base}/health", timeout=2)[0] == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()
