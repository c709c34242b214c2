"""The benchmark app: echo handlers with 0, 50 or 25-75 ms of simulated I/O, and the latency echo."""

import os
import random
import zlib

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


# "LOW,HIGH,SEED" (ms): echoj's delays, drawn per message from its sid as the drain's other systems draw them
LOW, HIGH, SEED = (float(x) for x in os.environ.get("BENCH_JITTER", "25,75,13").split(","))


def jitter_ms(sid, low, high, seed):
    return random.Random(int(seed) * 1_000_003 + zlib.crc32(sid.encode())).uniform(low, high)


@app.handler(topic="echoj")
async def echoj(message):
    await deferLater(reactor, jitter_ms(message["sid"], LOW, HIGH, SEED) / 1000.0)
    message["reply"] = message["message"]
    await app.sms(message)
    return message


@app.handler(topic="latency")
async def latency(message):
    message["reply"] = message["message"]  # the body carries its send time
    await app.sms(message)
    return message
