"""An app whose settings misspell a key: accept_respons for accept_response."""

import pyrowire
import settings

TOPICS = {"echo": dict(settings.topic(), accept_respons="")}
app = pyrowire.App({"TOPICS": TOPICS, "PROFILES": settings.PROFILES})


@app.handler(topic="echo")
def echo(message):
    return message
