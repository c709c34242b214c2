"""Settings of the example app: one topic, in the sandbox (no Twilio account needed)."""

import logging
import os

TOPICS = {
    "echo": {
        "send_on_accept": False,
        "accept_response": "Great, we'll get right back to you.",
        "error_response": "It seems like an error has occurred...please try again later.",
        "validators": {
            "profanity": "No profanity, please.",
            "length": "Your message was empty or too long.",
            "parseable": "Please only use alphanumeric and punctuation characters.",
        },
        "properties": {},
        # no credentials: replies go to the sandbox outbox and the log.
        # Set TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN / TWILIO_NUMBER to reply for real.
        "twilio": {
            "account_sid": os.environ.get("TWILIO_ACCOUNT_SID", ""),
            "auth_token": os.environ.get("TWILIO_AUTH_TOKEN", ""),
            "from_number": os.environ.get("TWILIO_NUMBER", "+15005550006"),
        },
        "max_message_length": 160,
    },
}

PROFILES = {
    # no "redis" key: the dev profile runs an embedded Redis
    "dev": {"debug": True, "log_level": logging.INFO, "host": "localhost", "port": 62023},
    "prod": {
        "debug": False,
        "log_level": logging.ERROR,
        "redis": {"url": os.environ.get("REDIS_URL", "redis://localhost:6379/0")},
        "host": "0.0.0.0",
        "port": 0,
    },
}
