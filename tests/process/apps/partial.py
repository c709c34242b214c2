"""An app that forgot the handlers of most of its topics."""

import pyrowire
import settings

app = pyrowire.App(settings)


@app.handler(topic="echo")
def echo(message):
    return message
