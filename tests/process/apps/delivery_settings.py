"""Settings of the delivery process tests: a public_url (so sends carry a StatusCallback) and a paced topic."""

import logging
import os

from settings import TWILIO

TOPICS = {
    "notify": {"accept_response": "", "help_response": "Help is here.", "twilio": dict(TWILIO)},
    "paced": {"accept_response": "", "twilio": {**TWILIO, "mps": 2}},
}

PROFILES = {
    "test": {
        "debug": True,
        "log_level": logging.DEBUG,
        "redis": {"url": os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")},
        "host": "127.0.0.1",
        "port": 0,
        "public_url": os.environ.get("PUBLIC_URL") or None,
    },
}
