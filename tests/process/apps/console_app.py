"""The console tests' app: an echo that checks signatures, an open echo, and a handler that fails on purpose."""

import logging
import os

import pyrowire

TWILIO = {"account_sid": "ACtest00000000000000000000000000", "auth_token": "test-auth-token-0123456789",
          "from_number": "+15005550006"}
REDIS = {"url": os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")}

app = pyrowire.App({
    "TOPICS": {
        "echo": {"twilio": dict(TWILIO), "validators": {"length": "Empty or too long."}},
        "open": {"twilio": dict(TWILIO), "validate_signature": False, "validators": {"length": "Too long."}},
        "fragile": {"twilio": dict(TWILIO)},
    },
    "PROFILES": {
        "test": {"debug": True, "log_level": logging.DEBUG, "redis": REDIS, "host": "127.0.0.1", "port": 0},
        # not debug: without a console password, no console at all
        "quiet": {"redis": REDIS, "host": "127.0.0.1", "port": 0},
    },
})


@app.handler(topic="echo")
async def echo(message):
    message["reply"] = "echo: " + message["message"]
    await app.sms(message)
    return message


@app.handler(topic="open")
async def open_echo(message):
    message["reply"] = message["message"]
    await app.sms(message)
    return message


@app.handler(topic="fragile")
async def fragile(message):
    """Fails (one attempt, so it goes to the dead letters) until the test creates the marker ``fixed-<sid>``."""
    if not os.path.exists(os.path.join(os.environ["MARKER_DIR"], "fixed-" + message["sid"])):
        raise RuntimeError("fragile is broken for " + message["sid"])
    message["reply"] = "fixed " + message["message"]
    await app.sms(message)
    return message
