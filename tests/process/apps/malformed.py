"""An app whose settings are malformed: a message length over Twilio's 1600."""

import pyrowire
import settings

TOPICS = {"echo": settings.topic(max_message_length=1601)}
app = pyrowire.App({"TOPICS": TOPICS, "PROFILES": settings.PROFILES})


@app.handler(topic="echo")
def echo(message):
    return message
