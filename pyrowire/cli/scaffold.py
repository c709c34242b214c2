"""``pyrowire init``: the files of a new, working pyrowire application.

The app has one topic, ``hello``, in the sandbox until Twilio credentials are set in
the environment; the ``dev`` profile runs an embedded Redis, so the folder runs with
``twistd -n pyrowire --app app`` and nothing else installed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from importlib import metadata

from pyrowire.errors import PyrowireError
from pyrowire.version import __version__

TOPIC = "hello"
PORT = 62023

APP = f'''"""A pyrowire application: answers every text sent to the "{TOPIC}" topic.

Run it (the dev profile starts an embedded Redis under ./.pyrowire):

    twistd -n pyrowire --app app

and text it from another terminal:

    pyrowire send http://localhost:{PORT}/queue/{TOPIC} --from +15551234567 --body hi --wait
    pyrowire chat http://localhost:{PORT}/queue/{TOPIC} --from +15551234567
"""

import pyrowire

import settings

app = pyrowire.App(settings)


def greeting(text):
    """The friendly answer to a text."""
    text = text.strip()
    return f"Hello! You said: {{text}}" if text else "Hello!"


@app.handler(topic="{TOPIC}")
async def {TOPIC}(message):
    message["reply"] = greeting(message["message"])
    await app.sms(message)  # fires with the outbound message SID (a sandbox SID without credentials)
    return message  # recorded as the completed exchange


if __name__ == "__main__":
    app.run()
'''

SETTINGS = f'''"""Settings of this pyrowire application: its topics and its run profiles.

Secrets come from the environment and are never written here. Without
TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN the topic is in the sandbox: its replies
are not sent to Twilio but kept in Redis (the topic's outbox) and logged, so the app
can be tried without a Twilio account. With TWILIO_AUTH_TOKEN set, webhooks must be
signed (``pyrowire send`` signs them with the same variable).

Profiles: ``dev`` (the default) runs an embedded Redis; ``prod`` (set ENV=prod, as on
Heroku) reads REDIS_URL and PORT.
"""

import logging
import os

TOPICS = {{
    "{TOPIC}": {{
        "send_on_accept": False,
        "accept_response": "Thanks! A reply is on its way.",
        "error_response": "Sorry, something went wrong. Please try again later.",
        "validators": {{
            "length": "Your message was empty or too long.",
            "profanity": "No profanity, please.",
        }},
        "properties": {{}},
        "twilio": {{
            "account_sid": os.environ.get("TWILIO_ACCOUNT_SID", ""),
            "auth_token": os.environ.get("TWILIO_AUTH_TOKEN", ""),
            "from_number": os.environ.get("TWILIO_NUMBER", "+15005550006"),
        }},
        "max_message_length": 160,
    }},
}}

PROFILES = {{
    # no "redis" key: the dev profile starts an embedded Redis under ./.pyrowire
    "dev": {{"debug": True, "log_level": logging.DEBUG, "host": "localhost", "port": {PORT}}},
    # port 0 means $PORT; $REDIS_URL also overrides the URL below
    "prod": {{
        "debug": False,
        "log_level": logging.INFO,
        "redis": {{"url": os.environ.get("REDIS_URL", "redis://localhost:6379/0")}},
        "host": "0.0.0.0",
        "port": 0,
    }},
}}
'''

PROCFILE = """web: twistd -n pyrowire --app app --role web
worker: twistd -n pyrowire --app app --role worker
"""

GITIGNORE = """.venv/
.pyrowire/
__pycache__/
.pytest_cache/
twistd.pid
twistd.log
"""

_INDEX_WARNING = f"""# pyrowire {__version__}. The "pyrowire" on the package index is the 2014 project (0.8.1)
# that this one succeeds: a bare "pyrowire" line would install that instead.
"""

_LOCAL_SOURCE = """# The line below names the folder pyrowire was installed from on this machine. Where that
# folder cannot be seen (Heroku), name a source that can be reached instead, e.g. a git URL:
#   pyrowire[embedded] @ git+https://github.com/OWNER/pyrowire@COMMIT
"""


def installed_source() -> str | None:
    """The ``direct_url.json`` of the installed pyrowire (PEP 610): where pip installed it from, if not an index."""
    # an editable install can also show as an .egg-info in its source folder, without direct_url.json
    for dist in metadata.distributions(name="pyrowire"):
        found = dist.read_text("direct_url.json")
        if found:
            return found
    return None


def requirement(direct_url: str | None) -> str:
    """The requirement that installs this pyrowire, with its embedded extra, from where it came from.

    ``direct_url`` is the text of PEP 610's ``direct_url.json``; None means the package
    index, where only a version at least this one's is ours.
    """
    try:
        origin = json.loads(direct_url) if direct_url else None
    except ValueError:
        origin = None
    url = origin.get("url") if isinstance(origin, dict) else None
    if not isinstance(url, str) or not url:
        return f"pyrowire[embedded]>={__version__}"
    vcs = origin.get("vcs_info") if isinstance(origin, dict) else None
    if isinstance(vcs, dict) and vcs.get("vcs") and vcs.get("commit_id"):
        return f"pyrowire[embedded] @ {vcs['vcs']}+{url}@{vcs['commit_id']}"
    return f"pyrowire[embedded] @ {url}"


def requirements(direct_url: str | None) -> str:
    """The text of the generated requirements.txt."""
    line = requirement(direct_url)
    notes = _INDEX_WARNING + (_LOCAL_SOURCE if " @ file:" in line else "")
    return f"{notes}{line}\n"

TEST_APP = f'''"""Tests of the {TOPIC} handler, in memory: no Redis, no network, no Twilio account.

Run them with:  pip install pytest pytest-twisted && pytest test_app.py
"""

import pytest_twisted

from pyrowire.testing import AppTester

from app import app

NUMBER = "+15551234567"


@pytest_twisted.ensureDeferred
async def test_a_text_gets_a_friendly_reply():
    """A text to {TOPIC} is accepted with the accept answer and replied to by one SMS to its sender."""
    async with AppTester(app) as tester:
        result = await tester.feed("{TOPIC}", body="hi there", number=NUMBER)
    assert result.accepted
    assert result.answer == "Thanks! A reply is on its way."
    assert [(m["to"], m["body"]) for m in result.sent] == [(NUMBER, "Hello! You said: hi there")]


@pytest_twisted.ensureDeferred
async def test_an_empty_text_is_refused():
    """An empty text is refused by the length validator, in the TwiML answer, and nothing is sent."""
    async with AppTester(app) as tester:
        result = await tester.feed("{TOPIC}", body="", number=NUMBER)
    assert not result.accepted
    assert result.answer == "Your message was empty or too long."
    assert result.sent == []
'''



def files(direct_url: str | None = None) -> dict[str, str]:
    """Every file ``init`` writes, by name; requirements.txt names where ``direct_url`` says pyrowire came from."""
    return {
        "app.py": APP,
        "settings.py": SETTINGS,
        "Procfile": PROCFILE,
        "requirements.txt": requirements(direct_url),
        "test_app.py": TEST_APP,
        ".gitignore": GITIGNORE,
    }


class WouldOverwrite(PyrowireError):
    """``init`` found files it would overwrite; ``names`` lists them."""

    def __init__(self, directory: str, names: list[str]) -> None:
        super().__init__(directory, names)
        self.directory = directory
        self.names = names

    def __str__(self) -> str:
        return f"{', '.join(self.names)} already in {self.directory}; use --force to overwrite"


def write(directory: str, force: bool = False, contents: Mapping[str, str] | None = None) -> list[str]:
    """Write ``contents`` (default: :func:`files` for the installed pyrowire) into ``directory``, created if
    missing; answers the names written. Without ``force``, nothing is written when any of them exists already.
    """
    if contents is None:
        contents = files(installed_source())
    # an existing .gitignore is added to, never replaced
    existing = [name for name in contents if name != ".gitignore" and os.path.lexists(os.path.join(directory, name))]
    if existing and not force:
        raise WouldOverwrite(directory, existing)
    os.makedirs(directory, exist_ok=True)
    for name, text in contents.items():
        path = os.path.join(directory, name)
        if name == ".gitignore" and os.path.isfile(path):
            text = _missing_lines(path, text)
            mode = "a"
        else:
            mode = "w"
        with open(path, mode, encoding="utf-8") as f:
            f.write(text)
    return list(contents)


def _missing_lines(path: str, wanted: str) -> str:
    """The lines of ``wanted`` that the file at ``path`` lacks, to append (after a newline if it needs one)."""
    with open(path, encoding="utf-8") as f:
        present = f.read()
    have = {line.strip() for line in present.splitlines()}
    missing = [line for line in wanted.splitlines() if line.strip() not in have]
    if not missing:
        return ""
    return ("" if present.endswith("\n") or not present else "\n") + "\n".join(missing) + "\n"
