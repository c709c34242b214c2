"""The App's own surface: properties, and what it refuses while no service runs."""

from __future__ import annotations

import json

import pytest

import pyrowire
from pyrowire.app import NotRunning
from tests.deferreds import failure_of

SETTINGS = {
    "TOPICS": {"echo": {"properties": {"prefix": "> ", "limits": {"daily": 3}, "tags": ["a"]}}},
    "PROFILES": {"dev": {"debug": True}},
}


def test_properties_are_a_plain_json_serialisable_dict() -> None:
    """app.properties(topic) is a plain dict that json.dumps accepts."""
    app = pyrowire.App(SETTINGS)
    properties = app.properties("echo")
    assert type(properties) is dict
    assert json.loads(json.dumps(properties)) == {"prefix": "> ", "limits": {"daily": 3}, "tags": ["a"]}


def test_properties_are_a_copy_safe_to_change() -> None:
    """Changing what app.properties returned, however deep, changes nothing for the next caller."""
    app = pyrowire.App(SETTINGS)
    mine = app.properties("echo")
    mine["prefix"] = "changed"
    mine["limits"]["daily"] = 99
    mine["tags"].append("b")
    assert app.properties("echo") == {"prefix": "> ", "limits": {"daily": 3}, "tags": ["a"]}


def test_unknown_topic_properties_name_the_topic() -> None:
    """Asking for an unconfigured topic's properties is a ConfigurationError naming it."""
    with pytest.raises(pyrowire.ConfigurationError, match="nope"):
        pyrowire.App(SETTINGS).properties("nope")


def test_sms_without_a_running_service_fails_clearly() -> None:
    """app.sms while no service of the app runs fails with NotRunning, not an AttributeError."""
    app = pyrowire.App(SETTINGS)
    error = failure_of(app.sms({"topic": "echo", "number": "+15551234567", "reply": "hi"}), NotRunning)
    assert "no pyrowire service" in str(error)
