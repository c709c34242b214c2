"""A primary, a replica and three Redis Sentinels on 127.0.0.1, for the Sentinel tests; synchronous, for fixtures.

Every server is the tests' valkey binary (Sentinel is ``valkey-server --sentinel``), spawned
through ``pyrowire/_child.py`` so that it dies with the test process, on free ports, with
timings small enough for a test: a Sentinel sees a silent primary as down after
``DOWN_AFTER_MS``, and ``failover()`` is ``SENTINEL FAILOVER``, which needs no agreement.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import redis

from tests.redis_server import _LAUNCHER, START_TIMEOUT, STOP_TIMEOUT, RedisServer, free_port

SERVICE = "pyrowire-test"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


class SentinelServer:
    """One Sentinel watching ``SERVICE`` at ``primary_port``."""

    def __init__(self, port: int, myid: str) -> None:
        self.port = port
        self.myid = myid
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, binary: str, directory: str, primary_port: int, replica_port: int, password: str | None,
              others: Sequence[SentinelServer]) -> None:
        """Start it already knowing the replica and the other Sentinels, which it would otherwise take seconds
        to discover."""
        self.config = os.path.join(directory, f"sentinel-{self.port}.conf")
        lines = [
            f"port {self.port}", "bind 127.0.0.1", f"dir {directory}", f"sentinel myid {self.myid}",
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2",
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
            *([f"sentinel auth-pass {SERVICE} {password}"] if password else []),
            f"sentinel known-replica {SERVICE} 127.0.0.1 {replica_port}",
            *(f"sentinel known-sentinel {SERVICE} 127.0.0.1 {o.port} {o.myid}" for o in others if o is not self),
        ]  # fmt: skip
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        log = os.path.join(directory, f"sentinel-{self.port}.log")
        env = dict(os.environ, PYROWIRE_PARENT_PID=str(os.getpid()))
        with open(log, "wb") as output:
            self.process = subprocess.Popen([sys.executable, "-I", "-S", _LAUNCHER, binary, self.config, "--sentinel"],
                                            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, env=env)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=2)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class SentinelCluster:
    """A primary, its replica and three Sentinels; ``url`` is the ``redis+sentinel://`` address of them."""

    def __init__(self, password: str | None = None) -> None:
        self.password = password
        self.primary = RedisServer(password=password)
        self.replica = RedisServer(password=password)
        self.sentinels: list[SentinelServer] = []
        self._directory = tempfile.mkdtemp(prefix="pyrowire-sentinel-")

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{auth}{hosts}/{SERVICE}/0"

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=self.password, decode_responses=True, socket_timeout=2)

    def start(self) -> Self:
        """Start everything and wait (at most 10 s) until every Sentinel knows the replica and the other two."""
        self.primary.start()
        self.replica.start()
        self.client(self.primary.port).config_set("repl-diskless-sync-delay", 0)  # the first sync at once, not in 5 s
        replica = self.client(self.replica.port)
        if self.password:
            replica.config_set("masterauth", self.password)
        replica.replicaof("127.0.0.1", self.primary.port)
        self.sentinels = [SentinelServer(free_port(), secrets.token_hex(20)) for _ in range(3)]
        for sentinel in self.sentinels:
            sentinel.start(self.primary.binary, self._directory, self.primary.port, self.replica.port, self.password,
                           self.sentinels)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._settled():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Sentinels did not settle within {START_TIMEOUT} s")
            time.sleep(0.1)
        return self

    def _settled(self) -> bool:
        for sentinel in self.sentinels:
            try:
                state = sentinel.client().sentinel_master(SERVICE)
            except redis.RedisError:
                return False
            if state.get("num-slaves") != 1 or state.get("num-other-sentinels") != 2:
                return False
        return bool(self.client(self.replica.port).info("replication").get("master_link_status") == "up")

    def primary_port(self) -> int:
        """The port of the primary the first Sentinel names."""
        _host, port = self.sentinels[0].client().sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def failover(self) -> None:
        """``SENTINEL FAILOVER``: promote the replica now, without waiting for the primary to fail."""
        self.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", SERVICE)

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        self.primary.close()
        self.replica.close()
        shutil.rmtree(self._directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
