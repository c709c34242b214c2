"""The benchmark app: echo handlers with 0 or 50 ms of simulated I/O, and the latency echo."""

import settings
from twisted.internet import reactor
from twisted.internet.task import deferLater

import pyrowire

app = pyrowire.App(settings)


@app.handler(topic="ingest")
def ingest(message):
    return message


@app.handler(topic="echo0")
async def echo0(message):
    message["reply"] = message["message"]
    await app.sms(message)
    return message


@app.handler(topic="echo50")
async def echo50(message):
    await deferLater(reactor, 0.05)
    message["reply"] = message["message"]
    await app.sms(message)
    return message


@app.handler(topic="latency")
async def latency(message):
    message["reply"] = message["message"]  # the body carries its send time
    await app.sms(message)
    return message
