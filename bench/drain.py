"""Drain benchmark: 5,000 queued messages through ``--role worker --concurrency 64``, against a minimal loop
and an asyncio peer.

    python bench/drain.py [--runs 3] [--messages 5000] [--delays 0,50,25-75] [--senders 0] [--unordered]
                          [--seed 13] [--peer-python PATH | --no-peer]

For each simulated I/O delay D (ms; ``LOW-HIGH`` draws each message's delay from that range,
seeded by ``--seed``, the same delay for a message in every system), in turn on core 0:

* ``ceiling_drain_loop``: bench/ceilings/drain_loop.py, 64 bare loops doing the same Redis
  moves (BLMOVE queue -> inflight, then LREM inflight + LPUSH complete in one script) and
  the same treq POST to the fake Twilio, waiting D ms between;
* ``peer_asyncio``: bench/peers/asyncio_worker.py, the same job written for asyncio (uvloop,
  redis.asyncio with hiredis, aiohttp), 64 tasks, run by the Python of its own virtualenv
  (made under /tmp from bench/peers/requirements.txt on first use, or ``--peer-python``);
* ``pyrowire``: ``twistd -n pyrowire --role worker --topic echoD --concurrency 64``, whose
  handler awaits D ms (deferLater) and replies with ``app.sms`` (topic ``echoj`` for a range).

The worker is started and waits on its 64 blocking pops; the messages are laid out as
pyrowire's webhook leaves them: message i comes from sender i mod ``--senders`` (0, the
default: every message from a sender of its own); in the ordered topics (pyrowire's default)
every sender is in the topic's ``active`` set and its later messages wait in its
``conv:<number>`` list, set up before the clock starts; the messages that are ready (every
sender's first; all of them with ``--unordered``, where the topics are ``ordered: False``)
are pushed in one LPUSH. The time is from that push to the last reply recorded
by the fake Twilio (on core 1, with Redis).  One JSON line per (system, D): msg/s, seconds,
replies counted, CPU use of
the system, Redis and the fake Twilio (fraction of one core: 1.0 means that core was the
limit; Redis and the fake share core 1), the ratios to the ceiling and to the peer, and the
target (D=0: >= 0.9 x ceiling and >= 1.0 x peer; D=50: >= 1,000 msg/s; a range: >= 0.9 x
concurrency / mean delay).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BENCH,
    ROOT,
    SUT_CORE,
    CpuMeter,
    Redis,
    active_key,
    base_parser,
    bench,
    complete_key,
    conversation_key,
    cpu_seconds,
    emit,
    message_payload,
    note,
    queue_key,
    queued,
    require_cores,
    rss_mb,
    sender_number,
    summarise,
    verdict,
    wait_for,
)

CONCURRENCY = 64
RATIO_TARGET = 0.9
RATE_TARGET = 1000.0
PEER_TARGET = 1.0  # D=0: pyrowire / peer_asyncio
IDEAL_TARGET = 0.9  # a delay range: msg/s >= 0.9 x concurrency / mean delay
PEER = BENCH / "peers"
PEER_VENV = Path("/tmp/pyrowire-bench-peer-venv")


def peer_python(given: str | None) -> str:
    """The peer's interpreter: ``given``, or that of a virtualenv under /tmp with bench/peers/requirements.txt."""
    if given:
        return given
    requirements = (PEER / "requirements.txt").read_bytes()
    stamp = PEER_VENV / "requirements.sha1"
    python = PEER_VENV / "bin" / "python"
    digest = hashlib.sha1(requirements).hexdigest()
    if not (python.exists() and stamp.exists() and stamp.read_text() == digest):
        note(f"installing the asyncio peer's packages into {PEER_VENV}")
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", "--clear", str(PEER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(PEER / "requirements.txt")],
                       check=True)
        stamp.write_text(digest)
    return str(python)


def scenario(token: str) -> tuple[str, str, list[str], float | None]:
    """A ``--delays`` item: (label, pyrowire's topic, the ceiling's and peer's delay options, mean delay s)."""
    if "-" in token:
        low, high = (float(x) for x in token.split("-"))
        return token, "echoj", ["--jitter-ms", f"{low},{high}"], (low + high) / 2000.0
    return token, f"echo{int(token)}", ["--delay-ms", token], int(token) / 1000.0 or None


def lay_out(redis: Redis, topic: str, messages: int, senders: int, ordered: bool) -> list[str]:
    """Queue ``messages`` as the webhook would have, but for the ready ones; returns those, oldest first.

    Message i comes from sender i mod ``senders`` (0: from a sender of its own). In an ordered
    topic each sender's first message is ready and its others wait, oldest on the right, in its
    conversation list behind it, the sender in the active set (as ACCEPT leaves them).
    """
    ready: list[str] = []
    waiting: dict[str, list[str]] = {}
    for i in range(messages):
        number = sender_number(i, senders)
        payload = message_payload(topic, f"SMdrain{i:026d}", f"echo me {i}", number)
        if ordered and number in waiting:
            waiting[number].append(payload)
        else:
            ready.append(payload)
            waiting.setdefault(number, [])
    if ordered:
        commands: list[tuple[str, ...]] = [("SADD", active_key(topic), *waiting)]
        commands += [("LPUSH", conversation_key(topic, n), *later) for n, later in waiting.items() if later]
        redis.pipeline(commands)
    return ready


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--delays", default="0,50,25-75",
                        help="simulated I/O per message, ms (topics echo0, echo50), LOW-HIGH a seeded range (echoj)")
    parser.add_argument("--seed", type=int, default=13, help="of the delays drawn from a range")
    parser.add_argument("--peer-python", help="the asyncio peer's interpreter (default: a virtualenv under /tmp)")
    parser.add_argument("--no-peer", action="store_true", help="leave the asyncio peer out")
    parser.add_argument("--only-pyrowire", action="store_true",
                        help="measure pyrowire alone (no ratios; for profiling it, e.g. with py-spy --pid)")
    parser.add_argument("--senders", type=int, default=0,
                        help="message i comes from sender i mod SENDERS (default 0: every message from its own)")
    parser.add_argument("--unordered", action="store_true", help="the topics are ordered: False")
    args = parser.parse_args()
    require_cores()
    delays = [scenario(token) for token in args.delays.split(",")]
    systems = ("ceiling_drain_loop", "pyrowire") if args.no_peer else ("ceiling_drain_loop", "peer_asyncio", "pyrowire")
    if args.only_pyrowire:
        systems = ("pyrowire",)
    peer = None if "peer_asyncio" not in systems else peer_python(args.peer_python)
    runs: dict[tuple[str, str], list[dict]] = {(s, d[0]): [] for d in delays for s in systems}
    with bench("drain", args.keep) as b:
        redis = b.redis()
        twilio = b.fake_twilio()
        for run in range(args.runs):
            for d, topic, delay_options, _mean in delays:
                for system in systems:
                    note(f"run {run + 1}/{args.runs}: D={d} ms, {system}")
                    redis.flush()
                    twilio.clear()
                    options = ["--redis-port", str(redis.port), "--twilio", twilio.url, "--topic", topic,
                               "--concurrency", str(CONCURRENCY), *delay_options, "--seed", str(args.seed)]
                    if system == "pyrowire":
                        proc, _ = b.pyrowire(redis, twilio.url, "--role", "worker", "--topic", topic,
                                             "--concurrency", str(CONCURRENCY), ordered=not args.unordered,
                                             env={"BENCH_JITTER": ",".join([*delay_options[1].split(","),
                                                                            str(args.seed)])}
                                             if topic == "echoj" else None)
                    elif system == "peer_asyncio":
                        assert peer is not None
                        proc = b.start(system, [peer, str(PEER / "asyncio_worker.py"), *options], SUT_CORE, cwd=ROOT,
                                       env=dict(os.environ, PYTHONUNBUFFERED="1"))
                    else:
                        proc = b.python(system, BENCH / "ceilings" / "drain_loop.py", options)
                    wait_for(lambda: redis.blocked_clients() >= CONCURRENCY, 30,
                             f"{system} to wait on {CONCURRENCY} pops", 0.05, proc)
                    time.sleep(0.3)  # let start-up work (recovery scan, heartbeats) settle
                    # the ceiling reads the queue only; pyrowire gets the layout of its topics
                    payloads = lay_out(redis, topic, args.messages, args.senders,
                                       system == "pyrowire" and not args.unordered)
                    meter = CpuMeter({"sut": proc.pid, "redis": redis.proc.pid, "fake_twilio": twilio.proc.pid})
                    started = time.time()
                    redis.call("LPUSH", queue_key(topic), *payloads)
                    wait_for(lambda topic=topic: redis.llen(complete_key(topic)) >= args.messages, 300,
                             f"{args.messages} completes", 0.02, proc)
                    polled = time.time() - started
                    cpu = meter.read()
                    sut_ms = (cpu_seconds(proc.pid) - meter.before["sut"]) * 1000
                    memory = rss_mb(proc.pid)
                    messages = twilio.messages()
                    # an ordered topic drained is left with no active conversation and no waiting list
                    left = int(redis.call("SCARD", active_key(topic))) + queued(redis, topic)
                    last = max(m["received_at"] for m in messages)
                    seconds = last - started
                    runs[(system, d)].append({
                        "msg_s": args.messages / seconds, "seconds": seconds, "seconds_to_all_complete": polled,
                        "cpu_ms_per_message": sut_ms / args.messages,
                        "replies": len(messages), "unique_replies": len({m["body"] for m in messages}),
                        "peak_rss_mb": memory["peak_rss_mb"], "left_behind": left, **cpu})
                    b.stop(proc)
    keys = ["msg_s", "seconds", "seconds_to_all_complete", "replies", "unique_replies", "peak_rss_mb",
            "left_behind", "cpu_sut", "cpu_redis", "cpu_fake_twilio", "cpu_ms_per_message"]
    for d, _topic, _options, mean in delays:
        if args.only_pyrowire:
            emit({"scenario": "drain", "delay_ms": d, "system": "pyrowire --role worker",
                  **summarise(runs[("pyrowire", d)], keys)})
            continue
        ceiling, py = runs[("ceiling_drain_loop", d)], runs[("pyrowire", d)]
        peers = runs.get(("peer_asyncio", d))
        for i, (c, p) in enumerate(zip(ceiling, py, strict=True)):
            p["ratio_to_ceiling"] = p["msg_s"] / c["msg_s"]
            if peers:
                p["ratio_to_peer"] = p["msg_s"] / peers[i]["msg_s"]
                peers[i]["ratio_to_ceiling"] = peers[i]["msg_s"] / c["msg_s"]
        common = {"scenario": "drain", "delay_ms": d, "messages": args.messages, "concurrency": CONCURRENCY,
                  "senders": args.senders or args.messages, "ordered": not args.unordered, "runs": args.runs}
        ideal = CONCURRENCY / mean if mean else None
        if ideal is not None and "-" in d:
            common.update(seed=args.seed, ideal_msg_s=round(ideal, 1))
        emit({**common, "system": "ceiling_drain_loop", **summarise(ceiling, keys)})
        if peers:
            emit({**common, "system": "peer_asyncio", **summarise(peers, [*keys, "ratio_to_ceiling"])})
        summary = summarise(py, [*keys, "ratio_to_ceiling", *(["ratio_to_peer"] if peers else [])])
        met: bool | None
        if d == "0":
            target = f"msg/s >= {RATIO_TARGET} x ceiling_drain_loop (median of per-run ratios)"
            met = verdict(summary["ratio_to_ceiling"], RATIO_TARGET)
            if peers:
                target += f" and >= {PEER_TARGET} x peer_asyncio"
                met = bool(met and verdict(summary["ratio_to_peer"], PEER_TARGET))
        elif d == "50":
            target = f"msg/s >= {RATE_TARGET:g} with concurrency {CONCURRENCY}"
            met = verdict(summary["msg_s"], RATE_TARGET)
        elif ideal is not None and "-" in d:
            target = f"msg/s >= {IDEAL_TARGET} x {CONCURRENCY} / mean delay = {IDEAL_TARGET * ideal:.0f}"
            met = verdict(summary["msg_s"], IDEAL_TARGET * ideal)
        else:
            target, met = None, None
        emit({**common, "system": "pyrowire --role worker", **summary,
              "all_replied": all(r["unique_replies"] == args.messages for r in py),
              "target": target, "target_met": met})


if __name__ == "__main__":
    main()
