"""``twistd pyrowire``: parse the options and assemble the service, nothing else.

Every wrong value ends start-up with one line on stderr and exit status 1,
never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from typing import Any, ClassVar

from twisted.application.service import IService
from twisted.python import usage

from pyrowire import logs
from pyrowire.app import App
from pyrowire.errors import ConfigurationError
from pyrowire.service import build_service, exit_on_fatal


class Options(usage.Options):
    """The options of ``twistd pyrowire`` (each also read from the environment, see SPEC §3)."""

    synopsis = "[options]"
    longdesc = "Run a pyrowire application: the Twilio webhook, the workers, or both."

    optParameters: ClassVar[list[list[str | None]]] = [
        ["app", "a", None, "the application, MODULE[:ATTR] (env PYROWIRE_APP)"],
        ["role", "r", None, "all, web or worker (env RUN; default all)"],
        ["listen", "l", None, "a Twisted server endpoint description for the webhook (env PORT)"],
        ["redis", None, None, "redis://[:password@]host:port/db, rediss://…, unix:///path or embedded (env REDIS_URL)"],
        ["concurrency", "c", None, "concurrent handlers per topic in this process (default 16)"],
        ["profile", "p", None, "which entry of PROFILES to use (env ENV; default dev)"],
        ["grace", None, None, "seconds SIGTERM waits for in-flight handlers (default 25)"],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["topics"] = []

    def postOptions(self) -> None:
        parent = getattr(self, "parent", None)
        if parent is not None and not parent.get("logger"):
            # pyrowire's own observer (level and format from the profile), unless --logger was given
            logs.twistd_target = (parent.get("logfile"), bool(parent.get("nodaemon")))
            parent["logger"] = "pyrowire.logs.twistd_default"  # twistd imports it by name

    def opt_topic(self, name: str) -> None:
        """a topic this worker serves (repeatable; env TOPIC; default every configured topic)"""
        self["topics"].append(name)


def load_app(spec: str, option: str = "--app") -> App:
    """Import ``MODULE[:ATTR]`` with the working directory first on sys.path, as gunicorn does."""
    module_name, _, attr = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise ConfigurationError(option, f"cannot import {module_name!r}: {type(e).__name__}: {e}") from None
    if attr:
        app = getattr(module, attr, None)
        if not isinstance(app, App):
            raise ConfigurationError(option, f"{module_name!r} has no pyrowire App called {attr!r}")
        return app
    app = getattr(module, "app", None)
    if isinstance(app, App):
        return app
    import pyrowire

    if pyrowire.default_app.handlers or pyrowire.default_app._source is not None:
        return pyrowire.default_app
    raise ConfigurationError(option, f"{module_name!r} defines no pyrowire App (expected an attribute 'app')")


def service_from(options: Mapping[str, Any], environ: Mapping[str, str], reactor: Any = None) -> IService:
    """The service for these options, or one line on stderr and exit status 1."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    try:
        spec = options.get("app") or environ.get("PYROWIRE_APP")
        if not spec:
            raise ConfigurationError("--app", "name the application module, e.g. --app app")
        app = load_app(str(spec), "--app" if options.get("app") else "PYROWIRE_APP")
        service = build_service(app, options, environ, reactor, exit_on_fatal(reactor), handle_signals=True)
        logs.configure(logs.config_for(service.config.profile, environ))
        return service
    except ConfigurationError as e:
        sys.stderr.write(f"pyrowire: error: {e}\n")
        sys.stderr.flush()
        raise SystemExit(1) from None


def makeService(options: Options) -> IService:
    return service_from(options, os.environ)
