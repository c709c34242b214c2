"""The example app: answers every text with the same text, reversed."""

import pyrowire

import settings

app = pyrowire.App(settings)


@app.handler(topic="echo")
async def echo(message):
    message["reply"] = message["message"][::-1] or "(nothing)"
    await app.sms(message)
    return message


if __name__ == "__main__":
    app.run()
