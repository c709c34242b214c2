"""Soak: conversations through 1 web and 2 worker processes while one worker is SIGKILLed and restarted.

    python bench/soak.py [--messages 20000] [--per-sender 5] [--kill-every 3] [--kill-signal KILL|TERM]
                         [--threads 8] [--interleave 16] [--heartbeat-ttl SECONDS] [--keep]

``--messages`` webhooks from ``messages / per-sender`` senders (``From``), each sender's
messages sent one after the other (the next once the previous was answered), senders
interleaved: each of ``--threads`` sending threads takes its senders ``--interleave`` at
a time and sends their first messages, then their second ones, and so on, so a sender's
next message usually arrives while its previous one is still queued or running.

The handler (bench/soak_app/) marks the start and end of every run, killed runs included,
and the sid its conversation's session says came before. Prints one JSON line: accepted,
completed, lost (accepted, never completed), handled out of order within a conversation
(a message started before its predecessor had ended, or ended first), runs that read
another predecessor from the session than the one accepted before them, the at-least-once
duplicates (started, completed, replied more than once), what was left in the queue's keys
at the end, worker kills and time. Everything runs on 127.0.0.1 (a Redis of its own, a
fake Twilio, twistd processes) under a temp folder that is removed afterwards (``--keep``
leaves it, with the logs and markers, and says where).
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
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyrowire.signature import compute  # noqa: E402
from tests.process.harness import FakeTwilioProcess, request, wait_for  # noqa: E402
from tests.redis_server import RedisServer, free_port  # noqa: E402

TOKEN = "soak-auth-token-0123456789"
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
BASE = "pyrowire:{soak}"


def redis(port: int, *args: str) -> Any:
    """One command on a connection of its own; the parsed reply."""
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
                return _parse(data, 0)[0]


def _complete(data: bytes) -> bool:
    try:
        _parse(data, 0)
        return True
    except (IndexError, ValueError):
        return False


def _parse(data: bytes, i: int) -> tuple[Any, int]:
    end = data.index(b"\r\n", i)
    kind, rest = data[i:i + 1], data[i + 1:end]
    if kind in b"+-":
        return rest, end + 2
    if kind == b":":
        return int(rest), end + 2
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
    value = redis(port, "LRANGE", key, "0", "-1")
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


# --- what to send ---------------------------------------------------------------------------

def sender_number(sender: int) -> str:
    return f"+1555{sender:07d}"


def plan(messages: int, per_sender: int, threads: int, interleave: int) -> list[list[tuple[int, int]]]:
    """For each sending thread, its (sender, seq) in sending order: ``interleave`` senders at a time,
    their message 0, then their message 1, ... Senders are dealt to threads in turn."""
    senders = -(-messages // per_sender)
    out: list[list[tuple[int, int]]] = []
    for t in range(threads):
        mine = list(range(t, senders, threads))
        order: list[tuple[int, int]] = []
        for g in range(0, len(mine), interleave):
            group = mine[g:g + interleave]
            for seq in range(per_sender):
                order += [(s, seq) for s in group if s * per_sender + seq < messages]
        out.append(order)
    return out


def sid_of(sender: int, seq: int) -> str:
    return f"SMsoak{sender:07d}x{seq:03d}"


# --- what the runs did ------------------------------------------------------------------------

@dataclass
class Runs:
    """The marker lines of every run, by sid."""

    starts: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    ends: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    previous: dict[str, list[str | None]] = field(default_factory=lambda: defaultdict(list))

    def read(self, lines: Iterable[str]) -> None:
        for line in lines:
            parts = line.split()
            if len(parts) != 4:
                continue  # a line cut by a SIGKILL (os.write of a few bytes: not seen so far)
            phase, t, sid, prev = parts
            if phase == "S":
                self.starts[sid].append(int(t))
                self.previous[sid].append(None if prev == "-" else prev)
            elif phase == "E":
                self.ends[sid].append(int(t))


def analyse(accepted: Mapping[str, tuple[int, int, int]], runs: Runs, completes: Counter[str],
            replies: Counter[str]) -> dict[str, int]:
    """Counts of lost, out-of-order and repeated handling; ``accepted`` maps sid -> (sender, seq, the
    time_ns its webhook was answered)."""
    conversations: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for sid, (sender, seq, _) in accepted.items():
        conversations[sender].append((seq, sid))
    started_early = ended_early = session_breaks = queued_behind = 0
    out_of_order: set[str] = set()
    for items in conversations.values():
        items.sort()
        before: str | None = None  # the conversation's previous accepted message
        for _seq, sid in items:
            if before is not None:
                ends = runs.ends.get(before)
                first_end = min(ends) if ends else None
                if first_end is None or accepted[sid][2] < first_end:
                    queued_behind += 1  # answered before the one before it had ended: it waited behind it
                # every run must start after a run of the one before it ended (its FINISH handed it on)
                if any(first_end is None or start < first_end for start in runs.starts.get(sid, [])):
                    started_early += 1
                    out_of_order.add(sid)
                mine = runs.ends.get(sid)
                if mine and (first_end is None or min(mine) < first_end):
                    ended_early += 1
                    out_of_order.add(sid)
            session_breaks += sum(1 for p in runs.previous.get(sid, []) if p != before)
            before = sid
    return {
        "lost": sum(1 for s in accepted if not completes.get(s)),
        "accepted_while_previous_unfinished": queued_behind,
        "out_of_order": len(out_of_order),
        "started_before_previous_ended": started_early,
        "ended_before_previous": ended_early,
        "session_breaks": session_breaks,
        "never_started": sum(1 for s in accepted if not runs.starts.get(s)),
        "started_more_than_once": sum(1 for s in accepted if len(runs.starts.get(s, [])) > 1),
        "runs_started": sum(len(v) for v in runs.starts.values()),
        "completed_twice": sum(1 for s in accepted if completes.get(s, 0) > 1),
        "missing_reply": sum(1 for s in accepted if not replies.get(s)),
        "replied_twice": sum(1 for s in accepted if replies.get(s, 0) > 1),
    }


# --- the run ----------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--per-sender", type=int, default=5, help="messages per sender (conversation)")
    parser.add_argument("--kill-every", type=float, default=3.0)
    parser.add_argument("--kill-signal", default="KILL", choices=("KILL", "TERM"),
                        help="how the worker is stopped (TERM: gracefully, putting back what it has not started)")
    parser.add_argument("--threads", type=int, default=8, help="sending threads")
    parser.add_argument("--interleave", type=int, default=16, help="senders each thread sends to in turn")
    parser.add_argument("--heartbeat-ttl", type=int, help="PYROWIRE_HEARTBEAT_TTL of the workers (default: theirs)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs, markers)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="pyrowire-soak-"))
    app_dir = tmp / "app"
    markers = tmp / "markers"
    markers.mkdir()
    shutil.copytree(ROOT / "bench" / "soak_app", app_dir)
    server = RedisServer().start()
    twilio = FakeTwilioProcess(tmp)
    env = dict(os.environ, ENV="soak", SOAK_REDIS_URL=server.url, SOAK_MARKERS=str(markers),
               TWILIO_API_BASE=twilio.url, PYTHONUNBUFFERED="1")
    if args.heartbeat_ttl is not None:
        env["PYROWIRE_HEARTBEAT_TTL"] = str(args.heartbeat_ttl)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs: list[Twistd] = []

    def twistd(*options: str) -> Twistd:
        procs.append(Twistd(app_dir, env, *options))
        return procs[-1]

    try:
        twistd("--role", "web", "--listen", f"tcp:port={port}:interface=127.0.0.1")
        twistd("--role", "worker", "--concurrency", "16")  # the steady worker
        victim = twistd("--role", "worker", "--concurrency", "16")
        wait_for(lambda: _healthy(base), 20, "the web process")

        accepted: dict[str, tuple[int, int, int]] = {}
        send_errors = Counter[str]()
        lock = threading.Lock()
        url = f"{base}/queue/soak"
        started = time.monotonic()

        def sender(order: list[tuple[int, int]]) -> None:
            for who, seq in order:
                sid = sid_of(who, seq)
                params = {"MessageSid": sid, "From": sender_number(who), "To": "+15005550006", "Body": sid}
                headers = {"Content-Type": "application/x-www-form-urlencoded",
                           "X-Twilio-Signature": compute(url, {k: [v] for k, v in params.items()}, TOKEN)}
                try:
                    status, _, body = request("POST", url, urlencode(params).encode(), headers)
                except OSError as e:
                    with lock:
                        send_errors[type(e).__name__] += 1
                    continue
                with lock:
                    if status == 200 and b"error" not in body:
                        accepted[sid] = (who, seq, time.time_ns())
                    else:
                        send_errors[f"http {status}"] += 1

        threads = [threading.Thread(target=sender, args=(order,))
                   for order in plan(args.messages, args.per_sender, args.threads, args.interleave)]
        for t in threads:
            t.start()
        kills = 0
        while any(t.is_alive() for t in threads) or redis(server.port, "LLEN", f"{BASE}:queue") > 0:
            time.sleep(args.kill_every)
            victim.stop(getattr(signal, f"SIG{args.kill_signal}"))
            procs.remove(victim)
            kills += 1
            victim = twistd("--role", "worker", "--concurrency", "16")
        sent_done = time.monotonic()

        def completed() -> Counter[str]:
            return Counter(json.loads(r)["message"]["sid"] for r in lrange(server.port, f"{BASE}:complete"))

        def all_complete() -> bool:
            # cheap test first: the list holds at least one record per accepted message
            return (redis(server.port, "LLEN", f"{BASE}:complete") >= len(accepted)
                    and len(completed()) >= len(accepted))

        try:
            wait_for(all_complete, 300, "every accepted message to complete", interval=1.0)
            waited = "all complete"
        except AssertionError as e:
            waited = str(e)
        elapsed = time.monotonic() - started
        completes = completed()
        replies = Counter(m["body"][len("re: "):] for m in twilio.messages())
        runs = Runs()
        for path in markers.iterdir():
            runs.read(path.read_text().splitlines())
        left = {
            "queue": redis(server.port, "LLEN", f"{BASE}:queue"),
            "active": redis(server.port, "SCARD", f"{BASE}:active"),
            "conv_lists": len(redis(server.port, "KEYS", f"{BASE}:conv:*")),
            "schedule": redis(server.port, "ZCARD", f"{BASE}:schedule"),
            "dead": redis(server.port, "LLEN", f"{BASE}:dead"),
            "errors": redis(server.port, "LLEN", f"{BASE}:errors"),
        }
        result = {
            "scenario": "soak",
            "messages": args.messages,
            "per_sender": args.per_sender,
            "senders": len({who for who, _, _ in accepted.values()}),
            "accepted": len(accepted),
            "send_errors": dict(send_errors),
            "completed": len(completes),
            **analyse(accepted, runs, completes, replies),
            "replies": sum(replies.values()),
            "left_at_end": left,
            "worker_kills": kills,
        "kill_signal": args.kill_signal,
            "send_seconds": round(sent_done - started, 1),
            "total_seconds": round(elapsed, 1),
            "waited": waited,
        }
        print(json.dumps(result))
    finally:
        for p in procs:
            p.stop()
        twilio.stop()
        server.close()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _healthy(base: str) -> bool:
    try:
        return request("GET", f"{base}/health", timeout=2)[0] == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()
