"""The joke app: text it "tell me a joke" and it texts a joke back."""

import random

import settings

import pyrowire

app = pyrowire.App(settings)


@app.validator(name="asks_for_joke")
def asks_for_joke(message):
    """Invalid (True) unless the text asks for a joke."""
    return "joke" not in message["message"].lower()


@app.handler(topic="joke")
async def tell_a_joke(message):
    """Pick a joke from the topic's properties and text it to the sender."""
    jokes = app.properties("joke")["jokes"]
    message["reply"] = random.choice(jokes)
    message["reply_sid"] = await app.sms(message)  # fires with the outbound SID
    return message  # recorded in Redis as the completed exchange


if __name__ == "__main__":
    app.run()
