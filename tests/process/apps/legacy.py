"""An app written with the 2014 module-level API."""

import pyrowire
import settings

TOPICS = dict(settings.TOPICS, echo=settings.topic(validators={"must_say_yo": "Say yo."}))
pyrowire.configure({"TOPICS": TOPICS, "PROFILES": settings.PROFILES})


@pyrowire.validator(name="must_say_yo")
def must_say_yo(message):
    return "yo" not in message["message"].lower()


@pyrowire.handler(topic="echo")
def echo(message):
    message["reply"] = "legacy " + message["message"]
    return pyrowire.sms(message_data=message)  # the 2014 keyword still works


for _name in ("slow", "once", "greet", "open", "flaky", "linger"):
    pyrowire.handler(topic=_name)(lambda message: message)

if __name__ == "__main__":
    pyrowire.run()
