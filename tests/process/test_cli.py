"""The ``pyrowire`` console command against real processes: init, twistd on the generated app, send, chat, dead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.process.harness import Deployment, PyrowireProcess
from tests.redis_server import RedisServer, free_port

PYROWIRE = os.path.join(os.path.dirname(sys.executable), "pyrowire")
COMMAND_TIMEOUT = 60.0
NUMBER = "+15551234567"
ACCEPT = "Thanks! A reply is on its way."
HEADER = '<?xml version="1.0" encoding="UTF-8"?>'
ACCEPT_TWIML = f"{HEADER}<Response><Message>{ACCEPT}</Message></Response>"
FILES = "app.py, settings.py, Procfile, requirements.txt, test_app.py, .gitignore"


def clean_env() -> dict[str, str]:
    """The environment without anything that would change which Redis, profile or token is used."""
    drop = ("PYROWIRE_", "TWILIO_", "REDIS_URL", "ENV", "PORT", "RUN", "TOPIC")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def pyrowire(cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run the ``pyrowire`` console command in ``cwd``, bounded in time."""
    return subprocess.run([PYROWIRE, *args], cwd=cwd, env=clean_env(), input=stdin, capture_output=True,
                          text=True, timeout=COMMAND_TIMEOUT)


def init(tmp_path: Path) -> Path:
    folder = tmp_path / "myapp"
    done = pyrowire(tmp_path, "init", "myapp")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {FILES} in myapp")
    return folder


def test_generated_app_runs_and_answers_send_and_chat(tmp_path: Path) -> None:
    """The app init writes runs under twistd on an embedded Redis; send prints the TwiML and, with --wait, the
    replies; chat prints both; dead lists the topic's letters. The CLI finds the daemon's Redis and key
    prefix in the app's settings, untold; Ctrl-C (SIGINT) stops the daemon with status 0."""
    folder = init(tmp_path)
    settings = folder / "settings.py"
    settings.write_text(settings.read_text().replace('"debug": True,', '"debug": True, "key_prefix": "myapp",', 1))
    port = free_port()
    process = PyrowireProcess(folder, ["-n", "pyrowire", "--app", "app",
                                       "--listen", f"tcp:port={port}:interface=127.0.0.1"], clean_env())
    url = f"http://127.0.0.1:{port}/queue/hello"
    try:
        process.wait_healthy(f"http://127.0.0.1:{port}", timeout=30)
        assert (folder / "twistd.pid").exists()
        assert (folder / ".pyrowire" / "redis" / "redis.sock").exists()

        sent = pyrowire(folder, "send", url, "--from", NUMBER, "--body", "hi", "--wait")
        assert (sent.returncode, sent.stderr) == (0, "")
        assert sent.stdout == f"{ACCEPT_TWIML}\n< Hello! You said: hi\n"

        chat = pyrowire(folder, "chat", url, "--from", NUMBER, stdin="good morning\nbye\n")
        assert (chat.returncode, chat.stderr) == (0, "")
        assert chat.stdout == (f"> good morning\n{ACCEPT}\n< Hello! You said: good morning\n"
                               f"> bye\n{ACCEPT}\n< Hello! You said: bye\n> \n")

        refused = pyrowire(folder, "send", url, "--from", NUMBER, "--body", "", "--wait", "1")
        assert (refused.returncode, refused.stderr) == (0, "")
        assert refused.stdout == (f"{HEADER}<Response><Message>Your message was empty or too long.</Message>"
                                  "</Response>\n(refused by the length validator: nothing was queued)\n")

        listed = pyrowire(folder, "dead", "list", "hello")
        assert (listed.returncode, listed.stdout, listed.stderr) == (0, "0 dead letters in hello\n", "")
        unknown = pyrowire(folder, "dead", "list", "nope")
        assert (unknown.returncode, unknown.stdout) == (1, "")
        assert unknown.stderr == "pyrowire: error: unknown topic 'nope' (configured: hello)\n"
    finally:
        code = process.terminate(sig=signal.SIGINT)
    assert code == 0, process.output
    assert "sandbox reply" in process.output
    assert "overcommit" not in process.output  # the dev profile logs at debug level: not even there
    assert not (folder / "twistd.pid").exists()


def test_send_wait_reads_the_replies_from_a_daemon_on_a_redis_it_was_not_told_of(
        tmp_path: Path, deployment: Deployment, redis_server: RedisServer) -> None:
    """A daemon started with an explicit --redis (another database than its settings'): send --wait, run in another
    folder with neither --redis nor REDIS_URL, prints the reply the handler sent through (fake) Twilio as soon as
    the daemon has handled the message, well before the wait limit; on a topic that validates signatures it signs
    its reads of the replies as it signs the webhook."""
    redis = f"redis://127.0.0.1:{redis_server.port}/3"
    env = deployment.env(TEST_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")  # the settings' Redis: nobody there
    process, base = deployment.twistd("--app", "app", "--redis", redis, env=env)
    process.wait_healthy(base)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    started = time.monotonic()
    sent = pyrowire(elsewhere, "send", f"{base}/queue/open", "--from", NUMBER, "--body", "hi", "--wait", "30")
    elapsed = time.monotonic() - started
    assert (sent.returncode, sent.stderr) == (0, "")
    assert sent.stdout == f"{HEADER}<Response><Message>Great, we'll get right back to you.</Message></Response>\n< hi\n"
    assert elapsed < 10
    token = "test-auth-token-0123456789"  # the echo topic's, in tests/process/apps/settings.py
    signed = pyrowire(elsewhere, "send", f"{base}/queue/echo", "--from", NUMBER, "--body", "yo", "--wait", "30",
                      "--auth-token", token)
    assert (signed.returncode, signed.stderr) == (0, "")
    assert signed.stdout.endswith("</Response>\n< echo: yo\n")
    assert sorted(m["body"] for m in deployment.twilio.messages()) == ["echo: yo", "hi"]
    assert process.terminate() == 0


def test_send_to_a_closed_port_is_one_line(tmp_path: Path) -> None:
    """send to a port nothing listens on exits non-zero with one 'cannot connect' line."""
    url = f"http://127.0.0.1:{free_port()}/queue/hello"
    done = pyrowire(tmp_path, "send", url, "--from", NUMBER, "--body", "hi")
    assert done.returncode != 0
    assert done.stdout == ""
    assert done.stderr == f"pyrowire: error: cannot connect to {url}: connection refused\n"


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    """A second init into the same folder exits 1 with one line naming the files, and --force succeeds."""
    folder = init(tmp_path)
    again = pyrowire(folder, "init")
    assert again.returncode == 1
    assert again.stderr == (
        "pyrowire: error: app.py, settings.py, Procfile, requirements.txt, test_app.py already in .; "
        "use --force to overwrite\n")
    assert pyrowire(folder, "init", "--force").returncode == 0


def test_generated_tests_pass(tmp_path: Path) -> None:
    """The generated test_app.py passes under pytest, with no Redis and no network (needs pyrowire.testing)."""
    pytest.importorskip("pyrowire.testing")
    folder = init(tmp_path)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_app.py"],
                          cwd=folder, env=clean_env(), capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_unreachable_redis_is_one_line_saying_how_to_name_it(tmp_path: Path) -> None:
    """dead with no daemon running, or with a Redis nothing answers at, says within a second how to name the
    daemon's Redis (--redis or REDIS_URL), exit 1."""
    folder = init(tmp_path)
    started = time.monotonic()
    embedded = pyrowire(folder, "dead", "list", "hello")
    elapsed = time.monotonic() - started  # the process's own start-up included: the wait itself is under 1 s
    assert (embedded.returncode, embedded.stdout) == (1, "")
    assert embedded.stderr == (
        f"pyrowire: error: --redis: no pyrowire with an embedded Redis is running in {folder} "
        "(no .pyrowire/redis/redis.sock); start it there with `twistd -n pyrowire --app app`, "
        "or name the daemon's Redis with --redis URL or REDIS_URL\n")
    assert elapsed < 3
    port = free_port()
    refused = pyrowire(folder, "dead", "requeue", "hello", "--redis", f"redis://127.0.0.1:{port}/0")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (f"pyrowire: error: --redis: cannot reach Redis at redis://127.0.0.1:{port}/0 "
                              "(connection refused); name the daemon's Redis with --redis URL or REDIS_URL\n")


def test_versions(tmp_path: Path) -> None:
    """pyrowire --version and twistd pyrowire --version print the version, and twistd pyrowire --help shows it."""
    import pyrowire as package

    version = pyrowire(tmp_path, "--version")
    assert (version.returncode, version.stdout) == (0, f"pyrowire {package.__version__}\n")
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    shown = subprocess.run([twistd, "pyrowire", "--version"], cwd=tmp_path, env=clean_env(), capture_output=True,
                           text=True, timeout=COMMAND_TIMEOUT)
    assert shown.returncode == 0 and shown.stdout.startswith(f"pyrowire {package.__version__} (Twisted ")
    helped = subprocess.run([twistd, "pyrowire", "--help"], cwd=tmp_path, env=clean_env(), capture_output=True,
                            text=True, timeout=COMMAND_TIMEOUT)
    assert helped.returncode == 0 and f"pyrowire {package.__version__}: run a pyrowire application" in helped.stdout
