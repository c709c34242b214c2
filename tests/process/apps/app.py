"""The process tests' app: one handler per behaviour under test."""

import os

from twisted.internet import reactor
from twisted.internet.task import deferLater

import pyrowire
import settings

app = pyrowire.App(settings)


@app.handler(topic="echo")
async def echo(message):
    message["reply"] = app.properties("echo")["prefix"] + message["message"]
    await app.sms(message)
    return message


@app.handler(topic="open")
def open_echo(message):
    message["reply"] = message["message"]
    return app.sms(message).addCallback(lambda _sid: message)


@app.handler(topic="greet")
def greet(message):
    return None


@app.handler(topic="slow")
async def slow(message):
    await deferLater(reactor, 0.2)
    message["reply"] = "slow " + message["message"]
    await app.sms(message)
    return message


@app.handler(topic="flaky")
async def flaky(message):
    """Fails until the test creates the marker file ``fixed``."""
    with open(os.path.join(os.environ["MARKER_DIR"], "flaky-attempts"), "a") as f:
        f.write(message["sid"] + "\n")
    if not os.path.exists(os.path.join(os.environ["MARKER_DIR"], "fixed")):
        raise RuntimeError("flaky is still broken")
    message["reply"] = "fixed " + message["message"]
    await app.sms(message)
    return message


@app.handler(topic="linger")
async def linger(message):
    """Takes LINGER_SECONDS (default 3) before replying, announcing its start in a marker file."""
    with open(os.path.join(os.environ["MARKER_DIR"], "linger-" + message["sid"]), "w") as f:
        f.write("started")
    await deferLater(reactor, float(os.environ.get("LINGER_SECONDS", "3")))
    message["reply"] = "lingered " + message["message"]
    await app.sms(message)
    return message


@app.handler(topic="once")
async def once(message):
    """Hangs the first time it sees a message (so the test can SIGKILL it), replies the second."""
    marker = os.path.join(os.environ["MARKER_DIR"], message["sid"])
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        await deferLater(reactor, 120)
    message["reply"] = "finally " + message["message"]
    await app.sms(message)
    return message
