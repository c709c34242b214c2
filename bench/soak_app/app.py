"""The soak run's app: echoes after a few milliseconds of simulated I/O."""

import random

import settings
from twisted.internet import reactor
from twisted.internet.task import deferLater

import pyrowire

app = pyrowire.App(settings)


@app.handler(topic="soak")
async def soak(message):
    await deferLater(reactor, random.uniform(0.005, 0.03))
    message["reply"] = "re: " + message["message"]
    await app.sms(message)
    return message
