"""Settings of the process tests' app: real (fake) Twilio credentials, signatures checked."""

import logging
import os

TWILIO = {
    "account_sid": "ACtest00000000000000000000000000",
    "auth_token": "test-auth-token-0123456789",
    "from_number": "+15005550006",
}
VALIDATORS = {
    "profanity": "No profanity, please.",
    "length": "Your message was empty or too long.",
    "parseable": "Please only use alphanumeric and punctuation characters.",
}


def topic(**extra):
    base = {
        "accept_response": "Great, we'll get right back to you.",
        "error_response": "It seems like an error has occurred...please try again later.",
        "validators": VALIDATORS,
        "twilio": dict(TWILIO),
        "max_message_length": 160,
    }
    base.update(extra)
    return base


TOPICS = {
    "echo": topic(properties={"prefix": "echo: "}),
    "slow": topic(validators={}),
    "once": topic(validators={}),
    "greet": topic(validators={}, send_on_accept=True, accept_response="Hi & welcome <3"),
    "open": topic(validate_signature=False, validators={"length": "Too long."}),
    "flaky": topic(validators={}, max_attempts=3),
    "linger": topic(validators={}),
}

PROFILES = {
    "test": {
        "debug": True,
        "log_level": logging.DEBUG,
        "redis": {"url": os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")},
        "host": "127.0.0.1",
        "port": 0,
    },
}
