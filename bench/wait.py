"""What ``WAIT 1 <ms>`` after the webhook's ACCEPT would cost, and whether it closes the failover window.

Runs the webhook's real ACCEPT script on a primary with one replica (both on core 1, as
the benchmarks' Redis is), from this driver (core 1), in two ways: ``plain`` (ACCEPT, as pyrowire does) and ``wait``
(ACCEPT then ``WAIT 1 <--wait-ms>`` on the same connection, the message counted as
accepted only when WAIT says one replica has it).

* **cost**: ``--depth`` webhooks pipelined on one connection (the pool's connections carry
  many webhooks at once), for ``--duration`` seconds: webhooks a second, and the latency
  of one ACCEPT alone (depth 1), median and p99.
* **window**: a writer accepts webhooks as fast as it can on the primary while the replica
  is promoted (``REPLICAOF NO ONE``, what Sentinel does in a failover); it goes on writing
  to the old primary for ``--window`` seconds, the time pyrowire takes to move (at most
  its 0.5 s check plus the Sentinels' announcement), as every client still connected to
  the old primary does. Counted: webhooks the writer counted as accepted that the new
  primary does not have (lost), of all it counted as accepted.

One JSON line per mode and run, then one summary line per mode (medians, spreads).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Bench,
    Redis,
    base_parser,
    emit,
    note,
    percentile,
    require_cores,
    summarise,
    wait_for,
)

from pyrowire import scripts
from pyrowire.keys import topic_keys

TOPIC = "bench"
KEYS = topic_keys("pyrowire", TOPIC)


def accept(n: int, run: str) -> list[Any]:
    sid = f"SM{run}{n:028d}"
    k = KEYS
    keys = (k.seen(sid), k.queue, k.active, k.conversation(""), k.optout)
    args = ("accepted", 86400, f'{{"message": {{"sid": "{sid}"}}, "received_at": 0}}', "", "", "")
    return ["EVALSHA", scripts.ACCEPT.sha, len(keys), *keys, *args]


def batch(first: int, depth: int, run: str, wait_ms: int | None) -> list[list[Any]]:
    commands: list[list[Any]] = []
    for n in range(first, first + depth):
        commands.append(accept(n, run))
        if wait_ms is not None:
            commands.append(["WAIT", 1, wait_ms])
    return commands


def acknowledged(replies: list[Any], wait_ms: int | None) -> list[bool]:
    if wait_ms is None:
        return [True] * len(replies)
    return [int(replies[i + 1]) >= 1 for i in range(0, len(replies), 2)]


def cost(primary: Redis, depth: int, duration: float, run: str, wait_ms: int | None) -> dict[str, Any]:
    latencies = []
    for n in range(300):  # one at a time: the latency a webhook would add
        began = time.perf_counter()
        primary.pipeline(batch(n, 1, run + "L", wait_ms))
        latencies.append((time.perf_counter() - began) * 1000)
    done = 0
    began = time.perf_counter()
    while time.perf_counter() - began < duration:
        primary.pipeline(batch(done, depth, run + "T", wait_ms))
        done += depth
    rate = done / (time.perf_counter() - began)
    return {"webhooks_s": round(rate), "p50_ms": round(percentile(latencies, 50) or 0, 3),
            "p99_ms": round(percentile(latencies, 99) or 0, 3)}


def window(bench: Bench, run: str, wait_ms: int | None, seconds: float) -> dict[str, Any]:
    primary, replica = start_pair(bench)
    primary.call("SCRIPT", "LOAD", scripts.ACCEPT.source)
    replica.call("SCRIPT", "LOAD", scripts.ACCEPT.source)
    ok: list[int] = []
    stop = threading.Event()
    writer = Redis(primary.port)

    def write() -> None:
        n = 0
        while not stop.is_set():
            replies = writer.pipeline(batch(n, 8, run, wait_ms))
            ok.extend(n + i for i, yes in enumerate(acknowledged(replies, wait_ms)) if yes)
            n += 8

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    time.sleep(0.5)
    replica.call("REPLICAOF", "NO", "ONE")  # the promotion
    promoted = time.monotonic()
    time.sleep(seconds)
    stop.set()
    thread.join(30)
    elapsed = time.monotonic() - promoted
    have = replica.pipeline([["EXISTS", KEYS.seen(f"SM{run}{n:028d}")] for n in ok])
    lost = sum(1 for present in have if not present)
    writer.close()
    return {"accepted": len(ok), "lost": lost, "window_s": round(elapsed, 2)}


def start_pair(bench: Bench) -> tuple[Redis, Redis]:
    primary = bench.redis()
    replica = bench.redis()
    replica.call("REPLICAOF", "127.0.0.1", primary.port)
    wait_for(lambda: b"master_link_status:up" in replica.call("INFO", "replication"), 10, "the replica to sync")
    return primary, replica


def main() -> None:
    parser = base_parser(__doc__ or "", duration=5.0)
    parser.add_argument("--depth", type=int, default=32, help="webhooks pipelined on the connection (default 32)")
    parser.add_argument("--wait-ms", type=int, default=100, help="WAIT's timeout in ms (default 100)")
    parser.add_argument("--window", type=float, default=0.5,
                        help="seconds the writer goes on after the promotion (default 0.5)")
    options = parser.parse_args()
    require_cores()
    modes: dict[str, int | None] = {"plain": None, "wait": options.wait_ms}
    with Bench("wait", options.keep) as bench:
        results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
        for run in range(options.runs):
            for mode, wait_ms in modes.items():
                note(f"run {run + 1}/{options.runs}: {mode}")
                primary, _replica = start_pair(bench)
                primary.call("SCRIPT", "LOAD", scripts.ACCEPT.source)
                record = {"system": mode, "run": run + 1,
                          **cost(primary, options.depth, options.duration, f"{run}{mode[0]}", wait_ms),
                          **window(bench, f"{run}{mode[0]}W", wait_ms, options.window)}
                for proc in list(bench.procs):
                    bench.stop(proc)
                emit(record)
                results[mode].append(record)
        for mode, runs in results.items():
            emit({"system": mode, "summary": True, "runs": len(runs),
                  **summarise(runs, ["webhooks_s", "p50_ms", "p99_ms", "accepted", "lost"])})


if __name__ == "__main__":
    main()
