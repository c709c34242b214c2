"""The ``twistd pyrowire`` plugin: it only names pyrowire.tap."""

from twisted.application.service import ServiceMaker

pyrowire = ServiceMaker(
    "pyrowire",
    "pyrowire.tap",
    "Twilio SMS/MMS applications: webhook, Redis queue and workers",
    "pyrowire",
)
