"""The soak run's app: echoes after a few milliseconds of simulated I/O, and says what it did.

Every run writes two marker lines to a file of its own process under ``$SOAK_MARKERS``
(``S`` when the handler starts, ``E`` when it is about to return), each with the time
(``time.time_ns()``, one clock for every process of the machine), the message's sid and
the sid the conversation's session says came before it (``-`` for none). A line is one
``os.write`` to an ``O_APPEND`` file, synchronous on purpose: a worker SIGKILLed a moment
later has still left it, so bench/soak.py sees the runs that never finished too. The
session keeps the last sid handled, so the next message of the conversation reads it.
"""

import os
import random
import time

import settings
from twisted.internet import reactor
from twisted.internet.task import deferLater

import pyrowire

app = pyrowire.App(settings)
_markers = os.open(os.path.join(os.environ["SOAK_MARKERS"], f"{os.getpid()}.log"),
                   os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


def _mark(phase, sid, previous):
    os.write(_markers, f"{phase} {time.time_ns()} {sid} {previous or '-'}\n".encode())


@app.handler(topic="soak")
async def soak(message):
    sid = message["sid"]
    previous = message["session"].get("last")
    _mark("S", sid, previous)
    await deferLater(reactor, random.uniform(0.005, 0.03))
    message["reply"] = "re: " + message["message"]
    await app.sms(message)
    message["session"]["last"] = sid
    _mark("E", sid, previous)
    return {"sid": sid, "number": message["number"], "previous": previous}
