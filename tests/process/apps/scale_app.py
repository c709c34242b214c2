"""The scale-out process test's app: one ordered topic, paced at ``MPS``, whose handler counts in the session.

Each run of the handler appends a ``start`` and an ``end`` line to ``$MARKER_DIR/scale.jsonl`` in the
format of the queueing app (tests/process/records.py reads them), the ``end`` line with the SID
``app.sms`` fired with (None when the number opted out). The reply is the text and the session's
count: ``"s1m2 #3"``.
"""

import json
import os
import time

import settings
from twisted.internet import reactor
from twisted.internet.task import deferLater

import pyrowire

MPS = 5
TOPICS = {"scale": settings.topic(validators={}, twilio={**settings.TWILIO, "mps": MPS})}
app = pyrowire.App({"TOPICS": TOPICS, "PROFILES": settings.PROFILES})


def _note(message, event, **extra):
    line = json.dumps({"event": event, "topic": message["topic"], "sid": message["sid"],
                       "number": message["number"], "body": message["message"], "pid": os.getpid(),
                       "at": time.time(), **extra})
    with open(os.path.join(os.environ["MARKER_DIR"], message["topic"] + ".jsonl"), "a") as f:
        f.write(line + "\n")


@app.handler(topic="scale")
async def scale(message):
    """Wait a little (so other conversations run meanwhile), count, reply with the count."""
    _note(message, "start")
    await deferLater(reactor, 0.02)
    session = message["session"]
    session["count"] = session.get("count", 0) + 1
    message["reply"] = f"{message['message']} #{session['count']}"
    sid = await app.sms(message)
    _note(message, "end", reply=sid)
    return message
