"""docs/tutorial.md, steps 2 to 6, as a reader runs them: its files in a folder, its commands, their output.

Step 1 (the install line, in a clean virtualenv) is run by .ci/run; here the tests' own
virtualenv stands in for it. The one liberty: PORT picks a free port instead of 62023.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.process.harness import PyrowireProcess
from tests.process.test_cli import COMMAND_TIMEOUT, clean_env, pyrowire
from tests.redis_server import free_port

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial"
NUMBER = "+15551234567"
HEADER = '<?xml version="1.0" encoding="UTF-8"?>'


@pytest.fixture
def joke(tmp_path: Path) -> Path:
    """The joke folder with the tutorial's three files, as steps 2, 3 and 6 write them."""
    folder = tmp_path / "joke"
    folder.mkdir()
    for name in ("settings.py", "app.py", "test_app.py"):
        shutil.copy(TUTORIAL / name, folder / name)
    return folder


def test_the_tutorial_runs_as_written(joke: Path) -> None:
    """twistd -n pyrowire --app app serves the joke app on an embedded Redis; pyrowire send prints the TwiML and a
    joke, a refused text its validator; the log shows the sandbox reply; Ctrl-C exits 0; pytest test_app.py passes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tutorial_settings", joke / "settings.py")
    assert spec is not None and spec.loader is not None
    settings = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(settings)
    jokes = settings.TOPICS["joke"]["properties"]["jokes"]

    port = free_port()
    env = clean_env()
    env["PORT"] = str(port)
    daemon = PyrowireProcess(joke, ["-n", "pyrowire", "--app", "app"], env)
    try:
        daemon.wait_healthy(f"http://localhost:{port}", timeout=30)
        url = f"http://localhost:{port}/queue/joke"

        told = pyrowire(joke, "send", url, "--from", NUMBER, "--body", "tell me a joke", "--wait")
        assert (told.returncode, told.stderr) == (0, "")
        answer, reply = told.stdout.splitlines()
        assert answer == f"{HEADER}<Response/>"
        assert reply.startswith("< ") and reply[2:] in jokes

        refused = pyrowire(joke, "send", url, "--from", NUMBER, "--body", "hello", "--wait")
        assert (refused.returncode, refused.stderr) == (0, "")
        assert refused.stdout == (f"{HEADER}<Response><Message>Text me 'joke' and I'll tell you one.</Message>"
                                  "</Response>\n(refused by the asks_for_joke validator: nothing was queued)\n")

        chat = pyrowire(joke, "chat", url, "--from", NUMBER, stdin="a joke please\n")
        assert (chat.returncode, chat.stderr) == (0, "")
        prompt, empty, texted, last_prompt, end = chat.stdout.split("\n")
        assert (prompt, empty, last_prompt, end) == ("> a joke please", "(empty answer)", "> ", "")
        assert texted.startswith("< ") and texted[2:] in jokes
        daemon.wait_log(f"to {NUMBER} for joke: {reply[2:]!r}")
    finally:
        code = daemon.terminate(sig=signal.SIGINT)  # Ctrl-C
    assert code == 0, daemon.output
    assert "pyrowire stopped" in daemon.output and "Traceback" not in daemon.output

    tested = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_app.py"],
                            cwd=joke, env=clean_env(), capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "2 passed" in tested.stdout
    assert pyrowire(joke, "--version").stdout.startswith("pyrowire 0.9")
