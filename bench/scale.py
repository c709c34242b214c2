"""Scale-out benchmark: webhook ingest and queue drain with one and with two processes of each role on one Redis.

    python bench/scale.py [--runs 3] [--parts ingest,drain] [--layouts one,two_one_core,two_cores]
                          [--duration 10] [--connections 32] [--senders 1] [--messages 10000] [--delays 0]

Three layouts of the processes under test, measured in turn in every run:

* ``one``: one process, on core 0 (the layout of ingest.py and drain.py);
* ``two_one_core``: two processes, both on core 0: what splitting one core's work between two
  processes sharing a Redis costs (1.0 x ``one`` is the best it can do);
* ``two_cores``: two processes, one on core 0 and one on core 1, where the load generator,
  Redis and the fake Twilio also run: what a second core adds when it is not free.

**ingest**: ``--role web`` (topic ``ingest``). The load is always two wrk processes on core 1
(``--connections``/2 connections each, one thread each, bench/webhooks.lua, pre-signed webhooks each
sent once); with two web processes each wrk loads its own, with one both load it. One second of
warm-up, then ``--duration`` seconds. Reported: webhooks/s (the two wrks' sum), the worse p50/p99
of the two, non-2xx, the queue growth against the 2xx count.

**drain**: ``--role worker --concurrency 64`` per process (topic ``echoD``: the handler waits D ms
and replies through the fake Twilio, on core 1). ``--messages`` messages laid out as the webhook
leaves them (bench/drain.py's ``lay_out``), pushed at once when every process waits on its 64
pops; the time runs from the push to the last reply at the fake Twilio.

Each line also has the CPU used during the measurement by each process under test, Redis, the
fake Twilio or the wrks (fraction of one core), the busy share of each core (from /proc/stat:
anything else running on the machine shows there too), the rate per CPU-second of the processes
under test (``per_cpu_s``: the capacity of one core spent on that role), and the ratio to
``one`` measured in the same run (``ratio_to_one``: median of the per-run ratios).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    LOAD_CORE,
    SUT_CORE,
    Bench,
    CpuMeter,
    FakeTwilio,
    Proc,
    Redis,
    active_key,
    base_parser,
    bench,
    complete_key,
    emit,
    free_port,
    note,
    queue_key,
    queued,
    require_cores,
    require_wrk,
    rss_mb,
    summarise,
    wait_for,
)
from bench.drain import CONCURRENCY, lay_out
from bench.ingest import figures, generate, run_wrk

LAYOUTS = {"one": (SUT_CORE,), "two_one_core": (SUT_CORE, SUT_CORE), "two_cores": (SUT_CORE, LOAD_CORE)}
WARMUP = 1.0
WARMUP_BODIES = 10_000
WRKS = 2


class CoreMeter:
    """The busy share of each core over an interval, from /proc/stat (whoever used it)."""

    def __init__(self) -> None:
        self.before = self._read()

    @staticmethod
    def _read() -> dict[str, tuple[int, int]]:
        found = {}
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name != "cpu":
                    ticks = [int(x) for x in fields]
                    idle = ticks[3] + ticks[4]  # idle, iowait
                    found[name[3:]] = (sum(ticks[:8]), idle)
        return found

    def read(self) -> dict[str, float]:
        after = self._read()
        out = {}
        for core, (total, idle) in after.items():
            total0, idle0 = self.before[core]
            spent = total - total0
            out[f"busy_core{core}"] = round(1 - (idle - idle0) / spent, 2) if spent else 0.0
        return out


def children_cpu() -> float:
    """CPU seconds of this process's finished children (the wrks, once waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def start_layout(b: Bench, redis: Redis, twilio_url: str, layout: str, options: list[str],
                 ports: list[int] | None = None) -> list[Proc]:
    procs = []
    for i, core in enumerate(LAYOUTS[layout]):
        proc, _ = b.pyrowire(redis, twilio_url, *options, port=ports[i] if ports else None, name=f"pyrowire{i}",
                             core=core)
        procs.append(proc)
    return procs


def finish(b: Bench, f: dict[str, Any], rate: str, procs: list[Proc]) -> dict[str, Any]:
    """Add the CPU of the processes under test, the rate per CPU-second and the peak RSS; stop them."""
    f["cpu_sut"] = round(sum(f[f"cpu_sut{i}"] for i in range(len(procs))), 2)
    f["per_cpu_s"] = round(f[rate] / f["cpu_sut"], 1) if f["cpu_sut"] else None
    f["peak_rss_mb"] = max(rss_mb(p.pid)["peak_rss_mb"] for p in procs)
    for proc in procs:
        b.stop(proc)
    return f


def ingest_run(b: Bench, redis: Redis, wrk: str, layout: str, ports: list[int], files: dict[str, Path],
               args: Any) -> dict[str, Any]:
    load_1m = os.getloadavg()[0]
    redis.flush()
    procs = start_layout(b, redis, "http://127.0.0.1:9", layout, ["--role", "web"], ports)
    # wrk k loads web k mod the number of webs, with webhooks signed for that web's URL
    targets = [k % len(procs) for k in range(WRKS)]
    urls = [f"http://127.0.0.1:{ports[t]}/queue/ingest" for t in targets]
    per_wrk = max(1, args.connections // WRKS)

    def load(kind: str, duration: float) -> list[dict[str, Any]]:
        with ThreadPoolExecutor(WRKS) as pool:
            return list(pool.map(lambda k: run_wrk(wrk, urls[k], files[f"{kind}{k}:{targets[k]}"], duration,
                                                   per_wrk), range(WRKS)))

    load("warm", WARMUP)
    time.sleep(0.2)
    before = queued(redis, "ingest")
    assert redis.proc is not None
    meter = CpuMeter({**{f"sut{i}": p.pid for i, p in enumerate(procs)}, "redis": redis.proc.pid})
    cores = CoreMeter()
    wrk_before, started = children_cpu(), time.monotonic()
    results = [figures(w) for w in load("body", args.duration)]
    cpu = {**meter.read(), **cores.read(),
           "cpu_wrks": round((children_cpu() - wrk_before) / (time.monotonic() - started), 2)}
    time.sleep(0.2)
    f: dict[str, Any] = {
        "req_s": round(sum(r["req_s"] for r in results), 1), "requests": sum(r["requests"] for r in results),
        "ok_2xx": sum(r["ok_2xx"] for r in results), "non_2xx": sum(r["non_2xx"] for r in results),
        "socket_errors": sum(r["socket_errors"] for r in results),
        "p50_ms": max(r["p50_ms"] for r in results), "p99_ms": max(r["p99_ms"] for r in results),
        "load_1m": load_1m, **cpu}
    f["queued"] = queued(redis, "ingest") - before
    f["queued_minus_2xx"] = f["queued"] - f["ok_2xx"]
    f["queue_matches_2xx"] = 0 <= f["queued_minus_2xx"] <= args.connections
    f["bodies_reused"] = any(r["requests"] > args.bodies for r in results)
    return finish(b, f, "req_s", procs)


def drain_run(b: Bench, redis: Redis, twilio: FakeTwilio, layout: str, delay: int, args: Any) -> dict[str, Any]:
    topic = f"echo{delay}"
    load_1m = os.getloadavg()[0]
    redis.flush()
    twilio.clear()
    procs = start_layout(b, redis, twilio.url, layout,
                         ["--role", "worker", "--topic", topic, "--concurrency", str(CONCURRENCY)])
    loops = CONCURRENCY * len(procs)
    wait_for(lambda: redis.blocked_clients() >= loops, 30, f"{len(procs)} worker(s) to wait on {loops} pops", 0.05)
    time.sleep(0.3)  # let start-up work (recovery scan, heartbeats) settle
    payloads = lay_out(redis, topic, args.messages, args.senders_drain, True)
    assert redis.proc is not None
    meter = CpuMeter({**{f"sut{i}": p.pid for i, p in enumerate(procs)}, "redis": redis.proc.pid,
                      "fake_twilio": twilio.proc.pid})
    cores = CoreMeter()
    started = time.time()
    redis.call("LPUSH", queue_key(topic), *payloads)
    wait_for(lambda: redis.llen(complete_key(topic)) >= args.messages, 600, f"{args.messages} completes", 0.02)
    cpu = {**meter.read(), **cores.read()}
    messages = twilio.messages()
    seconds = max(m["received_at"] for m in messages) - started
    f: dict[str, Any] = {
        "msg_s": round(args.messages / seconds, 1), "seconds": round(seconds, 3), "replies": len(messages),
        "unique_replies": len({m["body"] for m in messages}),
        "left_behind": int(redis.call("SCARD", active_key(topic))) + queued(redis, topic), "load_1m": load_1m,
        **cpu}
    return finish(b, f, "msg_s", procs)


def report(scenario: str, runs: dict[str, list[dict[str, Any]]], rate: str, keys: list[str],
           common: dict[str, Any]) -> None:
    for layout, found in runs.items():
        if not found:
            continue
        extra = []
        if runs.get("one") and layout != "one":
            for mine, one in zip(found, runs["one"], strict=True):
                mine["ratio_to_one"] = mine[rate] / one[rate]
                mine["per_cpu_ratio_to_one"] = mine["per_cpu_s"] / one["per_cpu_s"]
            extra = ["ratio_to_one", "per_cpu_ratio_to_one"]
        cpus = sorted({k for f in found for k in f if k.startswith(("cpu_", "busy_core"))})
        emit({"scenario": scenario, "layout": layout, "processes": len(LAYOUTS[layout]),
              "cores": [*LAYOUTS[layout]], **common, **summarise(found, [rate, *extra, *keys, *cpus])})


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], duration=10.0)
    parser.add_argument("--parts", default="ingest,drain", help="ingest, drain or both (default both)")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help=f"a subset of {', '.join(LAYOUTS)}")
    parser.add_argument("--connections", type=int, default=32, help="ingest: wrk connections, split over the wrks")
    parser.add_argument("--bodies", type=int, default=100_000, help="ingest: signed webhooks per wrk")
    parser.add_argument("--senders", type=int, default=1,
                        help="ingest: webhook i comes from sender i mod SENDERS (default 1; 0: each its own)")
    parser.add_argument("--messages", type=int, default=10_000, help="drain: messages (default 10,000)")
    parser.add_argument("--delays", default="0", help="drain: simulated I/O per message, ms (topics echo0, echo50)")
    parser.add_argument("--drain-senders", dest="senders_drain", type=int, default=0,
                        help="drain: message i comes from sender i mod N (default 0: each its own)")
    args = parser.parse_args()
    parts = args.parts.split(",")
    layouts = args.layouts.split(",")
    unknown = [name for name in layouts if name not in LAYOUTS] + [p for p in parts if p not in ("ingest", "drain")]
    if unknown:
        parser.error(f"unknown part or layout: {', '.join(unknown)}")
    wrk = require_wrk() if "ingest" in parts else ""
    require_cores()
    delays = [int(d) for d in args.delays.split(",")]
    ingest: dict[str, list[dict[str, Any]]] = {name: [] for name in layouts}
    drain: dict[tuple[str, int], list[dict[str, Any]]] = {(name, d): [] for d in delays for name in layouts}
    with bench("scale", args.keep) as b:
        redis = b.redis()
        ports = [free_port(), free_port()]  # web k always listens on ports[k], so the signatures stay valid
        files: dict[str, Path] = {}
        if "ingest" in parts:
            note(f"pre-generating {WRKS} x {args.bodies} signed webhooks per web port")
            for k in range(WRKS):
                for target in {0, k % 2}:
                    url = f"http://127.0.0.1:{ports[target]}/queue/ingest"
                    for kind, count in (("warm", WARMUP_BODIES), ("body", args.bodies)):
                        path = files[f"{kind}{k}:{target}"] = b.dir / f"{kind}{k}-{target}.tsv"
                        generate(path, url, count, f"{kind[0]}{k}{target}", args.senders)
        twilio = b.fake_twilio() if "drain" in parts else None
        for run in range(args.runs):
            for layout in layouts:
                if "ingest" in parts:
                    note(f"run {run + 1}/{args.runs}: ingest, {layout}")
                    ingest[layout].append(ingest_run(b, redis, wrk, layout, ports, files, args))
                if twilio is not None:
                    for d in delays:
                        note(f"run {run + 1}/{args.runs}: drain D={d} ms, {layout}")
                        drain[(layout, d)].append(drain_run(b, redis, twilio, layout, d, args))
    if "ingest" in parts:
        common = {"runs": args.runs, "duration_s": args.duration, "connections": args.connections,
                  "senders": args.senders or args.bodies}
        report("ingest", ingest, "req_s", ["per_cpu_s", "load_1m", "p50_ms", "p99_ms", "non_2xx", "socket_errors",
                                           "ok_2xx", "queued_minus_2xx", "peak_rss_mb"], common)
        for layout, found in ingest.items():
            if found and not all(f["queue_matches_2xx"] and not f["bodies_reused"] for f in found):
                note(f"ingest {layout}: the queue did not match the 2xx count or webhooks were reused")
    if "drain" in parts:
        for d in delays:
            common = {"delay_ms": d, "messages": args.messages, "concurrency": CONCURRENCY, "runs": args.runs}
            report("drain", {name: drain[(name, d)] for name in layouts}, "msg_s",
                   ["per_cpu_s", "load_1m", "seconds", "unique_replies", "left_behind", "peak_rss_mb"], common)


if __name__ == "__main__":
    main()
