"""Real processes for the process tests: a fake Twilio REST API and ``twistd -n pyrowire``.

These tests use real time, always bounded: every wait has a deadline.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from tests.redis_server import free_port

APPS = Path(__file__).parent / "apps"
TOKEN = "test-auth-token-0123456789"
START_TIMEOUT = 15.0
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
REPO = Path(__file__).parent.parent.parent
# a text log line of level error or critical: "<time> error [namespace] ..."
_ERROR_LINE = re.compile(r"^\S+ (error|critical)\b")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def request(method: str, url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None,
            timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request; returns (status, headers, body)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def webhook_params(sid: str, body: str, number: str = "+15551234567", **extra: str) -> dict[str, str]:
    params = {"MessageSid": sid, "AccountSid": "ACtest00000000000000000000000000", "From": number,
              "To": "+15005550006", "Body": body, "NumMedia": "0", "FromCity": "PORTLAND",
              "FromState": "OR", "FromZip": "97209", "FromCountry": "US"}
    params.update(extra)
    return params


def send_webhook(base: str, topic: str, params: Mapping[str, str], method: str = "POST",
                 token: str | None = TOKEN, signature: str | None = None) -> tuple[int, str]:
    """Send a Twilio-style webhook, signed with ``token`` as Twilio would sign it."""
    url = f"{base}/queue/{topic}"
    headers = {}
    if method == "GET":
        url = f"{url}?{urlencode(params)}"
        body = None
        signed: Mapping[str, str] = {}
    else:
        body = urlencode(params).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        signed = params
    if signature is None and token is not None:
        # Twilio's own validator signs here, so the tests do not grade pyrowire with its own code
        from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

        signature = RequestValidator(token).compute_signature(url, signed)
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    status, _headers, answer = request(method, url, body, headers)
    return status, answer.decode("utf-8")


class FakeTwilioProcess:
    """``python -m pyrowire.testing.fake_twilio`` on a free port."""

    def __init__(self, directory: Path) -> None:
        port_file = directory / "fake-twilio.port"
        self.log = open(directory / "fake-twilio.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pyrowire.testing.fake_twilio", "--port", "0", "--port-file", str(port_file)],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        port = wait_for(lambda: port_file.exists() and port_file.read_text().strip(), START_TIMEOUT,
                        "the fake Twilio to listen")
        self.url = f"http://127.0.0.1:{port}"

    def messages(self) -> list[dict[str, Any]]:
        status, _, body = request("GET", f"{self.url}/_fake/messages")
        assert status == 200
        result: list[dict[str, Any]] = json.loads(body)
        return result

    def wait_messages(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]] | None:
            messages = self.messages()
            return messages if len(messages) >= count else None

        result: list[dict[str, Any]] = wait_for(enough, timeout, f"{count} messages at the fake Twilio")
        return result

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


class PyrowireProcess:
    """``twistd -n pyrowire`` (or any twistd command line) in an app folder, logging to a file."""

    def __init__(self, cwd: Path, args: Sequence[str], env: Mapping[str, str], name: str = "pyrowire",
                 command: Sequence[str] | None = None) -> None:
        self.cwd = cwd
        self.log_path = cwd / f"{name}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            list(command) if command is not None else [TWISTD, *args],
            cwd=cwd, env=dict(env), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def errors(self) -> list[str]:
        """The lines of its log at level error or critical (text or JSON format)."""
        found = []
        for line in self.output.splitlines():
            if _ERROR_LINE.match(line) or '"level": "error"' in line or '"level": "critical"' in line:
                found.append(line)
        return found

    def wait_healthy(self, base: str, timeout: float = START_TIMEOUT) -> None:
        def healthy() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"pyrowire exited with {self.process.returncode}:\n{self.output}")
            try:
                return request("GET", f"{base}/health", timeout=2)[0] == 200
            except OSError:
                return False

        wait_for(healthy, timeout, "pyrowire to answer /health")

    def wait_log(self, text: str, timeout: float = START_TIMEOUT) -> None:
        def seen() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"pyrowire exited with {self.process.returncode}:\n{self.output}")
            return text in self.output

        wait_for(seen, timeout, f"{text!r} in the log")

    def terminate(self, timeout: float = 30.0, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` (SIGTERM; SIGINT is Ctrl-C) unless the process has ended, and return its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self._log.close()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._log.close()


class Deployment:
    """An app folder copied to a temp dir, a fake Twilio, and the pyrowire processes started in it."""

    def __init__(self, tmp: Path, redis_url: str) -> None:
        self.dir = tmp / "app"
        shutil.copytree(APPS, self.dir)
        (self.dir / "markers").mkdir()
        self.twilio = FakeTwilioProcess(tmp)
        self.redis_url = redis_url
        self.processes: list[PyrowireProcess] = []
        # what a test that provokes errors in the daemons' logs on purpose allows (see expect_errors)
        self._expected: list[str] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYROWIRE_", "REDIS_URL", "RUN", "TOPIC"))}
        env.update(ENV="test", TEST_REDIS_URL=self.redis_url, TWILIO_API_BASE=self.twilio.url,
                   MARKER_DIR=str(self.dir / "markers"), PYTHONUNBUFFERED="1")
        env.pop("PORT", None)
        env.update(extra)
        return env

    def twistd(self, *options: str, port: int | None = None, env: Mapping[str, str] | None = None,
               tac: bool = False) -> tuple[PyrowireProcess, str]:
        """Start ``twistd -n pyrowire OPTIONS``; returns the process and its base URL (if it listens)."""
        port = port or free_port()
        if tac:
            shutil.copy(REPO / "pyrowire.tac", self.dir / "pyrowire.tac")
            args = ["-n", "--pidfile=", "-y", "pyrowire.tac"]
        else:
            args = ["-n", "--pidfile=", "pyrowire", *options]
            if "--listen" not in options and "worker" not in options:
                args += ["--listen", f"tcp:port={port}:interface=127.0.0.1"]
        process = PyrowireProcess(self.dir, args, env or self.env())
        self.processes.append(process)
        return process, f"http://127.0.0.1:{port}"

    def close(self) -> None:
        for p in self.processes:
            p.kill()
        self.twilio.stop()

    def expect_errors(self, *fragments: str) -> None:
        """Allow the daemons' error lines that contain one of ``fragments`` (the test provokes them)."""
        self._expected.extend(fragments)

    def unexpected_errors(self) -> list[str]:
        """Error lines the daemons logged that the test did not say it expects."""
        return [line for p in self.processes for line in p.errors()
                if not any(fragment in line for fragment in self._expected)]
