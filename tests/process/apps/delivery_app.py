"""The delivery process tests' app: replies, status changes and opt-outs noted in MARKER_DIR."""

import json
import os

from twisted.internet import reactor

import delivery_settings
import pyrowire

app = pyrowire.App(delivery_settings)
MARKERS = os.environ.get("MARKER_DIR", ".")


def note(name, value):
    with open(os.path.join(MARKERS, name), "a", encoding="utf-8") as f:
        f.write(json.dumps(value) + "\n")


@app.handler(topic="notify")
async def notify(message):
    message["reply"] = "re: " + message["message"]
    sid = await app.sms(message)
    note("replies", {"in": message["sid"], "sid": sid})
    return message


@app.handler(topic="paced")
async def paced(message):
    message["reply"] = "paced " + message["message"]
    await app.sms(message)
    return message


@app.on_status(topic="notify")
def status(change):
    note("statuses", change)


@app.on_opt_out(topic="notify")
def opted(message):
    note("opt_outs", {"number": message["number"], "opted_out": message["opted_out"]})


def remind():
    app.send("notify", "+15550009999", "reminder").addCallback(lambda sid: note("reminders", {"sid": sid}))


if os.environ.get("REMIND_AFTER"):
    reactor.callWhenRunning(reactor.callLater, float(os.environ["REMIND_AFTER"]), remind)
