"""``python -m pyrowire.testing.fake_twilio`` as a real process, spoken to by the real TwilioClient."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor

from pyrowire.errors import TwilioError
from pyrowire.retry import RetryPolicy
from pyrowire.settings import TwilioConfig
from pyrowire.twilio import TwilioClient

REPO = Path(__file__).resolve().parents[2]
TOKEN = "fake-process-token"
SID = "AC" + "a" * 32


@pytest.fixture
def fake_twilio(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A fake Twilio process on a free port; yields its base URL and the process."""
    port_file = tmp_path / "port"
    command = [sys.executable, "-m", "pyrowire.testing.fake_twilio", "--port", "0", "--port-file", str(port_file)]
    process = subprocess.Popen(
        [*command, "--auth-token", TOKEN],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not port_file.exists():
            assert process.poll() is None, "the fake exited"
            assert time.monotonic() < deadline, "the fake did not write its port file"
            time.sleep(0.02)
        port = int(port_file.read_text())
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"fake twilio listening on http://127.0.0.1:{port}"
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


@pytest_twisted.ensureDeferred
async def test_send_through_the_fake_process(fake_twilio: tuple[str, subprocess.Popen[str]]) -> None:
    """A real send reaches the fake process, is listed by /_fake/messages, and a bad token gets 401."""
    base, _ = fake_twilio
    client = TwilioClient(reactor)
    try:
        creds = TwilioConfig(SID, TOKEN, "+15005550006", None, False, base)
        sid = await client.send(creds, to="+15551234567", body="over the wire")
        listed = await (await treq.get(f"{base}/_fake/messages")).json()
        assert [(m["sid"], m["account"], m["body"]) for m in listed] == [(sid, SID, "over the wire")]
        with pytest.raises(TwilioError) as info:
            await client.send(
                TwilioConfig(SID, "wrong", "+15005550006", None, False, base), to="+15551234567", body="x"
            )
        assert (info.value.code, info.value.status) == (20003, 401)
    finally:
        await client.close()


def test_sigterm_stops_the_fake_cleanly(fake_twilio: tuple[str, subprocess.Popen[str]]) -> None:
    """SIGTERM makes the fake process exit with status 0."""
    _, process = fake_twilio
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0


@pytest_twisted.ensureDeferred
async def test_unreachable_api_is_a_connection_error(tmp_path: Path) -> None:
    """A send to a port nobody listens on fails with a retryable TwilioError without status."""
    from tests.redis_server import free_port

    client = TwilioClient(reactor, timeout=5, policy=RetryPolicy(max_attempts=1))
    creds = TwilioConfig(SID, TOKEN, "+15005550006", None, False, f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(TwilioError) as info:
            await client.send(creds, to="+15551234567", body="x")
        assert (info.value.status, info.value.retryable) == (None, True)
        assert info.value.message == "Could not connect to the Twilio API."
    finally:
        await client.close()
