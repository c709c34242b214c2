"""Ingest benchmark: signed webhooks into ``--role web``, against two ceilings measured in the same run.

    python bench/ingest.py [--runs 3] [--duration 10] [--connections 32] [--senders 1]

wrk (32 connections, on core 1 with Redis) POSTs pre-generated signed webhooks with unique
MessageSids, each once (bench/webhooks.lua), to, in turn:

* ``ceiling_bare_web``: a bare twisted.web resource answering constant TwiML;
* ``ceiling_klein_rpush``: a minimal Klein route doing one RPUSH with txredisapi;
* ``pyrowire``: ``twistd -n pyrowire --role web``, topic ``ingest`` (signature checked,
  profanity/length/parseable validators, de-duplication).

each pinned to core 0.  One JSON line per system: req/s, latency p50/p99, non-2xx, and for
pyrowire the queue growth checked against the 2xx count (it may exceed it by at most the
requests in flight when wrk stops counting, i.e. --connections), the ratio to each ceiling and the
target (>= 0.45 x bare twisted.web).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BENCH,
    LOAD_CORE,
    Redis,
    base_parser,
    bench,
    emit,
    free_port,
    http_status,
    note,
    queue_key,
    queued,
    require_cores,
    require_wrk,
    sender_number,
    signed_webhook,
    summarise,
    verdict,
    wait_for,
)

TARGET = 0.45
WARMUP = 1.0


def generate(path: Path, url: str, count: int, prefix: str, senders: int) -> None:
    with open(path, "w") as f:
        for i in range(count):
            sig, body = signed_webhook(url, f"SM{prefix}{i:026d}", f"hello there number {i}",
                                       sender_number(i, senders))
            f.write(f"{sig}\t{body.decode()}\n")


def run_wrk(wrk: str, url: str, bodies: Path, duration: float, connections: int, threads: int = 1) -> dict:
    argv = ["taskset", "-c", str(LOAD_CORE), wrk, "-t", str(threads), "-c", str(connections),
            "-d", f"{max(1, round(duration))}s", "--timeout", "10s", "--latency", "-s", str(BENCH / "webhooks.lua"),
            url, "--", str(bodies), str(threads)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120)
    for line in out.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            result: dict = json.loads(line[len("WRK_JSON "):])
            return result
    raise RuntimeError(f"wrk printed no result (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")


def figures(w: dict) -> dict:
    seconds = w["duration_us"] / 1e6
    return {"requests": w["requests"], "req_s": round(w["requests"] / seconds, 1),
            "p50_ms": round(w["p50_us"] / 1000, 3), "p99_ms": round(w["p99_us"] / 1000, 3),
            "non_2xx": w["status"], "socket_errors": w["connect"] + w["read"] + w["write"] + w["timeout"],
            "ok_2xx": w["requests"] - w["status"]}


def waiting(redis: Redis, key: str | None) -> int:
    """Messages queued under ``key``; for pyrowire's topic, its queue and its conversations' waiting lists."""
    if key is None:
        return 0
    return queued(redis, "ingest") if key == queue_key("ingest") else redis.llen(key)


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], duration=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--bodies", type=int, default=200_000, help="unique signed webhooks to pre-generate")
    parser.add_argument("--senders", type=int, default=1,
                        help="webhook i comes from sender i mod SENDERS (default 1: all from one; 0: each its own)")
    args = parser.parse_args()
    wrk = require_wrk()
    require_cores()
    port = free_port()  # every system listens on this port in turn, so the signatures stay valid
    url = f"http://127.0.0.1:{port}/queue/ingest"
    runs: dict[str, list[dict]] = {"ceiling_bare_web": [], "ceiling_klein_rpush": [], "pyrowire": []}
    with bench("ingest", args.keep) as b:
        note(f"pre-generating {args.bodies} signed webhooks")
        bodies = b.dir / "webhooks.tsv"
        generate(bodies, url, args.bodies, "in", args.senders)
        warm = b.dir / "warmup.tsv"
        generate(warm, url, 20_000, "wu", args.senders)
        redis = b.redis()
        for run in range(args.runs):
            for name in runs:
                redis.flush()
                if name == "ceiling_bare_web":
                    proc = b.python(name, BENCH / "ceilings" / "bare_web.py", ["--port", str(port)])
                    wait_for(lambda: http_status(f"http://127.0.0.1:{port}/health") == 200, 15, name, 0.05, proc)
                    key = None
                elif name == "ceiling_klein_rpush":
                    key = "ceiling:queue"
                    proc = b.python(name, BENCH / "ceilings" / "klein_rpush.py",
                                    ["--port", str(port), "--redis-port", str(redis.port), "--key", key])
                    wait_for(lambda: http_status(f"http://127.0.0.1:{port}/health") == 200, 15, name, 0.05, proc)
                else:
                    key = queue_key("ingest")
                    proc, _ = b.pyrowire(redis, "http://127.0.0.1:9", "--role", "web", port=port)
                note(f"run {run + 1}/{args.runs}: {name}")
                run_wrk(wrk, url, warm, WARMUP, args.connections)
                time.sleep(0.2)
                before = waiting(redis, key)
                w = run_wrk(wrk, url, bodies, args.duration, args.connections)
                time.sleep(0.2)
                f = figures(w)
                if key is not None:
                    f["queued"] = waiting(redis, key) - before
                    # wrk stops counting at the deadline with up to --connections requests in flight,
                    # which the server still answers and queues: the queue may exceed 2xx by that much
                    f["queued_minus_2xx"] = f["queued"] - f["ok_2xx"]
                    f["queue_matches_2xx"] = 0 <= f["queued_minus_2xx"] <= args.connections
                if name == "pyrowire":
                    f["bodies_reused"] = w["requests"] > args.bodies
                b.stop(proc)
                runs[name].append(f)
                time.sleep(0.3)
    bare = runs["ceiling_bare_web"]
    klein = runs["ceiling_klein_rpush"]
    for i, f in enumerate(runs["pyrowire"]):
        f["ratio_to_bare_web"] = f["req_s"] / bare[i]["req_s"]
        f["ratio_to_klein_rpush"] = f["req_s"] / klein[i]["req_s"]
    for i, f in enumerate(klein):
        f["ratio_to_bare_web"] = f["req_s"] / bare[i]["req_s"]
    keys = ["req_s", "p50_ms", "p99_ms", "non_2xx", "socket_errors", "requests", "ok_2xx"]
    common = {"runs": args.runs, "duration_s": args.duration, "connections": args.connections,
              "senders": args.senders or args.bodies}
    emit({"scenario": "ingest", "system": "ceiling_bare_web", **common, **summarise(bare, keys)})
    emit({"scenario": "ingest", "system": "ceiling_klein_rpush", **common,
          **summarise(klein, [*keys, "queued", "queued_minus_2xx", "ratio_to_bare_web"]),
          "queue_matches_2xx": all(f["queue_matches_2xx"] for f in klein)})
    py = runs["pyrowire"]
    summary = summarise(py, [*keys, "queued", "queued_minus_2xx", "ratio_to_bare_web",
                                "ratio_to_klein_rpush"])
    emit({"scenario": "ingest", "system": "pyrowire --role web", **common, **summary,
          "queue_matches_2xx": all(f["queue_matches_2xx"] for f in py),
          "bodies_reused": any(f["bodies_reused"] for f in py),
          "target": f"req/s >= {TARGET} x ceiling_bare_web (median of per-run ratios)",
          "target_met": verdict(summary["ratio_to_bare_web"], TARGET)})


if __name__ == "__main__":
    main()
