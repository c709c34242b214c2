"""The app of the queue and conversation process tests: a handler that does what the message's body says.

A body is a label followed by instructions: ``a3 sleep=0.2`` sleeps 0.2 s, ``x fail`` raises,
``x die`` SIGKILLs its own process, ``x hang`` waits a minute the first time its message is
run, ``x tuple`` returns a result JSON cannot store. Each run appends a ``start`` line and,
if it returns, an ``end`` line (JSON, with the time and the process id) to
``$MARKER_DIR/<topic>.jsonl``.
"""

import json
import os
import signal
import time

from twisted.internet import reactor
from twisted.internet.task import deferLater

import pyrowire
import settings


def _topic(**extra):
    return settings.topic(validators={}, **extra)


TOPICS = {
    "work": _topic(),
    "retry3": _topic(max_attempts=3),
    "legacy": _topic(),
    "talk": _topic(),
    "crowd": _topic(ordered=False),
    "count": _topic(),
}
app = pyrowire.App({"TOPICS": TOPICS, "PROFILES": settings.PROFILES})


def _note(message, event):
    line = json.dumps({"event": event, "topic": message["topic"], "sid": message["sid"],
                       "number": message["number"], "body": message["message"], "pid": os.getpid(),
                       "at": time.time()})
    with open(os.path.join(os.environ["MARKER_DIR"], message["topic"] + ".jsonl"), "a") as f:
        f.write(line + "\n")


async def act(message):
    """Do what the body says between a start and an end line."""
    _note(message, "start")
    words = message["message"].split()[1:]
    for word in words:
        if word.startswith("sleep="):
            await deferLater(reactor, float(word[len("sleep="):]))
        elif word == "fail":
            raise RuntimeError(f"failing on purpose: {message['message']}")
        elif word == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        elif word == "hang":
            first = os.path.join(os.environ["MARKER_DIR"], "hung-" + message["sid"])
            if not os.path.exists(first):
                open(first, "w").close()
                await deferLater(reactor, 60)
    _note(message, "end")
    if "tuple" in words:
        return {("not", "a", "string"): 1}
    return message


for _name in ("work", "retry3", "talk", "crowd"):
    app.handler(topic=_name)(act)


@app.handler(topic="legacy")
def legacy(message):
    """The 2014 style: a send started and not waited for."""
    message["reply"] = "legacy " + message["message"]
    app.sms(message)
    return message


@app.handler(topic="count")
async def count(message):
    """Counts the conversation's messages in its session and replies with the count; ``fail`` fails after counting."""
    session = message["session"]
    session["count"] = session.get("count", 0) + 1
    if "fail" in message["message"].split():
        raise RuntimeError("count fails on purpose after counting")
    message["reply"] = f"count {session['count']}"
    await app.sms(message)
    return message
